package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTestSim is a small fleet (eu-1, eu-2, us-1; 10 nodes x 10 pods) on a fake clock.
func newTestSim(t testing.TB) (*Sim, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	s, err := New(Options{Nodes: 10, PodsPerNode: 10, Seed: 1, Now: clk.Now})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s, clk
}

func do(t testing.TB, s *Sim, method, path string, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
}

func scrape(t testing.TB, s *Sim, cluster string) map[string]*dto.MetricFamily {
	t.Helper()
	rec := do(t, s, http.MethodGet, "/clusters/"+cluster+"/metrics", "")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(rec.Body)
	require.NoError(t, err)
	return mfs
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return m.GetUntyped().GetValue()
}

// series returns the metrics of a family whose labels match all of match.
func series(mfs map[string]*dto.MetricFamily, name string, match map[string]string) []*dto.Metric {
	var out []*dto.Metric
	mf := mfs[name]
	if mf == nil {
		return nil
	}
next:
	for _, m := range mf.GetMetric() {
		l := labels(m)
		for k, v := range match {
			if l[k] != v {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

func sum(ms []*dto.Metric) float64 {
	var s float64
	for _, m := range ms {
		s += value(m)
	}
	return s
}

func countValue(ms []*dto.Metric, v float64) int {
	n := 0
	for _, m := range ms {
		if value(m) == v {
			n++
		}
	}
	return n
}

func truthOf(t testing.TB, s *Sim, cluster string) ClusterTruth {
	t.Helper()
	for _, ct := range s.Truth() {
		if ct.Name == cluster {
			return ct
		}
	}
	t.Fatalf("no truth for cluster %s", cluster)
	return ClusterTruth{}
}

func TestDefaultClusterNames(t *testing.T) {
	require.Empty(t, DefaultClusterNames(0))
	require.Equal(t, []string{"eu-1", "eu-2", "us-1"}, DefaultClusterNames(3))
	require.Equal(t, []string{"eu-1", "eu-2", "us-1", "us-2", "ap-1", "ap-2", "eu-3", "eu-4"}, DefaultClusterNames(8))
}

func TestOptionsValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		err  string
	}{
		{"empty clusters", Options{Clusters: []string{}}, "options: Clusters is empty"},
		{"bad cluster name", Options{Clusters: []string{"eu-1", "EU 2"}}, `options: Clusters[1]: invalid cluster name "EU 2" (lower-case letters, digits and '-')`},
		{"duplicate cluster", Options{Clusters: []string{"eu-1", "eu-1"}}, `options: Clusters[1]: duplicate cluster name "eu-1"`},
		{"negative nodes", Options{Nodes: -1}, "options: Nodes must be between 1 and 5000, got -1"},
		{"too many pods", Options{PodsPerNode: 111}, "options: PodsPerNode must be between 1 and 110, got 111"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.o)
			require.EqualError(t, err, tc.err)
		})
	}
}

func TestDeterministic(t *testing.T) {
	a, _ := newTestSim(t)
	b, _ := newTestSim(t)
	ra := do(t, a, http.MethodGet, "/clusters/eu-2/metrics", "")
	rb := do(t, b, http.MethodGet, "/clusters/eu-2/metrics", "")
	require.Equal(t, ra.Body.String(), rb.Body.String())

	c, err := New(Options{Nodes: 10, PodsPerNode: 10, Seed: 2, Now: newFakeClock().Now})
	require.NoError(t, err)
	defer c.Close()
	rc := do(t, c, http.MethodGet, "/clusters/eu-2/metrics", "")
	require.NotEqual(t, ra.Body.String(), rc.Body.String())
}

func TestUnknownCluster(t *testing.T) {
	s, _ := newTestSim(t)
	for _, p := range []string{"/clusters/xx-9/metrics", "/clusters/xx-9/apiserver/metrics"} {
		rec := do(t, s, http.MethodGet, p, "")
		require.Equal(t, http.StatusNotFound, rec.Code)
		require.JSONEq(t, `{"error": "unknown cluster \"xx-9\""}`, rec.Body.String())
	}
}

// The exact names, types and label names kube-state-metrics v2 exports.
func TestMetricFamilies(t *testing.T) {
	s, _ := newTestSim(t)
	require.NoError(t, s.Apply(Step{Action: ActionCrashloop, Cluster: "eu-1", Namespace: "payments", Deployment: "api"}))
	mfs := scrape(t, s, "eu-1")
	pod := []string{"namespace", "pod", "uid"}
	ctr := []string{"namespace", "pod", "uid", "container"}
	want := map[string]struct {
		typ    dto.MetricType
		labels []string
	}{
		"kube_node_info":                              {dto.MetricType_GAUGE, []string{"node", "kernel_version", "os_image", "container_runtime_version", "kubelet_version", "kubeproxy_version", "provider_id", "pod_cidr", "system_uuid", "internal_ip"}},
		"kube_node_spec_unschedulable":                {dto.MetricType_GAUGE, []string{"node"}},
		"kube_node_status_condition":                  {dto.MetricType_GAUGE, []string{"node", "condition", "status"}},
		"kube_node_status_allocatable":                {dto.MetricType_GAUGE, []string{"node", "resource", "unit"}},
		"kube_node_status_capacity":                   {dto.MetricType_GAUGE, []string{"node", "resource", "unit"}},
		"kube_pod_info":                               {dto.MetricType_GAUGE, append(pod, "host_ip", "pod_ip", "node", "created_by_kind", "created_by_name", "priority_class", "host_network")},
		"kube_pod_owner":                              {dto.MetricType_GAUGE, append(pod, "owner_kind", "owner_name", "owner_is_controller")},
		"kube_pod_status_phase":                       {dto.MetricType_GAUGE, append(pod, "phase")},
		"kube_pod_container_info":                     {dto.MetricType_GAUGE, append(ctr, "image_spec", "image", "image_id", "container_id")},
		"kube_pod_container_resource_requests":        {dto.MetricType_GAUGE, append(ctr, "node", "resource", "unit")},
		"kube_pod_container_status_restarts_total":    {dto.MetricType_COUNTER, ctr},
		"kube_pod_container_status_ready":             {dto.MetricType_GAUGE, ctr},
		"kube_pod_container_status_waiting_reason":    {dto.MetricType_GAUGE, append(ctr, "reason")},
		"kube_deployment_spec_replicas":               {dto.MetricType_GAUGE, []string{"namespace", "deployment"}},
		"kube_deployment_status_replicas":             {dto.MetricType_GAUGE, []string{"namespace", "deployment"}},
		"kube_deployment_status_replicas_available":   {dto.MetricType_GAUGE, []string{"namespace", "deployment"}},
		"kube_deployment_status_replicas_unavailable": {dto.MetricType_GAUGE, []string{"namespace", "deployment"}},
		"kube_deployment_status_replicas_updated":     {dto.MetricType_GAUGE, []string{"namespace", "deployment"}},
		"kube_replicaset_owner":                       {dto.MetricType_GAUGE, []string{"namespace", "replicaset", "owner_kind", "owner_name", "owner_is_controller"}},
	}
	var got []string
	for name := range mfs {
		got = append(got, name)
	}
	var wantNames []string
	for name := range want {
		wantNames = append(wantNames, name)
	}
	require.ElementsMatch(t, wantNames, got)
	for name, w := range want {
		t.Run(name, func(t *testing.T) {
			mf := mfs[name]
			require.Equal(t, w.typ, mf.GetType())
			require.NotEmpty(t, mf.GetMetric())
			wl := append([]string(nil), w.labels...)
			sort.Strings(wl)
			for _, m := range mf.GetMetric() {
				var ls []string
				for k := range labels(m) {
					ls = append(ls, k)
				}
				sort.Strings(ls)
				require.Equal(t, wl, ls)
			}
		})
	}

	// Value conventions.
	for _, m := range mfs["kube_node_status_condition"].GetMetric() {
		require.Contains(t, []string{"true", "false", "unknown"}, labels(m)["status"])
		require.Contains(t, []string{"Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"}, labels(m)["condition"])
	}
	for _, r := range []struct{ resource, unit string }{{"cpu", "core"}, {"memory", "byte"}, {"pods", "integer"}, {"ephemeral_storage", "byte"}} {
		require.Len(t, series(mfs, "kube_node_status_allocatable", map[string]string{"resource": r.resource, "unit": r.unit}), 10)
		require.Len(t, series(mfs, "kube_node_status_capacity", map[string]string{"resource": r.resource, "unit": r.unit}), 10)
	}
	// One series per condition and status, 1 for the current status only.
	for _, cond := range nodeConditions {
		require.Equal(t, 10, countValue(series(mfs, "kube_node_status_condition", map[string]string{"condition": cond}), 1))
	}
	// Five phases per pod, one of them 1.
	require.Equal(t, 5*len(mfs["kube_pod_info"].GetMetric()), len(mfs["kube_pod_status_phase"].GetMetric()))
	require.Equal(t, float64(len(mfs["kube_pod_info"].GetMetric())), sum(series(mfs, "kube_pod_status_phase", map[string]string{"phase": "Running"})))
	// Waiting reasons only for waiting containers, as kube-state-metrics v2 does.
	for _, m := range mfs["kube_pod_container_status_waiting_reason"].GetMetric() {
		require.Equal(t, "CrashLoopBackOff", labels(m)["reason"])
		require.Equal(t, 1.0, value(m))
	}
	for _, m := range mfs["kube_pod_container_info"].GetMetric() {
		l := labels(m)
		require.True(t, strings.HasPrefix(l["image"], "registry.example/"), l["image"])
		require.Equal(t, l["image"], l["image_spec"])
		require.True(t, strings.HasPrefix(l["image_id"], strings.SplitN(l["image"], ":", 2)[0]+"@sha256:"), l["image_id"])
		require.True(t, strings.HasPrefix(l["container_id"], "containerd://"), l["container_id"])
	}
}

// The truth is what the metrics say.
func TestTruthMatchesMetrics(t *testing.T) {
	s, _ := newTestSim(t)
	require.NoError(t, s.Apply(Step{Action: ActionNodesNotReady, Cluster: "eu-2", Count: 3}))
	require.NoError(t, s.Apply(Step{Action: ActionCordon, Cluster: "eu-2", Count: 2}))
	require.NoError(t, s.Apply(Step{Action: ActionCrashloop, Cluster: "eu-2", Namespace: "checkout", Deployment: "frontend"}))
	require.NoError(t, s.Apply(Step{Action: ActionImageDrift, Cluster: "eu-2", Namespace: "catalog", Deployment: "search", Image: "registry.example/catalog/search:v0.0.1"}))
	require.NoError(t, s.Apply(Step{Action: ActionSaturation, Cluster: "eu-2", CPU: 0.9}))

	for _, name := range s.Clusters() {
		t.Run(name, func(t *testing.T) {
			tr := truthOf(t, s, name)
			mfs := scrape(t, s, name)
			require.Len(t, mfs["kube_node_info"].GetMetric(), tr.Nodes)
			require.Len(t, series(mfs, "kube_node_status_condition", map[string]string{"condition": "Ready", "status": "true"}), tr.Nodes)
			require.Equal(t, tr.ReadyNodes, countValue(series(mfs, "kube_node_status_condition", map[string]string{"condition": "Ready", "status": "true"}), 1))
			require.Equal(t, float64(tr.UnschedulableNodes), sum(mfs["kube_node_spec_unschedulable"].GetMetric()))
			require.Len(t, mfs["kube_pod_info"].GetMetric(), tr.Pods)
			crashing := map[string]bool{}
			for _, m := range series(mfs, "kube_pod_container_status_waiting_reason", map[string]string{"reason": "CrashLoopBackOff"}) {
				crashing[labels(m)["pod"]] = true
			}
			require.Len(t, crashing, tr.CrashLoopPods)
			cpu := sum(series(mfs, "kube_pod_container_resource_requests", map[string]string{"resource": "cpu"})) /
				sum(series(mfs, "kube_node_status_allocatable", map[string]string{"resource": "cpu"}))
			mem := sum(series(mfs, "kube_pod_container_resource_requests", map[string]string{"resource": "memory"})) /
				sum(series(mfs, "kube_node_status_allocatable", map[string]string{"resource": "memory"}))
			require.InDelta(t, tr.CPURequestRatio, cpu, 1e-9)
			require.InDelta(t, tr.MemoryRequestRatio, mem, 1e-9)

			// Images per deployment, joined as a query would: container -> pod -> ReplicaSet -> Deployment.
			rsOwner := map[string]string{}
			for _, m := range mfs["kube_replicaset_owner"].GetMetric() {
				l := labels(m)
				rsOwner[l["namespace"]+"/"+l["replicaset"]] = l["namespace"] + "/" + l["owner_name"]
			}
			podDep := map[string]string{}
			for _, m := range mfs["kube_pod_owner"].GetMetric() {
				l := labels(m)
				podDep[l["uid"]] = rsOwner[l["namespace"]+"/"+l["owner_name"]]
			}
			images := map[string][]string{}
			seen := map[string]bool{}
			for _, m := range mfs["kube_pod_container_info"].GetMetric() {
				l := labels(m)
				dep := podDep[l["uid"]]
				require.NotEmpty(t, dep)
				if l["container"] == "envoy" || seen[dep+" "+l["image"]] {
					continue
				}
				seen[dep+" "+l["image"]] = true
				images[dep] = append(images[dep], l["image"])
			}
			for k := range images {
				sort.Strings(images[k])
			}
			require.Equal(t, tr.Images, images)

			// Deployments: spec replicas add up to the pods.
			require.Equal(t, float64(tr.Pods), sum(mfs["kube_deployment_spec_replicas"].GetMetric()))
		})
	}
	eu2 := truthOf(t, s, "eu-2")
	require.Equal(t, 7, eu2.ReadyNodes)
	require.Equal(t, 2, eu2.UnschedulableNodes)
	require.Positive(t, eu2.CrashLoopPods)
	require.GreaterOrEqual(t, eu2.CPURequestRatio, 0.9)
}

// At the size the demo runs (3 clusters x 50 nodes x 30 pods), the baseline is 40-60% requested.
func TestBaselineSaturation(t *testing.T) {
	s, err := New(Options{Seed: 42, Now: newFakeClock().Now})
	require.NoError(t, err)
	defer s.Close()
	for _, tr := range s.Truth() {
		require.Equal(t, 50, tr.Nodes)
		require.Equal(t, 50, tr.ReadyNodes)
		require.Equal(t, 1500, tr.Pods)
		require.Zero(t, tr.CrashLoopPods)
		require.True(t, tr.ControlPlaneUp)
		require.False(t, tr.Silent)
		require.InDelta(t, 0.5, tr.CPURequestRatio, 0.1, "cluster %s", tr.Name)
		require.InDelta(t, 0.5, tr.MemoryRequestRatio, 0.1, "cluster %s", tr.Name)
		for dep, imgs := range tr.Images {
			require.Len(t, imgs, 1, dep)
		}
	}
	// No node is asked for more than it has.
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, c := range s.clusters {
		used := map[*node]int64{}
		for _, d := range c.deployments {
			for _, p := range d.pods {
				for _, ct := range p.containers {
					used[p.node] += ct.cpuMilli
				}
			}
		}
		for n, u := range used {
			require.LessOrEqual(t, u, n.cpuAllocMilli, "%s/%s", c.name, n.name)
		}
	}
}

func TestNodesNotReady(t *testing.T) {
	s, _ := newTestSim(t)
	before := scrape(t, s, "eu-2")
	require.Empty(t, series(before, "kube_node_status_condition", map[string]string{"condition": "Ready", "status": "false"})[0:0])
	require.Zero(t, countValue(series(before, "kube_node_status_condition", map[string]string{"condition": "Ready", "status": "false"}), 1))

	_, err := s.StepScenario("nodes-notready")
	require.NoError(t, err)
	mfs := scrape(t, s, "eu-2")
	require.Equal(t, 6, countValue(series(mfs, "kube_node_status_condition", map[string]string{"condition": "Ready", "status": "false"}), 1))
	require.Equal(t, 4, countValue(series(mfs, "kube_node_status_condition", map[string]string{"condition": "Ready", "status": "true"}), 1))
	require.Zero(t, countValue(series(mfs, "kube_node_status_condition", map[string]string{"condition": "Ready", "status": "unknown"}), 1))
	require.Equal(t, 4, truthOf(t, s, "eu-2").ReadyNodes)
	// Other clusters are untouched.
	require.Equal(t, 10, truthOf(t, s, "eu-1").ReadyNodes)
	// Pods on NotReady nodes are not available.
	require.Less(t, sum(mfs["kube_deployment_status_replicas_available"].GetMetric()), sum(mfs["kube_deployment_spec_replicas"].GetMetric()))

	st, err := s.StepScenario("nodes-notready")
	require.NoError(t, err)
	require.Equal(t, StateFinished, st.State)
	mfs = scrape(t, s, "eu-2")
	require.Equal(t, 10, countValue(series(mfs, "kube_node_status_condition", map[string]string{"condition": "Ready", "status": "true"}), 1))
	require.Equal(t, sum(mfs["kube_deployment_spec_replicas"].GetMetric()), sum(mfs["kube_deployment_status_replicas_available"].GetMetric()))
}

func TestCrashloop(t *testing.T) {
	s, clk := newTestSim(t)
	_, err := s.StepScenario("crashloop-one-cluster")
	require.NoError(t, err)

	restarts := func(mfs map[string]*dto.MetricFamily) map[string]float64 {
		out := map[string]float64{}
		for _, m := range series(mfs, "kube_pod_container_status_restarts_total", map[string]string{"namespace": "payments", "container": "api"}) {
			out[labels(m)["pod"]] = value(m)
		}
		return out
	}
	mfs := scrape(t, s, "eu-1")
	waiting := series(mfs, "kube_pod_container_status_waiting_reason", map[string]string{"namespace": "payments", "container": "api", "reason": "CrashLoopBackOff"})
	require.NotEmpty(t, waiting)
	require.Len(t, waiting, len(series(mfs, "kube_pod_container_status_restarts_total", map[string]string{"namespace": "payments", "container": "api"})))
	require.Len(t, waiting, truthOf(t, s, "eu-1").CrashLoopPods)
	// Phase stays Running.
	for _, m := range waiting {
		ph := series(mfs, "kube_pod_status_phase", map[string]string{"pod": labels(m)["pod"], "phase": "Running"})
		require.Len(t, ph, 1)
		require.Equal(t, 1.0, value(ph[0]))
	}
	require.Zero(t, sum(series(mfs, "kube_deployment_status_replicas_available", map[string]string{"namespace": "payments", "deployment": "api"})))
	r0 := restarts(mfs)

	clk.Advance(5 * time.Minute)
	r1 := restarts(scrape(t, s, "eu-1"))
	require.Equal(t, len(r0), len(r1))
	for pod, v := range r1 {
		require.Equal(t, r0[pod]+30, v, pod) // 6 a minute
	}
	// Only eu-1.
	require.Empty(t, series(scrape(t, s, "eu-2"), "kube_pod_container_status_waiting_reason", nil))

	// Recovery keeps the counters monotonic and ends the waiting.
	_, err = s.StepScenario("crashloop-one-cluster")
	require.NoError(t, err)
	mfs = scrape(t, s, "eu-1")
	require.Empty(t, series(mfs, "kube_pod_container_status_waiting_reason", nil))
	clk.Advance(time.Minute)
	require.Equal(t, r1, restarts(scrape(t, s, "eu-1")))
	require.Zero(t, truthOf(t, s, "eu-1").CrashLoopPods)
}

func TestBadRollout(t *testing.T) {
	s, clk := newTestSim(t)
	image := func(cluster string) []string { return truthOf(t, s, cluster).Images["checkout/frontend"] }
	base := image("us-1")
	require.Len(t, base, 1)
	podNames := func(cluster string) []string {
		var out []string
		for _, m := range series(scrape(t, s, cluster), "kube_pod_info", map[string]string{"namespace": "checkout"}) {
			if strings.HasPrefix(labels(m)["pod"], "frontend-") {
				out = append(out, labels(m)["pod"])
			}
		}
		return out
	}
	before := podNames("eu-1")

	_, err := s.StepScenario("bad-rollout-multi-cluster")
	require.NoError(t, err)
	clk.Advance(time.Minute)
	for _, c := range []string{"eu-1", "eu-2"} {
		require.Equal(t, []string{"registry.example/checkout/frontend:v9.9.9-bad"}, image(c))
		mfs := scrape(t, s, c)
		require.NotEmpty(t, series(mfs, "kube_pod_container_status_waiting_reason", map[string]string{"namespace": "checkout", "container": "frontend"}))
		for _, m := range series(mfs, "kube_pod_container_info", map[string]string{"namespace": "checkout", "container": "frontend"}) {
			require.Equal(t, "registry.example/checkout/frontend:v9.9.9-bad", labels(m)["image"])
		}
	}
	require.Equal(t, base, image("us-1"))
	// A rollout replaces the pods.
	require.NotEqual(t, before, podNames("eu-1"))

	_, err = s.StepScenario("bad-rollout-multi-cluster")
	require.NoError(t, err)
	require.Equal(t, base, image("eu-1"))
	require.Equal(t, before, podNames("eu-1"))
	require.Equal(t, []string{"registry.example/checkout/frontend:v9.9.9-bad"}, image("eu-2"))
	st, err := s.StepScenario("bad-rollout-multi-cluster")
	require.NoError(t, err)
	require.Equal(t, StateFinished, st.State)
	require.Equal(t, base, image("eu-2"))
	require.Zero(t, truthOf(t, s, "eu-2").CrashLoopPods)
}

func TestSaturationRamp(t *testing.T) {
	s, clk := newTestSim(t)
	base := truthOf(t, s, "us-1")
	ratio := func(resource string) float64 {
		mfs := scrape(t, s, "us-1")
		return sum(series(mfs, "kube_pod_container_resource_requests", map[string]string{"resource": resource})) /
			sum(series(mfs, "kube_node_status_allocatable", map[string]string{"resource": resource}))
	}
	_, err := s.StepScenario("saturation-ramp") // cpu 0.92, memory 0.85 over 3m
	require.NoError(t, err)
	require.InDelta(t, base.CPURequestRatio, ratio("cpu"), 1e-9, "the ramp starts from the baseline")

	clk.Advance(90 * time.Second)
	mid := ratio("cpu")
	require.Greater(t, mid, base.CPURequestRatio)
	require.Less(t, mid, 0.92)

	clk.Advance(90 * time.Second)
	require.GreaterOrEqual(t, ratio("cpu"), 0.92)
	require.Less(t, ratio("cpu"), 0.93)
	require.GreaterOrEqual(t, ratio("memory"), 0.85)
	tr := truthOf(t, s, "us-1")
	require.GreaterOrEqual(t, tr.CPURequestRatio, 0.92)
	require.Greater(t, tr.Pods, base.Pods)
	// The load is a deployment like any other.
	mfs := scrape(t, s, "us-1")
	require.Equal(t, float64(tr.Pods-base.Pods), sum(series(mfs, "kube_deployment_spec_replicas", map[string]string{"namespace": "batch", "deployment": "load-generator"})))

	_, err = s.StepScenario("saturation-ramp")
	require.NoError(t, err)
	require.Equal(t, base, truthOf(t, s, "us-1"))
}

// TestSilence runs in a synctest bubble: the scrapes' timeouts run on its fake clock, and
// synctest.Wait says when a held scrape is blocked for good, so nothing waits on real time.
func TestSilence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newTestSim(t)
		_, err := s.StepScenario("cluster-silent")
		require.NoError(t, err)
		require.True(t, truthOf(t, s, "eu-2").Silent)

		for _, p := range []string{"/clusters/eu-2/metrics", "/clusters/eu-2/apiserver/metrics"} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			req := httptest.NewRequest(http.MethodGet, p, nil).WithContext(ctx)
			rec := httptest.NewRecorder()
			start := time.Now()
			s.Handler().ServeHTTP(rec, req)
			// It returned because the client gave up, not before.
			require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded, p)
			require.Equal(t, 10*time.Second, time.Since(start), p)
			cancel()
			require.Empty(t, rec.Body.String(), p)
		}
		// Other clusters answer.
		require.NotEmpty(t, scrape(t, s, "eu-1"))

		// A scrape held while silent is answered once the cluster is back, not before.
		done := make(chan *httptest.ResponseRecorder, 1)
		go func() {
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/clusters/eu-2/metrics", nil))
			done <- rec
		}()
		synctest.Wait() // the scrape is blocked for good, or answered
		select {
		case <-done:
			t.Fatal("silent cluster answered")
		default:
		}
		_, err = s.StepScenario("cluster-silent")
		require.NoError(t, err)
		rec := <-done
		require.Equal(t, http.StatusOK, rec.Code)
		require.Contains(t, rec.Body.String(), "kube_node_info")
	})
}

func TestSilenceReleasedByClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newTestSim(t)
		require.NoError(t, s.Apply(Step{Action: ActionSilence, Cluster: "eu-1"}))
		done := make(chan int, 1)
		go func() {
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/clusters/eu-1/metrics", nil))
			done <- rec.Code
		}()
		synctest.Wait() // the scrape is held
		select {
		case code := <-done:
			t.Fatalf("silent cluster answered %d before Close", code)
		default:
		}
		s.Close()
		require.Equal(t, http.StatusServiceUnavailable, <-done)
	})
}

func TestControlPlaneDown(t *testing.T) {
	s, clk := newTestSim(t)
	apiTotal := func() float64 {
		rec := do(t, s, http.MethodGet, "/clusters/us-1/apiserver/metrics", "")
		require.Equal(t, http.StatusOK, rec.Code)
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(rec.Body)
		require.NoError(t, err)
		require.Equal(t, dto.MetricType_COUNTER, mfs["apiserver_request_total"].GetType())
		return sum(mfs["apiserver_request_total"].GetMetric())
	}
	v0 := apiTotal()
	clk.Advance(time.Minute)
	v1 := apiTotal()
	require.Greater(t, v1, v0)

	_, err := s.StepScenario("control-plane-down")
	require.NoError(t, err)
	rec := do(t, s, http.MethodGet, "/clusters/us-1/apiserver/metrics", "")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.False(t, truthOf(t, s, "us-1").ControlPlaneUp)
	// Workloads keep reporting, other control planes are up.
	require.NotEmpty(t, scrape(t, s, "us-1"))
	require.Equal(t, http.StatusOK, do(t, s, http.MethodGet, "/clusters/eu-1/apiserver/metrics", "").Code)

	clk.Advance(time.Minute)
	_, err = s.StepScenario("control-plane-down")
	require.NoError(t, err)
	require.True(t, truthOf(t, s, "us-1").ControlPlaneUp)
	// Counters continue where they stopped: no reset, no jump.
	require.InDelta(t, v1, apiTotal(), 1)
}

func TestImageDrift(t *testing.T) {
	s, _ := newTestSim(t)
	images := func(cluster string) map[string]bool {
		out := map[string]bool{}
		for _, m := range series(scrape(t, s, cluster), "kube_pod_container_info", map[string]string{"namespace": "catalog", "container": "search"}) {
			out[labels(m)["image"]] = true
		}
		return out
	}
	base := images("eu-1")
	require.Len(t, base, 1)
	require.Equal(t, base, images("us-1"))

	_, err := s.StepScenario("image-drift")
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"registry.example/catalog/search:v0.0.1-hotfix": true}, images("us-1"))
	require.Equal(t, base, images("eu-1"))
	require.Equal(t, base, images("eu-2"))
	require.Zero(t, truthOf(t, s, "us-1").CrashLoopPods)

	_, err = s.StepScenario("image-drift")
	require.NoError(t, err)
	require.Equal(t, base, images("us-1"))
}

func TestRecoverAll(t *testing.T) {
	s, _ := newTestSim(t)
	base := s.Truth()
	require.NoError(t, s.Apply(Step{Action: ActionNodesNotReady, Cluster: "eu-1", Count: 10}))
	require.NoError(t, s.Apply(Step{Action: ActionSilence, Cluster: "eu-2"}))
	require.NoError(t, s.Apply(Step{Action: ActionControlPlaneDown, Cluster: "us-1"}))
	require.NoError(t, s.Apply(Step{Action: ActionSaturation, Cluster: "us-1", Memory: 0.95, Over: model.Duration(time.Minute)}))
	require.NotEqual(t, base, s.Truth())
	require.NoError(t, s.Apply(Step{Action: ActionRecover}))
	require.Equal(t, base, s.Truth())

	require.EqualError(t, s.Apply(Step{Action: ActionSilence, Cluster: "xx-1"}), `steps[0].cluster: unknown cluster "xx-1"`)
	require.EqualError(t, s.Apply(Step{Action: ActionSilence}), `steps[0].cluster: required for action silence`)
}

func TestStopRecovers(t *testing.T) {
	s, _ := newTestSim(t)
	base := s.Truth()
	_, err := s.StartScenario("bad-rollout-multi-cluster")
	require.NoError(t, err)
	require.NotEqual(t, base, s.Truth())
	st, err := s.StopScenario("bad-rollout-multi-cluster")
	require.NoError(t, err)
	require.Equal(t, StateIdle, st.State)
	require.Equal(t, base, s.Truth())
}

// Timed runs follow Options.Now and the ticker.
func TestTimedScenario(t *testing.T) {
	s, clk := newTestSim(t)
	st, err := s.StartScenario("nodes-notready")
	require.NoError(t, err)
	require.Equal(t, StateRunning, st.State)
	require.Equal(t, 0, st.CurrentStep)
	require.Equal(t, 4, truthOf(t, s, "eu-2").ReadyNodes, "after: 0s applies at start")

	clk.Advance(119 * time.Second)
	s.Tick()
	require.Equal(t, 4, truthOf(t, s, "eu-2").ReadyNodes)
	clk.Advance(time.Second)
	s.Tick()
	require.Equal(t, 10, truthOf(t, s, "eu-2").ReadyNodes)
	st, err = s.ScenarioStatus("nodes-notready")
	require.NoError(t, err)
	require.Equal(t, StateFinished, st.State)
	require.Equal(t, 1, st.CurrentStep)

	// The demo loops: 10s in, payments/api crash-loops in eu-1; 210s later it does again.
	_, err = s.StartScenario("demo")
	require.NoError(t, err)
	require.Zero(t, truthOf(t, s, "eu-1").CrashLoopPods)
	clk.Advance(10 * time.Second)
	s.Tick()
	require.Positive(t, truthOf(t, s, "eu-1").CrashLoopPods)
	clk.Advance(40 * time.Second)
	s.Tick()
	require.Zero(t, truthOf(t, s, "eu-1").CrashLoopPods)
	require.Equal(t, 4, truthOf(t, s, "eu-2").ReadyNodes, "recover and the next 0s step apply in the same tick")
	clk.Advance(160 * time.Second)
	s.Tick()
	require.Zero(t, truthOf(t, s, "eu-1").CrashLoopPods)
	st, err = s.ScenarioStatus("demo")
	require.NoError(t, err)
	require.Equal(t, 1, st.Loops)
	require.Equal(t, 0, st.NextStep)
	clk.Advance(10 * time.Second)
	s.Tick()
	require.Positive(t, truthOf(t, s, "eu-1").CrashLoopPods)
	_, err = s.StopScenario("demo")
	require.NoError(t, err)
	require.Zero(t, truthOf(t, s, "eu-1").CrashLoopPods)
}

func TestBundledScenarios(t *testing.T) {
	scs, err := BundledScenarios()
	require.NoError(t, err)
	var names []string
	for _, sc := range scs {
		names = append(names, sc.Name)
	}
	require.Equal(t, []string{
		"bad-rollout-multi-cluster", "cluster-silent", "control-plane-down", "crashloop-one-cluster",
		"demo", "image-drift", "nodes-notready", "saturation-ramp",
	}, names)
	// Every bundled scenario runs against the default cluster names, even on a tiny fleet.
	s, err := New(Options{Nodes: 6, PodsPerNode: 2, Now: newFakeClock().Now})
	require.NoError(t, err)
	defer s.Close()
	for _, sc := range scs {
		_, err := s.StartScenario(sc.Name)
		require.NoError(t, err, sc.Name)
		for i := 0; i < len(sc.Steps); i++ {
			st, err := s.StepScenario(sc.Name)
			if errors.Is(err, ErrScenarioFinished) {
				break
			}
			require.NoError(t, err, sc.Name)
			require.Empty(t, st.LastError, sc.Name)
		}
		_, err = s.StopScenario(sc.Name)
		require.NoError(t, err)
	}
	demo := scs[4]
	var total time.Duration
	for _, st := range demo.Steps {
		total += time.Duration(st.After)
	}
	require.True(t, demo.Loop)
	require.GreaterOrEqual(t, total, 3*time.Minute)
	require.LessOrEqual(t, total, 4*time.Minute)
}

func TestBadScenarios(t *testing.T) {
	for file, want := range map[string]string{
		"unknown_field.bad.yml":                  "parse scenario: yaml: unmarshal errors:\n  line 6: field clsuter not found in type sim.Step",
		"unknown_top_field.bad.yml":              "parse scenario: yaml: unmarshal errors:\n  line 2: field repeat not found in type sim.Scenario",
		"bad_duration.bad.yml":                   `parse scenario: unknown unit " minutes" in duration "2 minutes"`,
		"bad_yaml.bad.yml":                       "parse scenario: yaml: line 3: did not find expected '-' indicator",
		"count_wrong_type.bad.yml":               "parse scenario: yaml: unmarshal errors:\n  line 5: cannot unmarshal !!str `six` into int",
		"no_name.bad.yml":                        "name: required",
		"bad_name.bad.yml":                       `name: "Not Valid" must be lower-case letters, digits and '-'`,
		"no_steps.bad.yml":                       "steps: at least one step is required",
		"unknown_action.bad.yml":                 `steps[1].action: unknown action "explode" (one of control_plane_down, cordon, crashloop, image_drift, nodes_not_ready, recover, rollout, saturation, silence)`,
		"missing_action.bad.yml":                 "steps[0].action: required (one of control_plane_down, cordon, crashloop, image_drift, nodes_not_ready, recover, rollout, saturation, silence)",
		"nodes_not_ready_no_count.bad.yml":       "steps[0].count: required for action nodes_not_ready",
		"nodes_not_ready_negative_count.bad.yml": "steps[0].count: must be a positive number of nodes, got -3",
		"field_not_allowed.bad.yml":              "steps[1].count: not allowed for action silence",
		"crashloop_no_cluster.bad.yml":           "steps[0].cluster: cluster or clusters required for action crashloop",
		"crashloop_both_clusters.bad.yml":        "steps[0].clusters: set either cluster or clusters, not both",
		"rollout_no_image.bad.yml":               "steps[0].image: required for action rollout",
		"rollout_duplicate_cluster.bad.yml":      `steps[0].clusters[1]: duplicate cluster "eu-1"`,
		"saturation_no_target.bad.yml":           "steps[0].cpu: cpu or memory required for action saturation",
		"saturation_over_one.bad.yml":            "steps[0].cpu: target ratio must be in (0, 1], got 1.5",
		"image_drift_bad_image.bad.yml":          `steps[0].image: invalid image reference "not an image"`,
		"loop_zero.bad.yml":                      "loop: a looping scenario needs steps whose after add up to more than 0s",
	} {
		t.Run(file, func(t *testing.T) {
			_, err := ParseScenarioFile("testdata/" + file)
			require.EqualError(t, err, "scenario file testdata/"+file+": "+want)
		})
	}
}

func TestScenarioHTTP(t *testing.T) {
	s, _ := newTestSim(t)
	decode := func(rec *httptest.ResponseRecorder, v any) {
		t.Helper()
		require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), v))
	}

	rec := do(t, s, http.MethodGet, "/scenarios", "")
	require.Equal(t, http.StatusOK, rec.Code)
	var list []ScenarioStatus
	decode(rec, &list)
	require.Len(t, list, 8)
	for _, st := range list {
		require.Equal(t, StateIdle, st.State)
		require.Equal(t, "bundled", st.Source)
	}

	for _, p := range []string{"/scenarios/nope/start", "/scenarios/nope/stop", "/scenarios/nope/step"} {
		rec = do(t, s, http.MethodPost, p, "")
		require.Equal(t, http.StatusNotFound, rec.Code, p)
		require.JSONEq(t, `{"error": "unknown scenario \"nope\""}`, rec.Body.String())
	}
	require.Equal(t, http.StatusNotFound, do(t, s, http.MethodGet, "/scenarios/nope", "").Code)

	rec = do(t, s, http.MethodPost, "/scenarios/cluster-silent/start", "")
	require.Equal(t, http.StatusOK, rec.Code)
	var st ScenarioStatus
	decode(rec, &st)
	require.Equal(t, StateRunning, st.State)
	require.Equal(t, 0, st.CurrentStep)
	require.NotNil(t, st.StartedAt)

	rec = do(t, s, http.MethodPost, "/scenarios/cluster-silent/start", "")
	require.Equal(t, http.StatusConflict, rec.Code)
	require.JSONEq(t, `{"error": "start scenario cluster-silent: scenario is running"}`, rec.Body.String())

	rec = do(t, s, http.MethodGet, "/scenarios/cluster-silent", "")
	require.Equal(t, http.StatusOK, rec.Code)
	decode(rec, &st)
	require.NotNil(t, st.Scenario)
	require.Len(t, st.Scenario.Steps, 2)
	require.NotNil(t, st.NextDueAt)

	rec = do(t, s, http.MethodPost, "/scenarios/cluster-silent/step", "")
	require.Equal(t, http.StatusOK, rec.Code)
	decode(rec, &st)
	require.Equal(t, StateFinished, st.State)
	rec = do(t, s, http.MethodPost, "/scenarios/cluster-silent/step", "")
	require.Equal(t, http.StatusConflict, rec.Code)

	rec = do(t, s, http.MethodPost, "/scenarios/cluster-silent/stop", "")
	require.Equal(t, http.StatusOK, rec.Code)
	decode(rec, &st)
	require.Equal(t, StateIdle, st.State)

	// Upload: created, replaced, bad YAML with its line, bad field with its step, unknown cluster.
	good := "name: up\nsteps:\n  - action: cordon\n    cluster: eu-1\n    count: 2\n"
	rec = do(t, s, http.MethodPost, "/scenarios", good)
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	decode(rec, &st)
	require.Equal(t, "uploaded", st.Source)
	rec = do(t, s, http.MethodPost, "/scenarios", good)
	require.Equal(t, http.StatusOK, rec.Code)

	rec = do(t, s, http.MethodPost, "/scenarios", "name: up\nsteps:\n  - action: cordon\n    cluster: eu-1\n    cuont: 2\n")
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.JSONEq(t, `{"error": "parse scenario: yaml: unmarshal errors:\n  line 5: field cuont not found in type sim.Step", "line": 5}`, rec.Body.String())

	rec = do(t, s, http.MethodPost, "/scenarios", "name: up\nsteps:\n  - action: silence\n    cluster: eu-1\n  - action: cordon\n    cluster: eu-1\n")
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.JSONEq(t, `{"error": "steps[1].count: required for action cordon", "step": 1, "field": "count"}`, rec.Body.String())

	rec = do(t, s, http.MethodPost, "/scenarios", "name: up\nsteps:\n  - action: silence\n    cluster: xx-1\n")
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.JSONEq(t, `{"error": "scenario up: steps[0].cluster: unknown cluster \"xx-1\"", "step": 0, "field": "cluster"}`, rec.Body.String())

	rec = do(t, s, http.MethodPost, "/scenarios", "name: up2\nsteps:\n  - action: crashloop\n    cluster: eu-1\n    namespace: payments\n    deployment: nope\n")
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.JSONEq(t, `{"error": "scenario up2: steps[0].deployment: cluster eu-1 has no deployment payments/nope", "step": 0, "field": "deployment"}`, rec.Body.String())

	// A running scenario cannot be replaced.
	require.Equal(t, http.StatusOK, do(t, s, http.MethodPost, "/scenarios/up/start", "").Code)
	require.Equal(t, 2, truthOf(t, s, "eu-1").UnschedulableNodes)
	rec = do(t, s, http.MethodPost, "/scenarios", good)
	require.Equal(t, http.StatusConflict, rec.Code)
	require.Equal(t, http.StatusOK, do(t, s, http.MethodPost, "/scenarios/up/stop", "").Code)
	require.Zero(t, truthOf(t, s, "eu-1").UnschedulableNodes)

	// /clusters is the truth.
	rec = do(t, s, http.MethodGet, "/clusters", "")
	require.Equal(t, http.StatusOK, rec.Code)
	var truth []ClusterTruth
	decode(rec, &truth)
	require.Equal(t, s.Truth(), truth)

	rec = do(t, s, http.MethodPost, "/clusters/eu-1/recover", "")
	require.Equal(t, http.StatusOK, rec.Code)
	rec = do(t, s, http.MethodPost, "/clusters/xx-1/recover", "")
	require.Equal(t, http.StatusNotFound, rec.Code)

	rec = do(t, s, http.MethodGet, "/", "")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Contains(t, rec.Body.String(), "/clusters/us-1/metrics")
}

func FuzzParseScenario(f *testing.F) {
	scs, err := BundledScenarios()
	require.NoError(f, err)
	for _, sc := range scs {
		data, err := bundledFS.ReadFile("scenarios/" + sc.Name + ".yml")
		require.NoError(f, err)
		f.Add(data)
	}
	f.Add([]byte("name: x\nsteps:\n  - action: recover\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := ParseScenario(data)
		if err != nil {
			return
		}
		// A parsed scenario is valid and its steps are known actions.
		require.NoError(t, sc.Validate())
		for _, st := range sc.Steps {
			_, ok := actionRules[st.Action]
			require.True(t, ok)
		}
		_ = bytes.MinRead
	})
}

func TestNodesNotReadyCrash(t *testing.T) {
	s, _ := newTestSim(t)
	require.NoError(t, s.Apply(Step{Action: ActionNodesNotReady, Cluster: "eu-1", Count: 2}))
	require.Zero(t, truthOf(t, s, "eu-1").CrashLoopPods, "without crash the pods keep running")
	require.NoError(t, s.Apply(Step{Action: ActionNodesNotReady, Cluster: "eu-2", Count: 2, Crash: true}))
	tr := truthOf(t, s, "eu-2")
	require.Equal(t, tr.Nodes-2, tr.ReadyNodes)
	require.Positive(t, tr.CrashLoopPods)
	// Exactly the pods on the NotReady nodes crash-loop.
	fams := scrape(t, s, "eu-2")
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	notReady := map[string]bool{}
	for _, m := range fams["kube_node_status_condition"].GetMetric() {
		if label(m, "condition") == "Ready" && label(m, "status") == "true" && m.GetGauge().GetValue() == 0 {
			notReady[label(m, "node")] = true
		}
	}
	require.Len(t, notReady, 2)
	podNode := map[string]string{}
	for _, m := range fams["kube_pod_info"].GetMetric() {
		podNode[label(m, "pod")] = label(m, "node")
	}
	crashing := 0
	for _, m := range fams["kube_pod_container_status_waiting_reason"].GetMetric() {
		if label(m, "reason") == "CrashLoopBackOff" && m.GetGauge().GetValue() == 1 {
			require.True(t, notReady[podNode[label(m, "pod")]], label(m, "pod"))
			crashing++
		}
	}
	require.Equal(t, tr.CrashLoopPods, crashing)
}
