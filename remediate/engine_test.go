package remediate

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/util/teststorage"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/correlate/amconfig"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

// world is a remediation engine over a real PromQL engine and TSDB (the "view", written by the
// test at the fake clock's time) and fake API servers, one per cluster.
type world struct {
	t         *testing.T
	now       time.Time
	view      *teststorage.TestStorage
	promql    *promql.Engine
	clients   map[string]*fake.Clientset
	incidents []correlate.Incident
	store     *Store
	engine    *Engine
	reg       *prometheus.Registry
	// current is every series the clusters export now, by its text; each tick writes them
	// again, as scrapes would.
	current map[string]float64
	// alerts are the alerts the engine raised, as the correlation engine took them in.
	alerts []correlate.Alert
	// refuse makes the fake API server refuse evictions with 429, as a PodDisruptionBudget does.
	refuse bool
	// fresh are the clusters whose data flows: each tick writes their last-ingest time.
	fresh map[string]bool
	// told is what each incident was last told about its remediation.
	told map[string]string
	// queries counts the engine's queries of the view, by text.
	queries map[string]int
	// opts made the engine.
	opts Options
}

var clusters = []string{"c1", "c2", "c3"}

func newWorld(t *testing.T, settings func(*config.RemediationConfig)) *world {
	w := &world{t: t, now: time.Unix(1_800_000_000, 0), view: teststorage.New(t), clients: map[string]*fake.Clientset{},
		promql: promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute}),
		reg:    prometheus.NewRegistry(), current: map[string]float64{}, told: map[string]string{},
		fresh: map[string]bool{"c1": true, "c2": true, "c3": true}}
	t.Cleanup(func() { w.view.Close() })
	for _, c := range clusters {
		var objs []runtime.Object
		for n := 1; n <= 4; n++ {
			node := fmt.Sprintf("n%d", n)
			objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}})
			for p := 1; p <= 2; p++ {
				objs = append(objs, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("api-%s-%d", node, p), Namespace: "shop"},
					Spec: corev1.PodSpec{NodeName: node}})
			}
			objs = append(objs, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agent-" + node, Namespace: "kube-system",
				OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet", Name: "agent", Controller: ptr.To(true)}}},
				Spec: corev1.PodSpec{NodeName: node}})
		}
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "shop", UID: types.UID("d-" + c), Annotations: map[string]string{revisionAnnotation: "2"}},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}},
				Template: replicaSet("x", "2", "api:v2-bad", "").Spec.Template},
		}
		objs = append(objs, d, replicaSet("api-1", "1", "api:v1", d.UID), replicaSet("api-2", "2", "api:v2-bad", d.UID))
		cs := fake.NewClientset(objs...)
		cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.GetSubresource() != "eviction" {
				return false, nil, nil
			}
			ev := a.(k8stesting.CreateAction).GetObject().(*policyv1.Eviction)
			if w.refuse {
				return true, nil, apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 10)
			}
			if len(ev.DeleteOptions.DryRun) > 0 {
				return true, nil, nil
			}
			return true, nil, cs.Tracker().Delete(schema.GroupVersionResource{Version: "v1", Resource: "pods"}, ev.Namespace, ev.Name)
		})
		w.clients[c] = cs
		for n := 1; n <= 4; n++ {
			node := fmt.Sprintf("n%d", n)
			w.set(fmt.Sprintf(`kube_node_info{cluster=%q,node=%q}`, c, node), 1)
			w.set(fmt.Sprintf(`kube_node_status_condition{cluster=%q,node=%q,condition="Ready",status="true"}`, c, node), 1)
			w.set(fmt.Sprintf(`kube_node_spec_unschedulable{cluster=%q,node=%q}`, c, node), 0)
		}
		for _, name := range []string{"api", "web", "db", "cache"} {
			w.set(fmt.Sprintf(`kube_deployment_created{cluster=%q,namespace="shop",deployment=%q}`, c, name), 1)
		}
		w.set(fmt.Sprintf(`%s{cluster=%q}`, collector.APIUpMetric, c), 1)
	}
	s := config.DefaultRemediation
	s.Enabled = true
	if settings != nil {
		settings(&s)
	}
	var err error
	w.store, err = OpenStore(filepath.Join(t.TempDir(), "remediations.db"))
	require.NoError(t, err)
	t.Cleanup(func() { w.store.Close() })
	w.opts = Options{Store: w.store, Query: w.query, Incidents: func() []*correlate.Incident { return pointers(w.incidents) }, Alerts: w,
		Clients: func(c string) (kubernetes.Interface, error) {
			if cs, ok := w.clients[c]; ok {
				return cs, nil
			}
			return nil, fmt.Errorf("no cluster %s", c)
		},
		Remediated: func(id, text string) error { w.told[id] = text; return nil },
		Settings:   s, Registerer: w.reg, Now: func() time.Time { return w.now }}
	w.engine, err = New(w.opts)
	require.NoError(t, err)
	return w
}

// Ingest takes the engine's alerts in, as correlate.Engine does.
func (w *world) Ingest(_ context.Context, alerts []correlate.Alert) error {
	w.alerts = append(w.alerts, alerts...)
	return nil
}

// set makes a cluster export series with value v from now on: the next tick writes it.
func (w *world) set(series string, v float64) { w.current[series] = v }

// stop makes a cluster stop exporting series: after the lookback, the view has none of it.
func (w *world) stop(series string) { delete(w.current, series) }

func (w *world) write(series string, v float64) {
	w.t.Helper()
	m, err := parser.ParseMetric(series)
	require.NoError(w.t, err)
	app := w.view.Appender(context.Background())
	_, err = app.Append(0, m, w.now.UnixMilli(), v)
	require.NoError(w.t, err)
	require.NoError(w.t, app.Commit())
}

func (w *world) query(ctx context.Context, q string, ts time.Time) (promql.Vector, error) {
	if w.queries == nil {
		w.queries = map[string]int{}
	}
	w.queries[q]++
	qry, err := w.promql.NewInstantQuery(ctx, w.view, nil, q, ts)
	if err != nil {
		return nil, err
	}
	defer qry.Close()
	res := qry.Exec(ctx)
	if res.Err != nil {
		return nil, res.Err
	}
	return res.Vector()
}

// tick advances the clock, writes the view's "every scrape" series again so they stay fresh,
// and evaluates.
func (w *world) tick(d time.Duration) {
	w.t.Helper()
	w.now = w.now.Add(d)
	for series, v := range w.current {
		w.write(series, v)
	}
	for c := range w.fresh {
		w.write(fmt.Sprintf(`%s{cluster=%q}`, collector.LastIngestMetric, c), float64(w.now.Unix()))
	}
	// kube-state-metrics' kube_pod_info, from each fake API server's pods now.
	for _, c := range clusters {
		pods, err := w.clients[c].Tracker().List(schema.GroupVersionResource{Version: "v1", Resource: "pods"}, schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, "")
		require.NoError(w.t, err)
		for _, p := range pods.(*corev1.PodList).Items {
			kind := ""
			if ref := metav1.GetControllerOf(&p); ref != nil {
				kind = ref.Kind
			}
			w.write(fmt.Sprintf(`kube_pod_info{cluster=%q,namespace=%q,pod=%q,node=%q,created_by_kind=%q}`, c, p.Namespace, p.Name, p.Spec.NodeName, kind), 1)
		}
	}
	require.NoError(w.t, w.engine.Evaluate(context.Background()))
}

func (w *world) only() *Remediation {
	w.t.Helper()
	all, err := w.store.List()
	require.NoError(w.t, err)
	require.Len(w.t, all, 1)
	return all[0]
}

// writes lists the fake API server's writes of a cluster as "verb resource/subresource name".
func (w *world) writes(cluster string) []string {
	var out []string
	for _, a := range w.clients[cluster].Actions() {
		switch a.GetVerb() {
		case "get", "list", "watch":
			continue
		}
		name := ""
		switch a := a.(type) {
		case k8stesting.PatchAction:
			name = a.GetName()
		case k8stesting.CreateAction: // an update's too
			name = a.GetObject().(metav1.Object).GetName()
		}
		out = append(out, strings.TrimSuffix(a.GetVerb()+" "+a.GetResource().Resource+"/"+a.GetSubresource(), "/")+" "+name)
	}
	return out
}

func nodesIncident(cluster string) correlate.Incident {
	return correlate.Incident{ID: "inc-1", Group: correlate.Group{Key: "nodes/" + cluster, Scope: "cluster", Clusters: []string{cluster}, Severity: "critical",
		RootCause: "FleetClusterNodesNotReady in cluster " + cluster}, State: correlate.StateOpen, OpenedAt: time.Unix(1_800_000_000, 0)}
}

func notReady(w *world, cluster, node string) {
	w.set(fmt.Sprintf(`kube_node_status_condition{cluster=%q,node=%q,condition="Ready",status="true"}`, cluster, node), 0)
}

func TestNodesNotReadyApprovedCordonedAndDrained(t *testing.T) {
	w := newWorld(t, nil)
	notReady(w, "c1", "n2")
	w.incidents = []correlate.Incident{nodesIncident("c1")}

	w.tick(time.Second)
	r := w.only()
	require.Equal(t, StateWaiting, r.State, r.Reason)
	require.Equal(t, PlaybookNodesNotReady, r.Playbook)
	require.Len(t, r.Steps, 2)
	require.Equal(t, "Node n2 in c1", r.Steps[0].Ops[0].target())
	require.Empty(t, w.writes("c1"), "nothing is written before the approval")

	// Waiting is not acting, however long it takes (below the approval timeout).
	w.tick(10 * time.Minute)
	require.Empty(t, w.writes("c1"))

	_, err := w.engine.Decide(r.ID, "alice", true, "go")
	require.NoError(t, err)
	w.tick(time.Second)
	require.Equal(t, []string{"patch nodes n2"}, w.writes("c1"))
	node, err := w.clients["c1"].CoreV1().Nodes().Get(context.Background(), "n2", metav1.GetOptions{})
	require.NoError(t, err)
	require.True(t, node.Spec.Unschedulable)
	require.Equal(t, r.Steps[0].Ops[0].ID, node.Annotations[ActionAnnotation])

	// The cordon shows in the view: verified; the drain evicts n2's pods but the DaemonSet's.
	w.set(`kube_node_spec_unschedulable{cluster="c1",node="n2"}`, 1)
	w.tick(5 * time.Second)
	require.Equal(t, []string{"patch nodes n2", "create pods/eviction api-n2-1", "create pods/eviction api-n2-2"}, w.writes("c1"))
	r = w.only()
	require.Equal(t, StateRunning, r.State, r.Reason)
	require.Equal(t, StepVerified, r.Steps[0].State)
	// What remediation does, for the correlation engine: the alerts it causes (pods pending
	// while they move) belong to the incident it remediates.
	require.Equal(t, []correlate.Action{
		{Cluster: "c1", Node: "n2", IncidentKey: "nodes/c1", What: "cordon of Node n2 in c1 (remediation " + r.ID + ")"},
		{Cluster: "c1", Node: "n2", IncidentKey: "nodes/c1", What: "drain of Node n2 in c1 (remediation " + r.ID + ")"},
	}, w.engine.Actions())

	// The evicted pods are gone from the node in the view after the lookback (only the
	// DaemonSet's remains): verified.
	w.tick(5 * time.Minute)
	r = w.only()
	require.Equal(t, StateSucceeded, r.State, r.Reason)
	require.Len(t, w.engine.Actions(), 2, "the cordon and the drain still explain alerts for a while after they verified")
	w.tick(causedFor + time.Second)
	require.Empty(t, w.engine.Actions(), "and then no longer")
	require.Empty(t, w.writes("c2"))
	require.Equal(t, 1.0, testutil.ToFloat64(w.engine.metrics.remediations.WithLabelValues(PlaybookNodesNotReady, StateSucceeded)))

	// The audit: the plan, the approval request and decision, each call before its result.
	audit, err := w.store.AuditLog(0, r.ID, 0)
	require.NoError(t, err)
	var events []string
	for _, e := range audit {
		events = append(events, e.Event+" "+e.Actor)
	}
	require.Equal(t, "plan fleetwatch", events[0])
	require.Contains(t, events, "approval alice")
	for i, e := range audit {
		if e.Event == EventResult {
			require.Equal(t, EventCall, audit[i-1].Event, "a result follows its call: %v", events)
		}
	}
	// The incident has its remediation; a second evaluation plans nothing new.
	w.tick(time.Minute)
	all, _ := w.store.List()
	require.Len(t, all, 1)
}

func TestDeniedAndExpiredApprovalsActOnNothing(t *testing.T) {
	w := newWorld(t, nil)
	r := waiting(t, w, "c1", "n2")
	_, err := w.engine.Decide(r.ID, "bob", false, "not now")
	require.NoError(t, err)
	require.Equal(t, StateDenied, w.only().State)
	w.tick(time.Minute)
	require.Empty(t, w.writes("c1"))
	_, err = w.engine.Decide(r.ID, "bob", true, "")
	require.ErrorIs(t, err, ErrConflict)

	w2 := newWorld(t, func(s *config.RemediationConfig) { s.ApprovalTimeout = 30_000_000_000 })
	notReady(w2, "c2", "n1")
	w2.incidents = []correlate.Incident{nodesIncident("c2")}
	w2.tick(time.Second)
	w2.tick(31 * time.Second)
	require.Equal(t, StateExpired, w2.only().State)
	require.Empty(t, w2.writes("c2"))
}

// waiting makes node of cluster NotReady, with the nodes incident open, and returns the
// remediation the first evaluation plans: waiting for an approval.
func waiting(t *testing.T, w *world, cluster, node string) *Remediation {
	t.Helper()
	notReady(w, cluster, node)
	w.incidents = []correlate.Incident{nodesIncident(cluster)}
	w.tick(time.Second)
	r := w.only()
	require.Equal(t, StateWaiting, r.State, r.Reason)
	return r
}

func approve(t *testing.T, w *world, r *Remediation) {
	t.Helper()
	_, err := w.engine.Decide(r.ID, "alice", true, "")
	require.NoError(t, err)
}

// approveCordon runs the nodes playbook up to the cordon acting on c1/n2.
func approveCordon(t *testing.T, w *world) *Remediation {
	r := waiting(t, w, "c1", "n2")
	approve(t, w, r)
	w.tick(time.Second)
	require.Equal(t, []string{"patch nodes n2"}, w.writes("c1"))
	return r
}

func TestEmptyVerificationIsInconclusiveNeverPassed(t *testing.T) {
	w := newWorld(t, nil)
	r := approveCordon(t, w)
	// The node's series stop: no kube_node_spec_unschedulable for it any more (5 minutes of
	// lookback pass), so the cordon cannot be seen either way.
	w.stop(`kube_node_spec_unschedulable{cluster="c1",node="n2"}`)
	w.tick(6 * time.Minute)
	r = w.only()
	require.Equal(t, StateInconclusive, r.State, r.Reason)
	require.Equal(t, OpUndecided, r.Steps[0].Ops[0].State)
	require.Equal(t, []string{"patch nodes n2"}, w.writes("c1"), "no drain after an inconclusive cordon")
	w.tick(time.Hour)
	require.Equal(t, StateInconclusive, w.only().State, "it waits for a human, however long")

	// An operator says verify again; the data is back and says cordoned.
	_, err := w.engine.Decide(r.ID, "alice", true, "data is back")
	require.NoError(t, err)
	w.set(`kube_node_spec_unschedulable{cluster="c1",node="n2"}`, 1)
	w.tick(time.Second)
	require.Equal(t, StepVerified, w.only().Steps[0].State)
}

func TestFailedVerificationUndoesTheCordon(t *testing.T) {
	w := newWorld(t, nil)
	approveCordon(t, w)
	// The view keeps saying schedulable until the step's timeout (2 minutes).
	for range 5 {
		w.set(`kube_node_spec_unschedulable{cluster="c1",node="n2"}`, 0)
		w.tick(30 * time.Second)
	}
	r := w.only()
	require.Equal(t, StateFailed, r.State, r.Reason)
	require.Equal(t, OpUndone, r.Steps[0].Ops[0].State, r.Steps[0].Ops[0].Detail)
	require.Equal(t, StepSkipped, r.Steps[1].State)
	require.Equal(t, []string{"patch nodes n2", "patch nodes n2"}, w.writes("c1"))
	node, err := w.clients["c1"].CoreV1().Nodes().Get(context.Background(), "n2", metav1.GetOptions{})
	require.NoError(t, err)
	require.False(t, node.Spec.Unschedulable, "uncordoned: fleetwatch took back what it did")
}

func TestPartitionFreezesAndUnreachableClusterHolds(t *testing.T) {
	w := newWorld(t, nil)
	r := waiting(t, w, "c1", "n2")
	approve(t, w, r)

	// Two of three API servers unreachable: fleetwatch is likelier cut off; nothing acts.
	w.set(collector.APIUpMetric+`{cluster="c2"}`, 0)
	w.set(collector.APIUpMetric+`{cluster="c3"}`, 0)
	w.tick(time.Second)
	r = w.only()
	require.Equal(t, StateHeld, r.State)
	require.Contains(t, r.Reason, "frozen: 2 of 3 clusters look unreachable")
	require.Empty(t, w.writes("c1"))
	w.tick(time.Second)
	require.Equal(t, 1.0, testutil.ToFloat64(w.engine.metrics.holds.WithLabelValues(GuardPartition)), "counted once per reason, not per evaluation")
	// The freeze is an incident: an alert of the engine's own, firing.
	require.Len(t, w.alerts, 1)
	require.Equal(t, AlertFrozen, w.alerts[0].Labels["alertname"])
	require.Contains(t, w.alerts[0].Annotations["summary"], "frozen: 2 of 3 clusters look unreachable (c2, c3)")
	require.False(t, w.alerts[0].Resolved(w.now))

	// Only c1's API is unreachable: still no action on it.
	w.set(collector.APIUpMetric+`{cluster="c2"}`, 1)
	w.set(collector.APIUpMetric+`{cluster="c3"}`, 1)
	w.set(collector.APIUpMetric+`{cluster="c1"}`, 0)
	w.tick(time.Second)
	require.Contains(t, w.only().Reason, "cannot reach the API server of c1")
	require.Empty(t, w.writes("c1"))
	// No longer frozen (one cluster unreachable is that cluster's problem): resolved.
	require.Len(t, w.alerts, 2)
	require.True(t, w.alerts[1].Resolved(w.now))

	w.set(collector.APIUpMetric+`{cluster="c1"}`, 1)
	w.tick(time.Second)
	require.Equal(t, []string{"patch nodes n2"}, w.writes("c1"))
	require.Equal(t, 2.0, testutil.ToFloat64(w.engine.metrics.holds.WithLabelValues(GuardPartition)))
}

func TestPauseAndSuppressionHold(t *testing.T) {
	w := newWorld(t, nil)
	notReady(w, "c1", "n2")
	cluster := correlate.Incident{ID: "inc-0", Group: correlate.Group{Key: "cluster/c1", Scope: "cluster", Clusters: []string{"c1"},
		RootCause: "FleetClusterControlPlaneDown in cluster c1"}, State: correlate.StateOpen}
	w.incidents = []correlate.Incident{cluster, nodesIncident("c1")}
	w.tick(time.Second)
	r := w.only()
	_, err := w.engine.Decide(r.ID, "alice", true, "")
	require.NoError(t, err)
	w.tick(time.Second)
	require.Contains(t, w.only().Reason, "has its own incident inc-0 open")
	require.Empty(t, w.writes("c1"))

	w.incidents = []correlate.Incident{nodesIncident("c1")}
	require.NoError(t, w.engine.Pause("c1", "carol"))
	// A restart keeps the pause: it is stored.
	var err2 error
	w.engine, err2 = New(Options{Store: w.store, Query: w.query, Incidents: w.engine.o.Incidents, Clients: w.engine.o.Clients,
		Settings: w.engine.settings, Now: func() time.Time { return w.now }})
	require.NoError(t, err2)
	require.Equal(t, map[string]string{"c1": "carol"}, w.engine.Paused())
	w.tick(time.Second)
	require.Contains(t, w.only().Reason, "cluster c1 is paused by carol")
	require.Empty(t, w.writes("c1"))
	require.NoError(t, w.engine.Resume("c1", "carol"))
	w.tick(time.Second)
	require.Equal(t, []string{"patch nodes n2"}, w.writes("c1"))
}

func TestBudgetHoldsARemediationStorm(t *testing.T) {
	// 12 nodes in the fleet and a budget of 10%: one node under remediation at a time.
	w := newWorld(t, func(s *config.RemediationConfig) { s.Budget.MaxNodes = 0.1 })
	notReady(w, "c1", "n2")
	notReady(w, "c2", "n2")
	i1, i2 := nodesIncident("c1"), nodesIncident("c2")
	i2.ID = "inc-2"
	w.incidents = []correlate.Incident{i1, i2}
	w.tick(time.Second)
	all, err := w.store.List()
	require.NoError(t, err)
	require.Len(t, all, 2)
	for _, r := range all {
		_, err := w.engine.Decide(r.ID, "alice", true, "")
		require.NoError(t, err)
	}
	w.tick(time.Second)
	// One cordon acts (whichever remediation comes first); the other would make 2 of 12
	// nodes (17%) unverified at once.
	first, second := all[0], all[1]
	require.Equal(t, []string{"patch nodes n2"}, w.writes(first.Clusters[0]))
	require.Empty(t, w.writes(second.Clusters[0]))
	held, err := w.store.Get(second.ID)
	require.NoError(t, err)
	require.Equal(t, StateHeld, held.State)
	require.Contains(t, held.Reason, "remediation storm: 2 of 12 nodes (17%) would be under remediation at once, above the budget of 10%")
	require.Len(t, w.alerts, 1)
	require.Equal(t, AlertStorm, w.alerts[0].Labels["alertname"])
	require.Equal(t, 0.0, testutil.ToFloat64(w.engine.metrics.budget.WithLabelValues("nodes")), "budget left")

	// The first cordon verifies, and its drain takes the budget next; once the drain verifies
	// (the evicted pods left the view), the second remediation may act.
	w.set(fmt.Sprintf(`kube_node_spec_unschedulable{cluster=%q,node="n2"}`, first.Clusters[0]), 1)
	w.tick(time.Second)
	require.Empty(t, w.writes(second.Clusters[0]))
	w.tick(6 * time.Minute)
	require.Equal(t, StateSucceeded, mustGet(t, w, first.ID).State)
	require.Equal(t, []string{"patch nodes n2"}, w.writes(second.Clusters[0]))
}

func mustGet(t *testing.T, w *world, id string) *Remediation {
	t.Helper()
	r, err := w.store.Get(id)
	require.NoError(t, err)
	return r
}

func TestPodDisruptionBudgetRefusalIsRetriedNotForced(t *testing.T) {
	// Two node tokens, for the cordon and the drain: retries of the drain take none.
	w := newWorld(t, func(s *config.RemediationConfig) { s.RateLimits.Node = config.RateConfig{PerSecond: 0.001, Burst: 2} })
	approveCordon(t, w)
	w.refuse = true
	w.set(`kube_node_spec_unschedulable{cluster="c1",node="n2"}`, 1)
	w.tick(time.Second)
	r := w.only()
	require.Equal(t, OpBlocked, r.Steps[1].Ops[0].State, r.Steps[1].Ops[0].Detail)
	require.Contains(t, r.Steps[1].Ops[0].Detail, "2 refused by a PodDisruptionBudget")
	w.tick(time.Second)
	require.Equal(t, 2, strings.Count(strings.Join(w.writes("c1"), ","), "eviction"), "not tried again within 5s")
	w.tick(5 * time.Second)
	require.Equal(t, OpBlocked, w.only().Steps[1].Ops[0].State)
	require.Equal(t, 4, strings.Count(strings.Join(w.writes("c1"), ","), "eviction"), "tried again 5s later")
	w.refuse = false
	w.tick(6 * time.Second)
	require.Equal(t, OpDone, w.only().Steps[1].Ops[0].State)
	pods, err := w.clients["c1"].CoreV1().Pods("shop").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	for _, p := range pods.Items {
		require.NotEqual(t, "n2", p.Spec.NodeName, p.Name)
	}
}

func TestDryRunSendsEveryWriteAsDryRun(t *testing.T) {
	w := newWorld(t, func(s *config.RemediationConfig) { s.DryRun = true })
	approve(t, w, waiting(t, w, "c1", "n2"))
	w.tick(time.Second)
	r := w.only()
	require.Equal(t, StateSucceeded, r.State, r.Reason)
	require.True(t, r.DryRun)
	require.NotEmpty(t, w.writes("c1"))
	for _, a := range w.clients["c1"].Actions() {
		switch a := a.(type) {
		case k8stesting.PatchAction:
			require.Equal(t, []string{metav1.DryRunAll}, a.(k8stesting.PatchActionImpl).PatchOptions.DryRun)
		case k8stesting.CreateAction:
			require.Equal(t, []string{metav1.DryRunAll}, a.GetObject().(*policyv1.Eviction).DeleteOptions.DryRun)
		}
	}
	audit, err := w.store.AuditLog(0, r.ID, 0)
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(audit, func(e AuditEntry) bool { return strings.HasSuffix(e.Detail, "(dryRun=All)") }))
}

func TestRestartResumesFromTheStore(t *testing.T) {
	w := newWorld(t, nil)
	r := approveCordon(t, w)
	// A new engine on the same store: the remediation goes on where it was, and the cordon is
	// not made again (the node carries this op's annotation).
	e2, err := New(Options{Store: w.store, Query: w.query, Incidents: w.engine.o.Incidents, Clients: w.engine.o.Clients,
		Settings: w.engine.settings, Now: func() time.Time { return w.now }})
	require.NoError(t, err)
	w.engine = e2
	w.set(`kube_node_spec_unschedulable{cluster="c1",node="n2"}`, 1)
	w.tick(time.Second)
	got := w.only()
	require.Equal(t, r.ID, got.ID)
	require.Equal(t, StepVerified, got.Steps[0].State)
	require.Equal(t, 1, strings.Count(strings.Join(w.writes("c1"), ","), "patch nodes n2"))

	// An op whose call went out but whose result was never stored (kill -9 between them) is
	// tried again, and the annotation makes that a no-op.
	op := &Op{ID: got.Steps[0].Ops[0].ID, Name: "n2", Cluster: "c1"}
	res, err := cordon(context.Background(), w.clients["c1"], op, false, func(string) error { return nil })
	require.NoError(t, err)
	require.Equal(t, "already cordoned by this op", res.detail)
	require.Empty(t, res.calls)
}

func TestNotifyOnlyChangesNothing(t *testing.T) {
	w := newWorld(t, nil)
	w.incidents = []correlate.Incident{{ID: "inc-9", Group: correlate.Group{Key: "failures/c2", Scope: "cluster", Clusters: []string{"c2"},
		Alerts: []correlate.Alert{{Labels: map[string]string{"alertname": "FleetWorkloadCrashLooping", "cluster": "c2", "namespace": "shop", "deployment": "api"}}}},
		State: correlate.StateOpen}}
	w.tick(time.Second)
	r := w.only()
	require.Equal(t, StateNotified, r.State, r.Reason)
	require.Equal(t, "Workload shop/api in c2", r.Steps[0].Ops[0].target())
	for _, c := range clusters {
		require.Empty(t, w.writes(c))
	}
}

func rolloutIncident() correlate.Incident {
	return correlate.Incident{ID: "inc-r", Group: correlate.Group{Key: "rollout/shop/api", Scope: "fleet", Clusters: []string{"c1", "c2", "c3"},
		Severity: "warning", Image: "api:v2-bad", RootCause: "likely bad rollout of shop/api (image api:v2-bad)"}, State: correlate.StateOpen}
}

// rolledOut makes the view say the Deployment in cluster is (1) or is not (0) fully rolled out.
func rolledOut(w *world, cluster string, ok float64) {
	sel := fmt.Sprintf(`{cluster=%q,namespace="shop",deployment="api"}`, cluster)
	w.set("kube_deployment_spec_replicas"+sel, 3)
	w.set("kube_deployment_status_replicas_available"+sel, 2+ok)
	w.set("kube_deployment_status_replicas_updated"+sel, 3)
	w.set("kube_deployment_metadata_generation"+sel, 2)
	w.set("kube_deployment_status_observed_generation"+sel, 2)
}

func TestBadRolloutRolledBackCanaryFirst(t *testing.T) {
	w := newWorld(t, nil)
	for _, c := range clusters {
		rolledOut(w, c, 0)
	}
	// c3 runs the fewest replicas: it is the canary.
	w.set(`kube_deployment_spec_replicas{cluster="c3",namespace="shop",deployment="api"}`, 1)
	w.set(`kube_deployment_status_replicas_available{cluster="c3",namespace="shop",deployment="api"}`, 0)
	w.set(`kube_deployment_status_replicas_updated{cluster="c3",namespace="shop",deployment="api"}`, 1)
	w.incidents = []correlate.Incident{rolloutIncident()}
	w.tick(time.Second)
	r := w.only()
	require.Equal(t, PlaybookBadRollout, r.Playbook)
	var order []string
	for _, op := range r.Steps[0].Ops {
		order = append(order, op.Cluster)
	}
	require.Equal(t, []string{"c3", "c1", "c2"}, order)
	require.Equal(t, []string{"update deployments api"}, w.writes("c3"), "auto mode: the canary is rolled back at once")
	require.Empty(t, w.writes("c1"))
	d, err := w.clients["c3"].AppsV1().Deployments("shop").Get(context.Background(), "api", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "api:v1", d.Spec.Template.Spec.Containers[0].Image)

	w.tick(5 * time.Second)
	require.Empty(t, w.writes("c1"), "the next cluster waits for the canary to verify")
	w.set(`kube_deployment_status_replicas_available{cluster="c3",namespace="shop",deployment="api"}`, 1)
	w.tick(5 * time.Second)
	require.Equal(t, []string{"update deployments api"}, w.writes("c1"))
	rolledOut(w, "c1", 1)
	w.tick(5 * time.Second)
	rolledOut(w, "c2", 1)
	w.tick(5 * time.Second)
	r = w.only()
	require.Equal(t, StateSucceeded, r.State, r.Reason)
	for _, c := range clusters {
		require.Len(t, w.writes(c), 1, c)
	}
}

func TestBadRolloutStopsAtTheFirstClusterThatDoesNotRecover(t *testing.T) {
	w := newWorld(t, nil)
	for _, c := range clusters {
		rolledOut(w, c, 0)
	}
	w.incidents = []correlate.Incident{rolloutIncident()}
	w.tick(time.Second)
	require.Equal(t, []string{"update deployments api"}, w.writes("c1"))
	// c1 never recovers within the step's 5 minutes.
	for range 6 {
		w.tick(time.Minute)
	}
	r := w.only()
	require.Equal(t, StateFailed, r.State, r.Reason)
	require.Equal(t, OpFailed, r.Steps[0].Ops[0].State)
	require.Equal(t, OpPending, r.Steps[0].Ops[1].State)
	require.Empty(t, w.writes("c2"), "no rollback after the cluster that did not recover")
	require.Empty(t, w.writes("c3"))
	require.Equal(t, []string{"update deployments api"}, w.writes("c1"), "a rollback is not undone")
}

func TestAnIncidentThatGrowsGetsTheNewClustersRemediated(t *testing.T) {
	w := newWorld(t, nil)
	for _, c := range clusters {
		rolledOut(w, c, 0)
	}
	inc := rolloutIncident()
	inc.Clusters = []string{"c1", "c2"}
	w.incidents = []correlate.Incident{inc}
	w.tick(time.Second)
	// The rollout reaches c3 while c1's rollback is verifying: c3 joins the running
	// remediation, after c2.
	inc.Clusters = []string{"c1", "c2", "c3"}
	w.incidents = []correlate.Incident{inc}
	w.tick(5 * time.Second)
	r := w.only()
	var order []string
	for _, op := range r.Steps[0].Ops {
		order = append(order, op.Cluster)
	}
	require.Equal(t, []string{"c1", "c2", "c3"}, order)
	require.Equal(t, []string{"c1", "c2", "c3"}, r.Clusters)
	for _, c := range clusters {
		rolledOut(w, c, 1)
		w.tick(5 * time.Second)
		require.Len(t, w.writes(c), 1, c)
	}
	w.tick(5 * time.Second)
	require.Equal(t, StateSucceeded, w.only().State)

	// Once the remediation is over, a cluster the incident reaches later gets one of its own;
	// each cluster is remediated once.
	w2 := newWorld(t, nil)
	for _, c := range clusters {
		rolledOut(w2, c, 0)
	}
	inc.Clusters = []string{"c1"}
	w2.incidents = []correlate.Incident{inc}
	w2.tick(time.Second)
	rolledOut(w2, "c1", 1)
	w2.tick(5 * time.Second)
	require.Equal(t, StateSucceeded, w2.only().State)
	inc.Clusters = []string{"c1", "c2"}
	w2.incidents = []correlate.Incident{inc}
	w2.tick(5 * time.Second)
	all, err := w2.store.List()
	require.NoError(t, err)
	require.Len(t, all, 2)
	require.Equal(t, []string{"c2"}, all[1].Clusters)
	require.Equal(t, []string{"update deployments api"}, w2.writes("c2"))
	require.Len(t, w2.writes("c1"), 1)
}

func TestADecisionThatCannotBeStoredChangesNothing(t *testing.T) {
	w := newWorld(t, nil)
	r := waiting(t, w, "c1", "n2")
	require.NoError(t, w.store.Close())
	_, err := w.engine.Decide(r.ID, "alice", true, "")
	require.Error(t, err)
	cur := w.engine.active[r.ID]
	require.Equal(t, StateWaiting, cur.State, "not stored, so not decided")
	require.Empty(t, cur.Steps[0].Approval.By)
	require.Error(t, w.engine.Pause("", "carol"))
	require.Empty(t, w.engine.Paused(), "not stored, so not paused")
}

// An escalation: a crash-looping Deployment is restarted (as kubectl rollout restart does),
// tried once more when it does not recover within the step's timeout, then handed to an
// operator (a notify step that runs only when the one before failed).
func TestEscalationRestartThenNotify(t *testing.T) {
	const rolledOut = `min(kube_deployment_status_replicas_available{cluster="{{.Cluster}}",namespace="{{.Namespace}}",deployment="{{.Name}}"}` +
		` >= bool kube_deployment_spec_replicas{cluster="{{.Cluster}}",namespace="{{.Namespace}}",deployment="{{.Name}}"})`
	w := newWorld(t, func(s *config.RemediationConfig) {
		s.Playbooks = []config.PlaybookConfig{{Name: PlaybookCrashLoop, Match: config.MatchConfig{Kinds: []string{"failures"}}, Steps: []config.StepConfig{
			{Action: config.ActionRestart, Mode: config.ModeAuto, When: config.WhenVerified, Timeout: model.Duration(2 * time.Minute), Verify: rolledOut, Retries: 1},
			{Action: config.ActionNotify, Mode: config.ModeNotify, When: config.WhenFailed, Timeout: model.Duration(time.Minute)},
		}}}
	})
	w.set(`kube_deployment_spec_replicas{cluster="c1",namespace="shop",deployment="api"}`, 2)
	w.set(`kube_deployment_status_replicas_available{cluster="c1",namespace="shop",deployment="api"}`, 0)
	w.incidents = []correlate.Incident{{ID: "inc-crash", Group: correlate.Group{Key: "failures/c1", Scope: "cluster", Clusters: []string{"c1"},
		RootCause: "workload shop/api is failing in cluster c1", Alerts: []correlate.Alert{{Labels: map[string]string{
			"alertname": "FleetWorkloadCrashLooping", "cluster": "c1", "namespace": "shop", "owner_kind": "ReplicaSet", "owner_name": "api-5d8f7c9b6"}}}},
		State: correlate.StateOpen, OpenedAt: w.now}}
	w.tick(time.Second)
	require.Equal(t, []string{"patch deployments api"}, w.writes("c1"))
	d, err := w.clients["c1"].AppsV1().Deployments("shop").Get(context.Background(), "api", metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, d.Spec.Template.Annotations[restartedAtAnnotation])
	w.tick(time.Second)
	require.Len(t, w.writes("c1"), 1, "waits for the verification, not restarting again")

	w.tick(3 * time.Minute) // not recovered at the timeout: tried once more
	w.tick(time.Second)
	require.Equal(t, []string{"patch deployments api", "patch deployments api"}, w.writes("c1"))
	w.tick(3 * time.Minute) // nor then: the operator's turn
	r := w.only()
	require.Equal(t, StateNotified, r.State, r.Reason)
	require.Equal(t, "escalated to an operator: the steps before did not recover it", r.Reason)
	require.Equal(t, StepFailed, r.Steps[0].State)
	require.Equal(t, StepNotified, r.Steps[1].State)
	require.Len(t, w.writes("c1"), 2)
}

func TestApprovalRequestDecidedOnceAndJournaled(t *testing.T) {
	w := newWorld(t, nil)
	r := waiting(t, w, "c1", "n2")
	require.Empty(t, w.engine.Actions(), "a plan waiting for approval causes no alert yet")
	// The budget left, as the console shows it, is the metric's.
	left := w.engine.BudgetLeft()
	require.Len(t, left, 3)
	for _, res := range []string{"nodes", "workloads", "clusters"} {
		require.Equal(t, testutil.ToFloat64(w.engine.metrics.budget.WithLabelValues(res)), left[res], res)
	}
	requested := r.Steps[0].Approval.RequestedAt
	_, err := w.engine.DecideApproval(r.ID, 0, requested.Add(time.Nanosecond), "alice", true, "")
	require.ErrorIs(t, err, ErrConflict, "a link made for another request decides nothing")
	_, err = w.engine.DecideApproval(r.ID, 1, requested, "alice", true, "")
	require.ErrorIs(t, err, ErrConflict, "nor one for another step")
	_, err = w.engine.DecideApproval(r.ID, 0, requested, "alice", true, "")
	require.NoError(t, err)
	_, err = w.engine.DecideApproval(r.ID, 0, requested, "mallory", false, "")
	require.ErrorIs(t, err, ErrConflict, "a link is good once")
	require.Equal(t, "alice", mustGet(t, w, r.ID).Steps[0].Approval.By)

	w.tick(time.Second)
	require.Len(t, w.engine.Actions(), 2, "approved and running: its cordon and drain explain the alerts they cause")
	w.set(`kube_node_spec_unschedulable{cluster="c1",node="n2"}`, 1)
	w.tick(5 * time.Second)
	w.tick(5 * time.Minute)
	require.Equal(t, StateSucceeded, w.only().State)

	// Every change is journaled with the state it made, for the on-call hooks.
	entries, err := w.store.Events(0, 100)
	require.NoError(t, err)
	var kinds []string
	for i, e := range entries {
		require.Equal(t, uint64(i+1), e.Seq)
		require.Equal(t, r.ID, e.Subject)
		require.Equal(t, []string{"c1"}, e.Clusters)
		kinds = append(kinds, e.Kind)
	}
	require.Equal(t, []string{
		EventPlanned, EventWaiting, EventApproved, EventExecuted, EventVerified, EventExecuted, EventVerified, StateSucceeded,
	}, kinds)
	var last Remediation
	require.NoError(t, json.Unmarshal(entries[len(entries)-1].Payload, &last))
	require.Equal(t, StateSucceeded, last.State)

	head, err := w.store.EventsHead()
	require.NoError(t, err)
	require.NoError(t, w.store.TrimEvents(head-1))
	entries, err = w.store.Events(0, 100)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, head, entries[0].Seq)
}

// TestPlaybookMatchesRoutingLabels: a playbook's match.labels are the incident's routing
// labels, as the correlation engine gives remediation its incidents (ActiveWithAlerts); those
// copies once left the labels out, and no playbook matching on them ever applied.
func TestPlaybookMatchesRoutingLabels(t *testing.T) {
	st, err := correlate.OpenStore(filepath.Join(t.TempDir(), "c.db"))
	require.NoError(t, err)
	defer st.Close()
	ce, err := correlate.New(correlate.Options{Store: st, Rules: correlate.Rules{Teams: map[string]string{"payments": "team-pay"}}, ResolveAfter: time.Minute})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, ce.Ingest(ctx, []correlate.Alert{{Labels: map[string]string{"alertname": "Expiring", "cluster": "eu-1", "namespace": "payments", "severity": "critical"},
		StartsAt: time.Now(), Source: "rules"}}))
	require.NoError(t, ce.Evaluate(ctx))
	incs := ce.ActiveWithAlerts()
	require.Len(t, incs, 1)
	require.True(t, matches(config.MatchConfig{Labels: map[string]string{amconfig.LabelTeam: "team-pay", amconfig.LabelSeverity: "critical"}}, incs[0]))
	require.False(t, matches(config.MatchConfig{Labels: map[string]string{amconfig.LabelTeam: "team-other"}}, incs[0]))
}

// pointers are the incidents as the correlation engine gives remediation its own.
func pointers(incs []correlate.Incident) []*correlate.Incident {
	out := make([]*correlate.Incident, len(incs))
	for i := range incs {
		out[i] = &incs[i]
	}
	return out
}
