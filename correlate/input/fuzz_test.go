package input

import (
	"os"
	"testing"

	"github.com/go-openapi/strfmt"

	"github.com/fleetwatch/fleetwatch/correlate"
)

// checkAccepted holds for whatever a decoder accepts, however odd the input: every alert is
// about the authenticated cluster, from the right source, and valid.
func checkAccepted(t *testing.T, alerts []correlate.Alert, source string) {
	t.Helper()
	for i, a := range alerts {
		if a.Labels["cluster"] != "eu-1" {
			t.Fatalf("alert %d: cluster %q accepted for eu-1", i, a.Labels["cluster"])
		}
		if a.Source != source {
			t.Fatalf("alert %d: source %q, want %q", i, a.Source, source)
		}
		if err := validate(a.Labels, a.Annotations, a.StartsAt, a.EndsAt); err != nil {
			t.Fatalf("alert %d accepted but invalid: %v", i, err)
		}
	}
}

func FuzzAlertsV2(f *testing.F) {
	for _, s := range []string{
		`[]`, `[{"labels":{"alertname":"A"}}]`, `[{"labels":{"cluster":"eu-2"}}]`, `[{"labels":{"":"x"}}]`,
		`[{"labels":{"a":"b"},"startsAt":"2026-05-04T11:00:00Z","endsAt":"2026-05-04T10:00:00Z","generatorURL":"http://x/"}]`,
	} {
		f.Add([]byte(s))
	}
	h, err := New(Options{Sink: &recordingSink{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		alerts, err := h.decodeAlertsV2(body, "eu-1", testNow)
		if err == nil {
			checkAccepted(t, alerts, SourcePrometheus)
		}
	})
}

func FuzzWebhook(f *testing.F) {
	for _, name := range []string{"testdata/webhook-firing.json", "testdata/webhook-resolved.json"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"version":"4","alerts":[{"status":"resolved","labels":{"cluster":"eu-2"},"startsAt":"2026-05-04T11:00:00Z"}]}`))
	h, err := New(Options{Sink: &recordingSink{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		alerts, err := h.decodeWebhook(body, "eu-1", testNow)
		if err == nil {
			checkAccepted(t, alerts, SourceAlertmanager)
			for i, a := range alerts {
				// Firing ends the webhook resolve timeout after now (or after its start, if that is
				// later still); resolved at the latest then.
				latest := testNow
				if a.StartsAt.After(latest) {
					latest = a.StartsAt
				}
				if a.EndsAt.IsZero() || a.EndsAt.After(latest.Add(DefaultWebhookResolveTimeout)) {
					t.Fatalf("alert %d: EndsAt %s is zero or after the resolve timeout from %s", i, a.EndsAt, latest)
				}
			}
		}
	})
}

// FuzzSchemaValid: schemaValid never passes an alert that Alertmanager's schema validation
// (models.PostableAlert.Validate) rejects.
func FuzzSchemaValid(f *testing.F) {
	for _, s := range []string{
		`[{"labels":{"a":"b"},"startsAt":"2026-05-04T11:00:00.123+02:00","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://x/graph?g0.expr=up"}]`,
		`[{"labels":{},"startsAt":"9999-12-31T23:59:59Z","generatorURL":"/relative"}]`,
		`[{"labels":null,"endsAt":"2026-05-04T11:00:00-23:59","generatorURL":"x y"}]`,
		`[{"labels":{"a":"b"},"generatorURL":"%zz"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := unmarshalPostable(body)
		if err != nil {
			return
		}
		for i, pa := range in {
			if pa != nil && schemaValid(pa) {
				if err := pa.Validate(strfmt.Default); err != nil {
					t.Fatalf("alert %d: schemaValid passes what Validate rejects: %v", i, err)
				}
			}
		}
	})
}
