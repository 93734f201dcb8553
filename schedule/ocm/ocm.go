package ocm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"
)

// GVR is the AddOnPlacementScore resource on an OCM hub.
var GVR = schema.GroupVersionResource{
	Group:    "cluster.open-cluster-management.io",
	Version:  "v1alpha1",
	Resource: "addonplacementscores",
}

// Names of the items Publish writes to status.scores; a Placement's
// scoreCoordinate.addOn.scoreName refers to one of them.
const (
	PlacementScoreName = "fleetwatchPlacementScore"
	FreeCPUCoresName   = "fleetwatchFreeCPUCores"
	FreeMemoryGiBName  = "fleetwatchFreeMemoryGiB"
)

const (
	kind            = "AddOnPlacementScore"
	managedByLabel  = "app.kubernetes.io/managed-by"
	managedByValue  = "fleetwatch"
	conditionType   = "AddOnPlacementScoreUpdated"
	conditionReason = "AddOnPlacementScoreUpdated"

	defaultName     = "fleetwatch"
	defaultValidFor = 5 * time.Minute

	// OCM's bounds for status.scores[].value (kubebuilder Minimum/Maximum on the CRD).
	minScore = -100
	maxScore = 100

	// maxInFlight bounds how many clusters are written at once. Each cluster costs two or
	// three requests, and client-go's default client-side rate limit (5 QPS, burst 10) would
	// queue a wider fan-out anyway.
	maxInFlight = 4

	gib = 1 << 30
)

// Score is what fleetwatch publishes about one cluster.
type Score struct {
	// Cluster is the managed cluster's name, which is also the namespace on the hub that
	// its AddOnPlacementScore lives in.
	Cluster string
	// Score is fleetwatch's placement score, 0..100. It is published rounded and kept in
	// [0, 100]; when Schedulable is false it is ignored and -100 is published instead.
	Score float64
	// FreeCPUCores is how many CPU cores can be placed before the saturation ceiling.
	FreeCPUCores float64
	// FreeMemoryBytes is how much memory can be placed before the saturation ceiling.
	FreeMemoryBytes float64
	// Schedulable is false when the cluster must not receive new work: fresh data is
	// missing, it is unhealthy, and so on.
	Schedulable bool
}

// Options configure a Publisher. The zero value is usable.
type Options struct {
	// Name is the AddOnPlacementScore object's name in every cluster namespace, and the
	// resourceName a Placement refers to. Default "fleetwatch".
	Name string
	// ValidFor sets status.validUntil to the publish time plus ValidFor; after that the
	// placement controller treats the scores as missing (0). Default 5m; publish more often.
	ValidFor time.Duration
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Publisher writes Scores to AddOnPlacementScore objects on an OCM hub. It holds no state
// between calls and may be used from several goroutines, though two concurrent Publish
// calls for the same cluster just race to the last write.
type Publisher struct {
	client   dynamic.Interface
	name     string
	validFor time.Duration
	logger   *slog.Logger
}

// NewPublisher returns a Publisher writing through client, which must reach the hub.
// Unset options get their defaults.
func NewPublisher(client dynamic.Interface, o Options) *Publisher {
	p := &Publisher{client: client, name: o.Name, validFor: o.ValidFor, logger: o.Logger}
	if p.name == "" {
		p.name = defaultName
	}
	if p.validFor <= 0 {
		p.validFor = defaultValidFor
	}
	if p.logger == nil {
		p.logger = slog.New(slog.DiscardHandler)
	}
	p.logger = p.logger.With("component", "schedule/ocm")
	return p
}

// Publish creates or updates one AddOnPlacementScore per cluster and sets its status.
// It returns the errors of all clusters joined (errors.Join), each naming the cluster; one
// failing cluster (e.g. its namespace does not exist on the hub) does not stop the others.
// Every failure is worth retrying on the next call; the Kubernetes API errors are wrapped,
// so apierrors.IsNotFound and friends work on the individual errors.
func (p *Publisher) Publish(ctx context.Context, scores []Score, now time.Time) error {
	if p.client == nil {
		return errors.New("publish placement scores: no hub client")
	}
	errs := make([]error, len(scores))
	seen := make(map[string]struct{}, len(scores))
	var g errgroup.Group
	g.SetLimit(maxInFlight)
	for i, s := range scores {
		if s.Cluster == "" {
			errs[i] = fmt.Errorf("publish placement score %d of %d: empty cluster name", i+1, len(scores))
			continue
		}
		// Two writers for one object would overwrite each other in arbitrary order.
		if _, dup := seen[s.Cluster]; dup {
			errs[i] = fmt.Errorf("publish placement score for cluster %s: cluster listed more than once", s.Cluster)
			continue
		}
		seen[s.Cluster] = struct{}{}
		g.Go(func() error {
			if err := p.publishOne(ctx, s, now); err != nil {
				errs[i] = fmt.Errorf("publish placement score for cluster %s: %w", s.Cluster, err)
			}
			return nil // Failures are collected in errs so that the others carry on.
		})
	}
	_ = g.Wait()

	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed > 0 {
		p.logger.Warn("placement scores published with failures",
			"clusters", len(scores), "failed", failed, "name", p.name)
	} else {
		p.logger.Debug("placement scores published", "clusters", len(scores), "name", p.name)
	}
	return errors.Join(errs...)
}

// publishOne makes sure the cluster's object exists and carries the managed-by label, then
// replaces its scores and validUntil. A conflict (someone wrote in between) or an
// AlreadyExists (someone created it in between) restarts from a fresh Get.
func (p *Publisher) publishOne(ctx context.Context, s Score, now time.Time) error {
	res := p.client.Resource(GVR).Namespace(s.Cluster)
	retriable := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
	return retry.OnError(retry.DefaultRetry, retriable, func() error {
		obj, err := res.Get(ctx, p.name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			obj, err = res.Create(ctx, p.newObject(s.Cluster), metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("create %s %s/%s: %w", kind, s.Cluster, p.name, err)
			}
		case err != nil:
			return fmt.Errorf("get %s %s/%s: %w", kind, s.Cluster, p.name, err)
		case obj.GetLabels()[managedByLabel] != managedByValue:
			// A status update ignores metadata, so the label needs an update of its own.
			labels := obj.GetLabels()
			if labels == nil {
				labels = map[string]string{}
			}
			labels[managedByLabel] = managedByValue
			obj.SetLabels(labels)
			obj, err = res.Update(ctx, obj, metav1.UpdateOptions{})
			if err != nil {
				return fmt.Errorf("label %s %s/%s: %w", kind, s.Cluster, p.name, err)
			}
		}
		if err := p.setStatus(obj, s, now); err != nil {
			return fmt.Errorf("build status of %s %s/%s: %w", kind, s.Cluster, p.name, err)
		}
		if _, err := res.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update status of %s %s/%s: %w", kind, s.Cluster, p.name, err)
		}
		return nil
	})
}

func (p *Publisher) newObject(cluster string) *unstructured.Unstructured {
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(GVR.GroupVersion().WithKind(kind))
	obj.SetNamespace(cluster)
	obj.SetName(p.name)
	obj.SetLabels(map[string]string{managedByLabel: managedByValue})
	return obj
}

// setStatus replaces status.scores and status.validUntil of obj and sets fleetwatch's
// condition, keeping conditions of other types as they are.
func (p *Publisher) setStatus(obj *unstructured.Unstructured, s Score, now time.Time) error {
	scores := []any{
		scoreItem(PlacementScoreName, placementScore(s)),
		scoreItem(FreeCPUCoresName, clampRound(s.FreeCPUCores)),
		scoreItem(FreeMemoryGiBName, clampRound(s.FreeMemoryBytes/gib)),
	}
	if err := unstructured.SetNestedSlice(obj.Object, scores, "status", "scores"); err != nil {
		return err
	}
	validUntil := metav1.NewTime(now.Add(p.validFor)).UTC().Format(time.RFC3339)
	if err := unstructured.SetNestedField(obj.Object, validUntil, "status", "validUntil"); err != nil {
		return err
	}

	message := "fleetwatch published the cluster's placement scores"
	if !s.Schedulable {
		message = "fleetwatch published the cluster's placement scores; the cluster is not schedulable, so " +
			PlacementScoreName + " is -100"
	}
	conditions := existingConditions(obj)
	meta.SetStatusCondition(&conditions, metav1.Condition{
		Type:               conditionType,
		Status:             metav1.ConditionTrue,
		Reason:             conditionReason,
		Message:            message,
		ObservedGeneration: obj.GetGeneration(),
		LastTransitionTime: metav1.NewTime(now),
	})
	raw := make([]any, 0, len(conditions))
	for i := range conditions {
		c, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&conditions[i])
		if err != nil {
			return fmt.Errorf("convert condition %s: %w", conditions[i].Type, err)
		}
		raw = append(raw, c)
	}
	return unstructured.SetNestedSlice(obj.Object, raw, "status", "conditions")
}

// existingConditions decodes status.conditions. Entries that do not decode are dropped:
// the hub's schema would not have accepted them, and keeping them would make every later
// status update fail validation.
func existingConditions(obj *unstructured.Unstructured) []metav1.Condition {
	raw, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	out := make([]metav1.Condition, 0, len(raw)+1)
	for _, r := range raw {
		m, ok := r.(map[string]any)
		if !ok {
			continue
		}
		var c metav1.Condition
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &c); err != nil || c.Type == "" {
			continue
		}
		out = append(out, c)
	}
	return out
}

// scoreItem builds one status.scores entry. Unstructured content must use int64 for
// integers; the hub stores it as the API's int32.
func scoreItem(name string, value int64) map[string]any {
	return map[string]any{"name": name, "value": value}
}

// placementScore keeps schedulable clusters in [0, 100] so that -100 means exactly one
// thing to whoever reads the object: not schedulable. A NaN score is not a score.
func placementScore(s Score) int64 {
	if !s.Schedulable || math.IsNaN(s.Score) {
		return minScore
	}
	return max(0, clampRound(s.Score))
}

// clampRound rounds v to the nearest integer and clamps it to OCM's [-100, 100]. NaN,
// which says nothing about capacity, becomes 0, the same value OCM gives a missing score.
func clampRound(v float64) int64 {
	if math.IsNaN(v) {
		return 0
	}
	return int64(min(maxScore, max(minScore, math.Round(v))))
}
