package dashboards

import (
	"strconv"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/rules/pack"
)

// fleetOverview: one row per cluster with its health at the pack's thresholds, the fleet's
// totals, and the alerts firing now.
func fleetOverview(e *env) *dashboard.DashboardBuilder {
	t := e.t
	silent := strconv.FormatFloat(e.silentAfter(), 'g', -1, 64)
	b := board(UIDOverview, titleOverview,
		"Every cluster of the fleet on one page: one row per cluster, colored at the rule pack's thresholds (rules.pack in fleetwatch.yml), fleet totals, and the alerts firing now.",
		SourceView).
		WithVariable(clusterVar(SourceView))

	b.WithRow(dashboard.NewRowBuilder("Fleet"))
	b.WithPanel(statPanel("Clusters", "The selected clusters: by default every cluster configured in fleetwatch.", 3, 4).
		WithTarget(instant("A", `count(`+pack.RecordIngestAge+`{`+cf+`})`, "")).
		Thresholds(thresholds(text)))
	b.WithPanel(statPanel("Silent clusters",
		"Clusters fleetwatch stored nothing from for longer than rules.pack.silent_after ("+t.SilentAfter.String()+"): "+pack.AlertClusterSilent+" fires for each.", 3, 4).
		WithTarget(instant("A", `sum(`+pack.RecordIngestAge+`{`+cf+`} > bool `+silent+`)`, "")).
		Thresholds(thresholds(green, step{1, e.color(pack.AlertClusterSilent)})))
	b.WithPanel(statPanel("Nodes Ready", "Nodes whose Ready condition is true, and all nodes.", 3, 4).
		WithTarget(instant("A", `sum(max by (cluster, node) (kube_node_status_condition{`+cf+`, condition="Ready", status="true"}))`, "Ready")).
		WithTarget(instant("B", `count(max by (cluster, node) (kube_node_status_condition{`+cf+`, condition="Ready"}))`, "Nodes")).
		TextMode(common.BigValueTextModeValueAndName).Thresholds(thresholds(text)))
	b.WithPanel(statPanel("Pending pods", "Pods in phase Pending: not scheduled yet, or waiting for their containers to start.", 3, 4).
		WithTarget(instant("A", `sum(kube_pod_status_phase{`+cf+`, phase="Pending"})`, "")).
		Thresholds(thresholds(text)))
	b.WithPanel(statPanel("CPU requests",
		"CPU requested by Pending and Running pods over allocatable CPU, all selected clusters together. Colored at rules.pack.saturation_ratio, the threshold of each cluster's "+pack.AlertClusterCPURequestsSaturated+".", 3, 4).
		WithTarget(instant("A", `sum(`+pack.RecordCPURequests+`{`+cf+`}) / sum(`+pack.RecordCPUAllocatable+`{`+cf+`})`, "")).
		Unit("percentunit").Decimals(1).
		Thresholds(thresholds(green, step{above(t.SaturationRatio), e.color(pack.AlertClusterCPURequestsSaturated)})))
	b.WithPanel(statPanel("Memory requests",
		"Memory requested by Pending and Running pods over allocatable memory, all selected clusters together. Colored at rules.pack.saturation_ratio, the threshold of each cluster's "+pack.AlertClusterMemoryRequestsSaturated+".", 3, 4).
		WithTarget(instant("A", `sum(`+pack.RecordMemoryRequests+`{`+cf+`}) / sum(`+pack.RecordMemoryAllocatable+`{`+cf+`})`, "")).
		Unit("percentunit").Decimals(1).
		Thresholds(thresholds(green, step{above(t.SaturationRatio), e.color(pack.AlertClusterMemoryRequestsSaturated)})))
	b.WithPanel(statPanel("Crash-loop restarts / min", "Restarts a minute of containers in CrashLoopBackOff, all selected clusters together.", 3, 4).
		WithTarget(instant("A", `sum(`+pack.RecordCrashLoopRate+`{`+cf+`})`, "")).
		Decimals(1).Thresholds(thresholds(text)))
	b.WithPanel(statPanel("Firing alerts", "Alerts firing on the fleet view: the rule pack's and your own rules'.", 3, 4).
		WithTarget(instant("A", `count(ALERTS{`+cf+`, alertstate="firing"}) or vector(0)`, "")).
		Thresholds(thresholds(green, step{1, orange})))

	b.WithRow(dashboard.NewRowBuilder("Clusters"))
	cols := []column{
		{ref: "A", name: "Nodes", description: "Nodes of the cluster (kube_node_info)."},
		{ref: "B", name: "Nodes Ready", unit: "percentunit", decimals: ptr(0.0),
			description: "Share of the nodes that are Ready. Red below rules.pack.node_ready_ratio (" + strconv.FormatFloat(t.NodeReadyRatio*100, 'g', 4, 64) + "%), where " + pack.AlertClusterNodesNotReady + " fires.",
			thresholds:  ptr(thresholdsValue(e.color(pack.AlertClusterNodesNotReady), step{t.NodeReadyRatio, green}))},
		{ref: "C", name: "CPU requests", unit: "percentunit", decimals: ptr(0.0),
			description: "CPU requests of Pending and Running pods over allocatable CPU. Colored above rules.pack.saturation_ratio, where " + pack.AlertClusterCPURequestsSaturated + " fires (after saturation_for).",
			thresholds:  ptr(thresholdsValue(green, step{above(t.SaturationRatio), e.color(pack.AlertClusterCPURequestsSaturated)}))},
		{ref: "D", name: "Memory requests", unit: "percentunit", decimals: ptr(0.0),
			description: "Memory requests of Pending and Running pods over allocatable memory. Colored above rules.pack.saturation_ratio, where " + pack.AlertClusterMemoryRequestsSaturated + " fires (after saturation_for).",
			thresholds:  ptr(thresholdsValue(green, step{above(t.SaturationRatio), e.color(pack.AlertClusterMemoryRequestsSaturated)}))},
		{ref: "E", name: "Crash-loop restarts / min", decimals: ptr(1.0),
			description: "Restarts a minute of containers in CrashLoopBackOff. Colored above rules.pack.crash_loop_per_minute, where " + pack.AlertClusterCrashLooping + " fires (after crash_loop_for).",
			thresholds:  ptr(thresholdsValue(green, step{above(t.CrashLoopPerMinute), e.color(pack.AlertClusterCrashLooping)}))},
		{ref: "F", name: "Data age", unit: "s", decimals: ptr(0.0),
			description: "Seconds since fleetwatch last stored data from the cluster. Colored above rules.pack.silent_after, where " + pack.AlertClusterSilent + " fires.",
			thresholds:  ptr(thresholdsValue(green, step{above(e.silentAfter()), e.color(pack.AlertClusterSilent)}))},
		{ref: "G", name: "API server",
			description: "Whether at least one API server of the cluster answers its scrape. " + pack.AlertClusterControlPlaneDown + " fires when none has for rules.pack.control_plane_for.",
			mappings:    []dashboard.ValueMapping{textMapping(map[string][2]string{"0": {"down", e.color(pack.AlertClusterControlPlaneDown)}, "1": {"up", green}})},
			thresholds:  ptr(thresholdsValue(e.color(pack.AlertClusterControlPlaneDown), step{1, green}))},
		{ref: "I", name: "fleetwatch → API",
			description: "Whether fleetwatch itself reaches the cluster's API server: its last probe (GET /readyz with the cluster's kubeconfig_file, every api_probe.interval) was answered 200 ok. " + pack.AlertClusterAPIUnreachable + " fires when it was not for rules.pack.api_unreachable_for while the cluster's data is fresh. \"not probed\": the cluster has no kubeconfig_file.",
			mappings: []dashboard.ValueMapping{
				textMapping(map[string][2]string{"0": {"unreachable", e.color(pack.AlertClusterAPIUnreachable)}, "1": {"reachable", green}}),
				specialMapping(dashboard.SpecialValueMatchNullAndNan, "not probed", text),
			},
			thresholds: ptr(thresholdsValue(e.color(pack.AlertClusterAPIUnreachable), step{1, green}))},
		{ref: "H", name: "Firing alerts",
			description: "Alerts firing for the cluster on the fleet view (ALERTS). fleetwatch correlates them into incidents, but exports incident counts per severity and scope only, not per cluster: this is the per-cluster proxy.",
			thresholds:  ptr(thresholdsValue(green, step{1, orange}))},
	}
	fleet := tablePanel("Cluster health",
		"One row per cluster. A cell turns the color of the alert's severity where the rule pack's alert fires; click a cluster for its detail.", 24, 10).
		WithTarget(tableQuery("A", `count by (cluster) (kube_node_info{`+cf+`})`)).
		WithTarget(tableQuery("B", pack.RecordNodeReadyRatio+`{`+cf+`}`)).
		WithTarget(tableQuery("C", pack.RecordCPURequestsRatio+`{`+cf+`}`)).
		WithTarget(tableQuery("D", pack.RecordMemoryRequestsRatio+`{`+cf+`}`)).
		WithTarget(tableQuery("E", pack.RecordCrashLoopRate+`{`+cf+`}`)).
		WithTarget(tableQuery("F", pack.RecordIngestAge+`{`+cf+`}`)).
		WithTarget(tableQuery("G", pack.RecordAPIServerUp+`{`+cf+`}`)).
		// Clusters without a kubeconfig_file are not probed; they get NaN ("not probed")
		// rather than an empty cell.
		WithTarget(tableQuery("I", `
			  max by (cluster) (`+collector.APIUpMetric+`{`+cf+`})
			or on (cluster)
			  NaN * `+pack.RecordIngestAge+`{`+cf+`}`)).
		// A cluster without firing alerts has no ALERTS series; it gets a 0 rather than an
		// empty cell.
		WithTarget(tableQuery("H", `
			  count by (cluster) (ALERTS{`+cf+`, alertstate="firing"})
			or on (cluster)
			  0 * `+pack.RecordIngestAge+`{`+cf+`}`)).
		WithTransformation(mergeTables()).
		WithTransformation(organize([]string{"Time"}, append([]string{"cluster"}, refFields(cols)...))).
		OverrideByName("cluster", []dashboard.DynamicConfigValue{
			{Id: "displayName", Value: "Cluster"},
			{Id: "links", Value: linkToCluster()},
		}).
		SortBy([]cog.Builder[common.TableSortByFieldState]{common.NewTableSortByFieldStateBuilder().DisplayName("Cluster")})
	for _, c := range cols {
		fleet.OverrideByName(valueField(c.ref), c.properties())
	}
	b.WithPanel(fleet)

	b.WithRow(dashboard.NewRowBuilder("Firing alerts"))
	b.WithPanel(tablePanel("Alerts firing now",
		"Alerts firing now on the fleet view, newest first, with all their labels. An alert whose cluster went silent stays firing (held, annotation fleetwatch_data=stale) until data returns.", 24, 10).
		// ALERTS_FOR_STATE holds each active alert's active-since time; "and" keeps the
		// firing ones (ALERTS has alertstate, ALERTS_FOR_STATE does not).
		WithTarget(tableQuery("A", `
			  ALERTS_FOR_STATE{`+cf+`} * 1000
			and ignoring (alertstate)
			  ALERTS{`+cf+`, alertstate="firing"}`)).
		WithTransformation(organize([]string{"Time"}, []string{"cluster", "alertname", "severity"})).
		OverrideByName("Value", []dashboard.DynamicConfigValue{
			{Id: "displayName", Value: "Firing since"},
			{Id: "unit", Value: "dateTimeFromNow"},
		}).
		OverrideByName("cluster", []dashboard.DynamicConfigValue{{Id: "links", Value: linkToCluster()}}).
		SortBy([]cog.Builder[common.TableSortByFieldState]{common.NewTableSortByFieldStateBuilder().DisplayName("Firing since").Desc(true)}))
	return b
}

// refFields are the value fields of the columns, in order.
func refFields(cols []column) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = valueField(c.ref)
	}
	return out
}
