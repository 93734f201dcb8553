package schedule

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// Workload is a workload's Pending and Running pods in one cluster and what they request.
type Workload struct {
	Cluster   string `json:"cluster"`
	Namespace string `json:"namespace"`
	// Kind and Name are the controlling owner (a ReplicaSet's Deployment); a pod without one
	// is its own workload of kind Pod.
	Kind   string  `json:"kind"`
	Name   string  `json:"name"`
	Pods   int     `json:"pods"`
	CPU    float64 `json:"cpu_cores"`
	Memory float64 `json:"memory_bytes"`
}

// WhatIfRequest asks whether the rest of the fleet can take over the Running and Pending pods
// of the clusters in Fail.
type WhatIfRequest struct {
	Fail []string `json:"fail"`
	// Constraints apply to every moved workload (e.g. allowed regions).
	Constraints Constraints    `json:"constraints"`
	Weights     config.Weights `json:"weights"`
}

// WorkloadMove is where one workload of a failed cluster would go.
type WorkloadMove struct {
	From      string `json:"from"`
	Namespace string `json:"namespace"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Replicas  int    `json:"replicas"`
	// CPUPerReplica and MemoryPerReplica are the workload's requests over its pods.
	CPUPerReplica    float64     `json:"cpu_per_replica_cores"`
	MemoryPerReplica float64     `json:"memory_per_replica_bytes"`
	Placements       []Placement `json:"placements"`
	Unplaced         int         `json:"unplaced"`
	Reason           string      `json:"reason,omitempty"`
}

// ClusterAfter is one cluster before and after the failed clusters' pods moved.
type ClusterAfter struct {
	Cluster string `json:"cluster"`
	Failed  bool   `json:"failed"`
	// Filtered says why a surviving cluster takes nothing (stale, unhealthy, constraints).
	Filtered               Reasons `json:"filtered,omitempty"`
	AllocatableCPU         float64 `json:"allocatable_cpu_cores"`
	RequestedCPUBefore     float64 `json:"requested_cpu_cores_before"`
	RequestedCPUAfter      float64 `json:"requested_cpu_cores_after"`
	AllocatableMemory      float64 `json:"allocatable_memory_bytes"`
	RequestedMemoryBefore  float64 `json:"requested_memory_bytes_before"`
	RequestedMemoryAfter   float64 `json:"requested_memory_bytes_after"`
	CPUSaturationBefore    float64 `json:"cpu_saturation_before"`
	CPUSaturationAfter     float64 `json:"cpu_saturation_after"`
	MemorySaturationBefore float64 `json:"memory_saturation_before"`
	MemorySaturationAfter  float64 `json:"memory_saturation_after"`
	FreeCPUBefore          float64 `json:"free_cpu_cores_before"`
	FreeCPUAfter           float64 `json:"free_cpu_cores_after"`
	FreeMemoryBefore       float64 `json:"free_memory_bytes_before"`
	FreeMemoryAfter        float64 `json:"free_memory_bytes_after"`
	ReceivedReplicas       int     `json:"received_replicas"`
	ReceivedCPU            float64 `json:"received_cpu_cores"`
	ReceivedMemory         float64 `json:"received_memory_bytes"`
	SaturationAboveCeiling bool    `json:"above_ceiling_after"`
}

// Totals are amounts of pods and requests.
type Totals struct {
	Workloads int     `json:"workloads"`
	Pods      int     `json:"pods"`
	CPU       float64 `json:"cpu_cores"`
	Memory    float64 `json:"memory_bytes"`
}

// FleetAfter is the surviving fleet's saturation before and after.
type FleetAfter struct {
	// Over the surviving clusters that have capacity data.
	AllocatableCPU         float64 `json:"allocatable_cpu_cores"`
	AllocatableMemory      float64 `json:"allocatable_memory_bytes"`
	CPUSaturationBefore    float64 `json:"cpu_saturation_before"`
	CPUSaturationAfter     float64 `json:"cpu_saturation_after"`
	MemorySaturationBefore float64 `json:"memory_saturation_before"`
	MemorySaturationAfter  float64 `json:"memory_saturation_after"`
	// FreeCPU and FreeMemory are the room left below the ceiling on clusters that can take pods.
	FreeCPUBefore    float64 `json:"free_cpu_cores_before"`
	FreeCPUAfter     float64 `json:"free_cpu_cores_after"`
	FreeMemoryBefore float64 `json:"free_memory_bytes_before"`
	FreeMemoryAfter  float64 `json:"free_memory_bytes_after"`
}

// WhatIfResult answers a WhatIfRequest.
type WhatIfResult struct {
	Failed []string `json:"failed"`
	// Absorbed is true when every pod of the failed clusters found room below the ceiling.
	Absorbed   bool           `json:"absorbed"`
	Summary    string         `json:"summary"`
	Moved      Totals         `json:"moved"`
	Unplaced   Totals         `json:"unplaced"`
	Workloads  []WorkloadMove `json:"workloads"`
	Clusters   []ClusterAfter `json:"clusters"`
	Fleet      FleetAfter     `json:"fleet"`
	SnapshotAt time.Time      `json:"snapshot_at"`
	Ceiling    float64        `json:"ceiling"`
}

// ValidateWhatIf checks a what-if request; errors wrap ErrBadRequest and name the field.
func (s *Snapshot) ValidateWhatIf(r *WhatIfRequest) error {
	if len(r.Fail) == 0 {
		return badRequest("fail: name at least one cluster")
	}
	for _, name := range r.Fail {
		if s.Cluster(name) == nil {
			return badRequest("fail: cluster %q is not known; known: %s", name, s.vocabulary(func(c *Cluster, v string) bool { return c.Name == v }, nil))
		}
	}
	probe := Request{Replicas: 1, CPU: 1, Constraints: r.Constraints, Weights: r.Weights}
	return s.Validate(&probe)
}

// WhatIf moves the workloads of the failed clusters, biggest first (by CPU, then memory, then
// name), onto the rest of the fleet, one divided placement each on the capacity the ones before
// left, and reports where each would go and the saturation afterwards. Workloads of clusters
// not in r.Fail are ignored.
func WhatIf(s *Snapshot, r WhatIfRequest, workloads []Workload) (*WhatIfResult, error) {
	if err := s.ValidateWhatIf(&r); err != nil {
		return nil, err
	}
	failed := map[string]bool{}
	for _, f := range r.Fail {
		failed[f] = true
	}
	work := s.clone()
	res := &WhatIfResult{Failed: slices.Sorted(slices.Values(r.Fail)), SnapshotAt: s.At, Ceiling: s.Ceiling, Workloads: []WorkloadMove{}}
	res.Failed = slices.Compact(res.Failed)

	var moving []Workload
	for _, w := range workloads {
		if failed[w.Cluster] && w.Pods > 0 {
			moving = append(moving, w)
		}
	}
	slices.SortFunc(moving, func(a, b Workload) int {
		return cmp.Or(cmp.Compare(b.CPU, a.CPU), cmp.Compare(b.Memory, a.Memory),
			cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	received := map[string]*ClusterAfter{}
	for i := range s.Clusters {
		received[s.Clusters[i].Name] = &ClusterAfter{}
	}
	// The filters that do not depend on the workload, for the per-cluster report.
	ref := &reasonRef{ceiling: s.Ceiling, constraints: &r.Constraints}
	for i := range s.Clusters {
		c := &s.Clusters[i]
		if !failed[c.Name] {
			s.filter(&received[c.Name].Filtered, ref, c, failed, 1, 0)
		}
	}

	for _, w := range moving {
		mv := WorkloadMove{From: w.Cluster, Namespace: w.Namespace, Kind: w.Kind, Name: w.Name, Replicas: w.Pods,
			CPUPerReplica: w.CPU / float64(w.Pods), MemoryPerReplica: w.Memory / float64(w.Pods), Placements: []Placement{}}
		res.Moved.Workloads++
		res.Moved.Pods += w.Pods
		res.Moved.CPU += w.CPU
		res.Moved.Memory += w.Memory
		req := Request{Workload: w.Namespace + "/" + w.Name, Replicas: w.Pods, CPU: Quantity(mv.CPUPerReplica), Memory: Quantity(mv.MemoryPerReplica),
			Mode: ModeDivided, Constraints: r.Constraints, Weights: r.Weights}
		placed := 0
		if req.CPU > 0 || req.Memory > 0 {
			d := work.decide(&req, failed, true)
			for _, p := range d.Placements {
				c := work.Cluster(p.Cluster)
				c.RequestedCPU += float64(p.Replicas) * mv.CPUPerReplica
				c.RequestedMemory += float64(p.Replicas) * mv.MemoryPerReplica
				rc := received[p.Cluster]
				rc.ReceivedReplicas += p.Replicas
				rc.ReceivedCPU += float64(p.Replicas) * mv.CPUPerReplica
				rc.ReceivedMemory += float64(p.Replicas) * mv.MemoryPerReplica
				placed += p.Replicas
			}
			mv.Placements = d.Placements
			mv.Reason = d.Reason
		} else {
			// Pods that request nothing fit anywhere; they are not capacity.
			placed = w.Pods
			mv.Reason = "requests no CPU or memory"
		}
		mv.Unplaced = w.Pods - placed
		if mv.Unplaced > 0 {
			res.Unplaced.Workloads++
			res.Unplaced.Pods += mv.Unplaced
			res.Unplaced.CPU += float64(mv.Unplaced) * mv.CPUPerReplica
			res.Unplaced.Memory += float64(mv.Unplaced) * mv.MemoryPerReplica
			if mv.Reason == "" {
				mv.Reason = "no surviving cluster has room below the ceiling"
			}
		}
		res.Workloads = append(res.Workloads, mv)
	}

	f := &res.Fleet
	var reqCPUBefore, reqMemBefore float64
	for i := range s.Clusters {
		before, after := &s.Clusters[i], &work.Clusters[i]
		ca := received[before.Name]
		ca.Cluster, ca.Failed = before.Name, failed[before.Name]
		ca.AllocatableCPU, ca.AllocatableMemory = before.AllocatableCPU, before.AllocatableMemory
		ca.RequestedCPUBefore, ca.RequestedCPUAfter = before.RequestedCPU, after.RequestedCPU
		ca.RequestedMemoryBefore, ca.RequestedMemoryAfter = before.RequestedMemory, after.RequestedMemory
		ca.CPUSaturationBefore, ca.CPUSaturationAfter = before.CPUSaturation(), after.CPUSaturation()
		ca.MemorySaturationBefore, ca.MemorySaturationAfter = before.MemorySaturation(), after.MemorySaturation()
		ca.FreeCPUBefore, ca.FreeCPUAfter = s.FreeCPU(before), work.FreeCPU(after)
		ca.FreeMemoryBefore, ca.FreeMemoryAfter = s.FreeMemory(before), work.FreeMemory(after)
		ca.SaturationAboveCeiling = ca.CPUSaturationAfter > s.Ceiling+1e-9 || ca.MemorySaturationAfter > s.Ceiling+1e-9
		if ca.Failed {
			ca.RequestedCPUAfter, ca.RequestedMemoryAfter, ca.CPUSaturationAfter, ca.MemorySaturationAfter = 0, 0, 0, 0
			ca.FreeCPUAfter, ca.FreeMemoryAfter, ca.SaturationAboveCeiling = 0, 0, false
		}
		res.Clusters = append(res.Clusters, *ca)
		if ca.Failed || !before.HasCapacity {
			continue
		}
		f.AllocatableCPU += before.AllocatableCPU
		f.AllocatableMemory += before.AllocatableMemory
		reqCPUBefore += before.RequestedCPU
		reqMemBefore += before.RequestedMemory
		if len(ca.Filtered) == 0 {
			f.FreeCPUBefore += ca.FreeCPUBefore
			f.FreeCPUAfter += ca.FreeCPUAfter
			f.FreeMemoryBefore += ca.FreeMemoryBefore
			f.FreeMemoryAfter += ca.FreeMemoryAfter
		}
	}
	f.CPUSaturationBefore = ratio(reqCPUBefore, f.AllocatableCPU)
	f.CPUSaturationAfter = ratio(reqCPUBefore+res.Moved.CPU-res.Unplaced.CPU, f.AllocatableCPU)
	f.MemorySaturationBefore = ratio(reqMemBefore, f.AllocatableMemory)
	f.MemorySaturationAfter = ratio(reqMemBefore+res.Moved.Memory-res.Unplaced.Memory, f.AllocatableMemory)

	res.Absorbed = res.Unplaced.Pods == 0
	res.Summary = whatIfSummary(res)
	return res, nil
}

func whatIfSummary(r *WhatIfResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "if %s fail(s): %d pods of %d workloads requesting %s CPU cores and %s memory move; ",
		strings.Join(r.Failed, ", "), r.Moved.Pods, r.Moved.Workloads, cores(r.Moved.CPU), bytesIEC(r.Moved.Memory))
	if r.Absorbed {
		b.WriteString("the rest of the fleet absorbs them all")
	} else {
		fmt.Fprintf(&b, "%d pods of %d workloads (%s CPU cores, %s memory) find no room below the %s ceiling",
			r.Unplaced.Pods, r.Unplaced.Workloads, cores(r.Unplaced.CPU), bytesIEC(r.Unplaced.Memory), pct(r.Ceiling))
	}
	fmt.Fprintf(&b, "; surviving fleet CPU requests %s -> %s, memory %s -> %s of allocatable",
		pct(r.Fleet.CPUSaturationBefore), pct(r.Fleet.CPUSaturationAfter), pct(r.Fleet.MemorySaturationBefore), pct(r.Fleet.MemorySaturationAfter))
	return b.String()
}
