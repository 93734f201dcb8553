package correlate

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
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

func maxSeverity(alerts []Alert) string {
	best, rank := "info", 0
	for _, a := range alerts {
		if r := severityRank[a.Labels["severity"]]; r > rank {
			best, rank = a.Labels["severity"], r
		}
	}
	if best == "error" {
		best = "critical"
	}
	return best
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

// Correlate groups the active alerts into problems. It is a pure function of its arguments.
func Correlate(alerts []Alert, topo *Topology, r Rules) []Group {
	if topo == nil {
		topo = &Topology{}
	}
	// The engine passes alerts with their fingerprints (taken in with these rules); compute any
	// that are missing.
	alerts = r.withFingerprints(alerts)
	// Every rule reads the alerts' names and clusters: look them up in the label maps once.
	name, cluster := make([]string, len(alerts)), make([]string, len(alerts))
	byCluster := map[string][]int{}
	for i, a := range alerts {
		name[i], cluster[i] = a.Labels["alertname"], a.Labels["cluster"]
		byCluster[cluster[i]] = append(byCluster[cluster[i]], i)
	}
	groups := map[string]*Group{}
	taken := make([]bool, len(alerts))
	add := func(k string, i int, init func(*Group)) {
		g := groups[k]
		if g == nil {
			g = &Group{Key: k, Scope: "cluster"}
			groups[k] = g
			if init != nil {
				init(g)
			}
		}
		g.Alerts = append(g.Alerts, alerts[i])
		if c := cluster[i]; c != "" && !has(g.Clusters, c) {
			g.Clusters = append(g.Clusters, c)
		}
		taken[i] = true
	}

	// 1. A silent cluster or a control plane down explains everything else from the cluster.
	for c, idx := range byCluster {
		root := -1
		for _, i := range idx {
			if n := name[i]; has(r.ClusterRoot, n) && (root < 0 || slices.Index(r.ClusterRoot, n) < slices.Index(r.ClusterRoot, name[root])) {
				root = i
			}
		}
		if root < 0 || c == "" {
			continue
		}
		rn := name[root]
		k := "cluster/" + c
		add(k, root, func(g *Group) {
			g.RootCause = fmt.Sprintf("%s in cluster %s", rn, c)
		})
		for _, i := range idx {
			if i != root {
				add(k, i, nil)
			}
		}
		g := groups[k]
		g.Explanation = fmt.Sprintf("%s: %s. Everything else from cluster %s (%d more alerts) follows from it, so it is one incident.",
			rn, describe(alerts[root]), c, len(g.Alerts)-1)
	}

	// 2. The same workload failing in several clusters close together is one fleet-wide
	// problem, most likely a bad rollout.
	type failure struct {
		idx   []int
		first map[string]time.Time
	}
	failures := map[string]*failure{}
	nodesDown := map[string]bool{} // clusters with a NotReady-nodes alert
	for i := range alerts {
		if !taken[i] && has(r.NodesRoot, name[i]) {
			nodesDown[cluster[i]] = true
		}
	}
	for i, a := range alerts {
		if taken[i] || !has(r.WorkloadFailure, name[i]) {
			continue
		}
		// A failure on a NotReady node is the node's (rule 3), not a rollout's.
		if nodesDown[cluster[i]] && onNotReadyNode(a, topo, "") {
			continue
		}
		w := workloadOf(a, topo)
		if w == "" {
			continue
		}
		f := failures[w]
		if f == nil {
			f = &failure{first: map[string]time.Time{}}
			failures[w] = f
		}
		f.idx = append(f.idx, i)
		c := cluster[i]
		if t, ok := f.first[c]; !ok || a.StartsAt.Before(t) {
			f.first[c] = a.StartsAt
		}
	}
	rolledOut := map[string]string{} // cluster -> rollout group key
	for w, f := range failures {
		// The most clusters whose first failures fit in one window.
		all := make([]string, 0, len(f.first))
		for c := range f.first {
			all = append(all, c)
		}
		sort.Slice(all, func(i, j int) bool {
			if !f.first[all[i]].Equal(f.first[all[j]]) {
				return f.first[all[i]].Before(f.first[all[j]])
			}
			return all[i] < all[j]
		})
		var clusters []string
		for i := range all {
			j := i
			for j < len(all) && (r.RolloutWindow <= 0 || f.first[all[j]].Sub(f.first[all[i]]) <= r.RolloutWindow) {
				j++
			}
			if j-i > len(clusters) {
				clusters = all[i:j]
			}
		}
		if len(clusters) < max(r.RolloutClusters, 2) {
			continue
		}
		lo, hi := f.first[clusters[0]], f.first[clusters[len(clusters)-1]]
		clusters = slices.Clone(clusters)
		sort.Strings(clusters)
		// The failing pods' own owners (the new ReplicaSet of a rolling update), where the
		// alerts name them.
		owners := map[string][]string{} // cluster -> cluster/ns/owner
		for _, i := range f.idx {
			l := alerts[i].Labels
			if o := l["owner_name"]; o != "" && has(clusters, cluster[i]) {
				owners[cluster[i]] = append(owners[cluster[i]], key(cluster[i], l["namespace"], o))
			}
		}
		img := sharedImage(w, clusters, topo, owners)
		k := "rollout/" + w
		for _, i := range f.idx {
			if !has(clusters, cluster[i]) {
				continue
			}
			add(k, i, func(g *Group) {
				g.Scope = "fleet"
				g.Image = img
				g.RootCause = "likely bad rollout of " + w
				if img != "" {
					g.RootCause += " (image " + img + ")"
				}
			})
		}
		g := groups[k]
		g.Explanation = fmt.Sprintf("Workload %s started failing in %d clusters (%s) within %s of each other", w, len(clusters), strings.Join(clusters, ", "), hi.Sub(lo).Round(time.Second))
		if img != "" {
			g.Explanation += fmt.Sprintf("; every failing cluster runs image %s", img)
		}
		g.Explanation += ". Failures of the same workload in several clusters at once point to what they share, the rollout, rather than to each cluster."
		for _, c := range clusters {
			rolledOut[c] = k
		}
	}
	// A cluster's crash-loop total goes with the rollout when the cluster is part of one.
	for i := range alerts {
		if !taken[i] && has(r.ClusterFailure, name[i]) {
			if k, ok := rolledOut[cluster[i]]; ok {
				add(k, i, nil)
			}
		}
	}

	// 3. NotReady nodes explain failing and pending pods on them; saturation explains pending
	// pods of its cluster.
	for c, idx := range byCluster {
		for _, ri := range idx {
			if taken[ri] {
				continue
			}
			rn := name[ri]
			switch {
			case has(r.NodesRoot, rn):
				node := alerts[ri].Labels["node"]
				k := "nodes/" + c
				if node != "" {
					k += "/" + node
				}
				add(k, ri, func(g *Group) {
					g.RootCause = fmt.Sprintf("%s in cluster %s", rn, c)
					if node != "" {
						g.RootCause = fmt.Sprintf("node %s of cluster %s is not Ready", node, c)
					}
				})
				absorbed, left := 0, 0
				for _, i := range idx {
					n := name[i]
					if taken[i] || !(has(r.WorkloadFailure, n) || has(r.Pending, n)) {
						continue
					}
					if onNotReadyNode(alerts[i], topo, node) {
						add(k, i, nil)
						absorbed++
					} else if has(r.WorkloadFailure, n) {
						left++
					}
				}
				// The cluster's crash-loop total goes with the nodes when they explain every
				// failing workload of the cluster.
				if absorbed > 0 && left == 0 {
					for _, i := range idx {
						if !taken[i] && has(r.ClusterFailure, name[i]) {
							add(k, i, nil)
						}
					}
				}
			case has(r.Saturation, rn):
				k := "saturation/" + c
				add(k, ri, func(g *Group) { g.RootCause = fmt.Sprintf("%s in cluster %s", rn, c) })
				for _, i := range idx {
					if !taken[i] && has(r.Pending, name[i]) {
						add(k, i, nil)
					}
				}
			}
		}
	}
	for k, g := range groups {
		if g.Explanation != "" {
			continue
		}
		switch {
		case strings.HasPrefix(k, "nodes/"):
			g.Explanation = fmt.Sprintf("%s: %s", g.Alerts[0].Labels["alertname"], describe(g.Alerts[0]))
			if n := len(g.Alerts) - 1; n > 0 {
				g.Explanation += fmt.Sprintf(". %d alerts about pods on the NotReady nodes follow from it.", n)
			}
		case strings.HasPrefix(k, "saturation/"):
			g.Explanation = fmt.Sprintf("%s: %s", g.Alerts[0].Labels["alertname"], describe(g.Alerts[0]))
			if n := len(g.Alerts) - 1; n > 0 {
				g.Explanation += fmt.Sprintf(". %d alerts about Pending pods follow from it: the cluster has no room to schedule them.", n)
			}
		}
	}

	// 3b. Alerts fleetwatch's own remediation causes (pods Pending while a drain moves them, a
	// workload failing while it is rolled back or failed over) join the incident the action
	// remediates instead of opening new ones, and its explanation says so.
	caused := map[string][]string{} // group key -> what caused its alerts
	for i, a := range alerts {
		if taken[i] || (!has(r.Pending, name[i]) && !has(r.WorkloadFailure, name[i])) {
			continue
		}
		for _, act := range topo.Actions {
			if act.Cluster != cluster[i] {
				continue
			}
			switch {
			case act.Node != "" && has(r.Pending, name[i]):
				// Pods evicted from a drained node wait for a place elsewhere.
			case act.Workload != "" && workloadOf(a, topo) == act.Namespace+"/"+act.Workload:
			default:
				continue
			}
			g := groups[act.IncidentKey]
			had := g != nil && has(g.Clusters, cluster[i])
			add(act.IncidentKey, i, func(g *Group) { g.RootCause = act.What })
			// A failover's alerts in the clusters it moves workloads to do not make those
			// clusters part of the lost cluster's incident.
			if kind, rest, _ := strings.Cut(act.IncidentKey, "/"); !had && kind != "rollout" && strings.Split(rest, "/")[0] != cluster[i] {
				g = groups[act.IncidentKey]
				g.Clusters = slices.DeleteFunc(g.Clusters, func(c string) bool { return c == cluster[i] })
			}
			if !has(caused[act.IncidentKey], act.What) {
				caused[act.IncidentKey] = append(caused[act.IncidentKey], act.What)
			}
			break
		}
	}

	// 4. Crash loops left in a cluster are one incident per cluster.
	for c, idx := range byCluster {
		k := "failures/" + c
		for _, i := range idx {
			n := name[i]
			if !taken[i] && (has(r.WorkloadFailure, n) || has(r.ClusterFailure, n)) {
				add(k, i, func(g *Group) { g.RootCause = "failing workloads in cluster " + c })
			}
		}
		if g := groups[k]; g != nil {
			var ws []string
			for _, a := range g.Alerts {
				if w := workloadOf(a, topo); w != "" && !has(ws, w) {
					ws = append(ws, w)
				}
			}
			sort.Strings(ws)
			if len(ws) == 1 {
				g.RootCause = "workload " + ws[0] + " is failing in cluster " + c
			}
			g.Explanation = fmt.Sprintf("Only cluster %s shows these failures (%s), and no node or cluster problem there explains them: look at the workload itself.", c, strings.Join(ws, ", "))
		}
	}

	// 5. Everything else: the same alert in several clusters is one incident listing them.
	for i, a := range alerts {
		if taken[i] {
			continue
		}
		n := name[i]
		add("alert/"+n+"/"+strconv.FormatUint(a.localFP, 16), i, func(g *Group) { g.RootCause = n })
	}

	out := make([]Group, 0, len(groups))
	for _, k := range slices.Sorted(maps.Keys(groups)) {
		g := groups[k]

		sort.Strings(g.Clusters) // add collected them
		if len(g.Clusters) > 1 {
			g.Scope = "fleet"
		}
		if strings.HasPrefix(g.Key, "alert/") {
			g.Explanation = fmt.Sprintf("%s: %s", g.Alerts[0].Labels["alertname"], describe(g.Alerts[0]))
			if len(g.Clusters) > 1 {
				g.Explanation += fmt.Sprintf(" The same alert fires in %d clusters (%s); it is one incident.", len(g.Clusters), strings.Join(g.Clusters, ", "))
			}
		}
		if what := caused[k]; len(what) > 0 {
			g.Explanation = strings.TrimSpace(g.Explanation + " Alerts about pending or failing pods here are expected while fleetwatch acts: " + strings.Join(what, "; ") + ".")
		}
		g.Severity = maxSeverity(g.Alerts)
		for _, a := range g.Alerts {
			if t := r.Teams[a.Labels["namespace"]]; t != "" {
				g.Team = t
				break
			}
		}
		slices.SortFunc(g.Alerts, func(a, b Alert) int { return cmp.Compare(a.fp, b.fp) })
		out = append(out, *g)
	}
	return out
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
