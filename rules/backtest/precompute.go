package backtest

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"

	"github.com/fleetwatch/fleetwatch/rules/lint"
)

// An instant query per rule and step reads every series a rule selects again at every step:
// a day at 15s steps decodes each series 5760 times. So, when the rules allow it, every rule's
// expression is evaluated ahead with one range query per window of steps (a range query is, by
// definition, the instant query at each of its steps, and reads each series once), and the
// rules' Eval at each step is answered from those results. What the recording rules record is
// written to the temporary TSDB ahead as well, with the stale markers Group.Eval would write,
// so the range queries of later rules read it.
//
// That order is the catch: a whole window of a rule is evaluated before the next rule, while a
// live evaluation goes step by step. The two agree only when no rule reads what a rule
// evaluated after it records, reads ALERTS, has a group limit, or uses @ start() / @ end()
// (which mean the range's ends in a range query and the step in a rule); precomputable says
// when they do not.

// window is how much of the range is evaluated ahead at a time; it bounds the memory of the
// range queries and of their results.
const window = time.Hour

// precomputable says whether the rules can be evaluated ahead, or why not.
func precomputable(files []*lint.RuleFile) (bool, string) {
	recordedLater := map[string]bool{} // names recorded by the rule being checked or a later one
	type ref struct {
		name  string
		reads []string
		any   bool // a selector without an exact name may read any recorded series
		at    bool // @ start() or @ end()
	}
	var all []ref
	for _, f := range files {
		for _, g := range f.Groups {
			if g.Limit > 0 {
				return false, fmt.Sprintf("group %q in %s has a limit", g.Name, f.Name)
			}
		}
		for _, r := range f.Rules {
			expr, err := parser.ParseExpr(r.Expr)
			if err != nil {
				return false, err.Error()
			}
			x := ref{name: r.Record, reads: lint.MetricNames(expr)}
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				switch n := n.(type) {
				case *parser.VectorSelector:
					x.at = x.at || n.StartOrEnd != 0
					named := n.Name != ""
					for _, m := range n.LabelMatchers {
						named = named || (m.Name == labels.MetricName && m.Type == labels.MatchEqual)
					}
					x.any = x.any || !named
				case *parser.SubqueryExpr:
					x.at = x.at || n.StartOrEnd != 0
				}
				return nil
			})
			if x.at {
				return false, fmt.Sprintf("rule %s in %s uses @ start() or @ end()", r.Name(), f.Name)
			}
			for _, n := range x.reads {
				if n == "ALERTS" || n == "ALERTS_FOR_STATE" {
					return false, fmt.Sprintf("rule %s in %s reads %s", r.Name(), f.Name, n)
				}
			}
			all = append(all, x)
		}
	}
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].name != "" {
			recordedLater[all[i].name] = true
		}
		if all[i].any && len(recordedLater) > 0 {
			return false, "a rule selects series without naming the metric, and a rule evaluated at or after it records series"
		}
		for _, n := range all[i].reads {
			if recordedLater[n] {
				return false, fmt.Sprintf("a rule reads %s, which it or a rule evaluated after it records", n)
			}
		}
	}
	return true, ""
}

// rangeCache holds the results of the rules' expressions for the steps of one window.
type rangeCache struct {
	engine    promql.QueryEngine
	queryable storage.Queryable
	rec       *recorded
	from      time.Time
	step      time.Duration
	// results by expression and evaluation time (ms).
	results map[string]map[int64]result
	// prev holds, per recording rule, the series of its last successful evaluation, for the
	// stale markers.
	prev map[*rules.RecordingRule]map[string]labels.Labels
}

type result struct {
	vec promql.Vector
	err error
}

func newRangeCache(engine promql.QueryEngine, q storage.Queryable, rec *recorded, from time.Time, step time.Duration) *rangeCache {
	return &rangeCache{
		engine: engine, queryable: q, rec: rec, from: from, step: step,
		results: map[string]map[int64]result{},
		prev:    map[*rules.RecordingRule]map[string]labels.Labels{},
	}
}

// queryFunc answers from the cache; what is not there (a query in an alert's label template)
// goes to fallback.
func (c *rangeCache) queryFunc(fallback rules.QueryFunc) rules.QueryFunc {
	return func(ctx context.Context, qs string, t time.Time) (promql.Vector, error) {
		if r, ok := c.results[qs][timestamp.FromTime(t)]; ok {
			// RecordingRule.Eval relabels the samples in place.
			return slices.Clone(r.vec), r.err
		}
		return fallback(ctx, qs, t)
	}
}

// fill evaluates every rule ahead for steps first to last (indexes from c.from).
func (c *rangeCache) fill(ctx context.Context, groups []*evalGroup, first, last int) {
	clear(c.results)
	for _, eg := range groups {
		var tss []time.Time
		offset := eg.g.QueryOffset()
		for i := first; i <= last; i++ {
			if i%eg.every == 0 {
				tss = append(tss, c.from.Add(time.Duration(i)*c.step-offset))
			}
		}
		if len(tss) == 0 {
			continue
		}
		for _, r := range eg.g.Rules() {
			qs := r.Query().String()
			res := c.evaluate(ctx, qs, tss, time.Duration(eg.every)*c.step)
			if c.results[qs] == nil {
				c.results[qs] = res
			} else {
				for t, v := range res {
					c.results[qs][t] = v
				}
			}
			if rr, ok := r.(*rules.RecordingRule); ok {
				c.record(ctx, rr, tss, res)
			}
		}
	}
}

// evaluate runs qs over tss (evenly spaced by step) as one range query. If the range query
// fails, some steps may still succeed, as they would live: it falls back to an instant query
// per step.
func (c *rangeCache) evaluate(ctx context.Context, qs string, tss []time.Time, step time.Duration) map[int64]result {
	out := make(map[int64]result, len(tss))
	q, err := c.engine.NewRangeQuery(ctx, c.queryable, nil, qs, tss[0], tss[len(tss)-1], step)
	if err == nil {
		res := q.Exec(ctx)
		if res.Err == nil {
			if m, ok := res.Value.(promql.Matrix); ok {
				for _, t := range tss {
					out[timestamp.FromTime(t)] = result{vec: promql.Vector{}}
				}
				for _, s := range m {
					for _, p := range s.Floats {
						r := out[p.T]
						r.vec = append(r.vec, promql.Sample{Metric: s.Metric, T: p.T, F: p.F})
						out[p.T] = r
					}
					for _, p := range s.Histograms {
						r := out[p.T]
						// Close returns the points to a pool.
						r.vec = append(r.vec, promql.Sample{Metric: s.Metric, T: p.T, H: p.H.Copy()})
						out[p.T] = r
					}
				}
				q.Close()
				return out
			}
			err = fmt.Errorf("range query returned %s, not a matrix", res.Value.Type())
		} else {
			err = res.Err
		}
		q.Close()
	}
	instant := rules.EngineQueryFunc(c.engine, c.queryable)
	for _, t := range tss {
		vec, err := instant(ctx, qs, t)
		out[timestamp.FromTime(t)] = result{vec: vec, err: err}
	}
	return out
}

// record writes what rr records at tss, as Group.Eval would: the samples relabelled by
// RecordingRule.Eval, nothing at a step where the rule fails, and a stale marker for each
// series that is gone since the rule's last successful step.
func (c *rangeCache) record(ctx context.Context, rr *rules.RecordingRule, tss []time.Time, res map[int64]result) {
	app := c.rec.Appender(ctx)
	prev := c.prev[rr]
	lb := labels.NewBuilder(labels.EmptyLabels())
	for _, t := range tss {
		ms := timestamp.FromTime(t)
		r := res[ms]
		if r.err != nil {
			continue
		}
		vec := make(promql.Vector, 0, len(r.vec))
		for _, s := range r.vec {
			lb.Reset(s.Metric)
			lb.Set(labels.MetricName, rr.Name())
			rr.Labels().Range(func(l labels.Label) { lb.Set(l.Name, l.Value) })
			s.Metric = lb.Labels()
			vec = append(vec, s)
		}
		if vec.ContainsSameLabelset() {
			continue
		}
		cur := make(map[string]labels.Labels, len(vec))
		for _, s := range vec {
			var err error
			if s.H != nil {
				_, err = app.AppendHistogram(0, s.Metric, ms, nil, s.H)
			} else {
				_, err = app.Append(0, s.Metric, ms, s.F)
			}
			if err == nil {
				cur[string(s.Metric.Bytes(nil))] = s.Metric
			}
		}
		for k, l := range prev {
			if _, ok := cur[k]; !ok {
				_, _ = app.Append(0, l, ms, math.Float64frombits(value.StaleNaN))
			}
		}
		prev = cur
	}
	c.prev[rr] = prev
	// A failed commit loses this window's output of the rule; later rules then see less, as
	// they would live when appending fails.
	_ = app.Commit()
}

// discard is the Appendable of Group.Eval when the rules are evaluated ahead: the recorded
// samples are already in the temporary TSDB.
type discard struct{ rec *recorded }

func (d discard) Appender(ctx context.Context) storage.Appender {
	return discardAppender{Appender: d.rec.db.Appender(ctx)}
}

// discardAppender drops samples; what else Group.Eval calls goes to an appender with nothing
// in it.
type discardAppender struct{ storage.Appender }

func (discardAppender) Append(storage.SeriesRef, labels.Labels, int64, float64) (storage.SeriesRef, error) {
	return 0, nil
}

func (discardAppender) AppendHistogram(storage.SeriesRef, labels.Labels, int64, *histogram.Histogram, *histogram.FloatHistogram) (storage.SeriesRef, error) {
	return 0, nil
}
