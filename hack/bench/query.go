package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// benchQuery is one PromQL expression of the query set.
type benchQuery struct {
	Name string
	Expr string
}

// queries are typical fleet dashboard and alerting queries over the generated data.
func queries(firstCluster string) []benchQuery {
	return []benchQuery{
		{"cpu_by_cluster", `sum by (cluster) (rate(container_cpu_usage_seconds_total[5m]))`},
		{"p99_latency", `histogram_quantile(0.99, sum by (le, cluster) (rate(http_request_duration_seconds_bucket[5m])))`},
		{"topk_memory", `topk(5, container_memory_working_set_bytes)`},
		{"count_up", `count by (cluster) (up)`},
		{"selector_filter", `kube_pod_container_resource_requests{resource="cpu", namespace=~"team-a.*|payments"}`},
		{"requests_by_ns", `sum by (cluster, namespace) (kube_pod_container_resource_requests{resource="memory"})`},
		{"restarts_increase", `sum by (cluster, namespace) (increase(kube_pod_container_status_restarts_total[15m])) > 0`},
		{"mean_latency", `sum by (cluster, handler) (rate(http_request_duration_seconds_sum[5m])) / sum by (cluster, handler) (rate(http_request_duration_seconds_count[5m]))`},
		{"one_cluster_avg", `avg_over_time(container_memory_working_set_bytes{cluster="` + firstCluster + `", namespace!="kube-system"}[10m])`},
	}
}

// queryResult is the normalised answer of a query: label set -> values (one for instant
// queries, one per step for range queries).
type queryResult struct {
	series map[string][]float64
}

type apiResponse struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

type sampleJSON struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
	Values [][2]any          `json:"values"`
}

// timedQuery runs one query (instant when step is 0) and returns the latency of the whole HTTP
// exchange, body read included, and the parsed result.
func timedQuery(ctx context.Context, client *http.Client, s *server, expr string, start, end, step time.Duration) (time.Duration, *queryResult, error) {
	form := url.Values{"query": {expr}}
	path := "/api/v1/query"
	if step > 0 {
		path = "/api/v1/query_range"
		form.Set("start", secs(start))
		form.Set("end", secs(end))
		form.Set("step", secs(step))
	} else {
		form.Set("time", secs(end))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.Addr+path, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	s.Authorize(req)
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	lat := time.Since(t0)
	if err != nil {
		return 0, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, nil, fmt.Errorf("%s %s: HTTP %d: %.500s", s.Name, expr, resp.StatusCode, body)
	}
	r, err := parseResult(body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", s.Name, expr, err)
	}
	return lat, r, nil
}

// secs formats a duration since the epoch (or a step) as Prometheus API seconds.
func secs(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 3, 64)
}

func parseResult(body []byte) (*queryResult, error) {
	var ar apiResponse
	if err := json.Unmarshal(body, &ar); err != nil {
		return nil, fmt.Errorf("decode response: %w", err)
	}
	if ar.Status != "success" {
		return nil, fmt.Errorf("%s: %s", ar.ErrorType, ar.Error)
	}
	out := &queryResult{series: map[string][]float64{}}
	switch ar.Data.ResultType {
	case "vector", "matrix":
		var ss []sampleJSON
		if err := json.Unmarshal(ar.Data.Result, &ss); err != nil {
			return nil, err
		}
		for _, s := range ss {
			var vs []float64
			if ar.Data.ResultType == "vector" {
				vs = []float64{parseValue(s.Value)}
			} else {
				for _, p := range s.Values {
					vs = append(vs, parseValue(p))
				}
			}
			out.series[labelString(s.Metric)] = vs
		}
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(ar.Data.Result, &v); err != nil {
			return nil, err
		}
		out.series["{}"] = []float64{parseValue(v)}
	default:
		return nil, fmt.Errorf("unexpected result type %q", ar.Data.ResultType)
	}
	return out, nil
}

func parseValue(p [2]any) float64 {
	s, _ := p[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

func labelString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	b.WriteByte('}')
	return b.String()
}

// compareResults returns an error when the two answers do not have the same series, and a
// warning when they do but some values differ beyond floating-point noise.
func compareResults(a, b *queryResult) (errMsg, warnMsg string) {
	if len(a.series) != len(b.series) {
		return fmt.Sprintf("%d series from fleetwatch, %d from prometheus", len(a.series), len(b.series)), ""
	}
	var missing []string
	maxRel := 0.0
	pointsDiffer := 0
	var example string
	for k, va := range a.series {
		vb, ok := b.series[k]
		if !ok {
			missing = append(missing, k)
			continue
		}
		if len(va) != len(vb) {
			pointsDiffer++
			if example == "" {
				example = fmt.Sprintf("e.g. %s: %d points from fleetwatch, %d from prometheus", k, len(va), len(vb))
			}
			continue
		}
		for i := range va {
			x, y := va[i], vb[i]
			if math.IsNaN(x) && math.IsNaN(y) || x == y {
				continue
			}
			rel := math.Abs(x-y) / math.Max(math.Abs(x), math.Abs(y))
			if rel > maxRel {
				maxRel = rel
				if rel > 1e-9 {
					example = fmt.Sprintf("e.g. %s point %d of %d: %g from fleetwatch, %g from prometheus", k, i, len(va), x, y)
				}
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Sprintf("same number of series (%d) but %d label sets differ, e.g. %s only in fleetwatch", len(a.series), len(missing), missing[0]), ""
	}
	if pointsDiffer > 0 {
		warnMsg = fmt.Sprintf("%d series have a different number of points", pointsDiffer)
	}
	if maxRel > 1e-9 {
		if warnMsg != "" {
			warnMsg += "; "
		}
		warnMsg += fmt.Sprintf("values differ, max relative difference %.3g", maxRel)
	}
	if warnMsg != "" {
		warnMsg += "; " + example
	}
	return "", warnMsg
}
