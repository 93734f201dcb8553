package rules

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

// The hold tests evaluate rule groups at timestamps they choose, exactly as the rules
// manager's group loop does (evalIteration: rules.DefaultEvalIterationFunc, then the hold's
// bookkeeping), on a TSDB they write the fleet into before each evaluation. Nothing runs in
// the background and nothing waits for a clock, so every evaluation's outcome is asserted
// exactly. The numbers are the production ones: a 15s interval, Prometheus's 5m lookback,
// silent_after 2m, a 1m resend delay.
const (
	evalEvery   = 15 * time.Second
	lookback    = 5 * time.Minute
	silentAfter = 2 * time.Minute
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fleet is what the clusters send: each cluster's `broken` value and whether it is sending at
// all (its last-ingest time advances), written the way the collector writes them.
type fleet struct {
	broken  map[string]float64 // cluster -> value; absent: no sample written
	stale   map[string]bool    // cluster -> write a staleness marker for `broken` next
	sending map[string]bool
	last    map[string]time.Time
}

func newFleet(clusters ...string) *fleet {
	f := &fleet{broken: map[string]float64{}, stale: map[string]bool{}, sending: map[string]bool{}, last: map[string]time.Time{}}
	for _, c := range clusters {
		f.broken[c], f.sending[c] = 5, true
	}
	return f
}

// clear: the cluster keeps sending, its `broken` series disappears (a staleness marker, as a
// member Prometheus sends when a series leaves its scrape).
func (f *fleet) clear(c string) { delete(f.broken, c); f.stale[c] = true }

// silence: nothing more arrives from the cluster.
func (f *fleet) silence(c string) { delete(f.broken, c); f.sending[c] = false }

// resume: the cluster sends again, with `broken` at v (absent when v is NaN).
func (f *fleet) resume(c string, v float64) {
	f.sending[c] = true
	if !math.IsNaN(v) {
		f.broken[c] = v
	}
}

func (f *fleet) write(t *testing.T, db *tsdb.DB, ts time.Time) {
	app := db.Appender(context.Background())
	for c, v := range f.broken {
		_, err := app.Append(0, labels.FromStrings("__name__", "broken", "cluster", c), ts.UnixMilli(), v)
		require.NoError(t, err)
	}
	for c := range f.stale {
		_, err := app.Append(0, labels.FromStrings("__name__", "broken", "cluster", c), ts.UnixMilli(), math.Float64frombits(value.StaleNaN))
		require.NoError(t, err)
		delete(f.stale, c)
	}
	for c, sending := range f.sending {
		if sending {
			f.last[c] = ts
		}
		_, err := app.Append(0, labels.FromStrings("__name__", collector.LastIngestMetric, "cluster", c), ts.UnixMilli(), float64(f.last[c].UnixMilli())/1000)
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())
}

type sent struct {
	at    time.Time
	alert rules.Alert
}

// harness is one fleetwatch process: an Evaluator whose groups the test evaluates.
type harness struct {
	t      *testing.T
	db     *tsdb.DB
	engine *promql.Engine
	fleet  *fleet
	e      *Evaluator
	groups []*rules.Group
	ts     time.Time
	evals  int
	sent   []sent // every alert handed on (what Alertmanager and correlation get), in order
}

func openDB(t *testing.T) *tsdb.DB {
	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	return db
}

func writeRules(t *testing.T, content string) string {
	file := filepath.Join(t.TempDir(), "r.yml")
	require.NoError(t, os.WriteFile(file, []byte(content), 0o600))
	return file
}

// start starts fleetwatch on db with the rule file, at ts, the way New, ApplyConfig and the
// rules manager would, without the manager's goroutines.
func start(t *testing.T, db *tsdb.DB, f *fleet, file string, c Config, stateFile string, ts time.Time) *harness {
	h := &harness{t: t, db: db, fleet: f, ts: ts,
		engine: promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: lookback})}
	e, err := New(Options{
		QueryFunc: rules.EngineQueryFunc(h.engine, db), Appendable: db, Queryable: db, StateFile: stateFile,
		Notify: func(_ context.Context, _ string, alerts ...*rules.Alert) {
			for _, a := range alerts {
				h.sent = append(h.sent, sent{at: h.ts, alert: *a})
			}
		},
	})
	require.NoError(t, err)
	t.Cleanup(e.Stop)
	h.e = e
	gs, errs := e.manager.LoadGroups(evalEvery, labels.EmptyLabels(), "", e.evalIteration, false, file)
	require.Empty(t, errs)
	for _, g := range gs {
		h.groups = append(h.groups, g)
	}
	slices.SortFunc(h.groups, func(a, b *rules.Group) int { return strings.Compare(a.Name(), b.Name()) })
	h.configure(c)
	return h
}

// holdConfig is the configuration of the clusters with rules.pack.silent_after at silentAfter.
func holdConfig(silentAfter time.Duration, clusters ...string) Config {
	c := Config{Rules: config.DefaultRules, Clusters: clusters}
	c.Rules.Pack.Thresholds.SilentAfter = model.Duration(silentAfter)
	return c
}

func (h *harness) configure(c Config) {
	var loaded []*rules.AlertingRule
	for _, g := range h.groups {
		loaded = append(loaded, g.AlertingRules()...)
	}
	h.e.configureHold(c, loaded)
}

// eval writes the fleet at the harness's time and evaluates every group there. After the
// second evaluation the groups restore their alerts' state from ALERTS_FOR_STATE, as the
// rules manager's group loop does after a start.
func (h *harness) eval() {
	h.fleet.write(h.t, h.db, h.ts)
	for _, g := range h.groups {
		h.e.evalIteration(context.Background(), g, h.ts)
	}
	if h.evals++; h.evals == 2 {
		for _, g := range h.groups {
			g.RestoreForState(h.ts)
		}
	}
}

// step moves one interval on and evaluates.
func (h *harness) step() {
	h.ts = h.ts.Add(evalEvery)
	h.eval()
}

// alert is the rule's alert of the cluster, resolved ones included; nil when there is none.
func (h *harness) alert(name, cluster string) *rules.Alert {
	for _, g := range h.groups {
		for _, r := range g.AlertingRules() {
			if r.Name() != name {
				continue
			}
			var found *rules.Alert
			r.ForEachActiveAlert(func(a *rules.Alert) {
				if a.Labels.Get("cluster") == cluster {
					found = a
				}
			})
			return found
		}
	}
	return nil
}

func (h *harness) firing(name, cluster string) bool {
	a := h.alert(name, cluster)
	return a != nil && a.State == rules.StateFiring
}

// sentNow are the alerts handed on at the current evaluation for the cluster.
func (h *harness) sentNow(cluster string) []rules.Alert {
	var out []rules.Alert
	for _, s := range h.sent {
		if s.at.Equal(h.ts) && s.alert.Labels.Get("cluster") == cluster {
			out = append(out, s.alert)
		}
	}
	return out
}

// rawHas says whether the rule's expression, evaluated without fleetwatch, still returns a
// series for the cluster: what Prometheus would decide on.
func (h *harness) rawHas(expr, cluster string) bool {
	v, err := rules.EngineQueryFunc(h.engine, h.db)(context.Background(), expr, h.ts)
	require.NoError(h.t, err)
	for _, s := range v {
		if s.Metric.Get("cluster") == cluster || cluster == "" {
			return true
		}
	}
	return false
}

const summary = `cluster {{ $labels.cluster }} is broken ({{ $value }})`

func ownAnnotations(cluster, value string) labels.Labels {
	return labels.FromStrings("summary", "cluster "+cluster+" is broken ("+value+")")
}

// TestHoldDecidesFromLastIngest: when the series behind a firing alert vanishes, fleetwatch
// decides at that very evaluation from the cluster's last-ingest time. A cluster that keeps
// sending cleared its condition: the alert resolves exactly when Prometheus would resolve it
// (keep_firing_for included), and nothing it sends ever carries the stale annotations. Only a
// cluster whose data stopped has its alert held. A result without a cluster label is never held.
func TestHoldDecidesFromLastIngest(t *testing.T) {
	for _, tc := range []struct {
		name      string
		expr      string
		extra     string // more rule fields
		cluster   string // the alert's cluster label ("" for none)
		vanish    func(f *fleet)
		held      bool
		keepFor   time.Duration
		wantValue string // $value in the alert's annotations
	}{
		{name: "condition cleared while the cluster keeps sending", expr: `broken > 3`, cluster: "a",
			vanish: func(f *fleet) { f.clear("a") }, wantValue: "5"},
		{name: "the same with keep_firing_for", expr: `broken > 3`, extra: "keep_firing_for: 1m", cluster: "a",
			vanish: func(f *fleet) { f.clear("a") }, keepFor: time.Minute, wantValue: "5"},
		{name: "series of a cluster that went silent", expr: `broken > 3`, cluster: "a",
			vanish: func(f *fleet) { f.silence("a") }, held: true, wantValue: "5"},
		{name: "a cluster whose last data ended the series: resolved, as the data says", expr: `broken > 3`, cluster: "a",
			vanish: func(f *fleet) { f.silence("a"); f.stale["a"] = true }, held: false, wantValue: "5"},
		{name: "no cluster label: never held, though every cluster went silent", expr: `max(broken) > 3`, cluster: "",
			vanish: func(f *fleet) { f.silence("a"); f.silence("b") }, wantValue: "5"},
		{name: "a rule that requires fresh data from its cluster: resolved when it goes silent", cluster: "a",
			expr:   `broken > 3 and on (cluster) time() - fleetwatch_cluster_last_ingest_timestamp_seconds <= 120`,
			vanish: func(f *fleet) { f.silence("a") }, wantValue: "5"},
		{name: "cluster label kept by the rule: held when every cluster went silent", expr: `max by (cluster) (broken) > 3`, cluster: "a",
			vanish: func(f *fleet) { f.silence("a"); f.silence("b") }, held: true, wantValue: "5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openDB(t)
			f := newFleet("a", "b")
			file := writeRules(t, "groups:\n  - name: test\n    rules:\n      - alert: Broken\n        expr: "+tc.expr+
				"\n        annotations: {summary: \""+summary+"\"}\n"+
				map[bool]string{true: "        " + tc.extra + "\n"}[tc.extra != ""])
			h := start(t, db, f, file, holdConfig(silentAfter, "a", "b"), "", t0)
			h.eval()
			require.True(t, h.firing("Broken", tc.cluster))
			since := h.alert("Broken", tc.cluster).ActiveAt
			for range 4 {
				h.step()
			}

			tc.vanish(f)
			// Until the series leaves the rule's result, it is Prometheus's alert as usual.
			for {
				h.step()
				if !h.rawHas(tc.expr, tc.cluster) {
					break
				}
				require.True(t, h.firing("Broken", tc.cluster))
				require.Empty(t, h.alert("Broken", tc.cluster).Annotations.Get(StaleAnnotation))
				require.Less(t, h.ts.Sub(t0), 10*time.Minute, "the series never vanished")
			}
			vanished := h.ts
			a := h.alert("Broken", tc.cluster)
			if !tc.held {
				// Resolved at this very evaluation (or kept firing for keep_firing_for), with
				// the rule's own annotations.
				require.Empty(t, h.e.hold.heldAlerts())
				for h.ts.Sub(vanished) < tc.keepFor {
					require.Equal(t, rules.StateFiring, a.State, "keep_firing_for")
					h.step()
				}
				require.Equal(t, rules.StateInactive, a.State, "resolved at the evaluation its series vanished at")
				require.Equal(t, vanished.Add(tc.keepFor), a.ResolvedAt)
				resolved := h.sentNow(tc.cluster)
				require.Len(t, resolved, 1, "the resolution is sent at once")
				require.Equal(t, vanished.Add(tc.keepFor), resolved[0].ResolvedAt)
				require.Equal(t, ownAnnotations(tc.cluster, tc.wantValue), resolved[0].Annotations)
			} else {
				// Held: firing, same active-since time, marked stale, and sent so.
				require.Equal(t, rules.StateFiring, a.State)
				require.Equal(t, since, a.ActiveAt)
				require.Equal(t, "stale", a.Annotations.Get(StaleAnnotation))
				require.Contains(t, a.Annotations.Get(StaleReasonAnnotation), "no data from cluster a since")
				require.Equal(t, "cluster a is broken (5)", a.Annotations.Get("summary"))
				for range 8 { // two minutes: past the resend delay
					h.step()
				}
				require.True(t, h.firing("Broken", tc.cluster))
				require.Equal(t, since, h.alert("Broken", tc.cluster).ActiveAt)
				require.NotEmpty(t, h.e.hold.heldAlerts())
			}
			// What was handed on: firing with the rule's own annotations until the hold, then
			// (only when held) stale.
			var own, stale int
			for _, s := range h.sent {
				if s.alert.Labels.Get("cluster") != tc.cluster {
					continue
				}
				if tc.held && !s.at.Before(vanished) {
					require.Equal(t, "stale", s.alert.Annotations.Get(StaleAnnotation), "sent at %s", s.at)
					require.True(t, s.alert.ResolvedAt.IsZero())
					stale++
					continue
				}
				require.Equal(t, ownAnnotations(tc.cluster, tc.wantValue), s.alert.Annotations, "sent at %s", s.at)
				own++
			}
			require.Greater(t, own, 1, "firing re-sends before the series vanished")
			if tc.held {
				require.Greater(t, stale, 1, "firing re-sends of the held alert")
			}
		})
	}
}

// TestJudgesFreshness: the rules the holder leaves to themselves are those reading a cluster's
// data freshness, however they name it.
func TestJudgesFreshness(t *testing.T) {
	for expr, want := range map[string]bool{
		`broken > 3`: false,
		`max by (cluster) (fleetwatch_cluster_api_up) == 0 and on (cluster) cluster:fleetwatch_cluster_ingest_age_seconds:max <= 120`: true,
		`cluster:fleetwatch_cluster_ingest_age_seconds:max > 120`:                                                                     true,
		`time() - fleetwatch_cluster_last_ingest_timestamp_seconds > 60`:                                                              true,
		`broken unless on (cluster) {__name__="fleetwatch_cluster_last_ingest_timestamp_seconds"} < 0`:                                true,
		`broken unless on (cluster) {__name__=~"fleetwatch_cluster_last_ingest_timestamp_seconds"} < 0`:                               false,
		`broken >`: false,
	} {
		require.Equal(t, want, judgesFreshness(expr), expr)
	}
}

// TestHoldLetsGo: a held alert is let go as soon as its cluster sends again, whether its
// series comes back (the same alert, firing on, no longer stale) or not (the condition is
// over: it resolves, and a keep_firing_for rule keeps firing with its own annotations only),
// and when its cluster is removed from the configuration.
func TestHoldLetsGo(t *testing.T) {
	db := openDB(t)
	f := newFleet("back", "cleared", "removed", "other")
	file := writeRules(t, `groups:
  - name: test
    rules:
      - alert: Broken
        expr: broken > 3
        keep_firing_for: 30s
        annotations: {summary: "`+summary+`"}
`)
	c := holdConfig(silentAfter, "back", "cleared", "removed", "other")
	h := start(t, db, f, file, c, "", t0)
	h.eval()
	since := h.alert("Broken", "back").ActiveAt
	for _, cl := range []string{"back", "cleared", "removed"} {
		f.silence(cl)
	}
	for h.rawHas("broken > 3", "back") {
		h.step()
	}
	h.step()
	for _, cl := range []string{"back", "cleared", "removed"} {
		require.Equal(t, "stale", h.alert("Broken", cl).Annotations.Get(StaleAnnotation), cl)
	}
	require.Len(t, h.e.hold.heldAlerts(), 3)
	require.Empty(t, h.alert("Broken", "other").Annotations.Get(StaleAnnotation))

	// "back" returns with its data, "cleared" returns without the series.
	f.resume("back", 5)
	f.resume("cleared", math.NaN())
	h.step()
	back := h.alert("Broken", "back")
	require.Equal(t, rules.StateFiring, back.State)
	require.Equal(t, since, back.ActiveAt)
	require.Equal(t, ownAnnotations("back", "5"), back.Annotations)
	cleared := h.alert("Broken", "cleared")
	require.Equal(t, rules.StateFiring, cleared.State, "keep_firing_for")
	require.Equal(t, ownAnnotations("cleared", "5"), cleared.Annotations, "no longer held: the rule's own annotations")
	resolvedAt := h.ts.Add(30 * time.Second)
	for range 6 {
		h.step()
		for _, s := range h.sentNow("cleared") {
			require.Equal(t, ownAnnotations("cleared", "5"), s.Annotations, "sent at %s", h.ts)
		}
	}
	require.Equal(t, rules.StateInactive, cleared.State)
	require.Equal(t, resolvedAt, cleared.ResolvedAt)
	require.Len(t, h.e.hold.heldAlerts(), 1, "removed is still held")

	// "removed" is no longer a cluster: its alert is let go at the next evaluation.
	c.Clusters = []string{"back", "cleared", "other"}
	h.configure(c)
	h.step()
	require.Empty(t, h.e.hold.heldAlerts())
	require.Equal(t, ownAnnotations("removed", "5"), h.alert("Broken", "removed").Annotations)
	require.True(t, h.firing("Broken", "back"))
	require.True(t, h.firing("Broken", "other"))
}

// TestHoldSurvivesRestart: an alert held for a silent cluster is still held, firing, stale,
// with its original active-since time, after fleetwatch restarts while the cluster is still
// silent (the state file remembers the series behind firing alerts); a `for` rule, so the
// alert is pending again until the rules manager restores its state after the group's second
// evaluation. An alert of a cluster that sent data meanwhile, without its series, is gone.
func TestHoldSurvivesRestart(t *testing.T) {
	db := openDB(t)
	f := newFleet("a", "b", "c")
	file := writeRules(t, `groups:
  - name: test
    rules:
      - alert: Broken
        expr: broken > 3
        for: 30s
`)
	state := filepath.Join(t.TempDir(), "holds.json")
	c := holdConfig(silentAfter, "a", "b", "c")
	h := start(t, db, f, file, c, state, t0)
	h.eval()
	for range 3 {
		h.step()
	}
	require.True(t, h.firing("Broken", "a"))
	since := h.alert("Broken", "a").ActiveAt
	f.silence("a")
	for h.rawHas("broken > 3", "a") {
		h.step()
	}
	require.Contains(t, h.alert("Broken", "a").Annotations.Get(StaleReasonAnnotation), "no data from cluster a")

	// fleetwatch is down for a minute; c's series goes away meanwhile, c keeps sending.
	f.clear("c")
	restartAt := h.ts.Add(time.Minute)
	h = start(t, db, f, file, c, state, restartAt)
	h.eval()
	require.Equal(t, rules.StatePending, h.alert("Broken", "a").State, "pending until the state is restored")
	require.Equal(t, "stale", h.alert("Broken", "a").Annotations.Get(StaleAnnotation))
	require.Nil(t, h.alert("Broken", "c"), "c's series is gone and c is sending: not held")
	h.step() // the second evaluation, then the restore
	h.step()
	a := h.alert("Broken", "a")
	require.Equal(t, rules.StateFiring, a.State)
	require.Equal(t, since.Truncate(time.Second), a.ActiveAt, "ALERTS_FOR_STATE keeps it to the second")
	require.Equal(t, "stale", a.Annotations.Get(StaleAnnotation))
	require.Equal(t, rules.StateFiring, h.alert("Broken", "b").State)
	require.Len(t, h.e.hold.heldAlerts(), 1)
}

// TestSaveStateFailureKeepsPreviousFile: the state file is replaced whole or not at all. When
// writing the new one fails at any step, the previous file is intact, no temporary file is
// left behind, the error says so, and the next save writes it.
func TestSaveStateFailureKeepsPreviousFile(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name   string
		break_ func(h *holder)
	}{
		{name: "fsync fails", break_: func(h *holder) { h.fsyncFile = func(*os.File) error { return boom } }},
		{name: "rename fails", break_: func(h *holder) { h.rename = func(string, string) error { return boom } }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "holds.json")
			h := newHolder(nil, slog.New(slog.DiscardHandler), nil)
			h.statePath = path
			setFiring(h, "r1", "a")
			require.NoError(t, h.saveState())
			before, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Contains(t, string(before), `"cluster":"a"`)

			setFiring(h, "r1", "a", "b")
			tc.break_(h)
			err = h.saveState()
			require.ErrorContains(t, err, "write alert hold state "+path)
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, before, after, "the previous state file is intact")
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Len(t, entries, 1, "no temporary file left: %v", entries)

			h.fsyncFile, h.rename = nil, nil
			require.NoError(t, h.saveState(), "the next save writes the file")
			after, err = os.ReadFile(path)
			require.NoError(t, err)
			require.Contains(t, string(after), `"cluster":"b"`)
		})
	}
}

// setFiring makes the holder believe rule has one firing alert per cluster.
func setFiring(h *holder, rule string, clusters ...string) {
	rh := &ruleHold{last: map[uint64]promql.Sample{}, alertOf: map[uint64]uint64{}, firing: map[uint64]bool{}}
	for _, c := range clusters {
		ls := labels.FromStrings("__name__", "broken", "cluster", c)
		k, ah := seriesHash(ls), alertHash(rule, labels.EmptyLabels(), ls)
		rh.last[k] = promql.Sample{Metric: ls, F: 5}
		rh.alertOf[k] = ah
		rh.firing[ah] = true
	}
	h.mtx.Lock()
	h.rules[ruleKey(rule, "broken > 3", labels.EmptyLabels())] = rh
	h.mtx.Unlock()
}
