package pack

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v2"

	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// renderWithTests writes the pack rendered with th and the promtool unit tests of testdata/
// into one temporary directory, so the tests' rule_files name the rendered files by their
// plain names. It returns the paths of the test files by base name.
func renderWithTests(t *testing.T, th config.Thresholds) map[string]string {
	t.Helper()
	dir := t.TempDir()
	_, err := Files(th, dir)
	require.NoError(t, err)
	src, err := filepath.Glob(filepath.Join("testdata", "*_test.yml"))
	require.NoError(t, err)
	require.NotEmpty(t, src)
	tests := map[string]string{}
	for _, s := range src {
		b, err := os.ReadFile(s)
		require.NoError(t, err)
		tests[filepath.Base(s)] = testenv.WriteFile(t, dir, filepath.Base(s), string(b))
	}
	return tests
}

func promtoolTestRules(promtool, file string) ([]byte, error) {
	return exec.Command(promtool, "test", "rules", file).CombinedOutput()
}

func TestPromtoolCheckRules(t *testing.T) {
	promtool := testenv.Peer(t, "promtool")
	dir := t.TempDir()
	paths, err := Files(config.DefaultThresholds, dir)
	require.NoError(t, err)
	out, err := exec.Command(promtool, append([]string{"check", "rules"}, paths...)...).CombinedOutput()
	require.NoError(t, err, "promtool check rules:\n%s", out)
	require.Equal(t, len(paths), strings.Count(string(out), "SUCCESS"), "promtool check rules:\n%s", out)
	t.Logf("promtool check rules:\n%s", out)
}

func TestPromtoolTestRules(t *testing.T) {
	promtool := testenv.Peer(t, "promtool")
	tests := renderWithTests(t, config.DefaultThresholds)
	rendered, err := Render(config.DefaultThresholds)
	require.NoError(t, err)
	for name := range rendered {
		require.Contains(t, tests, strings.TrimSuffix(name, ".yml")+"_test.yml", "every rule file of the pack has its unit tests")
	}
	for name, f := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := promtoolTestRules(promtool, f)
			require.NoError(t, err, "promtool test rules:\n%s", out)
			require.Contains(t, string(out), "SUCCESS")
		})
	}
}

// TestPromtoolTestsPinThresholds renders the pack with one threshold nudged at a time and
// checks that its unit tests fail: they test each threshold at its exact default, so a test
// that still passes would not be testing it.
func TestPromtoolTestsPinThresholds(t *testing.T) {
	promtool := testenv.Peer(t, "promtool")
	for _, tc := range []struct {
		name  string
		tests string
		nudge func(*config.Thresholds)
	}{
		{"node_ready_ratio", "nodes_test.yml", func(th *config.Thresholds) { th.NodeReadyRatio = 0.91 }},
		{"node_ready_for", "nodes_test.yml", func(th *config.Thresholds) { th.NodeReadyFor = model.Duration(45 * time.Second) }},
		{"saturation_ratio", "saturation_test.yml", func(th *config.Thresholds) { th.SaturationRatio = 0.84 }},
		{"saturation_for", "saturation_test.yml", func(th *config.Thresholds) { th.SaturationFor = model.Duration(4*time.Minute + 45*time.Second) }},
		{"crash_loop_per_minute", "crashloop_test.yml", func(th *config.Thresholds) { th.CrashLoopPerMinute = 2.99 }},
		{"crash_loop_for", "crashloop_test.yml", func(th *config.Thresholds) { th.CrashLoopFor = model.Duration(45 * time.Second) }},
		{"silent_after", "control_test.yml", func(th *config.Thresholds) { th.SilentAfter = model.Duration(105 * time.Second) }},
		{"control_plane_for", "control_test.yml", func(th *config.Thresholds) { th.ControlPlaneFor = model.Duration(45 * time.Second) }},
		{"api_unreachable_for", "control_test.yml", func(th *config.Thresholds) { th.APIUnreachableFor = model.Duration(105 * time.Second) }},
		{"drift_for", "drift_test.yml", func(th *config.Thresholds) { th.DriftFor = model.Duration(29*time.Minute + 45*time.Second) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			th := config.DefaultThresholds
			tc.nudge(&th)
			tests := renderWithTests(t, th)
			out, err := promtoolTestRules(promtool, tests[tc.tests])
			require.Error(t, err, "%s still passes with %s nudged:\n%s", tc.tests, tc.name, out)
			require.Contains(t, string(out), "FAILED")
		})
	}
}

// unitTests is the part of a promtool unit test file that TestUnitTestsCoverPack reads.
type unitTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpAnnotations map[string]string `yaml:"exp_annotations"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
		PromqlExprTest []struct {
			Expr string `yaml:"expr"`
		} `yaml:"promql_expr_test"`
	} `yaml:"tests"`
}

// TestUnitTestsCoverPack checks that the unit tests of each rule file test every alert both
// firing (with its annotations) and not firing, and query every recording rule.
func TestUnitTestsCoverPack(t *testing.T) {
	rendered, err := Render(config.DefaultThresholds)
	require.NoError(t, err)
	for name, content := range rendered {
		t.Run(name, func(t *testing.T) {
			testFile := filepath.Join("testdata", strings.TrimSuffix(name, ".yml")+"_test.yml")
			b, err := os.ReadFile(testFile)
			require.NoError(t, err)
			var ut unitTests
			require.NoError(t, yaml.Unmarshal(b, &ut))
			require.Equal(t, []string{name}, ut.RuleFiles, "%s tests %s alone", testFile, name)

			firing, quiet := map[string]bool{}, map[string]bool{}
			var exprs []string
			for _, tg := range ut.Tests {
				for _, at := range tg.AlertRuleTest {
					if len(at.ExpAlerts) == 0 {
						quiet[at.Alertname] = true
					}
					for _, a := range at.ExpAlerts {
						if len(a.ExpAnnotations) > 0 {
							firing[at.Alertname] = true
						}
					}
				}
				for _, et := range tg.PromqlExprTest {
					exprs = append(exprs, et.Expr)
				}
			}
			rgs, errs := rulefmt.Parse(content, false, model.LegacyValidation)
			require.Empty(t, errs)
			for _, g := range rgs.Groups {
				for _, r := range g.Rules {
					if r.Alert != "" {
						require.True(t, firing[r.Alert], "%s: no test of %s firing, with its annotations", testFile, r.Alert)
						require.True(t, quiet[r.Alert], "%s: no test of %s not firing", testFile, r.Alert)
						continue
					}
					require.True(t, slices.ContainsFunc(exprs, func(e string) bool { return strings.Contains(e, r.Record) }),
						"%s: no promql_expr_test queries %s", testFile, r.Record)
				}
			}
		})
	}
}

// rulesOf parses every rendered file with Prometheus's rulefmt.
func rulesOf(t *testing.T, rendered map[string][]byte) (groups []rulefmt.RuleGroup, byName map[string]rulefmt.Rule) {
	t.Helper()
	byName = map[string]rulefmt.Rule{}
	for name, content := range rendered {
		rgs, errs := rulefmt.Parse(content, false, model.LegacyValidation)
		require.Empty(t, errs, name)
		for _, g := range rgs.Groups {
			groups = append(groups, g)
			for _, r := range g.Rules {
				byName[r.Alert+r.Record] = r
			}
		}
	}
	return groups, byName
}

func TestRenderThresholds(t *testing.T) {
	th := config.Thresholds{
		NodeReadyRatio:     0.8,
		NodeReadyFor:       model.Duration(2 * time.Minute),
		SaturationRatio:    0.925,
		SaturationFor:      model.Duration(10 * time.Minute),
		CrashLoopPerMinute: 5,
		CrashLoopFor:       model.Duration(3 * time.Minute),
		SilentAfter:        model.Duration(5 * time.Minute),
		ControlPlaneFor:    model.Duration(4 * time.Minute),
		APIUnreachableFor:  model.Duration(7 * time.Minute),
		DriftFor:           model.Duration(time.Hour),
		EvaluationInterval: model.Duration(30 * time.Second),
	}
	rendered, err := Render(th)
	require.NoError(t, err)
	groups, rules := rulesOf(t, rendered)
	_, defaults := rulesOf(t, mustRender(t, config.DefaultThresholds))
	require.Len(t, rules, len(defaults), "the same rules, whatever the thresholds")

	for _, tc := range []struct {
		alert, expr string
		forDur      time.Duration
		description string // a part of the description that states the threshold
	}{
		{"FleetClusterNodesNotReady", "cluster:kube_node_ready:ratio < 0.8", 2 * time.Minute, "below the threshold of 80% for more than 2m."},
		{"FleetClusterCPURequestsSaturated", "cluster:kube_pod_container_resource_requests_cpu:ratio > 0.925", 10 * time.Minute, "above the threshold of 92.5% for more than 10m."},
		{"FleetClusterMemoryRequestsSaturated", "cluster:kube_pod_container_resource_requests_memory:ratio > 0.925", 10 * time.Minute, "above the threshold of 92.5% for more than 10m."},
		{"FleetClusterCrashLooping", "cluster:kube_pod_container_crashloop_restarts_per_minute:rate2m > 5", 3 * time.Minute, "above the threshold of 5 for more than 3m."},
		{"FleetWorkloadCrashLooping", "namespace_workload:kube_pod_container_crashloop_restarts_per_minute:rate2m > 5", 3 * time.Minute, "above the threshold of 5 for more than 3m."},
		{"FleetClusterSilent", "cluster:fleetwatch_cluster_ingest_age_seconds:max > 300", 0, "longer than 5m."},
		{"FleetClusterControlPlaneDown", "cluster:apiserver_up:max == 0", 4 * time.Minute, "for more than 4m."},
		{"FleetClusterAPIUnreachable", "  max by (cluster) (fleetwatch_cluster_api_up) == 0\nand on (cluster)\n  cluster:fleetwatch_cluster_ingest_age_seconds:max <= 300\n", 7 * time.Minute, "has failed for more than 7m, while"},
		{"FleetImageDrift", "", time.Hour, "for more than 1h."},
	} {
		t.Run(tc.alert, func(t *testing.T) {
			r, ok := rules[tc.alert]
			require.True(t, ok)
			if tc.expr != "" {
				require.Equal(t, tc.expr, r.Expr)
			} else {
				require.Equal(t, defaults[tc.alert].Expr, r.Expr, "the threshold is not in the expression")
			}
			require.Equal(t, model.Duration(tc.forDur), r.For)
			require.Contains(t, r.Annotations["description"], tc.description)
		})
	}
	for _, g := range groups {
		require.Equal(t, model.Duration(30*time.Second), g.Interval, g.Name)
	}

	// An evaluation interval of 0 leaves it to the evaluator.
	th.EvaluationInterval = 0
	groups, _ = rulesOf(t, mustRender(t, th))
	for _, g := range groups {
		require.Zero(t, g.Interval, g.Name)
	}
}

func mustRender(t *testing.T, th config.Thresholds) map[string][]byte {
	t.Helper()
	rendered, err := Render(th)
	require.NoError(t, err)
	return rendered
}

// TestRenderValidates: the pack is never rendered with thresholds fleetwatch.yml would reject;
// the error is config.Thresholds.Validate's (internal/config tests every case).
func TestRenderValidates(t *testing.T) {
	th := config.DefaultThresholds
	th.NodeReadyRatio, th.SilentAfter = 2, 0
	want := th.Validate()
	require.Error(t, want)
	_, err := Render(th)
	require.EqualError(t, err, want.Error())
	_, err = Files(th, t.TempDir())
	require.EqualError(t, err, want.Error())
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	paths, err := Files(config.DefaultThresholds, dir)
	require.NoError(t, err)
	var names []string
	for _, p := range paths {
		require.Equal(t, dir, filepath.Dir(p))
		names = append(names, filepath.Base(p))
	}
	require.Equal(t, []string{"control.yml", "crashloop.yml", "drift.yml", "nodes.yml", "saturation.yml"}, names)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, len(paths), "no temporary files left behind")

	_, err = Files(config.Thresholds{}, dir)
	require.ErrorContains(t, err, "rules.pack.node_ready_ratio")
}

// TestREADME checks that rules/README.md shows every rule of the pack with its exact PromQL as
// rendered with the defaults, and names every threshold key.
func TestREADME(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	readme := string(b)
	_, rules := rulesOf(t, mustRender(t, config.DefaultThresholds))
	for name, r := range rules {
		require.Contains(t, readme, "**`"+name+"`**", "rules/README.md describes %s", name)
		require.Contains(t, readme, "```promql\n"+strings.TrimRight(r.Expr, "\n")+"\n```", "rules/README.md shows the PromQL of %s as rendered", name)
	}
	typ := reflect.TypeFor[config.Thresholds]()
	for i := range typ.NumField() {
		key, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ",")
		if key == "-" {
			continue // not a fleetwatch.yml key
		}
		require.Contains(t, readme, "`rules.pack."+key+"`", "rules/README.md names %s", key)
	}
}

// TestRecordedNames: every Record* constant the pack exports for other packages is recorded
// by the pack. The constants are read from the package's source, so one added later is checked
// too.
func TestRecordedNames(t *testing.T) {
	_, rules := rulesOf(t, mustRender(t, config.DefaultThresholds))
	names := exportedNames(t, "Record")
	require.Contains(t, names, "RecordNodeReadyRatio", "the constants are read from the source")
	for constant, name := range names {
		r, ok := rules[name]
		require.True(t, ok, "%s: the pack records no %s", constant, name)
		require.Equal(t, name, r.Record, "%s: %s is an alert, not a recording rule", constant, name)
	}
}

// TestAlertNames: the Alert* constants and the alerts of the pack are the same names, so an
// alert renamed (or added) in a template without its constant fails here, not silently in
// correlation or a dashboard that still uses the old name.
func TestAlertNames(t *testing.T) {
	_, rules := rulesOf(t, mustRender(t, config.DefaultThresholds))
	constants := exportedNames(t, "Alert")
	require.Contains(t, constants, "AlertClusterSilent", "the constants are read from the source")
	byName := map[string]string{}
	for constant, name := range constants {
		byName[name] = constant
		r, ok := rules[name]
		require.True(t, ok, "%s: the pack has no alert %s", constant, name)
		require.Equal(t, name, r.Alert, "%s: %s is a recording rule, not an alert", constant, name)
	}
	require.Len(t, byName, len(constants), "two Alert constants name the same alert")
	for name, r := range rules {
		if r.Alert != "" {
			require.Contains(t, byName, name, "the pack's alert %s has no Alert constant in names.go", name)
		}
	}
}

// exportedNames returns the exported string constants of the package (not of its tests) whose
// names start with prefix, by constant name.
func exportedNames(t *testing.T, prefix string) map[string]string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	fset := token.NewFileSet()
	out := map[string]string{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		require.NoError(t, err)
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, id := range vs.Names {
					if !id.IsExported() || !strings.HasPrefix(id.Name, prefix) {
						continue
					}
					require.Less(t, i, len(vs.Values), "%s: %s has no value of its own", fset.Position(id.Pos()), id.Name)
					lit, ok := vs.Values[i].(*ast.BasicLit)
					require.True(t, ok && lit.Kind == token.STRING, "%s: %s is not a string literal", fset.Position(id.Pos()), id.Name)
					v, err := strconv.Unquote(lit.Value)
					require.NoError(t, err)
					out[id.Name] = v
				}
			}
		}
	}
	return out
}
