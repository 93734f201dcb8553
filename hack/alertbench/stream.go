package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/go-openapi/strfmt"
	"github.com/prometheus/alertmanager/api/v2/models"
)

// alertSpec is one generated alert as its cluster's Prometheus sends it, without the `cluster`
// label (fleetwatch stamps it from the credentials; Alertmanager gets it added).
type alertSpec struct {
	labels       map[string]string
	annotations  map[string]string
	startsAt     time.Time
	generatorURL string
}

// stream is the whole generated workload: every cluster's active alerts.
type stream struct {
	clusters []string
	alerts   [][]alertSpec // by cluster, in the order of clusters
	total    int
	byName   map[string]int // alerts per alertname
}

// alertKind is one kube-prometheus alert the generator produces, with how often.
type alertKind struct {
	name   string
	weight int
}

// kinds are weighted like the active alerts of a large fleet: mostly pod-level noise
// (crash loops, pods not ready, CPU throttling), then workload- and target-level alerts.
var kinds = []alertKind{
	{"KubePodCrashLooping", 30},
	{"CPUThrottlingHigh", 25},
	{"KubePodNotReady", 20},
	{"KubeDeploymentReplicasMismatch", 10},
	{"TargetDown", 5},
	{"KubeContainerWaiting", 5},
	{"KubeJobFailed", 5},
}

var (
	namespaces = []string{
		"payments", "checkout", "catalog", "search", "identity", "orders", "shipping", "inventory",
		"recommendations", "notifications", "billing", "analytics", "ingest", "gateway", "frontend",
		"media", "reviews", "pricing", "fraud", "loyalty", "messaging", "reporting", "ml-serving",
		"batch", "data-pipeline", "auth", "cart", "profile", "kube-system", "monitoring",
	}
	components = []string{"api", "worker", "web", "consumer", "scheduler", "cache", "grpc", "cron", "sync", "indexer"}
	sidecars   = []string{"istio-proxy", "config-reloader"}
	regions    = []string{"eu-west-1", "eu-central-1", "us-east-1", "us-east-2", "us-west-2", "ap-southeast-1", "ap-northeast-1", "sa-east-1", "ca-central-1", "af-south-1"}
)

// podAlphabet is what Kubernetes uses for generated name suffixes.
const podAlphabet = "bcdfghjklmnpqrstvwxz2456789"

// exprs are the alerting rules' expressions (shortened kube-prometheus mixin), for the
// generator URLs Prometheus puts on its alerts.
var exprs = map[string]string{
	"KubePodCrashLooping":            `max_over_time(kube_pod_container_status_waiting_reason{job="kube-state-metrics",namespace=~".*",reason="CrashLoopBackOff"}[5m]) >= 1`,
	"CPUThrottlingHigh":              `sum by (cluster, container, pod, namespace) (increase(container_cpu_cfs_throttled_periods_total{container!=""}[5m])) / on (cluster, container, pod, namespace) sum by (cluster, container, pod, namespace) (increase(container_cpu_cfs_periods_total[5m])) > (25 / 100)`,
	"KubePodNotReady":                `sum by (namespace, pod, cluster) (max by (namespace, pod, cluster) (kube_pod_status_phase{job="kube-state-metrics",namespace=~".*",phase=~"Pending|Unknown|Failed"}) * on (namespace, pod, cluster) group_left (owner_kind) topk by (namespace, pod, cluster) (1, max by (namespace, pod, owner_kind, cluster) (kube_pod_owner{owner_kind!="Job"}))) > 0`,
	"KubeDeploymentReplicasMismatch": `(kube_deployment_spec_replicas{job="kube-state-metrics",namespace=~".*"} > kube_deployment_status_replicas_available{job="kube-state-metrics",namespace=~".*"}) and (changes(kube_deployment_status_replicas_updated{job="kube-state-metrics",namespace=~".*"}[10m]) == 0)`,
	"TargetDown":                     `100 * (count by (cluster, job, namespace, service) (up == 0) / count by (cluster, job, namespace, service) (up)) > 10`,
	"KubeContainerWaiting":           `kube_pod_container_status_waiting_reason{job="kube-state-metrics",namespace=~".*",reason!="CrashLoopBackOff"} > 0`,
	"KubeJobFailed":                  `kube_job_failed{job="kube-state-metrics",namespace=~".*"} > 0`,
}

// clusterNames are deterministic, realistic cluster names: prod-eu-west-1-a, ...
func clusterNames(n int) []string {
	out := make([]string, n)
	for i := range n {
		tier := []string{"prod", "prod", "staging"}[i%3]
		out[i] = fmt.Sprintf("%s-%s-%02d", tier, regions[(i/3)%len(regions)], i/(3*len(regions))+1)
	}
	// The pattern repeats only after len(regions)*3*99 clusters; make sure anyway.
	seen := map[string]bool{}
	for i, c := range out {
		if seen[c] {
			out[i] = fmt.Sprintf("%s-%d", c, i)
		}
		seen[out[i]] = true
	}
	return out
}

// genStream generates total alerts spread evenly over n clusters. The same seed gives the
// same alerts (labels, annotations, start offsets); times are relative to now.
func genStream(n, total int, seed uint64, now time.Time) *stream {
	st := &stream{clusters: clusterNames(n), alerts: make([][]alertSpec, n), total: total, byName: map[string]int{}}
	for ci, c := range st.clusters {
		count := total / n
		if ci < total%n {
			count++
		}
		st.alerts[ci] = genCluster(c, ci, count, seed, now)
		for _, a := range st.alerts[ci] {
			st.byName[a.labels["alertname"]]++
		}
	}
	return st
}

// clusterGen generates one cluster's alerts, each label set distinct within the cluster.
type clusterGen struct {
	cluster string
	rng     *rand.Rand
	now     time.Time
	used    map[string]bool
	rsHash  map[string]string // deployment -> its current ReplicaSet's pod-template-hash
	pods    map[string]bool
	ksm     string // kube-state-metrics' instance
}

func genCluster(cluster string, ci, count int, seed uint64, now time.Time) []alertSpec {
	g := &clusterGen{
		cluster: cluster, now: now,
		rng:    rand.New(rand.NewPCG(seed, uint64(ci))),
		used:   map[string]bool{},
		rsHash: map[string]string{},
		pods:   map[string]bool{},
	}
	g.ksm = fmt.Sprintf("10.%d.%d.%d:8080", 64+ci%64, g.rng.IntN(256), 2+g.rng.IntN(250))
	sum := 0
	for _, k := range kinds {
		sum += k.weight
	}
	out := make([]alertSpec, 0, count)
	for len(out) < count {
		x, kind := g.rng.IntN(sum), kinds[0].name
		for _, k := range kinds {
			if x < k.weight {
				kind = k.name
				break
			}
			x -= k.weight
		}
		a, ok := g.alert(kind)
		if !ok {
			continue // that label set exists already; draw again
		}
		out = append(out, a)
	}
	return out
}

func (g *clusterGen) pick(list []string) string { return list[g.rng.IntN(len(list))] }

func (g *clusterGen) suffix(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = podAlphabet[g.rng.IntN(len(podAlphabet))]
	}
	return string(b)
}

// workload picks a namespace and a deployment in it.
func (g *clusterGen) workload() (ns, deploy, comp string) {
	ns, comp = g.pick(namespaces), g.pick(components)
	return ns, ns + "-" + comp, comp
}

// pod returns a new pod of a deployment, named as its ReplicaSet names pods.
func (g *clusterGen) pod(ns, deploy string) string {
	h, ok := g.rsHash[ns+"/"+deploy]
	if !ok {
		h = g.suffix(10)
		g.rsHash[ns+"/"+deploy] = h
	}
	for {
		p := deploy + "-" + h + "-" + g.suffix(5)
		if !g.pods[ns+"/"+p] {
			g.pods[ns+"/"+p] = true
			return p
		}
	}
}

func (g *clusterGen) uid() string {
	const hex = "0123456789abcdef"
	b := make([]byte, 36)
	for i := range b {
		switch i {
		case 8, 13, 18, 23:
			b[i] = '-'
		default:
			b[i] = hex[g.rng.IntN(16)]
		}
	}
	return string(b)
}

// ksmLabels are the target labels of kube-state-metrics as kube-prometheus scrapes it.
func (g *clusterGen) ksmLabels(l map[string]string) {
	l["container"] = "kube-state-metrics"
	l["endpoint"] = "http-main"
	l["instance"] = g.ksm
	l["job"] = "kube-state-metrics"
	l["service"] = "kube-state-metrics"
}

// alert generates one alert of the kind, or false if its identity was drawn before.
func (g *clusterGen) alert(kind string) (alertSpec, bool) {
	l := map[string]string{"alertname": kind, "prometheus": "monitoring/k8s"}
	var ann map[string]string
	ns, deploy, comp := g.workload()
	container := comp
	if g.rng.IntN(5) == 0 {
		container = g.pick(sidecars)
	}
	var id string // what makes the alert distinct within its kind
	switch kind {
	case "KubePodCrashLooping":
		g.ksmLabels(l)
		pod := g.pod(ns, deploy)
		l["namespace"], l["pod"], l["container"], l["reason"], l["uid"], l["severity"] = ns, pod, container, "CrashLoopBackOff", g.uid(), "warning"
		id = ns + "/" + pod + "/" + container
		ann = map[string]string{
			"description": fmt.Sprintf("Pod %s/%s (%s) is in waiting state (reason: \"CrashLoopBackOff\") on cluster %s.", ns, pod, container, g.cluster),
			"runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping",
			"summary":     "Pod is crash looping.",
		}
	case "CPUThrottlingHigh":
		pod := g.pod(ns, deploy)
		l["namespace"], l["pod"], l["container"], l["severity"] = ns, pod, container, "info"
		id = ns + "/" + pod + "/" + container
		ann = map[string]string{
			"description": fmt.Sprintf("%d%% throttling of CPU in namespace %s for container %s in pod %s on cluster %s.", 26+g.rng.IntN(70), ns, container, pod, g.cluster),
			"runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/cputhrottlinghigh",
			"summary":     "Processes experience elevated CPU throttling.",
		}
	case "KubePodNotReady":
		pod := g.pod(ns, deploy)
		l["namespace"], l["pod"], l["severity"] = ns, pod, "warning"
		id = ns + "/" + pod
		ann = map[string]string{
			"description": fmt.Sprintf("Pod %s/%s has been in a non-ready state for longer than 15 minutes on cluster %s.", ns, pod, g.cluster),
			"runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodnotready",
			"summary":     "Pod has been in a non-ready state for more than 15 minutes.",
		}
	case "KubeDeploymentReplicasMismatch":
		g.ksmLabels(l)
		l["namespace"], l["deployment"], l["severity"] = ns, deploy, "warning"
		id = ns + "/" + deploy
		ann = map[string]string{
			"description": fmt.Sprintf("Deployment %s/%s has not matched the expected number of replicas for longer than 15 minutes on cluster %s.", ns, deploy, g.cluster),
			"runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubedeploymentreplicasmismatch",
			"summary":     "Deployment has not matched the expected number of replicas.",
		}
	case "TargetDown":
		l["namespace"], l["job"], l["service"], l["severity"] = ns, deploy, deploy, "warning"
		id = ns + "/" + deploy
		ann = map[string]string{
			"description": fmt.Sprintf("%d%% of the %s/%s targets in %s namespace are down.", 10*(2+g.rng.IntN(9)), deploy, deploy, ns),
			"runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/general/targetdown",
			"summary":     "One or more targets are unreachable.",
		}
	case "KubeContainerWaiting":
		pod := g.pod(ns, deploy)
		l["namespace"], l["pod"], l["container"], l["severity"] = ns, pod, container, "warning"
		id = ns + "/" + pod + "/" + container
		ann = map[string]string{
			"description": fmt.Sprintf("pod/%s in namespace %s on container %s has been in waiting state for longer than 1 hour. (reason: \"ContainerCreating\") on cluster %s.", pod, ns, container, g.cluster),
			"runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubecontainerwaiting",
			"summary":     "Pod container waiting longer than 1 hour",
		}
	case "KubeJobFailed":
		g.ksmLabels(l)
		job := fmt.Sprintf("%s-%s-%d", deploy, "cron", 29_000_000+g.rng.IntN(100_000))
		l["namespace"], l["job_name"], l["severity"] = ns, job, "warning"
		id = ns + "/" + job
		ann = map[string]string{
			"description": fmt.Sprintf("Job %s/%s failed to complete. Removing failed job after investigation should clear this alert.", ns, job),
			"runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubejobfailed",
			"summary":     "Job failed to complete.",
		}
	default:
		panic("unknown alert kind " + kind)
	}
	if g.used[kind+"\xff"+id] {
		return alertSpec{}, false
	}
	g.used[kind+"\xff"+id] = true
	// Active for between 5 minutes and 6 hours; Prometheus keeps the first activation time.
	starts := g.now.Add(-5*time.Minute - time.Duration(g.rng.IntN(6*3600))*time.Second).Truncate(time.Second)
	return alertSpec{
		labels:       l,
		annotations:  ann,
		startsAt:     starts,
		generatorURL: fmt.Sprintf("https://prometheus.%s.example.com/graph?g0.expr=%s&g0.tab=1", g.cluster, url.QueryEscape(exprs[kind])),
	}, true
}

// batch is one POST /api/v2/alerts body: some alerts of one cluster.
type batch struct {
	cluster string
	alerts  int
	body    []byte
}

// encoded is a phase's requests for one target.
type encoded struct {
	batches []batch
	bytes   int64
}

// encode turns the stream into request bodies of at most size alerts, each from one cluster,
// ordered so that the clusters take turns (every cluster's first batch, then every second
// one...), as many Prometheus servers sending at once do. endsAt is the same for all, as
// Prometheus sets it when it sends (4 x its 1m resend delay after the evaluation).
// withCluster adds the `cluster` label.
func (st *stream) encode(size int, withCluster bool, endsAt time.Time) (*encoded, error) {
	ends := strfmt.DateTime(endsAt)
	perCluster := make([][]batch, len(st.clusters))
	var rounds int
	for ci, c := range st.clusters {
		all := st.alerts[ci]
		for lo := 0; lo < len(all); lo += size {
			hi := min(lo+size, len(all))
			pas := make(models.PostableAlerts, 0, hi-lo)
			for _, a := range all[lo:hi] {
				pas = append(pas, a.postable(c, withCluster, ends))
			}
			body, err := json.Marshal(pas)
			if err != nil {
				return nil, err
			}
			perCluster[ci] = append(perCluster[ci], batch{cluster: c, alerts: hi - lo, body: body})
		}
		rounds = max(rounds, len(perCluster[ci]))
	}
	e := &encoded{}
	for r := range rounds {
		for ci := range perCluster {
			if r < len(perCluster[ci]) {
				b := perCluster[ci][r]
				e.batches = append(e.batches, b)
				e.bytes += int64(len(b.body))
			}
		}
	}
	return e, nil
}

func (a alertSpec) postable(cluster string, withCluster bool, ends strfmt.DateTime) *models.PostableAlert {
	ls := make(models.LabelSet, len(a.labels)+1)
	for k, v := range a.labels {
		ls[k] = v
	}
	if withCluster {
		ls["cluster"] = cluster
	}
	return &models.PostableAlert{
		Alert:       models.Alert{Labels: ls, GeneratorURL: strfmt.URI(a.generatorURL)},
		Annotations: models.LabelSet(a.annotations),
		StartsAt:    strfmt.DateTime(a.startsAt),
		EndsAt:      ends,
	}
}

// labelKey is a label set as one comparable string, for counting distinct alerts.
func labelKey(ls map[string]string) string {
	names := make([]string, 0, len(ls))
	for n := range ls {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n)
		b.WriteByte(0xff)
		b.WriteString(ls[n])
		b.WriteByte(0xfe)
	}
	return b.String()
}
