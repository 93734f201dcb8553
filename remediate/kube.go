package remediate

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// ActionAnnotation is written on every object fleetwatch changes, with the ID of the op that
// changed it: a restart that finds it there knows the op already acted and does not act again.
const ActionAnnotation = "fleetwatch.io/remediation-op"

// revisionAnnotation is the Deployment controller's revision counter on Deployments and their
// ReplicaSets (what `kubectl rollout undo` reads).
const revisionAnnotation = "deployment.kubernetes.io/revision"

// UserAgent is the user agent of remediation's requests to the clusters' API servers.
const UserAgent = "fleetwatch-remediate"

// Clients returns the client of a cluster's API server.
type Clients func(cluster string) (kubernetes.Interface, error)

// actResult is what one attempt of an op did.
type actResult struct {
	// done: the op's writes are all accepted; blocked: some were refused for now (a
	// PodDisruptionBudget) and the op is tried again at the next evaluation.
	done, blocked bool
	detail        string
	undo          string
	// expect (failover) is how many replicas the Deployment has after the op: what its
	// verification waits for, as the API server said at the write.
	expect int
	// calls are the API calls made, `VERB path`, for the audit.
	calls []string
}

// audited is called with an API call before it is made; an error stops the op (the audit
// could not be written, so the call must not go out).
type audited func(call string) error

func writeOptions(dryRun bool) []string {
	if dryRun {
		return []string{metav1.DryRunAll}
	}
	return nil
}

// cordon marks a node unschedulable, with the op's annotation. A node that is already
// unschedulable is left as it is (and not uncordoned on failure: fleetwatch did not cordon it).
func cordon(ctx context.Context, c kubernetes.Interface, op *Op, dryRun bool, before audited) (actResult, error) {
	node, err := c.CoreV1().Nodes().Get(ctx, op.Name, metav1.GetOptions{})
	if err != nil {
		return actResult{}, err
	}
	if node.Annotations[ActionAnnotation] == op.ID && node.Spec.Unschedulable {
		return actResult{done: true, detail: "already cordoned by this op", undo: op.Undo}, nil
	}
	if node.Spec.Unschedulable {
		return actResult{done: true, detail: "node was already unschedulable; nothing to do"}, nil
	}
	call := "PATCH /api/v1/nodes/" + op.Name + " spec.unschedulable=true"
	if err := before(call); err != nil {
		return actResult{}, err
	}
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{ActionAnnotation: op.ID}},
		"spec":     map[string]any{"unschedulable": true},
	})
	_, err = c.CoreV1().Nodes().Patch(ctx, op.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{DryRun: writeOptions(dryRun)})
	if err != nil {
		return actResult{calls: []string{call}}, err
	}
	return actResult{done: true, detail: "cordoned", undo: ActionUncordon, calls: []string{call}}, nil
}

// ActionUncordon is the undo of a cordon.
const ActionUncordon = "uncordon"

// uncordon takes back a cordon this op made; a node someone else changed since is left alone.
func uncordon(ctx context.Context, c kubernetes.Interface, op *Op, dryRun bool, before audited) (string, error) {
	node, err := c.CoreV1().Nodes().Get(ctx, op.Name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if node.Annotations[ActionAnnotation] != op.ID || !node.Spec.Unschedulable {
		return "left as it is: not cordoned by this op any more", nil
	}
	call := "PATCH /api/v1/nodes/" + op.Name + " spec.unschedulable=false"
	if err := before(call); err != nil {
		return "", err
	}
	patch := []byte(`{"spec":{"unschedulable":false}}`)
	_, err = c.CoreV1().Nodes().Patch(ctx, op.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{DryRun: writeOptions(dryRun)})
	if err != nil {
		return "", err
	}
	return "uncordoned", nil
}

// drain evicts every pod on a node through the Eviction API, as `kubectl drain` does: pods of
// DaemonSets and mirror pods stay, pods already terminating are not evicted again, and an
// eviction a PodDisruptionBudget refuses (429) is tried again after blockedRetry, never
// forced. The node must be cordoned first (the playbook's step before), or the evicted pods
// could come back to it.
func drain(ctx context.Context, c kubernetes.Interface, op *Op, dryRun bool, before audited) (actResult, error) {
	pods, err := c.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", op.Name).String(),
	})
	if err != nil {
		return actResult{}, err
	}
	var res actResult
	evicted, refused, skipped := 0, 0, 0
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName != op.Name {
			continue // a server that ignored the field selector
		}
		if !evictable(p) {
			skipped++
			continue
		}
		call := fmt.Sprintf("POST /api/v1/namespaces/%s/pods/%s/eviction", p.Namespace, p.Name)
		if err := before(call); err != nil {
			return res, err
		}
		res.calls = append(res.calls, call)
		err := c.PolicyV1().Evictions(p.Namespace).Evict(ctx, &policyv1.Eviction{
			ObjectMeta:    metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
			DeleteOptions: &metav1.DeleteOptions{DryRun: writeOptions(dryRun)},
		})
		switch {
		case err == nil:
			evicted++
		case apierrors.IsNotFound(err):
			// Gone already.
		case apierrors.IsTooManyRequests(err):
			refused++
		default:
			return res, fmt.Errorf("evict %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	res.detail = fmt.Sprintf("%d pods evicted, %d refused by a PodDisruptionBudget (tried again), %d left (DaemonSet, mirror or terminating)", evicted, refused, skipped)
	res.blocked = refused > 0
	res.done = refused == 0
	return res, nil
}

func evictable(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return false
	}
	if ref := metav1.GetControllerOf(p); ref != nil && ref.Kind == "DaemonSet" {
		return false
	}
	return true
}

// rollback sets a Deployment's pod template to the one of its previous revision, as `kubectl
// rollout undo` does, in one update that carries the op's annotation (a conflict is tried
// again at the next evaluation). A Deployment that already carries the annotation was rolled
// back by this op.
func rollback(ctx context.Context, c kubernetes.Interface, op *Op, dryRun bool, before audited) (actResult, error) {
	d, err := c.AppsV1().Deployments(op.Namespace).Get(ctx, op.Name, metav1.GetOptions{})
	if err != nil {
		return actResult{}, err
	}
	if d.Annotations[ActionAnnotation] == op.ID {
		return actResult{done: true, detail: "already rolled back by this op"}, nil
	}
	// A rollback is of the bad image the incident names: when the template no longer runs it
	// (someone, or another fleetwatch, rolled back already), rolling back again would bring
	// it back.
	if op.Image != "" && !slices.Contains(images(&d.Spec.Template), op.Image) {
		return actResult{done: true, detail: fmt.Sprintf("the template no longer runs %s (images %v); nothing to roll back", op.Image, images(&d.Spec.Template))}, nil
	}
	prev, cur, err := previousRevision(ctx, c, d)
	if err != nil {
		return actResult{}, err
	}
	call := fmt.Sprintf("PUT /apis/apps/v1/namespaces/%s/deployments/%s spec.template=revision %d (from %d)", op.Namespace, op.Name, prev.rev, cur)
	if err := before(call); err != nil {
		return actResult{}, err
	}
	d = d.DeepCopy()
	d.Spec.Template = *prev.template
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[ActionAnnotation] = op.ID
	return updateDeployment(ctx, c, d, dryRun, call, actResult{done: true, detail: fmt.Sprintf("rolled back to revision %d (images %v)", prev.rev, images(prev.template))})
}

type revision struct {
	rev      int64
	template *corev1.PodTemplateSpec
}

// previousRevision finds the template of the Deployment's newest revision before its current
// one, among the ReplicaSets it controls.
func previousRevision(ctx context.Context, c kubernetes.Interface, d *appsv1.Deployment) (revision, int64, error) {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return revision{}, 0, err
	}
	rss, err := c.AppsV1().ReplicaSets(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return revision{}, 0, err
	}
	cur, _ := strconv.ParseInt(d.Annotations[revisionAnnotation], 10, 64)
	var revs []revision
	for i := range rss.Items {
		rs := &rss.Items[i]
		if ref := metav1.GetControllerOf(rs); ref == nil || ref.UID != d.UID {
			continue
		}
		n, err := strconv.ParseInt(rs.Annotations[revisionAnnotation], 10, 64)
		if err != nil || n >= cur {
			continue
		}
		t := rs.Spec.Template.DeepCopy()
		delete(t.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
		revs = append(revs, revision{rev: n, template: t})
	}
	if len(revs) == 0 {
		return revision{}, cur, fmt.Errorf("deployment %s/%s has no revision before %d to roll back to", d.Namespace, d.Name, cur)
	}
	slices.SortFunc(revs, func(a, b revision) int { return int(b.rev - a.rev) })
	return revs[0], cur, nil
}

func images(t *corev1.PodTemplateSpec) []string {
	var out []string
	for _, c := range t.Spec.Containers {
		out = append(out, c.Image)
	}
	return out
}

// restartedAtAnnotation is the pod-template annotation `kubectl rollout restart` sets.
const restartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

// restart restarts a Deployment's pods as `kubectl rollout restart` does: a new pod-template
// annotation makes the Deployment controller roll every pod. The op's annotation on the
// Deployment makes it idempotent.
//
// attempt numbers the step's tries: a retry restarts again, a resumed try does not.
func restart(ctx context.Context, c kubernetes.Interface, op *Op, attempt int, now time.Time, dryRun bool, before audited) (actResult, error) {
	d, err := c.AppsV1().Deployments(op.Namespace).Get(ctx, op.Name, metav1.GetOptions{})
	if err != nil {
		return actResult{}, err
	}
	mark := fmt.Sprintf("%s/%d", op.ID, attempt)
	if d.Annotations[ActionAnnotation] == mark {
		return actResult{done: true, detail: "already restarted by this try of the op"}, nil
	}
	at := now.UTC().Format(time.RFC3339)
	call := fmt.Sprintf("PATCH /apis/apps/v1/namespaces/%s/deployments/%s spec.template.metadata.annotations[%s]=%s", op.Namespace, op.Name, restartedAtAnnotation, at)
	if err := before(call); err != nil {
		return actResult{}, err
	}
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{ActionAnnotation: mark}},
		"spec":     map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": map[string]string{restartedAtAnnotation: at}}}},
	})
	_, err = c.AppsV1().Deployments(op.Namespace).Patch(ctx, op.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{DryRun: writeOptions(dryRun)})
	if err != nil {
		return actResult{calls: []string{call}}, err
	}
	return actResult{done: true, detail: "restarted (a new pod template rolls every pod)", calls: []string{call}}, nil
}

// updateDeployment writes a changed Deployment (call is how the audit names the write) and
// answers done, with the call, once it is accepted. A conflict (the Deployment changed since
// it was read) is blocked: the op reads it again at its next try.
func updateDeployment(ctx context.Context, c kubernetes.Interface, d *appsv1.Deployment, dryRun bool, call string, done actResult) (actResult, error) {
	_, err := c.AppsV1().Deployments(d.Namespace).Update(ctx, d, metav1.UpdateOptions{DryRun: writeOptions(dryRun)})
	if apierrors.IsConflict(err) {
		return actResult{blocked: true, detail: "the Deployment changed meanwhile; tried again", calls: []string{call}}, nil
	}
	if err != nil {
		return actResult{calls: []string{call}}, err
	}
	done.calls = []string{call}
	return done, nil
}
