package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-openapi/strfmt"
	"github.com/prometheus/alertmanager/api/v2/models"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/hack/internal/benchproc"
	"github.com/fleetwatch/fleetwatch/hack/internal/stats"
)

// phaseResult is one measured phase (new alerts, or their resend) against one target.
type phaseResult struct {
	Phase    string `json:"phase"`
	Alerts   int    `json:"alerts"`
	Requests int    `json:"requests"`
	Bytes    int64  `json:"bytes"`
	// Seconds is from the first request sent to the last answer received.
	Seconds      float64 `json:"seconds"`
	AlertsPerSec float64 `json:"alerts_per_sec"`
	// CPUSeconds is the server's user+system time over Seconds.
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUPer100k float64 `json:"cpu_seconds_per_100k_alerts"`
	// SettledSeconds is from the first request until the target finished the phase's work:
	// for fleetwatch, until every alert of the phase was in an incident evaluation (the
	// alert-to-incident histogram counted them all); for Alertmanager, which has nothing to
	// wait for, until its CPU use fell below 5% of a core. SettledCPUPer100k counts the CPU to then.
	SettledSeconds    float64 `json:"settled_seconds"`
	SettledCPUPer100k float64 `json:"settled_cpu_seconds_per_100k_alerts"`
	ReqP50ms          float64 `json:"request_p50_ms"`
	ReqP99ms          float64 `json:"request_p99_ms"`
	ReqMaxms          float64 `json:"request_max_ms"`
	// BenchCores and OtherCores are the average cores the bench itself and every other process
	// of the machine used during the sends: other load makes wall-clock numbers noisy.
	BenchCores float64 `json:"bench_cores"`
	OtherCores float64 `json:"other_cores"`
	// Alert-to-incident latency of this phase's alerts from fleetwatch's histogram (delta over
	// the phase); NaN for Alertmanager. A value at the histogram's last bound means "above".
	IncidentP50ms float64 `json:"incident_p50_ms"`
	IncidentP99ms float64 `json:"incident_p99_ms"`
	IncidentCount float64 `json:"incident_count"`
	// IncidentTopMs is the histogram's highest finite bound: a quantile there means "at least".
	IncidentTopMs float64 `json:"incident_histogram_top_ms,omitempty"`
	// Evaluations fleetwatch ran in the phase until it settled, and their mean duration.
	Evaluations float64 `json:"evaluations"`
	EvalMeanMs  float64 `json:"evaluation_mean_ms"`

	endsAt     time.Time // of the alerts as posted in this phase
	sendsEnded time.Time
}

func newHTTPClient(conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = conns * 4
	tr.MaxIdleConnsPerHost = conns * 2
	tr.DisableCompression = true
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

// send posts every batch with `workers` concurrent senders taking the next batch in turn.
// Any answer other than 2xx fails the phase.
func send(ctx context.Context, client *http.Client, s *server, phase string, enc *encoded, workers int) (phaseResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		once     sync.Once
		firstErr error
		wg       sync.WaitGroup
		next     atomic.Int64
		lats     = make([]time.Duration, len(enc.batches))
		alerts   int
	)
	for _, b := range enc.batches {
		alerts += b.alerts
	}
	fail := func(err error) { once.Do(func() { firstErr = err; cancel() }) }
	c0, err := benchproc.TakeCPU(s.PID())
	if err != nil {
		return phaseResult{}, err
	}
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(enc.batches) || ctx.Err() != nil {
					return
				}
				b := &enc.batches[i]
				t0 := time.Now()
				if err := postAlerts(ctx, client, s, b.cluster, b.body); err != nil {
					fail(fmt.Errorf("%s %s: %w", s.Name, phase, err))
					return
				}
				lats[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	c1, cerr := benchproc.TakeCPU(s.PID())
	if firstErr != nil {
		return phaseResult{}, firstErr
	}
	if cerr != nil {
		return phaseResult{}, cerr
	}
	r := phaseResult{
		Phase: phase, Alerts: alerts, Requests: len(enc.batches), Bytes: enc.bytes,
		Seconds: elapsed.Seconds(), CPUSeconds: c1.Server - c0.Server,
		IncidentP50ms: math.NaN(), IncidentP99ms: math.NaN(), Evaluations: math.NaN(), EvalMeanMs: math.NaN(),
	}
	r.AlertsPerSec = float64(alerts) / r.Seconds
	r.CPUPer100k = r.CPUSeconds / float64(alerts) * 1e5
	r.BenchCores = (c1.Self - c0.Self) / r.Seconds
	r.OtherCores = benchproc.OtherCores(c0, c1)
	r.ReqP50ms = stats.Ms(stats.Percentile(lats, 0.5))
	r.ReqP99ms = stats.Ms(stats.Percentile(lats, 0.99))
	r.ReqMaxms = stats.Ms(stats.Percentile(lats, 1))
	return r, nil
}

// postAlerts posts one body to /api/v2/alerts as Prometheus's notifier does, with the
// cluster's bearer token when the server has tokens.
func postAlerts(ctx context.Context, client *http.Client, s *server, cluster string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL("/api/v2/alerts"), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "fleetwatch-alertbench")
	if tok := s.tokens[cluster]; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("cluster %s: HTTP %d: %s", cluster, resp.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

// fwMetrics is what the bench reads from fleetwatch's /metrics.
type fwMetrics struct {
	buckets  map[float64]float64 // fleetwatch_correlate_alert_to_incident_seconds, cumulative by le
	count    float64
	received float64 // fleetwatch_correlate_alerts_received_total, all sources
	// evals and evalSum are correlate.MetricEvaluationDuration's count and sum.
	evals, evalSum float64
}

const (
	metricLatency  = correlate.MetricAlertToIncident
	metricReceived = correlate.MetricAlertsReceived
)

func scrapeFleetwatch(ctx context.Context, client *http.Client, s *server) (fwMetrics, error) {
	m := fwMetrics{buckets: map[float64]float64{}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL("/metrics"), nil)
	if err != nil {
		return m, err
	}
	s.Authorize(req)
	resp, err := client.Do(req)
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return m, fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	seen := false
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "fleetwatch_correlate_") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		name := line[:sp]
		switch {
		case strings.HasPrefix(name, metricLatency+"_bucket{"):
			_, le, ok := strings.Cut(name, `le="`)
			if !ok {
				continue
			}
			le, _, _ = strings.Cut(le, `"`)
			b, err := strconv.ParseFloat(le, 64) // "+Inf" parses as +Inf
			if err != nil {
				continue
			}
			m.buckets[b] = v
			seen = true
		case name == metricLatency+"_count" || strings.HasPrefix(name, metricLatency+"_count{"):
			m.count = v
		case strings.HasPrefix(name, metricReceived):
			m.received += v
		case name == correlate.MetricEvaluationDuration+"_count":
			m.evals = v
		case name == correlate.MetricEvaluationDuration+"_sum":
			m.evalSum = v
		}
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if !seen {
		return m, fmt.Errorf("%s not on fleetwatch's /metrics", metricLatency)
	}
	return m, nil
}

// histogramQuantile is Prometheus's histogram_quantile over the buckets' increase from a to b:
// linear within the bucket; in the +Inf bucket, the highest finite bound.
func histogramQuantile(q float64, a, b fwMetrics) float64 {
	type bucket struct{ le, n float64 }
	var bs []bucket
	for le, n := range b.buckets {
		bs = append(bs, bucket{le, n - a.buckets[le]})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || bs[len(bs)-1].n <= 0 {
		return math.NaN()
	}
	rank := q * bs[len(bs)-1].n
	lo, prev := 0.0, 0.0
	for i, x := range bs {
		if x.n >= rank {
			if math.IsInf(x.le, 1) {
				if i == 0 {
					return math.NaN()
				}
				return bs[i-1].le
			}
			if x.n == prev {
				return x.le
			}
			return lo + (x.le-lo)*(rank-prev)/(x.n-prev)
		}
		lo, prev = x.le, x.n
	}
	return bs[len(bs)-1].le
}

// latencyTop is the histogram's highest finite bound: a quantile equal to it means "above".
func latencyTop(m fwMetrics) float64 {
	top := 0.0
	for le := range m.buckets {
		if !math.IsInf(le, 1) {
			top = max(top, le)
		}
	}
	return top
}

// waitCorrelated polls fleetwatch's metrics until the alert-to-incident histogram counted n
// more alerts than in before (every alert taken in was in an evaluation), and returns the
// metrics then.
func waitCorrelated(ctx context.Context, client *http.Client, s *server, before fwMetrics, n int, limit time.Duration) (fwMetrics, error) {
	deadline := time.Now().Add(limit)
	for {
		m, err := scrapeFleetwatch(ctx, client, s)
		if err != nil {
			return m, err
		}
		if m.count-before.count >= float64(n) {
			return m, nil
		}
		if time.Now().After(deadline) {
			return m, fmt.Errorf("fleetwatch correlated %.0f of %d alerts within %s", m.count-before.count, n, limit)
		}
		if err := s.Alive(); err != nil {
			return m, err
		}
		if err := benchproc.Sleep(ctx, 50*time.Millisecond); err != nil {
			return m, err
		}
	}
}

// probeResult is how long one alert posted after the load took to become visible.
type probeResult struct {
	VisibleMs float64 `json:"visible_ms"`
	Polls     int     `json:"polls"`
	// LastPollMs is how long the poll that saw it took: the resolution of VisibleMs.
	LastPollMs float64 `json:"last_poll_ms"`
}

// probeLabels are the labels the probe alert is posted with (the target adds the cluster).
func probeLabels(id string) map[string]string {
	return map[string]string{"alertname": "AlertbenchProbe", "probe_id": id, "severity": "warning", "prometheus": "monitoring/k8s"}
}

// probe posts one alert with a unique label as cluster's Prometheus would, and polls until the
// target shows it: fleetwatch in an active incident (GET /api/v1/incidents), Alertmanager in
// GET /api/v2/alerts with a filter. The time runs from just before the POST.
func probe(ctx context.Context, client *http.Client, s *server, cluster, id string, limit time.Duration) (probeResult, error) {
	now := time.Now()
	ls := models.LabelSet(probeLabels(id))
	if s.Name == nameAlertmanager {
		ls["cluster"] = cluster
	}
	body, err := json.Marshal(models.PostableAlerts{{
		Alert:       models.Alert{Labels: ls},
		Annotations: models.LabelSet{"summary": "hack/alertbench probe alert."},
		StartsAt:    strfmt.DateTime(now),
		EndsAt:      strfmt.DateTime(now.Add(4 * time.Minute)),
	}})
	if err != nil {
		return probeResult{}, err
	}
	var path string
	if s.Name == nameFleetwatch {
		path = "/api/v1/incidents?" + url.Values{"state": {"active"}, "cluster": {cluster}}.Encode()
	} else {
		path = "/api/v2/alerts?" + url.Values{"filter": {fmt.Sprintf("probe_id=%q", id)}}.Encode()
	}
	start := time.Now()
	if err := postAlerts(ctx, client, s, cluster, body); err != nil {
		return probeResult{}, fmt.Errorf("probe: %w", err)
	}
	var r probeResult
	for {
		t0 := time.Now()
		found, err := probeVisible(ctx, client, s, path, id)
		if err != nil {
			return r, fmt.Errorf("probe: %w", err)
		}
		r.Polls++
		r.LastPollMs = stats.Ms(time.Since(t0))
		if found {
			r.VisibleMs = stats.Ms(time.Since(start))
			return r, nil
		}
		if time.Since(start) > limit {
			return r, fmt.Errorf("probe alert not visible in %s after %s", s.Name, limit)
		}
		if err := benchproc.Sleep(ctx, 10*time.Millisecond); err != nil {
			return r, err
		}
	}
}

// listedAlert is the part of an alert both APIs list that the bench reads.
type listedAlert struct {
	Labels map[string]string `json:"labels"`
}

type incidentList struct {
	Status string `json:"status"`
	Data   []struct {
		Alerts []listedAlert `json:"alerts"`
	} `json:"data"`
}

func getJSON(ctx context.Context, client *http.Client, s *server, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL(path), nil)
	if err != nil {
		return err
	}
	s.Authorize(req)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: HTTP %d: %s", path, resp.StatusCode, bytes.TrimSpace(msg))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func probeVisible(ctx context.Context, client *http.Client, s *server, path, id string) (bool, error) {
	if s.Name == nameFleetwatch {
		var l incidentList
		if err := getJSON(ctx, client, s, path, &l); err != nil {
			return false, err
		}
		for _, inc := range l.Data {
			for _, a := range inc.Alerts {
				if a.Labels["probe_id"] == id {
					return true, nil
				}
			}
		}
		return false, nil
	}
	var as []listedAlert
	if err := getJSON(ctx, client, s, path, &as); err != nil {
		return false, err
	}
	for _, a := range as {
		if a.Labels["probe_id"] == id {
			return true, nil
		}
	}
	return false, nil
}

// heldAlerts lists what the target holds now: fleetwatch, the alerts of its active incidents;
// Alertmanager, its alerts. It returns how many distinct alerts (by label set) and how many
// listings there were (an alert in two incidents is listed twice), and the distinct label sets
// (labelKey).
func heldAlerts(ctx context.Context, client *http.Client, s *server) (distinct, listed int, held map[string]bool, err error) {
	c := *client
	c.Timeout = 10 * time.Minute
	seen := map[string]bool{}
	add := func(as []listedAlert) {
		for _, a := range as {
			seen[labelKey(a.Labels)] = true
			listed++
		}
	}
	if s.Name == nameFleetwatch {
		var l incidentList
		if err := getJSON(ctx, &c, s, "/api/v1/incidents?state=active", &l); err != nil {
			return 0, 0, nil, err
		}
		if l.Status != "success" {
			return 0, 0, nil, fmt.Errorf("GET /api/v1/incidents: status %q", l.Status)
		}
		for _, inc := range l.Data {
			add(inc.Alerts)
		}
	} else {
		var as []listedAlert
		if err := getJSON(ctx, &c, s, "/api/v2/alerts", &as); err != nil {
			return 0, 0, nil, err
		}
		add(as)
	}
	return len(seen), listed, seen, nil
}

// heldDiff names up to three label sets posted but not held and up to three held but never
// posted: what a count that is off by a few is made of.
func heldDiff(st *stream, probe map[string]string, held map[string]bool) string {
	want := map[string]bool{labelKey(probe): true}
	for ci, c := range st.clusters {
		for _, a := range st.alerts[ci] {
			ls := maps.Clone(a.labels)
			ls["cluster"] = c
			want[labelKey(ls)] = true
		}
	}
	show := func(k string) string {
		return strings.NewReplacer("\xff", "=", "\xfe", " ").Replace(k)
	}
	var missing, extra []string
	for k := range want {
		if !held[k] && len(missing) < 3 {
			missing = append(missing, show(k))
		}
	}
	for k := range held {
		if !want[k] && len(extra) < 3 {
			extra = append(extra, show(k))
		}
	}
	return fmt.Sprintf("not held: %q; held, not posted: %q", missing, extra)
}
