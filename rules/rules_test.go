package rules

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeAM records what is posted to /api/v2/alerts.
type fakeAM struct {
	mtx    sync.Mutex
	alerts []map[string]any
}

func (f *fakeAM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v2/alerts" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	var got []map[string]any
	if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mtx.Lock()
	f.alerts = append(f.alerts, got...)
	f.mtx.Unlock()
	w.WriteHeader(http.StatusOK)
}

func TestEvaluatorFiresAndPostsToAlertmanager(t *testing.T) {
	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})

	// Two clusters; only one breaks the threshold.
	app := db.Appender(t.Context())
	now := time.Now()
	for i := range 10 {
		ts := now.Add(time.Duration(i-10) * time.Second).UnixMilli()
		_, err := app.Append(0, labels.FromStrings("__name__", "broken", "cluster", "a"), ts, 5)
		require.NoError(t, err)
		_, err = app.Append(0, labels.FromStrings("__name__", "broken", "cluster", "b"), ts, 1)
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())

	dir := t.TempDir()
	file := filepath.Join(dir, "r.yml")
	require.NoError(t, os.WriteFile(file, []byte(`groups:
  - name: test
    rules:
      - record: cluster:broken:max
        expr: max by (cluster) (broken)
      - alert: Broken
        expr: cluster:broken:max > 3
        labels: {severity: critical}
        annotations: {summary: "cluster {{ $labels.cluster }} is broken ({{ $value }})"}
`), 0o600))

	am := &fakeAM{}
	srv := httptest.NewServer(am)
	t.Cleanup(srv.Close)
	e, err := New(Options{QueryFunc: rules.EngineQueryFunc(engine, db), Appendable: db, Queryable: db})
	require.NoError(t, err)
	require.NoError(t, e.ApplyConfig(Config{Rules: rulesSection(100*time.Millisecond, srv.URL), Files: []string{file}}))
	go e.Run()
	t.Cleanup(e.Stop)

	require.Eventually(t, func() bool {
		am.mtx.Lock()
		defer am.mtx.Unlock()
		for _, a := range am.alerts {
			ls := a["labels"].(map[string]any)
			if ls["alertname"] == "Broken" && ls["cluster"] == "a" && ls["severity"] == "critical" &&
				a["annotations"].(map[string]any)["summary"] == "cluster a is broken (5)" {
				return true
			}
		}
		return false
	}, 20*time.Second, 50*time.Millisecond)
	am.mtx.Lock()
	for _, a := range am.alerts {
		require.NotEqual(t, "b", a["labels"].(map[string]any)["cluster"], "cluster b is below the threshold")
	}
	am.mtx.Unlock()
	active := e.Manager().AlertingRules()[0].ActiveAlerts()
	require.Len(t, active, 1)
	require.Equal(t, "a", active[0].Labels.Get("cluster"))

	// A broken file keeps the rules in force and names the file.
	require.NoError(t, os.WriteFile(file+".bad", []byte("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum((\n"), 0o600))
	err = e.ApplyConfig(Config{Rules: rulesSection(100 * time.Millisecond), Files: []string{file + ".bad"}})
	require.ErrorContains(t, err, "r.yml.bad")
	require.Len(t, e.Manager().AlertingRules(), 1)
	require.ErrorContains(t, e.ApplyConfig(Config{Rules: rulesSection(time.Second, "localhost:9093")}), `alertmanager "localhost:9093": not an http(s) URL`)

	// Built-in files load from memory next to the user's, under their own names; a bad one
	// is named too.
	pack := map[string][]byte{"extra.yml": []byte("groups:\n  - name: extra\n    rules:\n      - record: x:broken:sum\n        expr: sum by (cluster) (broken)\n")}
	require.NoError(t, e.ApplyConfig(Config{Rules: rulesSection(100 * time.Millisecond), Files: []string{file}, Pack: pack}))
	var names []string
	for _, g := range e.Manager().RuleGroups() {
		names = append(names, g.File()+":"+g.Name())
	}
	require.ElementsMatch(t, []string{file + ":test", PackPrefix + "extra.yml:extra"}, names)
	pack["extra.yml"] = []byte("groups:\n  - name: extra\n    rules:\n      - record: x\n        expr: sum(\n")
	require.ErrorContains(t, e.ApplyConfig(Config{Rules: rulesSection(time.Second), Files: []string{file}, Pack: pack}), PackPrefix+"extra.yml")
	require.Len(t, e.Manager().RuleGroups(), 2, "a bad built-in file keeps the rules in force")
}

// rulesSection is fleetwatch.yml's rules section with the evaluation interval and Alertmanagers.
func rulesSection(interval time.Duration, alertmanagers ...string) config.RulesConfig {
	c := config.DefaultRules
	c.EvaluationInterval = model.Duration(interval)
	for _, a := range alertmanagers {
		c.Alertmanagers = append(c.Alertmanagers, &config.AlertmanagerConfig{URL: a})
	}
	return c
}
