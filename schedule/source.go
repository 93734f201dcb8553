package schedule

import (
	"context"
	"fmt"
	"iter"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/rules/pack"
)

// QueryFunc answers an instant PromQL query on the view (rules.EngineQueryFunc, or a Thanos
// Query client in distributed mode).
type QueryFunc func(ctx context.Context, q string, ts time.Time) (promql.Vector, error)

// Settings are placement's configuration: the sections of fleetwatch.yml it reads, as
// internal/config loaded them (their defaults and validation are config's).
type Settings struct {
	// Schedule is the schedule section: headroom, stale_after, weights, compliance tags and
	// how often the snapshot (and the exported metrics) refresh.
	Schedule config.ScheduleConfig
	// Pack are the rule pack's thresholds (rules.pack), which placement shares so they are
	// never configured twice: the saturation ratio caps the ceiling, no cluster with fewer
	// Ready nodes than the Ready ratio is a target, and silent_after is the staleness limit
	// unless schedule.stale_after sets one.
	Pack config.Thresholds
	// Clusters are the configured clusters: their labels (region, provider, tier,
	// compliance), compliance tags, cost and latency.
	Clusters []*config.ClusterConfig
}

// Ceiling is the highest requests/allocatable a placement may bring a cluster to:
// min(1 - schedule.headroom, rules.pack.saturation_ratio).
func (s Settings) Ceiling() float64 { return math.Min(1-s.Schedule.Headroom, s.Pack.SaturationRatio) }

// StaleAfter is how old a cluster's last data may be for it to be a target:
// schedule.stale_after, or rules.pack.silent_after when that is 0.
func (s Settings) StaleAfter() time.Duration {
	if s.Schedule.StaleAfter > 0 {
		return time.Duration(s.Schedule.StaleAfter)
	}
	return time.Duration(s.Pack.SilentAfter)
}

// interval is how often the snapshot is rebuilt.
func (s Settings) interval() time.Duration { return time.Duration(s.Schedule.RefreshInterval) }

// The queries a snapshot is built from: the rule pack's recording rules and the last-ingest
// series the collector writes for every cluster.
const (
	QueryAllocatableCPU    = pack.RecordCPUAllocatable
	QueryAllocatableMemory = pack.RecordMemoryAllocatable
	QueryRequestedCPU      = pack.RecordCPURequests
	QueryRequestedMemory   = pack.RecordMemoryRequests
	QueryReadyRatio        = pack.RecordNodeReadyRatio
	QueryLastIngest        = `max by (cluster) (` + collector.LastIngestMetric + `)`
)

// Source builds snapshots from the view and the open incidents.
type Source struct {
	Query QueryFunc
	// Incidents are the active incidents, in any order (nothing when correlation is off);
	// the snapshot reads them without keeping them (correlate.Engine.EachActive).
	Incidents iter.Seq[*correlate.Incident]
}

// Snapshot reads the fleet at now. A query that fails leaves its field unknown for every
// cluster (which the filters then reject) and is listed in Snapshot.Errors; only a context
// error fails the whole snapshot.
func (src Source) Snapshot(ctx context.Context, now time.Time, st Settings) (*Snapshot, error) {
	s := &Snapshot{At: now, Ceiling: st.Ceiling(), StaleAfter: st.StaleAfter(), MinReadyRatio: st.Pack.NodeReadyRatio,
		ComplianceTags: slices.Clone(st.Schedule.ComplianceTags)}
	byName := map[string]*Cluster{}
	get := func(name string) *Cluster {
		if c, ok := byName[name]; ok {
			return c
		}
		c := &Cluster{Name: name, ReadyRatio: -1}
		byName[name] = c
		return c
	}
	for _, sc := range st.Clusters {
		if sc == nil {
			continue
		}
		c := get(sc.Name)
		c.Labels = sc.Labels
		c.Region, c.Provider, c.Tier = sc.Labels["region"], sc.Labels["provider"], sc.Labels["tier"]
		c.Compliance = complianceTags(sc)
		c.CostPerCPUHour = sc.CostPerCPUHour
		if len(sc.Latency) > 0 {
			c.LatencyMs = make(map[string]float64, len(sc.Latency))
			for ur, d := range sc.Latency {
				c.LatencyMs[ur] = float64(d) / float64(time.Millisecond)
			}
		}
	}
	type field struct {
		query string
		set   func(c *Cluster, v float64)
	}
	hasCPU, hasMem := map[string]bool{}, map[string]bool{}
	for _, f := range []field{
		{QueryAllocatableCPU, func(c *Cluster, v float64) { c.AllocatableCPU = v; hasCPU[c.Name] = v > 0 }},
		{QueryAllocatableMemory, func(c *Cluster, v float64) { c.AllocatableMemory = v; hasMem[c.Name] = v > 0 }},
		{QueryRequestedCPU, func(c *Cluster, v float64) { c.RequestedCPU = v }},
		{QueryRequestedMemory, func(c *Cluster, v float64) { c.RequestedMemory = v }},
		{QueryReadyRatio, func(c *Cluster, v float64) { c.ReadyRatio = v }},
		{QueryLastIngest, func(c *Cluster, v float64) { c.LastIngest = time.UnixMilli(int64(v * 1000)) }},
	} {
		v, err := src.Query(ctx, f.query, now)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			s.Errors = append(s.Errors, fmt.Sprintf("%s: %v", f.query, err))
			continue
		}
		for _, smp := range v {
			name := smp.Metric.Get("cluster")
			if name == "" || math.IsNaN(smp.F) || math.IsInf(smp.F, 0) {
				continue
			}
			f.set(get(name), smp.F)
		}
	}
	if src.Incidents != nil {
		for inc := range src.Incidents {
			ref := IncidentRef{ID: inc.ID, Severity: inc.Severity, Scope: inc.Scope, Kind: IncidentKind(inc.Key),
				Clusters: slices.Clone(inc.Clusters), Title: inc.RootCause}
			for _, name := range inc.Clusters {
				if c, ok := byName[name]; ok {
					c.Incidents = append(c.Incidents, ref)
				}
			}
		}
		for _, c := range byName {
			slices.SortFunc(c.Incidents, func(a, b IncidentRef) int { return strings.Compare(a.ID, b.ID) })
		}
	}
	s.Clusters = make([]Cluster, 0, len(byName))
	for name, c := range byName {
		c.HasCapacity = hasCPU[name] && hasMem[name]
		s.Clusters = append(s.Clusters, *c)
	}
	slices.SortFunc(s.Clusters, func(a, b Cluster) int { return strings.Compare(a.Name, b.Name) })
	return s, nil
}

// complianceTags are the cluster's `compliance:` list and the comma-separated values of its
// `compliance` label, sorted, without duplicates.
func complianceTags(sc *config.ClusterConfig) []string {
	tags := slices.Clone(sc.Compliance)
	for t := range strings.SplitSeq(sc.Labels["compliance"], ",") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	slices.Sort(tags)
	return slices.Compact(tags)
}

// Workloads reads the Pending and Running pods of the named clusters and sums their requests
// per controlling workload, the way the rule pack's request recording rules count them.
func (src Source) Workloads(ctx context.Context, now time.Time, clusters []string) ([]Workload, error) {
	if len(clusters) == 0 {
		return nil, nil
	}
	quoted := make([]string, len(clusters))
	for i, c := range clusters {
		quoted[i] = regexp.QuoteMeta(c)
	}
	sel := fmt.Sprintf(`cluster=~%q`, strings.Join(quoted, "|"))
	perPod := func(resource string) string {
		return fmt.Sprintf(`sum by (cluster, namespace, pod) (
    kube_pod_container_resource_requests{resource=%q, %s}
  * on (cluster, namespace, pod, uid) group_left ()
    max by (cluster, namespace, pod, uid) (kube_pod_status_phase{phase=~"Pending|Running", %s} == 1)
)`, resource, sel, sel)
	}
	run := func(q string) (promql.Vector, error) {
		v, err := src.Query(ctx, q, now)
		if err != nil {
			return nil, fmt.Errorf("workloads: %s: %w", q, err)
		}
		return v, nil
	}
	type podKey struct{ cluster, ns, pod string }
	type owner struct{ kind, name string }
	cpu, err := run(perPod("cpu"))
	if err != nil {
		return nil, err
	}
	mem, err := run(perPod("memory"))
	if err != nil {
		return nil, err
	}
	owners, err := run(fmt.Sprintf(`max by (cluster, namespace, pod, owner_kind, owner_name) (kube_pod_owner{owner_is_controller="true", %s})`, sel))
	if err != nil {
		return nil, err
	}
	rsOwners, err := run(fmt.Sprintf(`max by (cluster, namespace, replicaset, owner_kind, owner_name) (kube_replicaset_owner{owner_kind="Deployment", %s})`, sel))
	if err != nil {
		return nil, err
	}
	rsDeploy := map[podKey]string{}
	for _, smp := range rsOwners {
		m := smp.Metric
		rsDeploy[podKey{m.Get("cluster"), m.Get("namespace"), m.Get("replicaset")}] = m.Get("owner_name")
	}
	podOwner := map[podKey]owner{}
	for _, smp := range owners {
		m := smp.Metric
		k := podKey{m.Get("cluster"), m.Get("namespace"), m.Get("pod")}
		o := owner{m.Get("owner_kind"), m.Get("owner_name")}
		if o.kind == "ReplicaSet" {
			if d, ok := rsDeploy[podKey{k.cluster, k.ns, o.name}]; ok {
				o = owner{"Deployment", d}
			}
		}
		podOwner[k] = o
	}
	type wKey struct{ cluster, ns, kind, name string }
	byWorkload := map[wKey]*Workload{}
	add := func(v promql.Vector, isCPU bool) {
		for _, smp := range v {
			m := smp.Metric
			k := podKey{m.Get("cluster"), m.Get("namespace"), m.Get("pod")}
			o, ok := podOwner[k]
			if !ok {
				o = owner{"Pod", k.pod}
			}
			wk := wKey{k.cluster, k.ns, o.kind, o.name}
			w := byWorkload[wk]
			if w == nil {
				w = &Workload{Cluster: k.cluster, Namespace: k.ns, Kind: o.kind, Name: o.name}
				byWorkload[wk] = w
			}
			if isCPU {
				w.CPU += smp.F
				w.Pods++ // every pod has a CPU series; those without are counted below
			} else {
				w.Memory += smp.F
			}
		}
	}
	add(cpu, true)
	cpuPods := map[podKey]bool{}
	for _, smp := range cpu {
		m := smp.Metric
		cpuPods[podKey{m.Get("cluster"), m.Get("namespace"), m.Get("pod")}] = true
	}
	add(mem, false)
	// A pod that requests memory but no CPU is still a pod.
	for _, smp := range mem {
		m := smp.Metric
		k := podKey{m.Get("cluster"), m.Get("namespace"), m.Get("pod")}
		if cpuPods[k] {
			continue
		}
		o, ok := podOwner[k]
		if !ok {
			o = owner{"Pod", k.pod}
		}
		byWorkload[wKey{k.cluster, k.ns, o.kind, o.name}].Pods++
	}
	out := make([]Workload, 0, len(byWorkload))
	for _, w := range byWorkload {
		out = append(out, *w)
	}
	slices.SortFunc(out, func(a, b Workload) int {
		return strings.Compare(a.Cluster+"\xff"+a.Namespace+"\xff"+a.Kind+"\xff"+a.Name, b.Cluster+"\xff"+b.Namespace+"\xff"+b.Kind+"\xff"+b.Name)
	})
	return out, nil
}
