package pack

// The pack's recorded series that other parts of fleetwatch read (placement, the demo, the
// dashboards): import these instead of typing the names again. Each is the `record:` name of a
// rule in the templates, and TestRecordedNames fails when one is not, so renaming a rule in
// the pack cannot leave a reader silently empty. rules/README.md explains each.
const (
	// RecordNodeReadyRatio is the share of a cluster's nodes that are Ready, 0 to 1
	// (FleetClusterNodesNotReady).
	RecordNodeReadyRatio = "cluster:kube_node_ready:ratio"
	// RecordCPURequests and RecordMemoryRequests are the requests of a cluster's Pending and
	// Running pods, in cores and bytes.
	RecordCPURequests    = "cluster:kube_pod_container_resource_requests_cpu:sum"
	RecordMemoryRequests = "cluster:kube_pod_container_resource_requests_memory:sum"
	// RecordCPUAllocatable and RecordMemoryAllocatable are a cluster's allocatable CPU (cores)
	// and memory (bytes).
	RecordCPUAllocatable    = "cluster:kube_node_status_allocatable_cpu:sum"
	RecordMemoryAllocatable = "cluster:kube_node_status_allocatable_memory:sum"
	// RecordCPURequestsRatio and RecordMemoryRequestsRatio are requests / allocatable, what the
	// saturation alerts compare with rules.pack.saturation_ratio.
	RecordCPURequestsRatio    = "cluster:kube_pod_container_resource_requests_cpu:ratio"
	RecordMemoryRequestsRatio = "cluster:kube_pod_container_resource_requests_memory:ratio"
	// RecordCrashLoopRate and RecordWorkloadCrashLoopRate are CrashLoopBackOff restarts a
	// minute, per cluster and per workload.
	RecordCrashLoopRate         = "cluster:kube_pod_container_crashloop_restarts_per_minute:rate2m"
	RecordWorkloadCrashLoopRate = "namespace_workload:kube_pod_container_crashloop_restarts_per_minute:rate2m"
	// RecordIngestAge is the seconds since fleetwatch last stored data from a cluster
	// (FleetClusterSilent).
	RecordIngestAge = "cluster:fleetwatch_cluster_ingest_age_seconds:max"
	// RecordAPIServerUp is 1 while any of a cluster's API servers is up.
	RecordAPIServerUp = "cluster:apiserver_up:max"
)

// RecordImageShare is, for each cluster, namespace, container and image, the share of the
// clusters running that namespace/container that run this image (FleetImageDrift).
const RecordImageShare = "cluster_namespace_container_image:kube_pod_container_info_clusters:ratio"

// The pack's alerts, by their alertname. Correlation gives them their roles (a silent cluster
// explains its other alerts, ...), the dashboards color panels with their severities. Each is an
// `alert:` of the templates and each alert of the templates is one of these: TestAlertNames
// fails otherwise, so renaming an alert in the pack means renaming it here, and every reader
// follows. rules/README.md explains each.
const (
	// AlertClusterNodesNotReady: the share of a cluster's nodes that are Ready is below
	// rules.pack.node_ready_ratio (critical).
	AlertClusterNodesNotReady = "FleetClusterNodesNotReady"
	// AlertClusterCPURequestsSaturated and AlertClusterMemoryRequestsSaturated: a cluster's
	// requests over allocatable are above rules.pack.saturation_ratio (warning).
	AlertClusterCPURequestsSaturated    = "FleetClusterCPURequestsSaturated"
	AlertClusterMemoryRequestsSaturated = "FleetClusterMemoryRequestsSaturated"
	// AlertClusterCrashLooping: a cluster's containers in CrashLoopBackOff restart more often
	// than rules.pack.crash_loop_per_minute (critical); AlertWorkloadCrashLooping the same for
	// one workload (warning).
	AlertClusterCrashLooping  = "FleetClusterCrashLooping"
	AlertWorkloadCrashLooping = "FleetWorkloadCrashLooping"
	// AlertClusterSilent: fleetwatch stored nothing from a cluster for longer than
	// rules.pack.silent_after (critical).
	AlertClusterSilent = "FleetClusterSilent"
	// AlertClusterControlPlaneDown: every API server of a cluster is down (critical).
	AlertClusterControlPlaneDown = "FleetClusterControlPlaneDown"
	// AlertClusterAPIUnreachable: fleetwatch's own probe of a cluster's API server has failed
	// for rules.pack.api_unreachable_for while the cluster's data is still fresh, a one-sided
	// partition: actions on the cluster cannot run (warning).
	AlertClusterAPIUnreachable = "FleetClusterAPIUnreachable"
	// AlertImageDrift: a namespace/container runs different images in different clusters
	// (info).
	AlertImageDrift = "FleetImageDrift"
)
