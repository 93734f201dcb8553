package backtest

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkBacktest24h replays the pack over a day of 3 clusters × 50 nodes at 15s steps,
// with 10 pods a node:
//
//	go test -run '^$' -bench Backtest24h -benchtime 1x ./rules/backtest/
//
// BACKTEST_PODS_PER_NODE and BACKTEST_HOURS change the history; BACKTEST_STEPWISE=1 evaluates
// step by step.
func BenchmarkBacktest24h(b *testing.B) {
	pods, hours := envInt(b, "BACKTEST_PODS_PER_NODE", 10), envInt(b, "BACKTEST_HOURS", 24)
	stepwise := os.Getenv("BACKTEST_STEPWISE") == "1"
	engine := os.Getenv("BACKTEST_ENGINE")
	f := &fleet{
		clusters: []string{"eu-1", "eu-2", "us-1"}, nodes: 50, podsPerNode: pods,
		from: t0, to: t0.Add(time.Duration(hours)*time.Hour - 15*time.Second), step: 15 * time.Second,
		notReady: func(c string, n int, ts time.Time) bool {
			down := t0.Add(time.Duration(hours) * time.Hour / 4)
			return c == "eu-1" && n < 10 && !ts.Before(down) && ts.Before(down.Add(20*time.Minute))
		},
	}
	start := time.Now()
	dir := writeFleetBlocks(b, f)
	b.Logf("wrote %d series × %d samples in %s", len(f.ss), int(f.to.Sub(f.from)/f.step)+1, time.Since(start))
	files := packRuleFiles(b)
	b.ResetTimer()
	for range b.N {
		rep, err := Run(context.Background(), Options{Dir: dir, Files: files, From: t0, To: f.to, Interval: 15 * time.Second, Stepwise: stepwise, Engine: engine})
		require.NoError(b, err)
		a, ok := find(rep, "FleetClusterNodesNotReady", "eu-1")
		require.True(b, ok)
		require.Equal(b, 1, a.Fired)
		b.Logf("%d steps, %d rules, stepwise %v: %s", rep.Steps, rep.Rules, rep.Stepwise, rep.Elapsed)
	}
}

func envInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	require.NoError(b, err, name)
	return n
}
