package input

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/common/model"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/clusterauth"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

// Paths the Handler serves.
const (
	// PathAlertsV2 is Alertmanager's API v2 endpoint that Prometheus's notifier posts to.
	PathAlertsV2 = "/api/v2/alerts"
	// PathWebhook is where a member cluster's Alertmanager webhook_config points.
	PathWebhook = "/api/v1/alertmanager/webhook"
)

// Sources, as set in correlate.Alert.Source.
const (
	SourcePrometheus   = "prometheus"
	SourceAlertmanager = "alertmanager"
)

const (
	// DefaultMaxBodyBytes is far above what Prometheus sends: one batch holds at most 256
	// alerts of typically a kilobyte or two.
	DefaultMaxBodyBytes = 4 << 20
	// MaxEndsAtAhead is how far ahead an alert's endsAt may be and still be believed. A
	// Prometheus sets it four evaluation or resend intervals ahead; one further than this is
	// taken for a client that does not manage endsAt, and gets the resolve timeout instead, so
	// that an alert its sender forgot does not stay firing for years.
	MaxEndsAtAhead = 24 * time.Hour
)

// The resolve timeouts' defaults are those of correlate.resolve_timeout and
// correlate.webhook_resolve_timeout (internal/config defines them).
var (
	// DefaultResolveTimeout is Alertmanager's default global.resolve_timeout.
	DefaultResolveTimeout = time.Duration(config.DefaultCorrelate.ResolveTimeout)
	// DefaultWebhookResolveTimeout outlasts Alertmanager's default repeat_interval (4h) plus
	// its group_interval (5m): a forwarding Alertmanager with default timing lists a firing
	// alert again before it expires.
	DefaultWebhookResolveTimeout = time.Duration(config.DefaultCorrelate.WebhookResolveTimeout)
)

// clusterLabel is the label that names the cluster an alert is about.
const clusterLabel = config.ClusterLabel

// Options configure a Handler.
type Options struct {
	// Sink is where accepted alerts go. Required.
	Sink correlate.Sink
	// MaxBodyBytes is the largest request body accepted (413 above it); 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// ResolveTimeout is how long an alert posted to the API v2 without endsAt (or with one
	// more than MaxEndsAtAhead ahead) stays active unless posted again, as Alertmanager's
	// resolve_timeout; 0 means DefaultResolveTimeout. Prometheus always sets endsAt, so this
	// only concerns other clients. correlate.resolve_timeout replaces it (ApplyConfig).
	ResolveTimeout time.Duration
	// WebhookResolveTimeout is how long a firing alert from a webhook stays active unless a
	// notification lists it again; 0 means DefaultWebhookResolveTimeout.
	// correlate.webhook_resolve_timeout replaces it (ApplyConfig).
	WebhookResolveTimeout time.Duration
	// Logger defaults to discarding; Registerer to not registering metrics.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now defaults to time.Now.
	Now func() time.Time
}

// Handler serves PathAlertsV2 and PathWebhook. Configure it with ApplyConfig before it accepts
// anything: with no clusters every request is 401.
type Handler struct {
	opts    Options
	logger  *slog.Logger
	metrics *metrics
	auth    atomic.Pointer[clusterauth.Table]
	// timeouts are the resolve timeouts in force: Options', or the configuration's.
	timeouts atomic.Pointer[timeouts]
	mux      *http.ServeMux
}

// timeouts are how long a firing alert without (a believable) endsAt stays active unless
// sent again, by input.
type timeouts struct {
	alertsV2, webhook time.Duration
}

// New returns a Handler.
func New(o Options) (*Handler, error) {
	if o.Sink == nil {
		return nil, errors.New("correlate/input: Options.Sink is required")
	}
	if o.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("correlate/input: Options.MaxBodyBytes is negative (%d)", o.MaxBodyBytes)
	}
	if o.ResolveTimeout < 0 {
		return nil, fmt.Errorf("correlate/input: Options.ResolveTimeout is negative (%s)", o.ResolveTimeout)
	}
	if o.WebhookResolveTimeout < 0 {
		return nil, fmt.Errorf("correlate/input: Options.WebhookResolveTimeout is negative (%s)", o.WebhookResolveTimeout)
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.ResolveTimeout == 0 {
		o.ResolveTimeout = DefaultResolveTimeout
	}
	if o.WebhookResolveTimeout == 0 {
		o.WebhookResolveTimeout = DefaultWebhookResolveTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	h := &Handler{
		opts:    o,
		logger:  o.Logger.With("component", "correlate/input"),
		metrics: newMetrics(o.Registerer),
		mux:     http.NewServeMux(),
	}
	h.auth.Store(clusterauth.New(nil))
	h.timeouts.Store(&timeouts{alertsV2: o.ResolveTimeout, webhook: o.WebhookResolveTimeout})
	// Method-qualified patterns answer other methods 405 with an Allow header.
	h.mux.Handle("POST "+PathAlertsV2, h.endpoint(SourcePrometheus, h.decodeAlertsV2))
	h.mux.Handle("POST "+PathWebhook, h.endpoint(SourceAlertmanager, h.decodeWebhook))
	return h, nil
}

// ApplyConfig replaces the clusters' credentials: the same ones they remote-write with, so a
// federated cluster (no credentials) cannot send alerts. It also takes correlate.resolve_timeout
// and correlate.webhook_resolve_timeout (unset: Options'). Requests already being handled
// finish under the old ones.
func (h *Handler) ApplyConfig(cfg *config.Config) error {
	t := timeouts{alertsV2: h.opts.ResolveTimeout, webhook: h.opts.WebhookResolveTimeout}
	if d := time.Duration(cfg.Correlate.ResolveTimeout); d > 0 {
		t.alertsV2 = d
	}
	if d := time.Duration(cfg.Correlate.WebhookResolveTimeout); d > 0 {
		t.webhook = d
	}
	h.auth.Store(clusterauth.New(cfg.Clusters))
	h.timeouts.Store(&t)
	return nil
}

// ServeHTTP serves PathAlertsV2 and PathWebhook; anything else is 404 (405 for another method
// on one of them). Mount it on both paths, or on a prefix that covers them.
func (h *Handler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	h.mux.ServeHTTP(w, req)
}

// decodeFunc turns a request body from an authenticated cluster into alerts, or into a reason
// to reject the whole request with 400.
type decodeFunc func(body []byte, cluster string, now time.Time) ([]correlate.Alert, error)

// endpoint does what both ways in share: authenticate, read a bounded body, decode all or
// nothing, ingest, and answer only once the Sink has answered.
func (h *Handler) endpoint(source string, decode decodeFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		cluster, ok := h.auth.Load().Authenticate(req)
		if !ok {
			w.Header().Set("WWW-Authenticate", clusterauth.Challenge)
			h.reply(w, source, "", http.StatusUnauthorized, "unknown or missing cluster credentials")
			return
		}
		if ct := req.Header.Get("Content-Type"); ct != "" {
			if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
				h.reply(w, source, cluster, http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported content type %q, want application/json", ct))
				return
			}
		}
		limit := h.opts.MaxBodyBytes
		if req.ContentLength > limit {
			h.reply(w, source, cluster, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes exceeds the limit of %d bytes", req.ContentLength, limit))
			return
		}
		buf := bodies.Get().(*bytes.Buffer)
		defer putBody(buf)
		buf.Reset()
		if req.ContentLength > 0 {
			// Room for the body and the read that finds its end: no growing copies.
			buf.Grow(int(req.ContentLength) + bytes.MinRead)
		}
		_, err := buf.ReadFrom(http.MaxBytesReader(w, req.Body, limit))
		body := buf.Bytes() // decoded into copies: the buffer goes back to the pool after
		if err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				h.reply(w, source, cluster, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds the limit of %d bytes", limit))
				return
			}
			h.reply(w, source, cluster, http.StatusBadRequest, "read request body: "+err.Error())
			return
		}
		alerts, err := decode(body, cluster, h.opts.Now())
		if err != nil {
			h.logger.Warn("alerts rejected", "source", source, "cluster", cluster, "err", err)
			h.reply(w, source, cluster, http.StatusBadRequest, err.Error())
			return
		}
		if len(alerts) > 0 {
			if err := h.opts.Sink.Ingest(req.Context(), alerts); err != nil {
				h.logger.Error("ingest alerts", "source", source, "cluster", cluster, "alerts", len(alerts), "err", err)
				// 503, not 500: the sender is to try again (Alertmanager retries the notification,
				// Prometheus sends its alerts again after its resend delay).
				h.reply(w, source, cluster, http.StatusServiceUnavailable, "ingest alerts: "+err.Error())
				return
			}
			h.metrics.alerts.WithLabelValues(source, cluster).Add(float64(len(alerts)))
		}
		// Alertmanager answers 200 with an empty body.
		h.metrics.requests.WithLabelValues(source, cluster, "200").Inc()
		w.WriteHeader(http.StatusOK)
	})
}

// bodies are request body buffers, reused: a storm's requests read about as many bytes as
// they hold alerts, and growing each body from nothing doubled that in garbage.
var bodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBody: a buffer grown past it by an unusual request is left to the collector.
const maxPooledBody = 1 << 20

func putBody(b *bytes.Buffer) {
	if b.Cap() <= maxPooledBody {
		bodies.Put(b)
	}
}

func (h *Handler) reply(w http.ResponseWriter, source, cluster string, code int, msg string) {
	h.metrics.requests.WithLabelValues(source, cluster, strconv.Itoa(code)).Inc()
	http.Error(w, msg, code)
}

// maxReported bounds how many rejected alerts one answer lists: the first few tell what is
// wrong, and a batch of 256 bad alerts would otherwise make a kilobytes-long error line.
const maxReported = 10

// rejection collects why alerts of one request were rejected.
type rejection struct {
	total int
	errs  []string
}

func (r *rejection) add(i int, err error) {
	r.total++
	if len(r.errs) < maxReported {
		r.errs = append(r.errs, fmt.Sprintf("alert %d: %v", i, err))
	}
}

// err returns nil if nothing was rejected.
func (r *rejection) err(n int) error {
	if r.total == 0 {
		return nil
	}
	msg := strings.Join(r.errs, "; ")
	if more := r.total - len(r.errs); more > 0 {
		msg += fmt.Sprintf("; and %d more", more)
	}
	return fmt.Errorf("%d of %d alerts rejected, none accepted: %s", r.total, n, msg)
}

// checkCluster stamps the cluster label, or says why the alert names another cluster.
func checkCluster(ls map[string]string, cluster string) error {
	if v, ok := ls[clusterLabel]; ok && v != cluster {
		return fmt.Errorf("label %s=%q names another cluster than the credentials (%q)", clusterLabel, v, cluster)
	}
	ls[clusterLabel] = cluster
	return nil
}

// nonEmpty drops the labels whose value is empty, as Alertmanager drops them (an empty value
// means "no such label"), in place: the map is the request's own, decoded for it (a copy was
// a tenth of the intake's allocations). A nil map becomes an empty one, which the cluster label
// is written into. Annotations are left alone.
func nonEmpty[M ~map[string]string](ls M) map[string]string {
	if ls == nil {
		return map[string]string{}
	}
	for k, v := range ls {
		if v == "" {
			delete(ls, k)
		}
	}
	return ls
}

// validate is Alertmanager's types.Alert.Validate (same checks, order and messages) with the
// label names Alertmanager accepts by default (any non-empty UTF-8 string). It is
// copied rather than called because types.Alert.Validate reads a package-level setting
// (matcher/compat) that only Alertmanager's main sets, and is otherwise stricter.
func validate(labels, annotations map[string]string, startsAt, endsAt time.Time) error {
	if startsAt.IsZero() {
		return errors.New("start time missing")
	}
	if !endsAt.IsZero() && endsAt.Before(startsAt) {
		return errors.New("start time must be before end time")
	}
	if len(labels) == 0 {
		return errors.New("at least one label pair required")
	}
	if err := validateSet(labels); err != nil {
		return fmt.Errorf("invalid label set: %w", err)
	}
	if err := validateSet(annotations); err != nil {
		return fmt.Errorf("invalid annotations: %w", err)
	}
	return nil
}

func validateSet(ls map[string]string) error {
	for name, value := range ls {
		if !model.UTF8Validation.IsValidLabelName(name) {
			return fmt.Errorf("invalid name %q", name)
		}
		if !model.LabelValue(value).IsValid() {
			return fmt.Errorf("invalid value %q", value)
		}
	}
	return nil
}

type metrics struct {
	requests *prometheus.CounterVec
	alerts   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwatch_correlate_input_requests_total",
			Help: "Alert requests from member clusters by source (prometheus, alertmanager), authenticated cluster (empty when authentication failed) and HTTP status code.",
		}, []string{"source", "cluster", "code"}),
		alerts: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwatch_correlate_input_alerts_total",
			Help: "Alerts received from member clusters and accepted by the correlation engine, by source and cluster.",
		}, []string{"source", "cluster"}),
	}
}
