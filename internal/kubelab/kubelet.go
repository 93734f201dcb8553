package kubelab

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/fleetwatch/fleetwatch/internal/sim"
)

// What the lab's kubelets report about themselves (kube_node_info).
const (
	kubeletVersion    = "v1.34.3"
	osImage           = "Ubuntu 24.04.1 LTS"
	kernelVersion     = "6.8.0-1019-generic"
	runtimeVersion    = "containerd://1.7.24"
	leaseNamespace    = "kube-node-lease"
	leaseDuration     = 40 * time.Second
	heartbeatEvery    = 10 * time.Second
	statusReportEvery = time.Minute
	// crashTick is how often the restart counters of crash-looping containers move.
	crashTick = 5 * time.Second
)

// CrashLoopTagSuffix marks an image that always crash-loops in the lab: `kubectl set image`
// to a tag ending in it makes the Deployment's new pods crash-loop, and rolling back cures them.
const CrashLoopTagSuffix = "-crashloop"

// nodeState is what the kubelet of one node decides.
type nodeState struct {
	inv   sim.InventoryNode
	ready bool
	// crashRate > 0: the node's pods crash-loop at that many restarts a minute (a node losing
	// its network or storage takes its pods down with it).
	crashRate float64
	nextIP    int
	prefix    netip.Prefix
}

// crash is a crash loop of one container.
type crash struct {
	since     time.Time
	base      int32 // restarts before it began
	perMinute float64
}

// kubelet plays the kubelets of one cluster's nodes through the API server: it registers the
// nodes, renews their Leases and reports their conditions, gives the pods the scheduler bound
// to them a status, crash-loops the containers whose image is bad, and finalizes the deletion
// of pods (including evicted ones).
type kubelet struct {
	cluster string
	client  kubernetes.Interface
	logger  *slog.Logger
	now     func() time.Time

	factory informers.SharedInformerFactory
	pods    corelisters.PodLister
	nodes   corelisters.NodeLister
	queue   workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	state   map[string]*nodeState
	order   []string           // node names in inventory order
	bad     map[string]float64 // image -> restarts per minute
	crashes map[types.UID]*crash
	podIPs  map[types.UID]string
}

func newKubelet(cluster string, client kubernetes.Interface, nodes []sim.InventoryNode, logger *slog.Logger) *kubelet {
	k := &kubelet{
		cluster: cluster, client: client, logger: logger, now: time.Now,
		state: map[string]*nodeState{}, bad: map[string]float64{},
		crashes: map[types.UID]*crash{}, podIPs: map[types.UID]string{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "kubelab-kubelet-" + cluster}),
	}
	for _, n := range nodes {
		st := &nodeState{inv: n, ready: true}
		if p, err := netip.ParsePrefix(n.PodCIDR); err == nil {
			st.prefix = p
		}
		k.state[n.Name] = st
		k.order = append(k.order, n.Name)
	}
	k.factory = informers.NewSharedInformerFactory(client, 0)
	k.pods = k.factory.Core().V1().Pods().Lister()
	k.nodes = k.factory.Core().V1().Nodes().Lister()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	_, _ = k.factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	})
	return k
}

// register creates the nodes and their Leases (or takes over existing ones) and reports
// their status.
func (k *kubelet) register(ctx context.Context) error {
	for _, name := range k.order {
		st := k.state[name]
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"node.kubernetes.io/instance-type": instanceType(st.inv),
				"topology.kubernetes.io/region":    strings.SplitN(k.cluster, "-", 2)[0],
			}},
			Spec: corev1.NodeSpec{PodCIDR: st.inv.PodCIDR, PodCIDRs: []string{st.inv.PodCIDR}, ProviderID: st.inv.ProviderID},
		}
		if _, err := k.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("register node %s: %w", name, err)
		}
		if err := k.reportStatus(ctx, name); err != nil {
			return err
		}
		lease := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: leaseNamespace},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To(int32(leaseDuration / time.Second)),
				RenewTime: &metav1.MicroTime{Time: k.now()},
			},
		}
		if _, err := k.client.CoordinationV1().Leases(leaseNamespace).Create(ctx, lease, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("lease of node %s: %w", name, err)
		}
	}
	return nil
}

func instanceType(n sim.InventoryNode) string {
	return fmt.Sprintf("lab-%dc-%dg", n.CPUCapacityMilli/1000, n.MemoryCapacityBytes>>30)
}

// reportStatus writes a node's status as its kubelet would.
func (k *kubelet) reportStatus(ctx context.Context, name string) error {
	k.mu.Lock()
	st := k.state[name]
	inv, ready := st.inv, st.ready
	k.mu.Unlock()
	return wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Steps: 5}, func(ctx context.Context) (bool, error) {
		node, err := k.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, fmt.Errorf("node %s: %w", name, err)
		}
		now := metav1.NewTime(k.now())
		q := func(milli int64) resource.Quantity { return *resource.NewMilliQuantity(milli, resource.DecimalSI) }
		b := func(bytes int64) resource.Quantity { return *resource.NewQuantity(bytes, resource.BinarySI) }
		node.Status.Capacity = corev1.ResourceList{
			corev1.ResourceCPU: q(inv.CPUCapacityMilli), corev1.ResourceMemory: b(inv.MemoryCapacityBytes),
			corev1.ResourceEphemeralStorage: b(inv.StorageCapacityBytes), corev1.ResourcePods: *resource.NewQuantity(inv.Pods, resource.DecimalSI),
		}
		node.Status.Allocatable = corev1.ResourceList{
			corev1.ResourceCPU: q(inv.CPUAllocatableMilli), corev1.ResourceMemory: b(inv.MemoryAllocatableBytes),
			corev1.ResourceEphemeralStorage: b(inv.StorageAllocatableBytes), corev1.ResourcePods: *resource.NewQuantity(inv.Pods, resource.DecimalSI),
		}
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: inv.InternalIP}, {Type: corev1.NodeHostName, Address: name}}
		node.Status.NodeInfo = corev1.NodeSystemInfo{
			MachineID: inv.SystemUUID, SystemUUID: inv.SystemUUID, BootID: inv.SystemUUID,
			KernelVersion: kernelVersion, OSImage: osImage, ContainerRuntimeVersion: runtimeVersion,
			KubeletVersion: kubeletVersion, OperatingSystem: "linux", Architecture: "amd64",
		}
		node.Status.Phase = corev1.NodeRunning
		readyStatus, reason, msg := corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"
		if !ready {
			readyStatus, reason, msg = corev1.ConditionFalse, "KubeletNotReady", "container runtime network not ready: NetworkReady=false"
		}
		conds := []corev1.NodeCondition{
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory"},
			{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure"},
			{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID"},
			{Type: corev1.NodeReady, Status: readyStatus, Reason: reason, Message: msg},
		}
		for i := range conds {
			conds[i].LastHeartbeatTime = now
			conds[i].LastTransitionTime = now
			for _, old := range node.Status.Conditions {
				if old.Type == conds[i].Type && old.Status == conds[i].Status {
					conds[i].LastTransitionTime = old.LastTransitionTime
				}
			}
		}
		node.Status.Conditions = conds
		if _, err := k.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			if apierrors.IsConflict(err) {
				return false, nil
			}
			return false, fmt.Errorf("status of node %s: %w", name, err)
		}
		return true, nil
	})
}

// run processes pods and heartbeats until ctx ends.
func (k *kubelet) run(ctx context.Context, workers int) {
	defer k.queue.ShutDown()
	k.factory.Start(ctx.Done())
	k.factory.WaitForCacheSync(ctx.Done())
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k.processNext(ctx) {
			}
		}()
	}
	wg.Add(3)
	go func() { defer wg.Done(); wait.UntilWithContext(ctx, k.renewLeases, heartbeatEvery) }()
	go func() { defer wg.Done(); wait.UntilWithContext(ctx, k.reportAll, statusReportEvery) }()
	go func() { defer wg.Done(); wait.UntilWithContext(ctx, k.requeueCrashing, crashTick) }()
	<-ctx.Done()
	k.queue.ShutDown()
	wg.Wait()
	k.factory.Shutdown()
}

func (k *kubelet) renewLeases(ctx context.Context) {
	for _, name := range k.order {
		l, err := k.client.CoordinationV1().Leases(leaseNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			continue // the API server may be down; the next heartbeat tries again
		}
		l.Spec.RenewTime = &metav1.MicroTime{Time: k.now()}
		_, _ = k.client.CoordinationV1().Leases(leaseNamespace).Update(ctx, l, metav1.UpdateOptions{})
	}
}

func (k *kubelet) reportAll(ctx context.Context) {
	for _, name := range k.order {
		if err := k.reportStatus(ctx, name); err != nil && ctx.Err() == nil {
			k.logger.Debug("Node status", "cluster", k.cluster, "node", name, "err", err)
		}
	}
}

// requeueCrashing moves the restart counters of crash-looping containers.
func (k *kubelet) requeueCrashing(context.Context) {
	pods, err := k.pods.List(everything)
	if err != nil {
		return
	}
	for _, p := range pods {
		if k.crashRate(p) > 0 {
			k.queue.Add(p.Namespace + "/" + p.Name)
		}
	}
}

func (k *kubelet) processNext(ctx context.Context) bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	if err := k.syncPod(ctx, key); err != nil {
		if ctx.Err() == nil {
			k.queue.AddRateLimited(key)
		}
		return true
	}
	k.queue.Forget(key)
	return true
}

// syncPod brings one pod's status in line with what this kubelet decides.
func (k *kubelet) syncPod(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := k.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	k.mu.Lock()
	node := k.state[pod.Spec.NodeName]
	k.mu.Unlock()
	if node == nil {
		return nil // not bound, or bound to a node that is not ours
	}
	if pod.DeletionTimestamp != nil {
		// The containers stopped at once: confirm the deletion, as a kubelet does once they have.
		err := k.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &pod.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return err
		}
		k.forget(pod.UID)
		return nil
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	want := k.desiredStatus(pod)
	if statusEqual(&pod.Status, want) {
		return nil
	}
	upd := pod.DeepCopy()
	upd.Status = *want
	_, err = k.client.CoreV1().Pods(ns).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func (k *kubelet) forget(uid types.UID) {
	k.mu.Lock()
	delete(k.crashes, uid)
	delete(k.podIPs, uid)
	k.mu.Unlock()
}

// crashRate is how often the pod's main container restarts a minute; 0 when it does not
// crash-loop. The main container is the pod's first.
func (k *kubelet) crashRate(p *corev1.Pod) float64 {
	if len(p.Spec.Containers) == 0 || p.DeletionTimestamp != nil {
		return 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	node := k.state[p.Spec.NodeName]
	if node == nil {
		return 0
	}
	if node.crashRate > 0 {
		return node.crashRate
	}
	image := p.Spec.Containers[0].Image
	if r, ok := k.bad[image]; ok {
		return r
	}
	if strings.HasSuffix(image, CrashLoopTagSuffix) {
		return sim.DefaultRestartsPerMinute
	}
	return 0
}

// desiredStatus is the status the pod's kubelet reports now.
func (k *kubelet) desiredStatus(p *corev1.Pod) *corev1.PodStatus {
	now := k.now()
	rate := k.crashRate(p)
	k.mu.Lock()
	node := k.state[p.Spec.NodeName]
	ip := p.Status.PodIP
	if ip == "" {
		ip = k.podIPs[p.UID]
	}
	if ip == "" && node.prefix.IsValid() {
		node.nextIP++
		a := node.prefix.Addr()
		for range 1 + node.nextIP%253 {
			a = a.Next()
		}
		ip = a.String()
		k.podIPs[p.UID] = ip
	}
	var cr *crash
	if rate > 0 {
		cr = k.crashes[p.UID]
		if cr == nil {
			var base int32
			if len(p.Status.ContainerStatuses) > 0 {
				base = p.Status.ContainerStatuses[0].RestartCount
			}
			cr = &crash{since: now, base: base, perMinute: rate}
			k.crashes[p.UID] = cr
		}
	} else if old := k.crashes[p.UID]; old != nil {
		delete(k.crashes, p.UID)
	}
	hostIP := node.inv.InternalIP
	k.mu.Unlock()

	start := p.Status.StartTime
	if start == nil {
		start = &metav1.Time{Time: now}
	}
	st := &corev1.PodStatus{
		Phase: corev1.PodRunning, HostIP: hostIP, HostIPs: []corev1.HostIP{{IP: hostIP}},
		PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, StartTime: start, QOSClass: p.Status.QOSClass,
	}
	allReady := true
	old := map[string]corev1.ContainerStatus{}
	for _, cs := range p.Status.ContainerStatuses {
		old[cs.Name] = cs
	}
	for i, c := range p.Spec.Containers {
		prev := old[c.Name]
		cs := corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: imageID(c.Image), RestartCount: prev.RestartCount,
			Started: ptr.To(true), Ready: true,
		}
		if i == 0 && cr != nil {
			restarts := cr.base + int32(cr.perMinute*now.Sub(cr.since).Minutes())
			cs.RestartCount = max(restarts, prev.RestartCount)
			cs.Ready, cs.Started = false, ptr.To(false)
			cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
				Reason: "CrashLoopBackOff", Message: "back-off restarting failed container " + c.Name + " in pod " + p.Name,
			}}
			cs.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 1, Reason: "Error", ContainerID: containerID(p.UID, c.Name, cs.RestartCount),
			}}
			allReady = false
		} else {
			cs.ContainerID = containerID(p.UID, c.Name, cs.RestartCount)
			started := start.Time
			if prev.State.Running != nil && prev.ContainerID == cs.ContainerID {
				started = prev.State.Running.StartedAt.Time
			}
			cs.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(started)}}
			if prev.LastTerminationState.Terminated != nil {
				cs.LastTerminationState = prev.LastTerminationState
			}
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionTrue
		if !ok {
			s = corev1.ConditionFalse
		}
		c := corev1.PodCondition{Type: t, Status: s, LastTransitionTime: metav1.NewTime(now)}
		for _, o := range p.Status.Conditions {
			if o.Type == t && o.Status == s {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
		if !ok && (t == corev1.ContainersReady || t == corev1.PodReady) {
			c.Reason = "ContainersNotReady"
		}
		return c
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodInitialized, true), cond(corev1.PodReady, allReady),
		cond(corev1.ContainersReady, allReady), cond(corev1.PodScheduled, true),
	}
	// Conditions the kubelet does not own (a DisruptionTarget set by an eviction, say) stay.
	for _, o := range p.Status.Conditions {
		switch o.Type {
		case corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled:
		default:
			st.Conditions = append(st.Conditions, o)
		}
	}
	return st
}

// statusEqual compares what desiredStatus decides, ignoring times that only move.
func statusEqual(a, b *corev1.PodStatus) bool {
	if a.Phase != b.Phase || a.PodIP != b.PodIP || a.HostIP != b.HostIP || a.StartTime == nil ||
		len(a.ContainerStatuses) != len(b.ContainerStatuses) || len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for i := range a.ContainerStatuses {
		x, y := a.ContainerStatuses[i], b.ContainerStatuses[i]
		if x.Name != y.Name || x.Image != y.Image || x.ImageID != y.ImageID || x.ContainerID != y.ContainerID ||
			x.Ready != y.Ready || x.RestartCount != y.RestartCount ||
			(x.State.Waiting == nil) != (y.State.Waiting == nil) || (x.State.Running == nil) != (y.State.Running == nil) {
			return false
		}
	}
	for i := range a.Conditions {
		if a.Conditions[i].Type != b.Conditions[i].Type || a.Conditions[i].Status != b.Conditions[i].Status {
			return false
		}
	}
	return true
}

// setReady marks nodes Ready or NotReady; crashRate > 0 makes their pods crash-loop.
func (k *kubelet) setReady(ctx context.Context, names []string, ready bool, crashRate float64) error {
	k.mu.Lock()
	for _, n := range names {
		k.state[n].ready = ready
		k.state[n].crashRate = crashRate
	}
	k.mu.Unlock()
	want := corev1.ConditionFalse
	if ready {
		want = corev1.ConditionTrue
	}
	for _, n := range names {
		if err := k.reportStatus(ctx, n); err != nil {
			return err
		}
		// Truth and the pod workers read the informer's cache: the change is done when
		// it is there, not when the API server took it.
		if err := k.cached(ctx, n, func(node *corev1.Node) bool { return nodeReady(node) == want }); err != nil {
			return err
		}
	}
	k.requeueAll()
	return nil
}

// cachedWait bounds how long a write may take to reach the informer's cache of nodes.
const cachedWait = time.Minute

// cached waits until the informer's cache holds node name in a state ok accepts.
func (k *kubelet) cached(ctx context.Context, name string, ok func(*corev1.Node) bool) error {
	var last *corev1.Node
	err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, cachedWait, true, func(context.Context) (bool, error) {
		n, err := k.nodes.Get(name)
		if err != nil {
			return false, nil
		}
		last = n
		return ok(n), nil
	})
	if err != nil {
		rv := "none"
		if last != nil {
			rv = last.ResourceVersion
		}
		return fmt.Errorf("node %s: the write did not reach the informer's cache (cached resourceVersion %s): %w", name, rv, err)
	}
	return nil
}

// nodeReady is the status of a node's Ready condition, Unknown if it has none.
func nodeReady(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

// readyNodes returns the nodes this kubelet reports Ready, in inventory order.
func (k *kubelet) readyNodes() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, n := range k.order {
		if k.state[n].ready {
			out = append(out, n)
		}
	}
	return out
}

// markBad makes image crash-loop at perMinute restarts a minute.
func (k *kubelet) markBad(image string, perMinute float64) {
	k.mu.Lock()
	k.bad[image] = perMinute
	k.mu.Unlock()
	k.requeueAll()
}

// reset brings every node back to Ready and forgets bad images.
func (k *kubelet) reset(ctx context.Context) error {
	k.mu.Lock()
	var changed []string
	for _, n := range k.order {
		if st := k.state[n]; !st.ready || st.crashRate > 0 {
			changed = append(changed, n)
		}
	}
	clear(k.bad)
	k.mu.Unlock()
	return k.setReady(ctx, changed, true, 0)
}

func (k *kubelet) requeueAll() {
	pods, err := k.pods.List(everything)
	if err != nil {
		return
	}
	for _, p := range pods {
		k.queue.Add(p.Namespace + "/" + p.Name)
	}
}

// nodeNames returns the node names in inventory order.
func (k *kubelet) nodeNames() []string { return append([]string(nil), k.order...) }

// sortedImages returns the distinct values, sorted.
func sortedImages(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}
