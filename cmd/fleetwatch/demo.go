package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/agent"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/kubelab"
	"github.com/fleetwatch/fleetwatch/internal/sim"
	"github.com/fleetwatch/fleetwatch/rules/pack"
	"github.com/fleetwatch/fleetwatch/schedule"
)

type demoCmd struct {
	cmd           *kingpin.CmdClause
	listen        string
	tsdbPath      string
	scenario      string
	clusters      int
	nodes         int
	podsPerNode   int
	interval      time.Duration
	controlPlanes bool
	cpBinDir      string
	log           *logFlags
}

func newDemoCmd(app *kingpin.Application) *demoCmd {
	d := &demoCmd{cmd: app.Command("demo", "Run fleetwatch on the embedded TSDB with simulated clusters pushing through remote-write, playing a scenario on a loop.")}
	d.cmd.Flag("web.listen-address", "Address to listen on for the API, remote-write and telemetry.").Default("localhost:9095").StringVar(&d.listen)
	d.cmd.Flag("storage.tsdb.path", "Base path for metrics storage (default: a temporary directory, removed on exit).").StringVar(&d.tsdbPath)
	d.cmd.Flag("scenario", "Simulator scenario to play on a loop.").Default("demo").StringVar(&d.scenario)
	d.cmd.Flag("clusters", "Number of simulated clusters.").Default("3").IntVar(&d.clusters)
	d.cmd.Flag("nodes", "Nodes per simulated cluster.").Default("50").IntVar(&d.nodes)
	d.cmd.Flag("pods-per-node", "Pods per simulated node.").Default("30").IntVar(&d.podsPerNode)
	d.cmd.Flag("scrape-interval", "How often each simulated cluster's Prometheus agent scrapes.").Default("5s").DurationVar(&d.interval)
	d.cmd.Flag("control-planes", "Run the same fleet on real Kubernetes control planes (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kube-state-metrics per cluster; `make peers` builds them) and print a kubectl command per cluster.").BoolVar(&d.controlPlanes)
	d.cmd.Flag("control-planes.bin-dir", "Directory holding the control-plane binaries.").Default(kubelab.DefaultBinDir()).StringVar(&d.cpBinDir)
	d.log = addLogFlags(d.cmd)
	return d
}

// The signals the demo watches, as PromQL on the global view. They are what the README and
// the banner point a newcomer at. The Ready ratio and the request saturation are the rule
// pack's own recorded series, the very numbers its alerts fire on (requests of Pending and
// Running pods only: Succeeded and Failed pods keep their request series but free the room).
var demoSignals = []struct{ name, query string }{
	{"nodes NotReady", `sum by (cluster) (kube_node_status_condition{condition="Ready",status!="true"})`},
	{"node Ready ratio", pack.RecordNodeReadyRatio},
	{"CPU request saturation", pack.RecordCPURequestsRatio},
	{"memory request saturation", pack.RecordMemoryRequestsRatio},
	{"containers in CrashLoopBackOff", `sum by (cluster) (kube_pod_container_status_waiting_reason{reason="CrashLoopBackOff"})`},
	{"restarts per minute", `sum by (cluster) (increase(kube_pod_container_status_restarts_total[1m]))`},
	{"seconds since the cluster last sent data", `time() - max by (cluster) (timestamp(up{job="kube-state-metrics"}))`},
	{"control plane up", `max by (cluster) (up{job="apiserver"})`},
	{"images per deployment across the fleet", `count by (namespace, container) (count by (namespace, container, image) (kube_pod_container_info))`},
}

func (d *demoCmd) run() error {
	logger := d.log.logger()
	if d.controlPlanes {
		if missing := kubelab.MissingBinaries(d.cpBinDir); len(missing) > 0 {
			return fmt.Errorf("--control-planes needs %s in %s: run `make peers` first (it builds them from the Go module proxy, about 15 minutes the first time)", strings.Join(missing, ", "), d.cpBinDir)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir := d.tsdbPath
	if dir == "" {
		tmp, err := os.MkdirTemp("", "fleetwatch-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	if err := os.MkdirAll(filepath.Join(dir, "demo"), 0o700); err != nil {
		return err
	}

	// The demo's output is the story; fleetwatch's own log (and the simulator's and agents')
	// goes to a file the banner names, at --log.level. Warnings and errors also reach the
	// terminal.
	logPath := filepath.Join(dir, "demo", "fleetwatch.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	terminal := &logFlags{level: "warn", format: d.log.format}
	if d.log.level == "error" {
		terminal.level = "error"
	}
	logger = slog.New(slog.NewMultiHandler(d.log.handler(logFile), terminal.handler(os.Stderr)))
	quiet := logger

	// The simulated clusters, served on a loopback port of their own.
	names := sim.DefaultClusterNames(d.clusters)
	s, err := sim.New(sim.Options{Clusters: names, Nodes: d.nodes, PodsPerNode: d.podsPerNode, Seed: 1, Logger: quiet})
	if err != nil {
		return err
	}
	defer s.Close()
	var fleet *kubelab.Fleet
	if d.controlPlanes {
		fmt.Fprintf(os.Stdout, "starting %d control planes (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-state-metrics each)...\n", len(names))
		if fleet, err = startControlPlanes(s, filepath.Join(dir, "clusters"), d.cpBinDir, quiet); err != nil {
			return err
		}
		defer fleet.Close()
	}
	simLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	simSrv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = simSrv.Serve(simLn) }()
	defer simSrv.Close()
	simURL := "http://" + simLn.Addr().String()

	// fleetwatch itself, configured with one random token per simulated cluster.
	var cfg strings.Builder
	cfg.WriteString("# Written by `fleetwatch demo`.\nclusters:\n")
	for i, c := range names {
		tok := make([]byte, 16)
		_, _ = rand.Read(tok)
		if err := os.WriteFile(filepath.Join(dir, "demo", c+".token"), []byte(hex.EncodeToString(tok)), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(&cfg, "  - name: %s\n    labels: {region: %s, tier: %s}\n    cost_per_cpu_hour: %.3f\n    remote_write: {bearer_token_file: %s.token}\n",
			c, strings.SplitN(c, "-", 2)[0], []string{"prod", "staging"}[i%2], 0.03+0.002*float64(i), c)
		if fleet != nil {
			fmt.Fprintf(&cfg, "    kubeconfig_file: %s\n", fleet.Cluster(c).FleetwatchKubeconfig)
		}
	}
	cfgPath := filepath.Join(dir, "demo", "fleetwatch.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", d.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", d.listen, err)
	}
	srv, err := newServer(serverOptions{
		ConfigFile: cfgPath, TSDBPath: filepath.Join(dir, "data"), Retention: 24 * time.Hour,
		Listener: ln, Logger: logger, Flags: map[string]string{"web.listen-address": d.listen, "storage.tsdb.path": dir},
	})
	if err != nil {
		ln.Close()
		return err
	}
	srvCtx, stopSrv := context.WithCancel(context.Background())
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(srvCtx) }()
	fwURL := "http://" + ln.Addr().String()

	// One Prometheus agent per cluster: scrape its kube-state-metrics and API server, and
	// remote-write to fleetwatch with the cluster's token.
	var agents []*agent.Agent
	stopAll := func() error {
		for _, a := range agents {
			_ = a.Stop()
		}
		stopSrv()
		return <-srvDone
	}
	for _, c := range names {
		scrapes := sim.ScrapeConfigs(c, simLn.Addr().String())
		if fleet != nil {
			scrapes = fleet.Endpoint(c).ScrapeConfigs(d.interval)
		}
		a, err := agent.Start(agentConfig(scrapes, fwURL, filepath.Join(dir, "demo", c+".token"), d.interval),
			filepath.Join(dir, "demo", "agent-"+c), quiet.With("component", "agent", "cluster", c))
		if err != nil {
			_ = stopAll()
			return fmt.Errorf("agent for %s: %w", c, err)
		}
		agents = append(agents, a)
	}
	if err := simPost(ctx, simURL+"/scenarios/"+d.scenario+"/start"); err != nil {
		_ = stopAll()
		return fmt.Errorf("start scenario %q: %w", d.scenario, err)
	}

	printBanner(os.Stdout, fwURL, logPath, d, names)
	if fleet != nil {
		fmt.Fprintln(os.Stdout, "\nEach cluster has a real API server; try kubectl (cordon a node, scale or roll back a Deployment) and watch it arrive:")
		printControlPlanes(os.Stdout, fleet)
		fmt.Fprintln(os.Stdout)
	}
	incidents, unsubscribe := srv.incidents.Subscribe()
	go printIncidents(ctx, os.Stdout, incidents)
	go printPlacements(ctx, os.Stdout, srv.schedule, d.interval)
	watchDemo(ctx, os.Stdout, fwURL, d.interval, logger)
	unsubscribe()
	fmt.Fprintln(os.Stdout, "stopping: agents, simulator, fleetwatch")
	return stopAll()
}

func agentConfig(scrapeConfigs, fwURL, tokenFile string, interval time.Duration) string {
	return fmt.Sprintf(`global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
scrape_configs:
%[2]sremote_write:
  - url: %[3]s/api/v1/write
    protobuf_message: io.prometheus.write.v2.Request
    authorization: {credentials_file: %[4]s}
    queue_config: {batch_send_deadline: 1s}
    metadata_config: {send: false} # 2.0 carries metadata with every series
`, model.Duration(interval), scrapeConfigs, fwURL, tokenFile)
}

// printIncidents prints each incident as it opens, changes cause or resolves.
func printIncidents(ctx context.Context, w io.Writer, ch <-chan *correlate.Incident) {
	said := map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case inc := <-ch:
			line := inc.State + " " + inc.RootCause
			if said[inc.ID] == line {
				continue
			}
			said[inc.ID] = line
			switch inc.State {
			case correlate.StateResolved:
				how := "resolved"
				if inc.MergedInto != "" {
					how = "merged into " + inc.MergedInto
				}
				fmt.Fprintf(w, "%s  incident %s %s: %s\n", inc.UpdatedAt.Local().Format("15:04:05"), inc.ID, how, inc.RootCause)
			default:
				fmt.Fprintf(w, "%s  incident %s %s, %s scope, %s: %s\n           %s\n", inc.UpdatedAt.Local().Format("15:04:05"),
					inc.ID, inc.State, inc.Scope, strings.Join(inc.Clusters, ","), inc.RootCause, inc.Explanation)
			}
		}
	}
}

// demoWorkload is what the demo asks placement about as the fleet changes.
var demoWorkload = schedule.Request{Workload: "shop/api", Replicas: 12, CPU: 0.5, Memory: 1 << 30, Weights: config.DefaultWeights}

// printPlacements prints where demoWorkload would go, and why clusters are left out, each time
// that changes.
func printPlacements(ctx context.Context, w io.Writer, svc *schedule.Service, every time.Duration) {
	last := ""
	t := time.NewTicker(max(every, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !hasCapacityData(svc.Snapshot()) {
			continue // the recording rules have not run yet
		}
		d, err := svc.Place(demoWorkload)
		if err != nil {
			continue // no fresh snapshot
		}
		var to, out []string
		for _, p := range d.Placements {
			to = append(to, fmt.Sprintf("%s:%d", p.Cluster, p.Replicas))
		}
		for _, c := range d.Clusters {
			if fs := c.Filtered(); len(fs) > 0 {
				out = append(out, fmt.Sprintf("%s (%s)", c.Cluster, fs[0]))
			}
		}
		line := strings.Join(to, " ")
		if !d.Feasible {
			line = "nowhere: " + d.Reason
		}
		if len(out) > 0 {
			line += "; not " + strings.Join(out, ", ")
		}
		if line == last {
			continue
		}
		last = line
		fmt.Fprintf(w, "%s  placement of %d x 500m/1Gi (POST /api/v1/placements): %s\n", time.Now().Format("15:04:05"), demoWorkload.Replicas, line)
	}
}

func hasCapacityData(s *schedule.Snapshot) bool {
	if s == nil {
		return false
	}
	for _, c := range s.Clusters {
		if c.HasCapacity {
			return true
		}
	}
	return false
}

func simPost(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

func printBanner(w io.Writer, fwURL, logPath string, d *demoCmd, names []string) {
	fmt.Fprintf(w, `
fleetwatch demo: %d simulated clusters (%s), %d nodes x %d pods each, pushing through
remote-write into fleetwatch on the embedded TSDB, playing scenario %q on a loop.

  Prometheus HTTP API    %[6]s/api/v1/query?query=up
  Grafana data source    type Prometheus, URL %[6]s
  fleetwatch's metrics   %[6]s/metrics
  fleetwatch's log       %[7]s (warnings and errors also show here)

PromQL for each signal (paste into %[6]s/api/v1/query?query=... or Grafana):
`, len(names), strings.Join(names, ", "), d.nodes, d.podsPerNode, d.scenario, fwURL, logPath)
	for _, s := range demoSignals {
		fmt.Fprintf(w, "  %-42s %s\n", s.name, s.query)
	}
	fmt.Fprintf(w, "\nWhat is happening (read from the global view every %s; Ctrl-C stops everything):\n", d.interval)
}

func watchDemo(ctx context.Context, w io.Writer, fwURL string, every time.Duration, logger *slog.Logger) {
	c, err := api.NewClient(api.Config{Address: fwURL})
	if err != nil {
		logger.Error("demo API client", "err", err)
		<-ctx.Done()
		return
	}
	papi := promv1.NewAPI(c)
	since := map[string]time.Time{}
	last := map[string]string{}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		lines, err := demoReport(ctx, papi, now, every)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				logger.Warn("demo: querying the view", "err", err)
			}
			continue
		}
		keys := make([]string, 0, len(lines))
		for k := range lines {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if lines[k] == last[k] {
				continue
			}
			if lines[k] == "" {
				fmt.Fprintf(w, "%s  %s: recovered (was: %s since %s)\n", now.Format("15:04:05"), k, last[k], since[k].Format("15:04:05"))
				delete(since, k)
			} else {
				if last[k] == "" {
					since[k] = now
				}
				fmt.Fprintf(w, "%s  %s: %s since %s\n", now.Format("15:04:05"), k, lines[k], since[k].Format("15:04:05"))
			}
			last[k] = lines[k]
		}
		for k := range last {
			if _, ok := lines[k]; !ok && last[k] != "" {
				fmt.Fprintf(w, "%s  %s: recovered (was: %s since %s)\n", now.Format("15:04:05"), k, last[k], since[k].Format("15:04:05"))
				delete(last, k)
				delete(since, k)
			}
		}
	}
}

// demoReport queries the view and returns one line per "cluster X: condition" that holds now;
// the key is "cluster X <condition kind>".
func demoReport(ctx context.Context, papi promv1.API, now time.Time, interval time.Duration) (map[string]string, error) {
	q := func(query string) (map[string]float64, error) {
		v, _, err := papi.Query(ctx, query, now)
		if err != nil {
			return nil, err
		}
		out := map[string]float64{}
		if vec, ok := v.(model.Vector); ok {
			for _, s := range vec {
				key := string(s.Metric["cluster"])
				if key == "" {
					key = fmt.Sprintf("%s/%s", s.Metric["namespace"], s.Metric["container"])
				}
				out[key] = float64(s.Value)
			}
		}
		return out, nil
	}
	out := map[string]string{}
	nodes, err := q(`sum by (cluster) (kube_node_info)`)
	if err != nil {
		return nil, err
	}
	notReady, err := q(demoSignals[0].query)
	if err != nil {
		return nil, err
	}
	for c, n := range notReady {
		if n > 0 {
			out["cluster "+c+" nodes"] = fmt.Sprintf("%d of %d nodes NotReady", int(n), int(nodes[c]))
		}
	}
	// The saturation alerts' own series and threshold (the demo runs the pack's defaults).
	for _, sat := range []struct{ key, what, query string }{
		{"cpu", "CPU", pack.RecordCPURequestsRatio},
		{"memory", "memory", pack.RecordMemoryRequestsRatio},
	} {
		ratios, err := q(sat.query)
		if err != nil {
			return nil, err
		}
		for c, r := range ratios {
			if r > config.DefaultThresholds.SaturationRatio {
				out["cluster "+c+" "+sat.key] = fmt.Sprintf("%s requests at %.0f%% of allocatable", sat.what, 100*r)
			}
		}
	}
	crash, err := q(demoSignals[4].query)
	if err != nil {
		return nil, err
	}
	for c, n := range crash {
		if n > 0 {
			out["cluster "+c+" crashloop"] = fmt.Sprintf("%d containers in CrashLoopBackOff", int(n))
		}
	}
	age, err := q(demoSignals[6].query)
	if err != nil {
		return nil, err
	}
	for c, a := range age {
		if a > 3*interval.Seconds() {
			out["cluster "+c+" silent"] = "silent: no data arriving"
		}
	}
	apis, err := q(demoSignals[7].query)
	if err != nil {
		return nil, err
	}
	for c, up := range apis {
		if up == 0 {
			out["cluster "+c+" apiserver"] = "control plane down"
		}
	}
	drift, err := q(demoSignals[8].query)
	if err != nil {
		return nil, err
	}
	for k, n := range drift {
		if n > 1 {
			out["workload "+k+" images"] = fmt.Sprintf("%d different images across the fleet", int(n))
		}
	}
	return out, nil
}
