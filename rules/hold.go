package rules

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"

	"github.com/fleetwatch/fleetwatch/collector"
)

// Annotations fleetwatch adds to an alert it holds.
const (
	StaleAnnotation       = "fleetwatch_data"
	StaleReasonAnnotation = "fleetwatch_stale_reason"
)

// holder keeps a firing alert active when the series behind it vanishes because its data went
// missing, instead of letting Prometheus resolve it. Prometheus resolves an alert as soon as
// its expression stops returning the series, and it cannot tell "the condition cleared" from
// "nothing is known any more": a cluster that stops sending resolves all of its alerts within
// the lookback window, and a member Prometheus that shuts down cleanly sends staleness markers
// that resolve them at once.
//
// The holder wraps the rules' QueryFunc. When a series that a firing alert of the rule came
// from is missing from the rule's result, it decides:
//   - the condition cleared, and the series is let go, when the rule is a comparison and the
//     same comparison with `bool` still returns the series (the data is there, below the line);
//   - the data is gone, and the series is put back with its last value, when the series'
//     cluster is silent: fleetwatch stored nothing from it for longer than silentAfter (the
//     cluster's collector.LastIngestMetric in the view says so);
//   - neither yet: the series is put back for up to silentAfter from when it vanished, long
//     enough to see whether its cluster goes silent, and let go after that (a rule that says
//     "cleared" by returning nothing resolves silentAfter late, never wrongly).
//
// A held series keeps its alert firing with its original active-since time; the alert gets
// the annotations fleetwatch_data="stale" and fleetwatch_stale_reason. It is let go when its
// data returns, when its cluster is removed from the configuration, or when the rule changes.
// Pending alerts are not held: they notified nobody, and holding them would let their `for`
// clock run out on data nobody saw.
type holder struct {
	inner  rules.QueryFunc
	logger *slog.Logger
	heldG  prometheus.Gauge
	now    func() time.Time

	// statePath is the file the series behind firing alerts are kept in across restarts
	// (holdstate.go); empty: memory only. savedDigest identifies what it holds.
	statePath   string
	savedDigest uint64
	saveMtx     sync.Mutex

	mtx         sync.Mutex
	clusters    map[string]bool // nil: any cluster
	silentAfter time.Duration
	rules       map[string]*ruleHold // by ruleKey
	held        map[uint64]heldAlert // by alert labels hash
}

type ruleHold struct {
	last    map[uint64]promql.Sample // the rule's result last evaluation, by labels without name
	alertOf map[uint64]uint64        // the alert labels hash each series of last fires as
	// restored are the alerts the state file says were firing before a restart, until they
	// fire again or go away.
	restored map[uint64]bool
	firing   map[uint64]bool      // alert label hashes of its firing alerts
	gone     map[uint64]time.Time // when each held series vanished
	held     map[uint64]bool      // alert label hashes this rule holds
}

type heldAlert struct {
	since  time.Time
	reason string
}

func newHolder(inner rules.QueryFunc, logger *slog.Logger, reg prometheus.Registerer) *holder {
	return &holder{
		inner:  inner,
		logger: logger,
		now:    time.Now,
		rules:  map[string]*ruleHold{},
		held:   map[uint64]heldAlert{},
		heldG: promauto.With(reg).NewGauge(prometheus.GaugeOpts{
			Name: "fleetwatch_rules_held_alerts",
			Help: "Firing alerts kept active, marked stale, because the data behind them went missing.",
		}),
	}
}

func (h *holder) configure(clusters []string, silentAfter time.Duration) {
	h.mtx.Lock()
	defer h.mtx.Unlock()
	h.clusters = nil
	if clusters != nil {
		h.clusters = make(map[string]bool, len(clusters))
		for _, c := range clusters {
			h.clusters[c] = true
		}
	}
	h.silentAfter = silentAfter
}

func ruleKey(name, query string, ls labels.Labels) string {
	return name + "\x00" + query + "\x00" + ls.String() // \x00 survives the JSON state file
}

// alertHash is the identity Prometheus gives the alert a series of the rule becomes (without
// templated rule labels, which the pack does not use).
func alertHash(name string, ruleLabels, series labels.Labels) uint64 {
	b := labels.NewBuilder(series)
	b.Del(labels.MetricName)
	ruleLabels.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
	b.Set(labels.AlertName, name)
	return b.Labels().Hash()
}

func seriesHash(ls labels.Labels) uint64 { return ls.DropMetricName().Hash() }

// query is the QueryFunc the rules manager uses.
func (h *holder) query(ctx context.Context, q string, ts time.Time) (promql.Vector, error) {
	res, err := h.inner(ctx, q, ts)
	d := rules.FromOriginContext(ctx)
	// Template queries of an alert's annotations carry the rule's origin too; only the rule's
	// own expression is its result.
	if err != nil || d.Kind != rules.KindAlerting || d.Query != q {
		return res, err
	}
	key := ruleKey(d.Name, d.Query, d.Labels)
	// Only this rule's group evaluates it, but saveState reads every rule's state from other
	// groups' goroutines: rh's maps are replaced under mtx, never changed in place.
	h.mtx.Lock()
	rh := h.rules[key]
	if rh == nil {
		rh = &ruleHold{gone: map[uint64]time.Time{}}
		h.rules[key] = rh
	}
	firing, last, gone := rh.firing, rh.last, maps.Clone(rh.gone)
	h.mtx.Unlock()

	present := make(map[uint64]bool, len(res))
	for _, s := range res {
		present[seriesHash(s.Metric)] = true
	}
	var missing []promql.Sample
	for k, s := range last {
		if !present[k] && firing[alertHash(d.Name, d.Labels, s.Metric)] {
			missing = append(missing, s)
		}
	}
	var kept map[uint64]heldAlert // by series
	if len(missing) > 0 {
		res, kept = h.keep(ctx, ts, res, missing, gone)
	}
	for k := range gone {
		if _, ok := kept[k]; !ok {
			delete(gone, k)
		}
	}
	newLast := make(map[uint64]promql.Sample, len(res))
	alertOf := make(map[uint64]uint64, len(res))
	for _, s := range res {
		k := seriesHash(s.Metric)
		newLast[k] = s
		alertOf[k] = alertHash(d.Name, d.Labels, s.Metric)
	}

	h.mtx.Lock()
	defer h.mtx.Unlock()
	rh.last, rh.alertOf, rh.gone = newLast, alertOf, gone
	was := rh.held
	rh.held = make(map[uint64]bool, len(kept))
	for ah := range was {
		delete(h.held, ah)
	}
	for k, a := range kept {
		m := newLast[k].Metric
		ah := alertHash(d.Name, d.Labels, m)
		h.held[ah] = a
		rh.held[ah] = true
		if !was[ah] {
			h.logger.Warn("holding alert whose data vanished", "alert", d.Name, "series", m.DropMetricName().String(), "reason", a.reason)
		}
	}
	for ah := range was {
		if !rh.held[ah] {
			h.logger.Info("no longer holding alert", "alert", d.Name)
		}
	}
	h.heldG.Set(float64(len(h.held)))
	return res, nil
}

// keep decides which missing series to put back into res (see holder) and says why, by
// series hash.
func (h *holder) keep(ctx context.Context, ts time.Time, res promql.Vector, missing []promql.Sample, gone map[uint64]time.Time) (promql.Vector, map[uint64]heldAlert) {
	h.mtx.Lock()
	clusters, silentAfter := h.clusters, h.silentAfter
	h.mtx.Unlock()

	cleared := h.stillThere(ctx, rules.FromOriginContext(ctx).Query, ts)
	lastIngest := h.lastIngest(ctx, ts)
	kept := map[uint64]heldAlert{}
	for _, s := range missing {
		k := seriesHash(s.Metric)
		if cleared != nil && cleared[k] {
			continue // the data is there; the condition cleared
		}
		cluster := s.Metric.Get("cluster")
		if cluster != "" && clusters != nil && !clusters[cluster] {
			continue // no longer a configured cluster
		}
		goneAt, ok := gone[k]
		if !ok {
			goneAt = ts
		}
		var reason string
		li, known := lastIngest[cluster]
		switch {
		case known && ts.Sub(li) > silentAfter:
			reason = fmt.Sprintf("no data from cluster %s since %s (%s ago): the alert is held, not resolved, until data returns",
				cluster, li.UTC().Format(time.RFC3339), ts.Sub(li).Round(time.Second))
		case ts.Sub(goneAt) <= silentAfter:
			reason = fmt.Sprintf("the series behind this alert vanished at %s; held for up to %s to tell a silent cluster from a cleared condition",
				goneAt.UTC().Format(time.RFC3339), silentAfter)
		default:
			continue // the cluster kept sending: the rule's data says the condition is over
		}
		gone[k] = goneAt
		kept[k] = heldAlert{since: goneAt, reason: reason}
		s.T = ts.UnixMilli()
		res = append(res, s)
	}
	return res, kept
}

// stillThere evaluates a comparison rule with `bool` and returns the series it has data for;
// nil when the rule is not a plain comparison or the query fails.
func (h *holder) stillThere(ctx context.Context, q string, ts time.Time) map[uint64]bool {
	expr, err := parser.ParseExpr(q)
	if err != nil {
		return nil
	}
	for {
		p, ok := expr.(*parser.ParenExpr)
		if !ok {
			break
		}
		expr = p.Expr
	}
	be, ok := expr.(*parser.BinaryExpr)
	if !ok || !be.Op.IsComparisonOperator() || be.ReturnBool ||
		be.LHS.Type() != parser.ValueTypeVector && be.RHS.Type() != parser.ValueTypeVector {
		return nil
	}
	b := *be
	b.ReturnBool = true
	res, err := h.inner(ctx, b.String(), ts)
	if err != nil {
		return nil
	}
	out := make(map[uint64]bool, len(res))
	for _, s := range res {
		out[seriesHash(s.Metric)] = true
	}
	return out
}

// lastIngest reads when each cluster last sent data, from the series fleetwatch writes.
func (h *holder) lastIngest(ctx context.Context, ts time.Time) map[string]time.Time {
	res, err := h.inner(ctx, collector.LastIngestMetric, ts)
	if err != nil {
		h.logger.Warn("reading last ingest times", "err", err)
		return nil
	}
	out := make(map[string]time.Time, len(res))
	for _, s := range res {
		if math.IsNaN(s.F) || math.IsInf(s.F, 0) {
			continue
		}
		sec, frac := math.Modf(s.F)
		out[s.Metric.Get("cluster")] = time.Unix(int64(sec), int64(frac*1e9))
	}
	return out
}

// observe records, after a group's evaluation, which alerts of a rule are firing: only those
// are held when their series vanish.
func (h *holder) observe(r *rules.AlertingRule) {
	key := ruleKey(r.Name(), r.Query().String(), r.Labels())
	h.mtx.Lock()
	defer h.mtx.Unlock()
	rh := h.rules[key]
	if rh == nil {
		rh = &ruleHold{gone: map[uint64]time.Time{}}
		h.rules[key] = rh
	}
	firing := map[uint64]bool{}
	pending := map[uint64]bool{}
	r.ForEachActiveAlert(func(a *rules.Alert) {
		ah := a.Labels.Hash()
		switch {
		case a.State == rules.StateFiring:
			firing[ah] = true
		case rh.restored[ah]:
			// Firing before a restart, pending again until the rules manager restores its
			// state (after the group's second evaluation): it still counts as firing.
			firing[ah], pending[ah] = true, true
		}
	})
	for ah := range rh.restored {
		if !pending[ah] {
			delete(rh.restored, ah) // firing again, or gone
		}
	}
	rh.firing = firing
}

// mark adds the stale annotations to an alert that is held.
func (h *holder) mark(a *rules.Alert) {
	h.mtx.Lock()
	held, ok := h.held[a.Labels.Hash()]
	h.mtx.Unlock()
	if !ok || a.State == rules.StateInactive {
		return
	}
	b := labels.NewBuilder(a.Annotations)
	b.Set(StaleAnnotation, "stale")
	b.Set(StaleReasonAnnotation, held.reason)
	a.Annotations = b.Labels()
}

// forget drops the state of rules that no longer exist, after a configuration reload.
func (h *holder) forget(live map[string]bool) {
	h.mtx.Lock()
	defer h.mtx.Unlock()
	for k, rh := range h.rules {
		if live[k] {
			continue
		}
		for ah := range rh.held {
			delete(h.held, ah)
		}
		delete(h.rules, k)
	}
	h.heldG.Set(float64(len(h.held)))
}

// heldAlerts lists the held alerts' reasons, sorted (for tests and logs).
func (h *holder) heldAlerts() []string {
	h.mtx.Lock()
	defer h.mtx.Unlock()
	out := make([]string, 0, len(h.held))
	for _, a := range h.held {
		out = append(out, a.reason)
	}
	sort.Strings(out)
	return out
}
