package schedule

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

func TestWhatIf(t *testing.T) {
	// eu-1 fails. eu-2 has 85-50 = 35 cores free below the ceiling, us-1 has 85-80 = 5, us-2
	// is stale and takes nothing.
	s := snap(cl("eu-1", "eu", 100, 30, 100, 30, 0.03), cl("eu-2", "eu", 100, 50, 100, 10, 0.03),
		cl("us-1", "us", 100, 80, 100, 10, 0.03), cl("us-2", "us", 100, 0, 100, 0, 0.03))
	s.Clusters[3].LastIngest = t0.Add(-time.Hour)
	ws := []Workload{
		{Cluster: "eu-1", Namespace: "shop", Kind: "Deployment", Name: "api", Pods: 10, CPU: 20, Memory: 10 * gib},
		{Cluster: "eu-1", Namespace: "shop", Kind: "Deployment", Name: "web", Pods: 4, CPU: 8, Memory: 4 * gib},
		{Cluster: "eu-1", Namespace: "ops", Kind: "Pod", Name: "debug", Pods: 1, CPU: 2, Memory: 0},
		{Cluster: "eu-2", Namespace: "shop", Kind: "Deployment", Name: "api", Pods: 10, CPU: 20, Memory: 10 * gib}, // not failing
	}
	res, err := WhatIf(s, WhatIfRequest{Fail: []string{"eu-1"}, Weights: config.DefaultWeights}, ws)
	require.NoError(t, err)
	require.True(t, res.Absorbed, res.Summary)
	require.Equal(t, Totals{Workloads: 3, Pods: 15, CPU: 30, Memory: 14 * gib}, res.Moved)
	require.Equal(t, Totals{}, res.Unplaced)
	require.Equal(t, []string{"eu-1"}, res.Failed)
	// Biggest first: api, web, debug.
	require.Equal(t, "api", res.Workloads[0].Name)
	require.Equal(t, "web", res.Workloads[1].Name)
	require.Equal(t, "debug", res.Workloads[2].Name)
	received := 0
	for _, c := range res.Clusters {
		received += c.ReceivedReplicas
		switch c.Cluster {
		case "eu-1":
			require.True(t, c.Failed)
			require.Zero(t, c.RequestedCPUAfter)
		case "us-2":
			require.Zero(t, c.ReceivedReplicas)
			require.Equal(t, []string{"stale: last data 1h0m0s ago (placement needs data newer than 2m0s)"}, c.Filtered.Strings())
		default:
			// Never above the ceiling; the moved requests land on the receivers.
			require.False(t, c.SaturationAboveCeiling, c.Cluster)
			require.LessOrEqual(t, c.CPUSaturationAfter, 0.85+1e-9, c.Cluster)
			require.InDelta(t, c.RequestedCPUBefore+c.ReceivedCPU, c.RequestedCPUAfter, 1e-9)
		}
	}
	require.Equal(t, 15, received)
	// The surviving fleet (eu-2, us-1, us-2: 300 cores) goes from 130 to 160 requested.
	require.InDelta(t, 130.0/300, res.Fleet.CPUSaturationBefore, 1e-9)
	require.InDelta(t, 160.0/300, res.Fleet.CPUSaturationAfter, 1e-9)
	require.InDelta(t, 40, res.Fleet.FreeCPUBefore, 1e-9, "eu-2 35 + us-1 5; the stale us-2 does not count")
	require.InDelta(t, 10, res.Fleet.FreeCPUAfter, 1e-9)
	require.Contains(t, res.Summary, "the rest of the fleet absorbs them all")

	// Failing eu-2 as well: 50 + 30 cores move, 5 fit.
	res, err = WhatIf(s, WhatIfRequest{Fail: []string{"eu-2", "eu-1"}, Weights: config.DefaultWeights}, ws)
	require.NoError(t, err)
	require.False(t, res.Absorbed)
	require.Equal(t, []string{"eu-1", "eu-2"}, res.Failed)
	require.Equal(t, 4, res.Moved.Workloads)
	placed := 0
	for _, w := range res.Workloads {
		for _, p := range w.Placements {
			require.Equal(t, "us-1", p.Cluster)
			placed += p.Replicas
		}
		require.Equal(t, w.Replicas, w.Unplaced+sumReplicas(w.Placements))
	}
	require.Equal(t, 25-res.Unplaced.Pods, placed)
	us1 := res.Clusters[2]
	require.Equal(t, "us-1", us1.Cluster)
	require.LessOrEqual(t, us1.RequestedCPUAfter, 85+1e-9)
	require.Contains(t, res.Summary, "find no room below the 85% ceiling")
}

func sumReplicas(ps []Placement) int {
	n := 0
	for _, p := range ps {
		n += p.Replicas
	}
	return n
}

func TestWhatIfValidation(t *testing.T) {
	s := snap(cl("eu-1", "eu", 100, 30, 100, 30, 0.03))
	for _, tc := range []struct {
		req  WhatIfRequest
		want string
	}{
		{WhatIfRequest{Weights: config.DefaultWeights}, "fail: name at least one cluster"},
		{WhatIfRequest{Fail: []string{"mars-1"}, Weights: config.DefaultWeights}, `fail: cluster "mars-1" is not known; known: eu-1`},
		{WhatIfRequest{Fail: []string{"eu-1"}, Constraints: Constraints{Regions: []string{"moon"}}, Weights: config.DefaultWeights}, `constraints.regions: "moon" is not known`},
		{WhatIfRequest{Fail: []string{"eu-1"}, Weights: config.Weights{Cost: -1}}, "weights.cost: must be a finite number >= 0"},
	} {
		_, err := WhatIf(s, tc.req, nil)
		require.True(t, errors.Is(err, ErrBadRequest), err)
		require.ErrorContains(t, err, tc.want)
	}
}
