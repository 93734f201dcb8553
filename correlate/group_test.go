package correlate

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/rules/pack"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func alert(at time.Duration, ls ...string) Alert {
	m := map[string]string{}
	for i := 0; i+1 < len(ls); i += 2 {
		m[ls[i]] = ls[i+1]
	}
	return Alert{Labels: m, StartsAt: t0.Add(at), Source: "rules"}
}

func keysOf(gs []Group) []string {
	out := []string{}
	for _, g := range gs {
		out = append(out, g.Key)
	}
	return out
}

// topo: cluster eu-2 has nodes n1 (NotReady) and n2; payments/api has a pod on each; every
// cluster runs catalog/search, eu-1 and us-1 and ap-1 the new image, us-2 the old one.
func testTopology() *Topology {
	return &Topology{
		PodNode: map[string]string{
			"eu-2/payments/api-1": "n1", "eu-2/payments/api-2": "n2", "eu-2/web/front-1": "n2",
		},
		PodWorkload: map[string]string{
			"eu-2/payments/api-1": "api", "eu-2/payments/api-2": "api", "eu-2/web/front-1": "front",
		},
		WorkloadImages: map[string][]string{
			"eu-1/catalog/search": {"search:v2"}, "us-1/catalog/search": {"search:v2"},
			"ap-1/catalog/search": {"search:v2", "search:v1"}, "us-2/catalog/search": {"search:v1"},
		},
		NotReadyNodes: map[string]bool{"eu-2/n1": true},
	}
}

func TestCorrelateNodesExplainPods(t *testing.T) {
	alerts := []Alert{
		alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", "eu-2", "severity", "critical"),
		alert(time.Minute, "alertname", "KubePodCrashLooping", "cluster", "eu-2", "namespace", "payments", "pod", "api-1", "severity", "warning"),
		alert(time.Minute, "alertname", "KubePodCrashLooping", "cluster", "eu-2", "namespace", "web", "pod", "front-1", "severity", "warning"),
	}
	total := alert(time.Minute, "alertname", "FleetClusterCrashLooping", "cluster", "eu-2", "severity", "critical")
	gs := Correlate(append(alerts[:2:2], total), testTopology(), DefaultRules)
	require.Equal(t, []string{"nodes/eu-2"}, keysOf(gs), "the nodes explain every failing workload, so the cluster's total too")
	require.Len(t, gs[0].Alerts, 3)
	gs = Correlate(append(alerts, total), testTopology(), DefaultRules)
	require.Equal(t, []string{"failures/eu-2", "nodes/eu-2"}, keysOf(gs), "the pod on the Ready node n2 is not explained by the nodes")
	require.Len(t, gs[0].Alerts, 2, "front-1 and the cluster total")
	gs = Correlate(alerts, testTopology(), DefaultRules)
	require.Len(t, gs[1].Alerts, 2)
	require.Equal(t, "critical", gs[1].Severity)
	require.Equal(t, "cluster", gs[1].Scope)
	require.Contains(t, gs[1].Explanation, "1 alerts about pods on the NotReady nodes")
	require.Equal(t, "workload web/front is failing in cluster eu-2", gs[0].RootCause)
}

func TestCorrelateBadRollout(t *testing.T) {
	var alerts []Alert
	for i, c := range []string{"eu-1", "us-1", "ap-1"} {
		alerts = append(alerts,
			alert(time.Duration(i)*time.Minute, "alertname", "FleetWorkloadCrashLooping", "cluster", c, "namespace", "catalog", "owner_kind", "ReplicaSet", "owner_name", "search-5d8f7c9b6", "severity", "warning"),
			alert(time.Duration(i)*time.Minute, "alertname", "FleetClusterCrashLooping", "cluster", c, "severity", "critical"))
	}
	// An unrelated problem elsewhere stays its own incident.
	alerts = append(alerts, alert(0, "alertname", "FleetClusterCPURequestsSaturated", "cluster", "us-2", "severity", "warning"))
	gs := Correlate(alerts, testTopology(), DefaultRules)
	require.Equal(t, []string{"rollout/catalog/search", "saturation/us-2"}, keysOf(gs))
	g := gs[0]
	require.Equal(t, "fleet", g.Scope)
	require.Equal(t, []string{"ap-1", "eu-1", "us-1"}, g.Clusters)
	require.Equal(t, "search:v2", g.Image, "the image all failing clusters run and the healthy one does not")
	require.Equal(t, "likely bad rollout of catalog/search (image search:v2)", g.RootCause)
	require.Len(t, g.Alerts, 6)
	require.Equal(t, "critical", g.Severity)

	// A stalled rolling update: every failing cluster runs the old image (3 pods of the old
	// ReplicaSet) and the new one (the surge pod that crash-loops), and so does the healthy
	// cluster. The alerts name the failing ReplicaSet: its image is the suspect, not the old one
	// that sorts first, nor the sidecar both ReplicaSets run (which sorts first too).
	stalled := testTopology()
	stalled.OwnerImages = map[string][]string{}
	stalled.OwnerWorkload = map[string]string{}
	for _, c := range []string{"eu-1", "us-1", "ap-1", "us-2"} {
		stalled.WorkloadImages[c+"/catalog/search"] = []string{"envoy:v1", "search:v1", "search:v9-bad"}
		stalled.OwnerImages[c+"/catalog/search-5d8f7c9b6"] = []string{"envoy:v1", "search:v9-bad"}
		stalled.OwnerImages[c+"/catalog/search-6b7d9c8f5"] = []string{"envoy:v1", "search:v1"}
		stalled.OwnerWorkload[c+"/catalog/search-5d8f7c9b6"] = "search"
		stalled.OwnerWorkload[c+"/catalog/search-6b7d9c8f5"] = "search"
	}
	gs = Correlate(alerts, stalled, DefaultRules)
	require.Equal(t, "search:v9-bad", gs[0].Image)
	// A new workload with no earlier ReplicaSet: its failing pods run the app and a sidecar
	// every cluster injects into other workloads too. The sidecar is not what the rollout
	// changed.
	fresh := testTopology()
	fresh.OwnerImages, fresh.OwnerWorkload = map[string][]string{}, map[string]string{}
	for _, c := range []string{"eu-1", "us-1", "ap-1"} {
		fresh.WorkloadImages[c+"/catalog/search"] = []string{"envoy:v1", "search:v9-bad"}
		fresh.OwnerImages[c+"/catalog/search-5d8f7c9b6"] = []string{"envoy:v1", "search:v9-bad"}
		fresh.OwnerWorkload[c+"/catalog/search-5d8f7c9b6"] = "search"
		fresh.WorkloadImages[c+"/web/front"] = []string{"envoy:v1", "front:v3"}
	}
	gs = Correlate(alerts, fresh, DefaultRules)
	require.Equal(t, "search:v9-bad", gs[0].Image)

	// eu-1 is rolled back already: its failing ReplicaSet runs no pod any more while its
	// alert resolves, and the workload runs only the old image there. The incident still
	// names the bad image, not the old one every cluster runs.
	delete(stalled.OwnerImages, "eu-1/catalog/search-5d8f7c9b6")
	stalled.WorkloadImages["eu-1/catalog/search"] = []string{"envoy:v1", "search:v1"}
	gs = Correlate(alerts, stalled, DefaultRules)
	require.Equal(t, "search:v9-bad", gs[0].Image)

	// The same workload failing on a NotReady node elsewhere is the node's problem.
	withNodes := append([]Alert{
		alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", "eu-2", "severity", "critical"),
		alert(0, "alertname", "KubePodCrashLooping", "cluster", "eu-2", "namespace", "catalog", "pod", "search-1", "severity", "warning"),
	}, alerts[:6]...)
	topo := testTopology()
	topo.PodNode["eu-2/catalog/search-1"] = "n1"
	topo.PodWorkload["eu-2/catalog/search-1"] = "search"
	gs = Correlate(withNodes, topo, DefaultRules)
	require.Equal(t, []string{"nodes/eu-2", "rollout/catalog/search"}, keysOf(gs))
	require.Equal(t, []string{"ap-1", "eu-1", "us-1"}, gs[1].Clusters)

	// Failures far apart in time are not one rollout.
	alerts[4].StartsAt = t0.Add(time.Hour)
	alerts[5].StartsAt = t0.Add(time.Hour)
	gs = Correlate(alerts[:6], testTopology(), DefaultRules)
	require.Equal(t, []string{"failures/ap-1", "rollout/catalog/search"}, keysOf(gs), "ap-1 failed outside the window")
	require.Equal(t, []string{"eu-1", "us-1"}, gs[1].Clusters)
	gs = Correlate(alerts[:2], testTopology(), DefaultRules)
	require.Equal(t, []string{"failures/eu-1"}, keysOf(gs), "one cluster is not a rollout")
}

func TestCorrelateSilentClusterExplainsAll(t *testing.T) {
	alerts := []Alert{
		alert(0, "alertname", "FleetClusterControlPlaneDown", "cluster", "eu-2", "severity", "critical"),
		alert(0, "alertname", "FleetClusterSilent", "cluster", "eu-2", "severity", "critical"),
		alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", "eu-2", "severity", "critical"),
		alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", "eu-1", "severity", "critical"),
	}
	gs := Correlate(alerts, testTopology(), DefaultRules)
	require.Equal(t, []string{"cluster/eu-2", "nodes/eu-1"}, keysOf(gs))
	require.Equal(t, "FleetClusterSilent in cluster eu-2", gs[0].RootCause, "silent is the deeper cause")
	require.Len(t, gs[0].Alerts, 3)
}

// TestCorrelateAPIUnreachable: FleetClusterAPIUnreachable is about fleetwatch's own path to a
// cluster's API server, so it has no role: it explains none of its cluster's other alerts, the
// same alert in several clusters is one fleet incident (fleetwatch's own network, most
// likely), and a control plane down in its cluster explains it.
func TestCorrelateAPIUnreachable(t *testing.T) {
	unreachable := func(c string) Alert {
		return alert(0, "alertname", pack.AlertClusterAPIUnreachable, "cluster", c, "severity", "warning")
	}
	nodes := alert(0, "alertname", pack.AlertClusterNodesNotReady, "cluster", "eu-1", "severity", "critical")
	gs := Correlate([]Alert{unreachable("eu-1"), unreachable("us-1"), nodes}, testTopology(), DefaultRules)
	require.Len(t, gs, 2)
	require.True(t, strings.HasPrefix(gs[0].Key, "alert/"+pack.AlertClusterAPIUnreachable+"/"), gs[0].Key)
	require.Equal(t, "fleet", gs[0].Scope)
	require.Equal(t, []string{"eu-1", "us-1"}, gs[0].Clusters)
	require.Equal(t, "warning", gs[0].Severity)
	require.Equal(t, "nodes/eu-1", gs[1].Key)
	require.Len(t, gs[1].Alerts, 1, "the nodes do not explain fleetwatch's path to the API server, nor the reverse")

	down := alert(0, "alertname", pack.AlertClusterControlPlaneDown, "cluster", "us-1", "severity", "critical")
	gs = Correlate([]Alert{unreachable("eu-1"), unreachable("us-1"), down}, testTopology(), DefaultRules)
	require.Len(t, gs, 2)
	require.True(t, strings.HasPrefix(gs[0].Key, "alert/"+pack.AlertClusterAPIUnreachable+"/"), gs[0].Key)
	require.Equal(t, []string{"eu-1"}, gs[0].Clusters)
	require.Equal(t, "cluster", gs[0].Scope)
	require.Equal(t, "cluster/us-1", gs[1].Key)
	require.Len(t, gs[1].Alerts, 2, "a control plane down explains why fleetwatch cannot reach it")
}

func TestCorrelateSameAlertManyClusters(t *testing.T) {
	alerts := []Alert{
		alert(0, "alertname", "CertificateExpiring", "cluster", "eu-1", "secret", "ingress-tls", "severity", "warning"),
		alert(0, "alertname", "CertificateExpiring", "cluster", "us-1", "secret", "ingress-tls", "severity", "warning"),
		// An HA replica of the same alert.
		alert(0, "alertname", "CertificateExpiring", "cluster", "us-1", "secret", "ingress-tls", "severity", "warning", "prometheus_replica", "b"),
		alert(0, "alertname", "CertificateExpiring", "cluster", "us-1", "secret", "other", "severity", "warning"),
	}
	gs := Correlate(alerts, nil, DefaultRules)
	require.Len(t, gs, 2)
	var fleet Group
	for _, g := range gs {
		if g.Scope == "fleet" {
			fleet = g
		}
	}
	require.Equal(t, []string{"eu-1", "us-1"}, fleet.Clusters)
	require.Contains(t, fleet.Explanation, "fires in 2 clusters (eu-1, us-1)")
	require.Equal(t, DefaultRules.Fingerprint(alerts[1]), DefaultRules.Fingerprint(alerts[2]), "replica labels do not count")
}

// Alerts fleetwatch's own remediation causes join the incident it remediates: pods Pending
// while a drain moves them, a workload failing while it is rolled back. Without the actions
// they are incidents of their own.
func TestCorrelateOwnActions(t *testing.T) {
	alerts := []Alert{
		alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", "eu-2", "severity", "critical"),
		alert(time.Minute, "alertname", "KubePodPending", "cluster", "eu-2", "namespace", "web", "pod", "front-1", "severity", "warning"),
		alert(time.Minute, "alertname", "KubePodPending", "cluster", "eu-2", "namespace", "web", "pod", "front-2", "severity", "warning"),
		alert(time.Minute, "alertname", "KubePodCrashLooping", "cluster", "eu-1", "namespace", "catalog", "pod", "search-1", "severity", "warning"),
	}
	topo := testTopology()
	topo.PodWorkload["eu-1/catalog/search-1"] = "search"
	gs := Correlate(alerts, topo, DefaultRules)
	keys := keysOf(gs)
	require.Len(t, keys, 4, "without the actions, each is its own incident: %v", keys)
	require.True(t, strings.HasPrefix(keys[0], "alert/KubePodPending/") && strings.HasPrefix(keys[1], "alert/KubePodPending/"), "%v", keys)
	require.Equal(t, []string{"failures/eu-1", "nodes/eu-2"}, keys[2:])

	topo.Actions = []Action{
		{Cluster: "eu-2", Node: "n1", IncidentKey: "nodes/eu-2", What: "drain of Node n1 in eu-2 (remediation rem-1)"},
		{Cluster: "eu-1", Namespace: "catalog", Workload: "search", IncidentKey: "rollout/catalog/search", What: "rollback of Deployment catalog/search in eu-1 (remediation rem-2)"},
		{Cluster: "us-1", Node: "n1", IncidentKey: "nodes/us-1", What: "drain of Node n1 in us-1 (remediation rem-3)"},
	}
	gs = Correlate(alerts, topo, DefaultRules)
	require.Equal(t, []string{"nodes/eu-2", "rollout/catalog/search"}, keysOf(gs), "one incident per real problem")
	require.Len(t, gs[0].Alerts, 3)
	require.Equal(t, "FleetClusterNodesNotReady in cluster eu-2", gs[0].RootCause)
	require.Contains(t, gs[0].Explanation, "Alerts about pending or failing pods here are expected while fleetwatch acts: drain of Node n1 in eu-2 (remediation rem-1).")
	// The rollout incident's own alerts are gone (the rollback works); the crash loop it
	// causes meanwhile keeps it, and says what fleetwatch does.
	require.Equal(t, "rollback of Deployment catalog/search in eu-1 (remediation rem-2)", gs[1].RootCause)
	require.Equal(t, []string{"eu-1"}, gs[1].Clusters)

	// A failover's workload failing in the cluster it moves to joins the lost cluster's
	// incident, without making that cluster part of it.
	lost := []Alert{
		alert(0, "alertname", "FleetClusterSilent", "cluster", "us-1", "severity", "critical"),
		alert(time.Minute, "alertname", "KubePodCrashLooping", "cluster", "eu-1", "namespace", "catalog", "pod", "search-1", "severity", "warning"),
	}
	topo.Actions = []Action{{Cluster: "eu-1", Namespace: "catalog", Workload: "search", IncidentKey: "cluster/us-1", What: "failover of Deployment catalog/search in eu-1 (remediation rem-4)"}}
	gs = Correlate(lost, topo, DefaultRules)
	require.Equal(t, []string{"cluster/us-1"}, keysOf(gs))
	require.Len(t, gs[0].Alerts, 2)
	require.Equal(t, []string{"us-1"}, gs[0].Clusters)
}
