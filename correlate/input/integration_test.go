package input

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-openapi/strfmt"
	"github.com/prometheus/alertmanager/api/v2/models"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// startInput serves a Handler that knows cluster eu-1 by its bearer token, also under /forged
// (for senders that are made to lie), and returns the server and the token file.
func startInput(t *testing.T, sink correlate.Sink) (*Handler, *httptest.Server, string) {
	t.Helper()
	h, err := New(Options{Sink: sink, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	require.NoError(t, h.ApplyConfig(&config.Config{Clusters: []*config.ClusterConfig{
		{Name: "eu-1", RemoteWrite: &config.RemoteWriteConfig{BearerToken: "token-eu-1"}},
	}}))
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.Handle("/forged/", http.StripPrefix("/forged", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return h, srv, testenv.WriteFile(t, t.TempDir(), "eu-1.token", "token-eu-1\n")
}

func findAlert(alerts []correlate.Alert, name string, match func(correlate.Alert) bool) (correlate.Alert, bool) {
	for _, a := range alerts {
		if a.Labels["alertname"] == name && match(a) {
			return a, true
		}
	}
	return correlate.Alert{}, false
}

// TestPrometheusSendsAlerts lists the handler under a real Prometheus's alerting.alertmanagers,
// unchanged but for the credentials: once as itself, and once through an alert_relabel_config
// that claims another cluster, which must be refused.
func TestPrometheusSendsAlerts(t *testing.T) {
	testenv.SkipIfShort(t)
	prom := testenv.Peer(t, "prometheus")
	sink := &recordingSink{}
	h, srv, token := startInput(t, sink)
	target := strings.TrimPrefix(srv.URL, "http://")

	dir := t.TempDir()
	testenv.WriteFile(t, dir, "rules.yml", `groups:
  - name: input-test
    interval: 1s
    rules:
      - alert: AlwaysFiring
        expr: vector(1)
        labels: {severity: warning}
        annotations: {summary: it always fires}
`)
	cfg := testenv.WriteFile(t, dir, "prometheus.yml", fmt.Sprintf(`global:
  evaluation_interval: 1s
  external_labels: {cluster: eu-1}
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs: [{targets: ['%[1]s']}]
      authorization: {credentials_file: %[2]s}
    - path_prefix: /forged
      static_configs: [{targets: ['%[1]s']}]
      authorization: {credentials_file: %[2]s}
      alert_relabel_configs: [{target_label: cluster, replacement: eu-2}]
`, target, token))
	addr := testenv.FreePort(t)
	// Prometheus learns its alertmanagers a few seconds after the rules first fire, and it
	// sends an alert only every resend delay (1m by default): shorten it so the test is quick.
	p := testenv.Start(t, "prometheus", prom, "--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr,
		"--rules.alert.resend-delay=1s")
	p.WaitReady(t, "http://"+addr+"/-/ready", 60*time.Second)

	testenv.Eventually(t, 30*time.Second, func() error {
		a, ok := findAlert(sink.all(), "AlwaysFiring", func(correlate.Alert) bool { return true })
		if !ok {
			return fmt.Errorf("no AlwaysFiring alert yet; %d alerts", len(sink.all()))
		}
		require.Equal(t, map[string]string{"alertname": "AlwaysFiring", "severity": "warning", "cluster": "eu-1"}, a.Labels)
		require.Equal(t, map[string]string{"summary": "it always fires"}, a.Annotations)
		require.Equal(t, SourcePrometheus, a.Source)
		require.Contains(t, a.GeneratorURL, "/graph?g0.expr=vector%281%29")
		// Prometheus sets endsAt a few evaluations ahead: firing, until it stops sending.
		require.True(t, a.EndsAt.After(a.StartsAt), "endsAt %s, startsAt %s", a.EndsAt, a.StartsAt)
		return nil
	})
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := testutil.ToFloat64(h.metrics.requests.WithLabelValues(SourcePrometheus, "eu-1", "400")); n < 1 {
			return fmt.Errorf("the forged batch was not refused yet")
		}
		return nil
	})
	for _, a := range sink.all() {
		require.Equal(t, "eu-1", a.Labels["cluster"])
	}
}

// TestAlertmanagerWebhook puts the handler behind a real Alertmanager's webhook_config, posts an
// alert into that Alertmanager and resolves it. The first delivery fails in the sink: the 503
// makes Alertmanager retry, and only the retry is acknowledged.
func TestAlertmanagerWebhook(t *testing.T) {
	testenv.SkipIfShort(t)
	am := testenv.Peer(t, "alertmanager")
	sink := &recordingSink{fail: 1}
	h, srv, token := startInput(t, sink)

	dir := t.TempDir()
	cfg := testenv.WriteFile(t, dir, "alertmanager.yml", fmt.Sprintf(`route:
  receiver: fleetwatch
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: fleetwatch
    webhook_configs:
      - url: %s%s
        send_resolved: true
        http_config: {authorization: {credentials_file: %s}}
`, srv.URL, PathWebhook, token))
	addr := testenv.FreePort(t)
	p := testenv.Start(t, "alertmanager", am, "--config.file="+cfg,
		"--storage.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--cluster.listen-address=")
	amURL := "http://" + addr
	p.WaitReady(t, amURL+"/-/ready", 30*time.Second)

	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	post := func(endsAt time.Time) {
		t.Helper()
		a := &models.PostableAlert{
			Alert:       models.Alert{Labels: models.LabelSet{"alertname": "NodeDown", "node": "n1"}, GeneratorURL: "http://prometheus.eu-1.example/graph"},
			Annotations: models.LabelSet{"summary": "node n1 is down"},
			StartsAt:    strfmt.DateTime(start),
			EndsAt:      strfmt.DateTime(endsAt),
		}
		b, err := json.Marshal(models.PostableAlerts{a})
		require.NoError(t, err)
		resp, err := http.Post(amURL+"/api/v2/alerts", "application/json", bytes.NewReader(b))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}

	post(time.Time{})
	testenv.Eventually(t, 30*time.Second, func() error {
		a, ok := findAlert(sink.all(), "NodeDown", func(a correlate.Alert) bool { return !a.Resolved(time.Now()) })
		if !ok {
			return fmt.Errorf("no firing NodeDown yet; sink called %d times", sink.callCount())
		}
		require.Equal(t, map[string]string{"alertname": "NodeDown", "node": "n1", "cluster": "eu-1"}, a.Labels)
		require.Equal(t, map[string]string{"summary": "node n1 is down"}, a.Annotations)
		require.Equal(t, SourceAlertmanager, a.Source)
		require.Equal(t, "http://prometheus.eu-1.example/graph", a.GeneratorURL)
		require.True(t, a.StartsAt.Equal(start), "startsAt %s, want %s", a.StartsAt, start)
		return nil
	})
	require.Equal(t, 1.0, testutil.ToFloat64(h.metrics.requests.WithLabelValues(SourceAlertmanager, "eu-1", "503")), "the first delivery failed")

	post(time.Now())
	testenv.Eventually(t, 30*time.Second, func() error {
		if _, ok := findAlert(sink.all(), "NodeDown", func(a correlate.Alert) bool { return a.Resolved(time.Now()) }); !ok {
			return fmt.Errorf("no resolved NodeDown yet")
		}
		return nil
	})
}
