package input

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unique"

	"github.com/go-openapi/strfmt"
	"github.com/prometheus/alertmanager/api/v2/models"

	"github.com/fleetwatch/fleetwatch/correlate"
)

// decodeAlertsV2 decodes what Prometheus's notifier posts to Alertmanager's API v2 (a JSON
// array of PostableAlert) and applies what Alertmanager's postAlertsHandler does: the OpenAPI
// schema checks, empty labels dropped, startsAt defaulted, endsAt defaulted to now plus the
// resolve timeout (also when it is more than MaxEndsAtAhead ahead, which Alertmanager
// believes), then types.Alert's validation. Unlike Alertmanager, which keeps the valid
// alerts of a request and answers 400 for the rest, it accepts all or none.
func (h *Handler) decodeAlertsV2(body []byte, cluster string, now time.Time) ([]correlate.Alert, error) {
	in, err := unmarshalPostable(body)
	if err != nil {
		return nil, fmt.Errorf("decode alerts: %w", err)
	}
	if in == nil {
		return nil, errors.New("decode alerts: want a JSON array of alerts, got null")
	}
	out := make([]correlate.Alert, 0, len(in))
	var rej rejection
	timeout := h.timeouts.Load().alertsV2
	for i, pa := range in {
		a, err := fromPostable(pa, cluster, now, timeout)
		if err != nil {
			rej.add(i, err)
			continue
		}
		out = append(out, a)
	}
	if err := rej.err(len(in)); err != nil {
		return nil, err
	}
	return out, nil
}

// unmarshalPostable decodes a JSON array of PostableAlert as json.Unmarshal into
// models.PostableAlerts does, with the same result and the same errors. What Prometheus's
// notifier sends is read token by token (decodeTokens: no reflection, label names and short
// values shared, Prometheus's date-time layout tried first; a request of 64 alerts decodes in
// a third less time with 40% of the allocations of the reflective decoder); a body it gives
// up on (a field named in another case, a value of another type, invalid UTF-8 or JSON) is
// decoded by encoding/json, for its result or its error. FuzzUnmarshalPostable holds the
// result to encoding/json's.
func unmarshalPostable(body []byte) (models.PostableAlerts, error) {
	if in, ok := decodeTokens(body); ok {
		return in, nil
	}
	var in models.PostableAlerts
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	return in, nil
}

func fromPostable(pa *models.PostableAlert, cluster string, now time.Time, resolveTimeout time.Duration) (correlate.Alert, error) {
	if pa == nil {
		return correlate.Alert{}, errors.New("null")
	}
	// The schema: labels required, date-times and the generator URL well-formed.
	if !schemaValid(pa) {
		if err := pa.Validate(strfmt.Default); err != nil {
			return correlate.Alert{}, flatten(err)
		}
	}
	a := correlate.Alert{
		Labels:       nonEmpty(pa.Labels),
		Annotations:  pa.Annotations,
		StartsAt:     time.Time(pa.StartsAt),
		EndsAt:       time.Time(pa.EndsAt),
		GeneratorURL: shared(string(pa.GeneratorURL)),
		Source:       SourcePrometheus,
	}
	if a.StartsAt.IsZero() {
		if a.EndsAt.IsZero() {
			a.StartsAt = now
		} else {
			a.StartsAt = a.EndsAt
		}
	}
	// As Alertmanager (api/v2 postAlertsHandler): no endsAt is a timeout after which the
	// alert ends unless posted again. An endsAt beyond any a Prometheus sets is treated the
	// same (Alertmanager would keep the alert until then).
	if a.EndsAt.IsZero() || a.EndsAt.After(now.Add(MaxEndsAtAhead)) {
		a.EndsAt = now.Add(resolveTimeout)
	}
	if err := validate(a.Labels, a.Annotations, a.StartsAt, a.EndsAt); err != nil {
		return correlate.Alert{}, err
	}
	if err := checkCluster(a.Labels, cluster); err != nil {
		return correlate.Alert{}, err
	}
	return a, nil
}

// shared returns the one copy of s that every alert holding it shares (unique.Make). A
// generator URL is its rule's, in its cluster: the 100,000 alerts of hack/alertbench have 700
// distinct ones, and kept one per alert they were 66 MB of the 430 MB live heap.
func shared(s string) string {
	if s == "" {
		return s
	}
	return unique.Make(s).Value()
}

// schemaValid reports whether pa.Validate(strfmt.Default) certainly passes, without its cost
// (it formats each time and parses it again, and looks each format up): labels present, each
// time zero or one time.Time writes as strict RFC 3339, and the generator URL empty or a
// request URI (strfmt's "uri"). When it says no, Validate runs for the error
// (FuzzSchemaValid holds it to that).
func schemaValid(pa *models.PostableAlert) bool {
	if pa.Labels == nil {
		return false
	}
	var buf [64]byte
	for _, t := range []strfmt.DateTime{pa.StartsAt, pa.EndsAt} {
		// What time writes as strict RFC 3339 (a four-digit year, a zone less than a day
		// off), strfmt's formatting writes as a date-time it accepts.
		if tt := time.Time(t); !tt.IsZero() {
			if _, err := tt.AppendText(buf[:0]); err != nil {
				return false
			}
		}
	}
	if pa.GeneratorURL != "" {
		if _, err := url.ParseRequestURI(string(pa.GeneratorURL)); err != nil {
			return false
		}
	}
	return true
}

// flatten turns go-openapi's nested "validation failure list:\n..." errors into one line of
// their leaf messages.
func flatten(err error) error {
	var leaves []string
	var walk func(error)
	walk = func(err error) {
		if u, ok := err.(interface{ Unwrap() []error }); ok && len(u.Unwrap()) > 0 {
			for _, e := range u.Unwrap() {
				walk(e)
			}
			return
		}
		leaves = append(leaves, err.Error())
	}
	walk(err)
	return errors.New(strings.Join(leaves, ", "))
}
