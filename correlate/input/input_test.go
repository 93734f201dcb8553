package input

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

var testNow = time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)

// recordingSink keeps every batch it accepts; fail makes the next calls fail.
type recordingSink struct {
	mu      sync.Mutex
	batches [][]correlate.Alert
	fail    int // number of calls still to fail
	calls   int
}

func (s *recordingSink) Ingest(_ context.Context, alerts []correlate.Alert) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.fail > 0 {
		s.fail--
		return errors.New("disk full")
	}
	s.batches = append(s.batches, alerts)
	return nil
}

func (s *recordingSink) all() []correlate.Alert {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []correlate.Alert
	for _, b := range s.batches {
		out = append(out, b...)
	}
	return out
}

func (s *recordingSink) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

var testClusters = []*config.ClusterConfig{
	{Name: "eu-1", RemoteWrite: &config.RemoteWriteConfig{BearerToken: "token-eu-1"}},
	{Name: "us-3", RemoteWrite: &config.RemoteWriteConfig{BasicAuth: &config.BasicAuthConfig{Username: "us-3", Password: "pw-us-3"}}},
}

func newHandler(t *testing.T, sink correlate.Sink, reg prometheus.Registerer) *Handler {
	t.Helper()
	h, err := New(Options{Sink: sink, MaxBodyBytes: 1024, Registerer: reg, Now: func() time.Time { return testNow }})
	require.NoError(t, err)
	require.NoError(t, h.ApplyConfig(&config.Config{Clusters: testClusters}))
	return h
}

func bearer(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

var eu1 = bearer("token-eu-1")

type response struct {
	code   int
	body   string
	header http.Header
}

func do(h http.Handler, method, path, body string, set ...func(*http.Request)) response {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for _, f := range set {
		f(req)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return response{code: rec.Code, body: rec.Body.String(), header: rec.Header()}
}

// rejectCase is one request that must be refused whole.
type rejectCase struct {
	name   string
	method string // POST unless set
	body   string
	set    []func(*http.Request) // eu1 unless set
	code   int
	msg    string // the exact body, without http.Error's newline
}

func runRejects(t *testing.T, path string, cases []rejectCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sink := &recordingSink{}
			h := newHandler(t, sink, nil)
			method, set := tc.method, tc.set
			if method == "" {
				method = http.MethodPost
			}
			if set == nil {
				set = []func(*http.Request){eu1}
			}
			r := do(h, method, path, tc.body, set...)
			require.Equal(t, tc.code, r.code, r.body)
			require.Equal(t, tc.msg+"\n", r.body)
			require.Zero(t, sink.callCount(), "nothing may reach the sink")
			if tc.code == http.StatusUnauthorized {
				require.Equal(t, `Bearer realm="fleetwatch", Basic realm="fleetwatch"`, r.header.Get("WWW-Authenticate"))
			}
		})
	}
}

// commonRejects apply to both endpoints alike.
func commonRejects() []rejectCase {
	return []rejectCase{
		{name: "no credentials", set: []func(*http.Request){}, body: `[]`, code: 401, msg: "unknown or missing cluster credentials"},
		{name: "unknown token", set: []func(*http.Request){bearer("token-eu-2")}, body: `[]`, code: 401, msg: "unknown or missing cluster credentials"},
		{name: "wrong password", set: []func(*http.Request){func(r *http.Request) { r.SetBasicAuth("us-3", "nope") }}, body: `[]`, code: 401, msg: "unknown or missing cluster credentials"},
		{name: "content type", set: []func(*http.Request){eu1, func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }}, body: `[]`,
			code: 415, msg: `unsupported content type "text/plain", want application/json`},
		{name: "body over the limit", body: strings.Repeat(" ", 1025), code: 413, msg: "request body of 1025 bytes exceeds the limit of 1024 bytes"},
		{name: "body over the limit, length unknown", set: []func(*http.Request){eu1, func(r *http.Request) { r.ContentLength = -1 }},
			body: strings.Repeat(" ", 1025), code: 413, msg: "request body exceeds the limit of 1024 bytes"},
		{name: "GET", method: http.MethodGet, code: 405, msg: "Method Not Allowed"},
	}
}

func TestAlertsV2Rejects(t *testing.T) {
	const ok = `{"labels":{"alertname":"A"}}`
	// Twelve bad alerts: the answer lists the first ten.
	bounded := "12 of 13 alerts rejected, none accepted: "
	for i := range 10 {
		bounded += fmt.Sprintf("alert %d: at least one label pair required; ", i)
	}
	bounded += "and 2 more"
	cases := append(commonRejects(), []rejectCase{
		{name: "malformed JSON", body: `[{"labels":`, code: 400, msg: "decode alerts: unexpected end of JSON input"},
		{name: "not an array", body: `{}`, code: 400, msg: "decode alerts: json: cannot unmarshal object into Go value of type models.PostableAlerts"},
		{name: "null", body: `null`, code: 400, msg: "decode alerts: want a JSON array of alerts, got null"},
		{name: "bad time", body: `[{"labels":{"a":"b"},"startsAt":"yesterday"}]`, code: 400,
			msg: `decode alerts: parsing time "yesterday" as "2006-01-02": cannot parse "yesterday" as "2006"`},
		{name: "null alert", body: `[` + ok + `,null]`, code: 400, msg: "1 of 2 alerts rejected, none accepted: alert 1: null"},
		{name: "labels missing", body: `[{"annotations":{"a":"b"}}]`, code: 400, msg: "1 of 1 alerts rejected, none accepted: alert 0: labels in body is required"},
		{name: "labels empty", body: `[{"labels":{}}]`, code: 400, msg: "1 of 1 alerts rejected, none accepted: alert 0: at least one label pair required"},
		{name: "only empty label values", body: `[{"labels":{"a":""}}]`, code: 400, msg: "1 of 1 alerts rejected, none accepted: alert 0: at least one label pair required"},
		{name: "invalid label name", body: `[` + ok + `,{"labels":{"":"x"}}]`, code: 400, msg: `1 of 2 alerts rejected, none accepted: alert 1: invalid label set: invalid name ""`},
		{name: "invalid annotation name", body: `[{"labels":{"a":"b"},"annotations":{"":"x"}}]`, code: 400, msg: `1 of 1 alerts rejected, none accepted: alert 0: invalid annotations: invalid name ""`},
		{name: "endsAt before startsAt", body: `[{"labels":{"a":"b"},"startsAt":"2026-05-04T11:00:00Z","endsAt":"2026-05-04T10:00:00Z"}]`,
			code: 400, msg: "1 of 1 alerts rejected, none accepted: alert 0: start time must be before end time"},
		{name: "startsAt after the resolve timeout", body: `[{"labels":{"a":"b"},"startsAt":"2026-05-04T13:00:00Z"}]`,
			code: 400, msg: "1 of 1 alerts rejected, none accepted: alert 0: start time must be before end time"},
		{name: "generatorURL not a URI", body: `[{"labels":{"a":"b"},"generatorURL":"not a url"}]`,
			code: 400, msg: `1 of 1 alerts rejected, none accepted: alert 0: generatorURL in body must be of type uri: "not a url"`},
		{name: "forged cluster", body: `[` + ok + `,{"labels":{"alertname":"B","cluster":"eu-2"}}]`,
			code: 400, msg: `1 of 2 alerts rejected, none accepted: alert 1: label cluster="eu-2" names another cluster than the credentials ("eu-1")`},
		{name: "forged cluster, basic auth", set: []func(*http.Request){func(r *http.Request) { r.SetBasicAuth("us-3", "pw-us-3") }},
			body: `[{"labels":{"alertname":"B","cluster":"eu-1"}}]`,
			code: 400, msg: `1 of 1 alerts rejected, none accepted: alert 0: label cluster="eu-1" names another cluster than the credentials ("us-3")`},
		{name: "several reasons", body: `[{"labels":{}},` + ok + `,{"labels":{"cluster":"eu-2"}}]`, code: 400,
			msg: `2 of 3 alerts rejected, none accepted: alert 0: at least one label pair required; alert 2: label cluster="eu-2" names another cluster than the credentials ("eu-1")`},
		{name: "report bounded", body: `[` + strings.Repeat(`{"labels":{}},`, 12) + ok + `]`, code: 400, msg: bounded},
	}...)
	runRejects(t, PathAlertsV2, cases)
}

func TestAlertsV2Accepts(t *testing.T) {
	ts := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		require.NoError(t, err)
		return v
	}
	for _, tc := range []struct {
		name string
		set  func(*http.Request)
		body string
		want []correlate.Alert
	}{
		{
			name: "as Prometheus sends it",
			body: `[{"annotations":{"summary":"always"},"endsAt":"2026-05-04T12:04:00.000Z","startsAt":"2026-05-04T11:59:00.000Z",
				"generatorURL":"http://prom:9090/graph?g0.expr=vector%281%29\u0026g0.tab=1","labels":{"alertname":"Always","severity":"page"}}]`,
			want: []correlate.Alert{{
				Labels: map[string]string{"alertname": "Always", "severity": "page", "cluster": "eu-1"}, Annotations: map[string]string{"summary": "always"},
				StartsAt: ts("2026-05-04T11:59:00Z"), EndsAt: ts("2026-05-04T12:04:00Z"),
				GeneratorURL: "http://prom:9090/graph?g0.expr=vector%281%29&g0.tab=1", Source: "prometheus",
			}},
		},
		{
			name: "own cluster label, empty labels dropped, UTF-8 names",
			body: `[{"labels":{"alertname":"A","cluster":"eu-1","service.name":"api","gone":""},"startsAt":"2026-05-04T11:00:00Z","endsAt":"2026-05-04T12:01:00Z"},
				{"labels":{"alertname":"B","cluster":""},"startsAt":"2026-05-04T11:00:00Z","endsAt":"2026-05-04T12:01:00Z"}]`,
			want: []correlate.Alert{
				{Labels: map[string]string{"alertname": "A", "cluster": "eu-1", "service.name": "api"}, StartsAt: ts("2026-05-04T11:00:00Z"), EndsAt: ts("2026-05-04T12:01:00Z"), Source: "prometheus"},
				{Labels: map[string]string{"alertname": "B", "cluster": "eu-1"}, StartsAt: ts("2026-05-04T11:00:00Z"), EndsAt: ts("2026-05-04T12:01:00Z"), Source: "prometheus"},
			},
		},
		{
			name: "times defaulted as Alertmanager does",
			body: `[{"labels":{"alertname":"NoTimes"}},{"labels":{"alertname":"OnlyEnd"},"endsAt":"2026-05-04T11:30:00Z"}]`,
			want: []correlate.Alert{
				{Labels: map[string]string{"alertname": "NoTimes", "cluster": "eu-1"}, StartsAt: testNow, EndsAt: testNow.Add(DefaultResolveTimeout), Source: "prometheus"},
				{Labels: map[string]string{"alertname": "OnlyEnd", "cluster": "eu-1"}, StartsAt: ts("2026-05-04T11:30:00Z"), EndsAt: ts("2026-05-04T11:30:00Z"), Source: "prometheus"},
			},
		},
		{
			name: "basic auth",
			set:  func(r *http.Request) { r.SetBasicAuth("us-3", "pw-us-3") },
			body: `[{"labels":{"alertname":"A"},"startsAt":"2026-05-04T11:00:00Z","endsAt":"2026-05-04T12:01:00Z"}]`,
			want: []correlate.Alert{{Labels: map[string]string{"alertname": "A", "cluster": "us-3"}, StartsAt: ts("2026-05-04T11:00:00Z"), EndsAt: ts("2026-05-04T12:01:00Z"), Source: "prometheus"}},
		},
		{name: "no alerts", body: `[]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &recordingSink{}
			h := newHandler(t, sink, nil)
			set := eu1
			if tc.set != nil {
				set = tc.set
			}
			r := do(h, http.MethodPost, PathAlertsV2, tc.body, set)
			require.Equal(t, http.StatusOK, r.code, r.body)
			require.Empty(t, r.body)
			got := sink.all()
			for i := range got { // nil and empty annotations are the same to the engine
				if len(got[i].Annotations) == 0 {
					got[i].Annotations = nil
				}
			}
			require.Equal(t, tc.want, got)
			if tc.want == nil {
				require.Zero(t, sink.callCount(), "an empty request needs no Ingest")
			} else {
				require.Equal(t, 1, sink.callCount(), "one request, one Ingest")
			}
		})
	}
}

func TestAlertsV2Resolved(t *testing.T) {
	sink := &recordingSink{}
	h := newHandler(t, sink, nil)
	// What Prometheus sends for an alert that stopped firing: endsAt at the resolving evaluation.
	r := do(h, http.MethodPost, PathAlertsV2, `[{"labels":{"alertname":"A"},"startsAt":"2026-05-04T11:00:00Z","endsAt":"2026-05-04T11:58:00Z"}]`, eu1)
	require.Equal(t, http.StatusOK, r.code, r.body)
	got := sink.all()
	require.Len(t, got, 1)
	require.True(t, got[0].Resolved(testNow))
	require.Equal(t, time.Date(2026, 5, 4, 11, 58, 0, 0, time.UTC), got[0].EndsAt)
}

func TestWebhookRejects(t *testing.T) {
	msg := func(alerts string) string {
		return `{"receiver":"fleetwatch","status":"firing","version":"4","groupKey":"{}:{}","alerts":[` + alerts + `]}`
	}
	const ok = `{"status":"firing","labels":{"alertname":"A"},"startsAt":"2026-05-04T11:00:00Z","endsAt":"0001-01-01T00:00:00Z"}`
	runRejects(t, PathWebhook, append(commonRejects(), []rejectCase{
		{name: "malformed JSON", body: `{"version":"4",`, code: 400, msg: "decode webhook message: unexpected end of JSON input"},
		{name: "not an object", body: `[]`, code: 400, msg: "decode webhook message: json: cannot unmarshal array into Go value of type input.webhookMessage"},
		{name: "version missing", body: `{"alerts":[` + ok + `]}`, code: 400, msg: `webhook message version "" is not supported, want "4"`},
		{name: "wrong version", body: `{"version":"5","alerts":[` + ok + `]}`, code: 400, msg: `webhook message version "5" is not supported, want "4"`},
		{name: "alerts missing", body: `{"version":"4"}`, code: 400, msg: "webhook message has no alerts"},
		{name: "alerts empty", body: msg(``), code: 400, msg: "webhook message has no alerts"},
		{name: "null alert", body: msg(ok + `,null`), code: 400, msg: "1 of 2 alerts rejected, none accepted: alert 1: null"},
		{name: "status missing", body: msg(`{"labels":{"a":"b"},"startsAt":"2026-05-04T11:00:00Z"}`), code: 400, msg: "1 of 1 alerts rejected, none accepted: alert 0: status missing"},
		{name: "status unknown", body: msg(`{"status":"pending","labels":{"a":"b"},"startsAt":"2026-05-04T11:00:00Z"}`), code: 400,
			msg: `1 of 1 alerts rejected, none accepted: alert 0: status "pending" is neither "firing" nor "resolved"`},
		{name: "labels missing", body: msg(`{"status":"firing","startsAt":"2026-05-04T11:00:00Z"}`), code: 400, msg: "1 of 1 alerts rejected, none accepted: alert 0: at least one label pair required"},
		{name: "startsAt missing", body: msg(`{"status":"firing","labels":{"a":"b"}}`), code: 400, msg: "1 of 1 alerts rejected, none accepted: alert 0: start time missing"},
		{name: "resolved without endsAt", body: msg(`{"status":"resolved","labels":{"a":"b"},"startsAt":"2026-05-04T11:00:00Z","endsAt":"0001-01-01T00:00:00Z"}`), code: 400,
			msg: "1 of 1 alerts rejected, none accepted: alert 0: resolved alert without endsAt"},
		{name: "endsAt before startsAt", body: msg(`{"status":"resolved","labels":{"a":"b"},"startsAt":"2026-05-04T11:00:00Z","endsAt":"2026-05-04T10:00:00Z"}`), code: 400,
			msg: "1 of 1 alerts rejected, none accepted: alert 0: start time must be before end time"},
		{name: "invalid label name", body: msg(`{"status":"firing","labels":{"":"b"},"startsAt":"2026-05-04T11:00:00Z"}`), code: 400,
			msg: `1 of 1 alerts rejected, none accepted: alert 0: invalid label set: invalid name ""`},
		{name: "bad time", body: msg(`{"status":"firing","labels":{"a":"b"},"startsAt":"soon"}`), code: 400,
			msg: `decode webhook message: parsing time "soon" as "2006-01-02T15:04:05Z07:00": cannot parse "soon" as "2006"`},
		{name: "forged cluster", body: msg(ok + `,{"status":"resolved","labels":{"alertname":"B","cluster":"eu-2"},"startsAt":"2026-05-04T11:00:00Z","endsAt":"2026-05-04T11:30:00Z"}`),
			code: 400, msg: `1 of 2 alerts rejected, none accepted: alert 1: label cluster="eu-2" names another cluster than the credentials ("eu-1")`},
	}...))
}

func TestWebhookAccepts(t *testing.T) {
	sink := &recordingSink{}
	h := newHandler(t, sink, nil)
	body := `{"receiver":"fleetwatch","status":"firing","version":"4","groupKey":"{}:{}","truncatedAlerts":3,"alerts":[
		{"status":"firing","labels":{"alertname":"A","cluster":"eu-1"},"annotations":{"summary":"s"},"startsAt":"2026-05-04T11:00:00Z","endsAt":"2026-05-04T12:05:00Z","generatorURL":"http://prom/graph","fingerprint":"1"},
		{"status":"resolved","labels":{"alertname":"B","empty":""},"startsAt":"2026-05-04T11:00:00Z","endsAt":"2026-05-04T11:30:00Z","fingerprint":"2"},
		{"status":"resolved","labels":{"alertname":"Skewed"},"startsAt":"2026-05-04T11:00:00Z","endsAt":"2026-05-04T12:00:02Z","fingerprint":"3"}]}`
	r := do(h, http.MethodPost, PathWebhook, body, eu1)
	require.Equal(t, http.StatusOK, r.code, r.body)
	require.Empty(t, r.body)
	start := time.Date(2026, 5, 4, 11, 0, 0, 0, time.UTC)
	require.Equal(t, []correlate.Alert{
		// Firing: active for the webhook resolve timeout unless listed again, whatever endsAt
		// it sent.
		{Labels: map[string]string{"alertname": "A", "cluster": "eu-1"}, Annotations: map[string]string{"summary": "s"}, StartsAt: start, EndsAt: testNow.Add(DefaultWebhookResolveTimeout), GeneratorURL: "http://prom/graph", Source: "alertmanager"},
		{Labels: map[string]string{"alertname": "B", "cluster": "eu-1"}, StartsAt: start, EndsAt: time.Date(2026, 5, 4, 11, 30, 0, 0, time.UTC), Source: "alertmanager"},
		// Resolved by a clock ahead of ours: resolved now all the same.
		{Labels: map[string]string{"alertname": "Skewed", "cluster": "eu-1"}, StartsAt: start, EndsAt: testNow, Source: "alertmanager"},
	}, sink.all())
	for _, a := range sink.all()[1:] {
		require.True(t, a.Resolved(testNow), a.Labels["alertname"])
	}
}

// TestWebhookRealPayloads decodes what Alertmanager v0.30.0 sent to a webhook_config, a firing
// then a resolved notification, captured verbatim.
func TestWebhookRealPayloads(t *testing.T) {
	sink := &recordingSink{}
	h, err := New(Options{Sink: sink, Now: func() time.Time { return time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC) }})
	require.NoError(t, err)
	require.NoError(t, h.ApplyConfig(&config.Config{Clusters: testClusters}))
	for _, name := range []string{"webhook-firing.json", "webhook-resolved.json"} {
		b, err := os.ReadFile("testdata/" + name)
		require.NoError(t, err)
		r := do(h, http.MethodPost, PathWebhook, string(b), eu1)
		require.Equal(t, http.StatusOK, r.code, r.body)
	}
	got := sink.all()
	require.Len(t, got, 2)
	wantLabels := map[string]string{"alertname": "KubeNodeNotReady", "cluster": "eu-1", "node": "n1", "severity": "warning"}
	for _, a := range got {
		require.Equal(t, wantLabels, a.Labels)
		require.Equal(t, map[string]string{"summary": "Node n1 is not ready"}, a.Annotations)
		require.Equal(t, "alertmanager", a.Source)
		require.Contains(t, a.GeneratorURL, "kube_node_status_condition")
	}
	require.Equal(t, time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC).Add(DefaultWebhookResolveTimeout), got[0].EndsAt, "firing")
	require.False(t, got[1].EndsAt.IsZero(), "resolved")
	require.Equal(t, time.Date(2026, 11, 25, 10, 55, 35, 0, time.UTC), got[1].EndsAt.UTC())
}

func TestIngestError(t *testing.T) {
	for _, tc := range []struct{ path, body string }{
		{PathAlertsV2, `[{"labels":{"alertname":"A"}}]`},
		{PathWebhook, `{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"A"},"startsAt":"2026-05-04T11:00:00Z"}]}`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			sink := &recordingSink{fail: 1}
			h := newHandler(t, sink, nil)
			r := do(h, http.MethodPost, tc.path, tc.body, eu1)
			require.Equal(t, http.StatusServiceUnavailable, r.code)
			require.Equal(t, "ingest alerts: disk full\n", r.body)
			require.Empty(t, sink.all())
			// The sender tries again and this time the sink keeps the alerts.
			r = do(h, http.MethodPost, tc.path, tc.body, eu1)
			require.Equal(t, http.StatusOK, r.code, r.body)
			require.Len(t, sink.all(), 1)
		})
	}
}

func TestIngestGetsRequestContext(t *testing.T) {
	type key struct{}
	var got any
	h := newHandler(t, correlate.SinkFunc(func(ctx context.Context, _ []correlate.Alert) error {
		got = ctx.Value(key{})
		return nil
	}), nil)
	r := do(h, http.MethodPost, PathAlertsV2, `[{"labels":{"a":"b"}}]`, eu1, func(r *http.Request) {
		*r = *r.WithContext(context.WithValue(r.Context(), key{}, "v"))
	})
	require.Equal(t, http.StatusOK, r.code)
	require.Equal(t, "v", got)
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	sink := &recordingSink{fail: 1}
	h := newHandler(t, sink, reg)
	two := `[{"labels":{"alertname":"A"}},{"labels":{"alertname":"B"}}]`
	do(h, http.MethodPost, PathAlertsV2, two, eu1)                            // 503
	do(h, http.MethodPost, PathAlertsV2, two, eu1)                            // 200
	do(h, http.MethodPost, PathAlertsV2, `[{"labels":{"cluster":"x"}}]`, eu1) // 400
	do(h, http.MethodPost, PathWebhook, `{}`)                                 // 401
	do(h, http.MethodPost, PathWebhook, `{"version":"4","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-05-04T11:00:00Z"}]}`,
		func(r *http.Request) { r.SetBasicAuth("us-3", "pw-us-3") }) // 200

	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP fleetwatch_correlate_input_alerts_total Alerts received from member clusters and accepted by the correlation engine, by source and cluster.
# TYPE fleetwatch_correlate_input_alerts_total counter
fleetwatch_correlate_input_alerts_total{cluster="eu-1",source="prometheus"} 2
fleetwatch_correlate_input_alerts_total{cluster="us-3",source="alertmanager"} 1
# HELP fleetwatch_correlate_input_requests_total Alert requests from member clusters by source (prometheus, alertmanager), authenticated cluster (empty when authentication failed) and HTTP status code.
# TYPE fleetwatch_correlate_input_requests_total counter
fleetwatch_correlate_input_requests_total{cluster="",code="401",source="alertmanager"} 1
fleetwatch_correlate_input_requests_total{cluster="eu-1",code="200",source="prometheus"} 1
fleetwatch_correlate_input_requests_total{cluster="eu-1",code="400",source="prometheus"} 1
fleetwatch_correlate_input_requests_total{cluster="eu-1",code="503",source="prometheus"} 1
fleetwatch_correlate_input_requests_total{cluster="us-3",code="200",source="alertmanager"} 1
`)))
}

func TestNoClustersNoEntry(t *testing.T) {
	h, err := New(Options{Sink: &recordingSink{}})
	require.NoError(t, err)
	r := do(h, http.MethodPost, PathAlertsV2, `[]`, eu1)
	require.Equal(t, http.StatusUnauthorized, r.code)
}

func TestUnknownPath(t *testing.T) {
	h := newHandler(t, &recordingSink{}, nil)
	r := do(h, http.MethodPost, "/api/v2/status", ``, eu1)
	require.Equal(t, http.StatusNotFound, r.code)
}

func TestNewValidatesOptions(t *testing.T) {
	sink := &recordingSink{}
	for _, tc := range []struct {
		o   Options
		err string
	}{
		{Options{}, "correlate/input: Options.Sink is required"},
		{Options{Sink: sink, MaxBodyBytes: -1}, "correlate/input: Options.MaxBodyBytes is negative (-1)"},
		{Options{Sink: sink, ResolveTimeout: -time.Second}, "correlate/input: Options.ResolveTimeout is negative (-1s)"},
		{Options{Sink: sink, WebhookResolveTimeout: -time.Second}, "correlate/input: Options.WebhookResolveTimeout is negative (-1s)"},
	} {
		_, err := New(tc.o)
		require.EqualError(t, err, tc.err)
	}
	h, err := New(Options{Sink: sink})
	require.NoError(t, err)
	require.Equal(t, int64(DefaultMaxBodyBytes), h.opts.MaxBodyBytes)
	require.Equal(t, DefaultResolveTimeout, h.opts.ResolveTimeout)
	require.Equal(t, DefaultWebhookResolveTimeout, h.opts.WebhookResolveTimeout)
}

// A body over the limit is refused before it is read whole.
func TestBodyLimitStopsReading(t *testing.T) {
	h := newHandler(t, &recordingSink{}, nil)
	req := httptest.NewRequest(http.MethodPost, PathAlertsV2, io.MultiReader(strings.NewReader("["), endless{}))
	req.ContentLength = -1
	eu1(req)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}

// A request's alerts hold nothing of its body: later requests read into the same buffer.
func TestAlertsOutliveTheirBody(t *testing.T) {
	sink := &recordingSink{}
	h := newHandler(t, sink, nil)
	body := func(i int) string {
		return fmt.Sprintf(`[{"labels":{"alertname":"KubePodCrashLooping","pod":"api-%03d"},"annotations":{"summary":"pod api-%03d restarts"},"generatorURL":"http://prometheus/graph?%03d"}]`, i, i, i)
	}
	for i := range 20 {
		require.Equal(t, http.StatusOK, do(h, http.MethodPost, PathAlertsV2, body(i), eu1).code)
	}
	got := sink.all()
	require.Len(t, got, 20)
	for i, a := range got {
		require.Equal(t, fmt.Sprintf("api-%03d", i), a.Labels["pod"])
		require.Equal(t, fmt.Sprintf("pod api-%03d restarts", i), a.Annotations["summary"])
		require.Equal(t, fmt.Sprintf("http://prometheus/graph?%03d", i), a.GeneratorURL)
	}
}
