package dashboards

// The rule pack's recorded series the dashboards read (rules/README.md explains each). The
// tests render the pack and fail when one of these is not one of its recording rules, so a
// rule renamed in the pack cannot leave a dashboard silently empty.
const (
	recNodeReady         = "cluster:kube_node_ready:ratio"
	recCPURequests       = "cluster:kube_pod_container_resource_requests_cpu:sum"
	recMemoryRequests    = "cluster:kube_pod_container_resource_requests_memory:sum"
	recCPUAllocatable    = "cluster:kube_node_status_allocatable_cpu:sum"
	recMemoryAllocatable = "cluster:kube_node_status_allocatable_memory:sum"
	recCPURatio          = "cluster:kube_pod_container_resource_requests_cpu:ratio"
	recMemoryRatio       = "cluster:kube_pod_container_resource_requests_memory:ratio"
	recCrashLoop         = "cluster:kube_pod_container_crashloop_restarts_per_minute:rate2m"
	recWorkloadCrash     = "namespace_workload:kube_pod_container_crashloop_restarts_per_minute:rate2m"
	recIngestAge         = "cluster:fleetwatch_cluster_ingest_age_seconds:max"
	recAPIServerUp       = "cluster:apiserver_up:max"
	recImageShare        = "cluster_namespace_container_image:kube_pod_container_info_clusters:ratio"
)

// cf is the cluster filter every selector of a per-cluster dashboard carries.
const cf = `cluster=~"$cluster"`

// jf is the job filter of every selector on the Prometheus that scrapes fleetwatch.
const jf = `job=~"$job"`

// The pack's alerts whose thresholds color the panels; a crossing takes the color of the
// alert's severity (env.color).
const (
	alertNodesNotReady   = "FleetClusterNodesNotReady"
	alertCPUSaturated    = "FleetClusterCPURequestsSaturated"
	alertMemorySaturated = "FleetClusterMemoryRequestsSaturated"
	alertCrashLooping    = "FleetClusterCrashLooping"
	alertWorkloadCrash   = "FleetWorkloadCrashLooping"
	alertSilent          = "FleetClusterSilent"
	alertControlPlane    = "FleetClusterControlPlaneDown"
)
