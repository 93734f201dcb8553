package ocm

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newFakeClient(objects ...runtime.Object) *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{GVR: "AddOnPlacementScoreList"}, objects...)
}

func getScore(t *testing.T, c *dynamicfake.FakeDynamicClient, cluster, name string) *unstructured.Unstructured {
	t.Helper()
	obj, err := c.Resource(GVR).Namespace(cluster).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	return obj
}

// scoresOf returns status.scores as name -> value and fails on a duplicate name, which the
// hub's list-map schema would reject.
func scoresOf(t *testing.T, obj *unstructured.Unstructured) map[string]int64 {
	t.Helper()
	items, found, err := unstructured.NestedSlice(obj.Object, "status", "scores")
	require.NoError(t, err)
	require.True(t, found, "status.scores missing")
	out := map[string]int64{}
	for _, it := range items {
		m := it.(map[string]any)
		name := m["name"].(string)
		require.NotContains(t, out, name, "duplicate score name")
		out[name] = m["value"].(int64)
	}
	return out
}

func validUntilOf(t *testing.T, obj *unstructured.Unstructured) string {
	t.Helper()
	v, found, err := unstructured.NestedString(obj.Object, "status", "validUntil")
	require.NoError(t, err)
	require.True(t, found, "status.validUntil missing")
	return v
}

func conditionsOf(t *testing.T, obj *unstructured.Unstructured) []map[string]any {
	t.Helper()
	items, _, err := unstructured.NestedSlice(obj.Object, "status", "conditions")
	require.NoError(t, err)
	out := make([]map[string]any, 0, len(items))
	for _, it := range items {
		out = append(out, it.(map[string]any))
	}
	return out
}

func countActions(c *dynamicfake.FakeDynamicClient, verb, subresource string) int {
	n := 0
	for _, a := range c.Actions() {
		if a.GetVerb() == verb && a.GetSubresource() == subresource {
			n++
		}
	}
	return n
}

func TestPublishCreatesObjects(t *testing.T) {
	c := newFakeClient()
	p := NewPublisher(c, Options{})
	err := p.Publish(context.Background(), []Score{
		{Cluster: "east", Score: 71.6, FreeCPUCores: 12.4, FreeMemoryBytes: 48 * gib, Schedulable: true},
		{Cluster: "west", Score: 20.2, FreeCPUCores: 2.5, FreeMemoryBytes: 1.4 * gib, Schedulable: true},
	}, t0)
	require.NoError(t, err)

	east := getScore(t, c, "east", "fleetwatch")
	require.Equal(t, "AddOnPlacementScore", east.GetKind())
	require.Equal(t, "cluster.open-cluster-management.io/v1alpha1", east.GetAPIVersion())
	require.Equal(t, map[string]string{"app.kubernetes.io/managed-by": "fleetwatch"}, east.GetLabels())
	require.Equal(t, map[string]int64{
		"fleetwatchPlacementScore": 72,
		"fleetwatchFreeCPUCores":   12,
		"fleetwatchFreeMemoryGiB":  48,
	}, scoresOf(t, east))
	require.Equal(t, "2026-03-01T12:05:00Z", validUntilOf(t, east))

	conds := conditionsOf(t, east)
	require.Len(t, conds, 1)
	require.Equal(t, "AddOnPlacementScoreUpdated", conds[0]["type"])
	require.Equal(t, "True", conds[0]["status"])
	require.Equal(t, "AddOnPlacementScoreUpdated", conds[0]["reason"])
	require.Equal(t, "2026-03-01T12:00:00Z", conds[0]["lastTransitionTime"])

	west := getScore(t, c, "west", "fleetwatch")
	require.Equal(t, map[string]int64{
		"fleetwatchPlacementScore": 20,
		"fleetwatchFreeCPUCores":   3, // math.Round rounds half away from zero.
		"fleetwatchFreeMemoryGiB":  1,
	}, scoresOf(t, west))

	// On a real hub Create drops status, so status must go through the subresource.
	require.Equal(t, 2, countActions(c, "create", ""))
	require.Equal(t, 2, countActions(c, "update", "status"))
}

func TestPublishUpdatesExisting(t *testing.T) {
	c := newFakeClient()
	p := NewPublisher(c, Options{Name: "fw", ValidFor: 10 * time.Minute})
	ctx := context.Background()

	require.NoError(t, p.Publish(ctx, []Score{
		{Cluster: "east", Score: 80, FreeCPUCores: 30, FreeMemoryBytes: 64 * gib, Schedulable: true},
	}, t0))
	require.NoError(t, p.Publish(ctx, []Score{
		{Cluster: "east", Score: 35, FreeCPUCores: 4, FreeMemoryBytes: 8 * gib, Schedulable: true},
	}, t0.Add(time.Minute)))

	list, err := c.Resource(GVR).Namespace("east").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, list.Items, 1, "second publish must not create a second object")
	require.Equal(t, 1, countActions(c, "create", ""))

	obj := getScore(t, c, "east", "fw")
	require.Equal(t, map[string]int64{
		"fleetwatchPlacementScore": 35,
		"fleetwatchFreeCPUCores":   4,
		"fleetwatchFreeMemoryGiB":  8,
	}, scoresOf(t, obj))
	require.Equal(t, "2026-03-01T12:11:00Z", validUntilOf(t, obj))

	// The condition's status did not change, so its transition time stays at the first publish.
	conds := conditionsOf(t, obj)
	require.Len(t, conds, 1)
	require.Equal(t, "2026-03-01T12:00:00Z", conds[0]["lastTransitionTime"])
}

func TestPublishNotSchedulable(t *testing.T) {
	c := newFakeClient()
	p := NewPublisher(c, Options{})
	require.NoError(t, p.Publish(context.Background(), []Score{
		{Cluster: "east", Score: 93, FreeCPUCores: 7, FreeMemoryBytes: 3 * gib, Schedulable: false},
	}, t0))

	obj := getScore(t, c, "east", "fleetwatch")
	require.Equal(t, map[string]int64{
		"fleetwatchPlacementScore": -100,
		"fleetwatchFreeCPUCores":   7,
		"fleetwatchFreeMemoryGiB":  3,
	}, scoresOf(t, obj))
	conds := conditionsOf(t, obj)
	require.Len(t, conds, 1)
	require.Contains(t, conds[0]["message"], "not schedulable")
}

func TestScoreValues(t *testing.T) {
	nan := func() float64 { var z float64; return z / z }()
	cases := []struct {
		name  string
		score Score
		want  map[string]int64
	}{
		{
			name:  "capacity above range clamps to 100",
			score: Score{Score: 50, FreeCPUCores: 512, FreeMemoryBytes: 2048 * gib, Schedulable: true},
			want:  map[string]int64{PlacementScoreName: 50, FreeCPUCoresName: 100, FreeMemoryGiBName: 100},
		},
		{
			name:  "negative capacity clamps to -100",
			score: Score{Score: 10, FreeCPUCores: -250, FreeMemoryBytes: -300 * gib, Schedulable: true},
			want:  map[string]int64{PlacementScoreName: 10, FreeCPUCoresName: -100, FreeMemoryGiBName: -100},
		},
		{
			name:  "modest negative capacity is kept",
			score: Score{Score: 10, FreeCPUCores: -3.4, FreeMemoryBytes: -2 * gib, Schedulable: true},
			want:  map[string]int64{PlacementScoreName: 10, FreeCPUCoresName: -3, FreeMemoryGiBName: -2},
		},
		{
			name:  "placement score above 100 clamps to 100",
			score: Score{Score: 130, Schedulable: true},
			want:  map[string]int64{PlacementScoreName: 100, FreeCPUCoresName: 0, FreeMemoryGiBName: 0},
		},
		{
			name:  "negative placement score of a schedulable cluster clamps to 0",
			score: Score{Score: -5, Schedulable: true},
			want:  map[string]int64{PlacementScoreName: 0, FreeCPUCoresName: 0, FreeMemoryGiBName: 0},
		},
		{
			name:  "NaN placement score counts as not schedulable, NaN capacity as 0",
			score: Score{Score: nan, FreeCPUCores: nan, FreeMemoryBytes: nan, Schedulable: true},
			want:  map[string]int64{PlacementScoreName: -100, FreeCPUCoresName: 0, FreeMemoryGiBName: 0},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeClient()
			tc.score.Cluster = "east"
			require.NoError(t, NewPublisher(c, Options{}).Publish(context.Background(), []Score{tc.score}, t0))
			require.Equal(t, tc.want, scoresOf(t, getScore(t, c, "east", "fleetwatch")))
		})
	}
}

func TestPublishOneClusterFails(t *testing.T) {
	c := newFakeClient()
	// The hub has no namespace for cluster "gone": creating anything in it fails.
	c.PrependReactor("create", "addonplacementscores", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() != "gone" {
			return false, nil, nil
		}
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "gone")
	})
	p := NewPublisher(c, Options{})
	err := p.Publish(context.Background(), []Score{
		{Cluster: "east", Score: 60, Schedulable: true},
		{Cluster: "gone", Score: 90, Schedulable: true},
		{Cluster: "west", Score: 40, Schedulable: true},
	}, t0)
	require.Error(t, err)
	require.ErrorContains(t, err, "cluster gone")
	require.NotContains(t, err.Error(), "cluster east")
	require.NotContains(t, err.Error(), "cluster west")
	require.True(t, apierrors.IsNotFound(err), "the API error stays inspectable through the joined error")

	require.Equal(t, int64(60), scoresOf(t, getScore(t, c, "east", "fleetwatch"))[PlacementScoreName])
	require.Equal(t, int64(40), scoresOf(t, getScore(t, c, "west", "fleetwatch"))[PlacementScoreName])
}

func TestPublishRejectsBadInput(t *testing.T) {
	c := newFakeClient()
	err := NewPublisher(c, Options{}).Publish(context.Background(), []Score{
		{Cluster: "east", Score: 60, Schedulable: true},
		{Cluster: "", Score: 50, Schedulable: true},
		{Cluster: "east", Score: 10, Schedulable: true},
	}, t0)
	require.ErrorContains(t, err, "empty cluster name")
	require.ErrorContains(t, err, "cluster east: cluster listed more than once")
	// The first entry for a cluster wins; the duplicate is not written.
	require.Equal(t, int64(60), scoresOf(t, getScore(t, c, "east", "fleetwatch"))[PlacementScoreName])

	require.Error(t, NewPublisher(nil, Options{}).Publish(context.Background(), nil, t0))
}

func TestPublishLabelsAdoptedObject(t *testing.T) {
	// An object with fleetwatch's name that someone else created: Publish adds the label
	// with a regular update (a status update would ignore it) and keeps foreign conditions.
	existing := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cluster.open-cluster-management.io/v1alpha1",
		"kind":       "AddOnPlacementScore",
		"metadata":   map[string]any{"name": "fleetwatch", "namespace": "east"},
		"status": map[string]any{
			"conditions": []any{map[string]any{
				"type": "SomethingElse", "status": "False", "reason": "Other", "message": "",
				"lastTransitionTime": "2026-01-01T00:00:00Z",
			}},
			"scores": []any{map[string]any{"name": "stale", "value": int64(5)}},
		},
	}}
	c := newFakeClient(existing)
	require.NoError(t, NewPublisher(c, Options{}).Publish(context.Background(), []Score{
		{Cluster: "east", Score: 42, FreeCPUCores: 1, FreeMemoryBytes: gib, Schedulable: true},
	}, t0))

	obj := getScore(t, c, "east", "fleetwatch")
	require.Equal(t, "fleetwatch", obj.GetLabels()["app.kubernetes.io/managed-by"])
	require.Equal(t, 1, countActions(c, "update", ""))
	require.Equal(t, map[string]int64{
		PlacementScoreName: 42, FreeCPUCoresName: 1, FreeMemoryGiBName: 1,
	}, scoresOf(t, obj), "fleetwatch owns status.scores outright")
	types := []any{}
	for _, cond := range conditionsOf(t, obj) {
		types = append(types, cond["type"])
	}
	require.ElementsMatch(t, []any{"SomethingElse", "AddOnPlacementScoreUpdated"}, types)
}

func TestPublishRetriesConflict(t *testing.T) {
	c := newFakeClient()
	conflicts := 1
	c.PrependReactor("update", "addonplacementscores", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "status" || conflicts == 0 {
			return false, nil, nil
		}
		conflicts--
		return true, nil, apierrors.NewConflict(GVR.GroupResource(), "fleetwatch", errors.New("modified"))
	})
	require.NoError(t, NewPublisher(c, Options{}).Publish(context.Background(), []Score{
		{Cluster: "east", Score: 55, Schedulable: true},
	}, t0))
	require.Equal(t, int64(55), scoresOf(t, getScore(t, c, "east", "fleetwatch"))[PlacementScoreName])
	require.Equal(t, 2, countActions(c, "update", "status"))
	require.Equal(t, 1, countActions(c, "create", ""))
}
