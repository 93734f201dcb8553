package dashboards

import (
	"strconv"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/fleetwatch/fleetwatch/rules/pack"
)

// clusterDetail: one or more clusters over time: nodes, request saturation, crash-looping
// workloads, pending pods, control plane and data freshness.
func clusterDetail(e *env) *dashboard.DashboardBuilder {
	t := e.t
	b := board(UIDCluster, titleCluster,
		"The selected clusters over time: nodes, request saturation, crash-looping workloads, pending pods, control plane and data freshness. Dashed lines are the rule pack's thresholds.",
		SourceView).
		WithVariable(clusterVar(SourceView))

	b.WithRow(dashboard.NewRowBuilder("Nodes"))
	b.WithPanel(thresholdLine(timeSeries("Nodes Ready",
		"Share of each cluster's schedulable (not cordoned) nodes that are Ready ("+pack.RecordNodeReadyRatio+"). "+pack.AlertClusterNodesNotReady+" fires below the dashed line, rules.pack.node_ready_ratio ("+strconv.FormatFloat(t.NodeReadyRatio*100, 'g', 4, 64)+"%), after node_ready_for.", 12, 8)).
		WithTarget(query("A", pack.RecordNodeReadyRatio+`{`+cf+`}`, "{{cluster}}")).
		Unit("percentunit").Min(0).Max(1).
		Thresholds(thresholds(e.color(pack.AlertClusterNodesNotReady), step{t.NodeReadyRatio, green})))
	b.WithPanel(timeSeries("Nodes by Ready status",
		"Nodes per status of their Ready condition: true, false (the kubelet reports NotReady) or unknown (the kubelet stopped reporting).", 12, 8).
		WithTarget(query("A", `sum by (cluster, status) (kube_node_status_condition{`+cf+`, condition="Ready"})`, "{{cluster}} {{status}}")).
		Min(0).Decimals(0))
	b.WithPanel(tablePanel("Nodes not Ready", "Nodes whose Ready condition is false or unknown now. Empty while every node is Ready.", 12, 8).
		WithTarget(tableQuery("A", `max by (cluster, node, status) (kube_node_status_condition{`+cf+`, condition="Ready", status!="true"}) == 1`)).
		WithTransformation(organize([]string{"Time", "Value"}, []string{"cluster", "node", "status"})).
		OverrideByName("cluster", []dashboard.DynamicConfigValue{{Id: "displayName", Value: "Cluster"}}).
		OverrideByName("status", []dashboard.DynamicConfigValue{{Id: "displayName", Value: "Ready"}}))
	b.WithPanel(timeSeries("Node conditions",
		"Nodes under memory, disk or PID pressure or with their network unavailable: the kubelet evicts pods and stops admitting new ones on them.", 12, 8).
		WithTarget(query("A", `sum by (cluster, condition) (kube_node_status_condition{`+cf+`, condition=~"MemoryPressure|DiskPressure|PIDPressure|NetworkUnavailable", status="true"})`, "{{cluster}} {{condition}}")).
		Min(0).Decimals(0))

	b.WithRow(dashboard.NewRowBuilder("Request saturation"))
	for _, r := range []struct {
		title, resource, ratio, alert string
	}{
		{"CPU requests / allocatable", "CPU", pack.RecordCPURequestsRatio, pack.AlertClusterCPURequestsSaturated},
		{"Memory requests / allocatable", "memory", pack.RecordMemoryRequestsRatio, pack.AlertClusterMemoryRequestsSaturated},
	} {
		b.WithPanel(thresholdLine(timeSeries(r.title,
			"Requests of Pending and Running pods over allocatable "+r.resource+" ("+r.ratio+"). "+r.alert+" fires above the dashed line, rules.pack.saturation_ratio ("+strconv.FormatFloat(t.SaturationRatio*100, 'g', 4, 64)+"%), after saturation_for; new pods may stay Pending.", 12, 8)).
			WithTarget(query("A", r.ratio+`{`+cf+`}`, "{{cluster}}")).
			Unit("percentunit").Min(0).
			Thresholds(thresholds(green, step{above(t.SaturationRatio), e.color(r.alert)})))
	}
	b.WithPanel(timeSeries("CPU cores", "CPU requested by Pending and Running pods, and allocatable on the nodes.", 12, 8).
		WithTarget(query("A", pack.RecordCPURequests+`{`+cf+`}`, "{{cluster}} requested")).
		WithTarget(query("B", pack.RecordCPUAllocatable+`{`+cf+`}`, "{{cluster}} allocatable")).
		Unit("short").Min(0))
	b.WithPanel(timeSeries("Memory", "Memory requested by Pending and Running pods, and allocatable on the nodes.", 12, 8).
		WithTarget(query("A", pack.RecordMemoryRequests+`{`+cf+`}`, "{{cluster}} requested")).
		WithTarget(query("B", pack.RecordMemoryAllocatable+`{`+cf+`}`, "{{cluster}} allocatable")).
		Unit("bytes").Min(0))

	b.WithRow(dashboard.NewRowBuilder("Workloads"))
	b.WithPanel(tablePanel("Top crash-looping workloads",
		"The 10 workloads whose containers in CrashLoopBackOff restart most often, named by the pods' controller (for a Deployment, its ReplicaSet). "+pack.AlertWorkloadCrashLooping+" fires above rules.pack.crash_loop_per_minute after crash_loop_for. Empty while nothing crash-loops.", 12, 8).
		WithTarget(tableQuery("A", `topk(10, `+pack.RecordWorkloadCrashLoopRate+`{`+cf+`})`)).
		WithTransformation(organize([]string{"Time"}, []string{"cluster", "namespace", "owner_kind", "owner_name", "Value"})).
		OverrideByName("cluster", []dashboard.DynamicConfigValue{{Id: "displayName", Value: "Cluster"}}).
		OverrideByName("owner_kind", []dashboard.DynamicConfigValue{{Id: "displayName", Value: "Kind"}}).
		OverrideByName("owner_name", []dashboard.DynamicConfigValue{{Id: "displayName", Value: "Workload"}}).
		OverrideByName("Value", column{name: "Restarts / min", decimals: ptr(1.0),
			thresholds: ptr(thresholdsValue(green, step{above(t.CrashLoopPerMinute), e.color(pack.AlertWorkloadCrashLooping)}))}.properties()).
		SortBy([]cog.Builder[common.TableSortByFieldState]{common.NewTableSortByFieldStateBuilder().DisplayName("Restarts / min").Desc(true)}))
	b.WithPanel(thresholdLine(timeSeries("Crash-loop restarts / min",
		"Restarts a minute of the cluster's containers in CrashLoopBackOff ("+pack.RecordCrashLoopRate+"). "+pack.AlertClusterCrashLooping+" fires above the dashed line, rules.pack.crash_loop_per_minute, after crash_loop_for.", 12, 8)).
		WithTarget(query("A", pack.RecordCrashLoopRate+`{`+cf+`}`, "{{cluster}}")).
		Min(0).Decimals(1).
		Thresholds(thresholds(green, step{above(t.CrashLoopPerMinute), e.color(pack.AlertClusterCrashLooping)})))
	b.WithPanel(timeSeries("Containers in CrashLoopBackOff", "Containers waiting with reason CrashLoopBackOff, by namespace. Empty while nothing crash-loops.", 12, 8).
		WithTarget(query("A", `sum by (cluster, namespace) (kube_pod_container_status_waiting_reason{`+cf+`, reason="CrashLoopBackOff"})`, "{{cluster}} {{namespace}}")).
		Min(0).Decimals(0))
	b.WithPanel(timeSeries("Pending pods", "Pods in phase Pending: not scheduled yet (no node with room: see request saturation) or waiting for their containers to start.", 12, 8).
		WithTarget(query("A", `sum by (cluster) (kube_pod_status_phase{`+cf+`, phase="Pending"})`, "{{cluster}}")).
		Min(0).Decimals(0))

	b.WithRow(dashboard.NewRowBuilder("Control plane and data"))
	b.WithPanel(timeSeries("API server up",
		"1 while at least one API server of the cluster answers its scrape ("+pack.RecordAPIServerUp+"). "+pack.AlertClusterControlPlaneDown+" fires at 0 after rules.pack.control_plane_for.", 12, 8).
		WithTarget(query("A", pack.RecordAPIServerUp+`{`+cf+`}`, "{{cluster}}")).
		Min(0).Max(1).Decimals(0))
	b.WithPanel(thresholdLine(timeSeries("Data age",
		"Seconds since fleetwatch last stored data from the cluster ("+pack.RecordIngestAge+"). "+pack.AlertClusterSilent+" fires above the dashed line, rules.pack.silent_after ("+t.SilentAfter.String()+").", 12, 8)).
		WithTarget(query("A", pack.RecordIngestAge+`{`+cf+`}`, "{{cluster}}")).
		Unit("s").Min(0).
		Thresholds(thresholds(green, step{above(e.silentAfter()), e.color(pack.AlertClusterSilent)})))
	return b
}
