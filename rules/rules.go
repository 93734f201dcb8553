// Package rules evaluates rule files on the global view with Prometheus's rules manager.
// Queries go through a rules.QueryFunc, so the same evaluator can later run against Thanos
// Query; recording-rule results and ALERTS / ALERTS_FOR_STATE go back into the view, which is
// what lets a pending or firing alert keep its active-since time across a restart.
package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/go-openapi/strfmt"
	amclient "github.com/prometheus/alertmanager/api/v2/client"
	"github.com/prometheus/alertmanager/api/v2/client/alert"
	"github.com/prometheus/alertmanager/api/v2/models"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/notifier"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
)

// Options configure an Evaluator.
type Options struct {
	// QueryFunc answers the rules' PromQL (rules.EngineQueryFunc over the view).
	QueryFunc rules.QueryFunc
	// Appendable receives recording-rule results and ALERTS/ALERTS_FOR_STATE; Queryable is read
	// to restore alert state at start.
	Appendable storage.Appendable
	Queryable  storage.Queryable
	// ExternalURL is fleetwatch's URL, for alerts' generator URLs.
	ExternalURL string
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
}

// Evaluator runs rule groups and hands their alerts to the configured Alertmanagers.
type Evaluator struct {
	logger  *slog.Logger
	manager *rules.Manager
	sent    *prometheus.CounterVec

	mtx           sync.RWMutex
	alertmanagers []*url.URL
	runOnce       sync.Once
}

// New returns an Evaluator; call ApplyConfig, then Run.
func New(o Options) (*Evaluator, error) {
	if o.QueryFunc == nil || o.Appendable == nil || o.Queryable == nil {
		return nil, errors.New("rules: QueryFunc, Appendable and Queryable are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Evaluator{logger: o.Logger}
	e.sent = promauto.With(o.Registerer).NewCounterVec(prometheus.CounterOpts{
		Name: "fleetwatch_rules_alerts_sent_total",
		Help: "Alerts posted to Alertmanager, by Alertmanager and result.",
	}, []string{"alertmanager", "result"})
	e.manager = rules.NewManager(&rules.ManagerOptions{
		QueryFunc:  o.QueryFunc,
		NotifyFunc: rules.SendAlerts(e, o.ExternalURL),
		Context:    context.Background(),
		Appendable: o.Appendable,
		Queryable:  o.Queryable,
		Logger:     o.Logger.With("component", "rules"),
		Registerer: o.Registerer,
		// As Prometheus's defaults: alert state older than an hour's outage is not restored.
		OutageTolerance: time.Hour,
		ForGracePeriod:  10 * time.Minute,
		ResendDelay:     time.Minute,
	})
	return e, nil
}

// Manager is the rules manager, for /api/v1/rules and /api/v1/alerts.
func (e *Evaluator) Manager() *rules.Manager { return e.manager }

// ApplyConfig loads the rule files (checked by the rules manager: a bad file keeps the
// previous rules) and sets the Alertmanagers alerts go to.
func (e *Evaluator) ApplyConfig(interval time.Duration, files []string, alertmanagers []string) error {
	ams := make([]*url.URL, 0, len(alertmanagers))
	for _, a := range alertmanagers {
		u, err := url.Parse(a)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("rules: alertmanager %q: not an http(s) URL", a)
		}
		ams = append(ams, u)
	}
	// The manager only says that loading failed; load first to say which file and line.
	if _, errs := e.manager.LoadGroups(interval, labels.EmptyLabels(), "", nil, false, files...); len(errs) > 0 {
		return fmt.Errorf("rules: %w", errors.Join(errs...))
	}
	if err := e.manager.Update(interval, files, labels.EmptyLabels(), "", nil); err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	e.mtx.Lock()
	e.alertmanagers = ams
	e.mtx.Unlock()
	return nil
}

// Run evaluates until Stop. Alert state is restored from the view on the first evaluation.
func (e *Evaluator) Run() { e.runOnce.Do(e.manager.Run) }

// Stop stops evaluation.
func (e *Evaluator) Stop() { e.manager.Stop() }

// Send implements rules.Sender: it posts the alerts to every configured Alertmanager through
// Alertmanager's API v2 client. Alerts are re-sent every evaluation while active (and resolved
// ones for a while after), so a failed post is logged and counted, not queued.
func (e *Evaluator) Send(alerts ...*notifier.Alert) {
	e.mtx.RLock()
	ams := e.alertmanagers
	e.mtx.RUnlock()
	if len(ams) == 0 || len(alerts) == 0 {
		return
	}
	payload := make(models.PostableAlerts, 0, len(alerts))
	for _, a := range alerts {
		pa := &models.PostableAlert{
			Alert:       models.Alert{Labels: labelSet(a.Labels), GeneratorURL: strfmt.URI(a.GeneratorURL)},
			Annotations: labelSet(a.Annotations),
			StartsAt:    strfmt.DateTime(a.StartsAt),
		}
		if !a.EndsAt.IsZero() {
			pa.EndsAt = strfmt.DateTime(a.EndsAt)
		}
		payload = append(payload, pa)
	}
	for _, u := range ams {
		c := amclient.NewHTTPClientWithConfig(strfmt.Default, &amclient.TransportConfig{
			Host: u.Host, BasePath: u.Path + amclient.DefaultBasePath, Schemes: []string{u.Scheme},
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Alert.PostAlerts(alert.NewPostAlertsParams().WithContext(ctx).WithAlerts(payload))
		cancel()
		if err != nil {
			e.sent.WithLabelValues(u.String(), "error").Add(float64(len(payload)))
			e.logger.Error("posting alerts to Alertmanager", "alertmanager", u.String(), "alerts", len(payload), "err", err)
			continue
		}
		e.sent.WithLabelValues(u.String(), "success").Add(float64(len(payload)))
	}
}

func labelSet(ls labels.Labels) models.LabelSet {
	out := models.LabelSet{}
	ls.Range(func(l labels.Label) { out[l.Name] = l.Value })
	return out
}
