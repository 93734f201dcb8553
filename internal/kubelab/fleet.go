package kubelab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/fleetwatch/fleetwatch/deploy"
	"github.com/fleetwatch/fleetwatch/internal/sim"
)

// AppLabel is the label every lab Deployment selects its pods by.
const AppLabel = "app.kubernetes.io/name"

// FleetOptions configure a Fleet.
type FleetOptions struct {
	// Dir gets one directory per cluster (named after it).
	Dir string
	// BinDir holds the binaries (Binaries).
	BinDir string
	// Clusters and their inventories, in order.
	Clusters    []string
	Inventories map[string]sim.Inventory
	// Parallel is how many clusters start at once (default 2).
	Parallel int
	Logger   *slog.Logger
}

// Fleet is a set of lab clusters, each with a real control plane.
type Fleet struct {
	logger   *slog.Logger
	clusters []*Cluster
	byName   map[string]*Cluster
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// Cluster is one lab cluster.
type Cluster struct {
	Name string
	CP   *ControlPlane
	// Proxy is the path to the API server meant for fleetwatch (see Proxy); Kubeconfig for
	// fleetwatch (FleetwatchKubeconfig) points at it.
	Proxy                *Proxy
	FleetwatchKubeconfig string
	// KubeStateMetrics is the address (host:port) of the cluster's kube-state-metrics.
	KubeStateMetrics string

	Client  kubernetes.Interface
	inv     sim.Inventory
	ksm     *proc
	kubelet *kubelet
	silent  atomic.Bool

	mu   sync.Mutex
	ramp *ramp
}

// ramp scales the load deployment of a saturation step up to its replicas over a duration.
type ramp struct {
	replicas int
	start    time.Time
	over     time.Duration
	done     bool
}

// StartFleet starts every cluster's control plane, kube-state-metrics and data plane,
// materializes its inventory through the API (namespaces, nodes, Deployments and their
// PodDisruptionBudgets) and waits until every pod runs.
func StartFleet(ctx context.Context, o FleetOptions) (_ *Fleet, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Parallel <= 0 {
		o.Parallel = 2
	}
	if missing := MissingBinaries(o.BinDir); len(missing) > 0 {
		return nil, fmt.Errorf("%s missing in %s (run `make peers`)", strings.Join(missing, ", "), o.BinDir)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	f := &Fleet{logger: o.Logger, byName: map[string]*Cluster{}, cancel: cancel}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	for _, name := range o.Clusters {
		c := &Cluster{Name: name, inv: o.Inventories[name]}
		f.clusters = append(f.clusters, c)
		f.byName[name] = c
	}
	sem := make(chan struct{}, o.Parallel)
	errs := make([]error, len(f.clusters))
	var wg sync.WaitGroup
	for i, c := range f.clusters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			if err := f.startCluster(ctx, runCtx, c, filepath.Join(o.Dir, c.Name), o.BinDir); err != nil {
				errs[i] = fmt.Errorf("cluster %s: %w", c.Name, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	f.wg.Add(1)
	go f.rampLoop(runCtx)
	return f, nil
}

func (f *Fleet) startCluster(ctx, runCtx context.Context, c *Cluster, dir, binDir string) error {
	start := time.Now()
	cp, err := StartControlPlane(ctx, ControlPlaneOptions{Name: c.Name, Dir: dir, BinDir: binDir})
	if err != nil {
		return err
	}
	c.CP = cp
	if c.Client, err = kubernetes.NewForConfig(cp.RESTConfig(cp.URL)); err != nil {
		return err
	}
	if c.Proxy, err = NewProxy(strings.TrimPrefix(cp.URL, "https://")); err != nil {
		return err
	}
	// fleetwatch acts as a member cluster's ServiceAccount, given the least RBAC its playbooks
	// need, the way an installation joins a cluster (`fleetwatch join`): a call the
	// member ClusterRole does not allow fails the remediation tests.
	creds, err := deploy.Join(ctx, cp.RESTConfig(cp.URL), deploy.JoinOptions{Cluster: c.Name, Server: "https://" + c.Proxy.Addr()})
	if err != nil {
		return err
	}
	c.FleetwatchKubeconfig = filepath.Join(dir, "kubeconfig-fleetwatch")
	if err := os.WriteFile(c.FleetwatchKubeconfig, creds.Kubeconfig, 0o600); err != nil {
		return err
	}

	c.kubelet = newKubelet(c.Name, c.Client, c.inv.Nodes, f.logger)
	if err := c.kubelet.register(ctx); err != nil {
		return err
	}
	f.wg.Add(1)
	go func() { defer f.wg.Done(); c.kubelet.run(runCtx, 4) }()
	if err := c.materialize(ctx); err != nil {
		return err
	}

	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	c.KubeStateMetrics = "127.0.0.1:" + strconv.Itoa(ports[0])
	c.ksm = newProc(dir, "kube-state-metrics", filepath.Join(binDir, BinKubeStateMetrics),
		"--kubeconfig="+cp.Kubeconfig, "--host=127.0.0.1", "--port="+strconv.Itoa(ports[0]),
		"--telemetry-host=127.0.0.1", "--telemetry-port="+strconv.Itoa(ports[1]),
		"--resources=nodes,pods,deployments,replicasets,poddisruptionbudgets,namespaces")
	if err := c.ksm.start(); err != nil {
		return err
	}
	// kube-state-metrics answers /readyz on its telemetry port, once its stores are filled.
	if err := c.ksm.waitReady(ctx, httpCheck(http.DefaultClient, "http://127.0.0.1:"+strconv.Itoa(ports[1])+"/readyz")); err != nil {
		return err
	}
	if err := c.waitRunning(ctx); err != nil {
		return err
	}
	f.logger.Info("Lab cluster ready", "cluster", c.Name, "api_server", cp.URL, "kubeconfig", cp.Kubeconfig,
		"nodes", len(c.inv.Nodes), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// materialize creates the inventory's namespaces, Deployments and, for each Deployment of more
// than one replica, a PodDisruptionBudget allowing one pod down at a time.
func (c *Cluster) materialize(ctx context.Context) error {
	seen := map[string]bool{}
	for _, d := range c.inv.Deployments {
		if seen[d.Namespace] {
			continue
		}
		seen[d.Namespace] = true
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: d.Namespace}}
		if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("namespace %s: %w", d.Namespace, err)
		}
	}
	for _, d := range c.inv.Deployments {
		if err := c.createDeployment(ctx, d); err != nil {
			return err
		}
		if d.Replicas < 2 {
			continue
		}
		pdb := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: d.Name, Namespace: d.Namespace},
			Spec: policyv1.PodDisruptionBudgetSpec{
				MaxUnavailable: ptr.To(intstr.FromInt32(1)),
				Selector:       &metav1.LabelSelector{MatchLabels: map[string]string{AppLabel: d.Name}},
			},
		}
		if _, err := c.Client.PolicyV1().PodDisruptionBudgets(d.Namespace).Create(ctx, pdb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("pod disruption budget %s/%s: %w", d.Namespace, d.Name, err)
		}
	}
	return nil
}

// DeploymentObject renders an inventory deployment as the Deployment the lab creates.
func DeploymentObject(d sim.InventoryDeployment) *appsv1.Deployment {
	labels := map[string]string{AppLabel: d.Name}
	var containers []corev1.Container
	for _, ct := range d.Containers {
		containers = append(containers, corev1.Container{
			Name: ct.Name, Image: ct.Image,
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU:    *resource.NewMilliQuantity(ct.CPUMilli, resource.DecimalSI),
				corev1.ResourceMemory: *resource.NewQuantity(ct.MemoryBytes, resource.BinarySI),
			}},
		})
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: d.Name, Namespace: d.Namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(d.Replicas)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				// The default grace period (30s): a deleted or evicted pod waits for its kubelet,
				// which stops the containers at once and confirms the deletion.
				Spec: corev1.PodSpec{Containers: containers},
			},
		},
	}
}

func (c *Cluster) createDeployment(ctx context.Context, d sim.InventoryDeployment) error {
	_, err := c.Client.AppsV1().Deployments(d.Namespace).Create(ctx, DeploymentObject(d), metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	return nil
}

// waitRunning waits until every replica of the inventory runs.
func (c *Cluster) waitRunning(ctx context.Context) error {
	want := 0
	for _, d := range c.inv.Deployments {
		want += d.Replicas
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		running := 0
		pods, err := c.kubelet.pods.List(everything)
		if err == nil {
			for _, p := range pods {
				if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
					running++
				}
			}
		}
		if running >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d pods running: %w", running, want, ctx.Err())
		case <-t.C:
		}
	}
}

// Clusters returns the clusters in order.
func (f *Fleet) Clusters() []*Cluster { return f.clusters }

// Cluster returns a cluster by name, nil if there is none.
func (f *Fleet) Cluster(name string) *Cluster { return f.byName[name] }

// Close stops every process of every cluster. Their directories stay, with the logs.
func (f *Fleet) Close() {
	f.cancel()
	f.wg.Wait()
	for _, c := range f.clusters {
		if c.ksm != nil {
			c.ksm.stop(5 * time.Second)
		}
		if c.Proxy != nil {
			c.Proxy.Close()
		}
		if c.CP != nil {
			c.CP.Close()
		}
	}
}

// Apply implements sim.Actuator.
func (f *Fleet) Apply(ctx context.Context, cluster string, st sim.Step, now time.Time) error {
	c := f.byName[cluster]
	if c == nil {
		return fmt.Errorf("%w %q", sim.ErrUnknownCluster, cluster)
	}
	rate := st.RestartsPerMinute
	if rate <= 0 {
		rate = sim.DefaultRestartsPerMinute
	}
	switch st.Action {
	case sim.ActionNodesNotReady:
		nodes := c.kubelet.readyNodes()
		nodes = nodes[:min(st.Count, len(nodes))]
		crash := 0.0
		if st.Crash {
			crash = rate
		}
		return c.kubelet.setReady(ctx, nodes, false, crash)
	case sim.ActionCordon:
		return c.cordon(ctx, st.Count)
	case sim.ActionCrashloop:
		// The image the Deployment runs went bad (a dependency it pulls changed, say): its
		// pods crash-loop until it runs another image.
		img, err := c.image(ctx, st.Namespace, st.Deployment)
		if err != nil {
			return err
		}
		c.kubelet.markBad(img, rate)
		return nil
	case sim.ActionRollout, sim.ActionImageDrift:
		if st.Crash {
			c.kubelet.markBad(st.Image, rate)
		}
		return c.setImage(ctx, st.Namespace, st.Deployment, st.Image)
	case sim.ActionSaturation:
		return c.saturate(ctx, st.CPU, st.Memory, time.Duration(st.Over), now)
	case sim.ActionSilence:
		c.silent.Store(true)
		return nil
	case sim.ActionControlPlaneDown:
		c.CP.StopAPIServer()
		return nil
	case sim.ActionRecover:
		return c.recover(ctx)
	}
	return fmt.Errorf("unknown action %q", st.Action)
}

func (c *Cluster) cordon(ctx context.Context, count int) error {
	for _, name := range c.kubelet.nodeNames() {
		if count <= 0 {
			return nil
		}
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if n.Spec.Unschedulable {
			continue
		}
		if err := c.setUnschedulable(ctx, name, true); err != nil {
			return err
		}
		count--
	}
	return nil
}

func (c *Cluster) setUnschedulable(ctx context.Context, node string, v bool) error {
	patch := fmt.Sprintf(`{"spec":{"unschedulable":%t}}`, v)
	if _, err := c.Client.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return err
	}
	return c.kubelet.cached(ctx, node, func(n *corev1.Node) bool { return n.Spec.Unschedulable == v })
}

func (c *Cluster) image(ctx context.Context, ns, name string) (string, error) {
	d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return d.Spec.Template.Spec.Containers[0].Image, nil
}

// setImage changes the image of the Deployment's main container, which rolls it out.
func (c *Cluster) setImage(ctx context.Context, ns, name, image string) error {
	d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	main := d.Spec.Template.Spec.Containers[0].Name
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
		"containers": []map[string]string{{"name": main, "image": image}},
	}}}})
	_, err = c.Client.AppsV1().Deployments(ns).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	return err
}

// saturate creates the load deployment: LoadPodsPerNode pods a node whose requests bring
// sum(requests)/sum(allocatable) to the targets, scaled up over `over`.
func (c *Cluster) saturate(ctx context.Context, cpuTarget, memTarget float64, over time.Duration, now time.Time) error {
	if err := c.removeLoad(ctx); err != nil {
		return err
	}
	t, err := c.truth()
	if err != nil {
		return err
	}
	needCPU, needMem := 0.0, 0.0
	if cpuTarget > 0 {
		needCPU = math.Max(cpuTarget*t.AllocatableCPUCores-t.RequestedCPUCores, 0) * 1000
	}
	if memTarget > 0 {
		needMem = math.Max(memTarget*t.AllocatableMemoryBytes-t.RequestedMemoryBytes, 0)
	}
	if needCPU == 0 && needMem == 0 {
		return nil
	}
	replicas := sim.LoadPodsPerNode * len(c.inv.Nodes)
	d := sim.InventoryDeployment{Namespace: sim.LoadNamespace, Name: sim.LoadDeployment, Replicas: 0, Containers: []sim.InventoryContainer{{
		Name: "load", Image: sim.LoadImage,
		// Round up so the target is reached, never missed by rounding.
		CPUMilli:    int64(math.Ceil(needCPU / float64(replicas))),
		MemoryBytes: int64(math.Ceil(needMem/float64(replicas)/(1<<20))) << 20,
	}}}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: d.Namespace}}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if err := c.createDeployment(ctx, d); err != nil {
		return err
	}
	c.mu.Lock()
	c.ramp = &ramp{replicas: replicas, start: now, over: over}
	c.mu.Unlock()
	return c.stepRamp(ctx, now)
}

// stepRamp scales the load deployment to where its ramp is at now.
func (c *Cluster) stepRamp(ctx context.Context, now time.Time) error {
	c.mu.Lock()
	r := c.ramp
	c.mu.Unlock()
	if r == nil || r.done {
		return nil
	}
	want := r.replicas
	if r.over > 0 {
		p := float64(now.Sub(r.start)) / float64(r.over)
		want = int(math.Ceil(math.Min(math.Max(p, 0), 1) * float64(r.replicas)))
	}
	scale, err := c.Client.AppsV1().Deployments(sim.LoadNamespace).GetScale(ctx, sim.LoadDeployment, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if int(scale.Spec.Replicas) != want {
		scale.Spec.Replicas = int32(want)
		if _, err := c.Client.AppsV1().Deployments(sim.LoadNamespace).UpdateScale(ctx, sim.LoadDeployment, scale, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	if want == r.replicas {
		c.mu.Lock()
		r.done = true
		c.mu.Unlock()
	}
	return nil
}

func (f *Fleet) rampLoop(ctx context.Context) {
	defer f.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, c := range f.clusters {
				if err := c.stepRamp(ctx, now); err != nil && ctx.Err() == nil {
					f.logger.Debug("Saturation ramp", "cluster", c.Name, "err", err)
				}
			}
		}
	}
}

func (c *Cluster) removeLoad(ctx context.Context) error {
	c.mu.Lock()
	c.ramp = nil
	c.mu.Unlock()
	err := c.Client.AppsV1().Deployments(sim.LoadNamespace).Delete(ctx, sim.LoadDeployment, metav1.DeleteOptions{
		PropagationPolicy: ptr.To(metav1.DeletePropagationBackground),
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// recover brings the cluster back to its inventory: API server up, nodes Ready and
// schedulable, no bad images, no load, every Deployment on its inventory image and replicas.
func (c *Cluster) recover(ctx context.Context) error {
	c.silent.Store(false)
	if err := c.CP.StartAPIServer(ctx); err != nil {
		return err
	}
	if err := c.kubelet.reset(ctx); err != nil {
		return err
	}
	for _, name := range c.kubelet.nodeNames() {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if n.Spec.Unschedulable {
			if err := c.setUnschedulable(ctx, name, false); err != nil {
				return err
			}
		}
	}
	if err := c.removeLoad(ctx); err != nil {
		return err
	}
	for _, d := range c.inv.Deployments {
		cur, err := c.Client.AppsV1().Deployments(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if err := c.createDeployment(ctx, d); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if cur.Spec.Template.Spec.Containers[0].Image != d.Containers[0].Image {
			if err := c.setImage(ctx, d.Namespace, d.Name, d.Containers[0].Image); err != nil {
				return err
			}
		}
		if cur.Spec.Replicas == nil || int(*cur.Spec.Replicas) != d.Replicas {
			patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, d.Replicas)
			if _, err := c.Client.AppsV1().Deployments(d.Namespace).Patch(ctx, d.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Truth implements sim.Actuator: the cluster as its API objects are (the informers' view).
func (f *Fleet) Truth(cluster string) (sim.ClusterTruth, error) {
	c := f.byName[cluster]
	if c == nil {
		return sim.ClusterTruth{}, fmt.Errorf("%w %q", sim.ErrUnknownCluster, cluster)
	}
	return c.truth()
}

func (c *Cluster) truth() (sim.ClusterTruth, error) {
	t := sim.ClusterTruth{Name: c.Name, ControlPlaneUp: c.CP.APIServerRunning(), Silent: c.silent.Load(), Images: map[string][]string{}}
	nodes, err := c.kubelet.nodes.List(everything)
	if err != nil {
		return t, err
	}
	var allocCPU, allocMem, reqCPU, reqMem int64
	for _, n := range nodes {
		t.Nodes++
		if nodeReady(n) == corev1.ConditionTrue {
			t.ReadyNodes++
		}
		if n.Spec.Unschedulable {
			t.UnschedulableNodes++
		}
		allocCPU += n.Status.Allocatable.Cpu().MilliValue()
		allocMem += n.Status.Allocatable.Memory().Value()
	}
	pods, err := c.kubelet.pods.List(everything)
	if err != nil {
		return t, err
	}
	images := map[string]map[string]bool{}
	for _, p := range pods {
		if p.Status.Phase != corev1.PodRunning && p.Status.Phase != corev1.PodPending {
			continue
		}
		t.Pods++
		for i, cs := range p.Status.ContainerStatuses {
			if i == 0 && cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff" {
				t.CrashLoopPods++
			}
		}
		for _, ct := range p.Spec.Containers {
			reqCPU += ct.Resources.Requests.Cpu().MilliValue()
			reqMem += ct.Resources.Requests.Memory().Value()
		}
		if app := p.Labels[AppLabel]; app != "" && len(p.Spec.Containers) > 0 {
			key := p.Namespace + "/" + app
			if images[key] == nil {
				images[key] = map[string]bool{}
			}
			images[key][p.Spec.Containers[0].Image] = true
		}
	}
	for k, set := range images {
		t.Images[k] = sortedImages(set)
	}
	t.SetResources(allocCPU, reqCPU, allocMem, reqMem)
	return t, nil
}

// Endpoint is what GET /control-planes says about one cluster.
type Endpoint struct {
	Name string `json:"name"`
	// APIServer is the API server's address; Kubeconfig an admin kubeconfig for it.
	APIServer  string `json:"api_server"`
	Kubeconfig string `json:"kubeconfig"`
	// FleetwatchAPIServer is the proxy in front of the API server, the path meant for
	// fleetwatch; FleetwatchKubeconfig points at it.
	FleetwatchAPIServer  string `json:"fleetwatch_api_server"`
	FleetwatchKubeconfig string `json:"fleetwatch_kubeconfig"`
	// KubeStateMetrics is kube-state-metrics' host:port (metrics at /metrics).
	KubeStateMetrics string `json:"kube_state_metrics"`
	// ClientCert, ClientKey and CA are files for scraping the API server's /metrics.
	ClientCert string `json:"client_cert"`
	ClientKey  string `json:"client_key"`
	CA         string `json:"ca"`
	// AuditLog is the API server's audit log: every write, as JSON lines.
	AuditLog string `json:"audit_log"`

	APIServerUp bool           `json:"api_server_up"`
	PathCut     bool           `json:"fleetwatch_path_cut"`
	PathLatency string         `json:"fleetwatch_path_latency"`
	Pids        map[string]int `json:"pids"`
}

// Endpoints describes every cluster.
func (f *Fleet) Endpoints() []Endpoint {
	out := make([]Endpoint, 0, len(f.clusters))
	for _, c := range f.clusters {
		cert, key, ca := c.CP.ClientCert()
		pids := c.CP.Pids()
		if c.ksm != nil && c.ksm.running() {
			pids[c.ksm.name] = c.ksm.pid()
		}
		out = append(out, Endpoint{
			Name: c.Name, APIServer: c.CP.URL, Kubeconfig: c.CP.Kubeconfig,
			FleetwatchAPIServer: "https://" + c.Proxy.Addr(), FleetwatchKubeconfig: c.FleetwatchKubeconfig,
			KubeStateMetrics: c.KubeStateMetrics, ClientCert: cert, ClientKey: key, CA: ca, AuditLog: c.CP.AuditLog,
			APIServerUp: c.CP.APIServerRunning(), PathCut: c.Proxy.IsCut(), PathLatency: c.Proxy.Latency().String(),
			Pids: pids,
		})
	}
	return out
}

// Endpoint describes one cluster (see Endpoints); the zero Endpoint for an unknown one.
func (f *Fleet) Endpoint(cluster string) Endpoint {
	for _, e := range f.Endpoints() {
		if e.Name == cluster {
			return e
		}
	}
	return Endpoint{}
}
