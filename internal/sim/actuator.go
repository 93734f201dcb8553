package sim

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// An Actuator carries scenario steps out on real clusters (internal/kubelab: each cluster a
// real API server) instead of on the model. With one set (SetActuator), a step's action goes
// to the Actuator through the clusters' APIs, the truth is what their API objects say, and the
// simulator no longer serves kube-state-metrics series of its own: the real
// kube-state-metrics reads the API objects. Scenarios are checked against the model as
// before, which is the inventory the Actuator materialized.
type Actuator interface {
	// Apply carries out one step on one cluster; now is when the step applies.
	Apply(ctx context.Context, cluster string, st Step, now time.Time) error
	// Truth is a cluster's truth as its API objects give it.
	Truth(cluster string) (ClusterTruth, error)
	// Handler serves the actuator's own endpoints, under /control-planes.
	Handler() http.Handler
}

// actuatorTimeout bounds one step on one cluster (an API server that was stopped is started
// again by recover, which waits for it to be ready).
const actuatorTimeout = 2 * time.Minute

// SetActuator hands the carrying out of steps to a (see Actuator). Set it before starting
// scenarios.
func (s *Sim) SetActuator(a Actuator) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.actuator = a
}

// Inventory is one cluster of the model as plain data, for an Actuator to materialize.
type Inventory struct {
	Nodes       []InventoryNode
	Deployments []InventoryDeployment
}

// InventoryNode is a node with its capacity and allocatable resources.
type InventoryNode struct {
	Name                    string
	ProviderID, SystemUUID  string
	InternalIP, PodCIDR     string
	CPUCapacityMilli        int64
	CPUAllocatableMilli     int64
	MemoryCapacityBytes     int64
	MemoryAllocatableBytes  int64
	StorageCapacityBytes    int64
	StorageAllocatableBytes int64
	Pods                    int64
}

// InventoryDeployment is a deployment of the fleet's catalog; its first container is the
// application, the second, if any, a sidecar.
type InventoryDeployment struct {
	Namespace, Name string
	Replicas        int
	Containers      []InventoryContainer
}

// InventoryContainer is a container of a deployment's pod template.
type InventoryContainer struct {
	Name, Image           string
	CPUMilli, MemoryBytes int64
}

// Inventory returns a cluster's baseline: its nodes and its catalog deployments (not what a
// scenario added).
func (s *Sim) Inventory(cluster string) (Inventory, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.byName[cluster]
	if !ok {
		return Inventory{}, fmt.Errorf("%w %q", ErrUnknownCluster, cluster)
	}
	var inv Inventory
	for _, n := range c.nodes {
		inv.Nodes = append(inv.Nodes, InventoryNode{
			Name: n.name, ProviderID: n.providerID, SystemUUID: n.systemUUID, InternalIP: n.internalIP, PodCIDR: n.podCIDR,
			CPUCapacityMilli: n.cpuCapMilli, CPUAllocatableMilli: n.cpuAllocMilli,
			MemoryCapacityBytes: n.memCap, MemoryAllocatableBytes: n.memAlloc,
			StorageCapacityBytes: n.storageCap, StorageAllocatableBytes: n.storageAlloc, Pods: n.podsCap,
		})
	}
	for _, d := range c.deployments {
		if d.ramp {
			continue
		}
		id := InventoryDeployment{Namespace: d.namespace, Name: d.name, Replicas: len(d.pods)}
		id.Containers = append(id.Containers, InventoryContainer{Name: d.name, Image: d.baseImage, CPUMilli: d.cpuMilli, MemoryBytes: d.memBytes})
		if d.sidecar != nil {
			id.Containers = append(id.Containers, InventoryContainer{Name: d.sidecar.name, Image: d.sidecar.image, CPUMilli: d.sidecar.cpuMilli, MemoryBytes: d.sidecar.memBytes})
		}
		inv.Deployments = append(inv.Deployments, id)
	}
	return inv, nil
}

// Load of a saturation scenario, for an Actuator to create the same load deployment.
const (
	LoadNamespace   = loadNamespace
	LoadDeployment  = loadDeployment
	LoadImage       = loadImage
	LoadPodsPerNode = loadPodsPerNode
	// DefaultRestartsPerMinute is how fast a crash-looping container restarts unless a step
	// says otherwise.
	DefaultRestartsPerMinute = defaultRestartsPerMinute
)
