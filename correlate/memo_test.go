package correlate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"

	"github.com/fleetwatch/fleetwatch/rules/pack"
	"github.com/stretchr/testify/require"
)

// TestEvaluateGroupsOnlyWhenSomethingChanged: an evaluation groups the alerts again only when
// something grouping reads changed (an alert taken in or ended, the topology, the rules, an
// incident changed through the API); resends that only move an alert's end later, and time
// alone, cost no grouping, and incidents come out as when every evaluation grouped.
func TestEvaluateGroupsOnlyWhenSomethingChanged(t *testing.T) {
	st, err := OpenStore(filepath.Join(t.TempDir(), "c.db"))
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	clk := &clock{t: t0}
	var notReady atomic.Bool // node n1 of eu-1, in the view's topology
	query := func(_ context.Context, q string, ts time.Time) (promql.Vector, error) {
		if q != qNotReady || !notReady.Load() {
			return nil, nil
		}
		return promql.Vector{{Metric: labels.FromStrings("cluster", "eu-1", "node", "n1"), T: ts.UnixMilli()}}, nil
	}
	e, err := New(Options{Store: st, Rules: DefaultRules, ResolveAfter: time.Minute, Now: clk.now, Query: query})
	require.NoError(t, err)
	ctx := context.Background()
	groupings := func() float64 { return testutil.ToFloat64(e.groupings) }
	active := func() []string {
		var out []string
		for _, inc := range e.Active() {
			out = append(out, inc.Key)
		}
		return out
	}

	a := alert(0, "alertname", "CertificateExpiring", "cluster", "eu-1", "severity", "warning")
	a.EndsAt = t0.Add(4 * time.Minute)
	require.NoError(t, e.Ingest(ctx, []Alert{a}))
	require.NoError(t, e.Evaluate(ctx))
	require.Equal(t, 1.0, groupings())
	key := active()
	require.Len(t, key, 1)

	// Nothing new: no grouping, the same incident.
	for range 3 {
		clk.add(5 * time.Second)
		require.NoError(t, e.Evaluate(ctx))
	}
	require.Equal(t, 1.0, groupings())
	require.Equal(t, key, active())

	// Resent with a later end (as a member Prometheus does every minute): no grouping.
	a.EndsAt = clk.now().Add(4 * time.Minute)
	require.NoError(t, e.Ingest(ctx, []Alert{a}))
	require.NoError(t, e.Evaluate(ctx))
	require.Equal(t, 1.0, groupings())

	// Resent with other annotations: grouped again.
	a.Annotations = map[string]string{"summary": "expires in 3 days"}
	require.NoError(t, e.Ingest(ctx, []Alert{a}))
	require.NoError(t, e.Evaluate(ctx))
	require.Equal(t, 2.0, groupings())

	// A new alert: grouped again, a second incident.
	b := alert(0, "alertname", "DiskFilling", "cluster", "eu-1", "severity", "warning")
	b.EndsAt = clk.now().Add(time.Minute)
	require.NoError(t, e.Ingest(ctx, []Alert{b}))
	require.NoError(t, e.Evaluate(ctx))
	require.Equal(t, 3.0, groupings())
	require.Len(t, active(), 2)

	// b is not resent and ends: the first evaluation past its end groups again and b's incident
	// starts clearing, which the next evaluations carry on without grouping until it resolves.
	clk.add(time.Minute + time.Second)
	require.NoError(t, e.Evaluate(ctx))
	require.Equal(t, 4.0, groupings())
	require.Len(t, active(), 2, "b's incident waits out ResolveAfter")
	clk.add(time.Minute)
	require.NoError(t, e.Evaluate(ctx))
	require.Equal(t, 4.0, groupings())
	require.Equal(t, key, active())

	// The topology changes: grouped again, once.
	notReady.Store(true)
	require.NoError(t, e.Evaluate(ctx))
	require.NoError(t, e.Evaluate(ctx))
	require.Equal(t, 5.0, groupings())

	// The rules change: grouped again.
	require.NoError(t, e.ApplySettings(Settings{ReplicaLabels: []string{"ha"}}))
	require.NoError(t, e.Evaluate(ctx))
	require.Equal(t, 6.0, groupings())
	require.Equal(t, key, active())

	// An incident resolved through the API opens again while its alert fires: its group is
	// planned again, without grouping again.
	_, err = e.Resolve(e.Active()[0].ID)
	require.NoError(t, err)
	require.Empty(t, active())
	require.NoError(t, e.Evaluate(ctx))
	require.Equal(t, 6.0, groupings())
	require.Equal(t, key, active())
}

// TestEvaluateSkipsLikeGroupingEveryTime: two engines take the same random stream of new,
// resent, changed and resolved alerts over the same clock; one groups from scratch at every
// evaluation (its grouping is dropped before each), the other regroups only what changed. Their active incidents
// hold the same alerts after every evaluation.
func TestEvaluateSkipsLikeGroupingEveryTime(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	clk := &clock{t: t0}
	open := func() *Engine {
		st, err := OpenStore(filepath.Join(t.TempDir(), "c.db"))
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		e, err := New(Options{Store: st, Rules: DefaultRules, ResolveAfter: 30 * time.Second, Now: clk.now})
		require.NoError(t, err)
		return e
	}
	always, skipping := open(), open()
	held := func(e *Engine) map[string][]uint64 {
		out := map[string][]uint64{}
		for _, inc := range e.ActiveWithAlerts() {
			for _, a := range inc.Alerts {
				out[inc.Key] = append(out[inc.Key], a.fp)
			}
		}
		return out
	}
	names := []string{"KubePodCrashLooping", "KubePodNotReady", "CPUThrottlingHigh", pack.AlertClusterNodesNotReady}
	var sent []Alert
	ctx := context.Background()
	for step := range 400 {
		var batch []Alert
		n := 0
		if rng.IntN(3) == 0 { // most evaluations see nothing new
			n = 1 + rng.IntN(5)
		}
		for range n {
			var a Alert
			switch r := rng.IntN(10); {
			case r < 3 || len(sent) == 0: // new
				a = alert(0, "alertname", names[rng.IntN(len(names))], "cluster", fmt.Sprintf("c%d", rng.IntN(4)),
					"namespace", "ns", "pod", fmt.Sprintf("p%d", rng.IntN(30)), "severity", "warning")
				a.StartsAt = clk.now()
				a.EndsAt = clk.now().Add(time.Duration(1+rng.IntN(4)) * time.Minute)
			case r < 8: // resent with a later end (or unchanged)
				a = sent[rng.IntN(len(sent))]
				a.EndsAt = clk.now().Add(time.Duration(1+rng.IntN(4)) * time.Minute)
			case r < 9: // changed annotations
				a = sent[rng.IntN(len(sent))]
				a.Annotations = map[string]string{"summary": fmt.Sprint(step)}
			default: // resolved
				a = sent[rng.IntN(len(sent))]
				a.EndsAt = clk.now()
			}
			batch = append(batch, a)
			sent = append(sent, a)
		}
		if len(batch) > 0 {
			require.NoError(t, always.Ingest(ctx, batch))
			require.NoError(t, skipping.Ingest(ctx, batch))
		}
		clk.add(time.Duration(rng.IntN(20)) * time.Second)
		always.corr = nil
		require.NoError(t, always.Evaluate(ctx))
		require.NoError(t, skipping.Evaluate(ctx))
		require.Equal(t, held(always), held(skipping), "step %d", step)
		requireGauges(t, skipping)
	}
	require.Less(t, testutil.ToFloat64(skipping.groupings), testutil.ToFloat64(always.groupings))
	t.Logf("groupings: %v every time, %v when something changed", testutil.ToFloat64(always.groupings), testutil.ToFloat64(skipping.groupings))
}

// TestEvaluateDeletesLongResolvedAlerts: an alert that ended more than ResolveAfter and an hour
// ago leaves the store and memory, also when evaluations find nothing to group again.
func TestEvaluateDeletesLongResolvedAlerts(t *testing.T) {
	st, err := OpenStore(filepath.Join(t.TempDir(), "c.db"))
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	clk := &clock{t: t0}
	e, err := New(Options{Store: st, Rules: DefaultRules, ResolveAfter: time.Minute, Now: clk.now})
	require.NoError(t, err)
	ctx := context.Background()
	a := alert(0, "alertname", "CertificateExpiring", "cluster", "eu-1")
	a.EndsAt = t0.Add(time.Second)
	require.NoError(t, e.Ingest(ctx, []Alert{a}))
	require.NoError(t, e.Evaluate(ctx))
	clk.add(2 * time.Minute)
	require.NoError(t, e.Evaluate(ctx))
	clk.add(time.Hour)
	require.NoError(t, e.Evaluate(ctx)) // nothing to group again: the sweep alone
	stored, err := st.Alerts()
	require.NoError(t, err)
	require.Empty(t, stored)
	require.Empty(t, e.alerts)
}
