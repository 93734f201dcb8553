package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// runRules runs `fleetwatch rules ...` in the test, from dir, and returns the exit code and
// what it wrote.
func runRules(t *testing.T, dir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	app := kingpin.New("fleetwatch", "")
	r := newRulesCmd(app)
	var out, errOut bytes.Buffer
	r.stdout, r.stderr = &out, &errOut
	r.now = func() time.Time { return rulesNow }
	if dir != "" {
		t.Chdir(dir)
	}
	cmd, err := app.Parse(append([]string{"rules"}, args...))
	require.NoError(t, err)
	code = r.run(cmd)
	return code, out.String(), errOut.String()
}

var rulesNow = time.Date(2025, 3, 1, 3, 0, 0, 0, time.UTC)

const findingsFile = `groups:
  - name: g
    rules:
      - record: fleet:up:count
        expr: count(up)
      # fleetwatch:fleet-wide
      - record: fleet:up:sum
        expr: sum(up)
`

func TestRulesLint(t *testing.T) {
	dir := t.TempDir()
	bad := testenv.WriteFile(t, dir, "bad.yml", findingsFile)
	clean := testenv.WriteFile(t, dir, "clean.yml", "groups:\n  - name: g\n    rules:\n      - record: cluster:up:count\n        expr: count by (cluster) (up)\n")
	broken := testenv.WriteFile(t, dir, "broken.yml", "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(\n")

	code, out, errOut := runRules(t, "", "lint", clean)
	require.Equal(t, 0, code, errOut)
	require.Empty(t, out)

	code, out, errOut = runRules(t, "", "lint", clean, bad)
	require.Equal(t, 1, code)
	require.Equal(t, bad+`:5: rule fleet:up:count: "count" has no by (cluster, ...), so it aggregates series of different clusters; aggregate by (cluster, ...)`+"\n", out)
	require.Contains(t, errOut, "1 problem(s); mark a rule that compares clusters on purpose with a \"# fleetwatch:fleet-wide\" comment")

	code, _, errOut = runRules(t, "", "lint", bad, broken)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, broken+`:5: group "g", rule 1, "A": could not parse expression`)

	code, _, errOut = runRules(t, "", "lint", filepath.Join(dir, "missing.yml"))
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "missing.yml: no such file or directory")

	code, _, errOut = runRules(t, "", "lint")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "nothing to lint")
}

// TestRulesLintPack lints the pack as rendered with a configuration's thresholds. Whether the
// pack is clean is rules/lint's TestPack; here the findings must name the rendered files.
func TestRulesLintPack(t *testing.T) {
	code, out, errOut := runRules(t, t.TempDir(), "lint", "--pack")
	require.Contains(t, []int{0, 1}, code, errOut)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			require.True(t, strings.HasPrefix(l, "pack/"), l)
		}
	}

	dir := t.TempDir()
	cfg := testenv.WriteFile(t, dir, "fleetwatch.yml", "rules:\n  pack:\n    node_ready_ratio: 2\n")
	code, _, errOut = runRules(t, "", "lint", "--pack", "--config.file", cfg)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "node_ready_ratio")
}

func TestRulesExport(t *testing.T) {
	dir := t.TempDir()
	// The default configuration file of the working directory sets the thresholds.
	testenv.WriteFile(t, dir, "fleetwatch.yml", "rules:\n  pack:\n    node_ready_ratio: 0.75\n")
	code, out, errOut := runRules(t, dir, "export", "--namespace", "monitoring", "--label", "release=kps")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "with the thresholds of fleetwatch.yml")
	var doc struct {
		Kind     string `yaml:"kind"`
		Metadata struct {
			Name      string            `yaml:"name"`
			Namespace string            `yaml:"namespace"`
			Labels    map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			Groups []struct {
				Name  string `yaml:"name"`
				Rules []struct {
					Alert string `yaml:"alert"`
					Expr  string `yaml:"expr"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		} `yaml:"spec"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(out), &doc))
	require.Equal(t, "PrometheusRule", doc.Kind)
	require.Equal(t, "fleetwatch-rules", doc.Metadata.Name)
	require.Equal(t, "monitoring", doc.Metadata.Namespace)
	require.Equal(t, "kps", doc.Metadata.Labels["release"])
	var expr string
	for _, g := range doc.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "FleetClusterNodesNotReady" {
				expr = r.Expr
			}
		}
	}
	require.Contains(t, expr, "< 0.75")

	outFile := filepath.Join(dir, "member.yml")
	code, out, errOut = runRules(t, dir, "export", "--member", "-o", outFile)
	require.Equal(t, 0, code, errOut)
	require.Empty(t, out)
	require.Contains(t, errOut, "rule(s) that only make sense on the global view")
	b, err := os.ReadFile(outFile)
	require.NoError(t, err)
	require.NotContains(t, string(b), "alert: FleetClusterSilent")
	require.Contains(t, string(b), "alert: FleetClusterNodesNotReady")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "Fleet_Rules"}, `--name: "Fleet_Rules" is not a valid object name`},
		{[]string{"--namespace", "a.b"}, `--namespace: "a.b" is not a valid namespace`},
		{[]string{"--label", "a=b c"}, `--label: label "a": value "b c"`},
		{[]string{"--config.file", filepath.Join(dir, "nope.yml")}, "read config: open " + filepath.Join(dir, "nope.yml")},
	} {
		code, _, errOut := runRules(t, dir, append([]string{"export"}, tc.args...)...)
		require.Equal(t, 1, code)
		require.Contains(t, errOut, tc.want)
	}
}

// writeHistory writes 3h of node conditions for clusters a and b into a TSDB, with 3 of
// cluster a's 10 nodes NotReady from 01:00 to 01:30.
func writeHistory(t *testing.T) (dir string, start time.Time) {
	t.Helper()
	dir = t.TempDir()
	start = rulesNow.Add(-3 * time.Hour)
	db, err := tsdb.Open(dir, nil, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	for ts := start; !ts.After(rulesNow); ts = ts.Add(15 * time.Second) {
		app := db.Appender(context.Background())
		for _, c := range []string{"a", "b"} {
			for n := range 10 {
				down := c == "a" && n < 3 && !ts.Before(start.Add(time.Hour)) && ts.Before(start.Add(90*time.Minute))
				for status, v := range map[string]bool{"true": !down, "false": down} {
					lset := labels.FromStrings("__name__", "kube_node_status_condition", "cluster", c, "job", "kube-state-metrics",
						"node", fmt.Sprintf("n%d", n), "condition", "Ready", "status", status)
					val := 0.0
					if v {
						val = 1
					}
					_, err := app.Append(0, lset, timestamp.FromTime(ts), val)
					require.NoError(t, err)
				}
			}
		}
		require.NoError(t, app.Commit())
	}
	return dir, start
}

func TestRulesBacktest(t *testing.T) {
	tsdbDir, start := writeHistory(t)
	dir := t.TempDir()
	user := testenv.WriteFile(t, dir, "user.yml", `groups:
  - name: user
    rules:
      - alert: AnyNodeNotReady
        expr: sum by (cluster) (kube_node_status_condition{status="false"}) > 0
`)
	code, out, errOut := runRules(t, dir, "backtest", "--storage.tsdb.path", tsdbDir,
		"--from", strconv.FormatInt(start.Unix(), 10), "--to", "now", user)
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^FleetClusterNodesNotReady\s+a\s+1\s+29m\d*s?\s+29m\d*s?\s+0\s+0$`, out)
	require.Regexp(t, `(?m)^AnyNodeNotReady\s+a\s+1\s+30m\d*s?\s`, out)
	require.NotRegexp(t, `(?m)^\S+\s+b\s`, out)
	require.Contains(t, errOut, "steps of 15s")
	require.NotContains(t, errOut, "\r", "no progress bar when stderr is not a terminal")

	code, out, errOut = runRules(t, dir, "backtest", "--storage.tsdb.path", tsdbDir, "--no-pack",
		"--from=-3h", "--interval", "1m", "--format", "json", user)
	require.Equal(t, 0, code, errOut)
	var rep struct {
		IntervalSeconds float64 `json:"interval_seconds"`
		Steps           int     `json:"steps"`
		Alerts          []struct {
			Alert   string `json:"alert"`
			Cluster string `json:"cluster"`
			Fired   int    `json:"fired"`
		} `json:"alerts"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	require.Equal(t, 60.0, rep.IntervalSeconds)
	require.Equal(t, 181, rep.Steps)
	require.Len(t, rep.Alerts, 1)
	require.Equal(t, "AnyNodeNotReady", rep.Alerts[0].Alert)
	require.Equal(t, 1, rep.Alerts[0].Fired)

	// A range without data is not an error, but worth a warning.
	code, _, errOut = runRules(t, dir, "backtest", "--storage.tsdb.path", tsdbDir, "--from", "2020-01-01T00:00:00Z", "--to", "2020-01-01T01:00:00Z")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, tsdbDir+" holds no samples between --from and --to")

	// The configuration's rule files are replayed too; a file also named on the command line
	// only once.
	cfg := testenv.WriteFile(t, t.TempDir(), "fleetwatch.yml", "rules:\n  rule_files: ["+user+"]\n")
	code, out, errOut = runRules(t, dir, "backtest", "--storage.tsdb.path", tsdbDir, "--no-pack", "--config.file", cfg,
		"--from=-3h", user)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, 1, strings.Count(out, "AnyNodeNotReady"), out)
	require.Contains(t, errOut, "1 rules in 1 groups")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "yesterday"}, `--from: "yesterday": not a time`},
		{[]string{"--from=-1h", "--to=-2h"}, "--to (2025-03-01T01:00:00Z) is before --from (2025-03-01T02:00:00Z)"},
		{[]string{"--from=-1h", "--interval", "0s"}, "--interval: must be positive"},
		{[]string{"--from=-1h", "--storage.tsdb.path", dir}, "is not a TSDB directory"},
		{[]string{"--from=-1h", "--no-pack"}, "nothing to replay"},
		{[]string{"--from=-1h", filepath.Join(dir, "missing.yml")}, "read rule file: open " + filepath.Join(dir, "missing.yml")},
	} {
		args := append([]string{"backtest"}, tc.args...)
		if !strings.Contains(strings.Join(tc.args, " "), "--storage.tsdb.path") {
			args = append(args, "--storage.tsdb.path", tsdbDir)
		}
		code, _, errOut := runRules(t, dir, args...)
		require.Equal(t, 1, code, errOut)
		require.Contains(t, errOut, tc.want)
	}
}

func TestProgressBar(t *testing.T) {
	var buf bytes.Buffer
	p := &progressBar{w: &buf, start: time.Now().Add(-time.Second)}
	p.update(1, 4, rulesNow)
	p.update(2, 4, rulesNow) // within 100ms of the last: skipped
	p.update(4, 4, rulesNow)
	p.finish()
	require.Equal(t, "\r[=======                       ]  25%  2025-03-01T03:00:00Z, 3s left\x1b[K"+
		"\r[==============================] 100%  2025-03-01T03:00:00Z\x1b[K\r\x1b[K", buf.String())
}
