package schedule

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// IncidentRef is an open incident as placement sees it.
type IncidentRef struct {
	ID       string `json:"id"`
	Severity string `json:"severity"`
	Scope    string `json:"scope"`
	// Kind is what the incident is about (the Incident* constants); only a critical incident
	// about the cluster's health (ClusterHealth) keeps placement off the cluster.
	Kind     string   `json:"kind"`
	Clusters []string `json:"clusters"`
	Title    string   `json:"root_cause"`
}

// Incident kinds: the first part of the key correlate gives an incident's group
// (correlate/group.go, "cluster/eu-1", "nodes/eu-1/node-3", "rollout/shop/api", ...).
const (
	// IncidentClusterDown: the cluster is silent or its control plane is down.
	IncidentClusterDown = "cluster"
	// IncidentNodes: nodes of the cluster are NotReady.
	IncidentNodes = "nodes"
	// IncidentSaturation: the cluster's CPU or memory requests are saturated.
	IncidentSaturation = "saturation"
	// IncidentRollout: the same workload fails in several clusters (a bad rollout).
	IncidentRollout = "rollout"
	// IncidentWorkloads: workloads fail in one cluster, and nothing about the cluster explains it.
	IncidentWorkloads = "failures"
	// IncidentAlert: any other alert, in one or several clusters.
	IncidentAlert = "alert"
)

// IncidentKind is the kind of the incident whose group key is key.
func IncidentKind(key string) string {
	kind, _, _ := strings.Cut(key, "/")
	return kind
}

// ClusterHealth reports whether the incident is about the health of its clusters themselves
// (silent, control plane down, nodes NotReady, saturated) rather than about workloads running
// on them or other alerts: one crash-looping workload does not make a healthy cluster a bad
// place for every other workload.
func (r *IncidentRef) ClusterHealth() bool {
	switch r.Kind {
	case IncidentClusterDown, IncidentNodes, IncidentSaturation:
		return true
	}
	return false
}

// Cluster is one cluster of a snapshot: its static description and what the view says now.
type Cluster struct {
	Name           string            `json:"name"`
	Region         string            `json:"region,omitempty"`
	Provider       string            `json:"provider,omitempty"`
	Tier           string            `json:"tier,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	Compliance     []string          `json:"compliance,omitempty"`
	CostPerCPUHour float64           `json:"cost_per_cpu_hour"`
	// LatencyMs is the latency to each named user region, in milliseconds.
	LatencyMs map[string]float64 `json:"latency_ms,omitempty"`

	// HasCapacity says the view has the cluster's allocatable CPU and memory.
	HasCapacity       bool    `json:"has_capacity"`
	AllocatableCPU    float64 `json:"allocatable_cpu_cores"`
	RequestedCPU      float64 `json:"requested_cpu_cores"`
	AllocatableMemory float64 `json:"allocatable_memory_bytes"`
	RequestedMemory   float64 `json:"requested_memory_bytes"`
	// ReadyRatio is Ready nodes / nodes; negative when the view has no value.
	ReadyRatio float64 `json:"ready_ratio"`
	// LastIngest is when fleetwatch last stored data from the cluster (zero: never).
	LastIngest time.Time     `json:"last_ingest,omitzero"`
	Incidents  []IncidentRef `json:"incidents,omitempty"`
}

// CPUSaturation is requested / allocatable CPU (0 without capacity data).
func (c *Cluster) CPUSaturation() float64 { return ratio(c.RequestedCPU, c.AllocatableCPU) }

// MemorySaturation is requested / allocatable memory (0 without capacity data).
func (c *Cluster) MemorySaturation() float64 { return ratio(c.RequestedMemory, c.AllocatableMemory) }

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// Snapshot is the fleet as placement sees it at one time. Its clusters are sorted by name.
type Snapshot struct {
	At time.Time `json:"at"`
	// Ceiling is the highest requests/allocatable ratio a placement may bring a cluster to:
	// min(1 - headroom, the saturation threshold the rules alert on).
	Ceiling float64 `json:"ceiling"`
	// StaleAfter: a cluster whose last ingest is older is never a placement target.
	StaleAfter time.Duration `json:"-"`
	// MinReadyRatio: a cluster with fewer Ready nodes (the rules' threshold) is unhealthy.
	MinReadyRatio float64 `json:"min_ready_ratio"`
	// ComplianceTags are the tags fleetwatch.yml declares beyond the clusters' own; a request
	// may only ask for a tag that is declared or that some cluster has.
	ComplianceTags []string  `json:"compliance_tags,omitempty"`
	Clusters       []Cluster `json:"clusters"`
	// Errors are the queries that failed while building the snapshot; the clusters they would
	// have described lack that data (and are filtered for it).
	Errors []string `json:"errors,omitempty"`
}

// FreeCPU is the CPU (cores) that may still be placed on c before the ceiling.
func (s *Snapshot) FreeCPU(c *Cluster) float64 {
	return math.Max(0, c.AllocatableCPU*s.Ceiling-c.RequestedCPU)
}

// FreeMemory is the memory (bytes) that may still be placed on c before the ceiling.
func (s *Snapshot) FreeMemory(c *Cluster) float64 {
	return math.Max(0, c.AllocatableMemory*s.Ceiling-c.RequestedMemory)
}

// Cluster returns the named cluster, or nil.
func (s *Snapshot) Cluster(name string) *Cluster {
	for i := range s.Clusters {
		if s.Clusters[i].Name == name {
			return &s.Clusters[i]
		}
	}
	return nil
}

// clone copies the snapshot deeply enough that capacity may be consumed on the copy.
func (s *Snapshot) clone() *Snapshot {
	c := *s
	c.Clusters = append([]Cluster(nil), s.Clusters...)
	return &c
}

// Quantity is an amount of CPU (cores) or memory (bytes). In JSON it is a number or a
// Kubernetes quantity string ("500m", "1.5", "512Mi", "2Gi").
type Quantity float64

// UnmarshalJSON accepts a number or a Kubernetes quantity string.
func (q *Quantity) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var f float64
		if err := json.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("%s is neither a number nor a quantity string such as \"500m\" or \"1Gi\"", b)
		}
		*q = Quantity(f)
		return nil
	}
	v, err := ParseQuantity(s)
	if err != nil {
		return err
	}
	*q = v
	return nil
}

// ParseQuantity parses a Kubernetes quantity ("250m", "2", "1Gi") or a plain number.
func ParseQuantity(s string) (Quantity, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return Quantity(f), nil
	}
	r, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a quantity such as \"500m\", \"2\" or \"1Gi\"", s)
	}
	return Quantity(r.AsApproximateFloat64()), nil
}

// Duration is a time.Duration that is a string ("50ms", "1s") in JSON.
type Duration time.Duration

// UnmarshalJSON parses a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s is not a duration string such as \"50ms\"", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"50ms\"", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Placement modes.
const (
	// ModeDivided splits the replicas over clusters in proportion to their scores, within each
	// cluster's headroom (Karmada's divided, weighted replica scheduling).
	ModeDivided = "divided"
	// ModeClusters picks Request.Clusters clusters that each fit every replica (OCM's
	// numberOfClusters).
	ModeClusters = "clusters"
)

// Request is a workload to place.
type Request struct {
	// Workload names the workload ("namespace/name"); only echoed back.
	Workload string `json:"workload,omitempty"`
	Replicas int    `json:"replicas"`
	// CPU (cores) and Memory (bytes) each replica requests.
	CPU    Quantity `json:"cpu"`
	Memory Quantity `json:"memory"`
	// Mode is ModeDivided (default) or ModeClusters.
	Mode string `json:"mode,omitempty"`
	// Clusters: in ModeClusters, how many clusters to pick (each runs every replica); in
	// ModeDivided, at most how many clusters to spread over (0: as many as the scores say).
	Clusters    int            `json:"clusters,omitempty"`
	Constraints Constraints    `json:"constraints"`
	Weights     config.Weights `json:"weights"`
}

// Constraints are hard filters; an empty list allows everything.
type Constraints struct {
	// Compliance tags a cluster must all have.
	Compliance []string `json:"compliance,omitempty"`
	Regions    []string `json:"regions,omitempty"`
	Providers  []string `json:"providers,omitempty"`
	Tiers      []string `json:"tiers,omitempty"`
	// Clusters, when set, are the only clusters allowed; ExcludeClusters are never picked.
	Clusters        []string `json:"clusters,omitempty"`
	ExcludeClusters []string `json:"exclude_clusters,omitempty"`
	// UserRegions are where the workload's users are; latency is scored to them and, with
	// MaxLatency, filtered.
	UserRegions []string `json:"user_regions,omitempty"`
	MaxLatency  Duration `json:"max_latency,omitempty"`
}

// Scores are one cluster's scores for a request, each 0..100, and their weighted mean.
type Scores struct {
	FreeCapacity float64 `json:"free_capacity"`
	Cost         float64 `json:"cost"`
	Latency      float64 `json:"latency"`
	Saturation   float64 `json:"saturation"`
	Spread       float64 `json:"spread"`
	Total        float64 `json:"total"`
}

// ClusterResult is why a cluster was chosen or filtered out.
type ClusterResult struct {
	Cluster string `json:"cluster"`
	// filtered says the cluster fails a hard constraint; Filtered lists them.
	filtered bool
	idx      int32
	ctx      *decisionCtx
	// Fits is how many replicas fit within its headroom.
	Fits int `json:"fits"`
	// Rank is the candidate's place in the order clusters were considered (1 = first); 0 when
	// filtered.
	Rank     int    `json:"rank,omitempty"`
	Scores   Scores `json:"scores"`
	Replicas int    `json:"replicas"`
	// FreeCPU and FreeMemory are what the cluster had free before this placement.
	FreeCPU    float64 `json:"free_cpu_cores"`
	FreeMemory float64 `json:"free_memory_bytes"`
	// note is why it got its replicas (or none); Why says it in words.
	note whyNote
}

type whyNote uint8

const (
	noteGets whyNote = iota + 1
	noteNotPicked
	noteRoundedToZero
	noteInfeasible
)

// MarshalJSON adds "why": the result in words.
func (r ClusterResult) MarshalJSON() ([]byte, error) {
	type plain ClusterResult
	return json.Marshal(struct {
		plain
		Filtered Reasons `json:"filtered,omitempty"`
		Why      string  `json:"why"`
	}{plain(r), r.Filtered(), r.Why()})
}

// Placement is the replicas one cluster gets.
type Placement struct {
	Cluster  string  `json:"cluster"`
	Replicas int     `json:"replicas"`
	Score    float64 `json:"score"`
}

// Decision is the answer to a Request.
type Decision struct {
	Workload string `json:"workload,omitempty"`
	Mode     string `json:"mode"`
	Replicas int    `json:"replicas"`
	// Feasible is false when the request cannot be met; Reason says why.
	Feasible   bool        `json:"feasible"`
	Reason     string      `json:"reason,omitempty"`
	Placements []Placement `json:"placements"`
	// Clusters has every cluster of the snapshot, candidates first in rank order.
	Clusters   []ClusterResult `json:"clusters"`
	SnapshotAt time.Time       `json:"snapshot_at"`
	Ceiling    float64         `json:"ceiling"`
}
