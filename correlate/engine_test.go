package correlate

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// recordingAM answers /api/v2/alerts, failing while down.
type recordingAM struct {
	mtx    sync.Mutex
	down   bool
	posts  int
	alerts []map[string]any
}

func (f *recordingAM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	if r.URL.Path != "/api/v2/alerts" {
		http.NotFound(w, r)
		return
	}
	if f.down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	var got []map[string]any
	if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.posts++
	f.alerts = append(f.alerts, got...)
}

func (f *recordingAM) setDown(d bool) { f.mtx.Lock(); f.down = d; f.mtx.Unlock() }

func (f *recordingAM) received() []map[string]any {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	return append([]map[string]any(nil), f.alerts...)
}

type clock struct {
	mtx sync.Mutex
	t   time.Time
}

func (c *clock) now() time.Time      { c.mtx.Lock(); defer c.mtx.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mtx.Lock(); c.t = c.t.Add(d); c.mtx.Unlock() }

func startEngine(t *testing.T, path string, am string, clk *clock) (*Engine, func()) {
	t.Helper()
	st, err := OpenStore(path)
	require.NoError(t, err)
	e, err := New(Options{Store: st, Rules: DefaultRules, Interval: 50 * time.Millisecond, ResolveAfter: 5 * time.Minute,
		ResendInterval: time.Hour, Alertmanagers: []string{am}, Now: clk.now})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	return e, func() { cancel(); <-done; require.NoError(t, st.Close()) }
}

// TestEngineDeliversDurably: an incident reaches Alertmanager even if Alertmanager is down at
// first, is not sent again after a restart when nothing changed, and its resolution is sent.
func TestEngineDeliversDurably(t *testing.T) {
	am := &recordingAM{down: true}
	srv := httptest.NewServer(am)
	t.Cleanup(srv.Close)
	clk := &clock{t: t0}
	path := filepath.Join(t.TempDir(), "correlate.db")

	e, stop := startEngine(t, path, srv.URL, clk)
	nodes := alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", "eu-2", "severity", "critical")
	nodes.StartsAt = t0
	pod := alert(0, "alertname", "KubePodCrashLooping", "cluster", "eu-2", "namespace", "payments", "pod", "api-1", "severity", "warning")
	require.NoError(t, e.Ingest(context.Background(), []Alert{nodes, pod}))
	require.Eventually(t, func() bool {
		incs, err := e.o.Store.Incidents(Filter{State: "active"})
		return err == nil && len(incs) == 2
	}, 5*time.Second, 20*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	require.Empty(t, am.received(), "Alertmanager is down")
	stop() // as if killed: the queue is in the store

	am.setDown(false)
	e, stop = startEngine(t, path, srv.URL, clk)
	require.Eventually(t, func() bool { return len(am.received()) == 2 }, 10*time.Second, 20*time.Millisecond)
	got := am.received()
	var ids []string
	for _, a := range got {
		ls := a["labels"].(map[string]any)
		require.Equal(t, IncidentAlertName, ls["alertname"])
		require.Equal(t, "cluster", ls["scope"])
		require.Equal(t, "eu-2", ls["cluster"])
		ids = append(ids, ls["incident_id"].(string))
		require.NotEmpty(t, a["annotations"].(map[string]any)["explanation"])
	}
	stop()

	// A restart with nothing new re-pages nobody.
	e, stop = startEngine(t, path, srv.URL, clk)
	require.NoError(t, e.Ingest(context.Background(), []Alert{nodes, pod}))
	time.Sleep(300 * time.Millisecond)
	require.Len(t, am.received(), 2)
	active, err := e.o.Store.Incidents(Filter{State: "active"})
	require.NoError(t, err)
	require.Len(t, active, 2)
	for _, inc := range active {
		require.Contains(t, ids, inc.ID)
	}

	// Acknowledge over the API, then the alerts resolve; after the hysteresis, so does the
	// incident, and Alertmanager hears it.
	api := httptest.NewServer(e.Handler())
	t.Cleanup(api.Close)
	resp, err := http.Post(api.URL+"/api/v1/incidents/"+ids[0]+"/ack", "application/json", strings.NewReader(`{"by":"alice"}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, bad := range []struct{ path, body string }{
		{"/api/v1/incidents/" + ids[0] + "/ack", `{}`},
		{"/api/v1/incidents/" + ids[0] + "/ack", `{"by":"a","extra":1}`},
		{"/api/v1/incidents/inc-nope/ack", `{"by":"a"}`},
	} {
		resp, err := http.Post(api.URL+bad.path, "application/json", strings.NewReader(bad.body))
		require.NoError(t, err)
		resp.Body.Close()
		require.GreaterOrEqual(t, resp.StatusCode, 400, bad)
	}
	nodes.EndsAt, pod.EndsAt = clk.now(), clk.now()
	require.NoError(t, e.Ingest(context.Background(), []Alert{nodes, pod}))
	clk.add(time.Minute)
	require.NoError(t, e.Evaluate(context.Background()))
	clk.add(5 * time.Minute)
	require.NoError(t, e.Evaluate(context.Background()))
	require.Eventually(t, func() bool {
		resolved := 0
		for _, a := range am.received() {
			if end, err := time.Parse(time.RFC3339, a["endsAt"].(string)); err == nil && !end.After(clk.now()) {
				resolved++
			}
		}
		return resolved == 2
	}, 10*time.Second, 20*time.Millisecond)
	resp, err = http.Get(api.URL + "/api/v1/incidents?state=resolved&cluster=eu-2")
	require.NoError(t, err)
	var body struct {
		Status string      `json:"status"`
		Data   []*Incident `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	resp.Body.Close()
	require.Len(t, body.Data, 2)
	for _, inc := range body.Data {
		if inc.ID == ids[0] {
			require.Equal(t, "alice", inc.AckedBy)
		}
	}
	resp, err = http.Get(api.URL + "/api/v1/incidents?state=bogus")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	stop()
}

// TestEngineLastStateWins: whatever the incident went through (opened, cleared, back,
// resolved), the last state Alertmanager holds is the last state of the incident.
func TestEngineLastStateWins(t *testing.T) {
	am := &recordingAM{}
	srv := httptest.NewServer(am)
	t.Cleanup(srv.Close)
	st, err := OpenStore(filepath.Join(t.TempDir(), "c.db"))
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	e, err := New(Options{Store: st, Rules: DefaultRules, Interval: 20 * time.Millisecond, ResolveAfter: 300 * time.Millisecond,
		ResendInterval: 100 * time.Millisecond, Alertmanagers: []string{srv.URL}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

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
	require.Eventually(t, func() bool {
		incs, err := st.Incidents(Filter{State: "active"})
		return err == nil && len(incs) == 0
	}, 5*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		last := map[string]map[string]any{}
		for _, p := range am.received() {
			last[p["labels"].(map[string]any)["incident_id"].(string)] = p
		}
		if len(last) == 0 {
			return false
		}
		for _, p := range last {
			end, err := time.Parse(time.RFC3339Nano, p["endsAt"].(string))
			if err != nil || end.After(time.Now()) {
				return false
			}
		}
		return true
	}, 5*time.Second, 20*time.Millisecond, "every incident's last state in Alertmanager is resolved")
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
// exactly what the store holds as active, with the same content.
func TestActiveListMatchesStore(t *testing.T) {
	am := &recordingAM{}
	srv := httptest.NewServer(am)
	t.Cleanup(srv.Close)
	clk := &clock{t: t0}
	path := filepath.Join(t.TempDir(), "correlate.db")
	e, stop := startEngine(t, path, srv.URL, clk)

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

	e, stop = startEngine(t, path, srv.URL, clk)
	defer stop()
	check()
	require.Len(t, e.activeIncidents(Filter{State: "active"}), 1)
}
