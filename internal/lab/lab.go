// Package lab is the fleet lab for end-to-end tests: on loopback, with free ports and temporary
// directories, it starts fleetwatch, the simulator (`fleetwatch sim`), one real Prometheus per
// simulated cluster scraping it and remote-writing into fleetwatch with that cluster's token,
// and a real Alertmanager. Every process's log is kept and printed when the test fails, and
// every process is killed when the test ends, also when it fails.
//
// It is test plumbing: production code must not import it.
package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	pmodel "github.com/prometheus/common/model"

	"github.com/fleetwatch/fleetwatch/internal/kubelab"
	"github.com/fleetwatch/fleetwatch/internal/sim"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// Options size the lab.
type Options struct {
	Clusters    int // default 3
	Nodes       int // per cluster, default 10
	PodsPerNode int // default 10
	// ScrapeInterval of each cluster's Prometheus, default 2s.
	ScrapeInterval time.Duration
	// FleetwatchConfig is appended to the generated clusters: section (query:, ingest: ...).
	FleetwatchConfig string
	// Rules is appended, as is, to the generated rules: section, which sends alerts to the
	// lab's Alertmanager (e.g. "  evaluation_interval: 1s\n  pack: {silent_after: 30s}\n").
	Rules string
	// Correlate is appended to the generated correlate: section, which sends incidents to
	// the lab's Alertmanager.
	Correlate string
	// MemberRules, when set, is a Prometheus rule file every cluster's Prometheus evaluates;
	// its alerts go to fleetwatch's Alertmanager API with the cluster's token.
	MemberRules string
	// ControlPlanes gives every cluster a real control plane (`fleetwatch sim
	// --control-planes`): etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
	// kube-state-metrics. Each member Prometheus then scrapes the real kube-state-metrics and
	// API server, fleetwatch reaches each API server through a proxy the test can cut (and its
	// kubeconfig_file), and each Prometheus remote-writes through a proxy of its own.
	ControlPlanes bool
	// Standby starts a second fleetwatch with the same configuration and a data directory of
	// its own, which every Prometheus remote-writes to and sends its alerts to as well (two
	// replicas of one view, as Prometheus HA pairs are run, and as the ha install is fed).
	Standby bool
	// AlertmanagerConfig is the lab Alertmanager's alertmanager.yml (default: one receiver
	// without notifiers).
	AlertmanagerConfig string
}

// Lab is a running fleet lab.
type Lab struct {
	t    testing.TB
	dir  string
	opts Options

	Fleetwatch     *testenv.Process
	FleetwatchURL  string
	fleetwatchArgs []string
	// Standby is the second fleetwatch (Options.Standby).
	Standby         *testenv.Process
	StandbyURL      string
	Sim             *testenv.Process
	SimURL          string
	Alertmanager    *testenv.Process
	AlertmanagerURL string
	// Members are the real Prometheus servers, one per cluster, by cluster name.
	Members map[string]*Member
	// Clusters are the simulated clusters' names, in order.
	Clusters []string
	// ControlPlanes are the clusters' control planes, by name (Options.ControlPlanes).
	ControlPlanes map[string]*ControlPlane
}

// Member is one cluster's Prometheus.
type Member struct {
	Cluster string
	Process *testenv.Process
	URL     string
	// MetricsPath is the proxy the member remote-writes through (Options.ControlPlanes).
	MetricsPath *kubelab.Proxy
	args        []string
}

// Start starts the whole lab and waits until every cluster's data has arrived in fleetwatch.
func Start(t testing.TB, o Options) *Lab {
	t.Helper()
	testenv.SkipIfShort(t)
	if o.Clusters == 0 {
		o.Clusters = 3
	}
	if o.Nodes == 0 {
		o.Nodes = 10
	}
	if o.PodsPerNode == 0 {
		o.PodsPerNode = 10
	}
	if o.ScrapeInterval == 0 {
		o.ScrapeInterval = 2 * time.Second
	}
	l := &Lab{t: t, dir: t.TempDir(), opts: o, Members: map[string]*Member{}, Clusters: sim.DefaultClusterNames(o.Clusters)}
	prom := testenv.Peer(t, "prometheus")
	am := testenv.Peer(t, "alertmanager")
	fw := testenv.Fleetwatch(t)

	// The simulator.
	simAddr := testenv.FreePort(t)
	simArgs := []string{"sim", "--web.listen-address=" + simAddr,
		fmt.Sprintf("--clusters=%d", o.Clusters), fmt.Sprintf("--nodes=%d", o.Nodes),
		fmt.Sprintf("--pods-per-node=%d", o.PodsPerNode), "--cluster.names=" + strings.Join(l.Clusters, ",")}
	if o.ControlPlanes {
		for _, b := range append(kubelab.Binaries, kubelab.BinKubectl) {
			testenv.Peer(t, b)
		}
		simArgs = append(simArgs, "--control-planes", "--control-planes.dir="+filepath.Join(l.dir, "clusters"),
			"--control-planes.bin-dir="+testenv.PeersBin())
	}
	l.Sim = testenv.Start(t, "sim", fw, simArgs...)
	l.SimURL = "http://" + simAddr
	if o.ControlPlanes {
		l.Sim.WaitReady(t, l.SimURL+"/control-planes", 5*time.Minute)
		l.readControlPlanes()
	} else {
		l.Sim.WaitReady(t, l.SimURL+"/clusters", 30*time.Second)
	}

	// A real Alertmanager, for what comes after the view.
	amAddr := testenv.FreePort(t)
	amYAML := o.AlertmanagerConfig
	if amYAML == "" {
		amYAML = "route: {receiver: blackhole}\nreceivers: [{name: blackhole}]\n"
	}
	amCfg := testenv.WriteFile(t, l.dir, "alertmanager.yml", amYAML)
	l.Alertmanager = testenv.Start(t, "alertmanager", am, "--config.file="+amCfg,
		"--storage.path="+filepath.Join(l.dir, "alertmanager-data"), "--web.listen-address="+amAddr,
		"--cluster.listen-address=")
	l.AlertmanagerURL = "http://" + amAddr
	l.Alertmanager.WaitReady(t, l.AlertmanagerURL+"/-/ready", 30*time.Second)

	// fleetwatch, one token per cluster.
	var cfg strings.Builder
	cfg.WriteString("clusters:\n")
	for i, c := range l.Clusters {
		testenv.WriteFile(t, l.dir, c+".token", "token-"+c+"\n")
		fmt.Fprintf(&cfg, "  - name: %s\n    labels: {region: %s, tier: %s}\n    cost_per_cpu_hour: %g\n    remote_write: {bearer_token_file: %s.token}\n",
			c, strings.SplitN(c, "-", 2)[0], []string{"prod", "staging"}[i%2], 0.03+0.001*float64(i), c)
		if cp := l.ControlPlanes[c]; cp != nil {
			fmt.Fprintf(&cfg, "    kubeconfig_file: %s\n", cp.FleetwatchKubeconfig)
		}
	}
	fmt.Fprintf(&cfg, "rules:\n  alertmanagers: [%s]\n%s", l.AlertmanagerURL, o.Rules)
	fmt.Fprintf(&cfg, "correlate:\n  alertmanagers: [%s]\n%s", l.AlertmanagerURL, o.Correlate)
	cfg.WriteString(o.FleetwatchConfig)
	fwAddr := testenv.FreePort(t)
	cfgPath := testenv.WriteFile(t, l.dir, "fleetwatch.yml", cfg.String())
	l.fleetwatchArgs = []string{fw, "serve", "--config.file=" + cfgPath,
		"--web.listen-address=" + fwAddr, "--storage.tsdb.path=" + filepath.Join(l.dir, "fleetwatch-data")}
	l.FleetwatchURL = "http://" + fwAddr
	l.startFleetwatch()
	if o.Standby {
		addr := testenv.FreePort(t)
		l.StandbyURL = "http://" + addr
		l.Standby = testenv.Start(t, "fleetwatch-standby", fw, "serve", "--config.file="+cfgPath,
			"--web.listen-address="+addr, "--storage.tsdb.path="+filepath.Join(l.dir, "fleetwatch-standby-data"))
		l.Standby.WaitReady(t, l.StandbyURL+"/-/ready", 30*time.Second)
	}

	// One Prometheus per cluster.
	for _, c := range l.Clusters {
		l.Members[c] = l.startMember(prom, c)
	}
	l.followSilence()
	// Every cluster's data has arrived.
	fleet := l.API()
	testenv.Eventually(t, 60*time.Second, func() error {
		v, _, err := fleet.Query(ctx(t), `count by (cluster) (up{job="kube-state-metrics"} == 1)`, time.Now())
		if err != nil {
			return err
		}
		if got := len(VectorByCluster(v)); got != len(l.Clusters) {
			return fmt.Errorf("%d of %d clusters have arrived: %v", got, len(l.Clusters), v)
		}
		return nil
	})
	return l
}

func (l *Lab) startFleetwatch() {
	l.Fleetwatch = testenv.Start(l.t, "fleetwatch", l.fleetwatchArgs[0], l.fleetwatchArgs[1:]...)
	l.Fleetwatch.WaitReady(l.t, l.FleetwatchURL+"/-/ready", 30*time.Second)
}

// RestartFleetwatch kills fleetwatch (SIGKILL: no clean shutdown) and starts it again on the
// same address, configuration and data directory.
func (l *Lab) RestartFleetwatch() {
	l.Fleetwatch.Kill()
	l.startFleetwatch()
}

// followSilence makes a cluster that the simulator silences really silent: nothing of it
// reaches fleetwatch any more. A Prometheus whose targets hang still sends its own `up`
// series; a silent cluster is one fleetwatch hears nothing from, as when the cluster's
// Prometheus or the network to it is down. So while the simulator says a cluster is silent,
// its Prometheus is stopped (SIGSTOP), and it continues (SIGCONT) once the cluster recovers.
func (l *Lab) followSilence() {
	stop, done := make(chan struct{}), make(chan struct{})
	l.t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		paused := map[string]bool{}
		defer func() {
			for c := range paused {
				_ = l.Members[c].Process.Signal(syscall.SIGCONT)
			}
		}()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			resp, err := http.Get(l.SimURL + "/clusters")
			if err != nil {
				continue
			}
			var ts []sim.ClusterTruth
			err = json.NewDecoder(resp.Body).Decode(&ts)
			resp.Body.Close()
			if err != nil {
				continue
			}
			for _, c := range ts {
				m := l.Members[c.Name]
				if m == nil || c.Silent == paused[c.Name] {
					continue
				}
				sig := syscall.SIGSTOP
				if !c.Silent {
					sig = syscall.SIGCONT
				}
				if err := m.Process.Signal(sig); err == nil {
					if c.Silent {
						paused[c.Name] = true
					} else {
						delete(paused, c.Name)
					}
				}
			}
		}
	}()
}

// Alerts are fleetwatch's active alerts (/api/v1/alerts).
func (l *Lab) Alerts() []promv1.Alert {
	l.t.Helper()
	res, err := l.API().Alerts(ctx(l.t))
	if err != nil {
		l.t.Fatalf("fleetwatch alerts: %v", err)
	}
	return res.Alerts
}

// Incident is the part of fleetwatch's incidents the tests read.
type Incident struct {
	ID         string   `json:"id"`
	Key        string   `json:"key"`
	Scope      string   `json:"scope"`
	Clusters   []string `json:"clusters"`
	Severity   string   `json:"severity"`
	State      string   `json:"state"`
	RootCause  string   `json:"root_cause"`
	Image      string   `json:"image"`
	MergedInto string   `json:"merged_into"`
	Alerts     []struct {
		Labels map[string]string `json:"labels"`
		Source string            `json:"source"`
	} `json:"alerts"`
}

// Incidents lists fleetwatch's incidents (query e.g. "state=active").
func (l *Lab) Incidents(query string) []Incident {
	l.t.Helper()
	return l.IncidentsAt(l.FleetwatchURL, query)
}

// IncidentsAt is Incidents of the fleetwatch at base (FleetwatchURL or StandbyURL).
func (l *Lab) IncidentsAt(base, query string) []Incident {
	l.t.Helper()
	resp, err := http.Get(base + "/api/v1/incidents?" + query)
	if err != nil {
		l.t.Fatalf("incidents: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string     `json:"status"`
		Data   []Incident `json:"data"`
		Error  string     `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Status != "success" {
		l.t.Fatalf("incidents: %v %s", err, body.Error)
	}
	return body.Data
}

// IncidentKeys are the incidents' keys, sorted.
func IncidentKeys(incs []Incident) []string {
	out := make([]string, 0, len(incs))
	for _, i := range incs {
		out = append(out, i.Key)
	}
	sort.Strings(out)
	return out
}

// MemberCrashLoopRules is a rule file for Options.MemberRules: what a member cluster's own
// Prometheus alerts on, kube-prometheus's KubePodCrashLooping, sent to fleetwatch as its
// Alertmanager.
const MemberCrashLoopRules = `groups:
  - name: member
    rules:
      - alert: KubePodCrashLooping
        expr: max_over_time(kube_pod_container_status_waiting_reason{reason="CrashLoopBackOff", job="kube-state-metrics"}[1m]) >= 1
        for: 5s
        labels: {severity: warning}
        annotations:
          summary: 'Pod {{ $labels.namespace }}/{{ $labels.pod }} ({{ $labels.container }}) is in waiting state (reason: "CrashLoopBackOff").'
`

// AMAlert is an alert as Alertmanager's API v2 lists it.
type AMAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

// AlertmanagerAlerts are the alerts the lab's Alertmanager holds (active ones unless all).
func (l *Lab) AlertmanagerAlerts() []AMAlert {
	l.t.Helper()
	resp, err := http.Get(l.AlertmanagerURL + "/api/v2/alerts")
	if err != nil {
		l.t.Fatalf("alertmanager alerts: %v", err)
	}
	defer resp.Body.Close()
	var out []AMAlert
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		l.t.Fatalf("alertmanager alerts: %v", err)
	}
	return out
}

func (l *Lab) startMember(prom, cluster string) *Member {
	t := l.t
	dir := filepath.Join(l.dir, "prometheus-"+cluster)
	addr := testenv.FreePort(t)
	simHost := strings.TrimPrefix(l.SimURL, "http://")
	scrapes := sim.ScrapeConfigs(cluster, simHost)
	fwURL := l.FleetwatchURL
	var metricsPath *kubelab.Proxy
	if cp := l.ControlPlanes[cluster]; cp != nil {
		scrapes = cp.Endpoint.ScrapeConfigs(l.opts.ScrapeInterval)
		var err error
		if metricsPath, err = kubelab.NewProxy(strings.TrimPrefix(l.FleetwatchURL, "http://")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(metricsPath.Close)
		fwURL = "http://" + metricsPath.Addr()
	}
	standby := ""
	alertTargets := "'" + strings.TrimPrefix(fwURL, "http://") + "'"
	if l.StandbyURL != "" {
		alertTargets += ", '" + strings.TrimPrefix(l.StandbyURL, "http://") + "'"
		standby = fmt.Sprintf(`  - url: %s/api/v1/write
    authorization: {credentials_file: %s}
    queue_config: {batch_send_deadline: 500ms, min_backoff: 100ms, max_backoff: 1s}
    metadata_config: {send_interval: 5s}
`, l.StandbyURL, filepath.Join(l.dir, cluster+".token"))
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: %[1]s
scrape_configs:
%[2]sremote_write:
  - url: %[4]s/api/v1/write
    authorization: {credentials_file: %[5]s}
    queue_config: {batch_send_deadline: 500ms, min_backoff: 100ms, max_backoff: 1s}
    metadata_config: {send_interval: 5s}
%[7]salerting:
  alertmanagers:
    - static_configs: [{targets: [%[6]s]}]
      authorization: {credentials_file: %[5]s}
`, promDuration(l.opts.ScrapeInterval), scrapes, "", fwURL, filepath.Join(l.dir, cluster+".token"),
		alertTargets, standby)
	if l.opts.MemberRules != "" {
		cfg += "rule_files: [" + testenv.WriteFile(t, l.dir, "member-rules.yml", l.opts.MemberRules) + "]\n"
	}
	cfgPath := testenv.WriteFile(t, l.dir, "prometheus-"+cluster+".yml", cfg)
	// A short resend delay: Prometheus's first send precedes its discovery of the
	// Alertmanager and is lost; the next one would otherwise come a minute later.
	args := []string{"--config.file=" + cfgPath, "--storage.tsdb.path=" + dir, "--web.listen-address=" + addr, "--rules.alert.resend-delay=2s"}
	p := testenv.Start(t, "prometheus-"+cluster, prom, args...)
	p.WaitReady(t, "http://"+addr+"/-/ready", 60*time.Second)
	return &Member{Cluster: cluster, Process: p, URL: "http://" + addr, MetricsPath: metricsPath, args: append([]string{prom}, args...)}
}

// promDuration renders a duration the way Prometheus's config wants it.
func promDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
	return fmt.Sprintf("%dms", int(d/time.Millisecond))
}

// API is a Prometheus API client on fleetwatch.
func (l *Lab) API() promv1.API {
	c, err := api.NewClient(api.Config{Address: l.FleetwatchURL})
	if err != nil {
		l.t.Fatal(err)
	}
	return promv1.NewAPI(c)
}

// Truth is the simulator's state of every cluster.
func (l *Lab) Truth() map[string]sim.ClusterTruth {
	l.t.Helper()
	var ts []sim.ClusterTruth
	l.getJSON("/clusters", &ts)
	out := map[string]sim.ClusterTruth{}
	for _, c := range ts {
		out[c.Name] = c
	}
	return out
}

// StartScenario starts a bundled or uploaded scenario on the simulator.
func (l *Lab) StartScenario(name string) { l.post("/scenarios/"+url.PathEscape(name)+"/start", nil) }

// StopScenario stops a scenario and recovers what it did.
func (l *Lab) StopScenario(name string) { l.post("/scenarios/"+url.PathEscape(name)+"/stop", nil) }

// Step applies a running scenario's next step now.
func (l *Lab) Step(name string) { l.post("/scenarios/"+url.PathEscape(name)+"/step", nil) }

// UploadScenario adds a scenario from its YAML.
func (l *Lab) UploadScenario(yaml string) { l.post("/scenarios", []byte(yaml)) }

func (l *Lab) post(path string, body []byte) {
	l.t.Helper()
	resp, err := http.Post(l.SimURL+path, "application/yaml", bytes.NewReader(body))
	if err != nil {
		l.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		l.t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
	}
}

func (l *Lab) getJSON(path string, into any) {
	l.t.Helper()
	resp, err := http.Get(l.SimURL + path)
	if err != nil {
		l.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		l.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, into); err != nil {
		l.t.Fatalf("GET %s: %v: %s", path, err, b)
	}
}

// VectorByCluster maps an instant vector's samples by their cluster label.
func VectorByCluster(v pmodel.Value) map[string]float64 {
	out := map[string]float64{}
	if vec, ok := v.(pmodel.Vector); ok {
		for _, s := range vec {
			out[string(s.Metric["cluster"])] = float64(s.Value)
		}
	}
	return out
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}
