package backtest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/rules/lint"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// t0 is the start of the synthetic history, on a 2h block boundary.
var t0 = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)

// TestNodesNotReady is the acceptance test: 3h15m of two clusters, where 3 of cluster a's 10
// nodes are NotReady for 20 minutes across a block boundary (01:50 to 02:10, in a block and in
// the head), and 2 of cluster b's nodes are NotReady for 30s, shorter than the pack's "for".
// The TSDB stays open for writing, as it is while fleetwatch runs.
func TestNodesNotReady(t *testing.T) {
	const notReadyFor = 20 * time.Minute
	aFrom := t0.Add(110 * time.Minute)
	bFrom := t0.Add(60 * time.Minute)
	f := &fleet{
		clusters: []string{"a", "b"}, nodes: 10, podsPerNode: 2,
		from: t0, to: t0.Add(3*time.Hour + 15*time.Minute), step: 15 * time.Second,
		notReady: func(c string, n int, ts time.Time) bool {
			switch c {
			case "a":
				return n < 3 && !ts.Before(aFrom) && ts.Before(aFrom.Add(notReadyFor))
			case "b":
				return n < 2 && !ts.Before(bFrom) && ts.Before(bFrom.Add(30*time.Second))
			}
			return false
		},
		// What a live evaluator recorded for a cluster c that sends nothing else: if the
		// replay read it, FleetClusterNodesNotReady would fire for c.
		extra: func(time.Time) []sample {
			return []sample{{lset: labels.FromStrings("__name__", "cluster:kube_node_ready:ratio", "cluster", "c"), v: 0.5}}
		},
	}
	dir := openFleetTSDB(t, f)
	blocks, err := filepath.Glob(filepath.Join(dir, "*", "meta.json"))
	require.NoError(t, err)
	require.NotEmpty(t, blocks, "part of the history is in a block")

	var progress []int
	rep, err := Run(context.Background(), Options{
		Dir: dir, Files: packRuleFiles(t), From: t0, To: t0.Add(3 * time.Hour), Interval: 15 * time.Second,
		Progress: func(done, total int, _ time.Time) { progress = append(progress, done, total) },
	})
	require.NoError(t, err)
	require.Equal(t, 3*240+1, rep.Steps)
	require.Equal(t, []int{1, rep.Steps}, progress[:2])
	require.Equal(t, []int{rep.Steps, rep.Steps}, progress[len(progress)-2:])
	require.Empty(t, rep.Failures)
	require.Positive(t, rep.RecordedSamples)
	require.False(t, rep.NoHistory)
	require.Equal(t, []string{"a", "b", "c"}, rep.Clusters)

	a, ok := find(rep, "FleetClusterNodesNotReady", "a")
	require.True(t, ok, "no FleetClusterNodesNotReady for cluster a: %+v", rep.Alerts)
	require.Equal(t, 1, a.Fired)
	hold := time.Duration(config.DefaultThresholds.NodeReadyFor)
	within(t, notReadyFor-hold, a.Firing, rep.Interval, "firing time")
	require.Equal(t, a.Firing, a.Longest)
	require.Zero(t, a.PendingOnly)
	require.Zero(t, a.ActiveAtEnd)
	require.Len(t, a.Episodes, 1)
	within(t, 0, a.Episodes[0].ActiveAt.Sub(aFrom), rep.Interval, "went pending")
	within(t, 0, a.Episodes[0].ResolvedAt.Sub(aFrom.Add(notReadyFor)), rep.Interval, "resolved")
	require.Equal(t, "critical", a.Episodes[0].Labels.Get("severity"))

	b, ok := find(rep, "FleetClusterNodesNotReady", "b")
	require.True(t, ok, "cluster b's 30s went pending: %+v", rep.Alerts)
	require.Zero(t, b.Fired)
	require.Zero(t, b.Firing)
	require.Equal(t, 1, b.PendingOnly)

	_, ok = find(rep, "FleetClusterNodesNotReady", "c")
	require.False(t, ok, "the replay read the stored output of a rule it replays")

	// Nothing else was ever pending: the rest of the fleet is healthy, and the silent-cluster
	// rule sees fleetwatch's ingest timestamps.
	for _, s := range rep.Alerts {
		if s.Alert != "FleetClusterNodesNotReady" {
			require.Empty(t, s.Episodes, "%s in cluster %q", s.Alert, s.Cluster)
			require.Empty(t, s.Cluster)
		}
	}

	var table bytes.Buffer
	require.NoError(t, rep.WriteTable(&table))
	t.Logf("%d steps in %s:\n%s", rep.Steps, rep.Elapsed, table.String())
	require.Regexp(t, `(?m)^FleetClusterNodesNotReady\s+a\s+1\s+19m\d*s?\s+19m\d*s?\s+0\s+0$`, table.String())
	require.Regexp(t, `(?m)^FleetClusterNodesNotReady\s+b\s+0\s+-\s+-\s+1\s+0$`, table.String())
	require.Regexp(t, `(?m)^FleetClusterSilent\s+-\s+0\s+-\s+-\s+0\s+0$`, table.String())

	var js bytes.Buffer
	require.NoError(t, rep.WriteJSON(&js))
	var got struct {
		Steps  int `json:"steps"`
		Alerts []struct {
			Alert         string  `json:"alert"`
			Cluster       string  `json:"cluster"`
			Fired         int     `json:"fired"`
			FiringSeconds float64 `json:"firing_seconds"`
			Episodes      []struct {
				Labels     map[string]string `json:"labels"`
				FiredAt    *time.Time        `json:"fired_at"`
				ResolvedAt *time.Time        `json:"resolved_at"`
			} `json:"episodes"`
		} `json:"alerts"`
	}
	require.NoError(t, json.Unmarshal(js.Bytes(), &got), js.String())
	require.Equal(t, rep.Steps, got.Steps)
	require.Len(t, got.Alerts, len(rep.Alerts))
	for _, ja := range got.Alerts {
		if ja.Alert == "FleetClusterNodesNotReady" && ja.Cluster == "a" {
			require.Equal(t, 1, ja.Fired)
			require.Equal(t, a.Firing.Seconds(), ja.FiringSeconds)
			require.Len(t, ja.Episodes, 1)
			require.Equal(t, "a", ja.Episodes[0].Labels["cluster"])
			require.NotNil(t, ja.Episodes[0].FiredAt)
			require.NotNil(t, ja.Episodes[0].ResolvedAt)
		}
	}
}

func TestRuleFailuresAndGroupIntervals(t *testing.T) {
	f := &fleet{clusters: []string{"a"}, nodes: 3, from: t0, to: t0.Add(30 * time.Minute), step: 15 * time.Second}
	dir := openFleetTSDB(t, f)
	const rules = `groups:
  - name: slow
    interval: 1m
    rules:
      # Many-to-many: fails at every evaluation.
      - alert: Broken
        expr: kube_node_status_condition * on (cluster) kube_node_status_condition
      - alert: AlwaysPending
        expr: count by (cluster) (kube_node_status_condition) > 0
        for: 1h
`
	rep, err := Run(context.Background(), Options{
		Dir: dir, Files: []RuleFile{{Name: "user.yml", Content: []byte(rules)}},
		From: t0, To: t0.Add(20 * time.Minute), Interval: 15 * time.Second,
	})
	require.NoError(t, err)
	require.Len(t, rep.Failures, 1)
	fl := rep.Failures[0]
	require.Equal(t, "Broken", fl.Rule)
	require.Equal(t, "user.yml", fl.File)
	require.Equal(t, 21, fl.Evaluations, "a 1m group is evaluated every 4th step of 15s")
	require.Equal(t, 21, fl.Failed)
	require.Contains(t, fl.LastError, "many-to-many")

	p, ok := find(rep, "AlwaysPending", "a")
	require.True(t, ok)
	require.Zero(t, p.Fired)
	require.Zero(t, p.PendingOnly)
	require.Equal(t, 1, p.ActiveAtEnd, "still pending at the end")
}

// TestBlocksOnly reads a TSDB with blocks and no WAL, as a copy or a backfill has.
func TestBlocksOnly(t *testing.T) {
	f := &fleet{
		clusters: []string{"a"}, nodes: 4, from: t0, to: t0.Add(4*time.Hour - 15*time.Second), step: 15 * time.Second,
		notReady: func(_ string, n int, ts time.Time) bool {
			return n == 0 && !ts.Before(t0.Add(time.Hour)) && ts.Before(t0.Add(3*time.Hour))
		},
	}
	dir := writeFleetBlocks(t, f)
	rep, err := Run(context.Background(), Options{Dir: dir, Files: packRuleFiles(t), From: t0, To: f.to, Interval: time.Minute})
	require.NoError(t, err)
	a, ok := find(rep, "FleetClusterNodesNotReady", "a")
	require.True(t, ok)
	require.Equal(t, 1, a.Fired)
	within(t, 2*time.Hour-time.Duration(config.DefaultThresholds.NodeReadyFor), a.Firing, time.Minute, "firing time")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		require.False(t, strings.HasPrefix(e.Name(), "tmp_dbro_sandbox"), "the sandbox is removed")
		require.NotEqual(t, "wal", e.Name(), "the replay does not create a WAL")
	}
}

func TestRunErrors(t *testing.T) {
	f := &fleet{clusters: []string{"a"}, nodes: 1, from: t0, to: t0.Add(time.Minute), step: 15 * time.Second}
	dir := openFleetTSDB(t, f)
	good := []RuleFile{{Name: "r.yml", Content: []byte("groups:\n  - name: g\n    rules:\n      - record: a\n        expr: up\n")}}
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{name: "no dir", o: Options{Files: good, From: t0, To: t0, Interval: time.Second}, want: "backtest: Dir (the TSDB directory) is required"},
		{name: "no files", o: Options{Dir: dir, From: t0, To: t0, Interval: time.Second}, want: "backtest: no rule files to replay"},
		{name: "no interval", o: Options{Dir: dir, Files: good, From: t0, To: t0}, want: "backtest: the interval must be a positive number of milliseconds, got 0s"},
		{name: "reversed", o: Options{Dir: dir, Files: good, From: t0.Add(time.Hour), To: t0, Interval: time.Second}, want: "backtest: the end of the range (2025-03-01T00:00:00Z) is before its start (2025-03-01T01:00:00Z)"},
		{name: "missing dir", o: Options{Dir: filepath.Join(dir, "nope"), Files: good, From: t0, To: t0, Interval: time.Second}, want: "open TSDB: open " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{name: "not a TSDB", o: Options{Dir: t.TempDir(), Files: good, From: t0, To: t0, Interval: time.Second}, want: "is not a TSDB directory: it has neither a wal directory nor blocks"},
		{
			name: "bad rule file",
			o: Options{Dir: dir, From: t0, To: t0, Interval: time.Second, Files: []RuleFile{
				{Name: "bad.yml", Content: []byte("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(\n")},
			}},
			want: `bad.yml:5: group "g", rule 1, "A": could not parse expression`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(context.Background(), tc.o)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
	t.Run("parse error type", func(t *testing.T) {
		_, err := Run(context.Background(), Options{Dir: dir, From: t0, To: t0, Interval: time.Second, Files: []RuleFile{{Name: "x.yml", Content: []byte("groups: [")}}})
		var pe *lint.ParseError
		require.ErrorAs(t, err, &pe)
	})
	t.Run("no history in the range", func(t *testing.T) {
		rep, err := Run(context.Background(), Options{Dir: dir, Files: good, From: t0.Add(-time.Hour), To: t0.Add(-time.Minute), Interval: time.Minute})
		require.NoError(t, err)
		require.True(t, rep.NoHistory)
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := Run(ctx, Options{Dir: dir, Files: good, From: t0, To: t0.Add(time.Minute), Interval: 15 * time.Second})
		require.ErrorIs(t, err, context.Canceled)
		require.Contains(t, err.Error(), "backtest interrupted at 2025-03-01T00:00:00Z")
	})
}

func TestParseTime(t *testing.T) {
	now := time.Date(2025, 3, 2, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		err  string
	}{
		{in: "now", want: now},
		{in: "-24h", want: now.Add(-24 * time.Hour)},
		{in: "now-1h30m", want: now.Add(-90 * time.Minute)},
		{in: "-7d", want: now.Add(-7 * 24 * time.Hour)},
		{in: "2025-03-01T10:00:00Z", want: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)},
		{in: "2025-03-01T10:00:00.5+01:00", want: time.Date(2025, 3, 1, 9, 0, 0, 5e8, time.UTC)},
		{in: "1740823200", want: time.Unix(1740823200, 0)},
		{in: "1740823200.25", want: time.Unix(1740823200, 25e7)},
		{in: "-1x", err: `"-1x": not a duration before now`},
		{in: "yesterday", err: `"yesterday": not a time; use RFC 3339`},
		{in: "2025-03-01", err: `"2025-03-01": not a time`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTime(tc.in, now)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.True(t, tc.want.Equal(got), "got %s, want %s", got, tc.want)
		})
	}
}

// TestStepwiseAgrees checks that evaluating the rules ahead with range queries reports exactly
// what evaluating them step by step does, on history with crash loops (series that appear and
// go stale), NotReady nodes, a user rule file with a slower group, a query offset, a failing
// rule and a recording rule reading the pack's output.
func TestStepwiseAgrees(t *testing.T) {
	f := &fleet{
		clusters: []string{"a", "b", "c"}, nodes: 6, podsPerNode: 3,
		from: t0, to: t0.Add(3 * time.Hour), step: 15 * time.Second,
		notReady: func(c string, n int, ts time.Time) bool {
			m := int(ts.Sub(t0) / time.Minute)
			return c == "b" && n == 0 && (m/7)%3 == 0
		},
		crashing: func(c string, n, p int, ts time.Time) bool {
			m := int(ts.Sub(t0) / time.Minute)
			switch c {
			case "a":
				return p == 0 && m >= 30 && m < 80
			case "c":
				return n < 3 && (m/4)%5 == 0
			}
			return false
		},
	}
	dir := openFleetTSDB(t, f)
	const user = `groups:
  - name: user-slow
    interval: 1m
    query_offset: 30s
    rules:
      - record: cluster:crashloop_restarts:max10m
        expr: max_over_time(cluster:kube_pod_container_crashloop_restarts_per_minute:rate2m[10m])
      - alert: CrashLoopsLinger
        expr: cluster:crashloop_restarts:max10m > 1
        for: 5m
        labels:
          severity: warning
          value: "{{ $value }}"
  - name: user-fast
    rules:
      - alert: FewReadyNodes
        expr: cluster:kube_node_ready:ratio < 0.95
        for: 30s
        keep_firing_for: 1m
      - alert: Broken
        expr: sum by (cluster) (kube_node_status_condition) * on (cluster) group_left kube_node_status_condition
`
	files := append(packRuleFiles(t), RuleFile{Name: "user.yml", Content: []byte(user)})
	run := func(stepwise bool, engine string) *Report {
		rep, err := Run(context.Background(), Options{
			Dir: dir, Files: files, From: t0.Add(10 * time.Minute), To: t0.Add(3 * time.Hour), Interval: 15 * time.Second,
			Stepwise: stepwise, Engine: engine,
		})
		require.NoError(t, err)
		require.Equal(t, stepwise, rep.Stepwise, rep.StepwiseReason)
		return rep
	}
	ahead, stepwise := run(false, EnginePrometheus), run(true, EnginePrometheus)
	var table bytes.Buffer
	require.NoError(t, ahead.WriteTable(&table))
	t.Logf("ahead %s, stepwise %s:\n%s", ahead.Elapsed, stepwise.Elapsed, table.String())

	require.Equal(t, stepwise.RecordedSamples, ahead.RecordedSamples)
	require.Equal(t, stepwise.Failures, ahead.Failures)
	require.Equal(t, stepwise.Alerts, ahead.Alerts)

	// The view's default engine agrees too, ahead and step by step.
	for _, sw := range []bool{false, true} {
		th := run(sw, EngineThanos)
		t.Logf("thanos engine, stepwise %v: %s", sw, th.Elapsed)
		require.Equal(t, ahead.RecordedSamples, th.RecordedSamples)
		require.Equal(t, ahead.Alerts, th.Alerts)
		require.Len(t, th.Failures, 1)
		require.Equal(t, ahead.Failures[0].Failed, th.Failures[0].Failed)
	}

	// The history is not trivial: both kinds of alert fire, and the failing rule fails.
	for _, want := range []struct{ alert, cluster string }{
		{"FleetClusterNodesNotReady", "b"}, {"FleetClusterCrashLooping", "a"}, {"FleetWorkloadCrashLooping", "c"},
		{"CrashLoopsLinger", "a"}, {"FewReadyNodes", "b"},
	} {
		s, ok := find(ahead, want.alert, want.cluster)
		require.True(t, ok, "%s in cluster %s", want.alert, want.cluster)
		require.Positive(t, s.Fired, "%s in cluster %s", want.alert, want.cluster)
	}
	require.Len(t, ahead.Failures, 1)
	require.Equal(t, "Broken", ahead.Failures[0].Rule)
}

func TestPrecomputable(t *testing.T) {
	for _, tc := range []struct {
		name, rules, why string
	}{
		{name: "forward", rules: "- record: a\n  expr: sum by (cluster) (x)\n- alert: A\n  expr: a > 1"},
		{name: "backward", rules: "- alert: A\n  expr: a > 1\n- record: a\n  expr: sum by (cluster) (x)", why: "a rule reads a, which it or a rule evaluated after it records"},
		{name: "itself", rules: "- record: a\n  expr: a + 1", why: "a rule reads a, which it or a rule evaluated after it records"},
		{name: "no name", rules: "- alert: A\n  expr: count({job=\"x\"}) > 1\n- record: a\n  expr: sum by (cluster) (x)", why: "a rule selects series without naming the metric"},
		{name: "no name, nothing recorded after", rules: "- record: a\n  expr: sum by (cluster) (x)\n- alert: A\n  expr: count({job=\"x\"}) > 1"},
		{name: "ALERTS", rules: "- alert: A\n  expr: ALERTS{alertname=\"B\"}", why: "rule A in f.yml reads ALERTS"},
		{name: "@ end()", rules: "- alert: A\n  expr: x @ end() > 1", why: "rule A in f.yml uses @ start() or @ end()"},
		{name: "@ timestamp", rules: "- alert: A\n  expr: x @ 100 > 1"},
		{name: "limit", rules: "limit: 10\n  rules:\n- alert: A\n  expr: x > 1", why: `group "g" in f.yml has a limit`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			content := "groups:\n  - name: g\n    rules:\n" + indent(tc.rules, "      ")
			if strings.HasPrefix(tc.rules, "limit:") {
				content = "groups:\n  - name: g\n    " + strings.Replace(indent(tc.rules, "      ")[6:], "\n        rules:\n", "\n    rules:\n", 1)
			}
			rf, err := lint.Parse("f.yml", []byte(content))
			require.NoError(t, err, content)
			ok, why := precomputable([]*lint.RuleFile{rf})
			require.Equal(t, tc.why == "", ok, why)
			if tc.why != "" {
				require.Contains(t, why, tc.why)
			}
		})
	}
}

func indent(s, prefix string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n") + "\n"
}
