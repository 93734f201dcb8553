package remediate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/rules/pack"
	"github.com/fleetwatch/fleetwatch/schedule"
)

// Annotations of failover.
const (
	// FailoverAnnotation marks a Deployment a failover created or scaled, with the cluster
	// it came from; a Deployment annotated "false" is never failed over.
	FailoverAnnotation = "fleetwatch.io/failover"
	// replicasBeforeAnnotation keeps the replicas a Deployment had before a failover scaled
	// it up, for the failback.
	replicasBeforeAnnotation = "fleetwatch.io/replicas-before-failover"
)

// Undo of a failover op: delete the Deployment it created, or scale it back to n replicas
// ("scale:n").
const (
	undoDelete = "delete"
	undoScale  = "scale:"
)

// WhatIfFunc runs placement's what-if for failed clusters whose workloads are given.
type WhatIfFunc func(ctx context.Context, fail []string, workloads []schedule.Workload) (*schedule.WhatIfResult, error)

// keepSpecs reads the Deployments of every cluster whose API server answers and keeps them,
// each cluster's in one transaction. A cluster that cannot be read keeps what was kept
// before: that is the manifest a failover needs when the cluster is lost.
func (e *Engine) keepSpecs(ctx context.Context) error {
	e.mu.Lock()
	excluded := slices.Clone(e.settings.Specs.ExcludeNamespaces)
	e.mu.Unlock()
	up, err := e.apiUp(ctx, e.now())
	if err != nil {
		return err
	}
	var errs []error
	for _, cluster := range slices.Sorted(func(yield func(string) bool) {
		for c := range up {
			if !yield(c) {
				return
			}
		}
	}) {
		if up[cluster] != 1 {
			continue
		}
		c, err := e.o.Clients(cluster)
		if err != nil {
			continue // no client: nothing fleetwatch could fail over anyway
		}
		list, err := c.AppsV1().Deployments(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
		if err != nil {
			errs = append(errs, fmt.Errorf("keep the Deployments of %s: %w", cluster, err))
			continue
		}
		now := e.now()
		var specs []KeptSpec
		for i := range list.Items {
			d := &list.Items[i]
			if slices.Contains(excluded, d.Namespace) || d.Annotations[FailoverAnnotation] != "" {
				continue // excluded, opted out, or a failover's own copy
			}
			specs = append(specs, KeptSpec{Cluster: cluster, KeptAt: now, Deployment: cleanSpec(d)})
		}
		if err := e.o.Store.ReplaceSpecs(cluster, specs); err != nil {
			return err
		}
		e.metrics.specsKept.WithLabelValues(cluster).Set(float64(len(specs)))
		e.metrics.specsKeptAt.WithLabelValues(cluster).Set(float64(now.UnixNano()) / 1e9)
	}
	return errors.Join(errs...)
}

// cleanSpec is the part of a Deployment that can be created in another cluster: name,
// namespace, labels, annotations (but the controller's and fleetwatch's) and spec.
func cleanSpec(d *appsv1.Deployment) *appsv1.Deployment {
	out := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: d.Name, Namespace: d.Namespace, Labels: d.Labels},
		Spec:       *d.Spec.DeepCopy(),
	}
	for k, v := range d.Annotations {
		if k == revisionAnnotation || k == ActionAnnotation || k == corev1.LastAppliedConfigAnnotation {
			continue
		}
		if out.Annotations == nil {
			out.Annotations = map[string]string{}
		}
		out.Annotations[k] = v
	}
	return out
}

// replicasOf is a Deployment's desired replicas (1 when unset, as the API defaults it).
func replicasOf(d *appsv1.Deployment) int {
	if d.Spec.Replicas == nil {
		return 1
	}
	return int(*d.Spec.Replicas)
}

// workloadOf is what a kept Deployment asks of a cluster: its replicas and their requests.
func workloadOf(sp KeptSpec) schedule.Workload {
	d := sp.Deployment
	n := replicasOf(d)
	var cpu, mem float64
	for _, c := range d.Spec.Template.Spec.Containers {
		cpu += c.Resources.Requests.Cpu().AsApproximateFloat64()
		mem += c.Resources.Requests.Memory().AsApproximateFloat64()
	}
	return schedule.Workload{Cluster: sp.Cluster, Namespace: d.Namespace, Kind: "Deployment", Name: d.Name, Pods: n,
		CPU: cpu * float64(n), Memory: mem * float64(n)}
}

// refusal is a plan a guard refuses outright.
type refusal struct {
	guard, reason string
}

func (r *refusal) Error() string { return r.guard + ": " + r.reason }

// failoverTargets places the kept Deployments of the incident's lost clusters on the rest of
// the fleet with placement's what-if: one target per Deployment and receiving cluster, with
// the replicas it gets there. When the survivors have no room for all of them below the
// saturation ceiling, the failover is refused with the numbers. For a saturated cluster, only
// the replicas that bring it back under the ceiling move (shedFrom).
func (e *Engine) failoverTargets(ctx context.Context, inc *correlate.Incident, now time.Time) ([]target, string, error) {
	kind := schedule.IncidentKind(inc.Key)
	if kind != schedule.IncidentClusterDown && kind != schedule.IncidentSaturation {
		return nil, "", fmt.Errorf("a failover step needs a cluster or saturation incident, not %q", inc.Key)
	}
	var ws []schedule.Workload
	kept := map[string]KeptSpec{}
	for _, c := range inc.Clusters {
		specs, err := e.o.Store.Specs(c)
		if err != nil {
			return nil, "", err
		}
		for _, sp := range specs {
			if w := workloadOf(sp); w.Pods > 0 {
				ws = append(ws, w)
				kept[c+"/"+w.Namespace+"/"+w.Name] = sp
			}
		}
	}
	if len(ws) == 0 {
		return nil, "", nil // nothing kept: nothing to fail over
	}
	if e.o.WhatIf == nil {
		return nil, "", errors.New("a failover needs placement (schedule) to pick the clusters")
	}
	if kind == schedule.IncidentSaturation {
		var err error
		if ws, err = e.shedFrom(ctx, inc.Clusters, ws, now); err != nil || len(ws) == 0 {
			return nil, "", err
		}
	}
	res, err := e.o.WhatIf(ctx, inc.Clusters, ws)
	if err != nil {
		return nil, "", fmt.Errorf("placement what-if: %w", err)
	}
	if !res.Absorbed {
		var full []string
		for _, c := range res.Clusters {
			if !c.Failed {
				full = append(full, fmt.Sprintf("%s CPU %.0f%% -> %.0f%%, memory %.0f%% -> %.0f%%", c.Cluster,
					100*c.CPUSaturationBefore, 100*c.CPUSaturationAfter, 100*c.MemorySaturationBefore, 100*c.MemorySaturationAfter))
			}
		}
		return nil, "", &refusal{guard: GuardCapacity, reason: fmt.Sprintf("the surviving clusters would go past the %.0f%% saturation ceiling: %s (%s)",
			100*res.Ceiling, res.Summary, strings.Join(full, "; "))}
	}
	// What the receiving clusters run of each workload already: a failover scales those up.
	running := map[string]int{}
	v, err := e.query(ctx, `max by (cluster, namespace, deployment) (kube_deployment_spec_replicas)`, now)
	if err != nil {
		return nil, "", err
	}
	for _, s := range v {
		running[s.Metric.Get(config.ClusterLabel)+"/"+s.Metric.Get("namespace")+"/"+s.Metric.Get("deployment")] = int(s.F)
	}
	var out []target
	for _, mv := range res.Workloads {
		sp := kept[mv.From+"/"+mv.Namespace+"/"+mv.Name]
		for _, p := range mv.Placements {
			out = append(out, target{cluster: p.Cluster, kind: "Deployment", namespace: mv.Namespace, name: mv.Name, from: mv.From,
				replicas: p.Replicas, expect: running[p.Cluster+"/"+mv.Namespace+"/"+mv.Name] + p.Replicas, fromReplicas: replicasOf(sp.Deployment),
				// The biggest workloads first, as placement placed them.
				order: -mv.CPUPerReplica * float64(mv.Replicas), note: fmt.Sprintf("spec kept %s before the plan", now.Sub(sp.KeptAt).Round(time.Second))})
		}
	}
	return out, fmt.Sprintf("capacity: %s", res.Summary), nil
}

// shedFrom picks what of saturated clusters' workloads moves: replicas of the Deployments that
// request the most CPU per replica first (one replica of each always stays), until what is
// left requests no more than the saturation ceiling of the clusters' allocatable CPU and
// memory, as the view says.
func (e *Engine) shedFrom(ctx context.Context, clusters []string, ws []schedule.Workload, now time.Time) ([]schedule.Workload, error) {
	probe, err := e.o.WhatIf(ctx, clusters, nil) // the ceiling placement holds clusters to
	if err != nil {
		return nil, fmt.Errorf("placement what-if: %w", err)
	}
	value := func(q, c string) (float64, error) {
		v, err := e.query(ctx, fmt.Sprintf(`max(%s{%s=%q})`, q, config.ClusterLabel, c), now)
		if err != nil || len(v) == 0 {
			return 0, fmt.Errorf("the view has no %s for %s (%v)", q, c, err)
		}
		return v[0].F, nil
	}
	slices.SortFunc(ws, func(a, b schedule.Workload) int {
		return cmp.Or(cmp.Compare(b.CPU/float64(b.Pods), a.CPU/float64(a.Pods)), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	var out []schedule.Workload
	for _, c := range clusters {
		var over [2]float64
		for i, q := range [][2]string{{pack.RecordCPURequests, pack.RecordCPUAllocatable}, {pack.RecordMemoryRequests, pack.RecordMemoryAllocatable}} {
			req, err := value(q[0], c)
			if err != nil {
				return nil, err
			}
			alloc, err := value(q[1], c)
			if err != nil {
				return nil, err
			}
			over[i] = req - probe.Ceiling*alloc
		}
		for _, w := range ws {
			if w.Cluster != c || (over[0] <= 0 && over[1] <= 0) {
				continue
			}
			cpu, mem := w.CPU/float64(w.Pods), w.Memory/float64(w.Pods)
			n := 0
			for n < w.Pods-1 && (over[0] > 0 && cpu > 0 || over[1] > 0 && mem > 0) {
				n++
				over[0] -= cpu
				over[1] -= mem
			}
			if n > 0 {
				out = append(out, schedule.Workload{Cluster: c, Namespace: w.Namespace, Kind: w.Kind, Name: w.Name, Pods: n, CPU: cpu * float64(n), Memory: mem * float64(n)})
			}
		}
	}
	return out, nil
}

// shedTargets are the Deployments of the saturated cluster the failover step before moved
// replicas of, each with how many.
func shedTargets(moved []target) []target {
	index := map[string]int{}
	var out []target
	for _, t := range moved {
		k := t.from + "/" + t.namespace + "/" + t.name
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, target{cluster: t.from, kind: "Deployment", namespace: t.namespace, name: t.name, order: t.order, expect: t.fromReplicas})
		}
		out[i].replicas += t.replicas
		out[i].expect = max(out[i].expect-t.replicas, 1)
	}
	return out
}

// shed scales a Deployment of a saturated cluster down by the replicas a failover moved
// elsewhere (never below one), with the op's annotation.
func shed(ctx context.Context, c kubernetes.Interface, op *Op, dryRun bool, before audited) (actResult, error) {
	d, err := c.AppsV1().Deployments(op.Namespace).Get(ctx, op.Name, metav1.GetOptions{})
	if err != nil {
		return actResult{}, err
	}
	cur := replicasOf(d)
	if d.Annotations[ActionAnnotation] == op.ID {
		return actResult{done: true, detail: "already scaled down by this op", undo: undoScale + d.Annotations[replicasBeforeAnnotation], expect: cur}, nil
	}
	n := max(cur-op.Replicas, 1)
	call := fmt.Sprintf("PUT /apis/apps/v1/namespaces/%s/deployments/%s spec.replicas=%d (from %d: %d moved to other clusters)", op.Namespace, op.Name, n, cur, op.Replicas)
	if err := before(call); err != nil {
		return actResult{}, err
	}
	d = d.DeepCopy()
	d.Spec.Replicas = ptr.To(int32(n))
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[ActionAnnotation] = op.ID
	d.Annotations[replicasBeforeAnnotation] = strconv.Itoa(cur)
	return updateDeployment(ctx, c, d, dryRun, call, actResult{done: true, detail: fmt.Sprintf("scaled from %d to %d replicas", cur, n), undo: undoScale + strconv.Itoa(cur), expect: n})
}

// failbackTargets are the ops of a failover that acted, each to be taken back.
func failbackTargets(fo *Remediation) []target {
	var out []target
	for _, st := range fo.Steps {
		if st.Action != config.ActionFailover {
			continue
		}
		for _, op := range st.Ops {
			if op.State == OpVerified || op.State == OpDone {
				out = append(out, target{cluster: op.Cluster, kind: op.Kind, namespace: op.Namespace, name: op.Name, from: op.From,
					replicas: op.Replicas, of: op.ID, undo: op.Undo})
			}
		}
	}
	return out
}

// lost says whether a failover from cluster may act: the cluster's data stopped (its
// silent alert is part of the incident), fleetwatch cannot reach its API server, and the
// rest of the fleet answers. A cluster whose API answers while its data stopped is not lost:
// its monitoring is.
func lost(cluster string, inc *correlate.Incident, up map[string]float64) (bool, string) {
	silent := inc != nil && slices.ContainsFunc(inc.Alerts, func(a correlate.Alert) bool {
		return a.Labels["alertname"] == pack.AlertClusterSilent && a.Labels[config.ClusterLabel] == cluster
	})
	v, probed := up[cluster]
	others := 0
	for c, u := range up {
		if c != cluster && u == 1 {
			others++
		}
	}
	switch {
	case !probed:
		return false, fmt.Sprintf("fleetwatch does not probe %s's API server: it cannot tell the cluster is lost", cluster)
	case v == 1 && silent:
		return false, fmt.Sprintf("%s's API server answers: its data stopped, not the cluster; not failed over", cluster)
	case v == 1:
		return false, fmt.Sprintf("%s's API server answers", cluster)
	case !silent:
		return false, fmt.Sprintf("%s's API server is unreachable but its data still flows: its workloads still run; not failed over", cluster)
	case others == 0:
		return false, fmt.Sprintf("no other cluster's API server answers either: fleetwatch is likelier cut off than %s lost", cluster)
	}
	return true, fmt.Sprintf("%s is lost: silent (%s), its API server unreachable, %d other clusters answer", cluster, pack.AlertClusterSilent, others)
}

// back says whether a failback to cluster may act: its API server answers and it is no
// longer part of an open cluster incident.
func back(cluster string, open map[string]*correlate.Incident, up map[string]float64) (bool, string) {
	if up[cluster] != 1 {
		return false, fmt.Sprintf("%s's API server does not answer yet", cluster)
	}
	for _, inc := range open {
		if schedule.IncidentKind(inc.Key) == schedule.IncidentClusterDown && slices.Contains(inc.Clusters, cluster) {
			return false, fmt.Sprintf("%s still has incident %s open (%s)", cluster, inc.ID, inc.RootCause)
		}
	}
	return true, fmt.Sprintf("%s is back: its API server answers and no cluster incident is open", cluster)
}

// rpo evaluates a failover step's rpo_query for every workload it moves: ok when every lag
// is known and within the step's RPO; detail has the values.
func (e *Engine) rpo(ctx context.Context, st *StepRun, now time.Time) (bool, string) {
	if st.RPOQuery == "" {
		return true, "no rpo_query: the spec kept is the recovery point"
	}
	limit := time.Duration(cmp.Or(st.RPO, config.DefaultRPO)).Seconds()
	ok := true
	seen := map[string]bool{}
	var parts []string
	for _, op := range st.Ops {
		k := op.From + "/" + op.Namespace + "/" + op.Name
		if seen[k] {
			continue
		}
		seen[k] = true
		q, err := config.RenderVerify(st.RPOQuery, config.VerifyTarget{Cluster: op.From, Namespace: op.Namespace, Name: op.Name, From: op.From, Replicas: op.Replicas})
		if err != nil {
			return false, err.Error()
		}
		v, err := e.query(ctx, q, now)
		switch {
		case err != nil:
			ok = false
			parts = append(parts, fmt.Sprintf("%s unknown (%v)", k, err))
		case len(v) == 0 || math.IsNaN(v[0].F):
			ok = false
			parts = append(parts, k+" unknown (no data)")
		case v[0].F > limit:
			ok = false
			parts = append(parts, fmt.Sprintf("%s %.0fs", k, v[0].F))
		default:
			parts = append(parts, fmt.Sprintf("%s %.0fs", k, v[0].F))
		}
	}
	verdict := "within"
	if !ok {
		verdict = "above or unknown against"
	}
	return ok, fmt.Sprintf("replication lag %s the RPO of %.0fs: %s", verdict, limit, strings.Join(parts, ", "))
}

// failover creates the lost cluster's Deployment in the op's cluster from the kept spec with
// the op's replicas, or scales the one running there up by them. The op's annotation makes
// it idempotent: a Deployment that carries it was failed over by this op already.
func failover(ctx context.Context, c kubernetes.Interface, op *Op, sp *KeptSpec, dryRun bool, before audited) (actResult, error) {
	cur, err := c.AppsV1().Deployments(op.Namespace).Get(ctx, op.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if err := ensureNamespace(ctx, c, op.Namespace, dryRun, before); err != nil {
			return actResult{}, err
		}
		d := sp.Deployment.DeepCopy()
		d.ResourceVersion, d.UID = "", ""
		d.Spec.Replicas = ptr.To(int32(op.Replicas))
		if d.Annotations == nil {
			d.Annotations = map[string]string{}
		}
		d.Annotations[ActionAnnotation] = op.ID
		d.Annotations[FailoverAnnotation] = op.From
		call := fmt.Sprintf("POST /apis/apps/v1/namespaces/%s/deployments %s (the spec %s kept, %d replicas)", op.Namespace, op.Name, op.From, op.Replicas)
		if err := before(call); err != nil {
			return actResult{}, err
		}
		_, err := c.AppsV1().Deployments(op.Namespace).Create(ctx, d, metav1.CreateOptions{DryRun: writeOptions(dryRun)})
		if apierrors.IsAlreadyExists(err) {
			return actResult{blocked: true, detail: "the Deployment appeared meanwhile; tried again", calls: []string{call}}, nil
		}
		if err != nil {
			return actResult{calls: []string{call}}, err
		}
		return actResult{done: true, detail: fmt.Sprintf("created with %d replicas from %s's spec", op.Replicas, op.From), undo: undoDelete, calls: []string{call}, expect: op.Replicas}, nil
	case err != nil:
		return actResult{}, err
	}
	if cur.Annotations[ActionAnnotation] == op.ID || cur.Annotations[FailoverAnnotation] == op.From {
		// This op, or another remediation (another fleetwatch process before it lost its
		// leadership), failed the workload over from that cluster already: never twice.
		undo := undoDelete
		if b, ok := cur.Annotations[replicasBeforeAnnotation]; ok {
			undo = undoScale + b
		}
		detail := "already failed over by this op"
		if cur.Annotations[ActionAnnotation] != op.ID {
			detail = fmt.Sprintf("already failed over from %s by op %s; not again", op.From, cur.Annotations[ActionAnnotation])
			undo = "" // that op's to take back, not this one's
		}
		return actResult{done: true, detail: detail, undo: undo, expect: replicasOf(cur)}, nil
	}
	before0 := replicasOf(cur)
	call := fmt.Sprintf("PUT /apis/apps/v1/namespaces/%s/deployments/%s spec.replicas=%d (from %d)", op.Namespace, op.Name, before0+op.Replicas, before0)
	if err := before(call); err != nil {
		return actResult{}, err
	}
	d := cur.DeepCopy()
	d.Spec.Replicas = ptr.To(int32(before0 + op.Replicas))
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[ActionAnnotation] = op.ID
	d.Annotations[FailoverAnnotation] = op.From
	d.Annotations[replicasBeforeAnnotation] = strconv.Itoa(before0)
	return updateDeployment(ctx, c, d, dryRun, call, actResult{done: true, detail: fmt.Sprintf("scaled from %d to %d replicas", before0, before0+op.Replicas), undo: undoScale + strconv.Itoa(before0),
		expect: before0 + op.Replicas})
}

// ensureNamespace creates a namespace that does not exist yet.
func ensureNamespace(ctx context.Context, c kubernetes.Interface, ns string, dryRun bool, before audited) error {
	_, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		return err
	}
	if err := before("POST /api/v1/namespaces " + ns); err != nil {
		return err
	}
	_, err = c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{DryRun: writeOptions(dryRun)})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// takeBack undoes what the failover op of (its ID) did to the Deployment in the op's
// cluster: delete what it created, scale back what it scaled. A Deployment that no longer
// carries that op's annotation was changed by someone since and is left alone; one that
// carries mark (the taking-back op's ID) was taken back already.
func takeBack(ctx context.Context, c kubernetes.Interface, op *Op, of, undo, mark string, dryRun bool, before audited) (actResult, error) {
	d, err := c.AppsV1().Deployments(op.Namespace).Get(ctx, op.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return actResult{done: true, detail: "gone already"}, nil
	}
	if err != nil {
		return actResult{}, err
	}
	switch d.Annotations[ActionAnnotation] {
	case mark:
		return actResult{done: true, detail: "taken back already by this op"}, nil
	case of:
	default:
		return actResult{done: true, detail: fmt.Sprintf("left as it is: changed since the failover (annotation %q)", d.Annotations[ActionAnnotation])}, nil
	}
	opts := writeOptions(dryRun)
	switch {
	case undo == undoDelete:
		call := fmt.Sprintf("DELETE /apis/apps/v1/namespaces/%s/deployments/%s (created by failover op %s)", op.Namespace, op.Name, of)
		if err := before(call); err != nil {
			return actResult{}, err
		}
		err := c.AppsV1().Deployments(op.Namespace).Delete(ctx, op.Name, metav1.DeleteOptions{DryRun: opts,
			Preconditions: &metav1.Preconditions{UID: &d.UID, ResourceVersion: &d.ResourceVersion}})
		if apierrors.IsConflict(err) {
			return actResult{blocked: true, detail: "the Deployment changed meanwhile; tried again", calls: []string{call}}, nil
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return actResult{calls: []string{call}}, err
		}
		return actResult{done: true, detail: "deleted the Deployment the failover created", calls: []string{call}}, nil
	case strings.HasPrefix(undo, undoScale):
		n, err := strconv.Atoi(strings.TrimPrefix(undo, undoScale))
		if err != nil {
			return actResult{}, fmt.Errorf("undo %q: %w", undo, err)
		}
		call := fmt.Sprintf("PUT /apis/apps/v1/namespaces/%s/deployments/%s spec.replicas=%d (from %d)", op.Namespace, op.Name, n, replicasOf(d))
		if err := before(call); err != nil {
			return actResult{}, err
		}
		d = d.DeepCopy()
		d.Spec.Replicas = ptr.To(int32(n))
		d.Annotations[ActionAnnotation] = mark
		delete(d.Annotations, FailoverAnnotation)
		delete(d.Annotations, replicasBeforeAnnotation)
		return updateDeployment(ctx, c, d, dryRun, call, actResult{done: true, detail: fmt.Sprintf("scaled back to %d replicas", n)})
	}
	return actResult{}, fmt.Errorf("no undo %q for a failover", undo)
}
