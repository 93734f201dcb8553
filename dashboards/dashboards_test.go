package dashboards

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	goparser "go/parser"
	"go/token"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/sim"
)

var update = flag.Bool("update", false, "rewrite the generated files under deploy/grafana")

// goldenDir holds the generated files, committed: deploy/grafana.
var goldenDir = filepath.Join("..", "deploy", "grafana")

func build(t *testing.T) []Dashboard {
	t.Helper()
	ds, err := Build(config.DefaultThresholds)
	require.NoError(t, err)
	require.Len(t, ds, len(specs))
	return ds
}

// TestGolden: the files under deploy/grafana are what `fleetwatch dashboards generate` writes
// with the default configuration and flags. After changing a dashboard, regenerate them with
// `go test ./dashboards -run TestGolden -update`.
func TestGolden(t *testing.T) {
	files, err := Files(build(t), DefaultProvisioning)
	require.NoError(t, err)
	if *update {
		for _, sub := range []string{DashboardsDir, "provisioning"} {
			require.NoError(t, os.RemoveAll(filepath.Join(goldenDir, sub)))
		}
		_, err := WriteFiles(goldenDir, files)
		require.NoError(t, err)
	}
	var stale []string
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(goldenDir, filepath.FromSlash(name)))
		if err != nil || !bytes.Equal(got, want) {
			stale = append(stale, name)
		}
	}
	// Nothing else is there: a dashboard that is no longer generated is no longer committed.
	var extra []string
	for _, sub := range []string{DashboardsDir, "provisioning"} {
		_ = filepath.WalkDir(filepath.Join(goldenDir, sub), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			rel, _ := filepath.Rel(goldenDir, p)
			if _, ok := files[filepath.ToSlash(rel)]; !ok {
				extra = append(extra, rel)
			}
			return nil
		})
	}
	sort.Strings(stale)
	require.Empty(t, stale, "deploy/grafana is stale; regenerate it with: go test ./dashboards -run TestGolden -update")
	require.Empty(t, extra, "deploy/grafana has files fleetwatch no longer generates; regenerate it with: go test ./dashboards -run TestGolden -update")
}

// TestBuildIsStable: two builds give the same bytes, so the golden files do not flap.
func TestBuildIsStable(t *testing.T) {
	a, err := Files(build(t), DefaultProvisioning)
	require.NoError(t, err)
	b, err := Files(build(t), DefaultProvisioning)
	require.NoError(t, err)
	require.Equal(t, a, b)
}

// TestPanels: every panel has a title, a description and at least one query, titles are
// unique in a dashboard (pushes report changes by title), ids are unique, and every query
// parses as PromQL once Grafana has replaced the variables.
func TestPanels(t *testing.T) {
	for _, d := range build(t) {
		t.Run(d.UID, func(t *testing.T) {
			require.NotNil(t, d.Model.Uid)
			require.Equal(t, d.UID, *d.Model.Uid)
			require.Contains(t, d.Model.Tags, Tag)
			titles, ids := map[string]bool{}, map[uint32]bool{}
			for _, p := range d.Model.Panels {
				if p.RowPanel != nil {
					require.False(t, ids[p.RowPanel.Id], "duplicate id %d", p.RowPanel.Id)
					ids[p.RowPanel.Id] = true
					require.Empty(t, p.RowPanel.Panels, "row %s: panels of an expanded row belong to the dashboard", *p.RowPanel.Title)
					continue
				}
				require.NotNil(t, p.Panel)
				title := *p.Panel.Title
				require.False(t, titles[title], "duplicate panel title %q", title)
				titles[title] = true
				require.NotNil(t, p.Panel.Id)
				require.False(t, ids[*p.Panel.Id], "duplicate id %d", *p.Panel.Id)
				ids[*p.Panel.Id] = true
				require.NotEmpty(t, p.Panel.Description, "panel %q has no description", title)
				require.NotEmpty(t, p.Panel.Targets, "panel %q has no query", title)
				require.LessOrEqual(t, p.Panel.GridPos.X+p.Panel.GridPos.W, uint32(24), "panel %q is wider than the grid", title)
			}
			// Every variable a query names is the dashboard's or Grafana's own; "$1" is
			// label_replace's.
			defined := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
			for _, v := range d.Variables() {
				defined[v.Name] = true
			}
			refs := map[string]bool{}
			for _, q := range d.Queries() {
				for _, m := range variableRE.FindAllStringSubmatch(q.Expr, -1) {
					name := m[1] + m[2] + m[3]
					if _, err := strconv.Atoi(name); err != nil {
						require.True(t, defined[name], "%s: $%s is not a variable of the dashboard", q, name)
					}
				}
				_, err := q.Parse()
				require.NoError(t, err)
				key := q.Panel + "/" + q.RefID
				require.False(t, refs[key], "duplicate refId %s", key)
				refs[key] = true
				require.Equal(t, q.Expr, strings.TrimRight(strings.TrimLeft(q.Expr, "\n"), " \n"), "%s: blank lines or trailing space", q)
			}
		})
	}
}

// TestMetricsExist: every metric a panel or a variable reads exists. On the fleet view: a
// recording rule of the rule pack, a kube-state-metrics family the fleet lab's simulator
// exports, or a series fleetwatch writes into the view itself. On the Prometheus scraping
// fleetwatch: a metric fleetwatch registers (found in its source) or one of the Prometheus
// libraries it embeds.
func TestMetricsExist(t *testing.T) {
	records := packRecords(t)
	ksm := simFamilies(t)
	own := ownMetrics(t)
	require.Contains(t, own, "fleetwatch_remote_write_samples_total", "the source scan finds fleetwatch's metrics")

	inView := func(name string) string {
		switch {
		case records[name]:
			return "recording rule"
		case ksm[name]:
			return "kube-state-metrics (simulator)"
		case name == "ALERTS" || name == "ALERTS_FOR_STATE":
			return "alert state fleetwatch's rules write into the view"
		case name == collector.LastIngestMetric || name == collector.APIUpMetric || name == collector.APIProbeDurationMetric:
			return "written into the view by fleetwatch"
		}
		return ""
	}
	inMetrics := func(name string) string {
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if _, ok := own[strings.TrimSuffix(name, suffix)]; ok && strings.HasSuffix(name, suffix) {
				base = strings.TrimSuffix(name, suffix)
			}
		}
		if _, ok := own[base]; ok {
			return "fleetwatch's own"
		}
		if slices.Contains(libraryMetrics, name) {
			return "Prometheus library embedded in fleetwatch"
		}
		if name == "up" {
			return "the scraping Prometheus's up"
		}
		return ""
	}

	used := map[string]string{}
	for _, d := range build(t) {
		known := inView
		if d.Source == SourceMetrics {
			known = inMetrics
		}
		check := func(where string, names []string) {
			for _, n := range names {
				src := known(n)
				require.NotEmpty(t, src, "%s reads %s, which no rule, simulator family or fleetwatch metric provides", where, n)
				used[n] = src
			}
		}
		for _, q := range d.Queries() {
			names, err := q.Metrics()
			require.NoError(t, err)
			check(q.String(), names)
		}
		for _, v := range d.Variables() {
			if v.Type != dashboard.VariableTypeQuery {
				continue
			}
			check(d.UID+" / $"+v.Name, variableMetrics(t, v))
		}
	}
	for _, n := range sortedKeys(used) {
		t.Logf("%-80s %s", n, used[n])
	}
}

// TestClusterVariable: a dashboard that shows per-cluster data has the $cluster variable,
// multi-select from label_values, and every selector of a metric that carries a cluster label
// is filtered by it (or names its cluster explicitly), so nothing shown ignores the filter.
func TestClusterVariable(t *testing.T) {
	own := ownMetrics(t)
	vars := map[string]string{}
	for k, v := range CheckVars {
		vars[k] = v
	}
	vars[varCluster] = "__selected_clusters__"
	for _, d := range build(t) {
		t.Run(d.UID, func(t *testing.T) {
			// On the view every series carries cluster; on the Prometheus scraping
			// fleetwatch, the metrics fleetwatch labels with cluster.
			hasCluster := func(name string) bool {
				return d.Source == SourceView || slices.Contains(own[name], "cluster")
			}
			perCluster := false
			for _, q := range d.Queries() {
				e, err := parser.ParseExpr(Interpolate(q.Expr, vars))
				require.NoError(t, err)
				parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
					vs, ok := n.(*parser.VectorSelector)
					if !ok || !hasCluster(vs.Name) {
						return nil
					}
					perCluster = true
					var m *labels.Matcher
					for _, lm := range vs.LabelMatchers {
						if lm.Name == "cluster" {
							m = lm
						}
					}
					require.NotNil(t, m, "%s: %s is not filtered by cluster", q, vs)
					if m.Type != labels.MatchEqual {
						require.Equal(t, labels.MatchRegexp, m.Type, "%s: %s", q, vs)
						require.Equal(t, "__selected_clusters__", m.Value, "%s: %s is not filtered by $cluster", q, vs)
					}
					return nil
				})
			}
			var cv *dashboard.VariableModel
			for _, v := range d.Variables() {
				if v.Name == varCluster {
					cv = &v
				}
			}
			if !perCluster {
				require.Nil(t, cv, "a $cluster variable on a dashboard without per-cluster data")
				return
			}
			require.NotNil(t, cv, "per-cluster data without a $cluster variable")
			require.Equal(t, dashboard.VariableTypeQuery, cv.Type)
			require.True(t, *cv.Multi)
			require.True(t, *cv.IncludeAll)
			require.Regexp(t, `^label_values\(.+, cluster\)$`, *cv.Query.String)
		})
	}
}

// TestThresholdsFromConfig: the panels are colored at the configured thresholds, with the
// color of the alert's severity in the rule pack, and a threshold changes only its numbers.
func TestThresholdsFromConfig(t *testing.T) {
	th := config.DefaultThresholds
	th.NodeReadyRatio, th.SaturationRatio, th.CrashLoopPerMinute = 0.75, 0.7, 5
	th.SilentAfter = model.Duration(5 * time.Minute)
	ds, err := Build(th)
	require.NoError(t, err)
	overview := ds[0]
	require.Equal(t, UIDOverview, overview.UID)

	steps := func(props []dashboard.DynamicConfigValue) []dashboard.Threshold {
		for _, p := range props {
			if p.Id == "thresholds" {
				return p.Value.(dashboard.ThresholdsConfig).Steps
			}
		}
		return nil
	}
	overrides := map[string][]dashboard.DynamicConfigValue{}
	for _, p := range overview.Model.Panels {
		if p.Panel != nil && *p.Panel.Title == "Cluster health" {
			for _, o := range p.Panel.FieldConfig.Overrides {
				overrides[fmt.Sprint(deref(o.Matcher.Options))] = o.Properties
			}
		}
	}
	type want struct {
		base, color string
		value       float64
	}
	for field, w := range map[string]want{
		"Value #B": {red, green, 0.75},          // Nodes Ready: critical below
		"Value #C": {green, orange, above(0.7)}, // CPU: warning above
		"Value #D": {green, orange, above(0.7)}, // memory
		"Value #E": {green, red, above(5)},      // crash loops: critical above
		"Value #F": {green, red, above(5 * 60)}, // data age: critical above
	} {
		s := steps(overrides[field])
		require.Len(t, s, 2, field)
		require.Equal(t, w.base, s[0].Color, field)
		require.Nil(t, s[0].Value, field)
		require.Equal(t, w.color, s[1].Color, field)
		require.Equal(t, w.value, *s[1].Value, field)
	}
	// The silent-cluster count uses the threshold in its PromQL.
	var silent string
	for _, q := range overview.Queries() {
		if q.Panel == "Silent clusters" {
			silent = q.Expr
		}
	}
	require.Contains(t, silent, "> bool 300)")

	// Everything else is the same as with the defaults.
	def := build(t)
	for i := range ds {
		a, err := ds[i].JSON()
		require.NoError(t, err)
		b, err := def[i].JSON()
		require.NoError(t, err)
		numbers := regexp.MustCompile(`[0-9.]+(e-?[0-9]+)?|\d+m|\d+s`)
		require.Equal(t, len(numbers.Split(string(b), -1)), len(numbers.Split(string(a), -1)), ds[i].UID)
		require.Equal(t, numbers.ReplaceAllString(string(b), "N"), numbers.ReplaceAllString(string(a), "N"), ds[i].UID)
	}

	_, err = Build(config.Thresholds{})
	require.ErrorContains(t, err, "rules.pack.node_ready_ratio")
}

func deref(v any) any {
	if s, ok := v.(*string); ok {
		return *s
	}
	return v
}

func TestInterpolate(t *testing.T) {
	vars := map[string]string{"cluster": "eu-1|eu-2", "__rate_interval": "1m"}
	for in, want := range map[string]string{
		`up{cluster=~"$cluster"}`:                  `up{cluster=~"eu-1|eu-2"}`,
		`up{cluster=~"${cluster}"}`:                `up{cluster=~"eu-1|eu-2"}`,
		`up{cluster=~"${cluster:regex}"}`:          `up{cluster=~"eu-1|eu-2"}`,
		`up{cluster=~"[[cluster]]"}`:               `up{cluster=~"eu-1|eu-2"}`,
		`rate(x[$__rate_interval])`:                `rate(x[1m])`,
		`label_replace(x, "a", "$1", "b", "(.*)")`: `label_replace(x, "a", "$1", "b", "(.*)")`,
		`up{cluster=~"$clusters"}`:                 `up{cluster=~"$clusters"}`,
		`up{cluster=~"$cluster", job=~"$job"}`:     `up{cluster=~"eu-1|eu-2", job=~"$job"}`,
	} {
		require.Equal(t, want, Interpolate(in, vars), in)
	}
}

func TestFiles(t *testing.T) {
	ds := build(t)
	p := DefaultProvisioning
	p.MetricsDatasourceURL = "http://prometheus:9090"
	files, err := Files(ds, p)
	require.NoError(t, err)
	require.Contains(t, string(files[DatasourcesFile]), "uid: "+MetricsDatasourceUID+"\n")
	require.Contains(t, string(files[DatasourcesFile]), "url: http://prometheus:9090\n")
	dir := t.TempDir()
	written, err := WriteFiles(dir, files)
	require.NoError(t, err)
	require.Len(t, written, len(ds)+2)
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Equal(t, want, got)
	}

	for _, tc := range []struct {
		mod  func(*Provisioning)
		want string
	}{
		{func(p *Provisioning) { p.DatasourceURL = "" }, "datasource URL: must be set"},
		{func(p *Provisioning) { p.DatasourceURL = "fleetwatch:9095" }, `datasource URL: "fleetwatch:9095" is not an http(s) URL`},
		{func(p *Provisioning) { p.MetricsDatasourceURL = "ftp://x" }, `metrics datasource URL: "ftp://x" is not an http(s) URL`},
		{func(p *Provisioning) { p.DashboardsPath = "dashboards" }, `dashboards path: "dashboards" is not an absolute path`},
		{func(p *Provisioning) { p.Folder = "" }, "folder: must be set"},
	} {
		p := DefaultProvisioning
		tc.mod(&p)
		_, err := Files(ds, p)
		require.EqualError(t, err, tc.want)
	}
}

// libraryMetrics are the metrics of the Prometheus libraries fleetwatch embeds (TSDB, rules
// manager, notifier, PromQL engine) and of client_golang's process collector that the
// dashboards read from fleetwatch's /metrics. cmd/fleetwatch's TestDashboardMetricsRegistered
// finds each in a real server's registry; test/e2e reads them through a real Prometheus.
var libraryMetrics = []string{
	"prometheus_engine_query_duration_seconds",
	"prometheus_notifications_dropped_total",
	"prometheus_notifications_queue_length",
	"prometheus_rule_evaluation_failures_total",
	"prometheus_rule_group_iterations_missed_total",
	"prometheus_rule_group_last_duration_seconds",
	"prometheus_tsdb_head_samples_appended_total",
	"prometheus_tsdb_head_series",
	"process_cpu_seconds_total",
	"process_resident_memory_bytes",
}

// packRecords are the recording rules of the pack rendered with the defaults.
func packRecords(t *testing.T) map[string]bool {
	t.Helper()
	e, err := newEnv(config.DefaultThresholds)
	require.NoError(t, err)
	require.NotEmpty(t, e.records)
	return e.records
}

// simFamilies are the metric families the fleet lab's simulator exports for a cluster, with
// a crash loop so that the families only present then are listed too.
func simFamilies(t *testing.T) map[string]bool {
	t.Helper()
	s, err := sim.New(sim.Options{Clusters: []string{"c1"}, Nodes: 2, PodsPerNode: 4})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	var workload string
	for w := range s.Truth()[0].Images {
		workload = w
		break
	}
	ns, deploy, _ := strings.Cut(workload, "/")
	require.NoError(t, s.Apply(sim.Step{Action: sim.ActionCrashloop, Cluster: "c1", Namespace: ns, Deployment: deploy, RestartsPerMinute: 6}))
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	out := map[string]bool{}
	for _, path := range []string{"/clusters/c1/metrics", "/clusters/c1/apiserver/metrics"} {
		resp, err := srv.Client().Get(srv.URL + path)
		require.NoError(t, err)
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		require.NoError(t, err, path)
		for name := range fams {
			out[name] = true
		}
	}
	require.True(t, out["kube_pod_container_status_waiting_reason"])
	return out
}

// ownMetrics scans fleetwatch's Go source (not tests) for the metrics it registers: the Name
// of each prometheus.*Opts literal passed to a constructor, with the label names of the vector
// it makes ([]string{...} next to it), and fleetwatch_* names passed to helpers such as
// newCounter(reg, "fleetwatch_...", help). Vectors appear on /metrics only once a label
// combination is used, so scraping an idle fleetwatch would not list them all.
func ownMetrics(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	// The metric names declared as constants (one home for a name), by the constant's name,
	// for collectors whose Opts name the constant rather than a literal.
	consts := map[string]string{}
	walkGo(t, func(f *ast.File) {
		ast.Inspect(f, func(n ast.Node) bool {
			if vs, ok := n.(*ast.ValueSpec); ok {
				for i, id := range vs.Names {
					if i < len(vs.Values) {
						if s := stringLit(vs.Values[i]); strings.HasPrefix(s, "fleetwatch_") {
							consts[id.Name] = s
						}
					}
				}
			}
			return true
		})
	})
	nameOf := func(e ast.Expr) string {
		switch e := e.(type) {
		case *ast.Ident:
			return consts[e.Name]
		case *ast.SelectorExpr:
			return consts[e.Sel.Name]
		}
		return stringLit(e)
	}
	walkGo(t, func(f *ast.File) {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			var name string
			var lbls []string
			for _, a := range call.Args {
				switch a := a.(type) {
				case *ast.CompositeLit:
					if sel, ok := a.Type.(*ast.SelectorExpr); ok && strings.HasSuffix(sel.Sel.Name, "Opts") {
						for _, el := range a.Elts {
							if kv, ok := el.(*ast.KeyValueExpr); ok {
								if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Name" {
									name = nameOf(kv.Value)
								}
							}
						}
					}
					if at, ok := a.Type.(*ast.ArrayType); ok {
						if id, ok := at.Elt.(*ast.Ident); ok && id.Name == "string" {
							for _, el := range a.Elts {
								lbls = append(lbls, stringLit(el))
							}
						}
					}
				case *ast.BasicLit, *ast.Ident, *ast.SelectorExpr:
					// A literal or a constant passed as the name (newCounter(reg, MetricX, ...)).
					if s := nameOf(a); name == "" && strings.HasPrefix(s, "fleetwatch_") {
						name = s
					}
				}
			}
			if strings.HasPrefix(name, "fleetwatch_") {
				out[name] = lbls
			}
			return true
		})
	})
	return out
}

// walkGo parses every non-test Go file of the tree that ownMetrics scans.
func walkGo(t *testing.T, f func(*ast.File)) {
	t.Helper()
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "testdata", "test", "hack", "deploy", ".git", "bin":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		file, err := goparser.ParseFile(fset, p, nil, goparser.SkipObjectResolution)
		if err != nil {
			return err
		}
		f(file)
		return nil
	})
	require.NoError(t, err)
}

func stringLit(e ast.Expr) string {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return ""
	}
	s, err := strconv.Unquote(bl.Value)
	if err != nil {
		return ""
	}
	return s
}

// variableMetrics are the metric names of a label_values(selector, label) variable query.
func variableMetrics(t *testing.T, v dashboard.VariableModel) []string {
	t.Helper()
	require.NotNil(t, v.Query)
	require.NotNil(t, v.Query.String)
	q := Interpolate(*v.Query.String, CheckVars)
	m := regexp.MustCompile(`^label_values\((.+), (\w+)\)$`).FindStringSubmatch(q)
	require.NotNil(t, m, "variable %s: %s is not label_values(selector, label)", v.Name, q)
	e, err := parser.ParseExpr(m[1])
	require.NoError(t, err, fmt.Sprintf("variable %s", v.Name))
	vs, ok := e.(*parser.VectorSelector)
	require.True(t, ok, "variable %s: %s is not a selector", v.Name, m[1])
	return []string{vs.Name}
}

// TestSchema: every generated file passes the SDK's strict decoder (required fields present,
// no unknown ones) and reads back into the same dashboard, panels and queries of known types.
func TestSchema(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	for _, d := range build(t) {
		b, err := d.JSON()
		require.NoError(t, err)
		var back dashboard.Dashboard
		err = back.UnmarshalJSONStrict(b)
		// The SDK returns an empty cog.BuildErrors in an error interface when all is well.
		if errs, ok := err.(cog.BuildErrors); ok && len(errs) == 0 {
			err = nil
		}
		require.NoError(t, err, d.UID)
		// The strict decoder leaves panels out; the plain one reads everything back.
		back = dashboard.Dashboard{}
		require.NoError(t, json.Unmarshal(b, &back), d.UID)
		again, err := json.MarshalIndent(back, "", "  ")
		require.NoError(t, err)
		require.JSONEq(t, string(b), string(again), d.UID)
	}
}
