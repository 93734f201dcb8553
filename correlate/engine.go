package correlate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-openapi/strfmt"
	amclient "github.com/prometheus/alertmanager/api/v2/client"
	amalert "github.com/prometheus/alertmanager/api/v2/client/alert"
	"github.com/prometheus/alertmanager/api/v2/models"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// IncidentAlertName is the alertname of the one Alertmanager alert each incident becomes.
const IncidentAlertName = "FleetwatchIncident"

// Options configure an Engine.
type Options struct {
	Store *Store
	// Query reads the topology from the view; nil correlates without it.
	Query QueryFunc
	Rules Rules
	// Interval is how often incidents are recomputed at the latest (a new alert triggers it
	// sooner); ResolveAfter the hysteresis before an incident whose alerts went away resolves;
	// ResendInterval how often active incidents are sent to Alertmanager again.
	Interval, ResolveAfter, ResendInterval time.Duration
	// Alertmanagers are base URLs; every incident goes to each.
	Alertmanagers []string
	// ExternalURL is fleetwatch's URL, for the incidents' links.
	ExternalURL string
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
	Now         func() time.Time
}

// Engine is the correlation stage: it takes alerts (Sink), computes incidents, keeps them in
// the store and delivers them to Alertmanager from the store's outbox.
type Engine struct {
	o       Options
	logger  *slog.Logger
	kick    chan struct{}
	deliver chan struct{}

	mtx     sync.Mutex // serializes evaluation and the tracker
	tracker *Tracker
	topo    *Topology

	subMtx sync.Mutex
	subs   map[chan *Incident]struct{}

	received  *prometheus.CounterVec
	incidents *prometheus.GaugeVec
	sent      *prometheus.CounterVec
	queued    prometheus.Gauge
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
		o.Interval = 5 * time.Second
	}
	if o.ResendInterval <= 0 {
		o.ResendInterval = time.Minute
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
	e := &Engine{
		o: o, logger: o.Logger, kick: make(chan struct{}, 1), deliver: make(chan struct{}, 1),
		tracker: NewTracker(o.ResolveAfter, o.Rules, active),
		subs:    map[chan *Incident]struct{}{},
	}
	f := promauto.With(o.Registerer)
	e.received = f.NewCounterVec(prometheus.CounterOpts{Name: "fleetwatch_correlate_alerts_received_total", Help: "Alerts taken in by the correlation engine, by source."}, []string{"source"})
	e.incidents = f.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetwatch_correlate_incidents", Help: "Active incidents, by severity and scope."}, []string{"severity", "scope"})
	e.sent = f.NewCounterVec(prometheus.CounterOpts{Name: "fleetwatch_correlate_notifications_total", Help: "Incident states posted to Alertmanager, by Alertmanager and result."}, []string{"alertmanager", "result"})
	e.queued = f.NewGauge(prometheus.GaugeOpts{Name: "fleetwatch_correlate_outbox", Help: "Incident states waiting to be delivered to Alertmanager."})
	return e, nil
}

// Settings are what a configuration reload may change.
type Settings struct {
	Rules                                  Rules
	Interval, ResolveAfter, ResendInterval time.Duration
	Alertmanagers                          []string
}

// ApplySettings changes the engine's rules, hysteresis and Alertmanagers. Incident states
// still queued for an Alertmanager that is no longer configured stay in the store until it
// is configured again.
func (e *Engine) ApplySettings(s Settings) error {
	for _, a := range s.Alertmanagers {
		if u, err := url.Parse(a); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("correlate: alertmanager %q: not an http(s) URL", a)
		}
	}
	e.mtx.Lock()
	defer e.mtx.Unlock()
	e.o.Rules = s.Rules
	e.tracker.fingerprint = s.Rules.Fingerprint
	if s.ResolveAfter > 0 {
		e.o.ResolveAfter, e.tracker.ResolveAfter = s.ResolveAfter, s.ResolveAfter
	}
	if s.Interval > 0 {
		e.o.Interval = s.Interval
	}
	if s.ResendInterval > 0 {
		e.o.ResendInterval = s.ResendInterval
	}
	e.o.Alertmanagers = append([]string(nil), s.Alertmanagers...)
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
	e.mtx.Lock()
	fp := e.o.Rules.Fingerprint
	e.mtx.Unlock()
	if err := e.o.Store.PutAlerts(alerts, fp, e.o.Now()); err != nil {
		return fmt.Errorf("correlate: store alerts: %w", err)
	}
	for _, a := range alerts {
		e.received.WithLabelValues(a.Source).Inc()
	}
	select {
	case e.kick <- struct{}{}:
	default:
	}
	return nil
}

// Run evaluates and delivers until ctx is done.
func (e *Engine) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.deliverLoop(ctx) }()
	tick := time.NewTicker(e.o.Interval)
	defer tick.Stop()
	for {
		if err := e.Evaluate(ctx); err != nil {
			e.logger.Error("correlating alerts", "err", err)
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
		case <-e.kick:
			// Let a burst of sends (one per rule group, one per member) land first.
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// Evaluate recomputes the incidents from the stored alerts now.
func (e *Engine) Evaluate(ctx context.Context) error {
	e.mtx.Lock()
	defer e.mtx.Unlock()
	now := e.o.Now()
	alerts, err := e.o.Store.ActiveAlerts(now, e.o.ResolveAfter+time.Hour)
	if err != nil {
		return err
	}
	if e.o.Query != nil {
		topo, err := LoadTopology(ctx, e.o.Query, now)
		if err != nil {
			e.logger.Warn("reading the topology; using the last one", "err", err)
		} else {
			e.topo = topo
		}
	}
	changed := e.tracker.Update(now, Correlate(alerts, e.topo, e.o.Rules))
	if err := e.o.Store.SaveIncidents(changed, e.o.Alertmanagers); err != nil {
		return fmt.Errorf("store incidents: %w", err)
	}
	e.incidents.Reset()
	for _, inc := range e.tracker.Active() {
		e.incidents.WithLabelValues(inc.Severity, inc.Scope).Inc()
	}
	for _, inc := range changed {
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

// Acknowledge marks an active incident acknowledged.
func (e *Engine) Acknowledge(id, who string) (*Incident, error) {
	return e.change(func(now time.Time) (*Incident, error) { return e.tracker.Acknowledge(id, who, now) })
}

// Resolve resolves an active incident by hand.
func (e *Engine) Resolve(id string) (*Incident, error) {
	return e.change(func(now time.Time) (*Incident, error) { return e.tracker.Resolve(id, now) })
}

func (e *Engine) change(f func(time.Time) (*Incident, error)) (*Incident, error) {
	e.mtx.Lock()
	defer e.mtx.Unlock()
	inc, err := f(e.o.Now())
	if err != nil {
		return nil, err
	}
	if err := e.o.Store.SaveIncidents([]*Incident{inc}, e.o.Alertmanagers); err != nil {
		return nil, err
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
// A subscriber that does not keep up misses changes (the store has them all).
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
	cp := *inc
	e.subMtx.Lock()
	defer e.subMtx.Unlock()
	for ch := range e.subs {
		select {
		case ch <- &cp:
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
	c := amclient.NewHTTPClientWithConfig(strfmt.Default, &amclient.TransportConfig{
		Host: u.Host, BasePath: strings.TrimSuffix(u.Path, "/") + amclient.DefaultBasePath, Schemes: []string{u.Scheme},
	})
	now := e.o.Now()
	e.mtx.Lock()
	validFor := 4 * e.o.ResendInterval
	e.mtx.Unlock()
	payload := make(models.PostableAlerts, 0, len(pending))
	for _, p := range pending {
		payload = append(payload, e.postable(p.Incident, now, validFor))
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
// in annotations. An active incident is valid for four resend intervals, as Prometheus does
// for its alerts; a resolved one ends when it resolved.
func (e *Engine) postable(inc *Incident, now time.Time, validFor time.Duration) *models.PostableAlert {
	labels := models.LabelSet{
		"alertname":   IncidentAlertName,
		"incident_id": inc.ID,
		"severity":    inc.Severity,
		"scope":       inc.Scope,
	}
	if inc.Scope == "cluster" && len(inc.Clusters) == 1 {
		labels["cluster"] = inc.Clusters[0]
	}
	if inc.Team != "" {
		labels["team"] = inc.Team
	}
	names := make([]string, 0, len(inc.Alerts))
	for _, a := range inc.Alerts {
		names = append(names, a.Labels["alertname"])
	}
	sort.Strings(names)
	ann := models.LabelSet{
		"summary":     inc.RootCause,
		"root_cause":  inc.RootCause,
		"explanation": inc.Explanation,
		"clusters":    strings.Join(inc.Clusters, ","),
		"alerts":      fmt.Sprintf("%d: %s", len(inc.Alerts), strings.Join(names, ", ")),
	}
	if inc.Image != "" {
		ann["image"] = inc.Image
	}
	if inc.AckedBy != "" {
		ann["acknowledged_by"] = inc.AckedBy
	}
	end := now.Add(validFor)
	if !inc.Active() {
		end = inc.ResolvedAt
	}
	gen := ""
	if e.o.ExternalURL != "" {
		gen = strings.TrimSuffix(e.o.ExternalURL, "/") + "/api/v1/incidents/" + inc.ID
	}
	return &models.PostableAlert{
		Alert:       models.Alert{Labels: labels, GeneratorURL: strfmt.URI(gen)},
		Annotations: ann,
		StartsAt:    strfmt.DateTime(inc.OpenedAt),
		EndsAt:      strfmt.DateTime(end),
	}
}
