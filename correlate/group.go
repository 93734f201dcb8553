package correlate

import (
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/rules/pack"
)

// Rules name the alerts that play a part in correlation; the defaults are the built-in rule
// pack's alerts plus kube-prometheus's usual names, and each list is configurable.
type Rules struct {
	// ClusterRoot alerts explain everything else from their cluster (silent, control plane).
	ClusterRoot []string `yaml:"cluster_root" json:"cluster_root"`
	// NodesRoot alerts say a cluster's nodes are NotReady; with a `node` label, that node.
	NodesRoot []string `yaml:"nodes_root" json:"nodes_root"`
	// Saturation alerts explain Pending pods of their cluster.
	Saturation []string `yaml:"saturation" json:"saturation"`
	// Pending alerts are about pods that cannot be scheduled.
	Pending []string `yaml:"pending" json:"pending"`
	// WorkloadFailure alerts are about a failing workload (namespace plus owner_name,
	// deployment or pod); ClusterFailure ones sum those up for a cluster.
	WorkloadFailure []string `yaml:"workload_failure" json:"workload_failure"`
	ClusterFailure  []string `yaml:"cluster_failure" json:"cluster_failure"`
	// RolloutClusters is how many clusters a workload must fail in, with the first failures
	// at most RolloutWindow apart, to be one fleet-wide "likely bad rollout" incident.
	RolloutClusters int           `yaml:"rollout_clusters" json:"rollout_clusters"`
	RolloutWindow   time.Duration `yaml:"rollout_window" json:"rollout_window"`
	// Teams maps a namespace to the team that owns it.
	Teams map[string]string `yaml:"teams" json:"teams"`
	// ReplicaLabels are dropped before deduplication (HA Prometheus pairs).
	ReplicaLabels []string `yaml:"replica_labels" json:"replica_labels"`
}

// DefaultRules are the built-in correlation rules (correlate/README.md): the rule pack's alerts,
// by the names rules/pack exports, and kube-prometheus's usual names for the same conditions.
// The rollout settings are correlate.rollout_clusters and correlate.rollout_window's defaults.
var DefaultRules = Rules{
	ClusterRoot:     []string{pack.AlertClusterSilent, pack.AlertClusterControlPlaneDown, "KubeAPIDown"},
	NodesRoot:       []string{pack.AlertClusterNodesNotReady, "KubeNodeNotReady", "KubeNodeUnreachable"},
	Saturation:      []string{pack.AlertClusterCPURequestsSaturated, pack.AlertClusterMemoryRequestsSaturated, "KubeCPUOvercommit", "KubeMemoryOvercommit"},
	Pending:         []string{"KubePodNotReady", "KubePodPending", "KubePodNotScheduled"},
	WorkloadFailure: []string{pack.AlertWorkloadCrashLooping, "KubePodCrashLooping", "KubeDeploymentReplicasMismatch", "KubeDeploymentRolloutStuck"},
	ClusterFailure:  []string{pack.AlertClusterCrashLooping},
	RolloutClusters: config.DefaultCorrelate.RolloutClusters,
	RolloutWindow:   time.Duration(config.DefaultCorrelate.RolloutWindow),
	ReplicaLabels:   []string{"prometheus_replica", "replica"},
}

// Group is one real problem: a root cause and the alerts it explains. It is what Correlate
// computes from the active alerts; Tracker turns groups into incidents with an identity and a
// lifecycle.
type Group struct {
	// Key identifies the problem across evaluations, e.g. "cluster/eu-2" or
	// "rollout/payments/api".
	Key         string   `json:"key"`
	Scope       string   `json:"scope"` // "cluster" or "fleet"
	Clusters    []string `json:"clusters"`
	Severity    string   `json:"severity"`
	Team        string   `json:"team,omitempty"`
	RootCause   string   `json:"root_cause"`
	Explanation string   `json:"explanation"`
	// Image is the image a bad rollout's failing clusters share.
	Image  string  `json:"image,omitempty"`
	Alerts []Alert `json:"alerts"`
}

func has(list []string, s string) bool { return slices.Contains(list, s) }

var severityRank = map[string]int{"critical": 3, "error": 3, "warning": 2, "info": 1}

// severityName is the severity of a rank (severityRank): "error" ranks as and is named
// "critical".
func severityName(rank int) string {
	switch rank {
	case 3:
		return "critical"
	case 2:
		return "warning"
	}
	return "info"
}

// Fingerprint identifies an alert for deduplication: its labels without the replica labels.
// It is FNV-1a over the sorted label names and values, each followed by 0xff.
func (r Rules) Fingerprint(a Alert) uint64 {
	fp, _ := r.fingerprints(a)
	return fp
}

// fingerprints returns the alert's Fingerprint and its local fingerprint, the same without the
// `cluster` label, which identifies the same alert in every cluster (rule 5). Both come from
// one pass over the sorted label names, as the engine computes them for every alert it takes
// in (Alert.fp, Alert.localFP).
func (r Rules) fingerprints(a Alert) (fp, local uint64) {
	var buf [32]string
	names := buf[:0]
	for n := range a.Labels {
		if !has(r.ReplicaLabels, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	fp, local = fnvOffset, fnvOffset
	for _, n := range names {
		v := a.Labels[n]
		fp = fnvAdd(fnvAdd(fp, n), v)
		if n != "cluster" {
			local = fnvAdd(fnvAdd(local, n), v)
		}
	}
	return fp, local
}

// FNV-1a, 64 bits (hash/fnv), inlined so that hashing allocates nothing.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// fnvAdd continues the hash h with s and a 0xff separator.
func fnvAdd(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	h ^= 0xff
	h *= fnvPrime
	return h
}

// withFingerprints returns alerts with every Alert.fp and Alert.localFP set, computing those
// that are not (copying alerts first, so the caller's are left alone).
func (r Rules) withFingerprints(alerts []Alert) []Alert {
	copied := false
	for i := range alerts {
		if alerts[i].fp != 0 {
			continue
		}
		if !copied {
			alerts, copied = slices.Clone(alerts), true
		}
		alerts[i].fp, alerts[i].localFP = r.fingerprints(alerts[i])
	}
	return alerts
}

// refingerprint returns a copy of alerts with their fingerprints computed again, for rules
// whose replica labels changed.
func (r Rules) refingerprint(alerts []Alert) []Alert {
	alerts = slices.Clone(alerts)
	for i := range alerts {
		alerts[i].fp, alerts[i].localFP = r.fingerprints(alerts[i])
	}
	return alerts
}

// fingerprint is the alert's Fingerprint, computed only if it is not cached.
func (r Rules) fingerprint(a Alert) uint64 {
	if a.fp != 0 {
		return a.fp
	}
	return r.Fingerprint(a)
}

// workloadOf names the workload an alert is about ("namespace/workload"), or "".
func workloadOf(a Alert, topo *Topology) string {
	l := a.Labels
	ns := l["namespace"]
	if ns == "" {
		return ""
	}
	switch {
	case l["deployment"] != "":
		return ns + "/" + l["deployment"]
	case l["owner_name"] != "":
		name := l["owner_name"]
		if l["owner_kind"] == "ReplicaSet" {
			name = ReplicaSetWorkload(name)
		}
		return ns + "/" + name
	case l["pod"] != "":
		if w, ok := topo.PodWorkload[key(l["cluster"], ns, l["pod"])]; ok {
			return ns + "/" + w
		}
		return ns + "/" + l["pod"]
	}
	return ""
}

// onNotReadyNode reports whether the workload or pod an alert is about runs on a node that is
// not Ready (or on node, when node is set).
func onNotReadyNode(a Alert, topo *Topology, node string) bool {
	c, ns := a.Labels["cluster"], a.Labels["namespace"]
	down := func(n string) bool {
		if node != "" {
			return n == node
		}
		return topo.NotReadyNodes[key(c, n)]
	}
	if p := a.Labels["pod"]; p != "" {
		return down(topo.PodNode[key(c, ns, p)])
	}
	w := workloadOf(a, topo)
	if w == "" {
		return false
	}
	for _, pod := range topo.podsOf(c, ns, strings.TrimPrefix(w, ns+"/")) {
		if down(topo.PodNode[pod]) {
			return true
		}
	}
	return false
}

// Correlate groups the active alerts into problems. It is a pure function of its arguments:
// the order of the alerts does not matter.
func Correlate(alerts []Alert, topo *Topology, r Rules) []Group {
	// The engine passes alerts with their fingerprints (taken in with these rules); compute any
	// that are missing.
	s := newCorrelation(r, topo)
	for _, a := range r.withFingerprints(alerts) {
		s.set(a)
	}
	s.update()
	return s.sorted()
}

// describe is an alert's summary, or its name and labels.
func describe(a Alert) string {
	if s := a.Annotations["summary"]; s != "" {
		return strings.TrimSuffix(s, ".")
	}
	names := make([]string, 0, len(a.Labels))
	for n := range a.Labels {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, n+"="+a.Labels[n])
	}
	return strings.Join(parts, ", ")
}

// sharedImage is the image every failing cluster runs for the workload, preferring one that
// the workload runs nowhere else (not in the clusters outside them, not in the ReplicaSets
// that are not failing); "" when they share none.
func sharedImage(w string, clusters []string, topo *Topology, owners map[string][]string) string {
	failing := map[string]bool{}
	for _, os := range owners {
		for _, o := range os {
			failing[o] = true
		}
	}
	// Where else the workload runs an image: a sidecar the ReplicaSets that are not failing
	// run too (or the clusters that are not failing) is no suspect beside the image only the
	// failing pods run.
	otherOwners, otherClusters := map[string]bool{}, map[string]bool{}
	for o, wl := range topo.OwnerWorkload {
		c, rest, _ := strings.Cut(o, keySep)
		ns, _, _ := strings.Cut(rest, keySep)
		if key(ns, wl) == w && has(clusters, c) && !failing[o] {
			for _, img := range topo.OwnerImages[o] {
				otherOwners[img] = true
			}
		}
	}
	for k, imgs := range topo.WorkloadImages {
		c, rest, _ := strings.Cut(k, keySep)
		if rest == w && !has(clusters, c) {
			for _, img := range imgs {
				otherClusters[img] = true
			}
		}
		// An image other workloads run too (an injected sidecar) is what the workload
		// shares with them, not what its rollout changed.
		if rest != w {
			for _, img := range imgs {
				otherOwners[img] = true
				otherClusters[img] = true
			}
		}
	}
	// When the failing alerts name the pods' owners, the suspects are those owners' images:
	// the new ReplicaSet's, not the old one's that still runs beside it in a stalled rolling
	// update. The one most of the failing clusters' owners run: an owner rolled back already
	// runs no pod, and so no image, while its alert resolves.
	if len(owners) > 0 {
		if img := mostSuspect(clusters, func(c string) []string {
			var imgs []string
			for _, o := range owners[c] {
				imgs = append(imgs, topo.OwnerImages[o]...)
			}
			return imgs
		}, otherOwners, false); img != "" {
			return img
		}
	}
	return mostSuspect(clusters, func(c string) []string { return topo.WorkloadImages[c+keySep+w] }, otherClusters, true)
}

// mostSuspect is the image that the most clusters run (images(c); every one of them with
// all), the ones not run elsewhere first, then by name; "" when there is none.
func mostSuspect(clusters []string, images func(c string) []string, elsewhere map[string]bool, all bool) string {
	count := map[string]int{}
	for _, c := range clusters {
		seen := map[string]bool{}
		for _, img := range images(c) {
			if !seen[img] {
				seen[img] = true
				count[img]++
			}
		}
	}
	var shared []string
	for img, n := range count {
		if n == len(clusters) || !all {
			shared = append(shared, img)
		}
	}
	if len(shared) == 0 {
		return ""
	}
	sort.Slice(shared, func(i, j int) bool {
		if count[shared[i]] != count[shared[j]] {
			return count[shared[i]] > count[shared[j]]
		}
		if elsewhere[shared[i]] != elsewhere[shared[j]] {
			return !elsewhere[shared[i]]
		}
		return shared[i] < shared[j]
	})
	return shared[0]
}
