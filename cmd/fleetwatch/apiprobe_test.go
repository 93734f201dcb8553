package main

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestServeProbesAPIServers: serve probes the API server of a cluster with a kubeconfig_file
// from the start, with its credentials, and writes the result into the view; a reload with a
// broken kubeconfig fails naming the cluster and the field and keeps the running
// configuration; a good one switches to the new credentials.
func TestServeProbesAPIServers(t *testing.T) {
	var (
		mtx    sync.Mutex
		tokens []string
	)
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mtx.Lock()
		tokens = append(tokens, r.URL.Path+" "+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		mtx.Unlock()
		fmt.Fprint(w, "ok")
	}))
	defer api.Close()
	seen := func(want string) func() error {
		return func() error {
			mtx.Lock()
			defer mtx.Unlock()
			for _, s := range tokens {
				if s == want {
					return nil
				}
			}
			return fmt.Errorf("API server saw %q, not %q", tokens, want)
		}
	}
	ca := base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}))
	kubeconfig := func(token string) string {
		return `apiVersion: v1
kind: Config
current-context: fleetwatch@eu-1
clusters: [{name: eu-1, cluster: {server: "` + api.URL + `", certificate-authority-data: ` + ca + `}}]
users: [{name: fleetwatch, user: {token: ` + token + `}}]
contexts: [{name: fleetwatch@eu-1, context: {cluster: eu-1, user: fleetwatch}}]
`
	}

	dir := t.TempDir()
	testenv.WriteFile(t, dir, "eu-1.token", "eu-1-token\n")
	testenv.WriteFile(t, dir, "kube/eu-1.kubeconfig", kubeconfig("first"))
	cfg := testenv.WriteFile(t, dir, "fleetwatch.yml", `clusters:
- name: eu-1
  remote_write: {bearer_token_file: eu-1.token}
  kubeconfig_file: kube/eu-1.kubeconfig
api_probe: {interval: 1s, timeout: 1s}
rules: {pack: {enabled: false}}
correlate: {enabled: false}
`)
	s, base := runServer(t, cfg, filepath.Join(dir, "data"))

	// The first probe, with the kubeconfig's token, is in the view.
	testenv.Eventually(t, 10*time.Second, seen("/readyz first"))
	testenv.Eventually(t, 10*time.Second, func() error {
		resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(collector.APIUpMetric))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var body struct {
			Data struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
					Value  [2]any            `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return err
		}
		if r := body.Data.Result; len(r) != 1 || r[0].Metric["cluster"] != "eu-1" || r[0].Value[1] != "1" {
			return fmt.Errorf("%s: %+v", collector.APIUpMetric, r)
		}
		return nil
	})

	// A kubeconfig without a current context: the reload fails, naming the cluster and the
	// field, and the probe goes on with the old credentials.
	testenv.WriteFile(t, dir, "kube/eu-1.kubeconfig", strings.Replace(kubeconfig("second"), "current-context: fleetwatch@eu-1\n", "", 1))
	err := s.reload()
	require.ErrorContains(t, err, `cluster "eu-1": kubeconfig_file: `+filepath.Join(dir, "kube", "eu-1.kubeconfig")+": current-context is not set")
	require.Equal(t, 0.0, testutil.ToFloat64(s.reloadSuccess))
	mtx.Lock()
	n := len(tokens)
	mtx.Unlock()
	testenv.Eventually(t, 10*time.Second, func() error {
		mtx.Lock()
		defer mtx.Unlock()
		if len(tokens) == n {
			return fmt.Errorf("no probe since the failed reload")
		}
		if last := tokens[len(tokens)-1]; last != "/readyz first" {
			return fmt.Errorf("probed with %q after a failed reload", last)
		}
		return nil
	})

	// Fixed, with a new token: switched.
	testenv.WriteFile(t, dir, "kube/eu-1.kubeconfig", kubeconfig("second"))
	require.NoError(t, s.reload())
	require.Equal(t, 1.0, testutil.ToFloat64(s.reloadSuccess))
	testenv.Eventually(t, 10*time.Second, seen("/readyz second"))
}
