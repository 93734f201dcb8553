// Package correlate turns the alerts of the whole fleet into incidents: it deduplicates them,
// groups them along the fleet's topology (fleet > cluster > node > workload) into one incident
// per real problem with a root cause and an explanation, keeps incidents durably, and sends
// them on to Alertmanager.
package correlate

import (
	"context"
	"time"

	"github.com/prometheus/prometheus/notifier"
)

// Alert is one alert as the engine receives it, from fleetwatch's own rules, from a member
// cluster's Prometheus (Alertmanager API v2) or from a member cluster's Alertmanager (webhook).
// Labels always carry the `cluster` label of the cluster the alert is about: inputs from a
// member cluster set it from the cluster's credentials and reject alerts naming another one.
type Alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt,omitzero"` // zero: active until told otherwise
	GeneratorURL string            `json:"generatorURL,omitempty"`
	// Source says where the alert came from: "rules", "prometheus" or "alertmanager".
	Source string `json:"source"`

	// fp and localFP cache Rules.fingerprints, which the engine computes once when it takes
	// the alert in rather than at every evaluation; zero means not computed. They are only
	// valid for the replica labels they were computed with: the engine computes them again
	// when those change.
	fp, localFP uint64
}

// Resolved reports whether the alert had ended at now.
func (a Alert) Resolved(now time.Time) bool { return !a.EndsAt.IsZero() && !a.EndsAt.After(now) }

// Sink takes alerts in. Ingest returns only once the alerts are durably accepted: an input
// acknowledges its caller after Ingest returned nil, and answers an error otherwise.
type Sink interface {
	Ingest(ctx context.Context, alerts []Alert) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, alerts []Alert) error

// Ingest calls f.
func (f SinkFunc) Ingest(ctx context.Context, alerts []Alert) error { return f(ctx, alerts) }

// Sender adapts a Sink to Prometheus's rules.Sender, so that rules.SendAlerts hands the rules'
// alerts to the engine as it would to the notifier. A Sink error is logged by OnError.
type Sender struct {
	Sink    Sink
	OnError func(error)
}

// Send converts Prometheus's notifier alerts and ingests them.
func (s Sender) Send(alerts ...*notifier.Alert) {
	out := make([]Alert, 0, len(alerts))
	for _, a := range alerts {
		out = append(out, Alert{
			Labels: a.Labels.Map(), Annotations: a.Annotations.Map(),
			StartsAt: a.StartsAt, EndsAt: a.EndsAt, GeneratorURL: a.GeneratorURL, Source: "rules",
		})
	}
	if err := s.Sink.Ingest(context.Background(), out); err != nil && s.OnError != nil {
		s.OnError(err)
	}
}
