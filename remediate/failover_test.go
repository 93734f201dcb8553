package remediate

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/rules/pack"
	"github.com/fleetwatch/fleetwatch/schedule"
)

// failoverWorld is a world whose clusters have capacity in the view (the rule pack's
// recording rules, as placement reads them) and whose engine asks placement's what-if; c1
// runs shop/api with 4 replicas of 500m and 256Mi, and c2 and c3 run one replica each.
func failoverWorld(t *testing.T, requestedCPU float64, settings func(*config.RemediationConfig)) *world {
	w := newWorld(t, settings)
	w.engine.o.WhatIf = func(ctx context.Context, fail []string, ws []schedule.Workload) (*schedule.WhatIfResult, error) {
		snap, err := schedule.Source{Query: schedule.QueryFunc(w.query)}.Snapshot(ctx, w.now,
			schedule.Settings{Schedule: config.DefaultSchedule, Pack: config.DefaultThresholds})
		if err != nil {
			return nil, err
		}
		return schedule.WhatIf(snap, schedule.WhatIfRequest{Fail: fail, Weights: config.DefaultSchedule.Weights}, ws)
	}
	for _, c := range clusters {
		w.set(fmt.Sprintf(`%s{cluster=%q}`, pack.RecordCPUAllocatable, c), 16)
		w.set(fmt.Sprintf(`%s{cluster=%q}`, pack.RecordMemoryAllocatable, c), 64<<30)
		w.set(fmt.Sprintf(`%s{cluster=%q}`, pack.RecordCPURequests, c), requestedCPU)
		w.set(fmt.Sprintf(`%s{cluster=%q}`, pack.RecordMemoryRequests, c), 8<<30)
		w.set(fmt.Sprintf(`%s{cluster=%q}`, pack.RecordNodeReadyRatio, c), 1)
		w.set(fmt.Sprintf(`kube_deployment_spec_replicas{cluster=%q,namespace="shop",deployment="api"}`, c), 1)
		d, err := w.clients[c].AppsV1().Deployments("shop").Get(context.Background(), "api", metav1.GetOptions{})
		require.NoError(t, err)
		d.Spec.Replicas = ptr.To(int32(1))
		if c == "c1" {
			d.Spec.Replicas = ptr.To(int32(4))
			w.set(`kube_deployment_spec_replicas{cluster="c1",namespace="shop",deployment="api"}`, 4)
		}
		d.Spec.Template.Spec.Containers[0].Resources.Requests = corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("256Mi")}
		_, err = w.clients[c].AppsV1().Deployments("shop").Update(context.Background(), d, metav1.UpdateOptions{})
		require.NoError(t, err)
		w.clients[c].ClearActions()
	}
	// Every cluster reachable: fleetwatch keeps their Deployments.
	w.tick(time.Second)
	require.NoError(t, w.engine.keepSpecs(context.Background()))
	specs, err := w.store.Specs("c1")
	require.NoError(t, err)
	require.Len(t, specs, 1)
	require.Equal(t, int32(4), *specs[0].Deployment.Spec.Replicas)
	require.Empty(t, specs[0].Deployment.ResourceVersion+string(specs[0].Deployment.UID), "only what can be created elsewhere is kept")
	return w
}

// loseC1 makes c1 silent (its data stopped: no last-ingest, the silent alert in the
// incident) with its API server reachable or not.
func loseC1(w *world, apiUp float64) {
	delete(w.fresh, "c1")
	w.set(collector.APIUpMetric+`{cluster="c1"}`, apiUp)
	w.incidents = []correlate.Incident{{ID: "inc-lost", Group: correlate.Group{Key: "cluster/c1", Scope: "cluster", Clusters: []string{"c1"},
		Severity: "critical", RootCause: "cluster c1 is silent",
		Alerts: []correlate.Alert{{Labels: map[string]string{"alertname": pack.AlertClusterSilent, "cluster": "c1"}}}},
		State: correlate.StateOpen, OpenedAt: w.now}}
}

// failedOver makes the clusters a failover's ops went to run their replicas available, and
// evaluates until each verified.
func failedOver(w *world, ops []*Op) {
	for _, op := range ops {
		w.set(fmt.Sprintf(`kube_deployment_status_replicas_available{cluster=%q,namespace="shop",deployment="api"}`, op.Cluster), float64(1+op.Replicas))
	}
	for range ops {
		w.tick(time.Second)
		w.tick(time.Second)
	}
}

// c1Back brings c1 back (its data and its API server) and returns the failback then planned for
// the failover fo.
func c1Back(t *testing.T, w *world, fo *Remediation) *Remediation {
	t.Helper()
	w.fresh["c1"] = true
	w.set(collector.APIUpMetric+`{cluster="c1"}`, 1)
	w.incidents = nil
	w.tick(time.Second)
	all, err := w.store.List()
	require.NoError(t, err)
	require.Len(t, all, 2)
	require.Equal(t, fo.ID, all[1].FailbackOf)
	return all[1]
}

func TestFailoverOfALostCluster(t *testing.T) {
	w := failoverWorld(t, 4, nil)
	// The view lags the API servers: it says c2 and c3 run 2 replicas, they run 1. The
	// verification waits for what the API server had at the write, plus what was added.
	for _, c := range []string{"c2", "c3"} {
		w.set(fmt.Sprintf(`kube_deployment_spec_replicas{cluster=%q,namespace="shop",deployment="api"}`, c), 2)
	}
	loseC1(w, 0)
	w.tick(time.Second)
	r := w.only()
	require.Equal(t, PlaybookClusterLost, r.Playbook)
	require.Contains(t, r.Capacity, "the rest of the fleet absorbs them all")
	ops := r.Steps[0].Ops
	placed := 0
	for _, op := range ops {
		require.Equal(t, "c1", op.From)
		require.NotEqual(t, "c1", op.Cluster)
		placed += op.Replicas
	}
	require.Equal(t, 4, placed, "every replica of the lost cluster is placed: %+v", ops)
	// The API calls went to the survivors, and none to the lost cluster.
	require.Empty(t, w.writes("c1"))
	require.Equal(t, []string{"update deployments api"}, w.writes(ops[0].Cluster))
	d, err := w.clients[ops[0].Cluster].AppsV1().Deployments("shop").Get(context.Background(), "api", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, int32(1+ops[0].Replicas), *d.Spec.Replicas, "scaled up by what placement gave it")
	require.Equal(t, ops[0].ID, d.Annotations[ActionAnnotation])
	require.Equal(t, "c1", d.Annotations[FailoverAnnotation])

	// Verified in the view op by op: the receiving clusters run the replicas available.
	failedOver(w, ops)
	r = w.only()
	require.Equal(t, StateSucceeded, r.State, r.Reason)
	require.Empty(t, w.writes("c1"), "nothing is ever written to the lost cluster")
	require.Contains(t, w.told["inc-lost"], fmt.Sprintf("succeeded: %s (failover %d of %d targets)", r.Reason, len(ops), len(ops)))

	// c1 comes back: a failback is planned and waits for an operator.
	fb := c1Back(t, w, r)
	require.Equal(t, PlaybookFailback, fb.Playbook)
	require.Equal(t, r.ID, fb.FailbackOf)
	require.Equal(t, StateWaiting, fb.State, fb.Reason)
	fo, err := w.store.Get(r.ID)
	require.NoError(t, err)
	require.Equal(t, fb.ID, fo.FailbackID, "the failover and its failback are linked in the same write")
	_, err = w.engine.Decide(fb.ID, "alice", true, "c1 is healthy")
	require.NoError(t, err)
	w.set(`kube_deployment_status_replicas_available{cluster="c1",namespace="shop",deployment="api"}`, 4)
	for range ops {
		w.tick(time.Second)
		w.tick(time.Second)
	}
	fb, err = w.store.Get(fb.ID)
	require.NoError(t, err)
	require.Equal(t, StateSucceeded, fb.State, fb.Reason)
	for _, op := range ops {
		d, err := w.clients[op.Cluster].AppsV1().Deployments("shop").Get(context.Background(), "api", metav1.GetOptions{})
		require.NoError(t, err)
		require.Equal(t, int32(1), *d.Spec.Replicas, "%s scaled back", op.Cluster)
		require.NotContains(t, d.Annotations, FailoverAnnotation)
	}
	require.Empty(t, w.writes("c1"), "the failback writes where the failover did, not to the cluster that came back")
}

func TestFailoverNotWhenTheAPIAnswers(t *testing.T) {
	w := failoverWorld(t, 4, nil)
	loseC1(w, 1) // c1's data stopped; its API server answers
	w.tick(time.Second)
	r := w.only()
	require.Equal(t, StateHeld, r.State)
	require.Contains(t, r.Reason, "c1's API server answers: its data stopped, not the cluster; not failed over")
	for _, c := range clusters {
		require.Empty(t, w.writes(c))
	}
}

func TestFailoverRefusedWithoutCapacity(t *testing.T) {
	w := failoverWorld(t, 13, nil) // survivors at 13 of 16 cores (81%); c1's 2 cores would pass 85%
	loseC1(w, 0)
	w.tick(time.Second)
	r := w.only()
	require.Equal(t, StateRefused, r.State)
	require.Contains(t, r.Reason, "capacity: the surviving clusters would go past the 85% saturation ceiling")
	require.Contains(t, r.Reason, "c2 CPU 81% -> ")
	require.Contains(t, r.Reason, "4 pods of 1 workloads")
	for _, c := range clusters {
		require.Empty(t, w.writes(c))
	}
	require.Equal(t, "fleetwatch remediation "+r.ID+" (playbook cluster-lost) refused: "+r.Reason, w.told["inc-lost"], "the incident says why")
	// Refused once: no new plan at every evaluation.
	w.tick(time.Second)
	w.only()
	// Once the incident is over, what it was told is not kept.
	w.incidents = nil
	w.tick(time.Second)
	require.Empty(t, w.engine.told)
}

func TestFailoverWaitsForApprovalAboveTheRPO(t *testing.T) {
	w := failoverWorld(t, 4, func(s *config.RemediationConfig) {
		pb := DefaultPlaybooks[slices.IndexFunc(DefaultPlaybooks, func(p config.PlaybookConfig) bool { return p.Name == PlaybookClusterLost })]
		pb.Steps = []config.StepConfig{pb.Steps[0]}
		pb.Steps[0].RPOQuery = `max(replication_lag_seconds{cluster="{{.Cluster}}",namespace="{{.Namespace}}",deployment="{{.Name}}"})`
		s.Playbooks = []config.PlaybookConfig{pb}
	})
	w.set(`replication_lag_seconds{cluster="c1",namespace="shop",deployment="api"}`, 420)
	loseC1(w, 0)
	w.tick(time.Second)
	r := w.only()
	require.Equal(t, StateWaiting, r.State)
	require.Contains(t, r.Reason, "rpo: replication lag above or unknown against the RPO of 300s: c1/shop/api 420s")
	for _, c := range clusters {
		require.Empty(t, w.writes(c))
	}
	_, err := w.engine.Decide(r.ID, "alice", true, "accept 7 minutes of lost writes")
	require.NoError(t, err)
	lag := `max(replication_lag_seconds{cluster="c1",namespace="shop",deployment="api"})`
	read := w.queries[lag]
	w.tick(time.Second)
	require.Equal(t, read, w.queries[lag], "the gate read the lag when the step began; the ops acting do not read it again")
	r = w.only()
	require.Equal(t, StateRunning, r.State, r.Reason)
	require.True(t, strings.HasPrefix(w.writes(r.Steps[0].Ops[0].Cluster)[0], "update deployments api"))
}

func TestFailoverThatDoesNotVerifyIsTakenBack(t *testing.T) {
	w := failoverWorld(t, 4, nil)
	loseC1(w, 0)
	w.tick(time.Second)
	op := w.only().Steps[0].Ops[0]
	// The replicas it added never become available.
	w.set(fmt.Sprintf(`kube_deployment_status_replicas_available{cluster=%q,namespace="shop",deployment="api"}`, op.Cluster), 1)
	w.tick(11 * time.Minute)
	r := w.only()
	require.Equal(t, StateFailed, r.State, r.Reason)
	require.Equal(t, OpUndone, r.Steps[0].Ops[0].State, r.Steps[0].Ops[0].Detail)
	d, err := w.clients[op.Cluster].AppsV1().Deployments("shop").Get(context.Background(), "api", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, int32(1), *d.Spec.Replicas, "scaled back to what it ran before")
}

// A saturated cluster (c1: 15 of 16 cores requested, above the 85% ceiling): once an operator
// approves, replicas of its Deployment move to the others until it is back under the
// ceiling, one replica staying, and then c1 is scaled down by as many. Nothing is failed back.
func TestSaturatedClusterShedsToTheOthers(t *testing.T) {
	w := failoverWorld(t, 4, nil)
	w.set(fmt.Sprintf(`%s{cluster="c1"}`, pack.RecordCPURequests), 15)
	w.incidents = []correlate.Incident{{ID: "inc-sat", Group: correlate.Group{Key: "saturation/c1", Scope: "cluster", Clusters: []string{"c1"},
		Severity: "warning", RootCause: "FleetClusterCPURequestsSaturated in cluster c1"}, State: correlate.StateOpen, OpenedAt: w.now}}
	w.tick(time.Second)
	r := w.only()
	require.Equal(t, PlaybookSaturated, r.Playbook)
	require.Equal(t, StateWaiting, r.State, r.Reason)
	moved := 0
	for _, op := range r.Steps[0].Ops {
		require.Equal(t, "c1", op.From)
		moved += op.Replicas
	}
	// 15 - 0.85 x 16 = 1.4 cores over: three replicas of 500m move, one stays.
	require.Equal(t, 3, moved)
	require.Len(t, r.Steps[1].Ops, 1)
	require.Equal(t, `max(kube_deployment_spec_replicas{cluster="c1",namespace="shop",deployment="api"}) <= bool 1`, r.Steps[1].Ops[0].Verify)
	for _, c := range clusters {
		require.Empty(t, w.writes(c), "nothing before the approval")
	}

	_, err := w.engine.Decide(r.ID, "alice", true, "")
	require.NoError(t, err)
	w.tick(time.Second)
	r = w.only()
	require.Empty(t, w.writes("c1"), "the saturated cluster is scaled down only once the replicas run elsewhere")
	for _, op := range r.Steps[0].Ops {
		w.set(fmt.Sprintf(`kube_deployment_status_replicas_available{cluster=%q,namespace="shop",deployment="api"}`, op.Cluster), float64(1+op.Replicas))
	}
	w.tick(time.Second)
	require.Equal(t, []string{"update deployments api"}, w.writes("c1"))
	d, err := w.clients["c1"].AppsV1().Deployments("shop").Get(context.Background(), "api", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, int32(1), *d.Spec.Replicas)
	w.set(`kube_deployment_spec_replicas{cluster="c1",namespace="shop",deployment="api"}`, 1)
	w.tick(time.Second)
	r = w.only()
	require.Equal(t, StateSucceeded, r.State, r.Reason)
	w.incidents = nil
	w.tick(time.Second)
	w.only() // no failback
}
