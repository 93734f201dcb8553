package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
	"github.com/fleetwatch/fleetwatch/query"
)

// The query set compared between each member Prometheus and fleetwatch. SEL is the selector
// that picks the member's data: empty on the member, cluster="<name>" on fleetwatch.
var paritySet = []string{
	`up{job="prometheus"SEL}`,
	`sum by (job) (prometheus_http_requests_total{job="prometheus"SEL})`,
	`sum by (handler) (rate(prometheus_http_requests_total{job="prometheus"SEL}[30s]))`,
	`histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket{job="prometheus"SEL}[30s])))`,
	`max_over_time(prometheus_tsdb_head_series{job="prometheus"SEL}[1m])`,
	`count(count by (__name__) ({job="prometheus"SEL, __name__=~"prometheus_tsdb_.*"}))`,
	`topk(3, sum by (handler) (prometheus_http_requests_total{job="prometheus"SEL}))`,
}

func withSel(q, sel string) string {
	if sel == "" {
		return strings.ReplaceAll(q, "SEL", "")
	}
	return strings.ReplaceAll(q, "SEL", ", "+sel)
}

// checkParity runs the query set on the member and on fleetwatch at the same time (instant)
// and over the same range, and returns the first difference.
func checkParity(t *testing.T, member, fleet promv1.API, cluster string, at time.Time) error {
	for _, q := range paritySet {
		want, _, err := member.Query(ctx(t), withSel(q, ""), at)
		if err != nil {
			return fmt.Errorf("member %s: %w", q, err)
		}
		got, _, err := fleet.Query(ctx(t), withSel(q, `cluster="`+cluster+`"`), at)
		if err != nil {
			return fmt.Errorf("fleetwatch %s: %w", q, err)
		}
		if normalize(want) != normalize(got) {
			return fmt.Errorf("instant %s differs:\nmember:     %s\nfleetwatch: %s", q, normalize(want), normalize(got))
		}
		if normalize(want) == "" {
			return fmt.Errorf("instant %s is empty on the member; nothing compared", q)
		}
		r := promv1.Range{Start: at.Add(-20 * time.Second), End: at, Step: 2 * time.Second}
		wantR, _, err := member.QueryRange(ctx(t), withSel(q, ""), r)
		if err != nil {
			return fmt.Errorf("member range %s: %w", q, err)
		}
		gotR, _, err := fleet.QueryRange(ctx(t), withSel(q, `cluster="`+cluster+`"`), r)
		if err != nil {
			return fmt.Errorf("fleetwatch range %s: %w", q, err)
		}
		if normalize(wantR) != normalize(gotR) {
			return fmt.Errorf("range %s differs:\nmember:     %s\nfleetwatch: %s", q, normalize(wantR), normalize(gotR))
		}
	}
	return nil
}

// TestRemoteWriteParity: one real Prometheus remote-writes 1.0 (bearer token), another 2.0
// (basic auth). Through fleetwatch, the query set gives exactly what each member gives, and the
// series carry the cluster label of the credentials that sent them.
func TestRemoteWriteParity(t *testing.T) {
	testenv.SkipIfShort(t)
	dir := t.TempDir()
	testenv.WriteFile(t, dir, "rw1.token", "token-rw1\n")
	testenv.WriteFile(t, dir, "rw2.password", "pw-rw2\n")
	_, fw := startFleetwatch(t, dir, `
clusters:
  - name: rw1
    labels: {region: eu-west-1}
    remote_write: {bearer_token_file: rw1.token}
  - name: rw2
    remote_write: {basic_auth: {username: rw2, password_file: rw2.password}}
query:
  result_cache: {max_size_bytes: 33554432, freshness: 10s, split_interval: 10s}
`)
	remoteWrite := func(msg, auth string) string {
		return fmt.Sprintf(`remote_write:
  - url: %s/api/v1/write
    protobuf_message: %s
    %s
    queue_config: {batch_send_deadline: 500ms, min_backoff: 100ms, max_backoff: 1s}
    metadata_config: {send_interval: 1s}
`, fw, msg, auth)
	}
	_, m1 := startPrometheus(t, "prometheus-rw1", "", remoteWrite("prometheus.WriteRequest", "bearer_token: token-rw1"))
	_, m2 := startPrometheus(t, "prometheus-rw2", "", remoteWrite("io.prometheus.write.v2.Request", "basic_auth: {username: rw2, password: pw-rw2}"))
	fleet := apiClient(t, fw)

	// Let a minute-long window fill partly, then compare at a time a few seconds in the past,
	// which remote-write has certainly delivered once the comparison passes.
	for cluster, member := range map[string]string{"rw1": m1, "rw2": m2} {
		mapi := apiClient(t, member)
		testenv.Eventually(t, 60*time.Second, func() error {
			return checkParity(t, mapi, fleet, cluster, time.Now().Add(-3*time.Second))
		})
	}

	// Aggregation by cluster sees both members.
	v, warns, err := fleet.Query(ctx(t), `count by (cluster) (up{job="prometheus"})`, time.Now())
	require.NoError(t, err)
	require.Empty(t, warns)
	require.Equal(t, "{cluster=\"rw1\"} = 1\n{cluster=\"rw2\"} = 1", normalizeKeepCluster(v))

	// Metadata endpoints, through the official client.
	vals, _, err := fleet.LabelValues(ctx(t), "cluster", nil, time.Now().Add(-time.Hour), time.Now())
	require.NoError(t, err)
	require.Equal(t, model.LabelValues{"rw1", "rw2"}, vals)
	names, _, err := fleet.LabelNames(ctx(t), nil, time.Now().Add(-time.Hour), time.Now())
	require.NoError(t, err)
	require.Contains(t, names, "cluster")
	series, _, err := fleet.Series(ctx(t), []string{`up{cluster="rw2"}`}, time.Now().Add(-time.Hour), time.Now())
	require.NoError(t, err)
	require.Len(t, series, 1)
	// Metric metadata sent with remote-write 1.0 is served in Prometheus's format.
	testenv.Eventually(t, 30*time.Second, func() error {
		md, err := fleet.Metadata(ctx(t), "prometheus_http_requests_total", "")
		if err != nil {
			return err
		}
		if len(md["prometheus_http_requests_total"]) == 0 || md["prometheus_http_requests_total"][0].Type != "counter" {
			return fmt.Errorf("metadata not there yet: %v", md)
		}
		return nil
	})
	bi, err := fleet.Buildinfo(ctx(t))
	require.NoError(t, err)
	require.NotEmpty(t, bi.GoVersion)

	// Prometheus's error format for a bad query, GET and POST.
	code, body := rawGet(t, fw, "/api/v1/query", url.Values{"query": {"sum(("}})
	require.Equal(t, 400, code, body)
	r := decodeAPI(t, body)
	require.Equal(t, "error", r.Status)
	require.Equal(t, "bad_data", r.ErrorType)

	// A range query old enough to be final is cached: the second answer is a hit and equal.
	// At a 100 ms step the pieces are 10 s long; ask for one that ended over 10 s ago.
	testenv.Eventually(t, 60*time.Second, func() error {
		from := time.Now().Add(-20 * time.Second).Truncate(10 * time.Second)
		params := url.Values{"query": {`sum(up{job="prometheus"})`}, "start": {fmt.Sprint(from.Unix())}, "end": {fmt.Sprintf("%d.9", from.Unix()+9)}, "step": {"0.1"}}
		code1, body1 := rawGet(t, fw, "/api/v1/query_range", params)
		if code1 != 200 || !strings.Contains(body1, `"values":[[`) {
			return fmt.Errorf("no data in the range yet: %d %s", code1, body1)
		}
		resp, err := http.Get(fw + "/api/v1/query_range?" + params.Encode())
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body2, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		// A late sample (a remote-write retry) empties the cache; then try the next piece.
		if h := resp.Header.Get(query.HeaderCache); h != query.CacheHit {
			return fmt.Errorf("second answer: %s %q", query.HeaderCache, h)
		}
		require.Equal(t, 200, resp.StatusCode)
		require.JSONEq(t, body1, string(body2))
		return nil
	})
	_, metrics := rawGet(t, fw, "/metrics", nil)
	require.Regexp(t, query.MetricResultCacheRequests+`\{result="`+query.CacheHit+`"\} [1-9]`, metrics)
}

func normalizeKeepCluster(v model.Value) string {
	var lines []string
	for _, s := range v.(model.Vector) {
		lines = append(lines, fmt.Sprintf("%s = %s", s.Metric, s.Value))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
