package rules

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/collector"
)

// fleet writes, every tick, each cluster's `broken` value and, while the cluster is sending,
// its last-ingest time, the way the collector does.
type fleet struct {
	mtx     sync.Mutex
	value   map[string]float64 // cluster -> broken; absent: no series written
	sending map[string]bool    // cluster -> last ingest advances
	last    map[string]time.Time
}

func (f *fleet) set(cluster string, value float64, present, sending bool) {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	if present {
		f.value[cluster] = value
	} else {
		delete(f.value, cluster)
	}
	f.sending[cluster] = sending
}

// writeEvery writes the fleet into db every interval until the test ends.
func (f *fleet) writeEvery(t *testing.T, db *tsdb.DB, every time.Duration) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				f.write(t, db, now)
			}
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })
}

func (f *fleet) write(t *testing.T, db *tsdb.DB, now time.Time) {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	app := db.Appender(context.Background())
	for c, v := range f.value {
		_, err := app.Append(0, labels.FromStrings("__name__", "broken", "cluster", c), now.UnixMilli(), v)
		require.NoError(t, err)
	}
	for c, sending := range f.sending {
		if sending {
			f.last[c] = now
		}
		_, err := app.Append(0, labels.FromStrings("__name__", collector.LastIngestMetric, "cluster", c), now.UnixMilli(), float64(f.last[c].UnixMilli())/1000)
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())
}

func alertOf(e *Evaluator, cluster string) *rules.Alert {
	for _, r := range e.Manager().AlertingRules() {
		for _, a := range r.ActiveAlerts() {
			if a.Labels.Get("cluster") == cluster {
				return a
			}
		}
	}
	return nil
}

// TestHoldAlertsWhoseDataVanished: a firing alert of a cluster that goes silent stays firing,
// marked stale, with its original active-since time, until its data returns; alerts of other
// clusters resolve as usual, whether their condition clears with data or their series goes
// away while the cluster keeps sending.
func TestHoldAlertsWhoseDataVanished(t *testing.T) {
	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	// A short lookback makes the data of a silent cluster vanish from queries within a second.
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: time.Second})

	f := &fleet{value: map[string]float64{}, sending: map[string]bool{}, last: map[string]time.Time{}}
	for _, c := range []string{"a", "b", "c", "d"} {
		f.set(c, 5, true, true)
	}
	f.writeEvery(t, db, 50*time.Millisecond)

	file := filepath.Join(t.TempDir(), "r.yml")
	require.NoError(t, os.WriteFile(file, []byte(`groups:
  - name: test
    rules:
      - alert: Broken
        expr: broken > 3
        annotations: {summary: "cluster {{ $labels.cluster }} is broken"}
`), 0o600))
	am := &fakeAM{}
	srv := httptest.NewServer(am)
	t.Cleanup(srv.Close)
	e, err := New(Options{QueryFunc: rules.EngineQueryFunc(engine, db), Appendable: db, Queryable: db, ResendDelay: 100 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, e.ApplyConfig(Config{
		Interval: 100 * time.Millisecond, Files: []string{file}, Alertmanagers: []string{srv.URL},
		Clusters: []string{"a", "b", "c", "d"}, SilentAfter: 2 * time.Second,
	}))
	go e.Run()
	t.Cleanup(e.Stop)

	firing := func(c string) bool {
		a := alertOf(e, c)
		return a != nil && a.State == rules.StateFiring
	}
	require.Eventually(t, func() bool { return firing("a") && firing("b") && firing("c") && firing("d") }, 20*time.Second, 50*time.Millisecond)
	since := alertOf(e, "a").ActiveAt

	f.set("a", 0, false, false) // a goes silent: nothing more arrives from it
	f.set("b", 1, true, true)   // b's condition clears, with data
	f.set("c", 0, false, true)  // c stops sending `broken` but keeps sending
	f.set("d", 0, false, false) // d goes silent too, and is then removed from the configuration

	// b resolves at once; c resolves once SilentAfter showed c is not silent.
	require.Eventually(t, func() bool { return !firing("b") }, 5*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool {
		a := alertOf(e, "c")
		return a.State == rules.StateFiring && a.Annotations.Get(StaleAnnotation) == "stale"
	}, 5*time.Second, 20*time.Millisecond, "c's series vanished less than SilentAfter ago: held until that tells")
	require.Contains(t, alertOf(e, "c").Annotations.Get(StaleReasonAnnotation), "vanished at")
	require.Eventually(t, func() bool { return !firing("c") }, 10*time.Second, 50*time.Millisecond)

	// a stays firing, stale, with the reason and its original active-since time, and
	// Alertmanager is told so.
	time.Sleep(time.Second)
	a := alertOf(e, "a")
	require.Equal(t, rules.StateFiring, a.State)
	require.Equal(t, since, a.ActiveAt)
	require.Equal(t, "stale", a.Annotations.Get(StaleAnnotation))
	require.Contains(t, a.Annotations.Get(StaleReasonAnnotation), "no data from cluster a since")
	require.Equal(t, "cluster a is broken", a.Annotations.Get("summary"))
	require.Eventually(t, func() bool {
		am.mtx.Lock()
		defer am.mtx.Unlock()
		for _, p := range am.alerts {
			if p["labels"].(map[string]any)["cluster"] == "a" && p["annotations"].(map[string]any)[StaleAnnotation] == "stale" {
				return true
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond)

	// d is no longer a cluster: its held alert is let go.
	require.True(t, firing("d"))
	require.NoError(t, e.ApplyConfig(Config{
		Interval: 100 * time.Millisecond, Files: []string{file}, Alertmanagers: []string{srv.URL},
		Clusters: []string{"a", "b", "c"}, SilentAfter: 2 * time.Second,
	}))
	require.Eventually(t, func() bool { return !firing("d") }, 5*time.Second, 50*time.Millisecond)
	require.True(t, firing("a"))

	// a's data returns: still the same alert, no longer stale.
	f.set("a", 5, true, true)
	require.Eventually(t, func() bool {
		a := alertOf(e, "a")
		return a.State == rules.StateFiring && a.Annotations.Get(StaleAnnotation) == ""
	}, 5*time.Second, 50*time.Millisecond)
	require.Equal(t, since, alertOf(e, "a").ActiveAt)
	require.Empty(t, e.hold.heldAlerts())
}

// TestHoldSurvivesRestart: an alert held for a silent cluster is still held, firing, stale,
// with its original active-since time, after fleetwatch restarts while the cluster is still
// silent (the state file remembers the series behind firing alerts); a `for` rule, so the
// alert is pending again until the rules manager restores its state.
func TestHoldSurvivesRestart(t *testing.T) {
	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: time.Second})
	f := &fleet{value: map[string]float64{}, sending: map[string]bool{}, last: map[string]time.Time{}}
	f.set("a", 5, true, true)
	f.set("b", 5, true, true)
	f.writeEvery(t, db, 50*time.Millisecond)

	dir := t.TempDir()
	file := filepath.Join(dir, "r.yml")
	require.NoError(t, os.WriteFile(file, []byte(`groups:
  - name: test
    rules:
      - alert: Broken
        expr: broken > 3
        for: 300ms
`), 0o600))
	state := filepath.Join(dir, "holds.json")
	start := func() *Evaluator {
		e, err := New(Options{QueryFunc: rules.EngineQueryFunc(engine, db), Appendable: db, Queryable: db, StateFile: state})
		require.NoError(t, err)
		require.NoError(t, e.ApplyConfig(Config{Interval: 100 * time.Millisecond, Files: []string{file}, Clusters: []string{"a", "b"}, SilentAfter: time.Second}))
		go e.Run()
		return e
	}
	e := start()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			e.Stop()
		}
	})
	require.Eventually(t, func() bool {
		a, b := alertOf(e, "a"), alertOf(e, "b")
		return a != nil && a.State == rules.StateFiring && b != nil && b.State == rules.StateFiring
	}, 20*time.Second, 50*time.Millisecond)
	since := alertOf(e, "a").ActiveAt

	f.set("a", 0, false, false) // a goes silent
	require.Eventually(t, func() bool {
		a := alertOf(e, "a")
		return a != nil && strings.Contains(a.Annotations.Get(StaleReasonAnnotation), "no data from cluster a")
	}, 10*time.Second, 50*time.Millisecond)
	e.Stop()
	stopped = true

	e = start()
	stopped = false
	// After the group's second evaluation the rules manager restores a's state; the hold kept
	// it active meanwhile, so it is firing again with its original active-since time (which
	// ALERTS_FOR_STATE keeps to the second).
	restored := time.Unix(since.Unix(), 0)
	require.Eventually(t, func() bool {
		a := alertOf(e, "a")
		return a != nil && a.State == rules.StateFiring && a.ActiveAt.Equal(restored) &&
			a.Annotations.Get(StaleAnnotation) == "stale"
	}, 10*time.Second, 50*time.Millisecond, "a's held alert did not survive the restart")
	require.Contains(t, alertOf(e, "a").Annotations.Get(StaleReasonAnnotation), "no data from cluster a")
	require.Equal(t, rules.StateFiring, alertOf(e, "b").State)
	require.Len(t, e.hold.heldAlerts(), 1)
}
