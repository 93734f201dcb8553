package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/schedule"
)

// fixedView answers the snapshot's queries for two fresh clusters, eu-1 (40 cores, 10
// requested) and us-1 (8 cores, 7 requested).
func fixedView(now time.Time) schedule.QueryFunc {
	values := map[string][2]float64{
		schedule.QueryAllocatableCPU:    {40, 8},
		schedule.QueryAllocatableMemory: {160 << 30, 32 << 30},
		schedule.QueryRequestedCPU:      {10, 7},
		schedule.QueryRequestedMemory:   {40 << 30, 8 << 30},
		schedule.QueryReadyRatio:        {1, 1},
		schedule.QueryLastIngest:        {float64(now.Unix()), float64(now.Unix())},
	}
	return func(_ context.Context, q string, _ time.Time) (promql.Vector, error) {
		v, ok := values[q]
		if !ok {
			return nil, nil // the what-if's workload queries: no pods
		}
		return promql.Vector{{Metric: labels.FromStrings("cluster", "eu-1"), F: v[0]}, {Metric: labels.FromStrings("cluster", "us-1"), F: v[1]}}, nil
	}
}

func TestScheduleCommand(t *testing.T) {
	now := time.Now()
	cfg := &config.Config{
		Clusters: []*config.ClusterConfig{{Name: "eu-1", Labels: map[string]string{"region": "eu"}}, {Name: "us-1", Labels: map[string]string{"region": "us"}}},
		Rules:    config.DefaultRules, Schedule: config.DefaultSchedule,
	}
	cfg.Schedule.StaleAfter, cfg.Schedule.RefreshInterval = model.Duration(time.Hour), model.Duration(time.Minute)
	svc, err := schedule.New(schedule.Options{Source: schedule.Source{Query: fixedView(now)}, Settings: scheduleSettings(cfg)})
	require.NoError(t, err)
	require.NoError(t, svc.Refresh(t.Context()))
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)

	run := func(args ...string) (string, error) {
		app := kingpin.New("fleetwatch", "")
		c := newScheduleCmd(app)
		cmd, err := app.Parse(append([]string{"schedule", "--url=" + srv.URL}, args...))
		require.NoError(t, err)
		var out strings.Builder
		err = c.do(t.Context(), cmd, &out)
		return out.String(), err
	}
	out, err := run("place", "--replicas=4", "--cpu=500m", "--memory=1Gi", "--weight", "cost=0")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^eu-1\s+4\s+1\s`, out)
	require.Regexp(t, `(?m)^us-1\s+0\s+-\s+-\s+0\s.*filtered: fits 0 of 1`, out)

	// 8 x 0.85 - 7 < 0.5: us-1 fits nothing; 60 replicas do not fit eu-1's 24 free cores.
	out, err = run("place", "--replicas=60", "--cpu=500m")
	require.EqualError(t, err, "only 48 of 60 replicas fit within the 85% ceiling on the 1 cluster(s) that pass every constraint (HTTP 422, unsatisfiable)")
	require.Contains(t, out, "no placement: only 48 of 60 replicas fit")
	require.Regexp(t, `us-1\s+0\s+-\s+-\s+0\s+0\.00\s.*filtered: fits 0 of 1 replicas`, out)

	_, err = run("place", "--replicas=1", "--cpu=1", "--compliance=hipaa")
	require.ErrorContains(t, err, `constraints.compliance: "hipaa" is not known; known: (none) (HTTP 400, bad_data)`)

	out, err = run("whatif", "--fail=us-1")
	require.NoError(t, err)
	require.Contains(t, out, "if us-1 fail(s): 0 pods of 0 workloads")
	require.Regexp(t, `us-1\s+FAILED`, out)
}
