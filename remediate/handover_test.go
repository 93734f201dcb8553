package remediate

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	k8stesting "k8s.io/client-go/testing"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/kubelab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// startHub starts a real etcd and kube-apiserver: the hub that holds the Lease and the state
// its holder shares.
func startHub(t *testing.T) kubernetes.Interface {
	t.Helper()
	testenv.SkipIfShort(t)
	for _, b := range []string{kubelab.BinEtcd, kubelab.BinKubeAPIServer} {
		testenv.Peer(t, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp, err := kubelab.StartControlPlane(ctx, kubelab.ControlPlaneOptions{Name: "hub", Dir: t.TempDir(), BinDir: testenv.PeersBin(), APIOnly: true})
	require.NoError(t, err)
	t.Cleanup(cp.Close)
	c, err := kubernetes.NewForConfig(cp.RESTConfig(cp.URL))
	require.NoError(t, err)
	return c
}

// process starts another fleetwatch process on the world's clusters and view, as a replica
// is: its own store, its own incident IDs (the same keys), the hub shared; it leads from now
// on (the world's ticks evaluate it). Its store is the world's.
func (w *world) process(t *testing.T, hub kubernetes.Interface, identity string) *Engine {
	t.Helper()
	store, err := OpenStore(filepath.Join(t.TempDir(), "remediations.db"))
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	o := w.engine.o // the world's clusters, view and what-if
	o.Store, o.Registerer = store, prometheus.NewRegistry()
	o.Incidents = func() []*correlate.Incident {
		out := slices.Clone(w.incidents)
		for i := range out {
			out[i].ID = identity + "-" + out[i].ID
		}
		return pointers(out)
	}
	e, err := New(o)
	require.NoError(t, err)
	e.hub = newHandover(hub, config.DefaultLeaderElection.Namespace, config.DefaultLeaderElection.LeaseName, identity)
	w.lead(e)
	return e
}

// lead makes e the process that evaluates (it took the Lease).
func (w *world) lead(e *Engine) {
	e.mu.Lock()
	e.hub.ready = false // as RunElected does when it takes the Lease
	e.mu.Unlock()
	w.engine, w.store = e, e.o.Store
}

// hubState reads what the hub holds, and who wrote it when.
func hubState(t *testing.T, hub kubernetes.Interface) (*sharedState, string) {
	t.Helper()
	st, writer, rv, err := newHandover(hub, config.DefaultLeaderElection.Namespace, config.DefaultLeaderElection.LeaseName, "").read(context.Background())
	require.NoError(t, err)
	require.NotEmpty(t, rv, "nothing in the hub")
	return st, writer
}

// decided starts process a, whose remediation of node n2 in c1 an operator approves or denies.
func decided(t *testing.T, w *world, hub kubernetes.Interface, approve bool) (*Engine, *Remediation) {
	t.Helper()
	a := w.process(t, hub, "a")
	r := waiting(t, w, "c1", "n2")
	_, err := a.Decide(r.ID, "alice", approve, "")
	require.NoError(t, err)
	return a, r
}

// drainBlocked advances an approved remediation of node n2 in c1: cordoned, verified, and its
// drain's evictions refused (a PodDisruptionBudget).
func drainBlocked(t *testing.T, w *world) *Remediation {
	t.Helper()
	w.tick(time.Second)
	w.set(`kube_node_spec_unschedulable{cluster="c1",node="n2"}`, 1)
	w.refuse = true
	w.tick(5 * time.Second)
	r := w.only()
	require.Equal(t, OpBlocked, r.Steps[1].Ops[0].State, r.Steps[1].Ops[0].Detail)
	return r
}

// The leader dies in the middle of a drain (an eviction a PodDisruptionBudget refused), after
// its cordon took the node out of the Ready ratio and the incident resolved: the next leader
// finishes the drain from what the hub says, under the same remediation, without cordoning
// again; a stale leader that still evaluates re-reads the hub instead of acting on its copy.
func TestHandoverFinishesTheDrain(t *testing.T) {
	hub := startHub(t)
	w := newWorld(t, nil)
	a := w.process(t, hub, "a")
	r := waiting(t, w, "c1", "n2")
	st, writer := hubState(t, hub)
	require.True(t, strings.HasPrefix(writer, "a at "), writer)
	require.Len(t, st.Remediations, 1)
	require.Equal(t, StateWaiting, st.Remediations[0].State)

	// The approval is in the hub before it is acknowledged.
	_, err := a.Decide(r.ID, "alice", true, "")
	require.NoError(t, err)
	st, _ = hubState(t, hub)
	require.Equal(t, StateRunning, st.Remediations[0].State)
	require.Equal(t, "alice", st.Remediations[0].Steps[0].Approval.By)

	// What the hub says at each write to c1: the step that writes is there first.
	var atWrite []string
	w.clients["c1"].PrependReactor("*", "*", func(act k8stesting.Action) (bool, runtime.Object, error) {
		if act.GetVerb() == "patch" || act.GetVerb() == "create" {
			st, _ := hubState(t, hub)
			atWrite = append(atWrite, mark(st.Remediations[0]))
		}
		return false, nil, nil
	})
	r = drainBlocked(t, w)
	require.Equal(t, []string{"patch nodes n2", "create pods/eviction api-n2-1", "create pods/eviction api-n2-2"}, w.writes("c1"), "both evictions refused")
	require.Equal(t, []string{"0/1/running", "1/1/running", "1/1/running"}, atWrite, "the hub has each step before its first write")

	// a is gone; the incident resolved (the cordoned node left the Ready ratio). b takes the
	// Lease and continues the drain.
	w.incidents = nil
	w.refuse = false
	before := len(w.writes("c1"))
	b := w.process(t, hub, "b")
	w.tick(6 * time.Second)
	got, err := w.store.Get(r.ID)
	require.NoError(t, err)
	require.Equal(t, StateRunning, got.State, got.Reason)
	require.Equal(t, OpDone, got.Steps[1].Ops[0].State, got.Steps[1].Ops[0].Detail)
	require.Equal(t, []string{"create pods/eviction api-n2-1", "create pods/eviction api-n2-2"}, w.writes("c1")[before:],
		"b evicts what is left and does not cordon again")
	audit, err := w.store.AuditLog(0, r.ID, 0)
	require.NoError(t, err)
	require.Equal(t, EventAdopted, audit[0].Event)
	require.Contains(t, audit[0].Detail, "adopted from the hub, as written by a at ")

	// a still evaluates (it has not noticed it lost the Lease): it reads the hub again and
	// acts on nothing from its stale copy.
	before = len(w.writes("c1"))
	w.engine, w.store = a, a.o.Store
	w.tick(time.Second)
	require.Len(t, w.writes("c1"), before, "the stale leader repeated a write")
	stale, err := a.o.Store.Get(r.ID)
	require.NoError(t, err)
	require.Equal(t, OpDone, stale.Steps[1].Ops[0].State, "it took b's state")
	audit, err = a.o.Store.AuditLog(0, r.ID, 0)
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(audit, func(e AuditEntry) bool {
		return e.Event == EventAdopted && strings.Contains(e.Detail, "adopted from the hub, as written by b at ")
	}), "a re-read the hub")

	w.lead(b)
	w.tick(5 * time.Minute)
	got, err = w.store.Get(r.ID)
	require.NoError(t, err)
	require.Equal(t, StateSucceeded, got.State, got.Reason)
	require.Len(t, w.writes("c1"), before)
	// b's incident of the key never opened (it resolved before b took over): the remediation
	// is kept for it until the bind window ends.
	w.tick(bindWindow + time.Second)
	st, _ = hubState(t, hub)
	require.Empty(t, st.Remediations, "over, its incident resolved: no longer shared")
	require.Equal(t, StateSucceeded, st.Ended[r.ID].State)
}

// Decisions and pauses are the hub's: the next leader keeps a pause and does not plan again
// an incident whose remediation was denied; a decision the hub did not take is refused and
// kept nowhere; a remediation the old leader still has that ended under the next one ends
// there too when it leads again.
func TestHandoverKeepsDecisionsAndPauses(t *testing.T) {
	hub := startHub(t)
	w := newWorld(t, nil)
	a := w.process(t, hub, "a")
	r := waiting(t, w, "c1", "n2")
	require.NoError(t, a.Pause("c2", "alice"))

	b := w.process(t, hub, "b")
	w.tick(time.Second)
	require.Equal(t, map[string]string{"c2": "alice"}, b.Paused())
	paused, err := w.store.Paused()
	require.NoError(t, err)
	require.Equal(t, map[string]string{"c2": "alice"}, paused, "kept in b's store: a restart of b keeps it")
	got, err := w.store.Get(r.ID)
	require.NoError(t, err)
	require.Equal(t, StateWaiting, got.State)
	require.Equal(t, "b-inc-1", got.IncidentID, "bound to b's incident of the same key")

	// a, stale, cannot decide: the hub has b's writes.
	_, err = a.Decide(r.ID, "carol", true, "")
	require.ErrorIs(t, err, ErrHandedOver)
	a.o.Identify = func(context.Context) (correlate.Caller, bool) { return testCaller{}, true }
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/remediations/"+r.ID+"/approve", nil))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code, rec.Body.String())
	require.Contains(t, rec.Body.String(), "the Lease changed hands")
	mine, err := a.o.Store.Get(r.ID)
	require.NoError(t, err)
	require.Equal(t, StateWaiting, mine.State, "a refused decision is kept nowhere")
	require.Error(t, a.Resume("c2", "carol"))
	require.Equal(t, map[string]string{"c2": "alice"}, a.Paused())

	// b denies; the incident is still open: nothing is planned for it again, by b or by a
	// leader after b.
	_, err = b.Decide(r.ID, "bob", false, "not now")
	require.NoError(t, err)
	w.tick(time.Second)
	w.process(t, hub, "c")
	w.tick(time.Second)
	all, err := w.store.List()
	require.NoError(t, err)
	require.Len(t, all, 1, "c planned the incident again")
	require.Equal(t, StateDenied, all[0].State)

	// The incident resolves; a leads again: its own copy (waiting) ends as the hub says.
	w.incidents = nil
	w.tick(time.Second)
	w.lead(a)
	w.tick(time.Second)
	mine, err = a.o.Store.Get(r.ID)
	require.NoError(t, err)
	require.Equal(t, StateDenied, mine.State)
	require.Contains(t, mine.Reason, "in a process that led after this one (the hub's state, written by c at ")
	require.Empty(t, w.writes("c1"))
}

// A process that led, lost the Lease mid-drain and leads again a day later (the hub no longer
// remembers the remediation another process finished) does not resume its stale copy.
func TestHandoverStaleCopyNotResumed(t *testing.T) {
	hub := startHub(t)
	w := newWorld(t, nil)
	a, r := decided(t, w, hub, true)
	r = drainBlocked(t, w)

	w.incidents = nil
	w.refuse = false
	w.process(t, hub, "b")
	w.tick(6 * time.Second)
	w.tick(5 * time.Minute)
	got, err := w.store.Get(r.ID)
	require.NoError(t, err)
	require.Equal(t, StateSucceeded, got.State, got.Reason)
	w.tick(25 * time.Hour) // it leaves the state: remembered as ended for a day from now
	w.tick(25 * time.Hour)
	st, _ := hubState(t, hub)
	_, tomb := st.Ended[r.ID]
	require.False(t, tomb, "tombstone gone")

	// n2 is back in service (someone uncordoned it, pods run there again); a leads again.
	_, err = w.clients["c1"].CoreV1().Pods("shop").Create(t.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "api-n2-9", Namespace: "shop"}, Spec: corev1.PodSpec{NodeName: "n2"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	before := len(w.writes("c1"))
	w.lead(a)
	w.tick(6 * time.Second)
	mine, err := a.o.Store.Get(r.ID)
	require.NoError(t, err)
	t.Logf("a's copy: %s %s; writes to c1 since: %v", mine.State, mine.Reason, w.writes("c1")[before:])
	require.Len(t, w.writes("c1"), before, "a resumed a remediation b finished a day ago")
	require.Equal(t, StateCancelled, mine.State)
	require.Contains(t, mine.Reason, "no process runs it any more; what it did stays")
}

// The new leader's correlation opens the incident one evaluation after it adopted its denied
// remediation: the remediation is bound to that incident then, and the incident is not planned
// again.
func TestHandoverBindsAnIncidentThatOpensLater(t *testing.T) {
	hub := startHub(t)
	w := newWorld(t, nil)
	_, r := decided(t, w, hub, false)
	w.tick(time.Second)
	st, _ := hubState(t, hub)
	require.Len(t, st.Remediations, 1)

	incs := w.incidents
	w.incidents = nil // b's correlation opens the incident one evaluation later
	w.process(t, hub, "b")
	w.tick(time.Second)
	w.incidents = incs
	w.tick(time.Second)
	all, err := w.store.List()
	require.NoError(t, err)
	for _, x := range all {
		t.Logf("b: %s %s incident %s", x.ID, x.State, x.IncidentID)
	}
	require.Len(t, all, 1, "b planned the denied incident again")
	require.Equal(t, r.ID, all[0].ID)
	require.Equal(t, "b-inc-1", all[0].IncidentID, "bound to b's incident once it opened")
}

// a planned a remediation that never reached the hub (as when the hub is unreachable and a
// loses the Lease); b planned its own for the same incident, which was denied. When a leads
// again its unshared copy is cancelled: one remediation per incident, nobody asked again.
func TestHandoverCancelsAnUnsharedCopy(t *testing.T) {
	hub := startHub(t)
	w := newWorld(t, nil)
	a := w.process(t, hub, "a")
	a.hub = nil // the share of this evaluation does not reach the hub
	x := waiting(t, w, "c1", "n2")

	b := w.process(t, hub, "b")
	w.tick(time.Second)
	y := w.only()
	require.NotEqual(t, x.ID, y.ID)
	_, err := b.Decide(y.ID, "bob", false, "no")
	require.NoError(t, err)
	w.tick(time.Second)

	a.hub = newHandover(hub, config.DefaultLeaderElection.Namespace, config.DefaultLeaderElection.LeaseName, "a")
	w.lead(a)
	w.tick(time.Second)
	mine, err := a.o.Store.Get(x.ID)
	require.NoError(t, err)
	st, _ := hubState(t, hub)
	for _, s := range st.Remediations {
		t.Logf("hub: %s %s %s", s.ID, s.State, s.IncidentKey)
	}
	require.True(t, Final(mine.State), "a's unshared remediation of the denied incident still %s", mine.State)
}

// A remediation that leaves the shared state is remembered as ended for endedKept from then,
// however long before it ended.
func TestHandoverRemembersEndedFromWhenTheyLeave(t *testing.T) {
	w := newWorld(t, nil)
	e := w.engine
	e.hub = newHandover(nil, "ns", "n", "a")
	now := w.now
	e.hub.final["rem-1"] = &Remediation{ID: "rem-1", IncidentID: "inc-1", State: StateDenied, DoneAt: now.Add(-48 * time.Hour)}
	st := e.sharedNow(map[string]*correlate.Incident{}, nil, now, nil)
	require.Contains(t, st.Ended, "rem-1", "pruned and not remembered")
}

// A failover done by one leader is failed back once: the next leader plans its failback when
// the cluster is back, and the first one, leading again, plans none of its own.
func TestHandoverFailback(t *testing.T) {
	hub := startHub(t)
	w := failoverWorld(t, 4, nil)
	a := w.process(t, hub, "a")
	require.NoError(t, a.keepSpecs(context.Background()))
	loseC1(w, 0)
	w.tick(time.Second)
	r := w.only()
	require.Equal(t, PlaybookClusterLost, r.Playbook)
	failedOver(w, r.Steps[0].Ops)
	r = w.only()
	require.Equal(t, StateSucceeded, r.State, r.Reason)

	// b takes over; c1 comes back: b plans the failback.
	w.process(t, hub, "b")
	w.tick(time.Second)
	fb := c1Back(t, w, r)

	// a leads again: the failback is b's, a plans none.
	w.lead(a)
	w.tick(time.Second)
	w.tick(time.Second)
	mine, err := a.o.Store.List()
	require.NoError(t, err)
	var failbacks []string
	for _, x := range mine {
		if x.FailbackOf != "" {
			failbacks = append(failbacks, x.ID)
		}
	}
	require.Equal(t, []string{fb.ID}, failbacks, "one failback")
}

// a planned a remediation that never reached the hub; b, leading meanwhile, planned nothing
// (the incident was not open there). When a leads again its copy is cancelled, and since it
// never acted, the incident is planned again.
func TestHandoverPlansAgainWhatNeverActed(t *testing.T) {
	hub := startHub(t)
	w := newWorld(t, nil)
	a := w.process(t, hub, "a")
	a.hub = nil // the share of this evaluation does not reach the hub
	x := waiting(t, w, "c1", "n2")

	incidents := w.incidents
	w.incidents = nil
	w.process(t, hub, "b")
	w.tick(time.Second)

	w.incidents = incidents
	a.hub = newHandover(hub, config.DefaultLeaderElection.Namespace, config.DefaultLeaderElection.LeaseName, "a")
	w.lead(a)
	w.tick(time.Second)
	all, err := a.o.Store.List()
	require.NoError(t, err)
	require.Len(t, all, 2)
	require.Equal(t, x.ID, all[0].ID)
	require.Equal(t, StateCancelled, all[0].State)
	require.Contains(t, all[0].Reason, "handed over before it acted")
	require.Equal(t, StateWaiting, all[1].State, "planned again")
}
