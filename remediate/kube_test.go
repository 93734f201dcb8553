package remediate

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

func replicaSet(name, rev, image string, owner types.UID) *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{"app": "api"},
			Annotations:     map[string]string{revisionAnnotation: rev},
			OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: "api", UID: owner, Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "api", appsv1.DefaultDeploymentUniqueLabelKey: name}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "api", Image: image}}},
		}},
	}
}

func TestRollbackToThePreviousRevision(t *testing.T) {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "shop", UID: "d-1", Annotations: map[string]string{revisionAnnotation: "3"}},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "api"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "api", Image: "api:v3-bad"}}}}},
	}
	cs := fake.NewClientset(d,
		replicaSet("api-1", "1", "api:v1", "d-1"),
		replicaSet("api-2", "2", "api:v2", "d-1"),
		replicaSet("api-3", "3", "api:v3-bad", "d-1"),
		// Not the Deployment's: another owner, same labels.
		replicaSet("other-9", "9", "other:v9", "d-2"))
	op := &Op{ID: "rem-1-0-0", Cluster: "c1", Kind: "Deployment", Namespace: "shop", Name: "api"}
	var calls []string
	before := func(call string) error { calls = append(calls, call); return nil }

	res, err := rollback(context.Background(), cs, op, false, before)
	require.NoError(t, err)
	require.True(t, res.done)
	require.Len(t, calls, 1)
	require.Contains(t, calls[0], "revision 2 (from 3)")
	got, err := cs.AppsV1().Deployments("shop").Get(context.Background(), "api", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "api:v2", got.Spec.Template.Spec.Containers[0].Image)
	require.NotContains(t, got.Spec.Template.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	require.Equal(t, op.ID, got.Annotations[ActionAnnotation])

	// Again (a restart that lost the result): the annotation says it is done; nothing is sent.
	calls = nil
	res, err = rollback(context.Background(), cs, op, false, before)
	require.NoError(t, err)
	require.True(t, res.done)
	require.Empty(t, calls)

	// The incident's bad image is no longer in the template (rolled back by someone else):
	// rolling back again would bring it back, so nothing is done.
	calls = nil
	other := &Op{ID: "rem-3-0-0", Namespace: "shop", Name: "api", Image: "api:v3-bad"}
	res, err = rollback(context.Background(), cs, other, false, before)
	require.NoError(t, err)
	require.True(t, res.done)
	require.Contains(t, res.detail, "the template no longer runs api:v3-bad")
	require.Empty(t, calls)

	// A Deployment with no earlier revision cannot be rolled back: an error, no write.
	first := &Op{ID: "rem-2-0-0", Namespace: "shop", Name: "api"}
	d2 := d.DeepCopy()
	d2.Annotations[revisionAnnotation] = "1"
	d2.Annotations[ActionAnnotation] = ""
	_, err = cs.AppsV1().Deployments("shop").Update(context.Background(), d2, metav1.UpdateOptions{})
	require.NoError(t, err)
	_, err = rollback(context.Background(), cs, first, false, before)
	require.ErrorContains(t, err, "has no revision before 1")
	require.Empty(t, calls)
}

func TestDrainLeavesDaemonSetMirrorAndTerminatingPods(t *testing.T) {
	now := metav1.Now()
	pod := func(name string, mod func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Spec: corev1.PodSpec{NodeName: "n1"}}
		if mod != nil {
			mod(p)
		}
		return p
	}
	cs := fake.NewClientset(
		pod("web", nil),
		pod("ds", func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: "DaemonSet", Name: "ds", Controller: ptr.To(true)}}
		}),
		pod("mirror", func(p *corev1.Pod) { p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "x"} }),
		pod("leaving", func(p *corev1.Pod) { p.DeletionTimestamp = &now; p.Finalizers = []string{"x"} }),
		pod("elsewhere", func(p *corev1.Pod) { p.Spec.NodeName = "n2" }),
	)
	var calls []string
	res, err := drain(context.Background(), cs, &Op{Name: "n1"}, false, func(c string) error { calls = append(calls, c); return nil })
	require.NoError(t, err)
	require.True(t, res.done)
	require.Equal(t, []string{"POST /api/v1/namespaces/ns/pods/web/eviction"}, calls)
	require.Contains(t, res.detail, "1 pods evicted, 0 refused by a PodDisruptionBudget (tried again), 3 left")
}

// A Deployment that changed between the read and the write (a conflict) blocks the op, to be
// read again at its next try; it is not an error and not done.
func TestDeploymentWriteConflictIsTriedAgain(t *testing.T) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "shop"}, Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(4))}}
	cs := fake.NewClientset(d)
	conflict := true
	cs.PrependReactor("update", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflict {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "apps", Resource: "deployments"}, "api", errors.New("modified"))
		}
		return false, nil, nil
	})
	op := &Op{ID: "rem-1-1-0", Action: "shed", Cluster: "c1", Kind: "Deployment", Namespace: "shop", Name: "api", Replicas: 3}
	var calls []string
	before := func(call string) error { calls = append(calls, call); return nil }
	res, err := shed(context.Background(), cs, op, false, before)
	require.NoError(t, err)
	require.True(t, res.blocked)
	require.False(t, res.done)
	require.Len(t, res.calls, 1)
	conflict = false
	res, err = shed(context.Background(), cs, op, false, before)
	require.NoError(t, err)
	require.True(t, res.done, res.detail)
	require.Equal(t, 1, res.expect)
	require.Len(t, calls, 2, "each write audited before it went out")
}
