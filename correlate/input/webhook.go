package input

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fleetwatch/fleetwatch/correlate"
)

// webhookVersion is the payload version Alertmanager's webhook notifier sends.
const webhookVersion = "4"

// webhookMessage is the JSON that Alertmanager's webhook notifier posts: notify/webhook.Message
// embedding template.Data. Those types are not imported because their packages pull in most of
// Alertmanager (its web assets, gossip, notification log); the field names and JSON keys here
// are theirs, and the tests decode what a real Alertmanager sends.
type webhookMessage struct {
	Receiver          string            `json:"receiver"`
	Status            string            `json:"status"`
	Alerts            []*webhookAlert   `json:"alerts"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`

	Version         string `json:"version"`
	GroupKey        string `json:"groupKey"`
	TruncatedAlerts uint64 `json:"truncatedAlerts"`
}

// webhookAlert is template.Alert.
type webhookAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

const (
	statusFiring   = "firing"
	statusResolved = "resolved"
)

// decodeWebhook decodes one webhook notification. Every alert in it becomes a correlate.Alert:
// a resolved one keeps its endsAt; a firing one (Alertmanager sends it without endsAt) ends
// the webhook resolve timeout after this notification unless another lists it. That timeout is
// not the API's resolve timeout (minutes): Alertmanager notifies a firing group again only
// every repeat_interval (hours), and the alert must not end in between. It ends an alert whose
// resolution never comes (send_resolved: false, a forwarding Alertmanager gone).
func (h *Handler) decodeWebhook(body []byte, cluster string, now time.Time) ([]correlate.Alert, error) {
	var msg webhookMessage
	if err := json.Unmarshal(body, &msg); err != nil {
		return nil, fmt.Errorf("decode webhook message: %w", err)
	}
	if msg.Version != webhookVersion {
		return nil, fmt.Errorf("webhook message version %q is not supported, want %q", msg.Version, webhookVersion)
	}
	if len(msg.Alerts) == 0 {
		return nil, errors.New("webhook message has no alerts")
	}
	if msg.TruncatedAlerts > 0 {
		// Not an error: what did arrive is right, and the sender would only truncate again.
		h.logger.Warn("webhook message truncated by the sender's max_alerts", "cluster", cluster, "truncated", msg.TruncatedAlerts, "group_key", msg.GroupKey)
	}
	out := make([]correlate.Alert, 0, len(msg.Alerts))
	var rej rejection
	timeout := h.timeouts.Load().webhook
	for i, wa := range msg.Alerts {
		a, err := fromWebhook(wa, cluster, now, timeout)
		if err != nil {
			rej.add(i, err)
			continue
		}
		out = append(out, a)
	}
	if err := rej.err(len(msg.Alerts)); err != nil {
		return nil, err
	}
	return out, nil
}

func fromWebhook(wa *webhookAlert, cluster string, now time.Time, resolveTimeout time.Duration) (correlate.Alert, error) {
	if wa == nil {
		return correlate.Alert{}, errors.New("null")
	}
	a := correlate.Alert{
		Labels:       nonEmpty(wa.Labels),
		Annotations:  wa.Annotations,
		StartsAt:     wa.StartsAt,
		GeneratorURL: shared(wa.GeneratorURL),
		Source:       SourceAlertmanager,
	}
	switch wa.Status {
	case statusFiring:
		a.EndsAt = later(now, a.StartsAt).Add(resolveTimeout)
	case statusResolved:
		if wa.EndsAt.IsZero() {
			return correlate.Alert{}, errors.New("resolved alert without endsAt")
		}
		a.EndsAt = wa.EndsAt
	case "":
		return correlate.Alert{}, errors.New("status missing")
	default:
		return correlate.Alert{}, fmt.Errorf("status %q is neither %q nor %q", wa.Status, statusFiring, statusResolved)
	}
	if err := validate(a.Labels, a.Annotations, a.StartsAt, a.EndsAt); err != nil {
		return correlate.Alert{}, err
	}
	if err := checkCluster(a.Labels, cluster); err != nil {
		return correlate.Alert{}, err
	}
	// Alertmanager said resolved as of its clock; if ours is behind, it is resolved now all the
	// same (or as soon as it started, should even that be ahead of us).
	if latest := later(now, a.StartsAt); wa.Status == statusResolved && a.EndsAt.After(latest) {
		a.EndsAt = latest
	}
	return a, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
