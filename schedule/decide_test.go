package schedule

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

const gib = 1 << 30

// cl is a healthy cluster with fresh data: cpu cores and memory GiB allocatable, the given
// requests.
func cl(name, region string, allocCPU, reqCPU, allocMemGiB, reqMemGiB, cost float64) Cluster {
	return Cluster{
		Name: name, Region: region, Provider: "aws", Tier: "prod", CostPerCPUHour: cost,
		HasCapacity: true, AllocatableCPU: allocCPU, RequestedCPU: reqCPU,
		AllocatableMemory: allocMemGiB * gib, RequestedMemory: reqMemGiB * gib,
		ReadyRatio: 1, LastIngest: t0.Add(-10 * time.Second),
	}
}

func snap(cs ...Cluster) *Snapshot {
	slices.SortFunc(cs, func(a, b Cluster) int { return strings.Compare(a.Name, b.Name) })
	return &Snapshot{At: t0, Ceiling: 0.85, StaleAfter: 2 * time.Minute, MinReadyRatio: 0.9, Clusters: cs}
}

func req(replicas int, cpu, memGiB float64) Request {
	return Request{Replicas: replicas, CPU: Quantity(cpu), Memory: Quantity(memGiB * gib), Weights: config.DefaultWeights}
}

func result(d *Decision, cluster string) ClusterResult {
	for _, r := range d.Clusters {
		if r.Cluster == cluster {
			return r
		}
	}
	panic("no result for " + cluster)
}

func TestFilters(t *testing.T) {
	base := func() Cluster { return cl("c", "eu", 100, 10, 400, 40, 0.03) }
	for _, tc := range []struct {
		name   string
		mutate func(c *Cluster)
		req    func(r *Request)
		want   string // substring of the only reason; "" = candidate
	}{
		{name: "healthy and fresh", want: ""},
		{name: "stale", mutate: func(c *Cluster) { c.LastIngest = t0.Add(-3 * time.Minute) }, want: "stale: last data 3m0s ago (placement needs data newer than 2m0s)"},
		{name: "exactly at the staleness limit is fresh", mutate: func(c *Cluster) { c.LastIngest = t0.Add(-2 * time.Minute) }, want: ""},
		{name: "never sent data", mutate: func(c *Cluster) { c.LastIngest = time.Time{} }, want: "stale: no data received from it"},
		{name: "no capacity data", mutate: func(c *Cluster) { c.HasCapacity = false }, want: "no allocatable CPU and memory in the view"},
		{name: "nodes not ready", mutate: func(c *Cluster) { c.ReadyRatio = 0.8 }, want: "unhealthy: 80% of nodes Ready (minimum 90%)"},
		{name: "ready ratio at the threshold", mutate: func(c *Cluster) { c.ReadyRatio = 0.9 }, want: ""},
		{name: "ready ratio unknown is not a failure by itself", mutate: func(c *Cluster) { c.ReadyRatio = -1 }, want: ""},
		{name: "critical incident: control plane down", mutate: func(c *Cluster) {
			c.Incidents = []IncidentRef{{ID: "inc-1", Severity: "critical", Scope: "cluster", Kind: IncidentClusterDown, Title: "control plane down"}}
		}, want: "unhealthy: open critical cluster incident inc-1: control plane down"},
		{name: "critical incident: nodes NotReady", mutate: func(c *Cluster) {
			c.Incidents = []IncidentRef{{ID: "inc-2", Severity: "critical", Scope: "cluster", Kind: IncidentNodes, Title: "nodes NotReady"}}
		}, want: "unhealthy: open critical cluster incident inc-2: nodes NotReady"},
		{name: "critical incident: saturated", mutate: func(c *Cluster) {
			c.Incidents = []IncidentRef{{ID: "inc-3", Severity: "critical", Scope: "cluster", Kind: IncidentSaturation, Title: "CPU overcommit"}}
		}, want: "unhealthy: open critical cluster incident inc-3: CPU overcommit"},
		{name: "critical workload incident is not a filter", mutate: func(c *Cluster) {
			c.Incidents = []IncidentRef{{ID: "inc-4", Severity: "critical", Scope: "cluster", Kind: IncidentWorkloads, Title: "workload payments/api is failing in cluster c"}}
		}, want: ""},
		{name: "critical rollout incident is not a filter", mutate: func(c *Cluster) {
			c.Incidents = []IncidentRef{{ID: "inc-5", Severity: "critical", Scope: "fleet", Kind: IncidentRollout, Title: "likely bad rollout"}}
		}, want: ""},
		{name: "critical incident of another alert is not a filter", mutate: func(c *Cluster) {
			c.Incidents = []IncidentRef{{ID: "inc-6", Severity: "critical", Scope: "fleet", Kind: IncidentAlert, Title: "KubePersistentVolumeFillingUp"}}
		}, want: ""},
		{name: "critical incident of unknown kind is not a filter", mutate: func(c *Cluster) {
			c.Incidents = []IncidentRef{{ID: "inc-7", Severity: "critical", Scope: "cluster"}}
		}, want: ""},
		{name: "warning cluster-health incident is not a filter", mutate: func(c *Cluster) {
			c.Incidents = []IncidentRef{{ID: "inc-8", Severity: "warning", Scope: "cluster", Kind: IncidentNodes}}
		}, want: ""},
		{name: "missing compliance tag", req: func(r *Request) { r.Constraints.Compliance = []string{"pci"} }, want: `lacks compliance tag "pci"`},
		{name: "has compliance tag", mutate: func(c *Cluster) { c.Compliance = []string{"gdpr", "pci"} }, req: func(r *Request) { r.Constraints.Compliance = []string{"pci"} }, want: ""},
		{name: "region not allowed", req: func(r *Request) { r.Constraints.Regions = []string{"us"} }, want: `region "eu" not in us`},
		{name: "provider not allowed", req: func(r *Request) { r.Constraints.Providers = []string{"gcp"} }, want: `provider "aws" not in gcp`},
		{name: "tier not allowed", req: func(r *Request) { r.Constraints.Tiers = []string{"staging"} }, want: `tier "prod" not in staging`},
		{name: "excluded", req: func(r *Request) { r.Constraints.ExcludeClusters = []string{"c"} }, want: "excluded by constraints.exclude_clusters"},
		{name: "not allowed by name", req: func(r *Request) { r.Constraints.Clusters = []string{"other"} }, want: "not in constraints.clusters"},
		{name: "latency above max", mutate: func(c *Cluster) { c.LatencyMs = map[string]float64{"eu-users": 80} },
			req: func(r *Request) {
				r.Constraints.UserRegions = []string{"eu-users"}
				r.Constraints.MaxLatency = Duration(50 * time.Millisecond)
			},
			want: "latency to eu-users 80ms above max_latency 50ms"},
		{name: "latency unknown with a max", mutate: func(c *Cluster) { c.LatencyMs = map[string]float64{"us-users": 80} },
			req: func(r *Request) {
				r.Constraints.UserRegions = []string{"eu-users"}
				r.Constraints.MaxLatency = Duration(50 * time.Millisecond)
			},
			want: "latency to eu-users unknown"},
		// 100 cores x 0.85 = 85 placeable; 10 requested: 75 free; 16 x 5 = 80 does not fit.
		{name: "not enough headroom for one replica", req: func(r *Request) { r.CPU = 76 }, want: "fits 0 of 1 replicas below the 85% ceiling (free 75.00 CPU cores, 300.00 GiB memory; one replica requests 76.00 cores"},
		{name: "a replica that fills the headroom exactly fits", req: func(r *Request) { r.CPU = 75 }, want: ""},
		{name: "memory is the tight one", req: func(r *Request) { r.CPU = 0.1; r.Memory = 301 * gib }, want: "fits 0 of 1 replicas"},
		// A cluster already above the ceiling takes nothing, also a replica that asks nothing of
		// the exhausted resource (found by FuzzPlacementRequest).
		{name: "above the memory ceiling, asked for CPU only", mutate: func(c *Cluster) { c.RequestedMemory = 350 * gib },
			req: func(r *Request) { r.Memory = 0 }, want: "fits 0 of 1 replicas below the 85% ceiling (free 75.00 CPU cores, 0 B memory"},
		{name: "above the CPU ceiling, asked for memory only", mutate: func(c *Cluster) { c.RequestedCPU = 90 },
			req: func(r *Request) { r.CPU = 0 }, want: "fits 0 of 1 replicas"},
		{name: "at the ceiling exactly, asked for CPU only", mutate: func(c *Cluster) { c.RequestedMemory = 340 * gib },
			req: func(r *Request) { r.Memory = 0 }, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			other := cl("other", "us", 100, 0, 400, 0, 0.05)
			other.LatencyMs = map[string]float64{"eu-users": 10, "us-users": 10}
			other.Compliance = []string{"pci"}
			other.Provider, other.Tier = "gcp", "staging"
			if tc.mutate != nil {
				tc.mutate(&c)
			}
			r := req(1, 1, 1)
			if tc.req != nil {
				tc.req(&r)
			}
			s := snap(c, other)
			require.NoError(t, s.Validate(&r))
			got := result(s.decide(&r, nil, false), "c")
			if tc.want == "" {
				require.Empty(t, got.Filtered())
				require.NotZero(t, got.Rank)
				return
			}
			require.Len(t, got.Filtered(), 1, "%v", got.Filtered())
			require.Contains(t, got.Filtered()[0].String(), tc.want)
			require.Zero(t, got.Rank)
			require.Zero(t, got.Replicas)
			require.True(t, strings.HasPrefix(got.Why(), "filtered: "), got.Why())
		})
	}
}

func TestFilterListsEveryReason(t *testing.T) {
	c := cl("c", "eu", 10, 9, 10, 9, 0)
	c.LastIngest = time.Time{}
	c.ReadyRatio = 0.5
	r := req(1, 1, 1)
	r.Constraints.Compliance = []string{"pci"}
	s := snap(c)
	s.ComplianceTags = []string{"pci"}
	d, err := Decide(s, r)
	require.NoError(t, err)
	require.False(t, d.Feasible)
	require.Equal(t, "no cluster fits: every cluster fails a constraint (see clusters[].filtered)", d.Reason)
	require.Len(t, d.Clusters[0].Filtered(), 4, "%v", d.Clusters[0].Filtered())
}

func TestScores(t *testing.T) {
	// a: cheapest, far from users, half full. b: expensive, close, empty. c: in between.
	a := cl("a", "eu", 100, 42.5, 100, 0, 0.02)
	b := cl("b", "us", 100, 0, 100, 0, 0.06)
	c := cl("c", "ap", 50, 0, 100, 0, 0.04)
	a.LatencyMs = map[string]float64{"eu-users": 100}
	b.LatencyMs = map[string]float64{"eu-users": 10}
	c.LatencyMs = map[string]float64{"eu-users": 55}
	s := snap(a, b, c)
	r := req(1, 1, 0.1)
	r.Constraints.UserRegions = []string{"eu-users"}
	d, err := Decide(s, r)
	require.NoError(t, err)
	sa, sb, sc := result(d, "a").Scores, result(d, "b").Scores, result(d, "c").Scores
	// Cost: min-max over the candidates.
	require.InDelta(t, 100, sa.Cost, 1e-9)
	require.InDelta(t, 0, sb.Cost, 1e-9)
	require.InDelta(t, 50, sc.Cost, 1e-9)
	// Latency: min-max over the candidates.
	require.InDelta(t, 0, sa.Latency, 1e-9)
	require.InDelta(t, 100, sb.Latency, 1e-9)
	require.InDelta(t, 50, sc.Latency, 1e-9)
	// Saturation: 1 - saturation / ceiling: a is at 0.425 of 0.85 -> 50.
	require.InDelta(t, 50, sa.Saturation, 1e-9)
	require.InDelta(t, 100, sb.Saturation, 1e-9)
	// Free capacity: replicas that fit over the most any cluster fits (b: 85; a: 42; c: 42).
	require.InDelta(t, 100, sb.FreeCapacity, 1e-9)
	require.InDelta(t, 100*42.0/85, sa.FreeCapacity, 1e-9)
	require.InDelta(t, 100*42.0/85, sc.FreeCapacity, 1e-9)
	// Each is first in its own region: spread 100 for all three.
	for _, x := range []Scores{sa, sb, sc} {
		require.InDelta(t, 100, x.Spread, 1e-9)
		require.InDelta(t, (x.FreeCapacity+x.Cost+x.Latency+x.Saturation+x.Spread)/5, x.Total, 1e-9)
	}
	// b wins: close, empty, large.
	require.Equal(t, "b", d.Placements[0].Cluster)
	require.Equal(t, 1, result(d, "b").Rank)

	// Weights change the winner: only cost counts -> a.
	r.Weights = config.Weights{Cost: 1}
	d, err = Decide(s, r)
	require.NoError(t, err)
	require.Equal(t, []Placement{{Cluster: "a", Replicas: 1, Score: 100}}, d.Placements)

	// No user regions: latency is neutral (100 for all).
	r = req(1, 1, 0.1)
	d, err = Decide(s, r)
	require.NoError(t, err)
	for _, name := range []string{"a", "b", "c"} {
		require.InDelta(t, 100, result(d, name).Scores.Latency, 1e-9)
	}
}

func TestSpreadAcrossRegions(t *testing.T) {
	// Two identical clusters in eu, one slightly worse in us: with spread weighed, the second
	// pick is us, not the second eu cluster.
	s := snap(cl("eu-1", "eu", 100, 0, 100, 0, 0.03), cl("eu-2", "eu", 100, 0, 100, 0, 0.03), cl("us-1", "us", 100, 10, 100, 0, 0.03))
	r := req(4, 1, 1)
	r.Mode, r.Clusters = ModeClusters, 2
	d, err := Decide(s, r)
	require.NoError(t, err)
	require.True(t, d.Feasible)
	require.Equal(t, []Placement{{Cluster: "eu-1", Replicas: 4, Score: d.Placements[0].Score}, {Cluster: "us-1", Replicas: 4, Score: d.Placements[1].Score}}, d.Placements)
	require.InDelta(t, 50, result(d, "eu-2").Scores.Spread, 1e-9)
	require.Contains(t, result(d, "eu-2").Why(), "not picked: higher-ranked clusters were enough")

	// Without spread, the two eu clusters win.
	r.Weights.Spread = 0
	d, err = Decide(s, r)
	require.NoError(t, err)
	require.Equal(t, "eu-1", d.Placements[0].Cluster)
	require.Equal(t, "eu-2", d.Placements[1].Cluster)
}

func TestDivided(t *testing.T) {
	// Equal clusters split evenly; the remainder goes to the better rank.
	s := snap(cl("a", "eu", 100, 0, 100, 0, 0.03), cl("b", "us", 100, 0, 100, 0, 0.03), cl("c", "ap", 100, 0, 100, 0, 0.03))
	d, err := Decide(s, req(10, 1, 1))
	require.NoError(t, err)
	require.True(t, d.Feasible)
	got := map[string]int{}
	for _, p := range d.Placements {
		got[p.Cluster] = p.Replicas
	}
	require.Equal(t, map[string]int{"a": 4, "b": 3, "c": 3}, got)

	// A cluster's cap is respected; the rest goes to the others. b fits 2 (85*... small).
	s = snap(cl("a", "eu", 100, 0, 100, 0, 0.03), cl("b", "us", 10, 6.5, 100, 0, 0.03))
	d, err = Decide(s, req(30, 1, 1))
	require.NoError(t, err)
	require.True(t, d.Feasible)
	require.Equal(t, 2, result(d, "b").Replicas)
	require.Equal(t, 28, result(d, "a").Replicas)

	// clusters limits how many clusters a divided placement uses.
	s = snap(cl("a", "eu", 100, 0, 100, 0, 0.03), cl("b", "us", 100, 0, 100, 0, 0.03), cl("c", "ap", 100, 0, 100, 0, 0.03))
	r := req(9, 1, 1)
	r.Clusters = 2
	d, err = Decide(s, r)
	require.NoError(t, err)
	require.Len(t, d.Placements, 2)
	require.Equal(t, 9, d.Placements[0].Replicas+d.Placements[1].Replicas)
}

func TestUnsatisfiable(t *testing.T) {
	s := snap(cl("a", "eu", 10, 0, 100, 0, 0.03), cl("b", "us", 10, 0, 100, 0, 0.03))
	// 8.5 cores each below the ceiling: 16 replicas of 1 core fit, 17 do not.
	d, err := Decide(s, req(16, 1, 1))
	require.NoError(t, err)
	require.True(t, d.Feasible)
	d, err = Decide(s, req(17, 1, 1))
	require.NoError(t, err)
	require.False(t, d.Feasible)
	require.Equal(t, "only 16 of 17 replicas fit within the 85% ceiling on the 2 cluster(s) that pass every constraint", d.Reason)
	require.Empty(t, d.Placements)
	for _, r := range d.Clusters {
		require.Zero(t, r.Replicas)
		require.Equal(t, 8, r.Fits)
		require.Contains(t, r.Why(), "nothing placed")
	}
	// Clusters mode: each must take all replicas.
	r := req(9, 1, 1)
	r.Mode, r.Clusters = ModeClusters, 1
	d, err = Decide(s, r)
	require.NoError(t, err)
	require.False(t, d.Feasible)
	require.Equal(t, "no 1 clusters fit: 0 cluster(s) can take all 9 replicas within the 85% ceiling and pass every constraint", d.Reason)
	require.Contains(t, d.Clusters[0].Filtered()[0].String(), "fits 8 of 9 replicas below the 85% ceiling")
}

func TestValidate(t *testing.T) {
	s := snap(cl("eu-1", "eu", 10, 0, 10, 0, 0), cl("us-1", "us", 10, 0, 10, 0, 0))
	s.Clusters[0].Compliance = []string{"gdpr"}
	s.Clusters[0].LatencyMs = map[string]float64{"eu-users": 10}
	s.ComplianceTags = []string{"pci"}
	for _, tc := range []struct {
		name string
		req  func(r *Request)
		want string
	}{
		{"negative replicas", func(r *Request) { r.Replicas = -2 }, "replicas: must be >= 1, got -2"},
		{"zero replicas", func(r *Request) { r.Replicas = 0 }, "replicas: must be >= 1, got 0"},
		{"huge replicas", func(r *Request) { r.Replicas = 2_000_000 }, "replicas: must be <= 1000000, got 2000000"},
		{"negative cpu", func(r *Request) { r.CPU = -1 }, "cpu: must be a finite quantity >= 0, got -1"},
		{"nan memory", func(r *Request) { r.Memory = Quantity(math.NaN()) }, "memory: must be a finite quantity >= 0, got NaN"},
		{"no requests", func(r *Request) { r.CPU, r.Memory = 0, 0 }, "cpu, memory: a replica must request some CPU or memory"},
		{"bad mode", func(r *Request) { r.Mode = "spread" }, `mode: must be "divided" or "clusters", got "spread"`},
		{"clusters mode without a count", func(r *Request) { r.Mode = ModeClusters }, `clusters: mode "clusters" needs the number of clusters to pick (>= 1)`},
		{"negative clusters", func(r *Request) { r.Clusters = -1 }, "clusters: must be >= 0, got -1"},
		{"unknown compliance tag", func(r *Request) { r.Constraints.Compliance = []string{"hipaa"} }, `constraints.compliance: "hipaa" is not known; known: gdpr, pci`},
		{"unknown region", func(r *Request) { r.Constraints.Regions = []string{"mars"} }, `constraints.regions: "mars" is not known; known: eu, us`},
		{"unknown provider", func(r *Request) { r.Constraints.Providers = []string{"ibm"} }, `constraints.providers: "ibm" is not known; known: aws`},
		{"unknown tier", func(r *Request) { r.Constraints.Tiers = []string{"dev"} }, `constraints.tiers: "dev" is not known; known: prod`},
		{"unknown cluster", func(r *Request) { r.Constraints.Clusters = []string{"eu-9"} }, `constraints.clusters: "eu-9" is not known; known: eu-1, us-1`},
		{"unknown excluded cluster", func(r *Request) { r.Constraints.ExcludeClusters = []string{"eu-9"} }, `constraints.exclude_clusters: "eu-9" is not known`},
		{"unknown user region", func(r *Request) { r.Constraints.UserRegions = []string{"ap-users"} }, `constraints.user_regions: "ap-users" is not known; known: eu-users`},
		{"max latency without user regions", func(r *Request) { r.Constraints.MaxLatency = Duration(time.Millisecond) }, "constraints.max_latency: needs constraints.user_regions"},
		{"negative weight", func(r *Request) { r.Weights.Cost = -1 }, "weights.cost: must be a finite number >= 0, got -1"},
		{"allowed and excluded", func(r *Request) {
			r.Constraints.Clusters, r.Constraints.ExcludeClusters = []string{"eu-1", "us-1"}, []string{"us-1"}
		}, `constraints: cluster "us-1" is both in clusters and in exclude_clusters`},
		{"more clusters than the fleet has", func(r *Request) { r.Mode, r.Clusters = ModeClusters, 3 }, "clusters: 3 clusters asked for, the fleet has 2"},
		{"more clusters than allowed", func(r *Request) {
			r.Mode, r.Clusters, r.Constraints.Clusters = ModeClusters, 2, []string{"eu-1"}
		}, "clusters: 2 clusters asked for, constraints.clusters allows 1"},
		{"all weights zero", func(r *Request) { r.Weights = config.Weights{} }, "weights: at least one must be > 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := req(1, 1, 1)
			tc.req(&r)
			_, err := Decide(s, r)
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrBadRequest), err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
	// A declared tag no cluster has yet is valid, and unsatisfiable.
	r := req(1, 1, 1)
	r.Constraints.Compliance = []string{"pci"}
	d, err := Decide(s, r)
	require.NoError(t, err)
	require.False(t, d.Feasible)
}

func TestParseQuantity(t *testing.T) {
	for in, want := range map[string]float64{"500m": 0.5, "2": 2, "1.5": 1.5, "1Gi": gib, "512Mi": 512 << 20, "1G": 1e9, "100k": 1e5} {
		got, err := ParseQuantity(in)
		require.NoError(t, err, in)
		require.InDelta(t, want, float64(got), 1e-9, in)
	}
	_, err := ParseQuantity("lots")
	require.EqualError(t, err, `"lots" is not a quantity such as "500m", "2" or "1Gi"`)
}

// randomSnapshot is a fleet of n clusters with random capacity, load, health, labels.
func randomSnapshot(rng *rand.Rand, n int) *Snapshot {
	regions := []string{"eu", "us", "ap", "sa"}
	var cs []Cluster
	for i := range n {
		c := cl(clusterName(i), regions[rng.IntN(len(regions))], float64(8+rng.IntN(500)), 0, float64(32+rng.IntN(2000)), 0, 0.01+rng.Float64()/10)
		c.RequestedCPU = c.AllocatableCPU * rng.Float64() * 0.95
		c.RequestedMemory = c.AllocatableMemory * rng.Float64() * 0.95
		c.LatencyMs = map[string]float64{"eu-users": float64(5 + rng.IntN(200)), "us-users": float64(5 + rng.IntN(200))}
		if rng.IntN(4) == 0 {
			c.Compliance = []string{"pci"}
		}
		switch rng.IntN(12) {
		case 0:
			c.LastIngest = t0.Add(-10 * time.Minute)
		case 1:
			c.ReadyRatio = 0.5
		case 2:
			c.Incidents = []IncidentRef{{ID: "inc", Severity: "critical", Scope: "cluster", Kind: IncidentNodes}}
		}
		cs = append(cs, c)
	}
	s := snap(cs...)
	s.ComplianceTags = []string{"pci"}
	return s
}

func clusterName(i int) string {
	return "c-" + string(rune('a'+i/676%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i%26))
}

func randomRequest(rng *rand.Rand, s *Snapshot) Request {
	r := req(1+rng.IntN(60), float64(1+rng.IntN(40))/10, float64(1+rng.IntN(80))/10)
	if rng.IntN(3) == 0 {
		r.Mode, r.Clusters = ModeClusters, 1+rng.IntN(min(5, len(s.Clusters)))
	} else if rng.IntN(3) == 0 {
		r.Clusters = 1 + rng.IntN(8)
	}
	if rng.IntN(3) == 0 {
		r.Constraints.Compliance = []string{"pci"}
	}
	if rng.IntN(3) == 0 {
		r.Constraints.Regions = []string{s.Clusters[0].Region, s.Clusters[len(s.Clusters)-1].Region}
	}
	if rng.IntN(3) == 0 {
		r.Constraints.UserRegions = []string{"eu-users"}
		if rng.IntN(2) == 0 {
			r.Constraints.MaxLatency = Duration(time.Duration(50+rng.IntN(100)) * time.Millisecond)
		}
	}
	r.Weights = config.Weights{FreeCapacity: rng.Float64(), Cost: rng.Float64(), Latency: rng.Float64(), Saturation: rng.Float64(), Spread: rng.Float64() + 0.01}
	return r
}

// TestPlacementProperties checks, over random fleets and requests: a decision never exceeds any
// cluster's headroom, never places on a filtered cluster, places exactly the replicas asked
// (or none when infeasible), and is deterministic, also when the clusters come in another order.
func TestPlacementProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	outcomes := map[string]int{}
	defer func() {
		// The random cases must exercise every outcome, or the properties prove little.
		for _, o := range []string{"divided", "clusters", "infeasible", "filtered"} {
			require.Greater(t, outcomes[o], 20, "outcome %s: %v", o, outcomes)
		}
	}()
	for iter := range 400 {
		s := randomSnapshot(rng, 1+rng.IntN(60))
		r := randomRequest(rng, s)
		d, err := Decide(s, r)
		require.NoError(t, err)
		placed := 0
		for _, res := range d.Clusters {
			c := s.Cluster(res.Cluster)
			if res.Replicas == 0 {
				continue
			}
			require.Empty(t, res.Filtered(), "iter %d: replicas on filtered cluster %s", iter, res.Cluster)
			cpuAfter := c.RequestedCPU + float64(res.Replicas)*float64(r.CPU)
			memAfter := c.RequestedMemory + float64(res.Replicas)*float64(r.Memory)
			require.LessOrEqual(t, cpuAfter, c.AllocatableCPU*s.Ceiling*(1+1e-9), "iter %d: %s CPU above the ceiling", iter, res.Cluster)
			require.LessOrEqual(t, memAfter, c.AllocatableMemory*s.Ceiling*(1+1e-9), "iter %d: %s memory above the ceiling", iter, res.Cluster)
			placed += res.Replicas
		}
		for _, res := range d.Clusters {
			if len(res.Filtered()) > 0 {
				outcomes["filtered"]++
				break
			}
		}
		switch {
		case !d.Feasible:
			outcomes["infeasible"]++
			require.Zero(t, placed, "iter %d", iter)
			require.NotEmpty(t, d.Reason)
		case r.Mode == ModeClusters:
			outcomes["clusters"]++
			require.Len(t, d.Placements, r.Clusters, "iter %d", iter)
			require.Equal(t, r.Replicas*r.Clusters, placed, "iter %d", iter)
		default:
			outcomes["divided"]++
			require.Equal(t, r.Replicas, placed, "iter %d", iter)
			if r.Clusters > 0 {
				require.LessOrEqual(t, len(d.Placements), r.Clusters, "iter %d", iter)
			}
		}
		// Deterministic: the same snapshot, and the same clusters in a shuffled slice (the
		// snapshot sorts them; decide must not depend on anything else).
		again, err := Decide(s, r)
		require.NoError(t, err)
		require.Equal(t, d, again, "iter %d: not deterministic", iter)
		shuffled := s.clone()
		rng.Shuffle(len(shuffled.Clusters), func(i, j int) {
			shuffled.Clusters[i], shuffled.Clusters[j] = shuffled.Clusters[j], shuffled.Clusters[i]
		})
		slices.SortFunc(shuffled.Clusters, func(a, b Cluster) int { return strings.Compare(a.Name, b.Name) })
		third, err := Decide(shuffled, r)
		require.NoError(t, err)
		require.Equal(t, d, third, "iter %d: depends on cluster order", iter)
	}
}

func TestDivideProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		k := 1 + rng.IntN(10)
		weights, caps := make([]float64, k), make([]int, k)
		total := 0
		for i := range k {
			weights[i] = rng.Float64() * 100
			if rng.IntN(5) == 0 {
				weights[i] = 0
			}
			caps[i] = rng.IntN(20)
			total += caps[i]
		}
		if total == 0 {
			continue
		}
		n := 1 + rng.IntN(total)
		out := divide(n, weights, caps)
		sum := 0
		for i, v := range out {
			require.GreaterOrEqual(t, v, 0)
			require.LessOrEqual(t, v, caps[i])
			sum += v
		}
		require.Equal(t, n, sum, "weights %v caps %v", weights, caps)
	}
}

func TestPermute(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 200 {
		n := rng.IntN(50)
		xs := make([]int, n)
		dest := make([]int32, n)
		for i, p := range rng.Perm(n) {
			xs[i], dest[i] = i, int32(p)
		}
		want := make([]int, n)
		for i, p := range dest {
			want[p] = xs[i]
		}
		permute(xs, dest)
		require.Equal(t, want, xs)
	}
}
