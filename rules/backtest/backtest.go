package backtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
	thanosengine "github.com/thanos-io/promql-engine/engine"

	"github.com/fleetwatch/fleetwatch/internal/promqlengine"
	"github.com/fleetwatch/fleetwatch/rules/lint"
)

// ClusterLabel is the label the report splits alerts by.
const ClusterLabel = lint.ClusterLabel

// Defaults for the query engine, the same as the view's.
const (
	DefaultLookbackDelta = 5 * time.Minute
	DefaultQueryTimeout  = 2 * time.Minute
	DefaultMaxSamples    = 50_000_000
)

// Query engines, as the view's query.engine.
const (
	EngineThanos     = "thanos"
	EnginePrometheus = "prometheus"
)

// RuleFile is a rule file to replay.
type RuleFile struct {
	// Name is used in messages: a path, or e.g. "pack/nodes.yml".
	Name    string
	Content []byte
}

// Options configure a replay.
type Options struct {
	// Dir is the TSDB directory (fleetwatch's --storage.tsdb.path). Required.
	Dir string
	// SandboxDirRoot is where the read-only TSDB puts the head chunks it hard-links and may
	// write while replaying the WAL; it must be on Dir's filesystem. Empty means Dir.
	SandboxDirRoot string
	// Files are the rule files to replay; at least one.
	Files []RuleFile
	// From and To bound the replay; rules are evaluated at From, From+Interval, ... up to To.
	From, To time.Time
	// Interval is the step. A group whose own interval is longer is evaluated only every
	// round(group interval / Interval) steps, as often as it would be live. Required.
	Interval time.Duration
	// LookbackDelta, QueryTimeout and MaxSamples configure the query engine; 0 means the
	// defaults above.
	LookbackDelta time.Duration
	QueryTimeout  time.Duration
	MaxSamples    int
	// Engine is the query engine, as the view's query.engine: EngineThanos (the Thanos
	// engine, with Prometheus's as internal/promqlengine chooses) or EnginePrometheus, the default.
	Engine string
	// Stepwise evaluates every rule with an instant query at every step, as the rules manager
	// does, instead of ahead with range queries (see precompute.go). It gives the same report,
	// more slowly; the rules are evaluated stepwise anyway when they cannot be evaluated ahead.
	Stepwise bool
	// Progress, if set, is called after every step with the steps done, the total and the
	// step's time.
	Progress func(done, total int, ts time.Time)
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Report is what a replay found.
type Report struct {
	From, To time.Time
	Interval time.Duration
	// Steps is the number of evaluation times; Groups and Rules what was evaluated.
	Steps, Groups, Rules int
	// Clusters are the values of the cluster label stored in the range.
	Clusters []string
	// RecordedSamples counts the samples the recording rules recorded.
	RecordedSamples int64
	// NoHistory says the TSDB holds no sample between From and To: a wrong directory or range.
	NoHistory bool
	Elapsed   time.Duration
	// Stepwise says the rules were evaluated by an instant query at every step, and
	// StepwiseReason why, when it was not asked for.
	Stepwise       bool
	StepwiseReason string
	// Alerts has one entry per alert rule and cluster with alerts, in the order of the rule
	// files, clusters sorted; an alert rule that was never even pending has one entry with an
	// empty Cluster.
	Alerts []AlertStats
	// Failures lists the rules whose evaluation failed at least once.
	Failures []RuleFailure
}

// AlertStats sums up the alerts of one alert rule in one cluster.
type AlertStats struct {
	Alert, Group, File string
	Cluster            string
	// Fired counts the alerts that went from pending to firing.
	Fired int
	// Firing is the time they spent firing, added up; Longest the longest of them. An alert
	// still firing at the end of the range counts up to the end.
	Firing, Longest time.Duration
	// PendingOnly counts the alerts that went pending and were resolved without firing.
	PendingOnly int
	// ActiveAtEnd counts the alerts still pending or firing at the end of the range.
	ActiveAtEnd int
	Episodes    []Episode
}

// Episode is one alert from pending to resolved.
type Episode struct {
	Labels labels.Labels
	// ActiveAt is when it went pending, FiredAt when it fired (zero if it never did) and
	// ResolvedAt when it was resolved (zero if it was still active at the end of the range).
	ActiveAt, FiredAt, ResolvedAt time.Time
}

// RuleFailure is a rule whose evaluation failed.
type RuleFailure struct {
	Rule        string `json:"rule"`
	Group       string `json:"group"`
	File        string `json:"file"`
	Failed      int    `json:"failed"`
	Evaluations int    `json:"evaluations"`
	LastError   string `json:"last_error"`
}

// evalGroup is a rule group being replayed.
type evalGroup struct {
	g     *rules.Group
	file  string
	every int
	// Per rule of the group: failure counts, and the alert tracker of alerting rules.
	evals, failed []int
	lastErr       []error
	alerts        []*tracker
}

// Run replays the rule files over the stored history.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	if err := o.validate(); err != nil {
		return nil, err
	}
	logger := o.Logger.With("component", "backtest")
	// The TSDBs log every WAL replay and head start at info level: noise for a command that
	// opens two of them. Their warnings and errors still show.
	tsdbLogger := logger
	if !logger.Enabled(ctx, slog.LevelDebug) {
		tsdbLogger = slog.New(minLevel{Handler: logger.Handler(), level: slog.LevelWarn})
	}

	var files []*lint.RuleFile
	hidden := map[string]bool{"ALERTS": true, "ALERTS_FOR_STATE": true}
	reach := time.Duration(0)
	for _, f := range o.Files {
		rf, err := lint.Parse(f.Name, f.Content)
		if err != nil {
			return nil, err
		}
		files = append(files, rf)
		for _, r := range rf.Rules {
			if r.Record != "" {
				hidden[r.Record] = true
			}
			expr, err := parser.ParseExpr(r.Expr)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: rule %s: %w", f.Name, r.Line, r.Name(), err)
			}
			reach = max(reach, lookback(expr))
		}
	}

	// The history is read from as far back as the first evaluation's queries reach.
	mint := int64(math.MinInt64)
	if reach < math.MaxInt64/2 {
		mint = timestamp.FromTime(o.From.Add(-o.LookbackDelta - reach - o.Interval))
	}
	hist, err := openHistory(o.Dir, o.SandboxDirRoot, mint, timestamp.FromTime(o.To), hidden, tsdbLogger)
	if err != nil {
		return nil, err
	}
	defer hist.Close()
	rec, err := openRecorded(tsdbLogger)
	if err != nil {
		return nil, err
	}
	defer rec.Close()

	queryable := storage.QueryableFunc(func(mint, maxt int64) (storage.Querier, error) {
		hq, _ := hist.Querier(mint, maxt)
		rq, err := rec.db.Querier(mint, maxt)
		if err != nil {
			return nil, err
		}
		return storage.NewMergeQuerier([]storage.Querier{hq, rq}, nil, storage.ChainedSeriesMerge), nil
	})
	eopts := promql.EngineOpts{
		Logger:               logger.With("subcomponent", "engine"),
		MaxSamples:           o.MaxSamples,
		Timeout:              o.QueryTimeout,
		LookbackDelta:        o.LookbackDelta,
		EnableAtModifier:     true,
		EnableNegativeOffset: true,
		// As the view: a subquery without a step uses 1m.
		NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() },
	}
	var engine promql.QueryEngine = promql.NewEngine(eopts)
	if o.Engine == EngineThanos {
		engine = &promqlengine.Engine{Thanos: thanosengine.New(thanosengine.Opts{EngineOpts: eopts}), Prom: engine}
	}
	stepwise, why := o.Stepwise, ""
	if !stepwise {
		ok, reason := precomputable(files)
		stepwise, why = !ok, reason
	}
	instant := rules.EngineQueryFunc(engine, queryable)
	mopts := &rules.ManagerOptions{
		NameValidationScheme: model.UTF8Validation,
		QueryFunc:            instant,
		NotifyFunc:           func(context.Context, string, ...*rules.Alert) {},
		Context:              ctx,
		Appendable:           rec,
		Queryable:            queryable,
		// Every failed evaluation would log a warning; they are counted in the report instead.
		Logger:  slog.New(slog.DiscardHandler),
		Metrics: rules.NewGroupMetrics(nil),
	}
	var cache *rangeCache
	if !stepwise {
		cache = newRangeCache(engine, queryable, rec, o.From, o.Interval)
		mopts.QueryFunc = cache.queryFunc(instant)
		mopts.Appendable = discard{rec}
	} else if why != "" {
		logger.Info("rules are evaluated step by step", "reason", why)
	}
	groups, nrules := buildGroups(files, o.Interval, mopts)

	steps := int(o.To.Sub(o.From)/o.Interval) + 1
	perWindow := max(1, int(window/o.Interval))
	for i := 0; i < steps; i++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("backtest interrupted at %s: %w", o.From.Add(time.Duration(i)*o.Interval).UTC().Format(time.RFC3339), err)
		}
		if cache != nil && i%perWindow == 0 {
			cache.fill(ctx, groups, i, min(i+perWindow, steps)-1)
		}
		ts := o.From.Add(time.Duration(i) * o.Interval)
		for _, eg := range groups {
			if i%eg.every != 0 {
				continue
			}
			eg.g.Eval(ctx, ts)
			for ri, r := range eg.g.Rules() {
				eg.evals[ri]++
				if err := r.LastError(); err != nil {
					eg.failed[ri]++
					eg.lastErr[ri] = err
				}
				if t := eg.alerts[ri]; t != nil {
					t.observe(r.(*rules.AlertingRule), ts)
				}
			}
		}
		if o.Progress != nil {
			o.Progress(i+1, steps, ts)
		}
	}

	rep := &Report{
		From: o.From, To: o.From.Add(time.Duration(steps-1) * o.Interval), Interval: o.Interval,
		Steps: steps, Groups: len(groups), Rules: nrules,
		RecordedSamples: rec.samples.Load(),
		Stepwise:        stepwise, StepwiseReason: why,
	}
	hq, _ := hist.Querier(timestamp.FromTime(o.From), timestamp.FromTime(o.To))
	if vals, _, err := hq.LabelValues(ctx, ClusterLabel, nil); err == nil {
		rep.Clusters = slices.Clone(vals)
	}
	rep.NoHistory = !hist.hasSamples(ctx, timestamp.FromTime(o.From), timestamp.FromTime(o.To))
	for _, eg := range groups {
		for ri, r := range eg.g.Rules() {
			if eg.failed[ri] > 0 {
				rep.Failures = append(rep.Failures, RuleFailure{
					Rule: r.Name(), Group: eg.g.Name(), File: eg.file,
					Failed: eg.failed[ri], Evaluations: eg.evals[ri], LastError: eg.lastErr[ri].Error(),
				})
			}
			if t := eg.alerts[ri]; t != nil {
				rep.Alerts = append(rep.Alerts, t.stats(r.Name(), eg.g.Name(), eg.file, rep.To)...)
			}
		}
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

func (o *Options) validate() error {
	switch {
	case o.Dir == "":
		return errors.New("backtest: Dir (the TSDB directory) is required")
	case len(o.Files) == 0:
		return errors.New("backtest: no rule files to replay")
	case o.Interval <= 0 || o.Interval%time.Millisecond != 0:
		return fmt.Errorf("backtest: the interval must be a positive number of milliseconds, got %s", o.Interval)
	case o.Engine != "" && o.Engine != EngineThanos && o.Engine != EnginePrometheus:
		return fmt.Errorf("backtest: unknown query engine %q", o.Engine)
	case o.From.IsZero() || o.To.IsZero():
		return errors.New("backtest: both the start and the end of the range are required")
	case o.To.Before(o.From):
		return fmt.Errorf("backtest: the end of the range (%s) is before its start (%s)", o.To.UTC().Format(time.RFC3339), o.From.UTC().Format(time.RFC3339))
	}
	// Samples and evaluation times are milliseconds.
	o.From, o.To = o.From.Truncate(time.Millisecond), o.To.Truncate(time.Millisecond)
	if o.LookbackDelta <= 0 {
		o.LookbackDelta = DefaultLookbackDelta
	}
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = DefaultQueryTimeout
	}
	if o.MaxSamples <= 0 {
		o.MaxSamples = DefaultMaxSamples
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// buildGroups builds the rule groups as the rules manager's LoadGroups does, with two changes
// for a replay: alerting rules start as restored (there is no earlier state to restore, and
// only restored rules write ALERTS, which a rule may read) and carry no annotations, whose
// templates would be expanded for every active alert at every step for nothing.
func buildGroups(files []*lint.RuleFile, step time.Duration, mopts *rules.ManagerOptions) ([]*evalGroup, int) {
	var (
		out    []*evalGroup
		nrules int
	)
	for _, f := range files {
		for _, g := range f.Groups {
			itv := step
			if g.Interval != 0 {
				itv = time.Duration(g.Interval)
			}
			eg := &evalGroup{file: f.Name, every: max(1, int((itv+step/2)/step))}
			rs := make([]rules.Rule, 0, len(g.Rules))
			for _, r := range g.Rules {
				expr, _ := parser.ParseExpr(r.Expr) // parsed by lint.Parse already
				lbls := rules.FromMaps(g.Labels, r.Labels)
				if r.Alert != "" {
					rs = append(rs, rules.NewAlertingRule(r.Alert, expr, time.Duration(r.For), time.Duration(r.KeepFiringFor),
						lbls, labels.EmptyLabels(), labels.EmptyLabels(), "", true, mopts.Logger))
					eg.alerts = append(eg.alerts, newTracker())
				} else {
					rs = append(rs, rules.NewRecordingRule(r.Record, expr, lbls))
					eg.alerts = append(eg.alerts, nil)
				}
			}
			nrules += len(rs)
			eg.evals, eg.failed, eg.lastErr = make([]int, len(rs)), make([]int, len(rs)), make([]error, len(rs))
			eg.g = rules.NewGroup(rules.GroupOptions{
				Name: g.Name, File: f.Name, Interval: itv, Limit: g.Limit, Rules: rs,
				Opts: mopts, QueryOffset: (*time.Duration)(g.QueryOffset),
			})
			out = append(out, eg)
		}
	}
	return out, nrules
}

// lookback bounds how far before the evaluation time expr reads: the sum of every range,
// subquery range and offset in it (more than any one path of the tree needs, which is fine).
// An @ modifier can read anywhere, so it makes the bound unlimited.
func lookback(expr parser.Expr) time.Duration {
	var d time.Duration
	unbounded := false
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			d += max(n.OriginalOffset, 0)
			unbounded = unbounded || n.Timestamp != nil || n.StartOrEnd != 0
		case *parser.MatrixSelector:
			d += n.Range
		case *parser.SubqueryExpr:
			d += n.Range + max(n.OriginalOffset, 0) + n.Step
			unbounded = unbounded || n.Timestamp != nil || n.StartOrEnd != 0
		}
		return nil
	})
	if unbounded {
		return math.MaxInt64
	}
	return d
}

// tracker follows the alerts of one alerting rule from step to step.
type tracker struct {
	open map[uint64]*Episode
	done []*Episode
	seen map[uint64]bool
}

func newTracker() *tracker {
	return &tracker{open: map[uint64]*Episode{}, seen: map[uint64]bool{}}
}

// observe reads the rule's alerts after its evaluation at ts. A pending alert whose condition
// stops holding is dropped by the rule at once; a firing one turns inactive with ResolvedAt set
// and is kept for a while, so the rule's state is read as transitions.
func (t *tracker) observe(ar *rules.AlertingRule, ts time.Time) {
	clear(t.seen)
	ar.ForEachActiveAlert(func(a *rules.Alert) {
		h := a.Labels.Hash()
		e := t.open[h]
		if a.State == rules.StateInactive {
			if e != nil {
				e.ResolvedAt = a.ResolvedAt
				t.close(h, e)
			}
			return
		}
		t.seen[h] = true
		if e != nil && !e.ActiveAt.Equal(a.ActiveAt) {
			// The same labels became active again between two observations.
			e.ResolvedAt = a.ActiveAt
			t.close(h, e)
			e = nil
		}
		if e == nil {
			e = &Episode{Labels: a.Labels.Copy(), ActiveAt: a.ActiveAt}
			t.open[h] = e
		}
		if a.State == rules.StateFiring && e.FiredAt.IsZero() {
			e.FiredAt = a.FiredAt
		}
	})
	for h, e := range t.open {
		if !t.seen[h] {
			e.ResolvedAt = ts
			t.close(h, e)
		}
	}
}

func (t *tracker) close(h uint64, e *Episode) {
	delete(t.open, h)
	t.done = append(t.done, e)
}

// stats sums up the episodes per cluster; end is the last evaluation time, which still-firing
// alerts are counted up to.
func (t *tracker) stats(alert, group, file string, end time.Time) []AlertStats {
	all := slices.Clone(t.done)
	for _, e := range t.open {
		all = append(all, e)
	}
	slices.SortFunc(all, func(a, b *Episode) int {
		if c := a.ActiveAt.Compare(b.ActiveAt); c != 0 {
			return c
		}
		return labels.Compare(a.Labels, b.Labels)
	})
	byCluster := map[string]*AlertStats{}
	var clusters []string
	for _, e := range all {
		c := e.Labels.Get(ClusterLabel)
		s := byCluster[c]
		if s == nil {
			s = &AlertStats{Alert: alert, Group: group, File: file, Cluster: c}
			byCluster[c] = s
			clusters = append(clusters, c)
		}
		s.Episodes = append(s.Episodes, *e)
		if e.ResolvedAt.IsZero() {
			s.ActiveAtEnd++
		}
		switch {
		case !e.FiredAt.IsZero():
			s.Fired++
			until := e.ResolvedAt
			if until.IsZero() {
				until = end
			}
			d := until.Sub(e.FiredAt)
			s.Firing += d
			s.Longest = max(s.Longest, d)
		case !e.ResolvedAt.IsZero():
			s.PendingOnly++
		}
	}
	if len(clusters) == 0 {
		return []AlertStats{{Alert: alert, Group: group, File: file}}
	}
	slices.SortFunc(clusters, strings.Compare)
	out := make([]AlertStats, 0, len(clusters))
	for _, c := range clusters {
		out = append(out, *byCluster[c])
	}
	return out
}

// minLevel drops records below level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{Handler: h.Handler.WithAttrs(as), level: h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{Handler: h.Handler.WithGroup(name), level: h.level}
}
