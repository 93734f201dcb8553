// Package promqlengine is the PromQL engine fleetwatch's view and rule backtests run: the Thanos
// promql-engine for range queries, with Prometheus's engine for instant queries, for the range
// queries the Thanos engine does not implement and for those it is measured slower on (wide
// windows, bare selectors).
package promqlengine

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/thanos-io/promql-engine/engine"
)

// The engine's metrics (the view registers them).
const (
	MetricFallbacks   = "fleetwatch_query_engine_fallbacks_total"
	MetricWideWindows = "fleetwatch_query_engine_wide_windows_total"
	MetricSelectors   = "fleetwatch_query_engine_selectors_total"
)

// Engine runs a range query on the Thanos engine, or on Prometheus's engine when the Thanos
// engine does not implement something in it, when it has a wide window (WideWindow) or when it
// is a bare selector (Selector); an instant query on Prometheus's engine.
type Engine struct {
	Thanos *engine.Engine
	Prom   promql.QueryEngine
	// Fallbacks counts the range queries the Thanos engine does not implement, WideWindows those
	// given to Prometheus's engine for their windows, Selectors the bare selectors given to it.
	// Nil counts nothing.
	Fallbacks, WideWindows, Selectors prometheus.Counter
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

// NewInstantQuery implements promql.QueryEngine: an instant query runs on Prometheus's engine.
// The Thanos engine builds a tree of concurrent operators for every query, which an instant
// query, one step, does not earn back. On the bench (hack/bench, 10,000 series, three runs each
// way, fleetwatch's p50 over Prometheus's in the same run), the nine instant queries took
// 1.05-1.57 times Prometheus's on the Thanos engine (0.81-0.85 for the one that divides two
// aggregations), 0.82-1.16 on Prometheus's engine.
func (e *Engine) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	return e.Prom.NewInstantQuery(ctx, q, opts, qs, ts)
}

// NewRangeQuery implements promql.QueryEngine.
func (e *Engine) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, step time.Duration) (promql.Query, error) {
	if expr, err := parser.ParseExpr(qs); err == nil {
		switch {
		case selector(expr):
			inc(e.Selectors)
			return e.Prom.NewRangeQuery(ctx, q, opts, qs, start, end, step)
		case wideWindow(expr, step):
			inc(e.WideWindows)
			return e.Prom.NewRangeQuery(ctx, q, opts, qs, start, end, step)
		}
	}
	qry, err := e.Thanos.NewRangeQuery(ctx, q, opts, qs, start, end, step)
	if engine.IsUnimplemented(err) {
		inc(e.Fallbacks)
		return e.Prom.NewRangeQuery(ctx, q, opts, qs, start, end, step)
	}
	return qry, err
}

// WideWindowSteps is how many steps a range-vector window must span for a range query to go to
// Prometheus's engine. The Thanos engine evaluates a window of up to five steps with streaming
// buffers; a wider one goes through its generic ring buffer, which passes over every sample in
// the window about three times a step (it counts them and checks their types apart from the
// function), where Prometheus's engine passes once. On the bench (hack/bench, 10,000 series,
// step 15s, two runs each way; fleetwatch's p50 over Prometheus's in the same run):
// increase(...[15m]), 60 steps: 1.57-1.63 on the Thanos engine, 1.06-1.33 on Prometheus's;
// avg_over_time(...[10m]), 40 steps: 1.27-1.36 against 1.01-1.03; rate(...[5m]), 20 steps,
// summed: 0.78-0.83 against 0.99-1.07, the Thanos engine ahead.
const WideWindowSteps = 30

// WideWindow reports whether a range query at step has a range-vector selector whose window
// spans more than WideWindowSteps steps (selectors in subqueries run at the subquery's step and
// are not counted). A query that does not parse is not: the engine reports the error.
func WideWindow(qs string, step time.Duration) bool {
	expr, err := parser.ParseExpr(qs)
	return err == nil && wideWindow(expr, step)
}

func wideWindow(expr parser.Expr, step time.Duration) bool {
	if step <= 0 {
		return false
	}
	wide := false
	parser.Inspect(expr, func(n parser.Node, path []parser.Node) error {
		ms, ok := n.(*parser.MatrixSelector)
		if !ok || (ms.Range-1)/step+1 <= WideWindowSteps {
			return nil
		}
		for _, p := range path {
			if _, ok := p.(*parser.SubqueryExpr); ok {
				return nil
			}
		}
		wide = true
		return nil
	})
	return wide
}

// Selector reports whether a query is a bare vector selector (in parentheses or not, with an
// offset or @ or not): nothing to compute but the series' samples at each step. The Thanos
// engine has nothing to spread over its operators there and builds a step vector per step
// before it assembles the series; Prometheus's engine walks each series once. On
// BenchmarkRangeQuery (hack/bench's selector_filter, 500 of 10,000 series, 200 steps; six runs
// each) Prometheus's engine took 17% less time and a ninth of the memory; on hack/bench,
// fleetwatch's p50 over Prometheus's was 1.20 on the Thanos engine, 0.97 on Prometheus's. A
// query that does not parse is not one: the engine reports the error.
func Selector(qs string) bool {
	expr, err := parser.ParseExpr(qs)
	return err == nil && selector(expr)
}

func selector(expr parser.Expr) bool {
	for {
		p, ok := expr.(*parser.ParenExpr)
		if !ok {
			break
		}
		expr = p.Expr
	}
	_, ok := expr.(*parser.VectorSelector)
	return ok
}

// Ensure Engine stands wherever Prometheus expects an engine.
var _ promql.QueryEngine = (*Engine)(nil)
