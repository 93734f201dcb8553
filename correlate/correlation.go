package correlate

import (
	"cmp"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// correlation is the grouping of a set of alerts, kept so that a change regroups only what
// it reaches (Correlate groups a set from scratch with it; the engine keeps one between
// evaluations). The rules of correlate/README.md are computed by parts:
//
//   - each cluster's own alerts: rule 1 (a root explains the whole cluster) and, otherwise,
//     which of its failing workloads take part in rule 2 (clusterPart.rooted, .failures);
//   - each workload's failures over the fleet: rule 2, a rollout (rolloutPart);
//   - each cluster again, once rule 2 decided: its crash-loop total going with a rollout,
//     rules 3, 3b and 4, and its alerts left, for rule 5's groups by local fingerprint,
//     which gather them from every cluster (clusterPart.frags).
//
// Each part produces fragments: a group key and the alerts it adds to that group, with what
// the rule that adds them says. A group is its fragments put together in the order the rules
// run (fragment.stage). When alerts change, their clusters' parts are computed again; a
// workload whose failures changed is decided again; the clusters whose part in a rollout
// changed are computed again; then only the groups whose fragments changed are assembled
// again. Alerts are taken in fingerprint order everywhere, so a group does not depend on the
// order its alerts were given in.
type correlation struct {
	r    Rules
	topo *Topology

	clusters map[string]*clusterPart
	rollouts map[string]*rolloutPart    // the rollouts, by workload ("namespace/name")
	failing  map[string]map[string]bool // workload -> clusters with failures of it
	frags    map[string][]placed        // group key -> its fragments
	groups   map[string]*Group          // the groups, by key; never changed once made

	dirty    map[string]bool // clusters whose alerts or topology changed since the last update
	redecide map[string]bool // workloads whose rollout's image may have changed
}

// placed is a fragment and the part that adds it.
type placed struct {
	part part
	frag *fragment
}

// A part is what adds a fragment: a cluster (rules 1, 3, 3b, 4, 5) or a workload (rule 2).
type part struct {
	stage stage
	name  string
}

// stage orders the fragments of a group as Correlate's rules add alerts to it.
type stage int

const (
	stageRoot     stage = iota // rule 1: cluster/<c>
	stageRollout               // rule 2: rollout/<w>
	stageTotal                 // rule 2: a cluster's crash-loop total going with its rollout
	stageNodes                 // rule 3: nodes/<c>[/<node>], saturation/<c>
	stageCaused                // rule 3b: alerts remediation causes, in the incident it remediates
	stageFailures              // rule 4: failures/<c>
	stageAlert                 // rule 5: alert/<name>/<local fingerprint>
)

// fragment is what one part adds to one group.
type fragment struct {
	stage  stage
	alerts alertList
	// rootCause is the group's root cause when this fragment is the group's first.
	rootCause string
	// explanation is what rules 1, 2 and 3 say (they explain their group as they make it).
	explanation string
	image       string // rule 2
	// caused says, for each alert of rule 3b, what caused it.
	caused []string
	// Summed up when the fragment is made (seal): the clusters it makes part of the group,
	// its highest severity's rank, and the team of its first alert that has one.
	clusters []string
	rank     int
	team     string
	teamFP   uint64
}

// alertList is a list of alerts by their index in src: a cluster's alerts (as of the update
// that made the list), or a rollout's own copies. Alerts are held once per cluster however
// many fragments list them.
type alertList struct {
	src []Alert
	idx []int32
}

func (l *alertList) len() int               { return len(l.idx) }
func (l *alertList) at(i int) *Alert        { return &l.src[l.idx[i]] }
func (l *alertList) add(src []Alert, i int) { l.src, l.idx = src, append(l.idx, int32(i)) }

// sameAlerts reports whether two lists hold the same alerts as grouping sees them: the same
// fingerprints, label and annotation maps, start, generator and source, in the same order.
// An alert taken in again has maps of its own, so it counts as changed; its end is left out
// (a resend only moves it on, and the engine removes an alert once it ended).
func sameAlerts(a, b alertList) bool {
	if a.len() != b.len() {
		return false
	}
	for i := range a.idx {
		x, y := a.at(i), b.at(i)
		if x.fp != y.fp || !sameMap(x.Labels, y.Labels) || !sameMap(x.Annotations, y.Annotations) ||
			!x.StartsAt.Equal(y.StartsAt) || x.GeneratorURL != y.GeneratorURL || x.Source != y.Source {
			return false
		}
	}
	return true
}

// seal sums up a fragment of cluster c's alerts (or of clusters, for a rollout).
func (f *fragment) seal(r Rules, clusters ...string) *fragment {
	for _, c := range clusters {
		if c != "" {
			f.clusters = append(f.clusters, c)
		}
	}
	for i := range f.alerts.idx {
		a := f.alerts.at(i)
		f.rank = max(f.rank, severityRank[a.Labels["severity"]])
		if f.team == "" && len(r.Teams) > 0 {
			if t := r.Teams[a.Labels["namespace"]]; t != "" {
				f.team, f.teamFP = t, a.fp
			}
		}
	}
	return f
}

// clusterPart is one cluster's alerts and what they add to groups.
type clusterPart struct {
	name string
	// alerts are its alerts in fingerprint order, as of the last update, and names their
	// names; pending the changes since, by fingerprint (nil: removed).
	alerts  []Alert
	names   []string
	pending map[uint64]*Alert
	// rooted: a root alert explains the whole cluster (rule 1); then the cluster has no
	// failures for rule 2 and adds only its cluster/<c> group.
	rooted bool
	// failures are its failing workloads' alerts that rule 2 weighs (indexes into alerts), by
	// workload, in fingerprint order, with the start of the first.
	failures map[string][]int32
	first    map[string]time.Time
	// inRollout are the workloads whose rollout takes its failures.
	inRollout map[string]bool
	root      *fragment                 // rule 1's
	frags     map[fragmentKey]*fragment // the rest
}

// fragmentKey names a cluster's fragment: a cluster can add to one group at two stages (a
// node's Pending pods by rule 3, and those a drain of it causes by rule 3b).
type fragmentKey struct {
	group string
	stage stage
}

// rolloutPart is rule 2's decision for one workload.
type rolloutPart struct {
	clusters []string  // sorted; none when its failures are no rollout
	frag     *fragment // the rollout group's alerts
}

func newCorrelation(r Rules, topo *Topology) *correlation {
	if topo == nil {
		topo = &Topology{}
	}
	return &correlation{
		r: r, topo: topo,
		clusters: map[string]*clusterPart{}, rollouts: map[string]*rolloutPart{}, failing: map[string]map[string]bool{},
		frags: map[string][]placed{}, groups: map[string]*Group{},
		dirty: map[string]bool{}, redecide: map[string]bool{},
	}
}

// set puts an alert (with its fingerprints) in place of the one with its fingerprint.
func (s *correlation) set(a Alert) {
	c := a.Labels["cluster"]
	cp := s.clusters[c]
	if cp == nil {
		cp = &clusterPart{name: c, inRollout: map[string]bool{}}
		s.clusters[c] = cp
	}
	if cp.pending == nil {
		cp.pending = map[uint64]*Alert{}
	}
	cp.pending[a.fp] = &a
	s.dirty[c] = true
}

// remove takes away the alert a (as last set).
func (s *correlation) remove(a Alert) {
	c := a.Labels["cluster"]
	cp := s.clusters[c]
	if cp == nil {
		return
	}
	if _, held := cp.find(a.fp); !held && cp.pending[a.fp] == nil {
		return
	}
	if cp.pending == nil {
		cp.pending = map[uint64]*Alert{}
	}
	cp.pending[a.fp] = nil
	s.dirty[c] = true
}

// find returns the index of the alert fp in alerts, and whether it is there.
func (cp *clusterPart) find(fp uint64) (int, bool) {
	return slices.BinarySearchFunc(cp.alerts, fp, func(a Alert, fp uint64) int { return cmp.Compare(a.fp, fp) })
}

// apply merges the pending changes into alerts.
func (cp *clusterPart) apply() {
	if len(cp.pending) == 0 {
		return
	}
	fps := slices.Sorted(maps.Keys(cp.pending))
	out := make([]Alert, 0, len(cp.alerts)+len(fps))
	names := make([]string, 0, cap(out))
	i := 0
	for _, fp := range fps {
		for i < len(cp.alerts) && cp.alerts[i].fp < fp {
			out, names = append(out, cp.alerts[i]), append(names, cp.names[i])
			i++
		}
		if i < len(cp.alerts) && cp.alerts[i].fp == fp {
			i++ // replaced or removed
		}
		if a := cp.pending[fp]; a != nil {
			out, names = append(out, *a), append(names, a.Labels["alertname"])
		}
	}
	cp.alerts, cp.names, cp.pending = append(out, cp.alerts[i:]...), append(names, cp.names[i:]...), nil
}

// ended removes the alerts that ended at now, as current (the engine's alerts now) says:
// gone from it or resolved. Of the others it keeps the end current says, later after a
// resend, without regrouping anything. It returns the earliest end among the alerts kept.
func (s *correlation) ended(now time.Time, current func(fp uint64) (Alert, bool)) time.Time {
	var first time.Time
	for _, cp := range s.clusters {
		for i := range cp.alerts {
			a := &cp.alerts[i]
			if p, ok := cp.pending[a.fp]; ok && p == nil {
				continue // removed already
			}
			cur, ok := current(a.fp)
			if !ok || cur.Resolved(now) {
				s.remove(*a)
				continue
			}
			// The fragments hold copies: this changes none of them.
			a.EndsAt = cur.EndsAt
			first = earlierEnd(first, a.EndsAt)
		}
		for _, p := range cp.pending {
			if p != nil {
				first = earlierEnd(first, p.EndsAt)
			}
		}
	}
	return first
}

// holder returns the key of the group holding the alert a.
func (s *correlation) holder(a Alert) (string, bool) {
	c := a.Labels["cluster"]
	cp := s.clusters[c]
	if cp == nil {
		return "", false
	}
	in := func(f *fragment) bool {
		if f == nil {
			return false
		}
		for i := range f.alerts.idx {
			if f.alerts.at(i).fp == a.fp {
				return true
			}
		}
		return false
	}
	if in(cp.root) {
		return "cluster/" + c, true
	}
	for k, f := range cp.frags {
		if in(f) {
			return k.group, true
		}
	}
	for w := range cp.inRollout {
		if in(s.rollouts[w].frag) {
			return "rollout/" + w, true
		}
	}
	return "", false
}

// follow makes topo the topology of the grouping, marking the clusters whose part of it
// changed. It reports false when the grouping cannot follow the change (remediation's actions
// changed, or the topology changed while actions are in flight: they reach across clusters),
// and must be made from scratch.
func (s *correlation) follow(topo *Topology) bool {
	if topo == nil {
		topo = &Topology{}
	}
	if !slices.Equal(s.topo.actions(), topo.actions()) {
		return false
	}
	clusters, images := s.topo.changes(topo)
	if len(clusters) > 0 && len(topo.actions()) > 0 {
		return false
	}
	for c := range clusters {
		if s.clusters[c] != nil {
			s.dirty[c] = true
		}
	}
	if images {
		// A rollout's image is chosen among every cluster's images.
		for w := range s.rollouts {
			s.redecide[w] = true
		}
	}
	s.topo = topo
	return true
}

// update regroups what the alerts set and removed since the last update reach, and returns
// the keys of the groups that changed (made, changed or gone).
func (s *correlation) update() map[string]bool {
	changed := map[string]bool{}
	// Rule 1 and rule 2's inputs, in the clusters whose alerts changed.
	workloads := map[string]bool{}
	for c := range s.dirty {
		cp := s.clusters[c]
		oldAlerts, oldFailures := cp.alerts, cp.failures
		s.weigh(cp)
		for w := range oldFailures {
			// The first failure's start is one of these alerts'.
			if !sameAlerts(alertList{oldAlerts, oldFailures[w]}, alertList{cp.alerts, cp.failures[w]}) {
				workloads[w] = true
			}
		}
		for w := range cp.failures {
			if _, had := oldFailures[w]; !had {
				workloads[w] = true
			}
			if s.failing[w] == nil {
				s.failing[w] = map[string]bool{}
			}
			s.failing[w][c] = true
		}
		for w := range oldFailures {
			if _, has := cp.failures[w]; !has {
				delete(s.failing[w], c)
				if len(s.failing[w]) == 0 {
					delete(s.failing, w)
				}
			}
		}
		s.put(part{stageRoot, c}, "cluster/"+c, cp.root, changed)
	}
	// Rule 2 for the workloads whose failures changed; the clusters that joined or left a
	// rollout are computed again below.
	for w := range s.redecide {
		workloads[w] = true
	}
	s.redecide = map[string]bool{}
	again := maps.Clone(s.dirty)
	for _, w := range slices.Sorted(maps.Keys(workloads)) {
		old := s.rollouts[w]
		ro := s.decide(w)
		if ro == nil {
			delete(s.rollouts, w)
		} else {
			s.rollouts[w] = ro
		}
		var was, is []string
		var frag *fragment
		if old != nil {
			was = old.clusters
		}
		if ro != nil {
			is, frag = ro.clusters, ro.frag
		}
		for _, c := range was {
			if !slices.Contains(is, c) {
				delete(s.clusters[c].inRollout, w)
				again[c] = true
			}
		}
		for _, c := range is {
			if !slices.Contains(was, c) {
				s.clusters[c].inRollout[w] = true
				again[c] = true
			}
		}
		s.put(part{stageRollout, w}, "rollout/"+w, frag, changed)
	}
	// Rules 2 (a cluster's total), 3, 3b, 4 and what rule 5 groups, cluster by cluster.
	for c := range again {
		cp := s.clusters[c]
		old := cp.frags
		cp.frags = s.rest(cp)
		for k := range old {
			if cp.frags[k] == nil {
				s.put(part{k.stage, c}, k.group, nil, changed)
			}
		}
		for k, f := range cp.frags {
			s.put(part{k.stage, c}, k.group, f, changed)
		}
		if len(cp.alerts) == 0 {
			delete(s.clusters, c)
		}
		// Whether the cluster has alerts decides how its failures/<c> group is explained.
		if _, ok := s.frags["failures/"+c]; ok {
			changed["failures/"+c] = true
		}
	}
	s.dirty = map[string]bool{}
	for k := range changed {
		s.assemble(k)
	}
	return changed
}

// put makes f the fragment p adds to group k (none: nil), and marks k changed when that
// changes what k is made of. The new fragment replaces an equal one all the same: fragments
// list the alerts of their cluster's latest update, and an older one would keep older
// alerts in memory.
func (s *correlation) put(p part, k string, f *fragment, changed map[string]bool) {
	frags := s.frags[k]
	i := slices.IndexFunc(frags, func(x placed) bool { return x.part == p })
	var old *fragment
	if i >= 0 {
		old = frags[i].frag
	}
	if !sameFragment(old, f) {
		changed[k] = true
	}
	switch {
	case f == nil && i < 0:
	case f == nil && len(frags) == 1:
		delete(s.frags, k)
	case f == nil:
		s.frags[k] = slices.Delete(frags, i, i+1)
	case i >= 0:
		frags[i].frag = f
	default:
		s.frags[k] = append(frags, placed{p, f})
	}
}

// weigh computes a cluster's rule 1 and what it gives rule 2.
func (s *correlation) weigh(cp *clusterPart) {
	r, topo, c := s.r, s.topo, cp.name
	cp.apply()
	alerts, names := cp.alerts, cp.names
	cp.rooted, cp.root, cp.failures, cp.first = false, nil, nil, nil
	if len(alerts) == 0 {
		return
	}
	// 1. A silent cluster or a control plane down explains everything else from the cluster.
	root := -1
	for i, n := range names {
		if has(r.ClusterRoot, n) && (root < 0 || slices.Index(r.ClusterRoot, n) < slices.Index(r.ClusterRoot, names[root])) {
			root = i
		}
	}
	if root >= 0 && c != "" {
		rn := names[root]
		f := &fragment{stage: stageRoot, rootCause: fmt.Sprintf("%s in cluster %s", rn, c)}
		f.alerts = alertList{alerts, make([]int32, 0, len(alerts))}
		f.alerts.add(alerts, root)
		for i := range alerts {
			if i != root {
				f.alerts.add(alerts, i)
			}
		}
		f.explanation = fmt.Sprintf("%s: %s. Everything else from cluster %s (%d more alerts) follows from it, so it is one incident.",
			rn, describe(alerts[root]), c, len(alerts)-1)
		cp.rooted, cp.root = true, f.seal(r, c)
		return
	}
	// 2. What the cluster's failing workloads give rule 2. A failure on a NotReady node is
	// the node's (rule 3), not a rollout's.
	nodesDown := false
	for _, n := range names {
		if has(r.NodesRoot, n) {
			nodesDown = true
			break
		}
	}
	for i, a := range alerts {
		if !has(r.WorkloadFailure, names[i]) || nodesDown && onNotReadyNode(a, topo, "") {
			continue
		}
		w := workloadOf(a, topo)
		if w == "" {
			continue
		}
		if cp.failures == nil {
			cp.failures, cp.first = map[string][]int32{}, map[string]time.Time{}
		}
		cp.failures[w] = append(cp.failures[w], int32(i))
		if t, ok := cp.first[w]; !ok || a.StartsAt.Before(t) {
			cp.first[w] = a.StartsAt
		}
	}
}

// decide is rule 2 for workload w: the same workload failing in several clusters close
// together is one fleet-wide problem, most likely a bad rollout. nil: it is none.
func (s *correlation) decide(w string) *rolloutPart {
	r, topo := s.r, s.topo
	first := map[string]time.Time{}
	for c := range s.failing[w] {
		first[c] = s.clusters[c].first[w]
	}
	// The most clusters whose first failures fit in one window.
	all := slices.Collect(maps.Keys(first))
	sort.Slice(all, func(i, j int) bool {
		if !first[all[i]].Equal(first[all[j]]) {
			return first[all[i]].Before(first[all[j]])
		}
		return all[i] < all[j]
	})
	var clusters []string
	for i := range all {
		j := i
		for j < len(all) && (r.RolloutWindow <= 0 || first[all[j]].Sub(first[all[i]]) <= r.RolloutWindow) {
			j++
		}
		if j-i > len(clusters) {
			clusters = all[i:j]
		}
	}
	if len(clusters) < max(r.RolloutClusters, 2) {
		return nil
	}
	lo, hi := first[clusters[0]], first[clusters[len(clusters)-1]]
	clusters = slices.Clone(clusters)
	sort.Strings(clusters)
	// The failing pods' own owners (the new ReplicaSet of a rolling update), where the
	// alerts name them.
	owners := map[string][]string{} // cluster -> cluster/ns/owner
	var alerts []Alert              // copies: the rollout's alerts come from several clusters
	for _, c := range clusters {
		cp := s.clusters[c]
		for _, i := range cp.failures[w] {
			a := &cp.alerts[i]
			if o := a.Labels["owner_name"]; o != "" {
				owners[c] = append(owners[c], key(c, a.Labels["namespace"], o))
			}
			alerts = append(alerts, *a)
		}
	}
	slices.SortFunc(alerts, func(a, b Alert) int { return cmp.Compare(a.fp, b.fp) })
	idx := make([]int32, len(alerts))
	for i := range idx {
		idx[i] = int32(i)
	}
	img := sharedImage(w, clusters, topo, owners)
	f := &fragment{stage: stageRollout, alerts: alertList{alerts, idx}, image: img, rootCause: "likely bad rollout of " + w}
	if img != "" {
		f.rootCause += " (image " + img + ")"
	}
	f.explanation = fmt.Sprintf("Workload %s started failing in %d clusters (%s) within %s of each other", w, len(clusters), strings.Join(clusters, ", "), hi.Sub(lo).Round(time.Second))
	if img != "" {
		f.explanation += fmt.Sprintf("; every failing cluster runs image %s", img)
	}
	f.explanation += ". Failures of the same workload in several clusters at once point to what they share, the rollout, rather than to each cluster."
	return &rolloutPart{clusters: clusters, frag: f.seal(r, clusters...)}
}

// rest computes what a cluster adds to groups once rule 2 decided: its crash-loop total to
// its rollout, rules 3, 3b and 4, and rule 5's fragments.
func (s *correlation) rest(cp *clusterPart) map[fragmentKey]*fragment {
	if cp.rooted || len(cp.alerts) == 0 {
		return nil
	}
	r, topo, c := s.r, s.topo, cp.name
	alerts, names := cp.alerts, cp.names
	taken := make([]bool, len(alerts))
	for w := range cp.inRollout {
		for _, i := range cp.failures[w] {
			taken[i] = true
		}
	}
	out := map[fragmentKey]*fragment{}
	add := func(k string, st stage, i int, rootCause string) *fragment {
		f := out[fragmentKey{k, st}]
		if f == nil {
			f = &fragment{stage: st, rootCause: rootCause}
			out[fragmentKey{k, st}] = f
		}
		f.alerts.add(alerts, i)
		taken[i] = true
		return f
	}
	name := func(i int) string { return names[i] }

	// 2. A cluster's crash-loop total goes with the rollout when the cluster is part of one
	// (the first by key, when it is part of several).
	if len(cp.inRollout) > 0 {
		k := "rollout/" + slices.Min(slices.Collect(maps.Keys(cp.inRollout)))
		for i := range alerts {
			if !taken[i] && has(r.ClusterFailure, name(i)) {
				add(k, stageTotal, i, "")
			}
		}
	}

	// 3. NotReady nodes explain failing and pending pods on them; saturation explains pending
	// pods of its cluster.
	var made []string
	for ri := range alerts {
		if taken[ri] {
			continue
		}
		rn := name(ri)
		switch {
		case has(r.NodesRoot, rn):
			node := alerts[ri].Labels["node"]
			k := "nodes/" + c
			cause := fmt.Sprintf("%s in cluster %s", rn, c)
			if node != "" {
				k += "/" + node
				cause = fmt.Sprintf("node %s of cluster %s is not Ready", node, c)
			}
			if out[fragmentKey{k, stageNodes}] == nil {
				made = append(made, k)
			}
			add(k, stageNodes, ri, cause)
			absorbed, left := 0, 0
			for i := range alerts {
				n := name(i)
				if taken[i] || !(has(r.WorkloadFailure, n) || has(r.Pending, n)) {
					continue
				}
				if onNotReadyNode(alerts[i], topo, node) {
					add(k, stageNodes, i, "")
					absorbed++
				} else if has(r.WorkloadFailure, n) {
					left++
				}
			}
			// The cluster's crash-loop total goes with the nodes when they explain every
			// failing workload of the cluster.
			if absorbed > 0 && left == 0 {
				for i := range alerts {
					if !taken[i] && has(r.ClusterFailure, name(i)) {
						add(k, stageNodes, i, "")
					}
				}
			}
		case has(r.Saturation, rn):
			k := "saturation/" + c
			if out[fragmentKey{k, stageNodes}] == nil {
				made = append(made, k)
			}
			add(k, stageNodes, ri, fmt.Sprintf("%s in cluster %s", rn, c))
			for i := range alerts {
				if !taken[i] && has(r.Pending, name(i)) {
					add(k, stageNodes, i, "")
				}
			}
		}
	}
	for _, k := range made {
		f := out[fragmentKey{k, stageNodes}]
		first := f.alerts.at(0)
		f.explanation = fmt.Sprintf("%s: %s", first.Labels["alertname"], describe(*first))
		if n := f.alerts.len() - 1; n > 0 && strings.HasPrefix(k, "nodes/") {
			f.explanation += fmt.Sprintf(". %d alerts about pods on the NotReady nodes follow from it.", n)
		} else if n > 0 {
			f.explanation += fmt.Sprintf(". %d alerts about Pending pods follow from it: the cluster has no room to schedule them.", n)
		}
	}

	// 3b. Alerts fleetwatch's own remediation causes (pods Pending while a drain moves them, a
	// workload failing while it is rolled back or failed over) join the incident the action
	// remediates instead of opening new ones, and its explanation says so.
	for i, a := range alerts {
		if taken[i] || (!has(r.Pending, name(i)) && !has(r.WorkloadFailure, name(i))) {
			continue
		}
		for _, act := range topo.Actions {
			if act.Cluster != c {
				continue
			}
			switch {
			case act.Node != "" && has(r.Pending, name(i)):
				// Pods evicted from a drained node wait for a place elsewhere.
			case act.Workload != "" && workloadOf(a, topo) == act.Namespace+"/"+act.Workload:
			default:
				continue
			}
			f := add(act.IncidentKey, stageCaused, i, act.What)
			f.caused = append(f.caused, act.What)
			break
		}
	}

	// 4. Crash loops left in a cluster are one incident per cluster.
	failures, failing := "failures/"+c, "failing workloads in cluster "+c
	for i := range alerts {
		if n := name(i); !taken[i] && (has(r.WorkloadFailure, n) || has(r.ClusterFailure, n)) {
			add(failures, stageFailures, i, failing)
		}
	}

	// 5. Everything else: the same alert in several clusters is one incident listing them.
	for i, a := range alerts {
		if !taken[i] {
			n := name(i)
			add("alert/"+n+"/"+strconv.FormatUint(a.localFP, 16), stageAlert, i, n)
		}
	}
	for k, f := range out {
		if k.stage == stageCaused {
			// A failover's alerts in the clusters it moves workloads to do not make those
			// clusters part of the lost cluster's incident.
			if kind, rest, _ := strings.Cut(k.group, "/"); kind != "rollout" && strings.Split(rest, "/")[0] != c {
				f.seal(r)
				continue
			}
		}
		f.seal(r, c)
	}
	return out
}

// assemble makes group k again from its fragments, in the order the rules add them.
func (s *correlation) assemble(k string) {
	delete(s.groups, k)
	frags := s.frags[k]
	if len(frags) == 0 {
		return
	}
	slices.SortFunc(frags, func(a, b placed) int {
		return cmp.Or(cmp.Compare(a.part.stage, b.part.stage), cmp.Compare(a.part.name, b.part.name))
	})
	n := 0
	for _, p := range frags {
		n += p.frag.alerts.len()
	}
	g := &Group{Key: k, Scope: "cluster", Alerts: make([]Alert, 0, n)}
	var caused, clusters []string
	rank := 0
	for i := 0; i < len(frags); {
		// The fragments of one stage, from several clusters, go in fingerprint order as
		// Correlate takes the alerts.
		j := i + 1
		for j < len(frags) && frags[j].part.stage == frags[i].part.stage {
			j++
		}
		block := frags[i:j]
		var why []string // rule 3b: what caused each alert of the block
		if len(block) == 1 {
			l := &block[0].frag.alerts
			for i := range l.idx {
				g.Alerts = append(g.Alerts, *l.at(i))
			}
			why = block[0].frag.caused
		} else {
			type item struct{ f, a int }
			var items []item
			for f, p := range block {
				for a := range p.frag.alerts.idx {
					items = append(items, item{f, a})
				}
			}
			slices.SortFunc(items, func(x, y item) int {
				return cmp.Compare(block[x.f].frag.alerts.at(x.a).fp, block[y.f].frag.alerts.at(y.a).fp)
			})
			for _, it := range items {
				f := block[it.f].frag
				g.Alerts = append(g.Alerts, *f.alerts.at(it.a))
				if f.caused != nil {
					why = append(why, f.caused[it.a])
				}
			}
		}
		f := block[0].frag
		if i == 0 {
			g.RootCause = f.rootCause
			switch f.stage {
			case stageCaused:
				g.RootCause = why[0]
			case stageRollout:
				g.Scope, g.Image = "fleet", f.image
			}
		}
		if f.explanation != "" {
			g.Explanation = f.explanation
		}
		// The team is the first alert's that has one: in the block's first fragment with one,
		// or, of several clusters' fragments, the one whose alert comes first.
		var team *fragment
		for _, p := range block {
			f := p.frag
			rank = max(rank, f.rank)
			if len(frags) == 1 {
				clusters = f.clusters // sorted; shared, as the group is, read only
			}
			for _, c := range f.clusters {
				if len(frags) > 1 && !has(clusters, c) {
					clusters = append(clusters, c)
				}
			}
			if f.team != "" && (team == nil || f.teamFP < team.teamFP) {
				team = f
			}
		}
		if g.Team == "" && team != nil {
			g.Team = team.team
		}
		for _, w := range why {
			if !has(caused, w) {
				caused = append(caused, w)
			}
		}
		i = j
	}
	if len(frags) > 1 {
		sort.Strings(clusters)
	}
	g.Clusters = clusters
	if len(g.Clusters) > 1 {
		g.Scope = "fleet"
	}
	switch kind, c, _ := strings.Cut(k, "/"); {
	case kind == "failures" && s.clusters[c] != nil:
		var ws []string
		for _, a := range g.Alerts {
			if w := workloadOf(a, s.topo); w != "" && !has(ws, w) {
				ws = append(ws, w)
			}
		}
		sort.Strings(ws)
		if len(ws) == 1 {
			g.RootCause = "workload " + ws[0] + " is failing in cluster " + c
		}
		g.Explanation = fmt.Sprintf("Only cluster %s shows these failures (%s), and no node or cluster problem there explains them: look at the workload itself.", c, strings.Join(ws, ", "))
	case kind == "alert":
		g.Explanation = g.Alerts[0].Labels["alertname"] + ": " + describe(g.Alerts[0])
		if len(g.Clusters) > 1 {
			g.Explanation += fmt.Sprintf(" The same alert fires in %d clusters (%s); it is one incident.", len(g.Clusters), strings.Join(g.Clusters, ", "))
		}
	}
	if len(caused) > 0 {
		g.Explanation = strings.TrimSpace(g.Explanation + " Alerts about pending or failing pods here are expected while fleetwatch acts: " + strings.Join(caused, "; ") + ".")
	}
	g.Severity = severityName(rank)
	slices.SortFunc(g.Alerts, func(a, b Alert) int { return cmp.Compare(a.fp, b.fp) })
	s.groups[k] = g
}

// sorted returns the groups in key order.
func (s *correlation) sorted() []Group {
	out := make([]Group, 0, len(s.groups))
	for _, k := range slices.Sorted(maps.Keys(s.groups)) {
		out = append(out, *s.groups[k])
	}
	return out
}

// sameFragment reports whether two fragments add the same to a group.
func sameFragment(a, b *fragment) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.stage == b.stage && a.rootCause == b.rootCause && a.explanation == b.explanation && a.image == b.image &&
		slices.Equal(a.caused, b.caused) && slices.Equal(a.clusters, b.clusters) && sameAlerts(a.alerts, b.alerts)
}

// sameMap reports whether a and b are the same map (not only equal).
func sameMap(a, b map[string]string) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}
