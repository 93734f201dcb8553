package schedule

import (
	"context"
	"iter"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

// fleetSeries are two clusters as the rule pack's recording rules and kube-state-metrics give
// them, 10 minutes of samples a minute apart (at 0s .. 10m).
const fleetSeries = `
load 1m
  cluster:kube_node_status_allocatable_cpu:sum{cluster="eu-1"}             40x10
  cluster:kube_node_status_allocatable_memory:sum{cluster="eu-1"}          171798691840x10
  cluster:kube_pod_container_resource_requests_cpu:sum{cluster="eu-1"}     10x10
  cluster:kube_pod_container_resource_requests_memory:sum{cluster="eu-1"}  42949672960x10
  cluster:kube_node_ready:ratio{cluster="eu-1"}                            1x10
  fleetwatch_cluster_last_ingest_timestamp_seconds{cluster="eu-1"}         0+60x10
  cluster:kube_node_status_allocatable_cpu:sum{cluster="us-1"}             20x10
  cluster:kube_node_status_allocatable_memory:sum{cluster="us-1"}          85899345920x10
  cluster:kube_node_ready:ratio{cluster="us-1"}                            0.5x10
  fleetwatch_cluster_last_ingest_timestamp_seconds{cluster="us-1"}         0+60x5
  kube_pod_container_resource_requests{cluster="eu-1", namespace="shop", pod="api-7d9f8c6b5-aaaaa", uid="u1", container="api", resource="cpu", unit="core"}            0.5x10
  kube_pod_container_resource_requests{cluster="eu-1", namespace="shop", pod="api-7d9f8c6b5-aaaaa", uid="u1", container="api", resource="memory", unit="byte"}         1073741824x10
  kube_pod_container_resource_requests{cluster="eu-1", namespace="shop", pod="api-7d9f8c6b5-aaaaa", uid="u1", container="sidecar", resource="cpu", unit="core"}        0.1x10
  kube_pod_container_resource_requests{cluster="eu-1", namespace="shop", pod="api-7d9f8c6b5-bbbbb", uid="u2", container="api", resource="cpu", unit="core"}            0.5x10
  kube_pod_container_resource_requests{cluster="eu-1", namespace="shop", pod="api-7d9f8c6b5-bbbbb", uid="u2", container="api", resource="memory", unit="byte"}         1073741824x10
  kube_pod_container_resource_requests{cluster="eu-1", namespace="shop", pod="done-job-xyz", uid="u3", container="job", resource="cpu", unit="core"}                  4x10
  kube_pod_container_resource_requests{cluster="eu-1", namespace="kube-system", pod="static-etcd", uid="u4", container="etcd", resource="memory", unit="byte"}          536870912x10
  kube_pod_status_phase{cluster="eu-1", namespace="shop", pod="api-7d9f8c6b5-aaaaa", uid="u1", phase="Running"}    1x10
  kube_pod_status_phase{cluster="eu-1", namespace="shop", pod="api-7d9f8c6b5-aaaaa", uid="u1", phase="Pending"}    0x10
  kube_pod_status_phase{cluster="eu-1", namespace="shop", pod="api-7d9f8c6b5-bbbbb", uid="u2", phase="Pending"}    1x10
  kube_pod_status_phase{cluster="eu-1", namespace="shop", pod="done-job-xyz", uid="u3", phase="Succeeded"}         1x10
  kube_pod_status_phase{cluster="eu-1", namespace="kube-system", pod="static-etcd", uid="u4", phase="Running"}     1x10
  kube_pod_owner{cluster="eu-1", namespace="shop", pod="api-7d9f8c6b5-aaaaa", uid="u1", owner_kind="ReplicaSet", owner_name="api-7d9f8c6b5", owner_is_controller="true"} 1x10
  kube_pod_owner{cluster="eu-1", namespace="shop", pod="api-7d9f8c6b5-bbbbb", uid="u2", owner_kind="ReplicaSet", owner_name="api-7d9f8c6b5", owner_is_controller="true"} 1x10
  kube_replicaset_owner{cluster="eu-1", namespace="shop", replicaset="api-7d9f8c6b5", owner_kind="Deployment", owner_name="api", owner_is_controller="true"} 1x10
`

func testSource(t *testing.T) Source {
	st := promqltest.LoadedStorage(t, fleetSeries)
	t.Cleanup(func() { st.Close() })
	engine := promqltest.NewTestEngineWithOpts(t, promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	q := rules.EngineQueryFunc(engine, st)
	return Source{Query: func(ctx context.Context, qs string, ts time.Time) (promql.Vector, error) { return q(ctx, qs, ts) }}
}

// incidents is the active incidents incs, as correlate.Engine.EachActive gives them.
func incidents(incs ...correlate.Incident) iter.Seq[*correlate.Incident] {
	return func(yield func(*correlate.Incident) bool) {
		for i := range incs {
			if !yield(&incs[i]) {
				return
			}
		}
	}
}

func TestSourceSnapshot(t *testing.T) {
	src := testSource(t)
	// In no order, as the engine gives them; a cluster lists its incidents by ID.
	src.Incidents = incidents(
		correlate.Incident{ID: "inc-3", Group: correlate.Group{Key: "alert/X/1", Scope: "fleet", Severity: "warning", Clusters: []string{"eu-1", "us-1"}, RootCause: "X"}},
		correlate.Incident{ID: "inc-1", Group: correlate.Group{Key: "nodes/us-1", Scope: "cluster", Severity: "critical", Clusters: []string{"us-1"}, RootCause: "nodes NotReady"}})
	now := time.Unix(9*60, 0)
	st := testSettings(
		&config.ClusterConfig{Name: "eu-1", Labels: map[string]string{"region": "eu", "provider": "aws", "tier": "prod", "compliance": "pci, gdpr"}, Compliance: []string{"iso27001"}, CostPerCPUHour: 0.04, Latency: map[string]model.Duration{"eu-users": model.Duration(12 * time.Millisecond)}},
		&config.ClusterConfig{Name: "us-1", Labels: map[string]string{"region": "us"}},
		&config.ClusterConfig{Name: "ap-1"}, // configured, never sent anything
	)
	st.Schedule.Headroom = 0.1 // the ceiling is still the pack's saturation ratio
	s, err := src.Snapshot(t.Context(), now, st)
	require.NoError(t, err)
	require.Empty(t, s.Errors)
	require.Equal(t, 0.85, s.Ceiling)
	require.Len(t, s.Clusters, 3)

	eu := s.Cluster("eu-1")
	require.True(t, eu.HasCapacity)
	require.Equal(t, 40.0, eu.AllocatableCPU)
	require.Equal(t, 10.0, eu.RequestedCPU)
	require.Equal(t, 160.0*gib, eu.AllocatableMemory)
	require.Equal(t, 1.0, eu.ReadyRatio)
	require.Equal(t, []string{"gdpr", "iso27001", "pci"}, eu.Compliance)
	require.Equal(t, map[string]float64{"eu-users": 12}, eu.LatencyMs)
	require.Equal(t, "eu", eu.Region)
	require.Equal(t, now, eu.LastIngest)
	require.InDelta(t, 40*0.85-10, s.FreeCPU(eu), 1e-9)

	us := s.Cluster("us-1")
	require.True(t, us.HasCapacity)
	require.Zero(t, us.RequestedCPU, "no request series: nothing requested")
	require.Equal(t, time.Unix(5*60, 0), us.LastIngest, "its last-ingest series stopped at 5m")
	require.Equal(t, 0.5, us.ReadyRatio)
	require.Equal(t, []string{"inc-1", "inc-3"}, []string{us.Incidents[0].ID, us.Incidents[1].ID})
	require.Len(t, us.Incidents, 2)
	require.Equal(t, IncidentNodes, us.Incidents[0].Kind)
	require.Equal(t, []string{"eu-1", "us-1"}, us.Incidents[1].Clusters)
	require.Len(t, s.Cluster("eu-1").Incidents, 1)

	ap := s.Cluster("ap-1")
	require.False(t, ap.HasCapacity)
	require.True(t, ap.LastIngest.IsZero())
	require.Equal(t, -1.0, ap.ReadyRatio)

	// Placement: only eu-1 passes; us-1 is stale, unhealthy twice over; ap-1 has no data.
	d, err := Decide(s, Request{Replicas: 2, CPU: 1, Memory: gib, Weights: config.DefaultWeights})
	require.NoError(t, err)
	require.True(t, d.Feasible)
	require.Equal(t, []Placement{{Cluster: "eu-1", Replicas: 2, Score: d.Placements[0].Score}}, d.Placements)
	require.Equal(t, []string{
		"stale: last data 4m0s ago (placement needs data newer than 2m0s)",
		"unhealthy: 50% of nodes Ready (minimum 90%)",
		"unhealthy: open critical cluster incident inc-1: nodes NotReady",
	}, result(d, "us-1").Filtered().Strings())
	require.Equal(t, []string{"stale: no data received from it", "no allocatable CPU and memory in the view (cluster:kube_node_status_allocatable_*:sum)"},
		result(d, "ap-1").Filtered().Strings())
}

func TestSourceSnapshotQueryFails(t *testing.T) {
	src := Source{Query: func(ctx context.Context, qs string, ts time.Time) (promql.Vector, error) {
		if qs == QueryAllocatableMemory {
			return nil, context.DeadlineExceeded
		}
		return promql.Vector{{Metric: labels.FromStrings("cluster", "eu-1"), F: 10}}, nil
	}}
	st := testSettings()
	st.Schedule.StaleAfter = model.Duration(time.Hour)
	s, err := src.Snapshot(t.Context(), time.Unix(100, 0), st)
	require.NoError(t, err)
	require.Equal(t, []string{QueryAllocatableMemory + ": context deadline exceeded"}, s.Errors)
	require.False(t, s.Cluster("eu-1").HasCapacity, "without memory data the cluster is not a target")
}

func TestSourceWorkloads(t *testing.T) {
	src := testSource(t)
	ws, err := src.Workloads(t.Context(), time.Unix(9*60, 0), []string{"eu-1"})
	require.NoError(t, err)
	// The Succeeded job frees its capacity; the Pending pod still holds its requests; the
	// static pod without an owner is its own workload; the sidecar counts.
	require.Equal(t, []Workload{
		{Cluster: "eu-1", Namespace: "kube-system", Kind: "Pod", Name: "static-etcd", Pods: 1, Memory: 512 << 20},
		{Cluster: "eu-1", Namespace: "shop", Kind: "Deployment", Name: "api", Pods: 2, CPU: 1.1, Memory: 2 * gib},
	}, roundWorkloads(ws))
	ws, err = src.Workloads(t.Context(), time.Unix(9*60, 0), []string{"us-1"})
	require.NoError(t, err)
	require.Empty(t, ws)
}

func roundWorkloads(ws []Workload) []Workload {
	for i := range ws {
		ws[i].CPU = float64(int(ws[i].CPU*1000+0.5)) / 1000
	}
	return ws
}

// TestIncidentsFilterOnlyClusterHealth: placement keeps off a cluster only while a critical
// incident about the cluster's own health is open there (silent or control plane down, nodes
// NotReady, saturated). A workload crash-looping in one cluster, a bad rollout across several,
// or any other alert leaves the clusters placeable for everything else. The incidents are the
// correlation engine's, from real alerts, so a change in how correlate names its incidents
// fails here.
func TestIncidentsFilterOnlyClusterHealth(t *testing.T) {
	now := time.Unix(3600, 0)
	alert := func(name, cluster, severity string, more ...string) correlate.Alert {
		ls := map[string]string{"alertname": name, "cluster": cluster, "severity": severity}
		for i := 0; i+1 < len(more); i += 2 {
			ls[more[i]] = more[i+1]
		}
		return correlate.Alert{Labels: ls, StartsAt: now.Add(-5 * time.Minute), Source: "rules"}
	}
	for _, tc := range []struct {
		name   string
		alerts []correlate.Alert
		kind   string
		filter string // the reason eu-1 is filtered for; "" = placeable
	}{
		{name: "one workload crash-looping", kind: IncidentWorkloads, alerts: []correlate.Alert{
			alert("FleetWorkloadCrashLooping", "eu-1", "warning", "namespace", "payments", "deployment", "api"),
			alert("FleetClusterCrashLooping", "eu-1", "critical"),
		}},
		{name: "bad rollout in several clusters", kind: IncidentRollout, alerts: []correlate.Alert{
			alert("FleetWorkloadCrashLooping", "eu-1", "critical", "namespace", "shop", "deployment", "web"),
			alert("FleetWorkloadCrashLooping", "us-1", "critical", "namespace", "shop", "deployment", "web"),
		}},
		{name: "another critical alert", kind: IncidentAlert, alerts: []correlate.Alert{
			alert("KubePersistentVolumeFillingUp", "eu-1", "critical", "namespace", "shop"),
		}},
		{name: "control plane down", kind: IncidentClusterDown, alerts: []correlate.Alert{
			alert("FleetClusterControlPlaneDown", "eu-1", "critical"),
			alert("FleetWorkloadCrashLooping", "eu-1", "warning", "namespace", "payments", "deployment", "api"),
		}, filter: "unhealthy: open critical cluster incident inc-cluster/eu-1: FleetClusterControlPlaneDown in cluster eu-1"},
		{name: "nodes NotReady", kind: IncidentNodes, alerts: []correlate.Alert{
			alert("KubeNodeNotReady", "eu-1", "critical", "node", "n-3"),
		}, filter: "unhealthy: open critical cluster incident inc-nodes/eu-1/n-3: node n-3 of cluster eu-1 is not Ready"},
		{name: "saturation, critical", kind: IncidentSaturation, alerts: []correlate.Alert{
			alert("KubeCPUOvercommit", "eu-1", "critical"),
		}, filter: "unhealthy: open critical cluster incident inc-saturation/eu-1: KubeCPUOvercommit in cluster eu-1"},
		{name: "saturation, warning", kind: IncidentSaturation, alerts: []correlate.Alert{
			alert("FleetClusterCPURequestsSaturated", "eu-1", "warning"),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := Source{
				Query: func(_ context.Context, q string, _ time.Time) (promql.Vector, error) {
					v := map[string]float64{QueryAllocatableCPU: 100, QueryAllocatableMemory: 400 * gib, QueryRequestedCPU: 10,
						QueryRequestedMemory: 40 * gib, QueryReadyRatio: 1, QueryLastIngest: float64(now.Unix())}[q]
					return promql.Vector{{Metric: labels.FromStrings("cluster", "eu-1"), F: v}, {Metric: labels.FromStrings("cluster", "us-1"), F: v}}, nil
				},
				Incidents: func(yield func(*correlate.Incident) bool) {
					for _, g := range correlate.Correlate(tc.alerts, nil, correlate.DefaultRules) {
						if !yield(&correlate.Incident{ID: "inc-" + g.Key, Group: g, State: correlate.StateOpen}) {
							return
						}
					}
				},
			}
			s, err := src.Snapshot(t.Context(), now, testSettings())
			require.NoError(t, err)
			eu := s.Cluster("eu-1")
			require.NotEmpty(t, eu.Incidents, "the snapshot lists every open incident")
			require.Equal(t, tc.kind, eu.Incidents[0].Kind)

			d, err := Decide(s, Request{Replicas: 4, CPU: 1, Memory: gib, Weights: config.DefaultWeights})
			require.NoError(t, err)
			require.True(t, d.Feasible)
			if tc.filter == "" {
				require.Empty(t, result(d, "eu-1").Filtered())
				require.Positive(t, result(d, "eu-1").Replicas, "eu-1 takes its share")
				return
			}
			require.Equal(t, []string{tc.filter}, result(d, "eu-1").Filtered().Strings())
			require.Zero(t, result(d, "eu-1").Replicas)
		})
	}
}
