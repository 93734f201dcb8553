// Package kubelab gives the fleet lab's clusters real control planes: per cluster an etcd, a
// kube-apiserver, a kube-controller-manager, a kube-scheduler and a kube-state-metrics, all
// real binaries (`make peers` builds them from the Go module proxy), started on loopback with
// free ports, a directory of their own and certificates of their own, the way
// controller-runtime's envtest starts them. A kubeconfig per cluster lands in that directory,
// so `kubectl --kubeconfig` works against each lab cluster by hand.
//
// What a kubelet would do, the data plane here does through the API server, never around it:
// nodes register with capacity and allocatable and heartbeat their Lease and Ready condition;
// pods the scheduler bound get a Running status, crash-loop when their image is bad, and are
// finalized when they are deleted or evicted. Deployments, ReplicaSets, PodDisruptionBudget
// status, garbage collection and the taints of NotReady nodes are the real
// kube-controller-manager's work; placement is the real kube-scheduler's.
//
// Faults: an API server can be stopped and started again (control plane down), and each
// cluster's API server is also reachable through a TCP proxy (the path fleetwatch uses) that
// can be cut or slowed without touching the cluster.
//
// Fleet implements sim.Actuator, so the simulator's scenarios act through the API.
package kubelab
