package remediate

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/schedule"
)

// Built-in playbook names.
const (
	PlaybookNodesNotReady = "nodes-not-ready"
	PlaybookBadRollout    = "bad-rollout"
	PlaybookCrashLoop     = "crash-loop"
	PlaybookClusterLost   = "cluster-lost"
	PlaybookFailback      = "failback"
	PlaybookSaturated     = "saturated-cluster"
)

// KindFailback is the incident kind the failback playbook matches: no incident has it; the
// engine plans a failback itself once a cluster it failed over from is back.
const KindFailback = "failback"

// Verifications of the built-in playbooks, over kube-state-metrics series in the global view.
// Each returns one sample, 1 when the step worked; an empty answer (the cluster's data stopped)
// is inconclusive.
const (
	verifyCordoned = `max(kube_node_spec_unschedulable{cluster="{{.Cluster}}",node="{{.Node}}"}) == bool 1`
	// No pod but DaemonSets' left on the node, while the cluster's nodes are still reported.
	verifyDrained = `(count(kube_pod_info{cluster="{{.Cluster}}",node="{{.Node}}",created_by_kind!="DaemonSet"}) or on() vector(0)) == bool 0` +
		` and on() count(kube_node_info{cluster="{{.Cluster}}"}) > 0`
	// The rolled-back template is observed, every replica updated and available.
	verifyRolledOut = `min(` +
		`(kube_deployment_status_replicas_available` + deployment + ` >= bool kube_deployment_spec_replicas` + deployment + `)` +
		` * (kube_deployment_status_replicas_updated` + deployment + ` >= bool kube_deployment_spec_replicas` + deployment + `)` +
		` * (kube_deployment_status_observed_generation` + deployment + ` >= bool kube_deployment_metadata_generation` + deployment + `))`
	deployment = `{cluster="{{.Cluster}}",namespace="{{.Namespace}}",deployment="{{.Name}}"}`
	// The receiving cluster runs the replicas it had plus the ones the failover added, all
	// available.
	verifyFailedOver = `max(kube_deployment_status_replicas_available` + deployment + `) >= bool {{.Replicas}}`
	// The cluster that came back runs the Deployment with every replica available.
	verifyFailedBack = `min(kube_deployment_status_replicas_available` + origin + ` >= bool kube_deployment_spec_replicas` + origin + `)`
	origin           = `{cluster="{{.From}}",namespace="{{.Namespace}}",deployment="{{.Name}}"}`
	// The saturated cluster runs no more replicas than it kept.
	verifyShed = `max(kube_deployment_spec_replicas` + deployment + `) <= bool {{.Replicas}}`
)

// DefaultPlaybooks are the built-in playbooks (remediate/README.md); fleetwatch.yml's playbooks
// replace one of the same name.
var DefaultPlaybooks = []config.PlaybookConfig{
	{
		// A cluster's NotReady nodes: cordoned once an operator approves, then drained through
		// the Eviction API node by node.
		Name:  PlaybookNodesNotReady,
		Match: config.MatchConfig{Kinds: []string{schedule.IncidentNodes}},
		Steps: []config.StepConfig{
			{Action: config.ActionCordon, Mode: config.ModeApprove, When: config.WhenVerified, Timeout: model.Duration(2 * time.Minute), Verify: verifyCordoned},
			{Action: config.ActionDrain, Mode: config.ModeAuto, When: config.WhenVerified, Timeout: model.Duration(10 * time.Minute), Verify: verifyDrained},
		},
	},
	{
		// A workload failing in several clusters at once: rolled back to its previous template
		// cluster by cluster, the one with the fewest replicas first, stopping at the first
		// that does not recover.
		Name:  PlaybookBadRollout,
		Match: config.MatchConfig{Kinds: []string{schedule.IncidentRollout}},
		Steps: []config.StepConfig{
			{Action: config.ActionRollback, Mode: config.ModeAuto, When: config.WhenVerified, Timeout: model.Duration(5 * time.Minute), Verify: verifyRolledOut},
		},
	},
	{
		// A cluster lost (silent, its API server unreachable, the rest of the fleet in
		// sight): its Deployments, as fleetwatch kept them while it was healthy, are created
		// or scaled up in the clusters placement picks, biggest first. Nothing is written to
		// the lost cluster.
		Name:  PlaybookClusterLost,
		Match: config.MatchConfig{Kinds: []string{schedule.IncidentClusterDown}},
		Steps: []config.StepConfig{
			{Action: config.ActionFailover, Mode: config.ModeAuto, When: config.WhenVerified, Timeout: model.Duration(10 * time.Minute), Verify: verifyFailedOver, RPO: config.DefaultRPO},
		},
	},
	{
		// A cluster fleetwatch failed over from is back: once an operator approves, what the
		// failover created is deleted and what it scaled is scaled back, workload by
		// workload, each once the cluster runs it again.
		Name:  PlaybookFailback,
		Match: config.MatchConfig{Kinds: []string{KindFailback}},
		Steps: []config.StepConfig{
			{Action: config.ActionFailback, Mode: config.ModeApprove, When: config.WhenVerified, Timeout: model.Duration(10 * time.Minute), Verify: verifyFailedBack},
		},
	},
	{
		// A cluster whose requests are past the saturation ceiling: once an operator
		// approves, replicas of its Deployments that request the most move to the clusters
		// placement picks until it is back under the ceiling (one replica of each stays), and
		// once they run there, the cluster is scaled down by as many.
		Name:  PlaybookSaturated,
		Match: config.MatchConfig{Kinds: []string{schedule.IncidentSaturation}},
		Steps: []config.StepConfig{
			{Action: config.ActionFailover, Mode: config.ModeApprove, When: config.WhenVerified, Timeout: model.Duration(10 * time.Minute), Verify: verifyFailedOver, RPO: config.DefaultRPO},
			{Action: config.ActionShed, Mode: config.ModeAuto, When: config.WhenVerified, Timeout: model.Duration(10 * time.Minute), Verify: verifyShed},
		},
	},
	{
		// Workloads crash-looping in one cluster: said, not acted on (a restart rarely cures a
		// crash loop, and a rollback of one cluster is for a human to decide).
		Name:  PlaybookCrashLoop,
		Match: config.MatchConfig{Kinds: []string{schedule.IncidentWorkloads}},
		Steps: []config.StepConfig{
			{Action: config.ActionNotify, Mode: config.ModeNotify, When: config.WhenVerified, Timeout: model.Duration(time.Minute)},
		},
	},
}

// Playbooks merges configured playbooks into the built-in ones: a configured playbook replaces
// the built-in one of its name, others are added after them.
func Playbooks(configured []config.PlaybookConfig) []config.PlaybookConfig {
	out := slices.Clone(DefaultPlaybooks)
	for _, p := range configured {
		if i := slices.IndexFunc(out, func(q config.PlaybookConfig) bool { return q.Name == p.Name }); i >= 0 {
			out[i] = p
		} else {
			out = append(out, p)
		}
	}
	return out
}

// matches reports whether a playbook applies to an incident.
func matches(m config.MatchConfig, inc *correlate.Incident) bool {
	if len(m.Kinds) > 0 && !slices.Contains(m.Kinds, schedule.IncidentKind(inc.Key)) {
		return false
	}
	if m.Scope != "" && m.Scope != inc.Scope {
		return false
	}
	if len(m.Severities) > 0 && !slices.Contains(m.Severities, inc.Severity) {
		return false
	}
	for k, v := range m.Labels {
		if inc.Labels[k] != v {
			return false
		}
	}
	return true
}

// target is what an op acts on.
type target struct {
	cluster, kind, namespace, name string
	// Failover: the cluster the workload comes from, the replicas it adds, the replicas the
	// receiving cluster must then run, and a note for the plan. Failback: the failover op
	// it takes back (of) and what that op did (undo).
	from, note, of, undo string
	replicas, expect     int
	// fromReplicas (failover) is what the cluster the workload comes from runs, as kept.
	fromReplicas int
	// order sorts the targets of a step (replicas, for canary-first rollbacks).
	order float64
}

// targets finds what a step acts on for an incident, from the global view: the NotReady nodes
// of its cluster, the Deployment of a bad rollout in each of its clusters, the failing
// workloads of a crash loop.
func (e *Engine) targets(ctx context.Context, inc *correlate.Incident, action string, now time.Time) ([]target, error) {
	kind := schedule.IncidentKind(inc.Key)
	parts := strings.Split(inc.Key, "/")
	var out []target
	switch action {
	case config.ActionCordon, config.ActionDrain:
		if kind != schedule.IncidentNodes {
			return nil, fmt.Errorf("a %s step needs a nodes incident, not %q", action, kind)
		}
		for _, c := range inc.Clusters {
			if len(parts) == 3 { // nodes/<cluster>/<node>
				out = append(out, target{cluster: c, kind: "Node", name: parts[2]})
				continue
			}
			v, err := e.query(ctx, fmt.Sprintf(`kube_node_status_condition{cluster=%q,condition="Ready",status="true"} == 0`, c), now)
			if err != nil {
				return nil, err
			}
			for _, s := range v {
				out = append(out, target{cluster: c, kind: "Node", name: s.Metric.Get("node")})
			}
		}
	case config.ActionRollback:
		if kind != schedule.IncidentRollout || len(parts) != 3 {
			return nil, fmt.Errorf("a rollback step needs a rollout incident (rollout/<namespace>/<name>), not %q", inc.Key)
		}
		ns, name := parts[1], parts[2]
		replicas := map[string]float64{}
		v, err := e.query(ctx, fmt.Sprintf(`kube_deployment_spec_replicas{namespace=%q,deployment=%q}`, ns, name), now)
		if err != nil {
			return nil, err
		}
		for _, s := range v {
			replicas[s.Metric.Get(config.ClusterLabel)] = s.F
		}
		for _, c := range inc.Clusters {
			out = append(out, target{cluster: c, kind: "Deployment", namespace: ns, name: name, order: replicas[c]})
		}
	case config.ActionFailover:
		var err error
		if out, _, err = e.failoverTargets(ctx, inc, now); err != nil {
			return nil, err
		}
	case config.ActionFailback:
		return nil, fmt.Errorf("a failback step is planned by the engine for a failover, not matched to incident %q", inc.Key)
	case config.ActionRestart:
		// The Deployments the incident's alerts name, in their clusters.
		seen := map[target]bool{}
		for _, a := range inc.Alerts {
			name := a.Labels["deployment"]
			if a.Labels["owner_kind"] == "ReplicaSet" {
				name = correlate.ReplicaSetWorkload(a.Labels["owner_name"])
			}
			if c := a.Labels[config.ClusterLabel]; c != "" && name != "" && a.Labels["namespace"] != "" {
				seen[target{cluster: c, kind: "Deployment", namespace: a.Labels["namespace"], name: name}] = true
			}
		}
		out = slices.Collect(maps.Keys(seen))
	case config.ActionNotify:
		seen := map[target]bool{}
		for _, a := range inc.Alerts {
			owner := a.Labels["owner_name"]
			if a.Labels["owner_kind"] == "ReplicaSet" {
				owner = correlate.ReplicaSetWorkload(owner)
			}
			t := target{cluster: a.Labels[config.ClusterLabel], kind: "Workload", namespace: a.Labels["namespace"],
				name: cmp.Or(a.Labels["deployment"], owner, a.Labels["pod"])}
			if t.cluster == "" {
				continue
			}
			if t.name == "" {
				t.kind, t.name = "Cluster", t.cluster
			}
			seen[t] = true
		}
		out = slices.Collect(maps.Keys(seen))
	}
	slices.SortFunc(out, func(a, b target) int {
		return cmp.Or(cmp.Compare(a.order, b.order), cmp.Compare(a.cluster, b.cluster), cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
	})
	return out, nil
}

// describeCalls says which API calls an op will make, for the plan.
func describeCalls(action string, t target) []string {
	switch action {
	case config.ActionCordon:
		return []string{"PATCH /api/v1/nodes/" + t.name + " spec.unschedulable=true"}
	case config.ActionDrain:
		return []string{"GET /api/v1/pods?fieldSelector=spec.nodeName=" + t.name,
			"POST /api/v1/namespaces/<namespace>/pods/<pod>/eviction for every pod on the node but DaemonSets' and mirror pods"}
	case config.ActionRollback:
		return []string{fmt.Sprintf("GET /apis/apps/v1/namespaces/%s/replicasets (the Deployment's revisions)", t.namespace),
			fmt.Sprintf("PUT /apis/apps/v1/namespaces/%s/deployments/%s spec.template=the previous revision's", t.namespace, t.name)}
	case config.ActionFailover:
		return []string{fmt.Sprintf("GET /apis/apps/v1/namespaces/%s/deployments/%s", t.namespace, t.name),
			fmt.Sprintf("POST /apis/apps/v1/namespaces/%s/deployments %s with %d replicas from %s's spec (%s), or PUT spec.replicas +%d when it runs there (and POST /api/v1/namespaces %s when missing)",
				t.namespace, t.name, t.replicas, t.from, t.note, t.replicas, t.namespace)}
	case config.ActionRestart:
		return []string{fmt.Sprintf("PATCH /apis/apps/v1/namespaces/%s/deployments/%s spec.template.metadata.annotations[%s]=<now>", t.namespace, t.name, restartedAtAnnotation)}
	case config.ActionShed:
		return []string{fmt.Sprintf("PUT /apis/apps/v1/namespaces/%s/deployments/%s spec.replicas -%d (moved to other clusters by the step before)", t.namespace, t.name, t.replicas)}
	case config.ActionFailback:
		what := "DELETE /apis/apps/v1/namespaces/" + t.namespace + "/deployments/" + t.name
		if strings.HasPrefix(t.undo, undoScale) {
			what = fmt.Sprintf("PUT /apis/apps/v1/namespaces/%s/deployments/%s spec.replicas=%s", t.namespace, t.name, strings.TrimPrefix(t.undo, undoScale))
		}
		return []string{what + " (what failover op " + t.of + " did, while it still carries its annotation)"}
	}
	return nil
}
