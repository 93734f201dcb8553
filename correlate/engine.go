package correlate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	httptransport "github.com/go-openapi/runtime/client"
	"github.com/go-openapi/strfmt"
	amclient "github.com/prometheus/alertmanager/api/v2/client"
	amalert "github.com/prometheus/alertmanager/api/v2/client/alert"
	"github.com/prometheus/alertmanager/api/v2/models"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	promconfig "github.com/prometheus/common/config"

	"github.com/fleetwatch/fleetwatch/correlate/amconfig"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

// MetricGroupings counts the evaluations that grouped the alerts again.
const MetricGroupings = "fleetwatch_correlate_groupings_total"

// MetricNotifications counts incident states posted to Alertmanager, by alertmanager and
// result (success, error); MetricOutbox is how many wait to be delivered.
const (
	MetricNotifications = "fleetwatch_correlate_notifications_total"
	MetricOutbox        = "fleetwatch_correlate_outbox"
)

// MetricAlertToIncident is the time from an alert being taken in to the evaluation that put it
// in an incident; MetricAlertsReceived counts the alerts taken in, by source.
const (
	MetricAlertToIncident = "fleetwatch_correlate_alert_to_incident_seconds"
	MetricAlertsReceived  = "fleetwatch_correlate_alerts_received_total"
)

// MetricEvaluationDuration is how long evaluations take (reading the topology, regrouping,
// storing the incidents that changed).
const MetricEvaluationDuration = "fleetwatch_correlate_evaluation_duration_seconds"

// IncidentAlertName is the alertname of the one Alertmanager alert each incident becomes.
const IncidentAlertName = amconfig.AlertName

// Options configure an Engine.
type Options struct {
	Store *Store
	// Query reads the topology from the view; nil correlates without it.
	Query QueryFunc
	Rules Rules
	// Interval is how often incidents are recomputed at the latest (a new alert triggers it
	// sooner); ResolveAfter the hysteresis before an incident whose alerts went away resolves;
	// ResendInterval how often active incidents are sent to Alertmanager again. Zero Interval
	// and ResendInterval take the defaults of correlate.evaluation_interval and
	// correlate.resend_interval (config.DefaultCorrelate).
	Interval, ResolveAfter, ResendInterval time.Duration
	// Alertmanagers are base URLs; every incident goes to each.
	Alertmanagers []string
	// ResolvedRetention is how long resolved incidents stay in the store; 0 means
	// DefaultResolvedRetention.
	ResolvedRetention time.Duration
	// Transport posts to Alertmanager; nil means http.DefaultTransport.
	Transport http.RoundTripper
	// Identify reads the caller's identity from an incident API request's context (see
	// Handler); nil: no request has one, so nothing is acknowledged or resolved over the API.
	Identify IdentifyFunc
	// Actions returns what remediation does now (nil: nothing): alerts those actions cause
	// join the incident they remediate. It must not wait for anything that waits for this
	// engine.
	Actions func() []Action
	// ExternalURL is fleetwatch's URL, for the incidents' links.
	ExternalURL string
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
	Now         func() time.Time
}

// DefaultResolvedRetention is how long resolved incidents are kept by default, the default of
// correlate.resolved_retention.
var DefaultResolvedRetention = time.Duration(config.DefaultCorrelate.ResolvedRetention)

// pruneEvery is how often at most an evaluation deletes the resolved incidents past their
// retention.
const pruneEvery = time.Minute

// Engine is the correlation stage: it takes alerts (Sink), computes incidents, keeps them in
// the store and delivers them to Alertmanager from the store's outbox.
type Engine struct {
	o       Options
	logger  *slog.Logger
	kick    chan struct{}
	deliver chan struct{}

	mtx     sync.Mutex // serializes evaluation and the tracker
	tracker *Tracker
	// lastPrune is when resolved incidents past the retention were last deleted, lastSweep
	// alerts long resolved.
	lastPrune, lastSweep time.Time
	// corr is the grouping of the alerts as the last evaluation left it, kept so that the
	// next one regroups only what changed; nil when the next one must group from scratch (at
	// the start, when the rules or remediation's actions changed). corrEnds is the earliest
	// end among its alerts, as they were taken in (zero: none ends): from then on, an
	// evaluation looks for alerts that ended.
	corr     *correlation
	corrEnds time.Time
	// replan are group keys the tracker must plan again at the next evaluation: those of an
	// evaluation whose incidents failed to store, and of an incident changed through the API.
	replan map[string]bool
	// clients are the HTTP clients of the configured Alertmanagers, by URL.
	clients map[string]*http.Client
	topo    *Topology
	// topoRead is when topo was read (the wall clock: it bounds how often it is read).
	topoRead time.Time
	podSeen  map[string]time.Time // when each pod of the topology was last in the view

	alertsMtx sync.Mutex
	alerts    map[uint64]Alert     // the stored alerts, by fingerprint
	unseen    map[uint64]time.Time // alerts taken in since the last evaluation, and when
	// refreshed are those of them that only refresh an alert (see refreshes): the next
	// evaluation need not group again for them.
	refreshed map[uint64]time.Time
	// fpRules are the rules the alerts' cached fingerprints (Alert.fp) were computed with; only
	// their ReplicaLabels matter. Ingest reads them here rather than under mtx, so that it
	// does not wait for an evaluation to finish.
	fpRules Rules

	latency   prometheus.Histogram
	evalTime  prometheus.Histogram
	opened    *prometheus.CounterVec
	resolved  *prometheus.CounterVec
	duration  prometheus.Histogram
	byCluster *prometheus.GaugeVec
	pruned    prometheus.Counter
	groupings prometheus.Counter

	subMtx sync.Mutex
	subs   map[chan *Incident]struct{}

	// active are copies of the active incidents, by ID, replaced whenever one changes: the
	// incident API and placement read them without waiting for an evaluation (mtx).
	activeMtx sync.RWMutex
	active    map[string]*Incident

	received  *prometheus.CounterVec
	incidents *prometheus.GaugeVec
	// kinds and perCluster are the counts the incident gauges show (tally).
	kinds      map[incidentKind]int
	perCluster map[string]int
	sent       *prometheus.CounterVec
	queued     prometheus.Gauge
}

// New returns an Engine that continues the store's active incidents.
func New(o Options) (*Engine, error) {
	if o.Store == nil {
		return nil, errors.New("correlate: a store is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Interval <= 0 {
		o.Interval = time.Duration(config.DefaultCorrelate.EvaluationInterval)
	}
	if o.ResendInterval <= 0 {
		o.ResendInterval = time.Duration(config.DefaultCorrelate.ResendInterval)
	}
	if o.ResolvedRetention < 0 {
		return nil, fmt.Errorf("correlate: resolved retention %s is negative", o.ResolvedRetention)
	}
	if o.ResolvedRetention == 0 {
		o.ResolvedRetention = DefaultResolvedRetention
	}
	for _, a := range o.Alertmanagers {
		if u, err := url.Parse(a); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("correlate: alertmanager %q: not an http(s) URL", a)
		}
	}
	active, err := o.Store.Incidents(Filter{State: "active"})
	if err != nil {
		return nil, err
	}
	alerts, err := o.Store.Alerts()
	if err != nil {
		return nil, err
	}
	for k, a := range alerts {
		a.fp, a.localFP = o.Rules.fingerprints(a)
		alerts[k] = a
	}
	e := &Engine{
		o: o, logger: o.Logger, kick: make(chan struct{}, 1), deliver: make(chan struct{}, 1),
		tracker: NewTracker(o.ResolveAfter, o.Rules, active),
		alerts:  alerts,
		unseen:  map[uint64]time.Time{}, refreshed: map[uint64]time.Time{},
		fpRules: o.Rules,
		subs:    map[chan *Incident]struct{}{},
		active:  map[string]*Incident{},
		kinds:   map[incidentKind]int{}, perCluster: map[string]int{},
	}
	for _, inc := range e.tracker.Active() {
		e.track(inc)
	}
	f := promauto.With(o.Registerer)
	e.received = f.NewCounterVec(prometheus.CounterOpts{Name: MetricAlertsReceived, Help: "Alerts taken in by the correlation engine, by source."}, []string{"source"})
	e.incidents = f.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetwatch_correlate_incidents", Help: "Active incidents, by severity and scope."}, []string{"severity", "scope"})
	e.sent = f.NewCounterVec(prometheus.CounterOpts{Name: MetricNotifications, Help: "Incident states posted to Alertmanager, by Alertmanager and result."}, []string{"alertmanager", "result"})
	e.latency = f.NewHistogram(prometheus.HistogramOpts{
		Name: MetricAlertToIncident,
		Help: "Time from an alert being taken in to the evaluation that put it in an incident.",
		// Fine around 2 s: the goal for an alert in a storm of new ones.
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 1.5, 2, 3, 4, 5, 10, 30},
	})
	e.evalTime = f.NewHistogram(prometheus.HistogramOpts{
		Name:    MetricEvaluationDuration,
		Help:    "Time an evaluation takes: reading the topology, regrouping what changed, storing the incidents that changed.",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	e.opened = f.NewCounterVec(prometheus.CounterOpts{Name: "fleetwatch_correlate_incidents_opened_total", Help: "Incidents opened, by severity and scope."}, []string{"severity", "scope"})
	e.resolved = f.NewCounterVec(prometheus.CounterOpts{Name: "fleetwatch_correlate_incidents_resolved_total", Help: "Incidents resolved, by severity, scope and how (cleared: its alerts stayed away; merged: into another incident; manual: through the API)."}, []string{"severity", "scope", "how"})
	e.duration = f.NewHistogram(prometheus.HistogramOpts{
		Name:    "fleetwatch_correlate_incident_duration_seconds",
		Help:    "Time from an incident opening to its resolution.",
		Buckets: []float64{60, 300, 600, 1800, 3600, 2 * 3600, 6 * 3600, 24 * 3600},
	})
	// Known label values start at 0, so that rates and increases exist before the first one.
	for _, sev := range []string{"critical", "warning", "info"} {
		for _, scope := range []string{"cluster", "fleet"} {
			e.opened.WithLabelValues(sev, scope)
			for _, how := range []string{"cleared", "merged", "manual"} {
				e.resolved.WithLabelValues(sev, scope, how)
			}
		}
	}
	e.byCluster = f.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetwatch_correlate_cluster_incidents", Help: "Active incidents that involve each cluster (a fleet incident counts for each of its clusters)."}, []string{"cluster"})
	e.queued = f.NewGauge(prometheus.GaugeOpts{Name: MetricOutbox, Help: "Incident states waiting to be delivered to Alertmanager."})
	e.groupings = f.NewCounter(prometheus.CounterOpts{Name: MetricGroupings, Help: "Evaluations that grouped the alerts again; the others found nothing the grouping reads changed."})
	e.pruned = f.NewCounter(prometheus.CounterOpts{Name: "fleetwatch_correlate_incidents_pruned_total", Help: "Resolved incidents deleted from the store after the resolved retention."})
	for _, inc := range e.tracker.active {
		e.tally(inc, 1)
	}
	return e, nil
}

// Settings are what a configuration reload may change: fleetwatch.yml's correlate section as
// internal/config loaded it (its defaults and validation are config's), and the view's
// query.replica_labels, which deduplication drops too. Zero durations keep the current ones.
type Settings struct {
	Correlate config.CorrelateConfig
	// ReplicaLabels are dropped before deduplication, besides DefaultRules' own.
	ReplicaLabels []string
}

// Rules are the correlation rules the settings give: DefaultRules, with each alert role that
// correlate.alerts names replaced by its list, and the section's rollout settings and teams.
func (s Settings) Rules() Rules {
	c, r := s.Correlate, DefaultRules
	if c.RolloutClusters > 0 {
		r.RolloutClusters = c.RolloutClusters
	}
	if c.RolloutWindow > 0 {
		r.RolloutWindow = time.Duration(c.RolloutWindow)
	}
	r.Teams = c.Teams
	r.ReplicaLabels = append(slices.Clone(r.ReplicaLabels), s.ReplicaLabels...)
	for _, role := range []struct {
		set  []string
		dest *[]string
	}{
		{c.Alerts.ClusterRoot, &r.ClusterRoot}, {c.Alerts.NodesRoot, &r.NodesRoot},
		{c.Alerts.Saturation, &r.Saturation}, {c.Alerts.Pending, &r.Pending},
		{c.Alerts.WorkloadFailure, &r.WorkloadFailure}, {c.Alerts.ClusterFailure, &r.ClusterFailure},
	} {
		if len(role.set) > 0 {
			*role.dest = role.set
		}
	}
	return r
}

// ApplySettings changes the engine's rules, hysteresis and Alertmanagers. Incident states
// still queued for an Alertmanager that is no longer configured stay in the store until it
// is configured again.
func (e *Engine) ApplySettings(s Settings) error {
	c := s.Correlate
	clients := make(map[string]*http.Client, len(c.Alertmanagers))
	for _, a := range c.Alertmanagers {
		if u, err := url.Parse(a.URL); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("correlate: alertmanager %q: not an http(s) URL", a.URL)
		}
		// Prometheus's HTTP client: TLS, authorization, basic auth, proxy as configured.
		hc, err := promconfig.NewClientFromConfig(a.HTTPClientConfig, "alertmanager")
		if err != nil {
			return fmt.Errorf("correlate: alertmanager %q: %w", a.URL, err)
		}
		clients[a.URL] = hc
	}
	rules := s.Rules()
	e.mtx.Lock()
	defer e.mtx.Unlock()
	if !slices.Equal(e.o.Rules.ReplicaLabels, rules.ReplicaLabels) {
		// The cached fingerprints are the old replica labels': compute them all again.
		// Copies: an incident, once committed, is never changed (track shares it).
		for k, inc := range e.tracker.active {
			cp := *inc
			cp.Alerts = rules.refingerprint(inc.Alerts)
			e.tracker.active[k] = &cp
		}
		e.alertsMtx.Lock()
		for k, a := range e.alerts {
			a.fp, a.localFP = rules.fingerprints(a)
			e.alerts[k] = a
		}
		e.fpRules = rules
		e.alertsMtx.Unlock()
	}
	e.o.Rules = rules
	e.corr = nil
	e.tracker.fingerprint = rules.fingerprint
	if d := time.Duration(c.ResolveAfter); d > 0 {
		e.o.ResolveAfter, e.tracker.ResolveAfter = d, d
	}
	if d := time.Duration(c.EvaluationInterval); d > 0 {
		e.o.Interval = d
	}
	if d := time.Duration(c.ResendInterval); d > 0 {
		e.o.ResendInterval = d
	}
	if d := time.Duration(c.ResolvedRetention); d > 0 {
		e.o.ResolvedRetention = d
	}
	e.o.Alertmanagers = config.URLs(c.Alertmanagers)
	e.clients = clients
	return nil
}

func (e *Engine) alertmanagers() []string {
	e.mtx.Lock()
	defer e.mtx.Unlock()
	return e.o.Alertmanagers
}

// Ingest stores the alerts durably and schedules a recomputation. It implements Sink.
func (e *Engine) Ingest(_ context.Context, alerts []Alert) error {
	if len(alerts) == 0 {
		return nil
	}
	// Each alert is fingerprinted once, here, not at every evaluation. Ingest does not wait
	// for an evaluation in progress (e.mtx).
	e.alertsMtx.Lock()
	r := e.fpRules
	e.alertsMtx.Unlock()
	in := make([]Alert, len(alerts))
	for i, a := range alerts {
		a.fp, a.localFP = r.fingerprints(a)
		in[i] = a
	}
	now := e.o.Now()
	stored, err := e.o.Store.PutAlerts(in, func(a Alert) uint64 { return a.fp }, now)
	if err != nil {
		return fmt.Errorf("correlate: store alerts: %w", err)
	}
	taken := time.Now()
	e.alertsMtx.Lock()
	if !slices.Equal(r.ReplicaLabels, e.fpRules.ReplicaLabels) {
		// A reload changed the replica labels meanwhile.
		for fp, a := range stored {
			a.fp, a.localFP = e.fpRules.fingerprints(a)
			stored[fp] = a
		}
	}
	for fp, a := range stored {
		old, had := e.alerts[fp]
		e.alerts[fp] = a
		_, pending := e.unseen[fp]
		switch {
		case pending:
		case had && refreshes(old, a, now):
			if _, ok := e.refreshed[fp]; !ok {
				e.refreshed[fp] = taken
			}
		default:
			e.unseen[fp] = taken
			delete(e.refreshed, fp)
		}
	}
	e.alertsMtx.Unlock()
	// Count runs of the same source (a request has one) rather than alert by alert.
	for i := 0; i < len(alerts); {
		j := i + 1
		for j < len(alerts) && alerts[j].Source == alerts[i].Source {
			j++
		}
		e.received.WithLabelValues(alerts[i].Source).Add(float64(j - i))
		i = j
	}
	select {
	case e.kick <- struct{}{}:
	default:
	}
	return nil
}

// refreshes reports whether a is old sent again with nothing grouping reads changed: both
// active, the same labels, annotations, start and source, and an end no earlier (a member
// Prometheus resends every active alert every minute with a later end). Such an alert does not
// make the next evaluation regroup anything; the grouping keeps the earlier end, and when that
// passes it looks for ended alerts and takes the later one then (correlation.ended).
func refreshes(old, a Alert, now time.Time) bool {
	return !old.Resolved(now) && !a.Resolved(now) && old.StartsAt.Equal(a.StartsAt) &&
		old.EndsAt.IsZero() == a.EndsAt.IsZero() && !a.EndsAt.Before(old.EndsAt) &&
		old.Source == a.Source && old.GeneratorURL == a.GeneratorURL &&
		maps.Equal(old.Labels, a.Labels) && maps.Equal(old.Annotations, a.Annotations)
}

// burstWait is how long an evaluation waits after alerts came in: a burst of sends (one per
// rule group, one per member) lands in one evaluation.
const burstWait = 50 * time.Millisecond

// topologyMaxAge is how old a topology Run's evaluations use may be. The topology comes from
// scraped kube-state-metrics (every 15-30 s), so reading it at every evaluation, which a storm
// of alerts runs back to back, would cost a query per evaluation for nothing new.
const topologyMaxAge = time.Second

// Run evaluates and delivers until ctx is done.
func (e *Engine) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { e.deliverLoop(ctx) })
	wg.Go(func() { e.compactLoop(ctx) })
	tick := time.NewTicker(e.o.Interval)
	defer tick.Stop()
	for {
		if err := e.evaluate(ctx, topologyMaxAge); err != nil {
			e.logger.Error("correlating alerts", "err", err)
		}
		// No rest between evaluations: one regroups only what changed since the last, so
		// while a storm of alerts comes in each evaluation takes in what arrived during the
		// one before, and an alert waits for at most about two of them. (A rest of half the
		// last evaluation's length, which earlier versions left to taking alerts in, put the
		// storm's alert-to-incident p99 at 2.9-3.0 s against 1.5-1.9 s without it, with no
		// less intake.)
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
		case <-e.kick:
			select {
			case <-ctx.Done():
			case <-time.After(burstWait):
			}
		}
	}
}

// Evaluate recomputes the incidents from the stored alerts now. It regroups only what
// changed since the last evaluation (alerts taken in or ended, the topology of their
// clusters): holding many alerts with nothing coming in costs next to nothing, and an
// evaluation costs what changed, not what is held.
func (e *Engine) Evaluate(ctx context.Context) error { return e.evaluate(ctx, 0) }

// evaluate is Evaluate, reading the topology again only if the last one read is older than
// topoMaxAge (0: always).
func (e *Engine) evaluate(ctx context.Context, topoMaxAge time.Duration) (err error) {
	e.mtx.Lock()
	defer e.mtx.Unlock()
	start := time.Now()
	defer func() { e.evalTime.Observe(time.Since(start).Seconds()) }()
	now := e.o.Now()
	e.alertsMtx.Lock()
	unseen, refreshed := e.unseen, e.refreshed
	e.unseen, e.refreshed = map[uint64]time.Time{}, map[uint64]time.Time{}
	e.alertsMtx.Unlock()
	// Every alert taken in counts in the evaluation that had it, grouped again or not.
	defer func() {
		if err != nil {
			return
		}
		done := time.Now()
		for _, t := range unseen {
			e.latency.Observe(done.Sub(t).Seconds())
		}
		for _, t := range refreshed {
			e.latency.Observe(done.Sub(t).Seconds())
		}
	}()
	if e.o.Query != nil && time.Since(e.topoRead) >= topoMaxAge {
		topo, err := LoadTopology(ctx, e.o.Query, now)
		if err != nil {
			e.logger.Warn("reading the topology; using the last one", "err", err)
		} else {
			e.topo, e.topoRead = e.remember(topo, now), time.Now()
		}
	}
	topo := e.topo
	if e.o.Actions != nil {
		// This evaluation's view of the topology with what remediation does now; the
		// remembered topology is left as it was.
		t := Topology{}
		if topo != nil {
			t = *topo
		}
		t.Actions = e.o.Actions()
		topo = &t
	}
	var keys map[string]bool
	if e.corr == nil || !e.corr.follow(topo) {
		// From scratch: every group, and every active incident, is planned.
		var alerts []Alert
		if alerts, err = e.sweepAlerts(now, true); err != nil {
			return err
		}
		e.corr, e.corrEnds = newCorrelation(e.o.Rules, topo), time.Time{}
		for _, a := range alerts {
			e.corr.set(a)
			e.corrEnds = earlierEnd(e.corrEnds, a.EndsAt)
		}
		keys = e.corr.update()
		for k := range e.tracker.active {
			keys[k] = true
		}
		e.groupings.Inc()
	} else {
		if _, err := e.sweepAlerts(now, false); err != nil {
			e.logger.Warn("deleting alerts long resolved", "err", err)
		}
		e.alertsMtx.Lock()
		for fp := range unseen {
			switch a, ok := e.alerts[fp]; {
			case ok && !a.Resolved(now):
				e.corr.set(a)
				e.corrEnds = earlierEnd(e.corrEnds, a.EndsAt)
			case ok:
				e.corr.remove(a)
			}
		}
		if !e.corrEnds.IsZero() && !now.Before(e.corrEnds) {
			e.corrEnds = e.corr.ended(now, func(fp uint64) (Alert, bool) { a, ok := e.alerts[fp]; return a, ok })
		}
		e.alertsMtx.Unlock()
		if len(e.corr.dirty) > 0 {
			e.groupings.Inc()
		}
		keys = e.corr.update()
	}
	for k := range e.replan {
		keys[k] = true
	}
	if len(keys) == 0 && !e.tracker.clearing() {
		e.prune(now)
		return nil
	}
	changed := e.tracker.planKeys(now, e.corr.groups, keys, e.corr.holder)
	if err = e.o.Store.SaveIncidents(changed, e.o.Alertmanagers); err != nil {
		// The grouping went on; the next evaluation plans these groups again.
		e.replan = keys
		return fmt.Errorf("store incidents: %w", err)
	}
	e.replan = nil
	e.commit(changed...)
	e.prune(now)
	for _, inc := range changed {
		e.account(inc, "cleared")
		e.logger.Info("incident", "id", inc.ID, "state", inc.State, "scope", inc.Scope, "clusters", strings.Join(inc.Clusters, ","), "root_cause", inc.RootCause, "alerts", len(inc.Alerts))
		e.publish(inc)
	}
	if len(changed) > 0 {
		select {
		case e.deliver <- struct{}{}:
		default:
		}
	}
	return nil
}

// earlierEnd is the earlier of t and end, an end of zero being none.
func earlierEnd(t, end time.Time) time.Time {
	if !end.IsZero() && (t.IsZero() || end.Before(t)) {
		return end
	}
	return t
}

// sweepAlerts lists the active alerts (when list is set) and deletes the alerts that ended more
// than ResolveAfter and an hour ago, from the store and memory. Without list it runs at most
// every pruneEvery.
func (e *Engine) sweepAlerts(now time.Time, list bool) ([]Alert, error) {
	if !list && !e.lastSweep.IsZero() && now.Sub(e.lastSweep) < pruneEvery {
		return nil, nil
	}
	var alerts []Alert
	var gone []uint64
	cutoff := now.Add(-e.o.ResolveAfter - time.Hour)
	e.alertsMtx.Lock()
	for fp, a := range e.alerts {
		switch {
		case !a.Resolved(now):
			if list {
				alerts = append(alerts, a)
			}
		case a.EndsAt.Before(cutoff):
			gone = append(gone, fp)
		}
	}
	e.alertsMtx.Unlock()
	if len(gone) > 0 {
		// The store first, then memory: a failure leaves both holding them.
		if err := e.o.Store.DeleteAlerts(gone); err != nil {
			return nil, err
		}
		e.alertsMtx.Lock()
		for _, fp := range gone {
			if a, ok := e.alerts[fp]; ok && a.EndsAt.Before(cutoff) {
				delete(e.alerts, fp)
			}
		}
		e.alertsMtx.Unlock()
	}
	e.lastSweep = now
	return alerts, nil
}

// compactLoop compacts the store's alert log when it is due, at most every pruneEvery, beside
// the evaluations: a compaction at 100,000 alerts writes about 100 MB, which an evaluation
// should not wait for.
func (e *Engine) compactLoop(ctx context.Context) {
	tick := time.NewTicker(pruneEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := e.o.Store.CompactAlerts(); err != nil {
			// The log stays as it is and grows; the next tick tries again.
			e.logger.Warn("compacting the alert log", "err", err)
		}
	}
}

// prune deletes the resolved incidents past the retention from the store, at most every
// pruneEvery. A failure is logged and tried again next time: it does not make the
// evaluation fail.
func (e *Engine) prune(now time.Time) {
	if !e.lastPrune.IsZero() && now.Sub(e.lastPrune) < pruneEvery {
		return
	}
	e.lastPrune = now
	n, err := e.o.Store.DeleteResolvedBefore(now.Add(-e.o.ResolvedRetention))
	e.pruned.Add(float64(n))
	if err != nil {
		e.logger.Warn("deleting resolved incidents past the retention", "retention", e.o.ResolvedRetention, "err", err)
		return
	}
	if n > 0 {
		e.logger.Info("deleted resolved incidents past the retention", "incidents", n, "retention", e.o.ResolvedRetention)
	}
}

// podMemory is how long a pod that left the view still counts in the topology: alerts about
// it (a crash-looping pod that a rollback deleted) keep arriving and resolving for a while,
// and must still be known as their workload's and node's.
const podMemory = 15 * time.Minute

// remember adds to topo the pods of earlier topologies seen within podMemory.
func (e *Engine) remember(topo *Topology, now time.Time) *Topology {
	if e.podSeen == nil {
		e.podSeen = map[string]time.Time{}
	}
	for p := range topo.PodWorkload {
		e.podSeen[p] = now
	}
	for p := range topo.PodNode {
		e.podSeen[p] = now
	}
	if old := e.topo; old != nil {
		for p, seen := range e.podSeen {
			if now.Sub(seen) > podMemory {
				delete(e.podSeen, p)
				continue
			}
			if _, ok := topo.PodWorkload[p]; !ok {
				if w, ok := old.PodWorkload[p]; ok {
					topo.PodWorkload[p] = w
				}
			}
			if _, ok := topo.PodNode[p]; !ok {
				if n, ok := old.PodNode[p]; ok {
					topo.PodNode[p] = n
				}
			}
		}
	}
	return topo
}

// commit puts changed incidents in the tracker (Tracker.commit) and moves the active-incident
// gauges by what they change: an evaluation costs what changed, not every incident held.
func (e *Engine) commit(changed ...*Incident) {
	for _, inc := range changed {
		if prev := e.tracker.active[inc.Key]; prev != nil && prev.ID == inc.ID {
			e.tally(prev, -1)
		}
		if inc.Active() {
			e.tally(inc, 1)
		}
	}
	e.tracker.commit(changed...)
}

// incidentKind is what fleetwatch_correlate_incidents counts by.
type incidentKind struct{ severity, scope string }

// tally counts an active incident in (d 1) or out (d -1) of the gauges; a series whose count
// reaches 0 goes.
func (e *Engine) tally(inc *Incident, d int) {
	k := incidentKind{inc.Severity, inc.Scope}
	e.kinds[k] += d
	if n := e.kinds[k]; n > 0 {
		e.incidents.WithLabelValues(k.severity, k.scope).Set(float64(n))
	} else {
		delete(e.kinds, k)
		e.incidents.DeleteLabelValues(k.severity, k.scope)
	}
	for _, c := range inc.Clusters {
		e.perCluster[c] += d
		if n := e.perCluster[c]; n > 0 {
			e.byCluster.WithLabelValues(c).Set(float64(n))
		} else {
			delete(e.perCluster, c)
			e.byCluster.DeleteLabelValues(c)
		}
	}
}

// account counts an incident that just opened or resolved.
func (e *Engine) account(inc *Incident, how string) {
	switch {
	case inc.Revision == 1:
		e.opened.WithLabelValues(inc.Severity, inc.Scope).Inc()
	case inc.State == StateResolved && inc.ResolvedAt.Equal(inc.UpdatedAt):
		if inc.MergedInto != "" {
			how = "merged"
		}
		e.resolved.WithLabelValues(inc.Severity, inc.Scope, how).Inc()
		e.duration.Observe(inc.ResolvedAt.Sub(inc.OpenedAt).Seconds())
	}
}

// Active returns copies of the active (open or acknowledged) incidents, without their alerts,
// labels or former labels, for consumers such as the console that list them. It
// does not wait for an evaluation in progress.
func (e *Engine) Active() []Incident {
	e.activeMtx.RLock()
	defer e.activeMtx.RUnlock()
	out := make([]Incident, 0, len(e.active))
	for _, inc := range e.active {
		c := *inc
		c.Labels, c.FormerLabels, c.Alerts = nil, nil, nil
		c.Clusters = append([]string(nil), inc.Clusters...)
		out = append(out, c)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// ActiveWithAlerts returns the active incidents with their alerts and routing labels, oldest
// first, for consumers such as remediation that act on what the alerts say (which cluster is
// silent, which workloads fail) and match playbooks on the routing labels. They are the
// engine's own, not copies (a copy of 100,000 incidents is 42 MB, and remediation reads them
// every evaluation): the engine never changes an incident once stored, so read them only.
func (e *Engine) ActiveWithAlerts() []*Incident {
	e.activeMtx.RLock()
	out := slices.Collect(maps.Values(e.active))
	e.activeMtx.RUnlock()
	slices.SortFunc(out, func(a, b *Incident) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// EachActive calls yield with each active incident, in no order, until it returns false;
// used as an iter.Seq. Unlike Active it copies nothing (a copy of 100,000 incidents is 42 MB):
// the incidents are the engine's, which never changes one once stored, so yield must only
// read them, must not keep them past the incident's next change if it needs them current, and
// must not call the engine (the iteration holds a read lock that changes wait for).
func (e *Engine) EachActive(yield func(*Incident) bool) {
	e.activeMtx.RLock()
	defer e.activeMtx.RUnlock()
	for _, inc := range e.active {
		if !yield(inc) {
			return
		}
	}
}

// track keeps a changed incident for activeIncidents. It shares the tracker's: an incident,
// once committed, is never changed (the tracker's plan and the API's changes make new ones, and
// so does a reload that fingerprints the alerts again), so readers need no copy. At 50,000
// active incidents the copies were 25 MB.
func (e *Engine) track(inc *Incident) {
	e.activeMtx.Lock()
	defer e.activeMtx.Unlock()
	if !inc.Active() {
		delete(e.active, inc.ID)
		return
	}
	e.active[inc.ID] = inc
}

// activeIncidents lists the active incidents that match f, newest first, from memory.
func (e *Engine) activeIncidents(f Filter) []*Incident {
	e.activeMtx.RLock()
	out := make([]*Incident, 0, len(e.active))
	for _, inc := range e.active {
		if f.match(inc) {
			out = append(out, inc)
		}
	}
	e.activeMtx.RUnlock()
	sort.Slice(out, func(a, b int) bool { return out[a].ID > out[b].ID })
	return out
}

// Acknowledge marks an active incident acknowledged by who.
func (e *Engine) Acknowledge(id, who string) (*Incident, error) {
	return e.acknowledgeAs(id, who, nil)
}

// Resolve resolves an active incident by hand.
func (e *Engine) Resolve(id string) (*Incident, error) {
	return e.resolveAs(id, nil)
}

// acknowledgeAs and resolveAs change an incident that allow (nil: all) allows; any other is not
// found, so that its existence does not leak.
func (e *Engine) acknowledgeAs(id, who string, allow func([]string) bool) (*Incident, error) {
	return e.change(id, allow, func(now time.Time) (*Incident, error) { return e.tracker.acknowledged(id, who, now) }, "")
}

func (e *Engine) resolveAs(id string, allow func([]string) bool) (*Incident, error) {
	return e.change(id, allow, func(now time.Time) (*Incident, error) { return e.tracker.resolved(id, now) }, "manual")
}

// Remediated records on an active incident what fleetwatch's remediation did about it; the
// changed incident goes to Alertmanager again. An incident no longer active is left as it
// was (ErrNotActive).
func (e *Engine) Remediated(id, text string) error {
	_, err := e.change(id, nil, func(now time.Time) (*Incident, error) { return e.tracker.remediated(id, text, now) }, "")
	return err
}

// change applies one change to an active incident all or nothing: f makes the changed copy,
// which is stored first and put in memory (tracker, active list, subscribers) only once
// stored. A store failure returns an error and leaves memory as it was. An incident that
// allow does not allow is ErrNotFound, whether or not it is active; an allowed one that is
// not active is ErrNotActive.
func (e *Engine) change(id string, allow func([]string) bool, f func(time.Time) (*Incident, error), how string) (*Incident, error) {
	e.mtx.Lock()
	defer e.mtx.Unlock()
	notFound := fmt.Errorf("incident %s: %w", id, ErrNotFound)
	if cur := e.tracker.find(id); cur == nil {
		inc, err := e.o.Store.Incident(id)
		switch {
		case errors.Is(err, ErrNotFound):
			return nil, notFound
		case err != nil:
			return nil, err
		case allow != nil && !allow(inc.Clusters):
			return nil, notFound
		}
	} else if allow != nil && !allow(cur.Clusters) {
		return nil, notFound
	}
	inc, err := f(e.o.Now())
	if err != nil || inc == nil {
		return nil, err
	}
	if err := e.o.Store.SaveIncidents([]*Incident{inc}, e.o.Alertmanagers); err != nil {
		return nil, fmt.Errorf("store incident %s: %w", id, err)
	}
	e.commit(inc)
	// A resolved incident's group opens a new incident if its alerts still fire.
	if e.replan == nil {
		e.replan = map[string]bool{}
	}
	e.replan[inc.Key] = true
	if how != "" {
		e.account(inc, how)
	}
	e.publish(inc)
	select {
	case e.deliver <- struct{}{}:
	default:
	}
	cp := *inc
	return &cp, nil
}

// Subscribe returns a channel that receives every incident change until cancel is called.
// A subscriber that does not keep up misses changes (the store has them all). The incidents
// are the engine's, which never changes one once stored (see track): read them only.
func (e *Engine) Subscribe() (<-chan *Incident, func()) {
	ch := make(chan *Incident, 64)
	e.subMtx.Lock()
	e.subs[ch] = struct{}{}
	e.subMtx.Unlock()
	return ch, func() {
		e.subMtx.Lock()
		delete(e.subs, ch)
		e.subMtx.Unlock()
	}
}

func (e *Engine) publish(inc *Incident) {
	e.track(inc)
	e.subMtx.Lock()
	defer e.subMtx.Unlock()
	for ch := range e.subs {
		select {
		case ch <- inc:
		default:
		}
	}
}

// deliverLoop posts queued incident states to every Alertmanager, retrying with backoff
// while one is down (nothing is dropped: the queue is in the store), and queues the active
// incidents again every ResendInterval so Alertmanager does not time them out.
func (e *Engine) deliverLoop(ctx context.Context) {
	backoff := map[string]time.Duration{}
	retryAt := map[string]time.Time{}
	resend := time.NewTicker(e.o.ResendInterval)
	defer resend.Stop()
	for {
		wait := time.Minute
		total := 0
		for _, am := range e.alertmanagers() {
			if t, ok := retryAt[am]; ok && time.Now().Before(t) {
				wait = min(wait, time.Until(t))
				continue
			}
			n, err := e.deliverTo(ctx, am)
			total += n
			if err != nil {
				b := min(max(2*backoff[am], 500*time.Millisecond), 30*time.Second)
				backoff[am], retryAt[am] = b, time.Now().Add(b)
				wait = min(wait, b)
				e.logger.Warn("delivering incidents to Alertmanager; retrying", "alertmanager", am, "in", b, "err", err)
				continue
			}
			delete(backoff, am)
			delete(retryAt, am)
		}
		e.queued.Set(float64(total))
		select {
		case <-ctx.Done():
			return
		case <-e.deliver:
		case <-time.After(wait):
		case <-resend.C:
			e.mtx.Lock()
			ids := make([]string, 0)
			for _, inc := range e.tracker.Active() {
				ids = append(ids, inc.ID)
			}
			e.mtx.Unlock()
			if err := e.o.Store.Enqueue(ids, e.alertmanagers()); err != nil {
				e.logger.Error("queueing incident resends", "err", err)
			}
		}
	}
}

// deliverTo posts everything queued for one Alertmanager in one request and returns how many
// were left queued.
func (e *Engine) deliverTo(ctx context.Context, am string) (int, error) {
	pending, err := e.o.Store.Outbox(am)
	if err != nil || len(pending) == 0 {
		return 0, err
	}
	u, _ := url.Parse(am)
	e.mtx.Lock()
	hc := e.clients[am]
	e.mtx.Unlock()
	if e.o.Transport != nil {
		hc = &http.Client{Transport: e.o.Transport}
	}
	c := amclient.New(httptransport.NewWithClient(u.Host, strings.TrimSuffix(u.Path, "/")+amclient.DefaultBasePath, []string{u.Scheme}, hc), strfmt.Default)
	now := e.o.Now()
	e.mtx.Lock()
	validFor := 4 * e.o.ResendInterval
	e.mtx.Unlock()
	payload := make(models.PostableAlerts, 0, len(pending))
	for _, p := range pending {
		payload = append(payload, e.postable(p.Incident, p.AlertNames, now, validFor)...)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.Alert.PostAlerts(amalert.NewPostAlertsParams().WithContext(rctx).WithAlerts(payload)); err != nil {
		e.sent.WithLabelValues(am, "error").Add(float64(len(payload)))
		return len(pending), err
	}
	e.sent.WithLabelValues(am, "success").Add(float64(len(payload)))
	for _, p := range pending {
		if err := e.o.Store.Delivered(p); err != nil {
			return len(pending), err
		}
	}
	return 0, nil
}

// postable is the one Alertmanager alert an incident is: routing labels, and the explanation
// in annotations, with its alerts counted by alertname (count). An active incident is valid
// for four resend intervals, as Prometheus does for its alerts; a resolved one ends when it
// resolved. Former label sets of the incident follow, resolved, so that Alertmanager does not
// keep them firing.
func (e *Engine) postable(inc *Incident, count map[string]int, now time.Time, validFor time.Duration) []*models.PostableAlert {
	names := make([]string, 0, len(count))
	total := 0
	for n, c := range count {
		total += c
		if c > 1 {
			n = fmt.Sprintf("%s x%d", n, c)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	ann := models.LabelSet{
		"summary":                     inc.RootCause,
		"root_cause":                  inc.RootCause,
		"explanation":                 inc.Explanation,
		"clusters":                    strings.Join(inc.Clusters, ","),
		"alerts":                      fmt.Sprintf("%d: %s", total, strings.Join(names, ", ")),
		amconfig.AnnotationIncidentID: inc.ID,
	}
	if inc.Image != "" {
		ann["image"] = inc.Image
	}
	if inc.AckedBy != "" {
		ann["acknowledged_by"] = inc.AckedBy
	}
	if inc.Remediation != "" {
		ann["remediation"] = inc.Remediation
	}
	end := now.Add(validFor)
	if !inc.Active() {
		end = inc.ResolvedAt
	}
	gen := ""
	if e.o.ExternalURL != "" {
		gen = strings.TrimSuffix(e.o.ExternalURL, "/") + "/api/v1/incidents/" + inc.ID
	}
	alert := func(ls map[string]string, end time.Time) *models.PostableAlert {
		return &models.PostableAlert{
			Alert:       models.Alert{Labels: models.LabelSet(maps.Clone(ls)), GeneratorURL: strfmt.URI(gen)},
			Annotations: ann,
			StartsAt:    strfmt.DateTime(inc.OpenedAt),
			EndsAt:      strfmt.DateTime(end),
		}
	}
	labels := inc.Labels
	if labels == nil {
		labels = inc.routingLabels()
	}
	out := []*models.PostableAlert{alert(labels, end)}
	formerEnd := now
	if end.Before(now) {
		formerEnd = end
	}
	for _, ls := range inc.FormerLabels {
		out = append(out, alert(ls, formerEnd))
	}
	return out
}
