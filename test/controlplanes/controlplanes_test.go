package controlplanes

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	pmodel "github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/internal/lab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
	"github.com/fleetwatch/fleetwatch/rules/pack"
)

// cpQuery shortens the lookback so that a silent cluster's series vanish within the test.
const cpQuery = "query:\n  lookback_delta: 25s\n"

func query(t *testing.T, l *lab.Lab, q string) map[string]float64 {
	t.Helper()
	return lab.VectorByCluster(queryVector(t, l, q))
}

// cpRules shortens the pack's `for` durations so that each fault shows within seconds.
const cpRules = "  evaluation_interval: 1s\n" +
	"  pack: {node_ready_for: 5s, crash_loop_for: 5s, control_plane_for: 5s, silent_after: 20s, api_unreachable_for: 5s}\n"

// TestControlPlanes runs the lab on real control planes (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and kube-state-metrics per cluster): what kubectl
// does to a cluster reaches fleetwatch's view through the cluster's kube-state-metrics and
// Prometheus, and each fault the lab can inject shows as its alert or probe.
func TestControlPlanes(t *testing.T) {
	l := lab.Start(t, lab.Options{
		Clusters: 3, ControlPlanes: true, Rules: cpRules,
		FleetwatchConfig: cpQuery + "api_probe: {interval: 2s, timeout: 1s}\n",
	})
	c0, c1, c2 := l.Clusters[0], l.Clusters[1], l.Clusters[2]
	for _, c := range l.Clusters {
		t.Log(l.ControlPlanes[c])
	}
	truth := l.Truth()
	testenv.Eventually(t, time.Minute, func() error {
		pods := query(t, l, `count by (cluster) (kube_pod_status_phase{phase="Running"} == 1)`)
		for _, c := range l.Clusters {
			if pods[c] != float64(truth[c].Pods) || truth[c].Pods == 0 {
				return fmt.Errorf("cluster %s: %v running pods in the view, %d in its API", c, pods[c], truth[c].Pods)
			}
		}
		return nil
	})

	t.Run("kubectl cordon shows within two scrapes", func(t *testing.T) {
		l.Kubectl(c0, "cordon", "node-3")
		cordoned := time.Now()
		sel := fmt.Sprintf(`kube_node_spec_unschedulable{cluster=%q,node="node-3"}`, c0)
		testenv.Eventually(t, time.Minute, func() error {
			if got := query(t, l, sel+" == 1"); got[c0] != 1 {
				return fmt.Errorf("%s == 1: %v", sel, got)
			}
			return nil
		})
		// Counted in scrapes, not seconds: at most one scrape after the cordon still saw the
		// node schedulable; the second one saw it cordoned.
		samples := rangeSamples(t, l, sel, cordoned.Add(-time.Second), time.Now())
		stale := 0
		for _, s := range samples {
			if s.Timestamp.Time().After(cordoned) && s.Value == 0 {
				stale++
			}
		}
		require.LessOrEqual(t, stale, 1, "scrapes after the cordon that still saw node-3 schedulable: %v", samples)
		l.Kubectl(c0, "uncordon", "node-3")
	})

	ns, deploy := "payments", "api"
	owned := func(cluster, ns, deploy, phase string) string {
		return fmt.Sprintf(`count by (cluster) (
			  kube_pod_owner{cluster=%[1]q, namespace=%[2]q, owner_kind="ReplicaSet", owner_name=~"%[3]s-[a-z0-9]+"}
			* on (cluster, namespace, pod) group_left () (kube_pod_status_phase{cluster=%[1]q, phase=%[4]q} == 1))`, cluster, ns, deploy, phase)
	}
	waitPods := func(t *testing.T, cluster, q string, want int) {
		t.Helper()
		testenv.Eventually(t, 2*time.Minute, func() error {
			if got := query(t, l, q); got[cluster] != float64(want) {
				return fmt.Errorf("%s: %v, want %d", q, got, want)
			}
			return nil
		})
	}

	t.Run("scaling a Deployment shows as its pods", func(t *testing.T) {
		l.Kubectl(c0, "-n", ns, "scale", "deployment/"+deploy, "--replicas=5")
		waitPods(t, c0, owned(c0, ns, deploy, "Running"), 5)
		l.Kubectl(c0, "-n", ns, "scale", "deployment/"+deploy, "--replicas=3")
		waitPods(t, c0, owned(c0, ns, deploy, "Running"), 3)
	})

	t.Run("a rollback to the previous template shows as the pods' image and owner", func(t *testing.T) {
		before := truth[c0].Images[ns+"/"+deploy]
		require.Len(t, before, 1)
		rsBefore := replicaSet(t, l, c0, ns, deploy)
		l.Kubectl(c0, "-n", ns, "set", "image", "deployment/"+deploy, deploy+"=registry.example/payments/api:v9.9.9-crashloop")
		crashing := fmt.Sprintf(`sum by (cluster) (kube_pod_container_status_waiting_reason{cluster=%q, namespace=%q, reason="CrashLoopBackOff"})`, c0, ns)
		// The rolling update starts one new pod (maxSurge 25% of 3, maxUnavailable 0); it
		// crash-loops, and the rollout stalls with the three old pods running.
		waitPods(t, c0, crashing, 1)
		l.Kubectl(c0, "-n", ns, "rollout", "undo", "deployment/"+deploy)
		testenv.Eventually(t, 2*time.Minute, func() error {
			q := fmt.Sprintf(`count by (cluster, image) (kube_pod_container_info{cluster=%q, namespace=%q, container=%q}
			  * on (cluster, namespace, pod) group_left () (kube_pod_status_phase{phase="Running"} == 1))`, c0, ns, deploy)
			v := queryVector(t, l, q)
			if len(v) != 1 || string(v[0].Metric["image"]) != before[0] || v[0].Value != 3 {
				return fmt.Errorf("running %s/%s pods by image: %v, want 3 on %s", ns, deploy, v, before[0])
			}
			if got := query(t, l, crashing); got[c0] != 0 && len(got) != 0 {
				return fmt.Errorf("still crash-looping: %v", got)
			}
			return nil
		})
		// The undo brought the previous ReplicaSet back, as Kubernetes does.
		require.Equal(t, rsBefore, replicaSet(t, l, c0, ns, deploy))
	})

	t.Run("a Deployment created in another cluster shows as its pods", func(t *testing.T) {
		l.Kubectl(c1, "create", "namespace", "moved")
		l.Kubectl(c1, "-n", "moved", "create", "deployment", "checkout", "--image=registry.example/checkout/frontend:v1.2.3", "--replicas=4")
		waitPods(t, c1, owned(c1, "moved", "checkout", "Running"), 4)
	})

	t.Run("a drain respects the PodDisruptionBudget", func(t *testing.T) {
		// Every Deployment of more than one replica has a budget of one pod down at a time;
		// kubectl drain evicts through the Eviction API and retries while a budget refuses.
		node := "node-1"
		l.Kubectl(c2, "drain", node, "--ignore-daemonsets", "--timeout=3m")
		onNode := fmt.Sprintf(`count by (cluster) (kube_pod_info{cluster=%q, node=%q} * on (cluster, namespace, pod) group_left () (kube_pod_status_phase{phase="Running"} == 1))`, c2, node)
		testenv.Eventually(t, time.Minute, func() error {
			if got := query(t, l, onNode); len(got) != 0 {
				return fmt.Errorf("pods still running on the drained node: %v", got)
			}
			return nil
		})
		waitPods(t, c2, `count by (cluster) (kube_pod_status_phase{phase="Running"} == 1)`, truth[c2].Pods)
		// No budget was ever exceeded: each PDB's allowed disruptions stayed at or above 0.
		q := fmt.Sprintf(`min_over_time(kube_poddisruptionbudget_status_pod_disruptions_allowed{cluster=%q}[5m]) < 0`, c2)
		require.Empty(t, queryVector(t, l, q))
		l.Kubectl(c2, "uncordon", node)
	})

	up := fmt.Sprintf(`max by (cluster) (%s)`, collector.APIUpMetric)
	firing := func(t *testing.T, name, cluster string) {
		t.Helper()
		testenv.Eventually(t, 2*time.Minute, func() error {
			for _, a := range l.Alerts() {
				if string(a.Labels["alertname"]) == name && string(a.Labels["cluster"]) == cluster && a.State == "firing" {
					return nil
				}
			}
			return fmt.Errorf("%s{cluster=%s} is not firing", name, cluster)
		})
	}
	resolved := func(t *testing.T, name, cluster string) {
		t.Helper()
		testenv.Eventually(t, 2*time.Minute, func() error {
			for _, a := range l.Alerts() {
				if string(a.Labels["alertname"]) == name && string(a.Labels["cluster"]) == cluster {
					return fmt.Errorf("%s{cluster=%s} is still %s", name, cluster, a.State)
				}
			}
			return nil
		})
	}
	probe := func(t *testing.T, cluster string, want float64) {
		t.Helper()
		testenv.Eventually(t, time.Minute, func() error {
			if got := query(t, l, up); got[cluster] != want {
				return fmt.Errorf("%s for %s: %v, want %v", up, cluster, got[cluster], want)
			}
			return nil
		})
	}

	t.Run("control plane down", func(t *testing.T) {
		l.Fault(c1, "apiserver/stop", nil)
		firing(t, pack.AlertClusterControlPlaneDown, c1)
		probe(t, c1, 0)
		l.Fault(c1, "apiserver/start", nil)
		resolved(t, pack.AlertClusterControlPlaneDown, c1)
		probe(t, c1, 1)
	})

	t.Run("one-sided partition: fleetwatch cannot reach the API server, the metrics still arrive", func(t *testing.T) {
		l.Fault(c0, "fleetwatch-path/cut", nil)
		firing(t, pack.AlertClusterAPIUnreachable, c0)
		probe(t, c0, 0)
		age := query(t, l, fmt.Sprintf(`time() - max by (cluster) (%s{cluster=%q})`, collector.LastIngestMetric, c0))
		require.Less(t, age[c0], 20.0, "the cluster's data must stay fresh while only fleetwatch's path is cut")
		l.Fault(c0, "fleetwatch-path/heal", nil)
		resolved(t, pack.AlertClusterAPIUnreachable, c0)
	})

	t.Run("the reverse: the metrics stop, the API server is reachable", func(t *testing.T) {
		l.Members[c0].MetricsPath.Cut()
		firing(t, pack.AlertClusterSilent, c0)
		require.Equal(t, 1.0, query(t, l, up)[c0])
		l.Members[c0].MetricsPath.Heal()
		resolved(t, pack.AlertClusterSilent, c0)
	})

	t.Run("slow API server", func(t *testing.T) {
		// The probe gives up after 1s: 3s of latency on fleetwatch's path fails it.
		l.Fault(c2, "fleetwatch-path/latency", url.Values{"duration": {"3s"}})
		probe(t, c2, 0)
		l.Fault(c2, "fleetwatch-path/latency", url.Values{"duration": {"0s"}})
		probe(t, c2, 1)
	})

	t.Run("cluster lost: Prometheus and API server stopped", func(t *testing.T) {
		l.StopPrometheus(c2)
		l.Fault(c2, "apiserver/stop", nil)
		firing(t, pack.AlertClusterSilent, c2)
		probe(t, c2, 0)
		l.Fault(c2, "apiserver/start", nil)
		l.StartPrometheus(c2)
		resolved(t, pack.AlertClusterSilent, c2)
		probe(t, c2, 1)
	})

	t.Run("a scenario acts through the API", func(t *testing.T) {
		l.UploadScenario(fmt.Sprintf("name: e2e-cp\nsteps:\n  - {after: 0s, action: nodes_not_ready, cluster: %s, count: 2}\n  - {after: 0s, action: crashloop, cluster: %s, namespace: %s, deployment: %s}\n", c1, c1, ns, deploy))
		l.StartScenario("e2e-cp")
		notReady := fmt.Sprintf(`sum by (cluster) (kube_node_status_condition{cluster=%q, condition="Ready", status="false"})`, c1)
		waitPods(t, c1, notReady, 2)
		firing(t, pack.AlertWorkloadCrashLooping, c1)
		l.StopScenario("e2e-cp")
		waitPods(t, c1, notReady, 0)
		// Recovered through the API: no container waits in CrashLoopBackOff any more. (The
		// alert itself resolves a minute later, when increase(...[1m]) has decayed.)
		crashing := fmt.Sprintf(`sum by (cluster) (kube_pod_container_status_waiting_reason{cluster=%q, reason="CrashLoopBackOff"})`, c1)
		waitPods(t, c1, crashing, 0)
	})
}

func queryVector(t *testing.T, l *lab.Lab, q string) pmodel.Vector {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, warns, err := l.API().Query(c, q, time.Now())
	require.NoError(t, err, q)
	require.Empty(t, warns, q)
	vec, _ := v.(pmodel.Vector)
	return vec
}

func rangeSamples(t *testing.T, l *lab.Lab, sel string, from, to time.Time) []pmodel.SamplePair {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A range selector returns the raw samples with their scrape timestamps.
	window := to.Sub(from).Round(time.Second) + time.Second
	v, _, err := l.API().Query(c, fmt.Sprintf("%s[%ds]", sel, int(window.Seconds())), to)
	require.NoError(t, err)
	m, ok := v.(pmodel.Matrix)
	require.True(t, ok && len(m) == 1, "%s: %v", sel, v)
	return m[0].Values
}

// replicaSet is the ReplicaSet that owns the Deployment's running pods, from the API.
func replicaSet(t *testing.T, l *lab.Lab, cluster, ns, deploy string) string {
	t.Helper()
	pods, err := l.ControlPlanes[cluster].Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + deploy})
	require.NoError(t, err)
	owners := map[string]bool{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && len(p.OwnerReferences) > 0 {
			owners[p.OwnerReferences[0].Name] = true
		}
	}
	require.Len(t, owners, 1, "owners of %s/%s pods: %v", ns, deploy, owners)
	for o := range owners {
		return o
	}
	return ""
}
