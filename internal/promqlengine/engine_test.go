package promqlengine

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
	"github.com/thanos-io/promql-engine/engine"
)

func TestWideWindow(t *testing.T) {
	for _, c := range []struct {
		q    string
		step time.Duration
		want bool
	}{
		{`increase(m[15m])`, 15 * time.Second, true},      // 60 steps
		{`avg_over_time(m[10m])`, 15 * time.Second, true}, // 40 steps
		{`rate(m[5m])`, 15 * time.Second, false},          // 20 steps
		{`rate(m[5m])`, 5 * time.Second, true},            // 60 steps
		{`increase(m[15m])`, time.Minute, false},          // 15 steps
		{`increase(m[7m30s])`, 15 * time.Second, false},   // exactly 30 steps
		{`increase(m[7m31s])`, 15 * time.Second, true},
		{`sum(rate(a[1m])) / sum(rate(b[1h]))`, time.Minute, true},
		{`max_over_time(rate(m[1h])[10m:1m])`, 15 * time.Second, false}, // in a subquery: the subquery's step
		{`increase(m[15m])`, 0, false},                                  // instant
		{`increase(m[15m]`, 15 * time.Second, false},                    // does not parse: the engine says so
	} {
		require.Equal(t, c.want, WideWindow(c.q, c.step), "%s at step %s", c.q, c.step)
	}
}

func TestSelector(t *testing.T) {
	for q, want := range map[string]bool{
		`m`:                             true,
		`m{job="api", instance=~"a|b"}`: true,
		`(m)`:                           true,
		`((m offset 5m))`:               true,
		`m @ 100`:                       true,
		`{__name__=~"m.*"}`:             true,
		`m[5m]`:                         false, // a range query of it is an error the engine reports
		`-m`:                            false,
		`m > 1`:                         false,
		`sum(m)`:                        false,
		`rate(m[5m])`:                   false,
		`m{`:                            false, // does not parse
	} {
		require.Equal(t, want, Selector(q), q)
	}
}

// TestEnginesAgreeOnSelectors: the bare selectors Engine sends to Prometheus's engine answer
// what the Thanos engine would have answered: floats with gaps, resets and a stale marker, and
// native histograms, at steps finer and coarser than the samples.
func TestEnginesAgreeOnSelectors(t *testing.T) {
	st, prom, thanos := engines(t)
	exprs := []string{
		`requests_total`, `requests_total{job="api"}`, `(memory_bytes)`, `memory_bytes offset 10m`,
		`requests_total @ 3000`, `latency_seconds`, `{__name__=~"requests_total|memory_bytes", instance!="b"}`,
	}
	start, end := time.Unix(0, 0), time.Unix(0, 0).Add(2*time.Hour)
	for _, step := range []time.Duration{10 * time.Second, 15 * time.Second, time.Minute} {
		for _, q := range exprs {
			require.True(t, Selector(q), q)
			want := run(t, prom, st, q, start, end, step)
			got := run(t, thanos, st, q, start, end, step)
			requireSameMatrix(t, want, got, "%s step %s", q, step)
		}
	}
}

// The data the engines are compared on: counters with resets, gaps and a stale marker, a gauge,
// and a native-histogram counter, one sample every 15s for two hours.
const load = `
load 15s
  requests_total{job="api", instance="a"} 0+10x200 0+7x100 stale 5+5x150
  requests_total{job="api", instance="b"} 100+3x300 _x20 0+4x160
  requests_total{job="web", instance="c"} 1+1x50 1+2x200 0+1x229
  memory_bytes{job="api", instance="a"} 1000+17x100 3000-11x200 500+3x179
  memory_bytes{job="web", instance="c"} 0+1x479
  latency_seconds{job="api"} {{schema:0 sum:1 count:2 buckets:[1 1]}}+{{schema:0 sum:3 count:4 buckets:[2 2]}}x479
`

// TestEnginesAgreeOnWideWindows: the queries WideWindow sends to Prometheus's engine answer
// what the Thanos engine would have answered.
func TestEnginesAgreeOnWideWindows(t *testing.T) {
	st, prom, thanos := engines(t)
	exprs := []string{
		`increase(requests_total[%s])`,
		`rate(requests_total[%s])`,
		`sum by (job) (increase(requests_total[%s])) > 0`,
		`delta(memory_bytes[%s])`,
		`avg_over_time(memory_bytes[%s])`,
		`max_over_time(memory_bytes[%s])`,
		`count_over_time(requests_total[%s])`,
		`resets(requests_total[%s])`,
		`histogram_quantile(0.9, rate(latency_seconds[%s]))`,
	}
	start, end := time.Unix(0, 0), time.Unix(0, 0).Add(2*time.Hour)
	checked := 0
	for _, window := range []string{"10m", "15m", "1h"} {
		for _, step := range []time.Duration{10 * time.Second, 15 * time.Second} {
			for _, e := range exprs {
				q := fmt.Sprintf(e, window)
				if !WideWindow(q, step) {
					continue
				}
				checked++
				want := run(t, prom, st, q, start, end, step)
				got := run(t, thanos, st, q, start, end, step)
				requireSameMatrix(t, want, got, "%s step %s", q, step)
			}
		}
	}
	require.Equal(t, 3*2*len(exprs), checked, "every query of the grid is a wide one")
}

// engines returns the storage of load and both engines, as fleetwatch configures them.
func engines(t *testing.T) (storage.Storage, promql.QueryEngine, promql.QueryEngine) {
	t.Helper()
	opts := promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute, EnableAtModifier: true, EnableNegativeOffset: true}
	return promqltest.LoadedStorage(t, load), promql.NewEngine(opts), engine.New(engine.Opts{EngineOpts: opts})
}

func run(t *testing.T, e promql.QueryEngine, st storage.Queryable, q string, start, end time.Time, step time.Duration) promql.Matrix {
	t.Helper()
	qry, err := e.NewRangeQuery(context.Background(), st, nil, q, start, end, step)
	require.NoError(t, err, q)
	defer qry.Close()
	res := qry.Exec(context.Background())
	require.NoError(t, res.Err, q)
	m, err := res.Matrix()
	require.NoError(t, err, q)
	return m
}

func requireSameMatrix(t *testing.T, want, got promql.Matrix, msg string, args ...any) {
	t.Helper()
	what := fmt.Sprintf(msg, args...)
	byLabels := func(m promql.Matrix) map[string]promql.Series {
		out := map[string]promql.Series{}
		for _, s := range m {
			out[s.Metric.String()] = s
		}
		return out
	}
	w, g := byLabels(want), byLabels(got)
	require.Equal(t, len(w), len(g), "%s: series", what)
	require.NotEmpty(t, w, "%s: no result to compare", what)
	for k, ws := range w {
		gs, ok := g[k]
		require.True(t, ok, "%s: %s missing", what, k)
		require.Equal(t, len(ws.Floats), len(gs.Floats), "%s: %s float points", what, k)
		for i := range ws.Floats {
			require.Equal(t, ws.Floats[i].T, gs.Floats[i].T, "%s: %s", what, k)
			requireClose(t, ws.Floats[i].F, gs.Floats[i].F, "%s: %s at %d", what, k, ws.Floats[i].T)
		}
		require.Equal(t, len(ws.Histograms), len(gs.Histograms), "%s: %s histogram points", what, k)
		for i := range ws.Histograms {
			require.Equal(t, ws.Histograms[i].T, gs.Histograms[i].T, "%s: %s", what, k)
			require.True(t, ws.Histograms[i].H.Equals(gs.Histograms[i].H), "%s: %s at %d: %v != %v", what, k, ws.Histograms[i].T, ws.Histograms[i].H, gs.Histograms[i].H)
		}
	}
}

// requireClose allows the last bits summation order changes.
func requireClose(t *testing.T, want, got float64, msg string, args ...any) {
	t.Helper()
	if math.IsNaN(want) && math.IsNaN(got) || want == got {
		return
	}
	require.InEpsilon(t, want, got, 1e-9, append([]any{msg}, args...)...)
}

// TestEnginesAgreeOnInstantQueries: the instant queries Engine sends to Prometheus's engine
// answer what the Thanos engine would have answered.
func TestEnginesAgreeOnInstantQueries(t *testing.T) {
	st, prom, thanos := engines(t)
	exprs := []string{
		`requests_total`, `sum by (job) (requests_total)`, `topk(2, memory_bytes)`, `count by (job) (memory_bytes > 100)`,
		`rate(requests_total[5m])`, `sum by (job) (increase(requests_total[15m])) > 0`, `avg_over_time(memory_bytes[10m])`,
		`sum(rate(requests_total[5m])) / sum(rate(requests_total[5m] offset 10m))`, `resets(requests_total[1h])`,
		`histogram_quantile(0.9, rate(latency_seconds[5m]))`, `max_over_time(rate(requests_total[5m])[30m:1m])`,
	}
	for _, at := range []time.Duration{25 * time.Minute, 55 * time.Minute, 83 * time.Minute, 119 * time.Minute} {
		for _, q := range exprs {
			ts := time.Unix(0, 0).Add(at)
			want := runInstant(t, prom, st, q, ts)
			got := runInstant(t, thanos, st, q, ts)
			requireSameMatrix(t, vectorMatrix(want), vectorMatrix(got), "%s at %s", q, at)
		}
	}
}

func runInstant(t *testing.T, e promql.QueryEngine, st storage.Queryable, q string, ts time.Time) promql.Vector {
	t.Helper()
	qry, err := e.NewInstantQuery(context.Background(), st, nil, q, ts)
	require.NoError(t, err, q)
	defer qry.Close()
	res := qry.Exec(context.Background())
	require.NoError(t, res.Err, q)
	v, err := res.Vector()
	require.NoError(t, err, q)
	return v
}

// vectorMatrix is a vector as a matrix of one point a series, so that it compares alike.
func vectorMatrix(v promql.Vector) promql.Matrix {
	m := make(promql.Matrix, 0, len(v))
	for _, s := range v {
		ser := promql.Series{Metric: s.Metric}
		if s.H != nil {
			ser.Histograms = []promql.HPoint{{T: s.T, H: s.H.Copy()}}
		} else {
			ser.Floats = []promql.FPoint{{T: s.T, F: s.F}}
		}
		m = append(m, ser)
	}
	return m
}

// TestEngineRoutes: instant queries, wide range queries and bare selectors go to Prometheus's
// engine, the other range queries to the Thanos engine unless it does not implement them.
func TestEngineRoutes(t *testing.T) {
	st := promqltest.LoadedStorage(t, load)
	opts := promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute}
	fallbacks, wide := prometheus.NewCounter(prometheus.CounterOpts{Name: "f"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "w"})
	selectors := prometheus.NewCounter(prometheus.CounterOpts{Name: "s"})
	e := &Engine{Thanos: engine.New(engine.Opts{EngineOpts: opts}), Prom: promql.NewEngine(opts), Fallbacks: fallbacks, WideWindows: wide, Selectors: selectors}
	start, end := time.Unix(0, 0), time.Unix(3600, 0)
	run(t, e, st, `rate(requests_total[5m])`, start, end, 15*time.Second)
	require.Equal(t, [2]float64{0, 0}, [2]float64{testutil.ToFloat64(fallbacks), testutil.ToFloat64(wide)})
	run(t, e, st, `increase(requests_total[15m])`, start, end, 15*time.Second)
	require.Equal(t, [2]float64{0, 1}, [2]float64{testutil.ToFloat64(fallbacks), testutil.ToFloat64(wide)})
	// The Thanos engine does not implement quantile_over_time with an expression as its quantile.
	run(t, e, st, `quantile_over_time(scalar(vector(0.5)), memory_bytes[5m])`, start, end, 15*time.Second)
	require.Equal(t, [2]float64{1, 1}, [2]float64{testutil.ToFloat64(fallbacks), testutil.ToFloat64(wide)})

	// Prometheus's queries have a statement; the Thanos engine's have none.
	qry, err := e.NewInstantQuery(context.Background(), st, nil, `rate(requests_total[5m])`, end)
	require.NoError(t, err)
	defer qry.Close()
	require.NotNil(t, qry.Statement(), "an instant query runs on Prometheus's engine")
	qry, err = e.NewRangeQuery(context.Background(), st, nil, `rate(requests_total[5m])`, start, end, 15*time.Second)
	require.NoError(t, err)
	defer qry.Close()
	require.Nil(t, qry.Statement(), "a range query with a narrow window runs on the Thanos engine")
	qry, err = e.NewRangeQuery(context.Background(), st, nil, `(requests_total{job="api"})`, start, end, 15*time.Second)
	require.NoError(t, err)
	defer qry.Close()
	require.NotNil(t, qry.Statement(), "a bare selector runs on Prometheus's engine")
	require.Equal(t, [3]float64{1, 1, 1}, [3]float64{testutil.ToFloat64(fallbacks), testutil.ToFloat64(wide), testutil.ToFloat64(selectors)})
}
