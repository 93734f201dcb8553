package rules

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
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
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/rules/pack"
)

// Annotations fleetwatch adds to an alert it holds.
const (
	StaleAnnotation       = "fleetwatch_data"
	StaleReasonAnnotation = "fleetwatch_stale_reason"
)

// holder keeps a firing alert active when the series behind it vanishes because its cluster
// stopped sending data, instead of letting Prometheus resolve it. Prometheus resolves an alert
// as soon as its expression stops returning the series, and it cannot tell "the condition
// cleared" from "nothing is known any more": a cluster that stops sending resolves all of its
// alerts once its data falls out of the lookback window.
//
// The holder wraps the rules' QueryFunc. When a series that a firing alert of the rule came
// from is missing from the rule's result, it decides at once, from the time fleetwatch last
// stored data from the series' cluster (collector.LastIngestMetric in the view):
//   - the cluster's data is fresh (its last ingest is at most silentAfter old): the condition
//     cleared, and the series is let go; the alert resolves at this evaluation, exactly as in
//     Prometheus (keep_firing_for included);
//   - the cluster is silent (nothing stored from it for longer than silentAfter): the data is
//     gone, and the series is put back with its last value, so its alert stays firing.
//
// A series without a cluster label, of a cluster that is not configured, or of a cluster the
// view has no ingest time for is never held: nothing says its data stopped. Nor is a series of
// a rule that judges its clusters' data freshness itself (its expression reads
// collector.LastIngestMetric or the pack's pack.RecordIngestAge, as FleetClusterAPIUnreachable
// does to fire only while the cluster's data is fresh): when its cluster goes silent, its
// condition is false by its own definition, and FleetClusterSilent says what happened. When the ingest
// times cannot be read, the series is held until the next evaluation reads them.
//
// A held series keeps its alert firing with its original active-since time; the alert gets
// the annotations fleetwatch_data="stale" and fleetwatch_stale_reason. It is let go when its
// data returns, when its cluster sends data again (whether or not the series comes back),
// when its cluster is removed from the configuration, or when the rule changes. An alert that
// is not held carries only its rule's annotations. Pending alerts are not held: they notified
// nobody, and holding them would let their `for` clock run out on data nobody saw.
type holder struct {
	inner  rules.QueryFunc
	logger *slog.Logger
	heldG  prometheus.Gauge

	// statePath is the file the series behind firing alerts are kept in across restarts
	// (holdstate.go); empty: memory only. savedDigest identifies what it holds.
	statePath   string
	savedDigest uint64
	saveMtx     sync.Mutex
	// fsyncFile and rename are the last steps of writing the state file (nil: the real ones);
	// tests make them fail.
	fsyncFile func(*os.File) error
	rename    func(from, to string) error

	mtx         sync.Mutex
	clusters    map[string]bool // nil: any cluster
	silentAfter time.Duration
	rules       map[string]*ruleHold // by ruleKey
	held        map[uint64]heldAlert // by alert labels hash
	// marked are the annotations of the active alerts mark changed, by alert labels hash, so
	// that an alert no longer held gets its rule's own annotations back (see mark).
	marked map[uint64]markedAnnotations
}

type ruleHold struct {
	last    map[uint64]promql.Sample // the rule's result last evaluation, by labels without name
	alertOf map[uint64]uint64        // the alert labels hash each series of last fires as
	// restored are the alerts the state file says were firing before a restart, until they
	// fire again or go away.
	restored map[uint64]bool
	firing   map[uint64]bool // alert label hashes of its firing alerts
	held     map[uint64]bool // alert label hashes this rule holds
}

type heldAlert struct {
	reason string
}

// markedAnnotations are an alert's annotations before and after mark added the stale ones.
type markedAnnotations struct {
	before, after labels.Labels
}

func newHolder(inner rules.QueryFunc, logger *slog.Logger, reg prometheus.Registerer) *holder {
	return &holder{
		inner:  inner,
		logger: logger,
		rules:  map[string]*ruleHold{},
		held:   map[uint64]heldAlert{},
		marked: map[uint64]markedAnnotations{},
		heldG: promauto.With(reg).NewGauge(prometheus.GaugeOpts{
			Name: "fleetwatch_rules_held_alerts",
			Help: "Firing alerts kept active, marked stale, because their cluster stopped sending data.",
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
		rh = &ruleHold{}
		h.rules[key] = rh
	}
	firing, last := rh.firing, rh.last
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
	if len(missing) > 0 && !judgesFreshness(q) {
		res, kept = h.keep(ctx, ts, res, missing)
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
	rh.last, rh.alertOf = newLast, alertOf
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
			h.logger.Warn("holding alert whose cluster stopped sending data", "alert", d.Name, "series", m.DropMetricName().String(), "reason", a.reason)
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

// freshnessSeries say how fresh each cluster's data is in the view.
var freshnessSeries = map[string]bool{collector.LastIngestMetric: true, pack.RecordIngestAge: true}

// judgesFreshness says whether the expression reads one of freshnessSeries. It is parsed only
// when a firing alert's series vanished, which is rare.
func judgesFreshness(q string) bool {
	expr, err := parser.ParseExpr(q)
	if err != nil {
		return false
	}
	found := false
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if freshnessSeries[vs.Name] {
			found = true
		}
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual && freshnessSeries[m.Value] {
				found = true
			}
		}
		return nil
	})
	return found
}

// keep decides which missing series to put back into res (see holder) and says why, by
// series hash.
func (h *holder) keep(ctx context.Context, ts time.Time, res promql.Vector, missing []promql.Sample) (promql.Vector, map[uint64]heldAlert) {
	h.mtx.Lock()
	clusters, silentAfter := h.clusters, h.silentAfter
	h.mtx.Unlock()

	var (
		lastIngest map[string]time.Time
		readErr    error
		read       bool
	)
	kept := map[uint64]heldAlert{}
	for _, s := range missing {
		cluster := s.Metric.Get(config.ClusterLabel)
		if cluster == "" || clusters != nil && !clusters[cluster] {
			continue // not one configured cluster's data: resolve as Prometheus does
		}
		if !read {
			lastIngest, readErr = h.lastIngest(ctx, ts)
			read = true
		}
		var reason string
		li, known := lastIngest[cluster]
		switch {
		case readErr != nil:
			reason = fmt.Sprintf("cannot read when cluster %s last sent data (%v): the alert is held, not resolved, until that is known", cluster, readErr)
		case !known:
			continue // nothing says its data stopped
		case ts.Sub(li) > silentAfter:
			reason = fmt.Sprintf("no data from cluster %s since %s (%s ago): the alert is held, not resolved, until data returns",
				cluster, li.UTC().Format(time.RFC3339), ts.Sub(li).Round(time.Second))
		default:
			continue // the cluster is sending: the condition cleared
		}
		kept[seriesHash(s.Metric)] = heldAlert{reason: reason}
		s.T = ts.UnixMilli()
		res = append(res, s)
	}
	return res, kept
}

// lastIngest reads when each cluster last sent data, from the series fleetwatch writes (the
// newest, should the view hold several for a cluster).
func (h *holder) lastIngest(ctx context.Context, ts time.Time) (map[string]time.Time, error) {
	res, err := h.inner(ctx, collector.LastIngestMetric, ts)
	if err != nil {
		h.logger.Warn("reading last ingest times", "err", err)
		return nil, fmt.Errorf("read %s: %w", collector.LastIngestMetric, err)
	}
	out := make(map[string]time.Time, len(res))
	for _, s := range res {
		if math.IsNaN(s.F) || math.IsInf(s.F, 0) {
			continue
		}
		sec, frac := math.Modf(s.F)
		t := time.Unix(int64(sec), int64(frac*1e9))
		if c := s.Metric.Get(config.ClusterLabel); t.After(out[c]) {
			out[c] = t
		}
	}
	return out, nil
}

// observe records, after a group's evaluation, which alerts of a rule are firing: only those
// are held when their series vanish.
func (h *holder) observe(r *rules.AlertingRule) {
	key := ruleKey(r.Name(), r.Query().String(), r.Labels())
	h.mtx.Lock()
	defer h.mtx.Unlock()
	rh := h.rules[key]
	if rh == nil {
		rh = &ruleHold{}
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

// mark adds the stale annotations to an alert that is held, and gives an alert that is no
// longer held its rule's own annotations back. Prometheus sets an active alert's annotations
// anew only when its series is in the rule's result; an alert let go (resolved, or kept firing
// by keep_firing_for) would otherwise keep the stale ones on every later notification. It is
// called on the copies the rules manager sends (live false) and then on the rules' active
// alerts (live true), which is when a mark that is no longer needed is forgotten.
func (h *holder) mark(a *rules.Alert, live bool) {
	ah := a.Labels.Hash()
	h.mtx.Lock()
	defer h.mtx.Unlock()
	held, isHeld := h.held[ah]
	if m, ok := h.marked[ah]; ok && labels.Equal(a.Annotations, m.after) {
		a.Annotations = m.before
	}
	if !isHeld || a.State == rules.StateInactive {
		if live {
			delete(h.marked, ah)
		}
		return
	}
	before := a.Annotations
	b := labels.NewBuilder(before)
	b.Set(StaleAnnotation, "stale")
	b.Set(StaleReasonAnnotation, held.reason)
	a.Annotations = b.Labels()
	h.marked[ah] = markedAnnotations{before: before, after: a.Annotations}
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
	for ah := range h.marked {
		if _, ok := h.held[ah]; !ok {
			delete(h.marked, ah)
		}
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
