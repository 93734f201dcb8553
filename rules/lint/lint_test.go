package lint

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/rules/pack"
)

func TestExpr(t *testing.T) {
	for _, tc := range []struct {
		name, expr string
		want       []string // "check: message prefix"
	}{
		{name: "by cluster", expr: `sum by (cluster, namespace) (kube_pod_info)`},
		{name: "without other labels", expr: `sum without (pod) (kube_pod_info)`},
		{name: "without nothing", expr: `sum without () (kube_pod_info)`},
		{name: "no grouping", expr: `sum(kube_pod_info)`, want: []string{`aggregation: "sum" has no by (cluster, ...), so it aggregates`}},
		{name: "empty by", expr: `count by () (kube_pod_info)`, want: []string{`aggregation: "count" has no by (cluster, ...)`}},
		{name: "by without cluster", expr: `avg by (namespace) (kube_pod_info)`, want: []string{`aggregation: "avg by (namespace)" leaves out cluster, so it aggregates`}},
		{name: "without cluster", expr: `max without (cluster, pod) (kube_pod_info)`, want: []string{`aggregation: "max without (cluster, pod)" removes cluster`}},
		{name: "topk", expr: `topk(5, kube_pod_info)`, want: []string{`aggregation: "topk" has no by (cluster, ...), so it picks series across clusters`}},
		{name: "topk by cluster", expr: `topk by (cluster) (5, kube_pod_info)`},
		{name: "quantile", expr: `quantile by (node) (0.9, kube_pod_info)`, want: []string{`aggregation: "quantile by (node)"`}},
		{name: "count_values", expr: `count_values("v", kube_pod_info)`, want: []string{`aggregation: "count_values"`}},
		{name: "inner aggregation", expr: `sum by (cluster) (max by (node) (kube_node_info))`, want: []string{`aggregation: "max by (node)"`}},
		{name: "no series", expr: `sum(vector(1))`},
		{name: "on with cluster", expr: `a * on (cluster, pod) group_left () b`},
		{name: "on without cluster", expr: `a * on (pod) group_left () b`, want: []string{`join: "* on (pod)" leaves out cluster`}},
		{name: "empty on", expr: `a > on () group_left b`, want: []string{`join: "> on ()" leaves out cluster`}},
		{name: "ignoring other", expr: `a / ignoring (container) b`},
		{name: "ignoring cluster", expr: `a / ignoring (cluster) b`, want: []string{`join: "/ ignoring (cluster)" ignores cluster`}},
		{name: "set op on", expr: `a and on (pod) b`, want: []string{`join: "and on (pod)"`}},
		{name: "set op plain", expr: `a unless b`},
		{name: "scalar side", expr: `a > 0.9`},
		{name: "join with vector()", expr: `a > on () group_left vector(1)`},
		{name: "no name, no job", expr: `{cluster="a"}`, want: []string{`selector: selector {cluster="a"} has neither a metric name nor a job matcher`}},
		{name: "name matcher", expr: `{__name__="up", cluster="a"}`},
		{name: "name regexp", expr: `{__name__=~"kube_.+"}`, want: []string{`selector:`}},
		{name: "job matcher", expr: `{job="kube-state-metrics"}`},
		{name: "job regexp", expr: `{job=~"kube-.+"}`},
		{name: "job matching empty", expr: `{job=~".*", namespace="x"}`, want: []string{`selector:`}},
		{name: "negative job matcher", expr: `{job!="x", namespace="y"}`, want: []string{`selector:`}},
		{name: "matrix selector", expr: `rate({cluster="a"}[5m])`, want: []string{`selector:`}},
		{
			name: "several, in order",
			expr: `sum(a) / on () group_left count({job=~".*", namespace="x"})`,
			want: []string{`aggregation: "sum"`, `join: "/ on ()"`, `aggregation: "count"`, `selector:`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := parser.ParseExpr(tc.expr)
			require.NoError(t, err)
			var got []string
			for _, is := range Expr(e, tc.expr) {
				got = append(got, string(is.Check)+": "+is.Message)
			}
			require.Len(t, got, len(tc.want), "issues: %q", got)
			for i := range tc.want {
				require.True(t, strings.HasPrefix(got[i], tc.want[i]), "issue %d:\n got %s\nwant %s...", i, got[i], tc.want[i])
			}
		})
	}
}

func TestExprJoinPosition(t *testing.T) {
	src := "  a\n# a comment with a ( and a *\n* on (pod)\n  (b)"
	e, err := parser.ParseExpr(src)
	require.NoError(t, err)
	is := Expr(e, src)
	require.Len(t, is, 1)
	require.Equal(t, "* on (pod)", src[is[0].Pos:is[0].Pos+10])
}

func TestMetricNames(t *testing.T) {
	e, err := parser.ParseExpr(`time() - max(a{x="1"}) + rate(b[5m]) + a + {__name__="c"} + {__name__=~"d.*"}`)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b", "c"}, MetricNames(e))
}

func TestFile(t *testing.T) {
	got := lintTestdata(t, "findings.yml")
	want, err := os.ReadFile(filepath.Join("testdata", "findings.golden"))
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(string(want)), strings.Join(got, "\n"))
}

func TestFileClean(t *testing.T) {
	require.Empty(t, lintTestdata(t, "clean.yml"))
}

func lintTestdata(t *testing.T, name string) []string {
	t.Helper()
	path := filepath.Join("testdata", name)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	fs, err := File(path, b)
	require.NoError(t, err)
	var out []string
	for _, f := range fs {
		out = append(out, f.String())
	}
	return out
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		want          []string
	}{
		{
			name:    "yaml syntax",
			content: "groups:\n  - name: g\n    rules:\n      - record: a\n        expr: b\n       bad: [\n",
			want:    []string{"f.yml:3: did not find expected '-' indicator"},
		},
		{
			name:    "unknown field",
			content: "groups:\n  - name: g\n    rules:\n      - record: a\n        expr: b\n        bogus: 1\n",
			want:    []string{"f.yml:6: field bogus not found"},
		},
		{
			name:    "bad expression",
			content: "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(\n",
			want:    []string{`f.yml:5: group "g", rule 1, "A": could not parse expression: `},
		},
		{
			name:    "error without a node",
			content: "groups:\n  - name: g\n    rules:\n      - record: a\n        expr: b\n      - alert: B\n        expr: c\n        labels:\n          __name__: x\n",
			want:    []string{`f.yml:6: group "g", rule 2, "B": invalid label name: __name__`},
		},
		{
			name:    "repeated group",
			content: "groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n",
			want:    []string{`f.yml:4: groupname: "g" is repeated in the same file`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := File("f.yml", []byte(tc.content))
			var pe *ParseError
			require.True(t, errors.As(err, &pe), "error %v is not a *ParseError", err)
			require.Len(t, pe.Problems, len(tc.want), "problems: %q", pe.Problems)
			for i := range tc.want {
				require.True(t, strings.HasPrefix(pe.Problems[i], tc.want[i]), "problem %d:\n got %s\nwant %s...", i, pe.Problems[i], tc.want[i])
			}
		})
	}
}

// TestPack is the promise of the built-in pack: whatever it aggregates across clusters is
// marked fleet-wide, so `fleetwatch rules lint --pack` is clean.
func TestPack(t *testing.T) {
	files, err := pack.Render(config.DefaultThresholds)
	require.NoError(t, err)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var got []string
	for _, n := range names {
		fs, err := File("pack/"+n, files[n])
		require.NoError(t, err)
		for _, f := range fs {
			got = append(got, f.String())
		}
	}
	require.Empty(t, got, "the built-in rule pack does not lint clean; mark the rules that compare clusters on purpose "+
		"with a %q comment (above a group's name marks the whole group):\n%s", "# "+FleetWideMarker, strings.Join(got, "\n"))
}

func FuzzFile(f *testing.F) {
	for _, name := range []string{"findings.yml", "clean.yml"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fs, err := File("f.yml", b)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || len(pe.Problems) == 0 {
				t.Fatalf("error %v is not a *ParseError with problems", err)
			}
			return
		}
		for _, f := range fs {
			if f.Line < 1 {
				t.Fatalf("finding without a line: %s", f)
			}
		}
	})
}
