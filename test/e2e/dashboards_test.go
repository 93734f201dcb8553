package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/dashboards"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/lab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestDashboards runs every query of every generated dashboard, and every variable's
// label_values, against the fleet lab, with a crash loop, NotReady nodes and image drift
// going on, and fails on any that returns no series: no panel of a dashboard is empty.
//
// The fleet dashboards query fleetwatch's API. The incidents and fleetwatch dashboards read
// fleetwatch's own metrics, which are on its /metrics endpoint and not in the view, so they
// query what they are made for: a real Prometheus scraping fleetwatch as job "fleetwatch".
// A few series exist only after something happened (a rejected write, an incident), so the
// test makes it happen rather than excusing the panel.
func TestDashboards(t *testing.T) {
	begin := time.Now()
	// A webhook receiver, for the webhook panels: it takes every event.
	receiver := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer receiver.Close()
	secret := testenv.WriteFile(t, t.TempDir(), "hook.secret", "hook-secret-0123456789\n")
	l := lab.Start(t, lab.Options{
		Clusters:         3,
		Rules:            "  evaluation_interval: 1s\n  pack: {node_ready_for: 5s, crash_loop_for: 5s, drift_for: 5s}\n",
		Correlate:        "  evaluation_interval: 1s\n",
		FleetwatchConfig: "hooks:\n  receivers:\n    - {name: e2e, url: " + receiver.URL + ", secret_files: [" + secret + "]}\n",
	})
	scraper := startFleetwatchScraper(t, l)
	t.Logf("lab and the Prometheus scraping fleetwatch up after %s", time.Since(begin).Round(time.Second))

	c := l.Clusters // eu-1 eu-2 us-1
	var ns, deploy string
	for w := range l.Truth()[c[0]].Images {
		ns, deploy, _ = strings.Cut(w, "/")
		break
	}
	l.UploadScenario(fmt.Sprintf(`name: e2e-dashboards
steps:
  - {after: 0s, action: crashloop, cluster: %[1]s, namespace: %[4]s, deployment: %[5]s, restarts_per_minute: 12}
  - {after: 0s, action: nodes_not_ready, cluster: %[2]s, count: 2}
  - {after: 0s, action: image_drift, cluster: %[3]s, namespace: %[4]s, deployment: %[5]s, image: registry.example/drift:v0.0.1-hotfix}
`, c[0], c[1], c[2], ns, deploy))
	for range 3 {
		l.Step("e2e-dashboards")
	}
	// A remote write fleetwatch rejects (it does not decode) and one without valid
	// credentials, for the rejected-writes panel.
	require.Equal(t, http.StatusBadRequest, remoteWrite(t, l.FleetwatchURL, "token-"+c[0], snappy.Encode(nil, []byte("not a protobuf message"))))
	require.Equal(t, http.StatusUnauthorized, remoteWrite(t, l.FleetwatchURL, "not-a-token", snappy.Encode(nil, nil)))

	ds, err := dashboards.Build(config.DefaultThresholds)
	require.NoError(t, err)
	apis := map[dashboards.Source]promv1.API{dashboards.SourceView: l.API(), dashboards.SourceMetrics: scraper}
	// Grafana's values: All clusters, the workload of the scenario, the rate interval of a 1s
	// to 2s scrape interval, the default time range.
	vars := map[string]string{
		"cluster": ".+", "job": dashboards.DefaultJob, "namespace": ns, "deployment": deploy,
		"__rate_interval": "1m", "__interval": "15s", "__range": "1h",
	}
	total := 0
	for _, d := range ds {
		total += len(d.Queries()) + len(d.Variables())
	}

	var nanOnly []string
	testenv.Eventually(t, 2*time.Minute, func() error {
		var empty []string
		nanOnly = nil
		for _, d := range ds {
			a := apis[d.Source]
			for _, q := range d.Queries() {
				n, allNaN, err := runPanelQuery(a, q, vars)
				switch {
				case err != nil:
					return fmt.Errorf("%s: %w", q, err)
				case n == 0:
					empty = append(empty, q.String())
				case allNaN:
					nanOnly = append(nanOnly, q.String())
				}
			}
			for _, v := range d.Variables() {
				if v.Type != dashboard.VariableTypeQuery {
					continue // the data source variable
				}
				values, err := labelValues(a, *v.Query.String, vars)
				if err != nil {
					return fmt.Errorf("%s / $%s: %w", d.UID, v.Name, err)
				}
				if len(values) == 0 {
					empty = append(empty, d.UID+" / $"+v.Name)
				}
			}
		}
		if len(empty) > 0 {
			return fmt.Errorf("%d of %d queries return no series:\n  %s", len(empty), total, strings.Join(empty, "\n  "))
		}
		return nil
	})
	t.Logf("all %d queries and variables of %d dashboards return series, %s after the start", total, len(ds), time.Since(begin).Round(time.Second))
	// Series whose every value is NaN are not empty panels, but say nothing either; they are
	// the ones fleetwatch has no data for in a lab this small (see dashboards/README.md).
	for _, q := range nanOnly {
		t.Logf("only NaN values (nothing observed in the window): %s", q)
	}
}

// startFleetwatchScraper starts a real Prometheus that scrapes the lab's fleetwatch every second
// as job "fleetwatch", the setup the incidents and fleetwatch dashboards assume, and returns its
// API once it has scraped fleetwatch.
func startFleetwatchScraper(t *testing.T, l *lab.Lab) promv1.API {
	t.Helper()
	prom := testenv.Peer(t, "prometheus")
	dir := t.TempDir()
	addr := testenv.FreePort(t)
	cfg := testenv.WriteFile(t, dir, "prometheus.yml", fmt.Sprintf(`global: {scrape_interval: 1s, scrape_timeout: 1s}
scrape_configs:
  - job_name: %s
    static_configs: [{targets: ['%s']}]
`, dashboards.DefaultJob, strings.TrimPrefix(l.FleetwatchURL, "http://")))
	p := testenv.Start(t, "prometheus-fleetwatch", prom, "--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	p.WaitReady(t, "http://"+addr+"/-/ready", 60*time.Second)
	c, err := api.NewClient(api.Config{Address: "http://" + addr})
	require.NoError(t, err)
	a := promv1.NewAPI(c)
	testenv.Eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		v, _, err := a.Query(ctx, `up{job="`+dashboards.DefaultJob+`"} == 1`, time.Now())
		if err != nil {
			return err
		}
		if vec, _ := v.(model.Vector); len(vec) != 1 {
			return errors.New("fleetwatch not scraped yet")
		}
		return nil
	})
	return a
}

// runPanelQuery runs a panel query as Grafana would, an instant query or a range query over the last two
// minutes, and counts the series it returns and whether all their values are NaN.
func runPanelQuery(a promv1.API, q dashboards.Query, vars map[string]string) (series int, allNaN bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	expr := dashboards.Interpolate(q.Expr, vars)
	now := time.Now()
	var v model.Value
	if q.Instant {
		v, _, err = a.Query(ctx, expr, now)
	} else {
		v, _, err = a.QueryRange(ctx, expr, promv1.Range{Start: now.Add(-2 * time.Minute), End: now, Step: 5 * time.Second})
	}
	if err != nil {
		return 0, false, err
	}
	allNaN = true
	switch v := v.(type) {
	case model.Vector:
		for _, s := range v {
			allNaN = allNaN && math.IsNaN(float64(s.Value))
		}
		return len(v), allNaN, nil
	case model.Matrix:
		for _, s := range v {
			for _, p := range s.Values {
				allNaN = allNaN && math.IsNaN(float64(p.Value))
			}
		}
		return len(v), allNaN, nil
	}
	return 0, false, fmt.Errorf("unexpected result type %s", v.Type())
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.+), (\w+)\)$`)

// labelValues runs a label_values(selector, label) variable query as Grafana does, through the
// label values API with the selector as match[], over the last hour.
func labelValues(a promv1.API, query string, vars map[string]string) (model.LabelValues, error) {
	m := labelValuesRE.FindStringSubmatch(dashboards.Interpolate(query, vars))
	if m == nil {
		return nil, fmt.Errorf("%s is not label_values(selector, label)", query)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Now()
	values, _, err := a.LabelValues(ctx, m[2], []string{m[1]}, now.Add(-time.Hour), now)
	return values, err
}

// remoteWrite posts a Remote-Write 1.0 body to fleetwatch with a bearer token and returns the
// status code.
func remoteWrite(t *testing.T, fleetwatchURL, token string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, fleetwatchURL+"/api/v1/write", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}
