package correlate

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/promql"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/fleetwatch/fleetwatch/correlate/amconfig"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recordingAM answers /api/v2/alerts, failing with 503 while down. It records every request
// it gets, answered or not, so that a test can tell "nothing was sent" from "nothing was
// accepted".
type recordingAM struct {
	mtx      sync.Mutex
	down     bool
	requests []amRequest      // every request, in order
	alerts   []map[string]any // the alerts of the requests answered 200
}

// amRequest is one request the fake Alertmanager got: the alerts it carried and the answer.
type amRequest struct {
	alerts []map[string]any
	code   int
}

func (f *recordingAM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	if r.URL.Path != "/api/v2/alerts" {
		http.NotFound(w, r)
		return
	}
	var got []map[string]any
	code := http.StatusOK
	if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
		code = http.StatusBadRequest
	} else if f.down {
		code = http.StatusServiceUnavailable
	}
	f.requests = append(f.requests, amRequest{alerts: got, code: code})
	if code != http.StatusOK {
		http.Error(w, http.StatusText(code), code)
		return
	}
	f.alerts = append(f.alerts, got...)
}

func (f *recordingAM) setDown(d bool) { f.mtx.Lock(); f.down = d; f.mtx.Unlock() }

// received returns the alerts of the requests answered 200.
func (f *recordingAM) received() []map[string]any {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	return append([]map[string]any(nil), f.alerts...)
}

// got returns every request so far.
func (f *recordingAM) got() []amRequest {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	return append([]amRequest(nil), f.requests...)
}

// inProcess is an http.RoundTripper that serves requests with a handler, without a network:
// the engine's deliveries reach a fake Alertmanager inside a synctest bubble.
type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// amURL is where the engine believes the fake Alertmanager is.
const amURL = "http://alertmanager.test:9093"

type clock struct {
	mtx sync.Mutex
	t   time.Time
}

func (c *clock) now() time.Time      { c.mtx.Lock(); defer c.mtx.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mtx.Lock(); c.t = c.t.Add(d); c.mtx.Unlock() }

func startEngine(t *testing.T, path string, am *recordingAM, clk *clock) (*Engine, func()) {
	t.Helper()
	st, err := OpenStore(path)
	require.NoError(t, err)
	e, err := New(Options{Store: st, Rules: DefaultRules, Interval: 50 * time.Millisecond, ResolveAfter: 5 * time.Minute,
		ResendInterval: time.Hour, Alertmanagers: []string{amURL}, Transport: inProcess{am}, Now: clk.now, Identify: testIdentify})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	return e, func() { cancel(); <-done; require.NoError(t, st.Close()) }
}

// settle lets the engine's loops run for d of the bubble's fake time, then waits until every
// goroutine of the bubble is blocked: what the engine does in d has then been done.
func settle(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// TestEngineDeliversDurably: an incident reaches Alertmanager even if Alertmanager is down at
// first, is not sent again after a restart when nothing changed, and its resolution is sent.
func TestEngineDeliversDurably(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		am := &recordingAM{down: true}
		clk := &clock{t: t0}
		path := filepath.Join(t.TempDir(), "correlate.db")

		e, stop := startEngine(t, path, am, clk)
		nodes := alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", "eu-2", "severity", "critical")
		nodes.StartsAt = t0
		pod := alert(0, "alertname", "KubePodCrashLooping", "cluster", "eu-2", "namespace", "payments", "pod", "api-1", "severity", "warning")
		require.NoError(t, e.Ingest(context.Background(), []Alert{nodes, pod}))
		settle(5 * time.Second)
		incs, err := e.o.Store.Incidents(Filter{State: "active"})
		require.NoError(t, err)
		require.Len(t, incs, 2)
		// The engine did try, and kept trying with backoff (0.5s, 1s, 2s: 4 tries in 5s); none
		// was accepted.
		tries := am.got()
		require.GreaterOrEqual(t, len(tries), 3, "retried while Alertmanager is down")
		for _, r := range tries {
			require.Equal(t, http.StatusServiceUnavailable, r.code)
			require.Len(t, r.alerts, 2, "both incidents in every try")
		}
		require.Empty(t, am.received(), "Alertmanager is down")
		stop() // as if killed: the queue is in the store

		am.setDown(false)
		e, stop = startEngine(t, path, am, clk)
		settle(time.Second)
		got := am.received()
		require.Len(t, got, 2)
		var ids []string
		for _, a := range got {
			ls := a["labels"].(map[string]any)
			require.Equal(t, IncidentAlertName, ls["alertname"])
			require.Equal(t, "cluster", ls["scope"])
			require.Equal(t, "eu-2", ls["cluster"])
			ids = append(ids, a["annotations"].(map[string]any)[amconfig.AnnotationIncidentID].(string))
			require.NotEmpty(t, ls[amconfig.LabelIncidentKey])
			require.NotEmpty(t, a["annotations"].(map[string]any)["explanation"])
		}
		stop()

		// A restart with nothing new re-pages nobody: not sent, not even tried.
		before := len(am.got())
		e, stop = startEngine(t, path, am, clk)
		require.NoError(t, e.Ingest(context.Background(), []Alert{nodes, pod}))
		settle(5 * time.Second)
		require.Len(t, am.got(), before)
		active, err := e.o.Store.Incidents(Filter{State: "active"})
		require.NoError(t, err)
		require.Len(t, active, 2)
		for _, inc := range active {
			require.Contains(t, ids, inc.ID)
		}

		// Acknowledge over the API as alice, then the alerts resolve; after the hysteresis, so
		// does the incident, and Alertmanager hears it.
		api := asCaller(e.Handler(), user("alice"))
		code, body := call(api, http.MethodPost, "/api/v1/incidents/"+ids[0]+"/ack", ``)
		require.Equal(t, http.StatusOK, code, body)
		for _, bad := range []struct {
			path, body string
			code       int
		}{
			{"/api/v1/incidents/" + ids[0] + "/ack", `{"by":"a","extra":1}`, http.StatusBadRequest},
			{"/api/v1/incidents/" + ids[0] + "/ack", `{"by":"bob"}`, http.StatusBadRequest},
			{"/api/v1/incidents/inc-nope/ack", ``, http.StatusNotFound},
		} {
			code, body := call(api, http.MethodPost, bad.path, bad.body)
			require.Equal(t, bad.code, code, "%+v: %s", bad, body)
		}
		nodes.EndsAt, pod.EndsAt = clk.now(), clk.now()
		require.NoError(t, e.Ingest(context.Background(), []Alert{nodes, pod}))
		clk.add(time.Minute)
		require.NoError(t, e.Evaluate(context.Background()))
		clk.add(5 * time.Minute)
		require.NoError(t, e.Evaluate(context.Background()))
		settle(time.Second)
		resolved := 0
		for _, a := range am.received() {
			if end, err := time.Parse(time.RFC3339, a["endsAt"].(string)); err == nil && !end.After(clk.now()) {
				resolved++
			}
		}
		require.Equal(t, 2, resolved)
		code, raw := call(api, http.MethodGet, "/api/v1/incidents?state=resolved&cluster=eu-2", ``)
		require.Equal(t, http.StatusOK, code, raw)
		var list struct {
			Status string      `json:"status"`
			Data   []*Incident `json:"data"`
		}
		require.NoError(t, json.Unmarshal([]byte(raw), &list))
		require.Len(t, list.Data, 2)
		for _, inc := range list.Data {
			if inc.ID == ids[0] {
				require.Equal(t, "alice", inc.AckedBy)
			}
		}
		code, _ = call(api, http.MethodGet, "/api/v1/incidents?state=bogus", ``)
		require.Equal(t, http.StatusBadRequest, code)
		stop()
	})
}

// TestEngineLastStateWins: whatever the incident went through (opened, cleared, back,
// resolved), the last state Alertmanager holds is the last state of the incident.
func TestEngineLastStateWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		am := &recordingAM{}
		st, err := OpenStore(filepath.Join(t.TempDir(), "c.db"))
		require.NoError(t, err)
		defer st.Close()
		e, err := New(Options{Store: st, Rules: DefaultRules, Interval: 20 * time.Millisecond, ResolveAfter: 300 * time.Millisecond,
			ResendInterval: 100 * time.Millisecond, Alertmanagers: []string{amURL}, Transport: inProcess{am}})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); e.Run(ctx) }()
		defer func() { cancel(); <-done }()

		a := alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", "eu-2", "severity", "critical")
		a.StartsAt = time.Now()
		for range 5 {
			a.EndsAt = time.Time{}
			require.NoError(t, e.Ingest(ctx, []Alert{a}))
			time.Sleep(150 * time.Millisecond)
			a.EndsAt = time.Now()
			require.NoError(t, e.Ingest(ctx, []Alert{a}))
			time.Sleep(100 * time.Millisecond)
		}
		settle(5 * time.Second)
		incs, err := st.Incidents(Filter{State: "active"})
		require.NoError(t, err)
		require.Empty(t, incs)
		last := map[string]map[string]any{}
		for _, p := range am.received() {
			last[p["annotations"].(map[string]any)[amconfig.AnnotationIncidentID].(string)] = p
		}
		require.NotEmpty(t, last)
		for id, p := range last {
			end, err := time.Parse(time.RFC3339Nano, p["endsAt"].(string))
			require.NoError(t, err)
			inc, err := st.Incident(id)
			require.NoError(t, err)
			require.Equal(t, StateResolved, inc.State)
			// Not merely in the past by now: the last state Alertmanager holds is the
			// resolution itself.
			require.True(t, end.Equal(inc.ResolvedAt), "incident %s: Alertmanager's last endsAt %s, resolved at %s", id, end, inc.ResolvedAt)
		}
	})
}

func TestEngineMetrics(t *testing.T) {
	st, err := OpenStore(filepath.Join(t.TempDir(), "c.db"))
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	clk := &clock{t: t0}
	reg := prometheus.NewRegistry()
	e, err := New(Options{Store: st, Rules: DefaultRules, ResolveAfter: time.Minute, Now: clk.now, Registerer: reg})
	require.NoError(t, err)
	a := alert(0, "alertname", "CertificateExpiring", "cluster", "eu-1", "severity", "warning")
	b := alert(0, "alertname", "CertificateExpiring", "cluster", "us-1", "severity", "warning")
	require.NoError(t, e.Ingest(context.Background(), []Alert{a, b}))
	require.NoError(t, e.Evaluate(context.Background()))
	require.Equal(t, 1.0, testutil.ToFloat64(e.opened.WithLabelValues("warning", "fleet")))
	require.Equal(t, 1.0, testutil.ToFloat64(e.byCluster.WithLabelValues("eu-1")))
	require.Equal(t, 1.0, testutil.ToFloat64(e.byCluster.WithLabelValues("us-1")))
	a.EndsAt, b.EndsAt = clk.now(), clk.now()
	require.NoError(t, e.Ingest(context.Background(), []Alert{a, b}))
	clk.add(time.Second)
	require.NoError(t, e.Evaluate(context.Background()))
	clk.add(2 * time.Minute)
	require.NoError(t, e.Evaluate(context.Background()))
	require.Equal(t, 1.0, testutil.ToFloat64(e.resolved.WithLabelValues("warning", "fleet", "cleared")))
	require.Equal(t, 0, testutil.CollectAndCount(e.byCluster))
	require.Equal(t, 1, testutil.CollectAndCount(e.duration))
}

// TestActiveListMatchesStore: the incident API answers active states from memory; at every
// step (new incidents, acknowledgement, clearing, a restart that reloads them) it lists
// exactly what the store holds as active, with the same content, and the incident gauges
// count them.
func TestActiveListMatchesStore(t *testing.T) {
	am := &recordingAM{}
	clk := &clock{t: t0}
	path := filepath.Join(t.TempDir(), "correlate.db")
	e, stop := startEngine(t, path, am, clk)

	same := func(f Filter) {
		t.Helper()
		want, err := e.o.Store.Incidents(f)
		require.NoError(t, err)
		if want == nil {
			want = []*Incident{} // as the API answers it
		}
		got := e.activeIncidents(f)
		wj, err := json.Marshal(want)
		require.NoError(t, err)
		gj, err := json.Marshal(got)
		require.NoError(t, err)
		require.JSONEq(t, string(wj), string(gj), "filter %+v", f)
	}
	check := func() {
		t.Helper()
		e.mtx.Lock() // no evaluation between the two reads
		defer e.mtx.Unlock()
		for _, f := range []Filter{{State: "active"}, {State: StateOpen}, {State: StateAcknowledged},
			{State: "active", Cluster: "eu-2"}, {State: "active", Severity: "critical"}} {
			same(f)
		}
		requireGauges(t, e)
	}
	nodes := alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", "eu-2", "severity", "critical")
	other := alert(0, "alertname", "KubeJobFailed", "cluster", "us-1", "namespace", "batch", "job_name", "nightly", "severity", "warning")
	require.NoError(t, e.Ingest(context.Background(), []Alert{nodes, other}))
	require.NoError(t, e.Evaluate(context.Background()))
	check()
	active := e.activeIncidents(Filter{State: "active"})
	require.Len(t, active, 2)
	_, err := e.Acknowledge(active[0].ID, "alice")
	require.NoError(t, err)
	check()
	other.EndsAt = clk.now()
	require.NoError(t, e.Ingest(context.Background(), []Alert{other}))
	clk.add(time.Minute)
	require.NoError(t, e.Evaluate(context.Background()))
	clk.add(5 * time.Minute)
	require.NoError(t, e.Evaluate(context.Background()))
	check()
	require.Len(t, e.activeIncidents(Filter{State: "active"}), 1)
	require.Len(t, e.Active(), 1)
	stop()

	e, stop = startEngine(t, path, am, clk)
	defer stop()
	check()
	require.Len(t, e.activeIncidents(Filter{State: "active"}), 1)
}

// What remediation did is on the incident (API and store) and goes to Alertmanager as the
// incident's "remediation" annotation; saying the same again changes nothing.
func TestRemediatedGoesToAlertmanager(t *testing.T) {
	am := &recordingAM{}
	clk := &clock{t: t0}
	e, stop := startEngine(t, filepath.Join(t.TempDir(), "correlate.db"), am, clk)
	defer stop()
	require.NoError(t, e.Ingest(context.Background(), []Alert{alert(0, "alertname", "FleetClusterSilent", "cluster", "eu-2", "severity", "critical")}))
	require.NoError(t, e.Evaluate(context.Background()))
	inc := e.Active()[0]
	require.Empty(t, inc.Alerts)
	require.Equal(t, "FleetClusterSilent", e.ActiveWithAlerts()[0].Alerts[0].Labels["alertname"], "remediation reads which cluster is silent")
	text := "fleetwatch remediation rem-1 (playbook cluster-lost) succeeded"
	require.NoError(t, e.Remediated(inc.ID, text))
	stored, err := e.o.Store.Incident(inc.ID)
	require.NoError(t, err)
	require.Equal(t, text, stored.Remediation)
	require.Equal(t, inc.Revision+1, stored.Revision)
	require.NoError(t, e.Remediated(inc.ID, text))
	again, err := e.o.Store.Incident(inc.ID)
	require.NoError(t, err)
	require.Equal(t, stored.Revision, again.Revision, "the same text is no change")
	require.Eventually(t, func() bool {
		for _, a := range am.received() {
			if ann, ok := a["annotations"].(map[string]any); ok && ann["remediation"] == text {
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "Alertmanager gets the remediation annotation")
	require.ErrorIs(t, e.Remediated("inc-nope", text), ErrNotFound)
}

// TestActiveIncidentsNeverChange: the active list shares the tracker's incidents, so nothing
// may change one once it is listed: a reload that fingerprints the alerts again makes new ones.
// Run with -race, a reader during the reload would also see it.
func TestActiveIncidentsNeverChange(t *testing.T) {
	st, _ := openTestStore(t)
	clk := &clock{t: t0}
	e := mustNew(t, Options{Store: st, Rules: DefaultRules, ResolveAfter: time.Minute, Now: clk.now})
	ctx := context.Background()
	a := alert(0, "alertname", "CertificateExpiring", "cluster", "eu-1", "ha", "a")
	require.NoError(t, e.Ingest(ctx, []Alert{a}))
	require.NoError(t, e.Evaluate(ctx))
	listed := e.activeIncidents(Filter{State: "active"})
	require.Len(t, listed, 1)
	before := *listed[0]
	fp := listed[0].Alerts[0].fp

	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			for _, inc := range e.activeIncidents(Filter{State: "active"}) {
				_ = len(inc.Alerts) + int(inc.Alerts[0].fp%2)
			}
		}
	}()
	require.NoError(t, e.ApplySettings(Settings{ReplicaLabels: []string{"ha"}}))
	<-done
	require.Equal(t, before, *listed[0], "the listed incident is as it was")
	require.Equal(t, fp, listed[0].Alerts[0].fp)
	require.NotEqual(t, fp, e.tracker.find(before.ID).Alerts[0].fp, "the tracker's has the new fingerprints")
}

// requireGauges: the active-incident gauges show what counting the tracker's incidents gives,
// and no other series.
func requireGauges(t *testing.T, e *Engine) {
	t.Helper()
	kinds, clusters := map[incidentKind]int{}, map[string]int{}
	for _, inc := range e.tracker.active {
		kinds[incidentKind{inc.Severity, inc.Scope}]++
		for _, c := range inc.Clusters {
			clusters[c]++
		}
	}
	require.Equal(t, len(kinds), testutil.CollectAndCount(e.incidents), "fleetwatch_correlate_incidents series")
	require.Equal(t, len(clusters), testutil.CollectAndCount(e.byCluster), "fleetwatch_correlate_cluster_incidents series")
	for k, n := range kinds {
		require.Equal(t, float64(n), testutil.ToFloat64(e.incidents.WithLabelValues(k.severity, k.scope)), "%+v", k)
	}
	for c, n := range clusters {
		require.Equal(t, float64(n), testutil.ToFloat64(e.byCluster.WithLabelValues(c)), c)
	}
}

// TestRunReadsTopologyAtMostEverySecond: alerts coming in every 60 ms make Run evaluate as
// often, each evaluation with the alerts of the one before, but the topology is read at most
// once a second (topologyMaxAge); Evaluate itself reads it every time.
func TestRunReadsTopologyAtMostEverySecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, err := OpenStore(filepath.Join(t.TempDir(), "c.db"))
		require.NoError(t, err)
		defer st.Close()
		var reads atomic.Int64
		query := func(_ context.Context, q string, _ time.Time) (promql.Vector, error) {
			if q == qNotReady {
				reads.Add(1)
			}
			return nil, nil
		}
		e, err := New(Options{Store: st, Rules: DefaultRules, Interval: time.Hour, ResolveAfter: time.Minute, Query: query})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); e.Run(ctx) }()
		defer func() { cancel(); <-done }()

		start := time.Now()
		for i := range 40 {
			a := alert(0, "alertname", fmt.Sprint("Expiring", i), "cluster", "eu-1", "severity", "warning")
			a.StartsAt = time.Now()
			require.NoError(t, e.Ingest(ctx, []Alert{a}))
			settle(60 * time.Millisecond)
			require.Len(t, e.Active(), i+1, "after %d alerts", i+1)
		}
		elapsed := time.Since(start)
		n := int64(elapsed/topologyMaxAge) + 1
		require.LessOrEqual(t, reads.Load(), n, "topology read %d times in %s", reads.Load(), elapsed)

		before := reads.Load()
		require.NoError(t, e.Evaluate(ctx))
		require.NoError(t, e.Evaluate(ctx))
		require.Equal(t, before+2, reads.Load())
	})
}

// TestEachActive: EachActive gives the incidents Active copies, the engine's own (no copy), and
// stops when told to.
func TestEachActive(t *testing.T) {
	st, err := OpenStore(filepath.Join(t.TempDir(), "c.db"))
	require.NoError(t, err)
	defer st.Close()
	e, err := New(Options{Store: st, Rules: DefaultRules, ResolveAfter: time.Minute})
	require.NoError(t, err)
	ctx := context.Background()
	for i := range 5 {
		require.NoError(t, e.Ingest(ctx, []Alert{alert(0, "alertname", fmt.Sprint("Expiring", i), "cluster", "eu-1", "severity", "warning")}))
	}
	require.NoError(t, e.Evaluate(ctx))
	want := map[string]string{}
	for _, inc := range e.Active() {
		want[inc.ID] = inc.Key
	}
	require.Len(t, want, 5)
	got := map[string]string{}
	for inc := range e.EachActive {
		got[inc.ID] = inc.Key
		require.Same(t, e.tracker.active[inc.Key], inc, "the engine's incident, not a copy")
	}
	require.Equal(t, want, got)
	n := 0
	for range e.EachActive {
		if n++; n == 2 {
			break
		}
	}
	require.Equal(t, 2, n)
}

// TestActiveWithAlertsHasRoutingLabels: remediation matches playbooks on an incident's routing
// labels (match.labels), so the incidents it reads carry them; they are the engine's own,
// oldest first.
func TestActiveWithAlertsHasRoutingLabels(t *testing.T) {
	st, err := OpenStore(filepath.Join(t.TempDir(), "c.db"))
	require.NoError(t, err)
	defer st.Close()
	e, err := New(Options{Store: st, Rules: Rules{Teams: map[string]string{"payments": "team-pay"}}, ResolveAfter: time.Minute})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, e.Ingest(ctx, []Alert{alert(0, "alertname", "Expiring", "cluster", "eu-1", "namespace", "payments", "severity", "critical")}))
	require.NoError(t, e.Evaluate(ctx))
	for i := range 3 {
		require.NoError(t, e.Ingest(ctx, []Alert{alert(0, "alertname", fmt.Sprint("Other", i), "cluster", "eu-1", "severity", "warning")}))
		require.NoError(t, e.Evaluate(ctx))
	}
	incs := e.ActiveWithAlerts()
	require.Len(t, incs, 4)
	require.True(t, slices.IsSortedFunc(incs, func(a, b *Incident) int { return strings.Compare(a.ID, b.ID) }), "oldest first")
	require.Equal(t, incs[0].routingLabels(), incs[0].Labels)
	require.Equal(t, "team-pay", incs[0].Labels[amconfig.LabelTeam])
	require.Len(t, incs[0].Alerts, 1)
	for _, inc := range incs {
		require.Same(t, e.tracker.active[inc.Key], inc, "the engine's incident, not a copy")
	}
}
