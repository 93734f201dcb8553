package correlate

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql"
)

// Topology is what the engine knows of the fleet's shape, read from the global view: which
// node each pod runs on, which workload owns it, which images a workload runs, and which
// nodes are not Ready. Keys are joined with "/": "cluster/namespace/pod", "cluster/node",
// "cluster/namespace/workload".
type Topology struct {
	PodNode        map[string]string   // cluster/ns/pod -> node
	PodWorkload    map[string]string   // cluster/ns/pod -> workload (Deployment, or the controller)
	WorkloadImages map[string][]string // cluster/ns/workload -> images its containers run
	// OwnerImages are the images of the pods of each controlling owner as the view names it
	// (a Deployment's ReplicaSet, with its pod-template hash): during a rolling update the old
	// and the new ReplicaSet run side by side, each with its own images.
	OwnerImages   map[string][]string // cluster/ns/owner -> images its pods run
	OwnerWorkload map[string]string   // cluster/ns/owner -> the workload it belongs to
	NotReadyNodes map[string]bool     // cluster/node
	// Actions are what fleetwatch's remediation is doing (or just did) to the fleet: alerts
	// they cause join the incident they remediate instead of opening new ones.
	Actions []Action

	workloadPods map[string][]string // cluster/ns/workload -> cluster/ns/pod, built on first use
}

// podsOf lists the pods of a workload ("cluster/ns/pod" keys).
func (t *Topology) podsOf(cluster, ns, workload string) []string {
	if t.workloadPods == nil {
		t.workloadPods = make(map[string][]string, len(t.PodWorkload))
		for pod, w := range t.PodWorkload {
			c, rest, _ := strings.Cut(pod, keySep)
			podNS, _, _ := strings.Cut(rest, keySep)
			k := key(c, podNS, w)
			t.workloadPods[k] = append(t.workloadPods[k], pod)
		}
	}
	return t.workloadPods[key(cluster, ns, workload)]
}

// changes names the clusters whose topology differs between t and o (the cluster is the first
// part of every key), and reports whether any workload's or owner's images or owner changed
// (a rollout's image is chosen among every cluster's).
func (t *Topology) changes(o *Topology) (clusters map[string]bool, images bool) {
	if t == nil {
		t = &Topology{}
	}
	if o == nil {
		o = &Topology{}
	}
	clusters = map[string]bool{}
	mark := func(k string) {
		c, _, _ := strings.Cut(k, keySep)
		clusters[c] = true
	}
	str := func(a, b string) bool { return a == b }
	diffKeys(t.PodNode, o.PodNode, str, mark)
	diffKeys(t.PodWorkload, o.PodWorkload, str, mark)
	images = diffKeys(t.OwnerWorkload, o.OwnerWorkload, str, mark)
	images = diffKeys(t.WorkloadImages, o.WorkloadImages, slices.Equal, mark) || images
	images = diffKeys(t.OwnerImages, o.OwnerImages, slices.Equal, mark) || images
	// A node missing is a Ready one.
	diffKeys(t.NotReadyNodes, o.NotReadyNodes, func(a, b bool) bool { return a == b }, func(k string) {
		if t.NotReadyNodes[k] != o.NotReadyNodes[k] {
			mark(k)
		}
	})
	return clusters, images
}

// actions are t's actions; none for a nil topology.
func (t *Topology) actions() []Action {
	if t == nil {
		return nil
	}
	return t.Actions
}

// Action is one remediation action in flight or just verified: a node drained or cordoned, a
// Deployment rolled back or failed over, for the incident whose group key is IncidentKey.
type Action struct {
	Cluster string `json:"cluster"`
	// Node is set for a node action; Namespace and Workload for a workload action.
	Node      string `json:"node,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Workload  string `json:"workload,omitempty"`
	// IncidentKey is the group key of the incident the action remediates.
	IncidentKey string `json:"incident_key"`
	// What says what fleetwatch does ("drain of node n2 (remediation rem-…)").
	What string `json:"what"`
}

// QueryFunc answers an instant PromQL query (rules.EngineQueryFunc over the view).
type QueryFunc func(ctx context.Context, q string, ts time.Time) (promql.Vector, error)

// The queries LoadTopology runs; kube-state-metrics v2 series.
const (
	qPodNode   = `max by (cluster, namespace, pod, node) (kube_pod_info{node!=""})`
	qPodOwner  = `max by (cluster, namespace, pod, owner_kind, owner_name) (kube_pod_owner{owner_is_controller="true"})`
	qRSOwner   = `max by (cluster, namespace, replicaset, owner_kind, owner_name) (kube_replicaset_owner{owner_kind="Deployment"})`
	qImages    = `max by (cluster, namespace, pod, image) (kube_pod_container_info)`
	qNotReady  = `max by (cluster, node) (kube_node_status_condition{condition="Ready", status="true"}) == 0`
	keySep     = "/"
	unknownKey = ""
)

func key(parts ...string) string { return strings.Join(parts, keySep) }

// LoadTopology reads the topology at ts.
func LoadTopology(ctx context.Context, q QueryFunc, ts time.Time) (*Topology, error) {
	t := &Topology{PodNode: map[string]string{}, PodWorkload: map[string]string{}, WorkloadImages: map[string][]string{},
		OwnerImages: map[string][]string{}, OwnerWorkload: map[string]string{}, NotReadyNodes: map[string]bool{}}
	run := func(query string) (promql.Vector, error) {
		v, err := q(ctx, query, ts)
		if err != nil {
			return nil, fmt.Errorf("topology: %s: %w", query, err)
		}
		return v, nil
	}
	v, err := run(qPodNode)
	if err != nil {
		return nil, err
	}
	for _, s := range v {
		m := s.Metric
		t.PodNode[key(m.Get("cluster"), m.Get("namespace"), m.Get("pod"))] = m.Get("node")
	}
	rsDeploy := map[string]string{}
	if v, err = run(qRSOwner); err != nil {
		return nil, err
	}
	for _, s := range v {
		m := s.Metric
		rsDeploy[key(m.Get("cluster"), m.Get("namespace"), m.Get("replicaset"))] = m.Get("owner_name")
	}
	if v, err = run(qPodOwner); err != nil {
		return nil, err
	}
	podOwner := map[string]string{} // cluster/ns/pod -> its controlling owner as named
	for _, s := range v {
		m := s.Metric
		c, ns, owner := m.Get("cluster"), m.Get("namespace"), m.Get("owner_name")
		podOwner[key(c, ns, m.Get("pod"))] = owner
		ok := key(c, ns, owner)
		if m.Get("owner_kind") == "ReplicaSet" {
			if d, found := rsDeploy[ok]; found {
				owner = d
			}
		}
		t.PodWorkload[key(c, ns, m.Get("pod"))] = owner
		t.OwnerWorkload[ok] = owner
	}
	if v, err = run(qImages); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, s := range v {
		m := s.Metric
		c, ns := m.Get("cluster"), m.Get("namespace")
		w, ok := t.PodWorkload[key(c, ns, m.Get("pod"))]
		if !ok {
			continue
		}
		wk, img := key(c, ns, w), m.Get("image")
		if !seen[wk+"\xff"+img] {
			seen[wk+"\xff"+img] = true
			t.WorkloadImages[wk] = append(t.WorkloadImages[wk], img)
		}
		if o := podOwner[key(c, ns, m.Get("pod"))]; o != "" && !seen["owner\xff"+key(c, ns, o)+"\xff"+img] {
			seen["owner\xff"+key(c, ns, o)+"\xff"+img] = true
			ok := key(c, ns, o)
			t.OwnerImages[ok] = append(t.OwnerImages[ok], img)
		}
	}
	if v, err = run(qNotReady); err != nil {
		return nil, err
	}
	for _, s := range v {
		t.NotReadyNodes[key(s.Metric.Get("cluster"), s.Metric.Get("node"))] = true
	}
	return t, nil
}

// ReplicaSetWorkload maps a ReplicaSet name to its Deployment when the view does not say:
// Kubernetes names a Deployment's ReplicaSets "<deployment>-<pod-template-hash>".
func ReplicaSetWorkload(rs string) string {
	i := strings.LastIndexByte(rs, '-')
	if i <= 0 || len(rs)-i-1 < 5 || len(rs)-i-1 > 10 {
		return rs
	}
	return rs[:i]
}

// diffKeys calls mark with every key whose value differs between a and b (or that only one of
// them has), and reports whether there was one.
func diffKeys[V any](a, b map[string]V, equal func(V, V) bool, mark func(string)) bool {
	changed := false
	for k, v := range a {
		if w, ok := b[k]; !ok || !equal(v, w) {
			mark(k)
			changed = true
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			mark(k)
			changed = true
		}
	}
	return changed
}
