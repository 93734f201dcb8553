package sim

import (
	"bytes"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names, help texts, label names and types are kube-state-metrics v2's
// (internal/store/node.go, pod.go, deployment.go, replicaset.go). Help texts carry the
// "[STABLE] " prefix kube-state-metrics puts on stable metrics. client_golang sorts label
// pairs by name, which a scraper cannot tell from kube-state-metrics' order.
//
// The families are a subset: the ones fleetwatch's queries and the usual alerting rules use.
// Families that only restate others (kube_pod_status_ready, kube_pod_container_status_waiting)
// are left out to keep a 1500-pod scrape at about 23k series.

func newDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	podLabels       = []string{"namespace", "pod", "uid"}
	containerLabels = []string{"namespace", "pod", "uid", "container"}

	descNodeInfo = newDesc("kube_node_info", "[STABLE] Information about a cluster node.",
		"node", "kernel_version", "os_image", "container_runtime_version", "kubelet_version",
		"kubeproxy_version", "provider_id", "pod_cidr", "system_uuid", "internal_ip")
	descNodeUnschedulable = newDesc("kube_node_spec_unschedulable", "[STABLE] Whether a node can schedule new pods.", "node")
	descNodeCondition     = newDesc("kube_node_status_condition", "[STABLE] The condition of a cluster node.", "node", "condition", "status")
	descNodeAllocatable   = newDesc("kube_node_status_allocatable", "[STABLE] The allocatable for different resources of a node that are available for scheduling.", "node", "resource", "unit")
	descNodeCapacity      = newDesc("kube_node_status_capacity", "[STABLE] The capacity for different resources of a node.", "node", "resource", "unit")

	descPodInfo = newDesc("kube_pod_info", "[STABLE] Information about pod.",
		append(podLabels[:3:3], "host_ip", "pod_ip", "node", "created_by_kind", "created_by_name", "priority_class", "host_network")...)
	descPodOwner = newDesc("kube_pod_owner", "[STABLE] Information about the Pod's owner.",
		append(podLabels[:3:3], "owner_kind", "owner_name", "owner_is_controller")...)
	descPodPhase = newDesc("kube_pod_status_phase", "[STABLE] The pods current phase.", append(podLabels[:3:3], "phase")...)

	descContainerInfo = newDesc("kube_pod_container_info", "[STABLE] Information about a container in a pod.",
		append(containerLabels[:4:4], "image_spec", "image", "image_id", "container_id")...)
	descContainerRequests = newDesc("kube_pod_container_resource_requests",
		"The number of requested request resource by a container. It is recommended to use the kube_pod_resource_requests metric exposed by kube-scheduler instead, as it is more precise.",
		append(containerLabels[:4:4], "node", "resource", "unit")...)
	descContainerRestarts      = newDesc("kube_pod_container_status_restarts_total", "[STABLE] The number of container restarts per container.", containerLabels...)
	descContainerReady         = newDesc("kube_pod_container_status_ready", "[STABLE] Describes whether the containers readiness check succeeded.", containerLabels...)
	descContainerWaitingReason = newDesc("kube_pod_container_status_waiting_reason", "[STABLE] Describes the reason the container is currently in waiting state.",
		append(containerLabels[:4:4], "reason")...)

	descDeploymentSpecReplicas        = newDesc("kube_deployment_spec_replicas", "[STABLE] Number of desired pods for a deployment.", "namespace", "deployment")
	descDeploymentReplicas            = newDesc("kube_deployment_status_replicas", "[STABLE] The number of replicas per deployment.", "namespace", "deployment")
	descDeploymentReplicasAvailable   = newDesc("kube_deployment_status_replicas_available", "[STABLE] The number of available replicas per deployment.", "namespace", "deployment")
	descDeploymentReplicasUnavailable = newDesc("kube_deployment_status_replicas_unavailable", "[STABLE] The number of unavailable replicas per deployment.", "namespace", "deployment")
	descDeploymentReplicasUpdated     = newDesc("kube_deployment_status_replicas_updated", "[STABLE] The number of updated replicas per deployment.", "namespace", "deployment")

	descReplicaSetOwner = newDesc("kube_replicaset_owner", "[STABLE] Information about the ReplicaSet's owner.",
		"namespace", "replicaset", "owner_kind", "owner_name", "owner_is_controller")

	allDescs = []*prometheus.Desc{
		descNodeInfo, descNodeUnschedulable, descNodeCondition, descNodeAllocatable, descNodeCapacity,
		descPodInfo, descPodOwner, descPodPhase,
		descContainerInfo, descContainerRequests, descContainerRestarts, descContainerReady, descContainerWaitingReason,
		descDeploymentSpecReplicas, descDeploymentReplicas, descDeploymentReplicasAvailable, descDeploymentReplicasUnavailable, descDeploymentReplicasUpdated,
		descReplicaSetOwner,
	}

	// Node conditions in the order kubelets report them.
	nodeConditions = []string{"NetworkUnavailable", "MemoryPressure", "DiskPressure", "PIDPressure", "Ready"}
	// kube-state-metrics' conditionStatuses, in its order.
	conditionStatuses = []string{"true", "false", "unknown"}
	podPhases         = []string{"Pending", "Succeeded", "Failed", "Unknown", "Running"}
)

const (
	kernelVersion    = "6.8.0-1019-generic"
	osImage          = "Ubuntu 24.04.1 LTS"
	runtimeVersion   = "containerd://1.7.24"
	kubeletVersion   = "v1.31.4"
	kubeProxyVersion = "deprecated"
)

// ksmCollector exports one cluster as kube-state-metrics would.
//
// Building 23k const metrics and having the registry sort them is most of a scrape's cost,
// yet between scenario steps only a few series change: the restart counters and container
// ids of crash-looping containers, and the pods of a ramping deployment. So the collector
// keeps the other ("static") metrics from one model generation to the next, each family
// sorted the way the registry sorts, and merges the few dynamic ones in at collect time. The
// registry then receives every family already in order, which its sort goes through in
// linear time.
type ksmCollector struct {
	s *Sim
	c *cluster

	mu        sync.Mutex // serializes collects of this cluster, guards the fields below
	staticOK  bool
	staticGen uint64
	static    [][]sortedMetric // per index of allDescs
}

type sortedMetric struct {
	m prometheus.Metric
	d *dto.Metric // m written out, for sorting
}

func (k *ksmCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var descIndex = func() map[*prometheus.Desc]int {
	m := map[*prometheus.Desc]int{}
	for i, d := range allDescs {
		m[d] = i
	}
	return m
}()

func (k *ksmCollector) Collect(ch chan<- prometheus.Metric) {
	k.s.mu.RLock()
	defer k.s.mu.RUnlock()
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.s.now()
	if !k.staticOK || k.staticGen != k.c.gen {
		k.static = k.build(now, false)
		k.staticOK, k.staticGen = true, k.c.gen
	}
	dynamic := k.build(now, true)
	for f := range allDescs {
		mergeSorted(k.static[f], dynamic[f], ch)
	}
}

// mergeSorted sends two sorted lists as one sorted sequence.
func mergeSorted(a, b []sortedMetric, ch chan<- prometheus.Metric) {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		if j == len(b) || (i < len(a) && !metricLess(b[j].d, a[i].d)) {
			ch <- a[i].m
			i++
			continue
		}
		ch <- b[j].m
		j++
	}
}

// metricLess is the order client_golang's registry sorts a family's metrics in.
func metricLess(a, b *dto.Metric) bool {
	if len(a.Label) != len(b.Label) {
		return len(a.Label) < len(b.Label)
	}
	for n, lp := range a.Label {
		if vi, vj := lp.GetValue(), b.Label[n].GetValue(); vi != vj {
			return vi < vj
		}
	}
	return false
}

// build returns the dynamic metrics (wantDynamic) or the static ones, per family, sorted.
func (k *ksmCollector) build(now time.Time, wantDynamic bool) [][]sortedMetric {
	out := make([][]sortedMetric, len(allDescs))
	emit := func(dynamic bool, d *prometheus.Desc, vt prometheus.ValueType, v float64, lv ...string) {
		if dynamic != wantDynamic {
			return
		}
		m := prometheus.MustNewConstMetric(d, vt, v, lv...)
		pb := &dto.Metric{}
		if err := m.Write(pb); err != nil {
			return
		}
		f := descIndex[d]
		out[f] = append(out[f], sortedMetric{m: m, d: pb})
	}
	gauge := func(dynamic bool, d *prometheus.Desc, v float64, lv ...string) {
		emit(dynamic, d, prometheus.GaugeValue, v, lv...)
	}

	if !wantDynamic {
		for _, n := range k.c.nodes {
			gauge(false, descNodeInfo, 1, n.name, kernelVersion, osImage, runtimeVersion, kubeletVersion, kubeProxyVersion, n.providerID, n.podCIDR, n.systemUUID, n.internalIP)
			gauge(false, descNodeUnschedulable, b2f(n.unschedulable), n.name)
			for _, cond := range nodeConditions {
				// Ready is "true" on a healthy node; the pressure conditions and
				// NetworkUnavailable are "false".
				current := "false"
				if cond == "Ready" && n.ready {
					current = "true"
				}
				for _, st := range conditionStatuses {
					gauge(false, descNodeCondition, b2f(st == current), n.name, cond, st)
				}
			}
			gauge(false, descNodeAllocatable, float64(n.cpuAllocMilli)/1000, n.name, "cpu", "core")
			gauge(false, descNodeAllocatable, float64(n.memAlloc), n.name, "memory", "byte")
			gauge(false, descNodeAllocatable, float64(n.storageAlloc), n.name, "ephemeral_storage", "byte")
			gauge(false, descNodeAllocatable, float64(n.podsCap), n.name, "pods", "integer")
			gauge(false, descNodeCapacity, float64(n.cpuCapMilli)/1000, n.name, "cpu", "core")
			gauge(false, descNodeCapacity, float64(n.memCap), n.name, "memory", "byte")
			gauge(false, descNodeCapacity, float64(n.storageCap), n.name, "ephemeral_storage", "byte")
			gauge(false, descNodeCapacity, float64(n.podsCap), n.name, "pods", "integer")
		}
	}

	for _, d := range k.c.deployments {
		// Everything about a ramping deployment changes with time.
		dyn := d.ramp
		if !dyn && wantDynamic && !hasCrash(d) {
			continue
		}
		pods := d.visiblePods(now)
		available := 0
		for _, p := range pods {
			if p.ready() {
				available++
			}
			gauge(dyn, descPodInfo, 1, d.namespace, p.name, p.uid, p.node.internalIP, p.ip, p.node.name, "ReplicaSet", p.rsName, "", "false")
			gauge(dyn, descPodOwner, 1, d.namespace, p.name, p.uid, "ReplicaSet", p.rsName, "true")
			for _, ph := range podPhases {
				gauge(dyn, descPodPhase, b2f(ph == "Running"), d.namespace, p.name, p.uid, ph)
			}
			for _, ct := range p.containers {
				// A crash loop changes the restart count and, with each restart, the container.
				crashDyn := dyn || ct.crash != nil
				restarts := ct.restartCount(now)
				cid := ct.containerID
				if ct.crash != nil {
					cid = containerID(p.uid, ct.name, restarts)
				}
				gauge(crashDyn, descContainerInfo, 1, d.namespace, p.name, p.uid, ct.name, ct.image, ct.image, ct.imageID, cid)
				if ct.cpuMilli > 0 {
					gauge(dyn, descContainerRequests, float64(ct.cpuMilli)/1000, d.namespace, p.name, p.uid, ct.name, p.node.name, "cpu", "core")
				}
				if ct.memBytes > 0 {
					gauge(dyn, descContainerRequests, float64(ct.memBytes), d.namespace, p.name, p.uid, ct.name, p.node.name, "memory", "byte")
				}
				emit(crashDyn, descContainerRestarts, prometheus.CounterValue, float64(restarts), d.namespace, p.name, p.uid, ct.name)
				gauge(dyn, descContainerReady, b2f(ct.crash == nil && p.node.ready), d.namespace, p.name, p.uid, ct.name)
				// kube-state-metrics v2 exports a waiting reason only for waiting containers.
				if ct.crash != nil {
					gauge(dyn, descContainerWaitingReason, 1, d.namespace, p.name, p.uid, ct.name, "CrashLoopBackOff")
				}
			}
		}
		replicas := float64(len(pods))
		gauge(dyn, descDeploymentSpecReplicas, replicas, d.namespace, d.name)
		gauge(dyn, descDeploymentReplicas, replicas, d.namespace, d.name)
		gauge(dyn, descDeploymentReplicasAvailable, float64(available), d.namespace, d.name)
		gauge(dyn, descDeploymentReplicasUnavailable, replicas-float64(available), d.namespace, d.name)
		gauge(dyn, descDeploymentReplicasUpdated, replicas, d.namespace, d.name)
		if len(d.pods) > 0 {
			gauge(dyn, descReplicaSetOwner, 1, d.namespace, d.pods[0].rsName, "Deployment", d.name, "true")
		}
	}
	for _, fam := range out {
		sort.Slice(fam, func(i, j int) bool { return metricLess(fam[i].d, fam[j].d) })
	}
	return out
}

func hasCrash(d *deployment) bool {
	for _, p := range d.pods {
		if p.crashing() {
			return true
		}
	}
	return false
}

// apiserverCollector is the control-plane signal: a few apiserver series whose counters grow
// while the control plane is up.
type apiserverCollector struct {
	s *Sim
	c *cluster
}

var (
	descAPIRequests = newDesc("apiserver_request_total",
		"[STABLE] Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.",
		"code", "component", "dry_run", "group", "resource", "scope", "subresource", "verb", "version")
	descAPIInflight = newDesc("apiserver_current_inflight_requests",
		"[STABLE] Maximal number of currently used inflight request limit of this apiserver per request kind in last second.",
		"request_kind")

	// Requests per second per node, by kind: roughly what kubelets and controllers cause.
	apiRequestMix = []struct {
		code, resource, scope, subresource, verb string
		perNodePerSec                            float64
	}{
		{"200", "pods", "namespace", "", "GET", 0.20},
		{"200", "pods", "cluster", "", "LIST", 0.01},
		{"200", "pods", "cluster", "", "WATCH", 0.002},
		{"200", "nodes", "resource", "status", "PATCH", 0.10},
		{"200", "leases", "namespace", "", "PUT", 0.10},
		{"201", "events", "namespace", "", "POST", 0.05},
		{"404", "configmaps", "namespace", "", "GET", 0.005},
		{"409", "leases", "namespace", "", "PUT", 0.001},
	}
)

func (a *apiserverCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descAPIRequests
	ch <- descAPIInflight
}

func (a *apiserverCollector) Collect(ch chan<- prometheus.Metric) {
	a.s.mu.RLock()
	uptime := a.c.api.uptime(a.s.now())
	nodes := float64(len(a.c.nodes))
	a.s.mu.RUnlock()
	for _, r := range apiRequestMix {
		group, version := "", "v1"
		if r.resource == "leases" {
			group = "coordination.k8s.io"
		}
		ch <- prometheus.MustNewConstMetric(descAPIRequests, prometheus.CounterValue,
			float64(int64(r.perNodePerSec*nodes*uptime)), r.code, "apiserver", "", group, r.resource, r.scope, r.subresource, r.verb, version)
	}
	ch <- prometheus.MustNewConstMetric(descAPIInflight, prometheus.GaugeValue, 1+float64(int(nodes)/20), "readOnly")
	ch <- prometheus.MustNewConstMetric(descAPIInflight, prometheus.GaugeValue, float64(int(nodes)/50), "mutating")
}

func metricsHandler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
}

// cachingHandler replays promhttp's previous response while the cluster's series cannot have
// changed. Gathering and encoding 23k series is most of a scrape's cost, and between scenario
// steps nothing changes but the restart counters of crash-looping containers and ramps, which
// cluster.dynamicKey covers. Responses are kept per Accept and Accept-Encoding, so the
// negotiated format and compression stay promhttp's.
type cachingHandler struct {
	s    *Sim
	c    *cluster
	next http.Handler

	mu      sync.Mutex
	ok      bool
	gen     uint64
	dyn     uint64
	entries map[string]*cachedResponse
}

type cachedResponse struct {
	header http.Header
	body   []byte
}

// maxCachedVariants bounds the entries per model state: scrapers send only a few distinct
// Accept headers.
const maxCachedVariants = 8

func (h *cachingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The key is read before gathering: if the model changes in between, the entry holds newer
	// series under an older key and the next scrape gathers again. It never serves older ones.
	h.s.mu.RLock()
	gen, dyn := h.c.gen, h.c.dynamicKey(h.s.now())
	h.s.mu.RUnlock()

	variant := r.Header.Get("Accept") + "\x00" + r.Header.Get("Accept-Encoding")
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.ok || h.gen != gen || h.dyn != dyn {
		h.ok, h.gen, h.dyn, h.entries = true, gen, dyn, map[string]*cachedResponse{}
	}
	e := h.entries[variant]
	if e == nil {
		rec := &recorder{header: http.Header{}, code: http.StatusOK}
		h.next.ServeHTTP(rec, r)
		if rec.code != http.StatusOK {
			copyHeader(w.Header(), rec.header)
			w.WriteHeader(rec.code)
			_, _ = w.Write(rec.body.Bytes())
			return
		}
		e = &cachedResponse{header: rec.header, body: rec.body.Bytes()}
		if len(h.entries) < maxCachedVariants {
			h.entries[variant] = e
		}
	}
	copyHeader(w.Header(), e.header)
	w.Header().Set("Content-Length", strconv.Itoa(len(e.body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(e.body)
}

func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = append([]string(nil), v...)
	}
}

// recorder is a minimal http.ResponseWriter that keeps the response.
type recorder struct {
	header http.Header
	code   int
	wrote  bool
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.code, r.wrote = code, true
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}
