package integration

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// requirePartialResponse checks that with the source gone the answer is a warning naming it,
// and with partial_response=false an error naming it.
func requirePartialResponse(t *testing.T, fw, source, query string) {
	t.Helper()
	params := url.Values{"query": {query}}
	code, body := rawGet(t, fw, "/api/v1/query", params)
	require.Equal(t, 200, code, body)
	r := decodeAPI(t, body)
	require.Equal(t, "success", r.Status)
	require.Contains(t, strings.Join(r.Warnings, " "), fmt.Sprintf("remote source %q", source), body)

	params.Set("partial_response", "false")
	code, body = rawGet(t, fw, "/api/v1/query", params)
	require.NotEqual(t, 200, code, body)
	r = decodeAPI(t, body)
	require.Equal(t, "error", r.Status)
	require.Contains(t, r.Error, fmt.Sprintf("remote source %q", source))
}

// TestRemoteReadSource: a member Prometheus read through its remote-read endpoint is merged
// into the view and gives the same answers as the member.
func TestRemoteReadSource(t *testing.T) {
	testenv.SkipIfShort(t)
	// Prometheus's read endpoint adds its external labels to what it returns.
	member, addr := startPrometheus(t, "prometheus-remote-read", "  external_labels: {cluster: rr-1}", "")
	_, fw := startFleetwatch(t, t.TempDir(), fmt.Sprintf(`
clusters: []
query:
  remote_read:
    - {name: rr-1, url: "%s/api/v1/read", timeout: 5s}
`, addr))
	mapi, fleet := apiClient(t, addr), apiClient(t, fw)
	testenv.Eventually(t, 60*time.Second, func() error {
		return checkParity(t, mapi, fleet, "rr-1", time.Now().Add(-3*time.Second))
	})
	member.Kill()
	requirePartialResponse(t, fw, "rr-1", `count(up{cluster="rr-1"})`)
}

// TestHAPairDeduplicated: two Prometheus replicas scrape the same target and both
// remote-write as one cluster, told apart by prometheus_replica. The view keeps both on
// ingest and shows one series per target, without the replica label.
func TestHAPairDeduplicated(t *testing.T) {
	testenv.SkipIfShort(t)
	dir := t.TempDir()
	testenv.WriteFile(t, dir, "ha.token", "token-ha")
	_, fw := startFleetwatch(t, dir, `
clusters:
  - name: ha
    remote_write: {bearer_token_file: ha.token}
query:
  replica_labels: [prometheus_replica]
`)
	target := testenv.FreePort(t) // a third process both replicas scrape: a plain Prometheus
	_, targetURL := startPrometheusAt(t, "ha-target", target)
	rw := fmt.Sprintf(`remote_write:
  - url: %s/api/v1/write
    bearer_token: token-ha
    queue_config: {batch_send_deadline: 500ms}
`, fw)
	for _, replica := range []string{"a", "b"} {
		startPrometheusScraping(t, "prometheus-replica-"+replica, "  external_labels: {prometheus_replica: "+replica+"}", strings.TrimPrefix(targetURL, "http://"), rw)
	}
	query := func(q string) string {
		code, body := rawGet(t, fw, "/api/v1/query", url.Values{"query": {q}})
		require.Equal(t, 200, code, body)
		return body
	}
	// Both replicas' data arrived: the TSDB head (below deduplication) holds series of each.
	testenv.Eventually(t, 60*time.Second, func() error {
		_, body := rawGet(t, fw, "/api/v1/status/tsdb", nil)
		for _, r := range []string{"a", "b"} {
			if !strings.Contains(body, `{"name":"prometheus_replica=`+r+`","value":`) {
				return fmt.Errorf("want replica %s's series in the head: %s", r, body)
			}
		}
		return nil
	})
	testenv.Eventually(t, 60*time.Second, func() error {
		body := query(`count(up{cluster="ha", job="target"})`)
		if !strings.Contains(body, `"1"]`) {
			return fmt.Errorf("want exactly one deduplicated series: %s", body)
		}
		return nil
	})
	require.NotContains(t, query(`up{cluster="ha", job="target"}`), "prometheus_replica")
	code, body := rawGet(t, fw, "/api/v1/labels", nil)
	require.Equal(t, 200, code)
	require.NotContains(t, body, "prometheus_replica")
	require.Contains(t, body, "cluster")
}
