package console_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/rules"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/console"
	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/dashboards"
	"github.com/fleetwatch/fleetwatch/internal/access"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/query"
	"github.com/fleetwatch/fleetwatch/remediate"
	"github.com/fleetwatch/fleetwatch/rules/pack"
	"github.com/fleetwatch/fleetwatch/schedule"
)

// grafanaURL is the one other host the console may link to.
const grafanaURL = "https://grafana.example.com"

// fixture is a console over real components: a view with two clusters' recorded series, a
// correlation engine with an incident per cluster, a remediation waiting for approval per
// cluster, and placement's snapshot.
type fixture struct {
	h         http.Handler
	incidents map[string]string // cluster -> incident ID
	rems      map[string]string // cluster -> remediation ID
}

var (
	operator = access.NewIdentity("alice", access.KindUser, []access.Role{access.RoleOperate}, nil)
	reader   = access.NewIdentity("rita", access.KindUser, []access.Role{access.RoleRead}, nil)
	teamA    = access.NewIdentity("team-a", access.KindUser, []access.Role{access.RoleOperate}, []string{"eu-1"})
)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	v, err := query.Open(query.Options{Dir: filepath.Join(dir, "data"), Registerer: reg})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, v.Close()) })
	require.NoError(t, v.ApplyConfig(config.DefaultQuery))

	now := time.Now()
	app := v.Appendable().Appender(context.Background())
	values := map[string]map[string]float64{
		"eu-1": {pack.RecordNodeReadyRatio: 1, pack.RecordCPURequestsRatio: 0.5, pack.RecordMemoryRequestsRatio: 0.4,
			pack.RecordCPUAllocatable: 100, pack.RecordCPURequests: 50, pack.RecordMemoryAllocatable: 400 << 30, pack.RecordMemoryRequests: 160 << 30,
			pack.RecordCrashLoopRate: 0, "secret_metric": 1},
		"eu-2": {pack.RecordNodeReadyRatio: 0.8, pack.RecordCPURequestsRatio: 0.9, pack.RecordMemoryRequestsRatio: 0.3,
			pack.RecordCPUAllocatable: 100, pack.RecordCPURequests: 90, pack.RecordMemoryAllocatable: 400 << 30, pack.RecordMemoryRequests: 120 << 30,
			pack.RecordCrashLoopRate: 4, "secret_metric": 2},
	}
	for i := 60; i >= 0; i-- {
		ts := now.Add(-time.Duration(i) * 30 * time.Second)
		for cluster, vals := range values {
			for name, val := range vals {
				_, err := app.Append(0, labels.FromStrings("__name__", name, config.ClusterLabel, cluster), ts.UnixMilli(), val)
				require.NoError(t, err)
			}
			_, err := app.Append(0, labels.FromStrings("__name__", collector.LastIngestMetric, config.ClusterLabel, cluster), ts.UnixMilli(), float64(ts.Unix()))
			require.NoError(t, err)
		}
	}
	require.NoError(t, app.Commit())

	cfg := &config.Config{
		Clusters: []*config.ClusterConfig{
			{Name: "eu-1", Labels: map[string]string{"env": "prod", "team": "a"}},
			{Name: "eu-2", Labels: map[string]string{"env": "dev", "team": "b"}},
		},
		Schedule:    config.DefaultSchedule,
		Rules:       config.DefaultRules,
		Remediation: config.DefaultRemediation,
	}
	identify := func(ctx context.Context) (correlate.Caller, bool) { return access.FromContext(ctx) }

	st, err := correlate.OpenStore(filepath.Join(dir, "incidents.db"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	inc, err := correlate.New(correlate.Options{Store: st, Rules: correlate.DefaultRules, Identify: identify})
	require.NoError(t, err)
	var alerts []correlate.Alert
	for _, c := range []string{"eu-1", "eu-2"} {
		expr := pack.RecordNodeReadyRatio + `{cluster="` + c + `"} < 0.9`
		alerts = append(alerts, correlate.Alert{
			Labels:      map[string]string{"alertname": pack.AlertClusterNodesNotReady, "cluster": c, "severity": "critical"},
			Annotations: map[string]string{"summary": "nodes NotReady in " + c},
			StartsAt:    now.Add(-10 * time.Minute), Source: "rules",
			GeneratorURL: "http://0.0.0.0:9095/graph?g0.expr=" + url.QueryEscape(expr) + "&g0.tab=1",
		})
	}
	require.NoError(t, inc.Ingest(context.Background(), alerts))
	require.NoError(t, inc.Evaluate(context.Background()))
	f := &fixture{incidents: map[string]string{}, rems: map[string]string{}}
	for _, i := range inc.Active() {
		f.incidents[i.Clusters[0]] = i.ID
	}
	require.Len(t, f.incidents, 2)
	_, err = inc.Acknowledge(f.incidents["eu-1"], "alice")
	require.NoError(t, err)

	rs, err := remediate.OpenStore(filepath.Join(dir, "remediations.db"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, rs.Close()) })
	for _, c := range []string{"eu-1", "eu-2"} {
		id := "rem-" + c
		rem := &remediate.Remediation{ID: id, IncidentID: f.incidents[c], Playbook: "nodes-not-ready", Clusters: []string{c},
			State: remediate.StateWaiting, CreatedAt: now.Add(-5 * time.Minute), UpdatedAt: now.Add(-5 * time.Minute),
			Steps: []*remediate.StepRun{{StepConfig: config.StepConfig{Action: config.ActionCordon}, State: remediate.StepWaiting,
				Approval: &remediate.Approval{RequestedAt: now.Add(-5 * time.Minute), ExpiresAt: now.Add(time.Hour)},
				Ops:      []*remediate.Op{{ID: id + "-op", Action: config.ActionCordon, Cluster: c, Kind: "Node", Name: "node-1", Calls: []string{"PATCH /api/v1/nodes/node-1"}, State: remediate.OpPending}}}},
			Guards: []remediate.Check{{Guard: remediate.GuardApproval, Passed: false, Detail: "waits for an operator"}},
		}
		require.NoError(t, rs.Save(rem, &remediate.AuditEntry{Time: now.Add(-5 * time.Minute), RemediationID: id, IncidentID: f.incidents[c],
			Event: remediate.EventPlan, Actor: "fleetwatch", Detail: "plan: cordon node-1 in " + c}))
		f.rems[c] = id
	}
	instant := rules.EngineQueryFunc(v, v)
	rem, err := remediate.New(remediate.Options{Store: rs, Query: remediate.QueryFunc(instant),
		Clients:  func(string) (kubernetes.Interface, error) { return nil, errors.New("no clusters in this test") },
		Settings: cfg.Remediation, Identify: identify, Registerer: reg})
	require.NoError(t, err)
	require.NoError(t, rem.Pause("eu-2", "bob"))

	sched, err := schedule.New(schedule.Options{
		Source:   schedule.Source{Query: schedule.QueryFunc(instant), Incidents: inc.EachActive},
		Settings: schedule.Settings{Schedule: cfg.Schedule, Pack: cfg.Rules.Pack.Thresholds, Clusters: cfg.Clusters},
	})
	require.NoError(t, err)
	require.NoError(t, sched.Refresh(context.Background()))

	q, r := console.EngineQueries(v, v)
	c, err := console.New(console.Options{
		Query: q, Range: r, Config: func() *config.Config { return cfg },
		Incidents: inc, IncidentStore: st, Remediations: rs, Remediator: rem, Schedule: sched,
		GrafanaURL: grafanaURL,
	})
	require.NoError(t, err)
	f.h = c.Handler()
	return f
}

// get serves a GET as id and checks that the page links nowhere but to fleetwatch (and the
// configured Grafana).
func (f *fixture) get(t *testing.T, id access.Identity, path string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req = req.WithContext(access.WithIdentity(req.Context(), id))
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	body, err := io.ReadAll(rec.Result().Body)
	require.NoError(t, err)
	requireLocal(t, path, string(body))
	return rec.Code, string(body)
}

// external finds src and href attributes with an absolute URL.
var external = regexp.MustCompile(`(?i)(src|href|action)\s*=\s*["']?\s*(https?:)?//[^"'\s>]*`)

func requireLocal(t *testing.T, path, body string) {
	t.Helper()
	for _, m := range external.FindAllString(body, -1) {
		require.Contains(t, m, grafanaURL+"/d/", "%s links to another host: %s", path, m)
	}
}

func TestPages(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/", []string{`id="fleet"`, `id="cluster-eu-1"`, `id="cluster-eu-2"`, `href="/clusters/eu-2"`, "80.0%", "90.0%", `name="viewport"`, `href="/static/console.css"`}},
		{"/clusters/eu-2", []string{`id="cluster"`, `id="signal-ready"`, `id="signal-freshness"`, "<svg", `class="line s0"`,
			"/graph?g0.expr=" + url.QueryEscape(pack.RecordNodeReadyRatio+`{cluster="eu-2"}`),
			grafanaURL + "/d/" + dashboards.UIDCluster + "?var-cluster=eu-2", f.incidents["eu-2"]}},
		{"/clusters/eu-1?range=6h", []string{`<option value="6h" selected>`}},
		{"/incidents", []string{`id="incidents"`, `id="incident-row-` + f.incidents["eu-1"] + `"`, `id="incident-row-` + f.incidents["eu-2"] + `"`, "by alice"}},
		{"/incidents/" + f.incidents["eu-1"], []string{`id="incident-` + f.incidents["eu-1"] + `"`, `data-state="acknowledged"`, pack.AlertClusterNodesNotReady,
			"nodes NotReady in eu-1", `data-event="acknowledged"`, `data-event="remediation plan"`, `href="/remediations/rem-eu-1"`,
			"/graph?g0.expr=" + strings.ReplaceAll(url.QueryEscape(pack.RecordNodeReadyRatio+`{cluster="eu-1"} < 0.9`), "+", "%20"), grafanaURL + "/d/" + dashboards.UIDIncidents}},
		{"/remediations", []string{`id="remediations"`, `id="remediation-row-rem-eu-1"`, `data-action="approve" data-remediation="rem-eu-1"`,
			`data-action="deny" data-remediation="rem-eu-2"`, `id="pause-eu-2" data-cluster="eu-2" data-paused="true"`, `data-action="resume" data-cluster="eu-2"`,
			`data-action="pause" data-cluster=""`, `id="budget"`, `src="/static/console.js"`}},
		{"/remediations/rem-eu-2", []string{`id="remediation-rem-eu-2"`, `data-state="waiting_approval"`, "PATCH /api/v1/nodes/node-1", `data-guard="approval"`,
			`data-event="plan"`, `data-action="approve" data-remediation="rem-eu-2"`}},
		{"/whatif", []string{`id="whatif-form"`, `value="eu-1"`, `value="eu-2"`}},
		{"/whatif?fail=eu-2", []string{`id="whatif"`, `data-cluster="eu-1" data-failed="false"`, "50.0% → 50.0%"}},
		{"/graph", []string{`id="graph-form"`}},
		{"/graph?g0.expr=secret_metric&g0.tab=1&g0.range_input=15m", []string{`id="result"`, `secret_metric{cluster=&#34;eu-1&#34;}`, `secret_metric{cluster=&#34;eu-2&#34;}`, "<svg", `<option value="15m" selected>`}},
	} {
		code, body := f.get(t, operator, tc.path)
		require.Equal(t, http.StatusOK, code, "%s: %s", tc.path, body)
		for _, w := range tc.want {
			require.Contains(t, body, w, tc.path)
		}
		require.Less(t, len(body), 64<<10, "%s is heavier than a page should be", tc.path)
	}
	for _, path := range []string{"/nope", "/clusters/nope", "/incidents/inc-nope", "/remediations/rem-nope", "/static/nope.css", "/static/"} {
		code, body := f.get(t, operator, path)
		require.Equal(t, http.StatusNotFound, code, "%s: %s", path, body)
	}
	for _, path := range []string{"/static/console.css", "/static/console.js"} {
		code, body := f.get(t, reader, path)
		require.Equal(t, http.StatusOK, code, path)
		require.NotContains(t, body, "http://", path)
		require.NotContains(t, body, "https://", path)
	}
}

// TestFleetSortFilter: the fleet page filters by a cluster label and sorts by any column.
func TestFleetSortFilter(t *testing.T) {
	f := newFixture(t)
	_, body := f.get(t, reader, "/?label=env%3Dprod")
	require.Contains(t, body, `id="cluster-eu-1"`)
	require.NotContains(t, body, `id="cluster-eu-2"`)
	order := func(body string) []string {
		return regexp.MustCompile(`id="cluster-([^"]+)"`).FindAllString(body, -1)
	}
	_, body = f.get(t, reader, "/?sort=cpu&dir=desc")
	require.Equal(t, []string{`id="cluster-eu-2"`, `id="cluster-eu-1"`}, order(body))
	_, body = f.get(t, reader, "/?sort=ready&dir=desc")
	require.Equal(t, []string{`id="cluster-eu-1"`, `id="cluster-eu-2"`}, order(body))
	code, _ := f.get(t, reader, "/?label=prod")
	require.Equal(t, http.StatusBadRequest, code)
}

// TestTeamScope: a team sees only its clusters, and another team's cluster, incident or
// remediation is not found.
func TestTeamScope(t *testing.T) {
	f := newFixture(t)
	code, body := f.get(t, teamA, "/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `id="cluster-eu-1"`)
	require.NotContains(t, body, "eu-2")
	for _, path := range []string{"/clusters/eu-2", "/incidents/" + f.incidents["eu-2"], "/remediations/" + f.rems["eu-2"]} {
		code, body := f.get(t, teamA, path)
		require.Equal(t, http.StatusNotFound, code, "%s: %s", path, body)
	}
	for _, path := range []string{"/clusters/eu-1", "/incidents/" + f.incidents["eu-1"], "/remediations/" + f.rems["eu-1"]} {
		code, body := f.get(t, teamA, path)
		require.Equal(t, http.StatusOK, code, "%s: %s", path, body)
	}
	for _, path := range []string{"/incidents", "/remediations", "/whatif"} {
		code, body := f.get(t, teamA, path)
		require.Equal(t, http.StatusOK, code, path)
		require.NotContains(t, body, "eu-2", path)
		require.NotContains(t, body, f.incidents["eu-2"], path)
	}
	code, _ = f.get(t, teamA, "/whatif?fail=eu-2")
	require.Equal(t, http.StatusBadRequest, code)
	code, body = f.get(t, teamA, "/whatif?fail=eu-1")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `data-cluster="eu-1" data-failed="true"`)
	require.NotContains(t, body, "eu-2")
	require.Contains(t, body, "1 clusters of other teams not shown")
}

// TestButtons: the approve, deny, pause and resume buttons are there for whoever may use
// them, and only for them.
func TestButtons(t *testing.T) {
	f := newFixture(t)
	approve := func(rem string) string { return `data-action="approve" data-remediation="` + rem + `"` }
	_, body := f.get(t, operator, "/remediations")
	require.Contains(t, body, approve("rem-eu-1"))
	require.Contains(t, body, approve("rem-eu-2"))
	require.Contains(t, body, `data-url="/api/v1/remediations/rem-eu-1/approve"`)
	require.Contains(t, body, `data-url="/api/v1/remediations/pause?cluster="`)

	_, body = f.get(t, reader, "/remediations")
	require.Contains(t, body, `id="remediation-row-rem-eu-1"`)
	require.NotContains(t, body, "data-action=")
	_, body = f.get(t, reader, "/remediations/rem-eu-1")
	require.NotContains(t, body, "data-action=")

	_, body = f.get(t, teamA, "/remediations")
	require.Contains(t, body, approve("rem-eu-1"))
	require.NotContains(t, body, approve("rem-eu-2"))
	// A team pauses its clusters, never the fleet.
	require.Contains(t, body, `data-action="pause" data-cluster="eu-1"`)
	require.NotContains(t, body, `data-action="pause" data-cluster=""`)
}

// TestGraph: /graph shows a bad expression's parse error with 400, and a team's query
// selects only its clusters' series.
func TestGraph(t *testing.T) {
	f := newFixture(t)
	code, body := f.get(t, operator, "/graph?g0.expr="+url.QueryEscape("sum(rate(up[5m])"))
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, `id="query-error"`)
	require.Contains(t, body, "unclosed left parenthesis")

	code, body = f.get(t, operator, "/graph?g0.range_input=forever&g0.expr=up")
	require.Equal(t, http.StatusBadRequest, code, body)

	for _, expr := range []string{"secret_metric", `secret_metric{cluster="eu-2"}`, "sum by (cluster) (secret_metric)"} {
		code, body = f.get(t, teamA, "/graph?g0.expr="+url.QueryEscape(expr))
		require.Equal(t, http.StatusOK, code, body)
		require.NotContains(t, body, "eu-2&#34;}</code>", expr)
		require.NotContains(t, body, `<td class="num pre">2</td>`, expr)
	}
	_, body = f.get(t, teamA, "/graph?g0.expr=secret_metric")
	require.Contains(t, body, `secret_metric{cluster=&#34;eu-1&#34;}`)
	require.Contains(t, body, "Limited to your clusters")
}
