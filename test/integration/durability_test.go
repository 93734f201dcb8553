package integration

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

func writeV1(t *testing.T, base, token string, ts int64, name string, v float64) int {
	t.Helper()
	code, err := postV1(base, token, ts, name, v)
	require.NoError(t, err)
	return code
}

// postV1 sends one sample with remote-write 1.0 and returns the status code.
func postV1(base, token string, ts int64, name string, v float64) (int, error) {
	raw, err := proto.Marshal(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: name}},
		Samples: []prompb.Sample{{Timestamp: ts, Value: v}},
	}}})
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequest(http.MethodPost, base+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func countSamples(t *testing.T, base, selector string) string {
	t.Helper()
	code, body := rawGet(t, base, "/api/v1/query", url.Values{"query": {"count_over_time(" + selector + "[1h])"}})
	require.Equal(t, 200, code, body)
	return body
}

// TestKill9KeepsAcknowledgedSamples: every sample answered 2xx is there after kill -9.
func TestKill9KeepsAcknowledgedSamples(t *testing.T) {
	testenv.SkipIfShort(t)
	dir := t.TempDir()
	testenv.WriteFile(t, dir, "a.token", "token-a")
	cfg := "clusters:\n  - name: a\n    remote_write: {bearer_token_file: a.token}\n"
	p, fw := startFleetwatch(t, dir, cfg)

	start := time.Now().Add(-10 * time.Minute).UnixMilli()
	const n = 200
	for i := range n {
		require.Equal(t, http.StatusNoContent, writeV1(t, fw, "token-a", start+int64(i)*1000, "acked", float64(i)))
	}
	require.NoError(t, p.Signal(syscall.SIGKILL))
	p.Kill()

	_, fw = startFleetwatch(t, dir, cfg)
	body := countSamples(t, fw, `acked{cluster="a"}`)
	require.Contains(t, body, fmt.Sprintf(`"%d"`, n), body)
}

// TestReload: SIGHUP and POST /-/reload apply a new config without losing data; a broken config
// is refused with the field named, and the running config stays in force, whole: a config whose
// only fault is a user rule file switches nothing, not even the clusters that come before it.
func TestReload(t *testing.T) {
	testenv.SkipIfShort(t)
	dir := t.TempDir()
	testenv.WriteFile(t, dir, "a.token", "token-a")
	testenv.WriteFile(t, dir, "b.token", "token-b")
	testenv.WriteFile(t, dir, "c.token", "token-c")
	testenv.WriteFile(t, dir, "admin.token", "token-admin")
	testenv.WriteFile(t, dir, "bad.rules.yml", "groups:\n- name: g\n  rules:\n  - alert: Broken\n    expr: sum(\n")
	const access = "access:\n  anonymous_roles: [read]\n  identities: [{name: admin, roles: [admin], bearer_token_file: admin.token}]\n"
	p, fw := startFleetwatchArgs(t, dir, "clusters:\n  - name: a\n    remote_write: {bearer_token_file: a.token}\n"+access, "--web.enable-lifecycle")
	reload := func() (int, string) {
		req, err := http.NewRequest(http.MethodPost, fw+"/-/reload", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer token-admin")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		msg, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(msg)
	}
	// Timestamps in the past, so the samples written a second apart are all in range of the
	// queries at the end however fast the test runs.
	now := time.Now().Add(-time.Minute).UnixMilli()
	require.Equal(t, http.StatusNoContent, writeV1(t, fw, "token-a", now, "before_reload", 1))
	require.Equal(t, http.StatusUnauthorized, writeV1(t, fw, "token-b", now, "from_b", 1))

	// SIGHUP: cluster b is added.
	cfgPath := filepath.Join(dir, "fleetwatch.yml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(`clusters:
  - name: a
    remote_write: {bearer_token_file: a.token}
  - name: b
    remote_write: {bearer_token_file: b.token}
`+access), 0o600))
	require.NoError(t, p.Signal(syscall.SIGHUP))
	testenv.Eventually(t, 10*time.Second, func() error {
		if code := writeV1(t, fw, "token-b", now, "from_b", 1); code != http.StatusNoContent {
			return fmt.Errorf("cluster b after SIGHUP: %d", code)
		}
		return nil
	})

	// A broken config is refused, naming the cluster and the field; b keeps working.
	require.NoError(t, os.WriteFile(cfgPath, []byte(`clusters:
  - name: a
    remote_write: {bearer_token_file: a.token}
  - name: b
    remote_write: {}
`+access), 0o600))
	code, msg := reload()
	require.Equal(t, http.StatusInternalServerError, code)
	require.Contains(t, msg, `cluster "b": remote_write: one of bearer_token_file or basic_auth must be set`)
	require.Equal(t, http.StatusNoContent, writeV1(t, fw, "token-b", now+1000, "from_b", 2))
	_, metrics := rawGet(t, fw, "/metrics", nil)
	require.Contains(t, metrics, "fleetwatch_config_last_reload_successful 0")

	// A config that adds cluster c and whose only fault is a user rule file: refused naming
	// the file and line, and nothing switched: c's token is still unknown.
	require.NoError(t, os.WriteFile(cfgPath, []byte(`clusters:
  - name: a
    remote_write: {bearer_token_file: a.token}
  - name: b
    remote_write: {bearer_token_file: b.token}
  - name: c
    remote_write: {bearer_token_file: c.token}
rules:
  rule_files: [bad.rules.yml]
`+access), 0o600))
	code, msg = reload()
	require.Equal(t, http.StatusInternalServerError, code)
	require.Contains(t, msg, "bad.rules.yml")
	require.Equal(t, http.StatusUnauthorized, writeV1(t, fw, "token-c", now+1000, "from_c", 1))

	// POST /-/reload with b removed: b is refused, its data and a's stay queryable.
	require.NoError(t, os.WriteFile(cfgPath, []byte("clusters:\n  - name: a\n    remote_write: {bearer_token_file: a.token}\n"+access), 0o600))
	code, _ = reload()
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, http.StatusUnauthorized, writeV1(t, fw, "token-b", now+2000, "from_b", 3))
	require.Contains(t, countSamples(t, fw, `before_reload{cluster="a"}`), `"1"`)
	require.Contains(t, countSamples(t, fw, `from_b{cluster="b"}`), `"2"`)
}
