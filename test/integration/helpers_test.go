// Package integration runs fleetwatch against the real Prometheus and Thanos binaries on
// loopback: remote-write 1.0 and 2.0 from real Prometheus servers, a real Thanos sidecar as a
// remote source, kill -9 durability and config reloads.
package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// fleetwatch starts `fleetwatch serve` with the given config and waits until it is ready.
func startFleetwatch(t *testing.T, dir, cfg string) (*testenv.Process, string) {
	t.Helper()
	return startFleetwatchArgs(t, dir, cfg)
}

// startFleetwatchArgs is startFleetwatch with more flags.
func startFleetwatchArgs(t *testing.T, dir, cfg string, args ...string) (*testenv.Process, string) {
	t.Helper()
	addr := testenv.FreePort(t)
	cfgPath := testenv.WriteFile(t, dir, "fleetwatch.yml", cfg)
	p := testenv.Start(t, "fleetwatch", testenv.Fleetwatch(t), append([]string{"serve",
		"--config.file=" + cfgPath, "--web.listen-address=" + addr,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"), "--log.level=debug"}, args...)...)
	p.WaitReady(t, "http://"+addr+"/-/ready", 30*time.Second)
	return p, "http://" + addr
}

// startPrometheus starts a real Prometheus that scrapes itself every second, with extra config
// appended (remote_write, external labels).
func startPrometheus(t *testing.T, name, global, extra string, args ...string) (*testenv.Process, string) {
	t.Helper()
	return startPrometheusOn(t, name, testenv.FreePort(t), global, "", extra, args...)
}

// startPrometheusAt starts a Prometheus on addr that scrapes itself as job "target".
func startPrometheusAt(t *testing.T, name, addr string) (*testenv.Process, string) {
	t.Helper()
	return startPrometheusOn(t, name, addr, "", "", "")
}

// startPrometheusScraping starts a Prometheus that scrapes target (host:port) as job "target".
func startPrometheusScraping(t *testing.T, name, global, target, extra string) (*testenv.Process, string) {
	t.Helper()
	return startPrometheusOn(t, name, testenv.FreePort(t), global, target, extra)
}

func startPrometheusOn(t *testing.T, name, addr, global, target, extra string, args ...string) (*testenv.Process, string) {
	t.Helper()
	dir := t.TempDir()
	job, scraped := "prometheus", addr
	if target != "" || name == "ha-target" {
		job = "target"
	}
	if target != "" {
		scraped = target
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
%s
scrape_configs:
  - job_name: %s
    static_configs: [{targets: ['%s']}]
%s`, global, job, scraped, extra)
	cfgPath := testenv.WriteFile(t, dir, "prometheus.yml", cfg)
	args = append([]string{"--config.file=" + cfgPath, "--storage.tsdb.path=" + filepath.Join(dir, "data"), "--web.listen-address=" + addr}, args...)
	p := testenv.Start(t, name, testenv.Peer(t, "prometheus"), args...)
	p.WaitReady(t, "http://"+addr+"/-/ready", 60*time.Second)
	return p, "http://" + addr
}

func apiClient(t *testing.T, addr string) promv1.API {
	t.Helper()
	c, err := api.NewClient(api.Config{Address: addr})
	require.NoError(t, err)
	return promv1.NewAPI(c)
}

// normalize renders a query result without the cluster label, sorted, with values rounded to
// 9 significant digits, so results from a member Prometheus and from fleetwatch compare
// equal when they hold the same samples. NaN renders as NaN on both sides.
func normalize(v model.Value) string {
	var lines []string
	fmtVal := func(f model.SampleValue) string { return strconvG(float64(f)) }
	switch r := v.(type) {
	case model.Vector:
		for _, s := range r {
			m := s.Metric.Clone()
			delete(m, "cluster")
			lines = append(lines, fmt.Sprintf("%s @%d = %s", m, s.Timestamp, fmtVal(s.Value)))
		}
	case model.Matrix:
		for _, s := range r {
			m := s.Metric.Clone()
			delete(m, "cluster")
			var pts []string
			for _, p := range s.Values {
				pts = append(pts, fmt.Sprintf("%d=%s", p.Timestamp, fmtVal(p.Value)))
			}
			lines = append(lines, fmt.Sprintf("%s [%s]", m, strings.Join(pts, " ")))
		}
	case *model.Scalar:
		lines = append(lines, fmtVal(r.Value))
	default:
		lines = append(lines, v.String())
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func strconvG(f float64) string {
	if math.IsNaN(f) {
		return "NaN"
	}
	return fmt.Sprintf("%.9g", f)
}

// rawGet performs a GET on the API and returns status and body.
func rawGet(t *testing.T, base, path string, params url.Values) (int, string) {
	t.Helper()
	resp, err := http.Get(base + path + "?" + params.Encode())
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
}

func decodeAPI(t *testing.T, body string) apiResponse {
	t.Helper()
	var r apiResponse
	require.NoError(t, json.Unmarshal([]byte(body), &r), body)
	return r
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// metricSum is the sum of the samples of metric name on base's /metrics whose labels include
// match, read with Prometheus's text parser; ok says whether the metric is there at all.
func metricSum(base, name string, match map[string]string) (sum float64, ok bool, err error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, false, err
	}
	fam, ok := fams[name]
	if !ok {
		return 0, false, nil
	}
metrics:
	for _, m := range fam.GetMetric() {
		for k, v := range match {
			if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == k && l.GetValue() == v }) {
				continue metrics
			}
		}
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
	}
	return sum, true, nil
}
