package ocm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clusterv1alpha1 "open-cluster-management.io/api/cluster/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/fleetwatch/fleetwatch/internal/kubelab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// The AddOnPlacementScore CRD as OCM ships it: crdFile inside the module ocmAPIModule, at
// the version go.mod requires, whose Go types the test also decodes into.
const (
	ocmAPIModule = "open-cluster-management.io/api"
	crdFile      = "cluster/v1alpha1/0000_05_clusters.open-cluster-management.io_addonplacementscores.crd.yaml"
)

// hub is a real kube-apiserver with OCM's AddOnPlacementScore CRD installed.
type hub struct {
	dyn      dynamic.Interface
	kube     kubernetes.Interface
	warnings *warningRecorder
	crd      *apiextensionsv1.CustomResourceDefinition
}

// warningRecorder keeps the API server's warnings. With the default field validation
// (Warn), a field the CRD's schema does not know is pruned and only a warning says so; a
// Publisher whose writes draw warnings loses data silently.
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningRecorder) HandleWarningHeader(code int, _ string, text string) {
	if code != 299 || text == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

// take returns the warnings recorded since the last call.
func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

func startHub(t *testing.T) *hub {
	t.Helper()
	testenv.SkipIfShort(t)
	testenv.Peer(t, kubelab.BinEtcd)
	testenv.Peer(t, kubelab.BinKubeAPIServer)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cp, err := kubelab.StartControlPlane(ctx, kubelab.ControlPlaneOptions{
		Name: "hub", Dir: dir, BinDir: testenv.PeersBin(), APIOnly: true,
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		cp.Close()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "kube-apiserver.log")); err == nil {
				const max = 8 << 10
				if len(b) > max {
					b = b[len(b)-max:]
				}
				t.Logf("----- end of kube-apiserver.log -----\n%s", b)
			}
		}
	})

	h := &hub{warnings: &warningRecorder{}}
	// As cmd/fleetwatch does (newOCMPublisher): a rest.Config from the hub's kubeconfig. Its
	// certificates are inline; cp.RESTConfig's certificate files would make client-go start a
	// certificate-reloading goroutine that lives as long as the process.
	rc, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
	require.NoError(t, err)
	rc.WarningHandler = h.warnings
	// The test reads back far more than fleetwatch writes; client-side rate limiting (5 QPS by
	// default) would only slow it down.
	rc.QPS, rc.Burst = 200, 400
	h.dyn, err = dynamic.NewForConfig(rc)
	require.NoError(t, err)
	h.kube, err = kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	ext, err := apiextensions.NewForConfig(rc)
	require.NoError(t, err)

	h.crd = upstreamCRD(t)
	_, err = ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, h.crd, metav1.CreateOptions{})
	require.NoError(t, err)
	testenv.Eventually(t, time.Minute, func() error {
		got, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, h.crd.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range got.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("CRD %s not established yet: %+v", h.crd.Name, got.Status.Conditions)
	})
	// Established means the API server accepted the names; the resource's handler picks the
	// CRD up from an informer, so also wait until the resource answers.
	testenv.Eventually(t, time.Minute, func() error {
		_, err := h.dyn.Resource(GVR).List(ctx, metav1.ListOptions{})
		return err
	})
	h.warnings.take()
	return h
}

// upstreamCRD reads the CRD YAML from the module cache directory of the
// open-cluster-management.io/api version this module requires.
func upstreamCRD(t *testing.T) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", ocmAPIModule).Output()
	require.NoError(t, err, "go list -m %s", ocmAPIModule)
	dir := strings.TrimSpace(string(out))
	require.NotEmpty(t, dir, "module %s is not in the module cache (go mod download %s)", ocmAPIModule, ocmAPIModule)
	b, err := os.ReadFile(filepath.Join(dir, crdFile))
	require.NoError(t, err)
	var crd apiextensionsv1.CustomResourceDefinition
	require.NoError(t, yaml.UnmarshalStrict(b, &crd))
	crd.Status = apiextensionsv1.CustomResourceDefinitionStatus{}
	return &crd
}

func (h *hub) createNamespaces(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		_, err := h.kube.CoreV1().Namespaces().Create(context.Background(),
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
}

// get reads the object back and decodes it strictly into OCM's Go type: a field fleetwatch
// writes that OCM's type does not have fails the decode.
func (h *hub) get(t *testing.T, cluster, name string) (*unstructured.Unstructured, *clusterv1alpha1.AddOnPlacementScore) {
	t.Helper()
	u, err := h.dyn.Resource(GVR).Namespace(cluster).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	var typed clusterv1alpha1.AddOnPlacementScore
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &typed, true))
	return u, &typed
}

func typedScores(s *clusterv1alpha1.AddOnPlacementScore) map[string]int32 {
	out := map[string]int32{}
	for _, it := range s.Status.Scores {
		out[it.Name] = it.Value
	}
	return out
}

// TestHub runs the Publisher against a real kube-apiserver with OCM's CRD installed, so the
// hub's OpenAPI validation, pruning and status subresource judge what it writes.
func TestHub(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()

	t.Run("CRD bounds are ocm.go's", func(t *testing.T) {
		v := h.crd.Spec.Versions[0]
		require.Equal(t, GVR.Version, v.Name)
		require.Equal(t, GVR.Group, h.crd.Spec.Group)
		require.Equal(t, GVR.Resource, h.crd.Spec.Names.Plural)
		require.Equal(t, kind, h.crd.Spec.Names.Kind)
		value := v.Schema.OpenAPIV3Schema.Properties["status"].Properties["scores"].Items.Schema.Properties["value"]
		require.NotNil(t, value.Minimum)
		require.NotNil(t, value.Maximum)
		require.Equal(t, float64(minScore), *value.Minimum)
		require.Equal(t, float64(maxScore), *value.Maximum)
	})

	t.Run("publish and update", func(t *testing.T) {
		h.createNamespaces(t, "east", "west", "north")
		// Built as cmd/fleetwatch builds it: a dynamic client for the hub, Name from the config.
		p := NewPublisher(h.dyn, Options{Name: "fleetwatch"})
		require.NoError(t, p.Publish(ctx, []Score{
			{Cluster: "east", Score: 71.6, FreeCPUCores: 12.4, FreeMemoryBytes: 48 * gib, Schedulable: true},
			{Cluster: "west", Score: 20.2, FreeCPUCores: 512, FreeMemoryBytes: -300 * gib, Schedulable: true},
			{Cluster: "north", Score: 93, FreeCPUCores: 7, FreeMemoryBytes: 3 * gib, Schedulable: false},
		}, t0))
		require.Empty(t, h.warnings.take(), "the hub pruned or questioned something fleetwatch wrote")

		u, east := h.get(t, "east", "fleetwatch")
		require.Equal(t, "cluster.open-cluster-management.io/v1alpha1", u.GetAPIVersion())
		require.Equal(t, "AddOnPlacementScore", u.GetKind())
		require.Equal(t, map[string]string{"app.kubernetes.io/managed-by": "fleetwatch"}, east.Labels)
		require.Equal(t, map[string]int32{
			PlacementScoreName: 72, FreeCPUCoresName: 12, FreeMemoryGiBName: 48,
		}, typedScores(east))
		require.NotNil(t, east.Status.ValidUntil)
		require.True(t, east.Status.ValidUntil.Time.Equal(t0.Add(5*time.Minute)), "validUntil %s", east.Status.ValidUntil)
		require.Len(t, east.Status.Conditions, 1)
		cond := meta.FindStatusCondition(east.Status.Conditions, "AddOnPlacementScoreUpdated")
		require.NotNil(t, cond)
		require.Equal(t, metav1.ConditionTrue, cond.Status)
		require.Equal(t, "AddOnPlacementScoreUpdated", cond.Reason)
		require.Equal(t, east.Generation, cond.ObservedGeneration)
		require.True(t, cond.LastTransitionTime.Time.Equal(t0))
		require.NotContains(t, cond.Message, "not schedulable")

		// Capacity beyond OCM's range is clamped to exactly the CRD's bounds, which it accepts.
		_, west := h.get(t, "west", "fleetwatch")
		require.Equal(t, map[string]int32{
			PlacementScoreName: 20, FreeCPUCoresName: 100, FreeMemoryGiBName: -100,
		}, typedScores(west))

		_, north := h.get(t, "north", "fleetwatch")
		require.Equal(t, map[string]int32{
			PlacementScoreName: -100, FreeCPUCoresName: 7, FreeMemoryGiBName: 3,
		}, typedScores(north))
		require.Contains(t, north.Status.Conditions[0].Message, "not schedulable")

		// Second round: scores change, east becomes unschedulable, north recovers.
		now := t0.Add(time.Minute)
		require.NoError(t, p.Publish(ctx, []Score{
			{Cluster: "east", Score: 35, FreeCPUCores: 4, FreeMemoryBytes: 8 * gib, Schedulable: false},
			{Cluster: "west", Score: 55.5, FreeCPUCores: 2.5, FreeMemoryBytes: 1.4 * gib, Schedulable: true},
			{Cluster: "north", Score: 64, FreeCPUCores: 9, FreeMemoryBytes: 16 * gib, Schedulable: true},
		}, now))
		require.Empty(t, h.warnings.take())

		_, east2 := h.get(t, "east", "fleetwatch")
		require.Equal(t, east.UID, east2.UID, "the object is updated, not replaced")
		require.NotEqual(t, east.ResourceVersion, east2.ResourceVersion)
		require.Equal(t, map[string]int32{
			PlacementScoreName: -100, FreeCPUCoresName: 4, FreeMemoryGiBName: 8,
		}, typedScores(east2))
		require.True(t, east2.Status.ValidUntil.Time.Equal(now.Add(5*time.Minute)))
		require.Len(t, east2.Status.Conditions, 1)
		require.Contains(t, east2.Status.Conditions[0].Message, "not schedulable")
		// The condition stayed True, so its transition time stays at the first publish.
		require.True(t, east2.Status.Conditions[0].LastTransitionTime.Time.Equal(t0))

		_, west2 := h.get(t, "west", "fleetwatch")
		require.Equal(t, map[string]int32{
			PlacementScoreName: 56, FreeCPUCoresName: 3, FreeMemoryGiBName: 1,
		}, typedScores(west2))
		_, north2 := h.get(t, "north", "fleetwatch")
		require.Equal(t, map[string]int32{
			PlacementScoreName: 64, FreeCPUCoresName: 9, FreeMemoryGiBName: 16,
		}, typedScores(north2))
		require.NotContains(t, north2.Status.Conditions[0].Message, "not schedulable")

		for _, ns := range []string{"east", "west", "north"} {
			list, err := h.dyn.Resource(GVR).Namespace(ns).List(ctx, metav1.ListOptions{})
			require.NoError(t, err)
			require.Len(t, list.Items, 1, "namespace %s", ns)
		}
	})

	t.Run("schema rejects scores outside the bounds", func(t *testing.T) {
		h.createNamespaces(t, "manual")
		res := h.dyn.Resource(GVR).Namespace("manual")
		withScores := func(name string, values ...int64) *unstructured.Unstructured {
			obj := NewPublisher(nil, Options{Name: name}).newObject("manual")
			items := make([]any, 0, len(values))
			for i, v := range values {
				items = append(items, scoreItem(fmt.Sprintf("s%d", i), v))
			}
			require.NoError(t, unstructured.SetNestedSlice(obj.Object, items, "status", "scores"))
			return obj
		}

		// status is a subresource: a Create drops it, which is why Publish writes status with
		// UpdateStatus after creating the object.
		created, err := res.Create(ctx, withScores("hand-made", 101), metav1.CreateOptions{})
		require.NoError(t, err)
		_, found, _ := unstructured.NestedFieldNoCopy(created.Object, "status")
		require.False(t, found, "Create kept status: %v", created.Object["status"])

		for _, v := range []int64{maxScore + 1, minScore - 1, 1 << 40} {
			obj := withScores("hand-made", v)
			obj.SetResourceVersion(created.GetResourceVersion())
			_, err := res.UpdateStatus(ctx, obj, metav1.UpdateOptions{})
			require.Error(t, err, "value %d", v)
			require.True(t, apierrors.IsInvalid(err), "value %d: want Invalid, got %v", v, err)
			require.ErrorContains(t, err, "status.scores[0].value")
		}

		ok := withScores("hand-made", minScore, maxScore)
		ok.SetResourceVersion(created.GetResourceVersion())
		_, err = res.UpdateStatus(ctx, ok, metav1.UpdateOptions{})
		require.NoError(t, err, "the CRD's own bounds must be accepted")

		// status.scores is a list map keyed by name: a duplicate name is invalid too.
		dup := withScores("duplicate")
		_, err = res.Create(ctx, dup, metav1.CreateOptions{})
		require.NoError(t, err)
		dup, err = res.Get(ctx, "duplicate", metav1.GetOptions{})
		require.NoError(t, err)
		require.NoError(t, unstructured.SetNestedSlice(dup.Object,
			[]any{scoreItem("same", 1), scoreItem("same", 2)}, "status", "scores"))
		_, err = res.UpdateStatus(ctx, dup, metav1.UpdateOptions{})
		require.True(t, apierrors.IsInvalid(err), "want Invalid, got %v", err)
	})

	t.Run("missing namespace", func(t *testing.T) {
		h.createNamespaces(t, "present")
		p := NewPublisher(h.dyn, Options{})
		err := p.Publish(ctx, []Score{
			{Cluster: "present", Score: 60, Schedulable: true},
			{Cluster: "gone", Score: 90, Schedulable: true},
		}, t0)
		require.Error(t, err)
		require.ErrorContains(t, err, "publish placement score for cluster gone: create AddOnPlacementScore gone/fleetwatch")
		require.ErrorContains(t, err, `namespaces "gone" not found`)
		require.NotContains(t, err.Error(), "cluster present")
		require.True(t, apierrors.IsNotFound(err))

		_, present := h.get(t, "present", "fleetwatch")
		require.Equal(t, int32(60), typedScores(present)[PlacementScoreName])
		_, err = h.kube.CoreV1().Namespaces().Get(ctx, "gone", metav1.GetOptions{})
		require.True(t, apierrors.IsNotFound(err), "Publish must not create namespaces")
	})

	t.Run("adopts an object someone else created", func(t *testing.T) {
		h.createNamespaces(t, "adopted")
		res := h.dyn.Resource(GVR).Namespace("adopted")
		obj := &unstructured.Unstructured{}
		obj.SetGroupVersionKind(GVR.GroupVersion().WithKind(kind))
		obj.SetName("fw")
		obj.SetLabels(map[string]string{"team": "platform"})
		obj, err := res.Create(ctx, obj, metav1.CreateOptions{})
		require.NoError(t, err)
		require.NoError(t, unstructured.SetNestedSlice(obj.Object, []any{
			map[string]any{
				"type": "SomethingElse", "status": "False", "reason": "Other", "message": "",
				"lastTransitionTime": "2026-01-01T00:00:00Z",
			},
		}, "status", "conditions"))
		require.NoError(t, unstructured.SetNestedSlice(obj.Object,
			[]any{scoreItem("stale", 5)}, "status", "scores"))
		_, err = res.UpdateStatus(ctx, obj, metav1.UpdateOptions{})
		require.NoError(t, err)
		h.warnings.take()

		p := NewPublisher(h.dyn, Options{Name: "fw", ValidFor: 10 * time.Minute})
		require.NoError(t, p.Publish(ctx, []Score{
			{Cluster: "adopted", Score: 42, FreeCPUCores: 1, FreeMemoryBytes: gib, Schedulable: true},
		}, t0))
		require.Empty(t, h.warnings.take())

		_, got := h.get(t, "adopted", "fw")
		require.Equal(t, map[string]string{"team": "platform", "app.kubernetes.io/managed-by": "fleetwatch"}, got.Labels)
		require.Equal(t, map[string]int32{
			PlacementScoreName: 42, FreeCPUCoresName: 1, FreeMemoryGiBName: 1,
		}, typedScores(got))
		require.True(t, got.Status.ValidUntil.Time.Equal(t0.Add(10*time.Minute)))
		types := []string{}
		for _, c := range got.Status.Conditions {
			types = append(types, c.Type)
		}
		require.ElementsMatch(t, []string{"SomethingElse", "AddOnPlacementScoreUpdated"}, types)
	})

	t.Run("concurrent publishers converge", func(t *testing.T) {
		// Two fleetwatch replicas publishing at once conflict on resourceVersion; each
		// retries from a fresh Get, so both succeed and one of them wins whole.
		h.createNamespaces(t, "raced")
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range 2 {
			wg.Go(func() {
				errs[i] = NewPublisher(h.dyn, Options{}).Publish(ctx, []Score{
					{Cluster: "raced", Score: float64(10 + 10*i), FreeCPUCores: float64(i), Schedulable: true},
				}, t0)
			})
		}
		wg.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		_, got := h.get(t, "raced", "fleetwatch")
		s := typedScores(got)
		require.Contains(t, []map[string]int32{
			{PlacementScoreName: 10, FreeCPUCoresName: 0, FreeMemoryGiBName: 0},
			{PlacementScoreName: 20, FreeCPUCoresName: 1, FreeMemoryGiBName: 0},
		}, s)
	})
}
