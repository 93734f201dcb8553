package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promconfig "github.com/prometheus/common/config"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/apiresp"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/journal"
	"github.com/fleetwatch/fleetwatch/remediate"
)

// Sources: the journals events come from, and the first part of an event type.
const (
	SourceIncident    = "incident"
	SourceRemediation = "remediation"
)

// PayloadVersion is the version of the JSON payload (hooks/README.md). A change that removes
// or renames a field raises it; added fields do not.
const PayloadVersion = "1"

// EventTypes are every event type a receiver can get, "<source>.<event>".
var EventTypes = func() []string {
	var out []string
	for _, k := range []string{correlate.EventOpened, correlate.EventChanged, correlate.EventAcknowledged, correlate.EventResolved} {
		out = append(out, SourceIncident+"."+k)
	}
	for _, k := range []string{
		remediate.EventPlanned, remediate.EventWaiting, remediate.EventApproved, remediate.EventDenied,
		remediate.EventExecuted, remediate.EventVerified, remediate.EventRolledBack, remediate.EventFrozen,
		remediate.StateHeld, remediate.StateSucceeded, remediate.StateFailed, remediate.StateExpired,
		remediate.StateCancelled, remediate.StateRefused, remediate.StateNotified, remediate.StateInconclusive,
	} {
		out = append(out, SourceRemediation+"."+k)
	}
	return out
}()

// Metric names.
const (
	MetricDeliveries  = "fleetwatch_hook_deliveries_total"
	MetricDropped     = "fleetwatch_hook_events_dropped_total"
	MetricPending     = "fleetwatch_hook_pending_events"
	MetricLastSuccess = "fleetwatch_hook_last_success_timestamp_seconds"
)

// Source is a journal the hooks deliver from (correlate.Store's and remediate.Store's).
type Source struct {
	Name   string
	Events func(after uint64, limit int) ([]journal.Entry, error)
	Head   func() (uint64, error)
	Trim   func(upTo uint64) error
}

// Options configure a Dispatcher.
type Options struct {
	// Path is the bbolt file of the receivers' cursors.
	Path    string
	Sources []Source
	// Incident looks up an incident by ID: a remediation event carries its incident, and a
	// receiver's scope, severity and team filters apply to it.
	Incident func(id string) (*correlate.Incident, error)
	// Tokens signs the approval links of remediation.waiting_approval events (nil: none).
	Tokens *Tokens
	// ExternalURL is where fleetwatch is reached: the base of the links in payloads.
	ExternalURL string
	// PollInterval is how often each receiver looks for new events when not woken (1s).
	PollInterval time.Duration
	// Transport replaces the receivers' HTTP transport (tests).
	Transport  http.RoundTripper
	UserAgent  string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Dispatcher delivers journaled events to the configured receivers: each receiver in its own
// goroutine, in journal order, signed, retried with backoff until answered 2xx.
type Dispatcher struct {
	o      Options
	st     *store
	logger *slog.Logger

	mu        sync.Mutex
	cfg       []*config.HookReceiverConfig
	workers   map[string]*worker
	reconcile chan struct{}

	deliveries  *prometheus.CounterVec
	dropped     *prometheus.CounterVec
	pending     *prometheus.GaugeVec
	lastSuccess *prometheus.GaugeVec
}

// New opens the cursor store. Run delivers.
func New(o Options) (*Dispatcher, error) {
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.UserAgent == "" {
		o.UserAgent = "fleetwatch-hooks"
	}
	st, err := openStore(o.Path)
	if err != nil {
		return nil, err
	}
	d := &Dispatcher{
		o: o, st: st, logger: o.Logger, workers: map[string]*worker{}, reconcile: make(chan struct{}, 1),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricDeliveries, Help: "Webhook delivery attempts by receiver and result (success, failure).",
		}, []string{"receiver", "result"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricDropped, Help: "Events a receiver never got: still undelivered past its max_event_age.",
		}, []string{"receiver"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricPending, Help: "Journaled events a receiver has not taken yet (matching its filters or not).",
		}, []string{"receiver"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricLastSuccess, Help: "When a delivery to the receiver last succeeded.",
		}, []string{"receiver"}),
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{d.deliveries, d.dropped, d.pending, d.lastSuccess} {
			if err := o.Registerer.Register(c); err != nil {
				st.db.Close()
				return nil, err
			}
		}
	}
	return d, nil
}

// Close closes the cursor store; Run must have returned.
func (d *Dispatcher) Close() error { return d.st.db.Close() }

// Check refuses what config.Load cannot know: event types that do not exist.
func Check(c config.HooksConfig) error {
	for i, r := range c.Receivers {
		for _, e := range r.Events {
			if !slices.Contains(EventTypes, e) {
				return fmt.Errorf("hooks.receivers[%d] (%q): events: %q is not an event type (%s)", i, r.Name, e, strings.Join(EventTypes, ", "))
			}
		}
		if _, err := promconfig.NewClientFromConfig(r.HTTPClientConfig, "hook_"+r.Name); err != nil {
			return fmt.Errorf("hooks.receivers[%d] (%q): %w", i, r.Name, err)
		}
	}
	return nil
}

// ApplyConfig switches to the receivers of c (checked with Check): a new or changed receiver
// (re)starts, a removed one stops and its cursors are forgotten.
func (d *Dispatcher) ApplyConfig(c config.HooksConfig) error {
	if err := Check(c); err != nil {
		return err
	}
	d.mu.Lock()
	d.cfg = c.Receivers
	d.mu.Unlock()
	select {
	case d.reconcile <- struct{}{}:
	default:
	}
	return nil
}

// Wake makes every receiver look for new events now (the incident engine changed something).
func (d *Dispatcher) Wake() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.workers {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// trimEvery is how often the journals lose what every receiver took.
const trimEvery = time.Minute

// Run delivers until ctx ends, and returns once every receiver's goroutine stopped.
func (d *Dispatcher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer func() {
		d.mu.Lock()
		for name, w := range d.workers {
			w.cancel()
			delete(d.workers, name)
		}
		d.mu.Unlock()
		wg.Wait()
	}()
	trim := time.NewTicker(trimEvery)
	defer trim.Stop()
	d.apply(ctx, &wg)
	d.trim()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.reconcile:
			d.apply(ctx, &wg)
		case <-trim.C:
			d.trim()
		}
	}
}

// apply starts, restarts and stops workers to match the configuration.
func (d *Dispatcher) apply(ctx context.Context, wg *sync.WaitGroup) {
	d.mu.Lock()
	defer d.mu.Unlock()
	keep := map[string]bool{}
	for _, rc := range d.cfg {
		keep[rc.Name] = true
		if w, ok := d.workers[rc.Name]; ok {
			if reflect.DeepEqual(w.cfg, rc) {
				continue
			}
			w.cancel()
		}
		hc, err := promconfig.NewClientFromConfig(rc.HTTPClientConfig, "hook_"+rc.Name)
		if err != nil {
			// Check refused this already; a receiver that cannot be built is not started.
			d.logger.Error("webhook receiver", "receiver", rc.Name, "err", err)
			continue
		}
		if d.o.Transport != nil {
			hc.Transport = d.o.Transport
		}
		hc.Timeout = time.Duration(rc.Timeout)
		// Every series of the receiver exists from the start, at 0, so that a rate or an
		// increase over it says 0 rather than nothing.
		d.deliveries.WithLabelValues(rc.Name, "success")
		d.deliveries.WithLabelValues(rc.Name, "failure")
		d.dropped.WithLabelValues(rc.Name)
		wctx, cancel := context.WithCancel(ctx)
		w := &worker{cfg: rc, client: hc, wake: make(chan struct{}, 1), cancel: cancel, status: ReceiverStatus{Name: rc.Name, URL: rc.URL, Events: rc.Events}}
		d.workers[rc.Name] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.work(wctx, w)
		}()
	}
	for name, w := range d.workers {
		if !keep[name] {
			w.cancel()
			delete(d.workers, name)
			d.pending.DeleteLabelValues(name)
			d.lastSuccess.DeleteLabelValues(name)
			d.dropped.DeleteLabelValues(name)
			d.deliveries.DeleteLabelValues(name, "success")
			d.deliveries.DeleteLabelValues(name, "failure")
		}
	}
	if err := d.st.forget(keep); err != nil {
		d.logger.Error("forgetting removed webhook receivers", "err", err)
	}
}

// trim deletes from each journal what every receiver has taken (everything, without receivers).
func (d *Dispatcher) trim() {
	cursors, err := d.st.cursors()
	if err != nil {
		d.logger.Error("reading webhook cursors", "err", err)
		return
	}
	d.mu.Lock()
	names := make([]string, 0, len(d.cfg))
	for _, rc := range d.cfg {
		names = append(names, rc.Name)
	}
	d.mu.Unlock()
	for _, src := range d.o.Sources {
		upTo, err := src.Head()
		if err != nil {
			d.logger.Error("reading a journal", "source", src.Name, "err", err)
			continue
		}
		for _, n := range names {
			if c, ok := cursors[n][src.Name]; ok {
				upTo = min(upTo, c)
			}
		}
		if err := src.Trim(upTo); err != nil {
			d.logger.Error("trimming a journal", "source", src.Name, "err", err)
		}
	}
}

// worker is one receiver's delivery loop and what it reports.
type worker struct {
	cfg    *config.HookReceiverConfig
	client *http.Client
	wake   chan struct{}
	cancel context.CancelFunc

	mu     sync.Mutex
	status ReceiverStatus
}

// ReceiverStatus is a receiver's delivery state (GET /api/v1/hooks).
type ReceiverStatus struct {
	Name   string   `json:"name"`
	URL    string   `json:"url"`
	Events []string `json:"events,omitempty"`
	// Pending counts the journaled events it has not taken yet, matching or not.
	Pending             uint64    `json:"pending"`
	Delivered           uint64    `json:"delivered"`
	Failed              uint64    `json:"failed_attempts"`
	Dropped             uint64    `json:"dropped"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	LastAttempt         time.Time `json:"last_attempt,omitzero"`
	LastSuccess         time.Time `json:"last_success,omitzero"`
	LastError           string    `json:"last_error,omitempty"`
	NextAttempt         time.Time `json:"next_attempt,omitzero"`
}

func (w *worker) update(f func(*ReceiverStatus)) {
	w.mu.Lock()
	f(&w.status)
	w.mu.Unlock()
}

// Status is every receiver's delivery state, by name.
func (d *Dispatcher) Status() []ReceiverStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]ReceiverStatus, 0, len(d.workers))
	for _, w := range d.workers {
		w.mu.Lock()
		out = append(out, w.status)
		w.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b ReceiverStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Handler serves GET /api/v1/hooks: the receivers' delivery state.
func (d *Dispatcher) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			apiresp.Error(w, http.StatusMethodNotAllowed, "bad_data", fmt.Errorf("%s: use GET", r.Method))
			return
		}
		apiresp.Success(w, http.StatusOK, d.Status())
	})
}

// work delivers to one receiver until ctx ends: everything pending, then waits for a wake or
// the poll interval; after a failure it waits out the backoff and tries the same event again.
func (d *Dispatcher) work(ctx context.Context, w *worker) {
	var backoff time.Duration
	for {
		err := d.drain(ctx, w)
		if ctx.Err() != nil {
			return
		}
		wake := w.wake
		wait := d.o.PollInterval
		if err != nil {
			backoff = min(max(2*backoff, time.Duration(w.cfg.MinBackoff)), time.Duration(w.cfg.MaxBackoff))
			wait, wake = backoff, nil // a wake does not cut a backoff short
			next := time.Now().Add(backoff)
			w.update(func(s *ReceiverStatus) { s.NextAttempt = next })
			d.logger.Warn("webhook delivery failed; retrying", "receiver", w.cfg.Name, "in", backoff, "err", err)
		} else {
			backoff = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// batch is how many journal entries a receiver reads at a time.
const batch = 64

// drain delivers what the receiver has not taken from every source, in order, and stops at
// the first failed delivery.
func (d *Dispatcher) drain(ctx context.Context, w *worker) error {
	var pending uint64
	defer func() {
		d.pending.WithLabelValues(w.cfg.Name).Set(float64(pending))
		w.update(func(s *ReceiverStatus) { s.Pending = pending })
	}()
	var failed error
	for _, src := range d.o.Sources {
		head, err := src.Head()
		if err != nil {
			return err
		}
		cur, ok, err := d.st.cursor(w.cfg.Name, src.Name)
		if err != nil {
			return err
		}
		if !ok {
			// A new receiver starts at the newest event, not with the whole history.
			if err := d.st.setCursor(w.cfg.Name, src.Name, head); err != nil {
				return err
			}
			cur = head
		}
		if failed == nil {
			cur, failed = d.drainSource(ctx, w, src, cur)
		}
		if head > cur {
			pending += head - cur
		}
	}
	return failed
}

func (d *Dispatcher) drainSource(ctx context.Context, w *worker, src Source, cur uint64) (uint64, error) {
	saved := cur
	save := func() error {
		if cur == saved {
			return nil
		}
		saved = cur
		return d.st.setCursor(w.cfg.Name, src.Name, cur)
	}
	for {
		entries, err := src.Events(cur, batch)
		if err != nil || len(entries) == 0 {
			return cur, err
		}
		for _, e := range entries {
			if age := time.Since(e.Time); age > time.Duration(w.cfg.MaxEventAge) {
				d.dropped.WithLabelValues(w.cfg.Name).Inc()
				w.update(func(s *ReceiverStatus) { s.Dropped++ })
				d.logger.Warn("webhook event dropped: undelivered past max_event_age", "receiver", w.cfg.Name, "event", src.Name+"."+e.Kind, "seq", e.Seq, "age", age)
			} else if ev, ok := d.event(w.cfg, src.Name, e); ok {
				if err := d.deliver(ctx, w, ev); err != nil {
					return cur, errors.Join(err, save())
				}
				cur = e.Seq
				if err := save(); err != nil {
					return cur, err
				}
				continue
			}
			cur = e.Seq
		}
		if err := save(); err != nil {
			return cur, err
		}
	}
}

// Event is the JSON body of a delivery, version PayloadVersion (hooks/README.md).
type Event struct {
	Version string `json:"version"`
	// ID is the idempotency key: the same for every attempt of this event to this receiver.
	ID       string    `json:"id"`
	Type     string    `json:"type"`
	Time     time.Time `json:"time"`
	Receiver string    `json:"receiver"`
	// Incident is the incident of the event: as it was changed for incident events, as it is
	// now for remediation events (absent when it is no longer kept).
	Incident    *correlate.Incident    `json:"incident,omitempty"`
	Remediation *remediate.Remediation `json:"remediation,omitempty"`
	// Approval is on remediation.waiting_approval: how to decide from where the event lands.
	Approval *ApprovalLink `json:"approval,omitempty"`
	Links    Links         `json:"links"`
}

// ApprovalLink is a single-use, expiring approval request.
type ApprovalLink struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	// URL takes a POST of {"decision": "approve"|"deny", "comment": "..."} from an identity
	// with the operate role; a GET says what it decides.
	URL string `json:"url"`
}

// Links lead to the console.
type Links struct {
	Incident    string `json:"incident,omitempty"`
	Remediation string `json:"remediation,omitempty"`
}

// event builds the payload of entry e for receiver rc, or false when rc's filters skip it.
func (d *Dispatcher) event(rc *config.HookReceiverConfig, source string, e journal.Entry) (*Event, bool) {
	typ := source + "." + e.Kind
	if len(rc.Events) > 0 && !slices.Contains(rc.Events, typ) {
		return nil, false
	}
	ev := &Event{
		Version: PayloadVersion, ID: fmt.Sprintf("%s-%d-%s", source, e.Seq, e.Subject), Type: typ, Time: e.Time, Receiver: rc.Name,
	}
	switch source {
	case SourceIncident:
		ev.Incident = &correlate.Incident{}
		if err := json.Unmarshal(e.Payload, ev.Incident); err != nil {
			d.logger.Error("webhook event: undecodable incident; skipped", "seq", e.Seq, "err", err)
			return nil, false
		}
	case SourceRemediation:
		ev.Remediation = &remediate.Remediation{}
		if err := json.Unmarshal(e.Payload, ev.Remediation); err != nil {
			d.logger.Error("webhook event: undecodable remediation; skipped", "seq", e.Seq, "err", err)
			return nil, false
		}
		if d.o.Incident != nil && e.Incident != "" {
			if inc, err := d.o.Incident(e.Incident); err == nil {
				ev.Incident = inc
			}
		}
		if e.Kind == remediate.EventWaiting && d.o.Tokens != nil {
			if tok := d.o.Tokens.Token(ev.Remediation); tok != "" {
				st := ev.Remediation.Steps[ev.Remediation.Current]
				ev.Approval = &ApprovalLink{Token: tok, ExpiresAt: st.Approval.ExpiresAt, URL: d.o.ExternalURL + "/api/v1/approvals/" + tok}
			}
		}
		ev.Links.Remediation = d.o.ExternalURL + "/remediations/" + ev.Remediation.ID
	}
	if e.Incident != "" {
		ev.Links.Incident = d.o.ExternalURL + "/incidents/" + e.Incident
	}
	if !matches(rc.Match, ev.Incident, e.Clusters) {
		return nil, false
	}
	return ev, true
}

// matches says whether an event of inc (nil: unknown) about clusters passes m: every listed
// field must match; an incident field cannot match an unknown incident.
func matches(m config.HookMatchConfig, inc *correlate.Incident, clusters []string) bool {
	field := func(want []string, have func(*correlate.Incident) string) bool {
		return len(want) == 0 || (inc != nil && slices.Contains(want, have(inc)))
	}
	return field(m.Scope, func(i *correlate.Incident) string { return i.Scope }) &&
		field(m.Severity, func(i *correlate.Incident) string { return i.Severity }) &&
		field(m.Team, func(i *correlate.Incident) string { return i.Team }) &&
		(len(m.Cluster) == 0 || slices.ContainsFunc(clusters, func(c string) bool { return slices.Contains(m.Cluster, c) }))
}

// deliver makes one attempt: POST the signed event; 2xx is delivered.
func (d *Dispatcher) deliver(ctx context.Context, w *worker, ev *Event) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	now := time.Now()
	ts, sig := Sign(w.cfg.Secrets, now, body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.o.UserAgent)
	req.Header.Set(HeaderEvent, ev.Type)
	req.Header.Set(HeaderDelivery, ev.ID)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, sig)
	resp, err := w.client.Do(req)
	if err == nil {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			err = fmt.Errorf("%s answered %s: %s", w.cfg.URL, resp.Status, strings.TrimSpace(string(msg)))
		}
	}
	if err != nil {
		d.deliveries.WithLabelValues(w.cfg.Name, "failure").Inc()
		w.update(func(s *ReceiverStatus) {
			s.Failed++
			s.ConsecutiveFailures++
			s.LastAttempt, s.LastError = now, err.Error()
		})
		return fmt.Errorf("%s %s: %w", ev.Type, ev.ID, err)
	}
	d.deliveries.WithLabelValues(w.cfg.Name, "success").Inc()
	d.lastSuccess.WithLabelValues(w.cfg.Name).Set(float64(now.UnixNano()) / 1e9)
	w.update(func(s *ReceiverStatus) {
		s.Delivered++
		s.ConsecutiveFailures = 0
		s.LastAttempt, s.LastSuccess, s.LastError, s.NextAttempt = now, now, "", time.Time{}
	})
	return nil
}
