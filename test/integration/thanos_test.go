package integration

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestThanosStoreAPISource: a cluster whose Prometheus sits behind a real Thanos sidecar is
// read through the StoreAPI, merged into the view, and compared with the member itself. When
// the sidecar goes away, the answer carries a warning naming it (partial response), and
// partial_response=false turns that into an error.
func TestThanosStoreAPISource(t *testing.T) {
	testenv.SkipIfShort(t)
	thanos := testenv.Peer(t, "thanos")
	// The sidecar requires external labels; they are how the member says which cluster it is.
	_, member := startPrometheus(t, "prometheus-thanos", "  external_labels: {cluster: th-1}", "",
		"--storage.tsdb.min-block-duration=2h", "--storage.tsdb.max-block-duration=2h")
	grpcAddr, httpAddr := testenv.FreePort(t), testenv.FreePort(t)
	sidecar := testenv.Start(t, "thanos-sidecar", thanos, "sidecar",
		"--tsdb.path="+filepath.Join(t.TempDir(), "unused"),
		"--prometheus.url="+member,
		"--grpc-address="+grpcAddr, "--http-address="+httpAddr)
	sidecar.WaitReady(t, "http://"+httpAddr+"/-/ready", 60*time.Second)

	dir := t.TempDir()
	_, fw := startFleetwatch(t, dir, fmt.Sprintf(`
clusters: []
query:
  stores:
    - {name: th-1, address: "%s", timeout: 5s}
`, grpcAddr))
	mapi, fleet := apiClient(t, member), apiClient(t, fw)
	testenv.Eventually(t, 60*time.Second, func() error {
		return checkParity(t, mapi, fleet, "th-1", time.Now().Add(-3*time.Second))
	})

	sidecar.Kill()
	params := url.Values{"query": {`count(up{cluster="th-1"})`}}
	code, body := rawGet(t, fw, "/api/v1/query", params)
	require.Equal(t, 200, code, body)
	r := decodeAPI(t, body)
	require.Equal(t, "success", r.Status)
	require.NotEmpty(t, r.Warnings, body)
	require.Contains(t, strings.Join(r.Warnings, " "), `remote source "th-1"`)

	params.Set("partial_response", "false")
	code, body = rawGet(t, fw, "/api/v1/query", params)
	require.NotEqual(t, 200, code, body)
	r = decodeAPI(t, body)
	require.Equal(t, "error", r.Status)
	require.Contains(t, r.Error, `remote source "th-1"`)

	params.Set("partial_response", "maybe")
	code, body = rawGet(t, fw, "/api/v1/query", params)
	require.Equal(t, 400, code, body)
	require.Contains(t, body, "partial_response")
}
