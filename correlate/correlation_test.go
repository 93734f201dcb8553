package correlate

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/rules/pack"
)

// fleetGen makes random alerts over a small fleet whose topology ties them together: pods on
// nodes that are NotReady or not, workloads with images, remediation actions in flight. The
// values are few, so that alerts meet in every rule: roots, rollouts across clusters, nodes,
// saturation, caused alerts, the same alert in several clusters.
type fleetGen struct {
	rnd      *rand.Rand
	clusters []string
	topo     *Topology
}

var (
	genNamespaces = []string{"cart", "pay", "web"}
	genWorkloads  = []string{"api", "worker"}
	genNodes      = []string{"n0", "n1", "n2"}
)

func newFleetGen(seed uint64, actions bool) *fleetGen {
	g := &fleetGen{rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), clusters: []string{"c0", "c1", "c2", "c3", "c4"}}
	t := &Topology{PodNode: map[string]string{}, PodWorkload: map[string]string{}, WorkloadImages: map[string][]string{},
		OwnerImages: map[string][]string{}, OwnerWorkload: map[string]string{}, NotReadyNodes: map[string]bool{}}
	for _, c := range g.clusters {
		for _, n := range genNodes {
			if g.rnd.IntN(3) == 0 {
				t.NotReadyNodes[key(c, n)] = true
			}
		}
		for _, ns := range genNamespaces {
			for _, w := range genWorkloads {
				img := fmt.Sprintf("%s:v%d", w, 1+g.rnd.IntN(2))
				t.WorkloadImages[key(c, ns, w)] = []string{img, "sidecar:1"}
				rs := w + "-5d4f8b9c7" + fmt.Sprint(g.rnd.IntN(2))
				t.OwnerWorkload[key(c, ns, rs)] = w
				t.OwnerImages[key(c, ns, rs)] = []string{img}
				for p := range 2 {
					pod := fmt.Sprintf("%s-%d", w, p)
					t.PodNode[key(c, ns, pod)] = genNodes[g.rnd.IntN(len(genNodes))]
					t.PodWorkload[key(c, ns, pod)] = w
				}
			}
		}
	}
	if actions {
		t.Actions = []Action{
			{Cluster: "c1", Node: "n1", IncidentKey: "nodes/c1/n1", What: "drain of node n1"},
			{Cluster: "c2", Namespace: "cart", Workload: "api", IncidentKey: "failures/c2", What: "rollback of cart/api"},
			{Cluster: "c3", Namespace: "pay", Workload: "worker", IncidentKey: "cluster/c0", What: "failover of pay/worker from c0"},
			{Cluster: "c4", Namespace: "web", Workload: "api", IncidentKey: "rollout/web/api", What: "rollback of web/api"},
			{Cluster: "c0", Namespace: "web", Workload: "worker", IncidentKey: "alert/Gone/1", What: "restart of web/worker"},
			{Cluster: "c1", Namespace: "cart", Workload: "worker", IncidentKey: "failures/c3", What: "failover of cart/worker from c3"},
		}
	}
	g.topo = t
	return g
}

func (g *fleetGen) pick(list []string) string { return list[g.rnd.IntN(len(list))] }

// moved returns a copy of the topology with a few things changed: a node Ready or not, a pod
// on another node or of another workload, an image rolled out.
func (g *fleetGen) moved() *Topology {
	t := *g.topo
	t.PodNode, t.PodWorkload, t.NotReadyNodes = maps.Clone(t.PodNode), maps.Clone(t.PodWorkload), maps.Clone(t.NotReadyNodes)
	t.WorkloadImages, t.OwnerImages = maps.Clone(t.WorkloadImages), maps.Clone(t.OwnerImages)
	t.workloadPods = nil
	c, ns, w := g.pick(g.clusters), g.pick(genNamespaces), g.pick(genWorkloads)
	pod := key(c, ns, fmt.Sprintf("%s-%d", w, g.rnd.IntN(2)))
	switch g.rnd.IntN(4) {
	case 0:
		n := key(c, g.pick(genNodes))
		t.NotReadyNodes[n] = !t.NotReadyNodes[n]
	case 1:
		t.PodNode[pod] = g.pick(genNodes)
	case 2:
		t.PodWorkload[pod] = g.pick(genWorkloads)
	default:
		img := fmt.Sprintf("%s:v%d", w, 1+g.rnd.IntN(3))
		t.WorkloadImages[key(c, ns, w)] = []string{img, "sidecar:1"}
		for o, ow := range t.OwnerWorkload {
			if ow == w && strings.HasPrefix(o, key(c, ns)+keySep) {
				t.OwnerImages[o] = []string{img}
			}
		}
	}
	return &t
}

// alert makes one random alert.
func (g *fleetGen) alert() Alert {
	c, ns, w := g.pick(g.clusters), g.pick(genNamespaces), g.pick(genWorkloads)
	pod := fmt.Sprintf("%s-%d", w, g.rnd.IntN(2))
	var ls []string
	switch g.rnd.IntN(12) {
	case 0:
		ls = []string{"alertname", g.pick([]string{pack.AlertClusterSilent, pack.AlertClusterControlPlaneDown, "KubeAPIDown"})}
	case 1:
		ls = []string{"alertname", "KubeNodeNotReady", "node", g.pick(genNodes)}
	case 2:
		ls = []string{"alertname", pack.AlertClusterNodesNotReady}
	case 3:
		ls = []string{"alertname", g.pick([]string{"KubeCPUOvercommit", pack.AlertClusterMemoryRequestsSaturated})}
	case 4:
		ls = []string{"alertname", "KubePodPending", "namespace", ns, "pod", pod}
	case 5, 6:
		ls = []string{"alertname", "KubePodCrashLooping", "namespace", ns, "pod", pod}
	case 7:
		ls = []string{"alertname", pack.AlertWorkloadCrashLooping, "namespace", ns, "owner_kind", "ReplicaSet", "owner_name", w + "-5d4f8b9c7" + fmt.Sprint(g.rnd.IntN(2))}
	case 8:
		ls = []string{"alertname", "KubeDeploymentRolloutStuck", "namespace", ns, "deployment", w}
	case 9:
		ls = []string{"alertname", pack.AlertClusterCrashLooping}
	default:
		ls = []string{"alertname", g.pick([]string{"TargetDown", "CertificateExpiring", "Gone"}), "job", g.pick([]string{"a", "b"})}
	}
	ls = append(ls, "cluster", c, "severity", g.pick([]string{"warning", "critical", "info"}))
	a := alert(time.Duration(g.rnd.IntN(40))*time.Minute, ls...)
	if g.rnd.IntN(2) == 0 {
		a.Annotations = map[string]string{"summary": fmt.Sprintf("summary %d.", g.rnd.IntN(3))}
	}
	return a
}

// TestCorrelationIncremental: a correlation kept across changes (alerts added, taken in
// again with other annotations or start, removed; the topology changing) groups exactly as
// Correlate does from scratch on the alerts and topology of the moment, and names every
// group that changed.
func TestCorrelationIncremental(t *testing.T) {
	for seed := range uint64(60) {
		actions := seed%3 == 0
		t.Run(fmt.Sprintf("seed=%d,actions=%t", seed, actions), func(t *testing.T) {
			checkIncremental(t, seed, actions, 40)
		})
	}
}

// FuzzCorrelationIncremental is TestCorrelationIncremental over more fleets and step counts.
func FuzzCorrelationIncremental(f *testing.F) {
	f.Add(uint64(7), true, uint8(40))
	f.Add(uint64(8), false, uint8(40))
	f.Fuzz(func(t *testing.T, seed uint64, actions bool, steps uint8) {
		checkIncremental(t, seed, actions, int(steps%64)+1)
	})
}

// checkIncremental runs one random fleet for steps steps (see TestCorrelationIncremental).
func checkIncremental(t *testing.T, seed uint64, actions bool, steps int) {
	t.Helper()
	r := DefaultRules
	r.Teams = map[string]string{"pay": "payments"}
	g := newFleetGen(seed, actions)
	s := newCorrelation(r, g.topo)
	cur := map[uint64]Alert{}
	prev := map[string]Group{}
	for step := range steps {
		for range g.rnd.IntN(8) {
			a := r.withFingerprints([]Alert{g.alert()})[0]
			cur[a.fp] = a
			s.set(a)
		}
		fps := slices.Sorted(maps.Keys(cur))
		for range g.rnd.IntN(4) {
			if len(fps) == 0 {
				break
			}
			fp := fps[g.rnd.IntN(len(fps))]
			a, ok := cur[fp]
			if !ok {
				continue
			}
			if g.rnd.IntN(2) == 0 {
				delete(cur, fp)
				s.remove(a)
				continue
			}
			// Taken in again: new maps (the labels' too, mostly), maybe another summary
			// or start.
			if g.rnd.IntN(4) > 0 {
				a.Labels = maps.Clone(a.Labels)
			}
			a.Annotations = map[string]string{"summary": fmt.Sprintf("summary %d.", g.rnd.IntN(3))}
			a.StartsAt = a.StartsAt.Add(time.Duration(g.rnd.IntN(3)-1) * 10 * time.Minute)
			cur[fp] = a
			s.set(a)
		}
		if g.rnd.IntN(4) == 0 {
			topo := g.moved()
			if !s.follow(topo) {
				require.NotEmpty(t, topo.Actions, "step %d: only actions make a grouping start again", step)
				s = newCorrelation(r, topo)
				for _, a := range cur {
					s.set(a)
				}
				prev = map[string]Group{}
			}
			g.topo = topo
		}
		changed := s.update()
		want := Correlate(slices.Collect(maps.Values(cur)), g.topo, r)
		require.Equal(t, want, s.sorted(), "step %d", step)

		now := map[string]Group{}
		for _, gr := range want {
			now[gr.Key] = gr
			for _, a := range gr.Alerts {
				k, ok := s.holder(a)
				require.True(t, ok && k == gr.Key, "step %d: an alert of %s is held by %q", step, gr.Key, k)
			}
		}
		for _, gr := range prev {
			for _, a := range gr.Alerts {
				if _, held := cur[a.fp]; !held {
					_, ok := s.holder(a)
					require.False(t, ok, "step %d: an alert removed is still held", step)
				}
			}
		}
		for k, gr := range now {
			if old, ok := prev[k]; !ok || !equalGroups(old, gr) {
				require.True(t, changed[k], "step %d: group %s changed but was not named", step, k)
			}
		}
		for k := range prev {
			if _, ok := now[k]; !ok {
				require.True(t, changed[k], "step %d: group %s went but was not named", step, k)
			}
		}
		prev = now
	}
}

// equalGroups compares two groups as the tracker would store them.
func equalGroups(a, b Group) bool {
	return fmt.Sprintf("%+v", a) == fmt.Sprintf("%+v", b)
}

// TestCorrelateOrderFree: Correlate's groups do not depend on the order of its alerts, not even
// which alert's summary explains a group or which namespace's team it goes to.
func TestCorrelateOrderFree(t *testing.T) {
	r := DefaultRules
	r.Teams = map[string]string{"pay": "payments", "cart": "shop"}
	for seed := range uint64(20) {
		g := newFleetGen(seed, seed%2 == 0)
		// Distinct alerts: the engine holds one per fingerprint.
		var as []Alert
		seen := map[uint64]bool{}
		for range 60 {
			a := g.alert()
			if fp := r.Fingerprint(a); !seen[fp] {
				seen[fp] = true
				as = append(as, a)
			}
		}
		want := Correlate(as, g.topo, r)
		for range 5 {
			g.rnd.Shuffle(len(as), func(i, j int) { as[i], as[j] = as[j], as[i] })
			require.Equal(t, want, Correlate(as, g.topo, r), "seed %d", seed)
		}
	}
}

// TestCorrelationClusterGone: a failures/<c> group made only of alerts remediation causes in
// another cluster is explained as rule 4 explains it while cluster c has alerts, and as
// rule 3b alone once c has none; the incremental correlation follows c's last alert going.
func TestCorrelationClusterGone(t *testing.T) {
	topo := &Topology{Actions: []Action{{Cluster: "c1", Namespace: "cart", Workload: "worker", IncidentKey: "failures/c3", What: "failover of cart/worker from c3"}}}
	r := DefaultRules
	as := r.withFingerprints([]Alert{
		alert(0, "alertname", "KubeDeploymentRolloutStuck", "cluster", "c1", "namespace", "cart", "deployment", "worker", "severity", "warning"),
		alert(0, "alertname", "TargetDown", "cluster", "c3", "job", "a", "severity", "warning"),
	})
	s := newCorrelation(r, topo)
	for _, a := range as {
		s.set(a)
	}
	s.update()
	require.Equal(t, Correlate(as, topo, r), s.sorted())
	require.Contains(t, s.groups["failures/c3"].Explanation, "Only cluster c3 shows these failures (cart/worker)")
	s.remove(as[1])
	require.True(t, s.update()["failures/c3"], "the group's explanation changed")
	require.Equal(t, Correlate(as[:1], topo, r), s.sorted())
	require.Equal(t, "Alerts about pending or failing pods here are expected while fleetwatch acts: failover of cart/worker from c3.", s.groups["failures/c3"].Explanation)
}
