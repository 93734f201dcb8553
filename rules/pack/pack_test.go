package pack

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v2"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// renderWithTests writes the pack rendered with th and the promtool unit tests of testdata/
// into one temporary directory, so the tests' rule_files name the rendered files by their
// plain names. It returns the paths of the test files by base name.
func renderWithTests(t *testing.T, th Thresholds) map[string]string {
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
	paths, err := Files(DefaultThresholds, dir)
	require.NoError(t, err)
	out, err := exec.Command(promtool, append([]string{"check", "rules"}, paths...)...).CombinedOutput()
	require.NoError(t, err, "promtool check rules:\n%s", out)
	require.Equal(t, len(paths), strings.Count(string(out), "SUCCESS"), "promtool check rules:\n%s", out)
	t.Logf("promtool check rules:\n%s", out)
}

func TestPromtoolTestRules(t *testing.T) {
	promtool := testenv.Peer(t, "promtool")
	tests := renderWithTests(t, DefaultThresholds)
	rendered, err := Render(DefaultThresholds)
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
		nudge func(*Thresholds)
	}{
		{"node_ready_ratio", "nodes_test.yml", func(th *Thresholds) { th.NodeReadyRatio = 0.91 }},
		{"node_ready_for", "nodes_test.yml", func(th *Thresholds) { th.NodeReadyFor = model.Duration(45 * time.Second) }},
		{"saturation_ratio", "saturation_test.yml", func(th *Thresholds) { th.SaturationRatio = 0.84 }},
		{"saturation_for", "saturation_test.yml", func(th *Thresholds) { th.SaturationFor = model.Duration(4*time.Minute + 45*time.Second) }},
		{"crash_loop_per_minute", "crashloop_test.yml", func(th *Thresholds) { th.CrashLoopPerMinute = 2.99 }},
		{"crash_loop_for", "crashloop_test.yml", func(th *Thresholds) { th.CrashLoopFor = model.Duration(45 * time.Second) }},
		{"silent_after", "control_test.yml", func(th *Thresholds) { th.SilentAfter = model.Duration(105 * time.Second) }},
		{"control_plane_for", "control_test.yml", func(th *Thresholds) { th.ControlPlaneFor = model.Duration(45 * time.Second) }},
		{"drift_for", "drift_test.yml", func(th *Thresholds) { th.DriftFor = model.Duration(29*time.Minute + 45*time.Second) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			th := DefaultThresholds
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
	rendered, err := Render(DefaultThresholds)
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

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Thresholds)
		want []string // every error line, in field order; nil: valid
	}{
		{"defaults", func(*Thresholds) {}, nil},
		{"ratios at 1 and zero durations", func(th *Thresholds) {
			th.NodeReadyRatio, th.SaturationRatio, th.CrashLoopPerMinute = 1, 1, 0
			th.NodeReadyFor, th.SaturationFor, th.CrashLoopFor, th.ControlPlaneFor, th.DriftFor, th.EvaluationInterval = 0, 0, 0, 0, 0, 0
		}, nil},
		{"node_ready_ratio 0", func(th *Thresholds) { th.NodeReadyRatio = 0 },
			[]string{"rules.pack.node_ready_ratio: must be in (0, 1], got 0"}},
		{"node_ready_ratio above 1", func(th *Thresholds) { th.NodeReadyRatio = 1.5 },
			[]string{"rules.pack.node_ready_ratio: must be in (0, 1], got 1.5"}},
		{"node_ready_ratio NaN", func(th *Thresholds) { th.NodeReadyRatio = math.NaN() },
			[]string{"rules.pack.node_ready_ratio: must be in (0, 1], got NaN"}},
		{"saturation_ratio negative", func(th *Thresholds) { th.SaturationRatio = -0.1 },
			[]string{"rules.pack.saturation_ratio: must be in (0, 1], got -0.1"}},
		{"saturation_ratio a percentage", func(th *Thresholds) { th.SaturationRatio = 85 },
			[]string{"rules.pack.saturation_ratio: must be in (0, 1], got 85"}},
		{"crash_loop_per_minute negative", func(th *Thresholds) { th.CrashLoopPerMinute = -1 },
			[]string{"rules.pack.crash_loop_per_minute: must be a finite number >= 0, got -1"}},
		{"crash_loop_per_minute infinite", func(th *Thresholds) { th.CrashLoopPerMinute = math.Inf(1) },
			[]string{"rules.pack.crash_loop_per_minute: must be a finite number >= 0, got +Inf"}},
		{"node_ready_for negative", func(th *Thresholds) { th.NodeReadyFor = model.Duration(-time.Minute) },
			[]string{"rules.pack.node_ready_for: must be >= 0, got -1m0s"}},
		{"saturation_for negative", func(th *Thresholds) { th.SaturationFor = model.Duration(-time.Second) },
			[]string{"rules.pack.saturation_for: must be >= 0, got -1s"}},
		{"crash_loop_for negative", func(th *Thresholds) { th.CrashLoopFor = model.Duration(-time.Second) },
			[]string{"rules.pack.crash_loop_for: must be >= 0, got -1s"}},
		{"silent_after 0", func(th *Thresholds) { th.SilentAfter = 0 },
			[]string{"rules.pack.silent_after: must be > 0, got 0s"}},
		{"silent_after negative", func(th *Thresholds) { th.SilentAfter = model.Duration(-time.Minute) },
			[]string{"rules.pack.silent_after: must be > 0, got -1m0s"}},
		{"control_plane_for negative", func(th *Thresholds) { th.ControlPlaneFor = model.Duration(-time.Second) },
			[]string{"rules.pack.control_plane_for: must be >= 0, got -1s"}},
		{"drift_for negative", func(th *Thresholds) { th.DriftFor = model.Duration(-time.Hour) },
			[]string{"rules.pack.drift_for: must be >= 0, got -1h0m0s"}},
		{"evaluation_interval negative", func(th *Thresholds) { th.EvaluationInterval = model.Duration(-time.Second) },
			[]string{"rules.pack.evaluation_interval: must be >= 0, got -1s"}},
		{"every error at once", func(th *Thresholds) {
			th.NodeReadyRatio, th.CrashLoopPerMinute, th.SilentAfter = 2, math.NaN(), 0
		}, []string{
			"rules.pack.node_ready_ratio: must be in (0, 1], got 2",
			"rules.pack.crash_loop_per_minute: must be a finite number >= 0, got NaN",
			"rules.pack.silent_after: must be > 0, got 0s",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			th := DefaultThresholds
			tc.edit(&th)
			err := th.Validate()
			if tc.want == nil {
				require.NoError(t, err)
				_, err = Render(th)
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, strings.Join(tc.want, "\n"))
			_, err = Render(th)
			require.EqualError(t, err, strings.Join(tc.want, "\n"), "Render validates")
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
	th := Thresholds{
		NodeReadyRatio:     0.8,
		NodeReadyFor:       model.Duration(2 * time.Minute),
		SaturationRatio:    0.925,
		SaturationFor:      model.Duration(10 * time.Minute),
		CrashLoopPerMinute: 5,
		CrashLoopFor:       model.Duration(3 * time.Minute),
		SilentAfter:        model.Duration(5 * time.Minute),
		ControlPlaneFor:    model.Duration(4 * time.Minute),
		DriftFor:           model.Duration(time.Hour),
		EvaluationInterval: model.Duration(30 * time.Second),
	}
	rendered, err := Render(th)
	require.NoError(t, err)
	groups, rules := rulesOf(t, rendered)
	_, defaults := rulesOf(t, mustRender(t, DefaultThresholds))
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

func mustRender(t *testing.T, th Thresholds) map[string][]byte {
	t.Helper()
	rendered, err := Render(th)
	require.NoError(t, err)
	return rendered
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	paths, err := Files(DefaultThresholds, dir)
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

	_, err = Files(Thresholds{}, dir)
	require.ErrorContains(t, err, "rules.pack.node_ready_ratio")
}

func TestUnmarshalYAML(t *testing.T) {
	t.Run("omitted keys keep their defaults", func(t *testing.T) {
		var th Thresholds
		require.NoError(t, yaml.UnmarshalStrict([]byte("node_ready_ratio: 0.8\nsaturation_for: 10m\n"), &th))
		want := DefaultThresholds
		want.NodeReadyRatio = 0.8
		want.SaturationFor = model.Duration(10 * time.Minute)
		require.Equal(t, want, th)
	})
	t.Run("an empty map is the defaults", func(t *testing.T) {
		var th Thresholds
		require.NoError(t, yaml.UnmarshalStrict([]byte("{}"), &th))
		require.Equal(t, DefaultThresholds, th)
	})
	t.Run("values are validated", func(t *testing.T) {
		var th Thresholds
		err := yaml.UnmarshalStrict([]byte("saturation_ratio: 85\ndrift_for: 1h\n"), &th)
		require.EqualError(t, err, "rules.pack.saturation_ratio: must be in (0, 1], got 85")
	})
	t.Run("durations are Prometheus durations", func(t *testing.T) {
		var th Thresholds
		require.Error(t, yaml.UnmarshalStrict([]byte("drift_for: soon\n"), &th))
	})
	t.Run("unknown keys are errors", func(t *testing.T) {
		var th Thresholds
		require.ErrorContains(t, yaml.UnmarshalStrict([]byte("node_ready_ratoi: 0.8\n"), &th), "node_ready_ratoi")
	})
}

// TestREADME checks that rules/README.md shows every rule of the pack with its exact PromQL as
// rendered with the defaults, and names every threshold key.
func TestREADME(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	readme := string(b)
	_, rules := rulesOf(t, mustRender(t, DefaultThresholds))
	for name, r := range rules {
		require.Contains(t, readme, "**`"+name+"`**", "rules/README.md describes %s", name)
		require.Contains(t, readme, "```promql\n"+strings.TrimRight(r.Expr, "\n")+"\n```", "rules/README.md shows the PromQL of %s as rendered", name)
	}
	typ := reflect.TypeFor[Thresholds]()
	for i := range typ.NumField() {
		key, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ",")
		if key == "-" {
			continue // not a fleetwatch.yml key
		}
		require.Contains(t, readme, "`rules.pack."+key+"`", "rules/README.md names %s", key)
	}
}

// TestRecordedNames: every name the pack exports for other packages is recorded by the pack.
func TestRecordedNames(t *testing.T) {
	_, rules := rulesOf(t, mustRender(t, DefaultThresholds))
	for _, name := range []string{
		RecordNodeReadyRatio, RecordCPURequests, RecordMemoryRequests, RecordCPUAllocatable,
		RecordMemoryAllocatable, RecordCPURequestsRatio, RecordMemoryRequestsRatio, RecordCrashLoopRate,
		RecordWorkloadCrashLoopRate, RecordIngestAge, RecordAPIServerUp,
	} {
		r, ok := rules[name]
		require.True(t, ok, "the pack records no %s", name)
		require.Equal(t, name, r.Record, "%s is an alert, not a recording rule", name)
	}
}
