package dashboards

import (
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/fleetwatch/fleetwatch/rules/pack"
)

// The selected workload: a Deployment in a namespace.
const wf = `namespace="$namespace", deployment="$deployment"`

// deploymentPods is 1 for each pod of the selected Deployment, by (cluster, namespace, pod):
// the pods its ReplicaSets own (kube_pod_owner), the ReplicaSets it owns
// (kube_replicaset_owner). Joining by owner, not by pod name prefix, keeps "api" from matching
// the pods of "api-gateway".
const deploymentPods = `
	max by (cluster, namespace, pod) (
	    label_replace(kube_pod_owner{` + cf + `, namespace="$namespace", owner_kind="ReplicaSet"}, "replicaset", "$1", "owner_name", "(.*)")
	  * on (cluster, namespace, replicaset) group_left ()
	    max by (cluster, namespace, replicaset) (kube_replicaset_owner{` + cf + `, namespace="$namespace", owner_kind="Deployment", owner_name="$deployment"})
	)`

// ofDeployment restricts the per-pod series sel to the selected Deployment's pods.
func ofDeployment(sel string) string {
	return "  " + sel + "\n* on (cluster, namespace, pod) group_left ()\n" + indent(dedent(deploymentPods), "  ")
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

// workloads: one Deployment in every cluster side by side, so a cluster whose replicas,
// restarts or image differ stands out.
func workloads(e *env) *dashboard.DashboardBuilder {
	t := e.t
	b := board(UIDWorkloads, titleWorkloads,
		"One Deployment in every cluster that runs it: replicas, restarts and images side by side, so drift between clusters shows at a glance.",
		SourceView).
		WithVariable(clusterVar(SourceView)).
		WithVariable(queryVar(varNamespace, "Namespace", `label_values(kube_deployment_spec_replicas{`+cf+`}, namespace)`)).
		WithVariable(queryVar(varDeployment, "Deployment", `label_values(kube_deployment_spec_replicas{`+cf+`, namespace="$namespace"}, deployment)`))

	cols := []column{
		{ref: "A", name: "Desired replicas", decimals: ptr(0.0)},
		{ref: "B", name: "Available", decimals: ptr(0.0)},
		{ref: "C", name: "Unavailable", decimals: ptr(0.0), thresholds: ptr(thresholdsValue(green, step{1, orange}))},
		{ref: "D", name: "Restarts (time range)", decimals: ptr(0.0),
			description: "Container restarts of the Deployment's current pods over the dashboard's time range."},
		{ref: "E", name: "Crash-loop restarts / min", decimals: ptr(1.0),
			description: "Restarts a minute of the Deployment's containers in CrashLoopBackOff (the rule pack's per-workload series, summed over its ReplicaSets). " + pack.AlertWorkloadCrashLooping + " fires above rules.pack.crash_loop_per_minute.",
			thresholds:  ptr(thresholdsValue(green, step{above(t.CrashLoopPerMinute), e.color(pack.AlertWorkloadCrashLooping)}))},
	}
	perCluster := tablePanel("$namespace/$deployment per cluster", "One row per cluster running the Deployment.", 24, 7).
		WithTarget(tableQuery("A", `sum by (cluster) (kube_deployment_spec_replicas{`+cf+`, `+wf+`})`)).
		WithTarget(tableQuery("B", `sum by (cluster) (kube_deployment_status_replicas_available{`+cf+`, `+wf+`})`)).
		WithTarget(tableQuery("C", `sum by (cluster) (kube_deployment_status_replicas_unavailable{`+cf+`, `+wf+`})`)).
		WithTarget(tableQuery("D", "sum by (cluster) (\n"+indent(ofDeployment(`increase(kube_pod_container_status_restarts_total{`+cf+`, namespace="$namespace"}[$__range])`), "  ")+"\n)")).
		// The pack records crash loops per ReplicaSet; its ReplicaSets are the Deployment's.
		// Clusters where it does not crash-loop get 0.
		WithTarget(tableQuery("E", `
			  sum by (cluster) (
			      `+pack.RecordWorkloadCrashLoopRate+`{`+cf+`, namespace="$namespace", owner_kind="ReplicaSet"}
			    * on (cluster, namespace, owner_name) group_left ()
			      label_replace(
			        max by (cluster, namespace, replicaset) (kube_replicaset_owner{`+cf+`, namespace="$namespace", owner_kind="Deployment", owner_name="$deployment"}),
			        "owner_name", "$1", "replicaset", "(.*)"
			      )
			  )
			or on (cluster)
			  0 * sum by (cluster) (kube_deployment_spec_replicas{`+cf+`, `+wf+`})`)).
		WithTransformation(mergeTables()).
		WithTransformation(organize([]string{"Time"}, append([]string{"cluster"}, refFields(cols)...))).
		OverrideByName("cluster", []dashboard.DynamicConfigValue{{Id: "displayName", Value: "Cluster"}, {Id: "links", Value: linkToCluster()}}).
		SortBy([]cog.Builder[common.TableSortByFieldState]{common.NewTableSortByFieldStateBuilder().DisplayName("Cluster")})
	for _, c := range cols {
		perCluster.OverrideByName(valueField(c.ref), c.properties())
	}
	b.WithPanel(perCluster)

	b.WithPanel(tablePanel("Images per cluster",
		"Each image the Deployment's containers run, per cluster, with the share of the clusters running the namespace/container that run this image (the rule pack's image drift series). Below 100%, not every cluster runs it; "+pack.AlertImageDrift+" fires for the clusters on an image that is not the most common one, after rules.pack.drift_for.", 24, 8).
		WithTarget(tableQuery("A", "count by (cluster, container, image) (\n"+
			indent(ofDeployment(`kube_pod_container_info{`+cf+`, namespace="$namespace"}`), "  ")+"\n)")).
		WithTarget(tableQuery("B", "  group by (cluster, container, image) (\n"+
			indent(ofDeployment(`kube_pod_container_info{`+cf+`, namespace="$namespace"}`), "    ")+"\n  )\n"+
			"* on (cluster, container, image) group_left ()\n"+
			"  "+pack.RecordImageShare+`{`+cf+`, namespace="$namespace"}`)).
		WithTransformation(mergeTables()).
		WithTransformation(organize([]string{"Time"}, []string{"cluster", "container", "image", valueField("A"), valueField("B")})).
		OverrideByName("cluster", []dashboard.DynamicConfigValue{{Id: "displayName", Value: "Cluster"}}).
		OverrideByName(valueField("A"), column{name: "Containers", decimals: ptr(0.0)}.properties()).
		OverrideByName(valueField("B"), column{name: "Clusters running this image", unit: "percentunit", decimals: ptr(0.0),
			thresholds: ptr(thresholdsValue(e.color(pack.AlertImageDrift), step{1, green}))}.properties()).
		SortBy([]cog.Builder[common.TableSortByFieldState]{common.NewTableSortByFieldStateBuilder().DisplayName("Cluster")}))

	b.WithPanel(timeSeries("Available replicas", "Available and desired replicas of the Deployment, per cluster.", 12, 8).
		WithTarget(query("A", `sum by (cluster) (kube_deployment_status_replicas_available{`+cf+`, `+wf+`})`, "{{cluster}} available")).
		WithTarget(query("B", `sum by (cluster) (kube_deployment_spec_replicas{`+cf+`, `+wf+`})`, "{{cluster}} desired")).
		Min(0).Decimals(0))
	b.WithPanel(timeSeries("Container restarts", "Container restarts of the Deployment's pods, per cluster.", 12, 8).
		WithTarget(query("A", "sum by (cluster) (\n"+
			indent(ofDeployment(`increase(kube_pod_container_status_restarts_total{`+cf+`, namespace="$namespace"}[$__rate_interval])`), "  ")+"\n)", "{{cluster}}")).
		Min(0))
	b.WithPanel(timeSeries("Containers per image", "The Deployment's containers per image and cluster: a rollout moves them from one image to the next; a cluster left on another image is drift.", 24, 8).
		WithTarget(query("A", "count by (cluster, image) (\n"+
			indent(ofDeployment(`kube_pod_container_info{`+cf+`, namespace="$namespace"}`), "  ")+"\n)", "{{cluster}} {{image}}")).
		Min(0).Decimals(0))
	return b
}
