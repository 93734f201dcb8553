package kubelab_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"github.com/fleetwatch/fleetwatch/internal/kubelab"
	"github.com/fleetwatch/fleetwatch/internal/sim"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

const gib = 1 << 30

func node(name string, i int) sim.InventoryNode {
	return sim.InventoryNode{
		Name: name, ProviderID: "lab://" + name, SystemUUID: fmt.Sprintf("00000000-0000-4000-a000-%012d", i),
		InternalIP: fmt.Sprintf("10.1.0.%d", 10+i), PodCIDR: fmt.Sprintf("10.100.%d.0/24", i),
		CPUCapacityMilli: 4000, CPUAllocatableMilli: 3900, MemoryCapacityBytes: 16 * gib, MemoryAllocatableBytes: 15 * gib,
		StorageCapacityBytes: 100 * gib, StorageAllocatableBytes: 92 * gib, Pods: 110,
	}
}

// startFleet starts one small lab cluster: three nodes, a two-replica Deployment with a
// PodDisruptionBudget and a one-replica one.
func startFleet(t *testing.T) (*kubelab.Fleet, *kubelab.Cluster) {
	t.Helper()
	testenv.SkipIfShort(t)
	for _, b := range kubelab.Binaries {
		testenv.Peer(t, b)
	}
	inv := sim.Inventory{
		Nodes: []sim.InventoryNode{node("node-0", 0), node("node-1", 1), node("node-2", 2)},
		Deployments: []sim.InventoryDeployment{
			{Namespace: "shop", Name: "api", Replicas: 2, Containers: []sim.InventoryContainer{{Name: "api", Image: "registry.example/shop/api:v1", CPUMilli: 500, MemoryBytes: gib}}},
			{Namespace: "shop", Name: "worker", Replicas: 1, Containers: []sim.InventoryContainer{{Name: "worker", Image: "registry.example/shop/worker:v1", CPUMilli: 250, MemoryBytes: gib / 2}}},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	f, err := kubelab.StartFleet(ctx, kubelab.FleetOptions{
		Dir: dir, BinDir: testenv.PeersBin(), Clusters: []string{"eu-1"}, Inventories: map[string]sim.Inventory{"eu-1": inv},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		if t.Failed() {
			for _, n := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-state-metrics", "etcd"} {
				t.Logf("----- %s -----\n%s", n, tailFile(dir+"/eu-1/"+n+".log"))
			}
		}
	})
	return f, f.Cluster("eu-1")
}

func truth(t *testing.T, f *kubelab.Fleet) sim.ClusterTruth {
	t.Helper()
	tr, err := f.Truth("eu-1")
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func apply(t *testing.T, f *kubelab.Fleet, st sim.Step) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := f.Apply(ctx, "eu-1", st, time.Now()); err != nil {
		t.Fatalf("%s: %v", st.Action, err)
	}
}

func runningPods(t *testing.T, c *kubelab.Cluster, app string) []corev1.Pod {
	t.Helper()
	pods, err := c.Client.CoreV1().Pods("shop").List(context.Background(), metav1.ListOptions{LabelSelector: kubelab.AppLabel + "=" + app})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// ksm returns kube-state-metrics' exposition of the cluster.
func ksm(c *kubelab.Cluster) (string, error) {
	resp, err := http.Get("http://" + c.KubeStateMetrics + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestFleetDataPlane(t *testing.T) {
	f, c := startFleet(t)
	ctx := context.Background()

	tr := truth(t, f)
	if tr.Nodes != 3 || tr.ReadyNodes != 3 || tr.Pods != 3 || !tr.ControlPlaneUp {
		t.Fatalf("truth after start: %+v", tr)
	}
	if tr.RequestedCPUCores != 1.25 || tr.AllocatableCPUCores != 11.7 {
		t.Fatalf("requests %g of %g cores, want 1.25 of 11.7", tr.RequestedCPUCores, tr.AllocatableCPUCores)
	}

	t.Run("kube-state-metrics reads the API objects", func(t *testing.T) {
		testenv.Eventually(t, time.Minute, func() error {
			m, err := ksm(c)
			if err != nil {
				return err
			}
			for _, want := range []string{
				`kube_node_status_condition{node="node-0",condition="Ready",status="true"} 1`,
				`kube_deployment_spec_replicas{namespace="shop",deployment="api"} 2`,
				`kube_poddisruptionbudget_status_pod_disruptions_allowed{namespace="shop",poddisruptionbudget="api"} 1`,
			} {
				if !strings.Contains(m, want) {
					return fmt.Errorf("kube-state-metrics lacks %s", want)
				}
			}
			return nil
		})
	})

	t.Run("an eviction respects the PodDisruptionBudget", func(t *testing.T) {
		pods := runningPods(t, c, "api")
		if len(pods) != 2 {
			t.Fatalf("%d api pods running, want 2", len(pods))
		}
		evict := func(p corev1.Pod) error {
			return c.Client.PolicyV1().Evictions(p.Namespace).Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}})
		}
		budget := func(maxUnavailable int) {
			t.Helper()
			patch := fmt.Sprintf(`{"spec":{"maxUnavailable":%d}}`, maxUnavailable)
			if _, err := c.Client.PolicyV1().PodDisruptionBudgets("shop").Patch(ctx, "api", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
			// The disruption controller (kube-controller-manager) computes what the budget allows.
			testenv.Eventually(t, time.Minute, func() error {
				pdb, err := c.Client.PolicyV1().PodDisruptionBudgets("shop").Get(ctx, "api", metav1.GetOptions{})
				if err != nil {
					return err
				}
				if pdb.Status.ObservedGeneration != pdb.Generation || int(pdb.Status.DisruptionsAllowed) != maxUnavailable {
					return fmt.Errorf("budget allows %d disruptions (generation %d observed %d), want %d",
						pdb.Status.DisruptionsAllowed, pdb.Generation, pdb.Status.ObservedGeneration, maxUnavailable)
				}
				return nil
			})
		}
		// A budget that allows no pod down refuses the eviction.
		budget(0)
		if err := evict(pods[0]); !apierrors.IsTooManyRequests(err) {
			t.Fatalf("eviction while the budget allows none: want 429 TooManyRequests, got %v", err)
		}
		if got := runningPods(t, c, "api"); len(got) != 2 {
			t.Fatalf("a refused eviction took a pod down: %d running", len(got))
		}
		// One down allowed: the eviction goes through, and the pod is replaced elsewhere.
		budget(1)
		if err := evict(pods[0]); err != nil {
			t.Fatalf("eviction the budget allows: %v", err)
		}
		testenv.Eventually(t, time.Minute, func() error {
			running := runningPods(t, c, "api")
			if len(running) != 2 {
				return fmt.Errorf("%d api pods running", len(running))
			}
			for _, p := range running {
				if p.Name == pods[0].Name {
					return errors.New("the evicted pod still runs")
				}
			}
			// Its kubelet confirmed the deletion: the pod is gone, not left terminating.
			if _, err := c.Client.CoreV1().Pods("shop").Get(ctx, pods[0].Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("the evicted pod is still in the API (%v)", err)
			}
			return nil
		})
	})

	t.Run("cordon and NotReady are node state in the API", func(t *testing.T) {
		apply(t, f, sim.Step{Action: sim.ActionCordon, Count: 1})
		apply(t, f, sim.Step{Action: sim.ActionNodesNotReady, Count: 1})
		n, err := c.Client.CoreV1().Nodes().Get(ctx, "node-0", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !n.Spec.Unschedulable {
			t.Fatal("node-0 is not unschedulable after cordon")
		}
		tr := truth(t, f)
		if tr.UnschedulableNodes != 1 || tr.ReadyNodes != 2 {
			t.Fatalf("after cordon and NotReady: %d unschedulable, %d ready", tr.UnschedulableNodes, tr.ReadyNodes)
		}
		testenv.Eventually(t, time.Minute, func() error {
			m, err := ksm(c)
			if err != nil {
				return err
			}
			for _, want := range []string{`kube_node_spec_unschedulable{node="node-0"} 1`, `kube_node_status_condition{node="node-0",condition="Ready",status="false"} 1`} {
				if !strings.Contains(m, want) {
					return fmt.Errorf("kube-state-metrics lacks %s", want)
				}
			}
			return nil
		})
	})

	t.Run("a bad image crash-loops and a rollback cures it", func(t *testing.T) {
		apply(t, f, sim.Step{Action: sim.ActionRollout, Namespace: "shop", Deployment: "api", Image: "registry.example/shop/api:v2", Crash: true})
		// The Deployment's rolling update starts one new pod (maxSurge 25%, maxUnavailable 0 of
		// two), which crash-loops; the rollout then stalls with the old pods still running, as
		// in a real cluster.
		testenv.Eventually(t, 2*time.Minute, func() error {
			if tr := truth(t, f); tr.CrashLoopPods != 1 || len(tr.Images["shop/api"]) != 2 {
				return fmt.Errorf("after the bad rollout: %d pods crash-looping, images %v", tr.CrashLoopPods, tr.Images["shop/api"])
			}
			return nil
		})
		// A rollback is the Deployment's previous template again: what `kubectl rollout undo` does.
		// The Deployment controller writes the object meanwhile (its status, the revision): a
		// conflict reads it again, as kubectl does.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			d, err := c.Client.AppsV1().Deployments("shop").Get(ctx, "api", metav1.GetOptions{})
			if err != nil {
				return err
			}
			d.Spec.Template.Spec.Containers[0].Image = "registry.example/shop/api:v1"
			_, err = c.Client.AppsV1().Deployments("shop").Update(ctx, d, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 2*time.Minute, func() error {
			if tr := truth(t, f); tr.CrashLoopPods != 0 || len(tr.Images["shop/api"]) != 1 || tr.Images["shop/api"][0] != "registry.example/shop/api:v1" {
				return fmt.Errorf("after the rollback: %d pods crash-looping, images %v", tr.CrashLoopPods, tr.Images["shop/api"])
			}
			return nil
		})
	})

	t.Run("control plane down and fleetwatch's path cut", func(t *testing.T) {
		fw := fleetwatchClient(t, c)
		if _, err := fw.Discovery().ServerVersion(); err != nil {
			t.Fatalf("through fleetwatch's path: %v", err)
		}
		c.Proxy.Cut()
		if _, err := fw.Discovery().ServerVersion(); err == nil {
			t.Fatal("fleetwatch's path is cut, yet the API server answered through it")
		}
		// The cluster itself is fine: its own clients still reach it.
		if _, err := c.Client.Discovery().ServerVersion(); err != nil {
			t.Fatalf("directly while fleetwatch's path is cut: %v", err)
		}
		c.Proxy.Heal()
		if _, err := fw.Discovery().ServerVersion(); err != nil {
			t.Fatalf("after heal: %v", err)
		}

		apply(t, f, sim.Step{Action: sim.ActionControlPlaneDown})
		if truth(t, f).ControlPlaneUp {
			t.Fatal("control plane still up after control_plane_down")
		}
		if _, err := c.Client.Discovery().ServerVersion(); err == nil {
			t.Fatal("the API server answered while stopped")
		}
		apply(t, f, sim.Step{Action: sim.ActionRecover})
		if !truth(t, f).ControlPlaneUp {
			t.Fatal("control plane down after recover")
		}
		// The truth is the informers' view, which catches up with the API server's restart.
		testenv.Eventually(t, time.Minute, func() error {
			if tr := truth(t, f); tr.ReadyNodes != 3 || tr.UnschedulableNodes != 0 || tr.Pods != 3 || tr.CrashLoopPods != 0 {
				return fmt.Errorf("after recover: %d ready nodes, %d unschedulable, %d pods, %d crash-looping", tr.ReadyNodes, tr.UnschedulableNodes, tr.Pods, tr.CrashLoopPods)
			}
			return nil
		})
	})
}

func fleetwatchClient(t *testing.T, c *kubelab.Cluster) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.FleetwatchKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout = 2 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func tailFile(name string) string {
	b, err := os.ReadFile(name)
	if err != nil {
		return err.Error()
	}
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}
