package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/dashboards"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// runDashboards parses args as the command line of `fleetwatch dashboards generate` and runs
// it in dir, returning what it printed.
func runDashboards(t *testing.T, dir string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	app := kingpin.New("fleetwatch", "")
	d := newDashboardsCmd(app)
	var out, errOut bytes.Buffer
	d.stdout, d.stderr = &out, &errOut
	cmd, err := app.Parse(append([]string{"dashboards", "generate"}, args...))
	require.NoError(t, err)
	require.Equal(t, d.generate.FullCommand(), cmd)
	t.Chdir(dir)
	err = d.runContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestDashboardsGenerate(t *testing.T) {
	golden, err := filepath.Abs(filepath.Join("..", "..", "deploy", "grafana"))
	require.NoError(t, err)

	t.Run("defaults write deploy/grafana", func(t *testing.T) {
		dir := t.TempDir()
		out, errOut, err := runDashboards(t, dir, "--out=gen")
		require.NoError(t, err)
		require.Empty(t, errOut)
		var want []string
		require.NoError(t, filepath.WalkDir(golden, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(golden, p)
			got, err := os.ReadFile(filepath.Join(dir, "gen", rel))
			require.NoError(t, err)
			exp, err := os.ReadFile(p)
			require.NoError(t, err)
			require.Equal(t, string(exp), string(got), rel)
			want = append(want, "wrote "+filepath.Join("gen", rel))
			return nil
		}))
		sort.Strings(want)
		require.Equal(t, strings.Join(want, "\n")+"\n", out)
	})

	t.Run("thresholds and flags", func(t *testing.T) {
		dir := t.TempDir()
		testenv.WriteFile(t, dir, "fleetwatch.yml", "rules:\n  pack:\n    enabled: false\n    node_ready_ratio: 0.75\n")
		_, errOut, err := runDashboards(t, dir, "--out=gen", "--datasource-url=https://fleetwatch.example",
			"--metrics-datasource-url=http://prometheus:9090", "--dashboards-path=/dashboards", "--folder=Fleet")
		require.NoError(t, err)
		require.Equal(t, "fleetwatch: warning: fleetwatch.yml: rules.pack.enabled is false: the fleet dashboards read the pack's recorded series, which stay empty unless your own rules record them\n", errOut)
		overview, err := os.ReadFile(filepath.Join(dir, "gen", "dashboards", "fleet-overview.json"))
		require.NoError(t, err)
		require.Contains(t, string(overview), `"value": 0.75,`)
		require.NotContains(t, string(overview), `"value": 0.9,`)
		ds, err := os.ReadFile(filepath.Join(dir, "gen", filepath.FromSlash(dashboards.DatasourcesFile)))
		require.NoError(t, err)
		require.Contains(t, string(ds), "url: https://fleetwatch.example\n")
		require.Contains(t, string(ds), "url: http://prometheus:9090\n")
		prov, err := os.ReadFile(filepath.Join(dir, "gen", filepath.FromSlash(dashboards.DashboardProviderFile)))
		require.NoError(t, err)
		require.Contains(t, string(prov), "folder: Fleet\n")
		require.Contains(t, string(prov), "path: /dashboards\n")
	})

	t.Run("push", func(t *testing.T) {
		dir := t.TempDir()
		testenv.WriteFile(t, dir, "token", "glsa_secret\n")
		var mu sync.Mutex
		var saved []string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			if r.Header.Get("Authorization") != "Bearer glsa_secret" {
				http.Error(w, `{"message":"Unauthorized"}`, http.StatusUnauthorized)
				return
			}
			switch {
			case r.Method == http.MethodGet:
				http.Error(w, `{"message":"not found"}`, http.StatusNotFound)
			case r.URL.Path == "/api/folders":
				_, _ = io.WriteString(w, `{"uid":"fleetwatch"}`)
			case r.URL.Path == "/api/dashboards/db":
				var body struct {
					Dashboard struct {
						UID string `json:"uid"`
					} `json:"dashboard"`
				}
				require.NoError(t, json.NewDecoder(r.Body).Decode(&body))
				saved = append(saved, body.Dashboard.UID)
				_ = json.NewEncoder(w).Encode(map[string]any{"url": "/d/" + body.Dashboard.UID + "/x", "version": 1})
			}
		}))
		defer srv.Close()
		out, _, err := runDashboards(t, dir, "--grafana-url="+srv.URL, "--grafana-token-file=token")
		require.NoError(t, err)
		require.Equal(t, []string{dashboards.UIDOverview, dashboards.UIDCluster, dashboards.UIDWorkloads, dashboards.UIDIncidents, dashboards.UIDSelf}, saved)
		require.Equal(t, "created Fleet overview ("+dashboards.UIDOverview+") "+srv.URL+"/d/"+dashboards.UIDOverview+"/x\n", strings.SplitAfter(out, "\n")[0])
		require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 5)
		require.NoDirExists(t, filepath.Join(dir, "dashboards"))

		testenv.WriteFile(t, dir, "wrong", "nope")
		_, _, err = runDashboards(t, dir, "--grafana-url="+srv.URL, "--grafana-token-file=wrong")
		require.ErrorContains(t, err, "401 Unauthorized")

		// Prometheus's HTTP client settings carry the credentials instead of the token file.
		saved = nil
		testenv.WriteFile(t, dir, "grafana-http.yml", "authorization: {credentials_file: token}\n")
		_, _, err = runDashboards(t, dir, "--grafana-url="+srv.URL, "--grafana-http-config-file=grafana-http.yml")
		require.NoError(t, err)
		require.Len(t, saved, 5)
		testenv.WriteFile(t, dir, "grafana-wrong.yml", "authorization: {credentials_file: wrong}\n")
		_, _, err = runDashboards(t, dir, "--grafana-url="+srv.URL, "--grafana-http-config-file=grafana-wrong.yml")
		require.ErrorContains(t, err, "401 Unauthorized")
	})

	t.Run("errors", func(t *testing.T) {
		dir := t.TempDir()
		testenv.WriteFile(t, dir, "empty", " \n")
		testenv.WriteFile(t, dir, "bad.yml", "rules:\n  pack:\n    node_ready_ratio: 2\n")
		for _, tc := range []struct {
			args []string
			want string
		}{
			{nil, "nothing to do: give --out, --grafana-url, or both"},
			{[]string{"--grafana-url=http://grafana:3000"}, "--grafana-url needs credentials: --grafana-token-file, or --grafana-http-config-file"},
			{[]string{"--out=x", "--grafana-token-file=empty"}, "--grafana-token-file and --grafana-http-config-file need --grafana-url"},
			{[]string{"--grafana-url=http://grafana:3000", "--grafana-http-config-file=missing.yml"}, "--grafana-http-config-file: open missing.yml: no such file or directory"},
			{[]string{"--grafana-url=http://grafana:3000", "--grafana-token-file=empty"}, "--grafana-token-file: empty is empty"},
			{[]string{"--grafana-url=http://grafana:3000", "--grafana-token-file=missing"}, "--grafana-token-file: open missing: no such file or directory"},
			{[]string{"--out=gen", "--datasource-url=fleetwatch:9095"}, `datasource URL: "fleetwatch:9095" is not an http(s) URL`},
			{[]string{"--out=gen", "--config.file=bad.yml"}, "rules.pack.node_ready_ratio: must be in (0, 1], got 2"},
			{[]string{"--out=gen", "--config.file=missing.yml"}, "missing.yml"},
		} {
			_, _, err := runDashboards(t, dir, tc.args...)
			require.ErrorContains(t, err, tc.want, "%v", tc.args)
		}
	})
}

// TestDashboardMetricsRegistered: every metric of the Prometheus libraries fleetwatch embeds
// that the dashboards read from fleetwatch's /metrics (the TSDB's, the rules manager's, the
// notifier's, the PromQL engine's, the process collector's) is registered by a real server.
// fleetwatch's own metrics are checked against its source by the dashboards package's tests:
// vectors show up on /metrics only once used.
func TestDashboardMetricsRegistered(t *testing.T) {
	dir := t.TempDir()
	cfg := testenv.WriteFile(t, dir, "fleetwatch.yml", "clusters: []\n")
	s, _ := runServer(t, cfg, filepath.Join(dir, "data"))
	// The TSDB counts appended samples by type once the first one is appended.
	app := s.view.Appendable().Appender(context.Background())
	_, err := app.Append(0, labels.FromStrings("__name__", "x", "cluster", "c"), time.Now().UnixMilli(), 1)
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	mfs, err := s.reg.Gather()
	require.NoError(t, err)
	registered := map[string]bool{}
	for _, mf := range mfs {
		registered[mf.GetName()] = true
	}

	ds, err := dashboards.Build(config.DefaultThresholds)
	require.NoError(t, err)
	checked := 0
	for _, d := range ds {
		if d.Source != dashboards.SourceMetrics {
			continue
		}
		for _, q := range d.Queries() {
			names, err := q.Metrics()
			require.NoError(t, err)
			for _, n := range names {
				if strings.HasPrefix(n, "fleetwatch_") || n == "up" {
					continue
				}
				require.True(t, registered[n], "%s reads %s, which fleetwatch does not register", q, n)
				checked++
			}
		}
	}
	require.NotZero(t, checked)
}
