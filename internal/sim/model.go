package sim

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
)

// The model is plain data guarded by Sim.mu. Everything that changes with time (restart
// counters of crash-looping containers, the saturation ramp) is stored as a start time and a
// rate and evaluated against Options.Now when read, so a fake clock drives it exactly.

type node struct {
	index                      int
	name                       string
	internalIP, podCIDR        string
	providerID, systemUUID     string
	cpuCapMilli, cpuAllocMilli int64
	memCap, memAlloc           int64
	storageCap, storageAlloc   int64
	podsCap                    int64
	ready                      bool
	unschedulable              bool
	podSlots                   int // pods placed so far, for pod IPs
}

type crashLoop struct {
	since     time.Time
	perMinute float64
}

type container struct {
	name        string
	image       string // the image in the pod spec and the one running
	imageID     string
	containerID string // of the current container; crash loops derive a new one per restart
	cpuMilli    int64
	memBytes    int64
	restarts    int64 // restarts before the current crash loop, if any
	crash       *crashLoop
}

// restartCount is what the kubelet would report at now.
func (c *container) restartCount(now time.Time) int64 {
	if c.crash == nil {
		return c.restarts
	}
	d := now.Sub(c.crash.since)
	if d < 0 {
		d = 0
	}
	return c.restarts + int64(c.crash.perMinute*d.Minutes())
}

type pod struct {
	index      int // replica index within its deployment
	name, uid  string
	ip         string
	node       *node
	rsName     string
	containers []*container
	// baseRestarts are the restart counts of the baseline pod, restored by recover.
	baseRestarts []int64
}

func (p *pod) crashing() bool {
	for _, c := range p.containers {
		if c.crash != nil {
			return true
		}
	}
	return false
}

func (p *pod) ready() bool { return p.node.ready && !p.crashing() }

type sidecar struct {
	name, image        string
	cpuMilli, memBytes int64
}

type deployment struct {
	namespace, name    string
	baseImage, image   string
	cpuMilli, memBytes int64 // requests of the main container
	sidecar            *sidecar
	pods               []*pod
	// A ramping deployment (the saturation load) shows pods[:k] where k grows from 0 at
	// rampStart to len(pods) at rampStart+rampOver.
	ramp      bool
	rampStart time.Time
	rampOver  time.Duration
}

func (d *deployment) key() string { return d.namespace + "/" + d.name }

// visiblePods returns the pods that exist at now.
func (d *deployment) visiblePods(now time.Time) []*pod {
	if !d.ramp {
		return d.pods
	}
	if d.rampOver <= 0 {
		return d.pods
	}
	p := float64(now.Sub(d.rampStart)) / float64(d.rampOver)
	switch {
	case p <= 0:
		return nil
	case p >= 1:
		return d.pods
	}
	return d.pods[:int(math.Ceil(p*float64(len(d.pods))))]
}

// apiState is the control-plane signal: counters advance only while the apiserver is up.
type apiState struct {
	up        bool
	upSince   time.Time
	accumSecs float64 // seconds of uptime before upSince
}

func (a *apiState) uptime(now time.Time) float64 {
	if !a.up {
		return a.accumSecs
	}
	d := now.Sub(a.upSince).Seconds()
	if d < 0 {
		d = 0
	}
	return a.accumSecs + d
}

type cluster struct {
	index       int
	name        string
	nodes       []*node
	deployments []*deployment // the baseline deployments, then the saturation load if any
	silent      bool
	// unsilenced is closed when the cluster stops being silent, releasing held scrapes.
	unsilenced chan struct{}
	api        apiState
	// gen changes with every change of the model that the kube-state-metrics series show,
	// so that a scrape can reuse the previous one's families.
	gen uint64
}

// dynamicKey sums up what changes with time alone (restarts of crash-looping containers,
// ramping deployments): while gen and dynamicKey stay the same, so do the series.
func (c *cluster) dynamicKey(now time.Time) uint64 {
	h := xxhash.New()
	var b [8]byte
	put := func(v uint64) {
		binary.LittleEndian.PutUint64(b[:], v)
		_, _ = h.Write(b[:])
	}
	for _, d := range c.deployments {
		if d.ramp {
			put(uint64(len(d.visiblePods(now))))
		}
		for _, p := range d.pods {
			for _, ct := range p.containers {
				if ct.crash != nil {
					put(uint64(ct.restartCount(now)))
				}
			}
		}
	}
	return h.Sum64()
}

func (c *cluster) deployment(namespace, name string) *deployment {
	for _, d := range c.deployments {
		if d.namespace == namespace && d.name == name {
			return d
		}
	}
	return nil
}

// catalogApp is one application of the fleet; every cluster runs the same catalog.
type catalogApp struct{ namespace, name string }

// The first deployments are the ones the bundled scenarios use; they exist in every fleet.
var catalogApps = []catalogApp{
	{"payments", "api"}, {"checkout", "frontend"}, {"catalog", "search"}, {"identity", "auth"},
	{"checkout", "cart"}, {"payments", "ledger"}, {"catalog", "inventory"}, {"platform", "ingress-gateway"},
	{"batch", "report-builder"}, {"catalog", "recommendations"}, {"payments", "fraud-check"},
	{"checkout", "pricing"}, {"identity", "sessions"}, {"platform", "metrics-proxy"}, {"batch", "image-resizer"},
}

const (
	maxDeployments = 60
	// Load pods added by a saturation scenario, per node.
	loadPodsPerNode = 2
	loadNamespace   = "batch"
	loadDeployment  = "load-generator"
	loadImage       = "registry.example/batch/load-generator:v0.3.1"
	sidecarImage    = "registry.example/platform/envoy:v1.31.2"
	mi              = 1 << 20
	gi              = 1 << 30
)

type nodeType struct {
	cores int64
	mem   int64
}

var nodeTypes = []nodeType{{16, 64 * gi}, {8, 32 * gi}, {32, 128 * gi}}

// spec is the fleet-wide catalog: the same deployments, images and requests in every cluster.
type spec struct {
	deployments []*deployment // templates, without pods
	replicas    []int
	nodeTypes   []nodeType // per node index
}

func newSpec(o *Options) spec {
	rng := rand.New(rand.NewPCG(uint64(o.Seed), 0x5eed))
	total := o.Nodes * o.PodsPerNode

	nt := make([]nodeType, o.Nodes)
	for i := range nt {
		switch r := rng.IntN(10); {
		case r < 7:
			nt[i] = nodeTypes[0]
		case r < 9:
			nt[i] = nodeTypes[1]
		default:
			nt[i] = nodeTypes[2]
		}
	}

	nd := total / 25
	nd = max(nd, min(8, total))
	nd = min(nd, maxDeployments, total)
	deps := make([]*deployment, nd)
	weights := make([]float64, nd)
	cpuW := make([]float64, nd)
	memW := make([]float64, nd)
	cpuChoices := []float64{50, 100, 200, 250, 500, 1000, 2000}
	for i := range deps {
		app := catalogApps[i%len(catalogApps)]
		name := app.name
		if n := i / len(catalogApps); n > 0 {
			name = app.name + "-" + strconv.Itoa(n+1)
		}
		image := fmt.Sprintf("registry.example/%s/%s:v%d.%d.%d", app.namespace, app.name, 1+rng.IntN(3), rng.IntN(20), rng.IntN(10))
		d := &deployment{namespace: app.namespace, name: name, baseImage: image, image: image}
		if i%3 == 1 {
			d.sidecar = &sidecar{name: "envoy", image: sidecarImage, cpuMilli: 50, memBytes: 64 * mi}
		}
		deps[i] = d
		// A long tail: a few large deployments, many small ones.
		weights[i] = math.Exp(rng.NormFloat64() * 0.9)
		cpuW[i] = cpuChoices[rng.IntN(len(cpuChoices))]
		memW[i] = cpuW[i] * (1 + 3*rng.Float64()) // 1-4 MiB of memory per millicore
	}

	// Replicas: at least one each (three for the scenario targets when there is room), the
	// rest by weight with the largest remainder method so the sum is exactly total.
	replicas := make([]int, nd)
	left := total
	for i := range replicas {
		replicas[i] = 1
		if i < 4 && total >= 4*nd {
			replicas[i] = 3
		}
		left -= replicas[i]
	}
	var sw float64
	for _, w := range weights {
		sw += w
	}
	rem := make([]float64, nd)
	given := 0
	for i, w := range weights {
		share := float64(left) * w / sw
		replicas[i] += int(share)
		given += int(share)
		rem[i] = share - math.Floor(share)
	}
	for ; given < left; given++ {
		best := 0
		for i := range rem {
			if rem[i] > rem[best] {
				best = i
			}
		}
		replicas[best]++
		rem[best] = -1
	}

	// Scale requests so the fleet sits at a realistic 40-60% of allocatable.
	var allocCPU, allocMem float64
	for _, t := range nt {
		c, m := allocatable(t)
		allocCPU += float64(c)
		allocMem += float64(m)
	}
	var sumCPU, sumMem, sideCPU, sideMem float64
	for i, d := range deps {
		sumCPU += cpuW[i] * float64(replicas[i])
		sumMem += memW[i] * float64(replicas[i])
		if d.sidecar != nil {
			sideCPU += float64(d.sidecar.cpuMilli * int64(replicas[i]))
			sideMem += float64(d.sidecar.memBytes * int64(replicas[i]))
		}
	}
	targetCPU := 0.42 + 0.16*rng.Float64()
	targetMem := 0.42 + 0.16*rng.Float64()
	fc := math.Max(targetCPU*allocCPU-sideCPU, 0) / sumCPU
	fm := math.Max(targetMem*allocMem-sideMem, 0) / sumMem
	for i, d := range deps {
		d.cpuMilli = max(10, int64(math.Round(cpuW[i]*fc/10))*10)
		d.memBytes = max(16*mi, int64(math.Round(memW[i]*fm/mi))*mi)
	}
	return spec{deployments: deps, replicas: replicas, nodeTypes: nt}
}

func allocatable(t nodeType) (cpuMilli, memBytes int64) {
	// Roughly what kubelets reserve for the system and kube daemons.
	return t.cores*1000 - 70 - 6*t.cores, t.mem - 1*gi - t.mem/20
}

func buildCluster(o *Options, sp spec, index int, name string, now time.Time) *cluster {
	c := &cluster{index: index, name: name, unsilenced: make(chan struct{})}
	close(c.unsilenced)
	c.api = apiState{up: true, upSince: now, accumSecs: float64(3600 * (24 + index))}
	rng := rand.New(rand.NewPCG(uint64(o.Seed), xxhash.Sum64String(name)))

	for i := 0; i < o.Nodes; i++ {
		t := sp.nodeTypes[i]
		cpuA, memA := allocatable(t)
		n := &node{
			index:         i,
			name:          "node-" + strconv.Itoa(i),
			internalIP:    fmt.Sprintf("10.%d.%d.%d", index%200, 1+i/250, 10+i%250),
			podCIDR:       fmt.Sprintf("10.%d.%d.0/24", 100+(index*8+i/256)%150, i%256),
			providerID:    fmt.Sprintf("sim://%s/node-%d", name, i),
			systemUUID:    uuidOf(name, "node", strconv.Itoa(i)),
			cpuCapMilli:   t.cores * 1000,
			cpuAllocMilli: cpuA,
			memCap:        t.mem,
			memAlloc:      memA,
			storageCap:    100 * gi,
			storageAlloc:  92 * gi,
			podsCap:       110,
			ready:         true,
		}
		c.nodes = append(c.nodes, n)
	}

	// Place pods the way a scheduler spreading by requested CPU would: each on the node with
	// the lowest requested fraction that still has room.
	used := make([]int64, len(c.nodes))
	count := make([]int64, len(c.nodes))
	pick := func(cpu int64) *node {
		best := -1
		var bestFrac float64
		for i, n := range c.nodes {
			if count[i] >= n.podsCap {
				continue
			}
			f := float64(used[i]+cpu) / float64(n.cpuAllocMilli)
			if best < 0 || f < bestFrac {
				best, bestFrac = i, f
			}
		}
		if best < 0 {
			best = 0
		}
		used[best] += cpu
		count[best]++
		return c.nodes[best]
	}

	for i, tmpl := range sp.deployments {
		d := *tmpl
		d.pods = make([]*pod, sp.replicas[i])
		podCPU := d.cpuMilli
		if d.sidecar != nil {
			podCPU += d.sidecar.cpuMilli
		}
		for r := range d.pods {
			p := &pod{index: r, node: pick(podCPU)}
			p.ip = podIP(p.node)
			p.containers = []*container{{name: d.name, cpuMilli: d.cpuMilli, memBytes: d.memBytes}}
			if d.sidecar != nil {
				p.containers = append(p.containers, &container{name: d.sidecar.name, image: d.sidecar.image, cpuMilli: d.sidecar.cpuMilli, memBytes: d.sidecar.memBytes})
			}
			p.baseRestarts = make([]int64, len(p.containers))
			// Some history: a few pods restarted once or twice long ago.
			if rng.IntN(20) == 0 {
				p.baseRestarts[0] = 1 + int64(rng.IntN(3))
			}
			d.pods[r] = p
		}
		dp := &d
		c.rebuildPods(dp)
		c.deployments = append(c.deployments, dp)
	}
	return c
}

func podIP(n *node) string {
	n.podSlots++
	var a, b int
	if _, err := fmt.Sscanf(n.podCIDR, "10.%d.%d.0/24", &a, &b); err != nil {
		return ""
	}
	return fmt.Sprintf("10.%d.%d.%d", a, b, 1+n.podSlots%254)
}

// rebuildPods gives the deployment's pods the identity of its current image: a rollout
// replaces the ReplicaSet, so pod names, uids and container ids all change; going back to the
// baseline image brings back the baseline pods.
func (c *cluster) rebuildPods(d *deployment) {
	c.gen++
	rs := d.name + "-" + shortHash(10, d.namespace, d.name, d.image)
	baseline := d.image == d.baseImage
	for _, p := range d.pods {
		p.rsName = rs
		p.name = rs + "-" + shortHash(5, c.name, rs, strconv.Itoa(p.index))
		p.uid = uuidOf(c.name, d.namespace, p.name)
		for i, ct := range p.containers {
			if i == 0 {
				ct.image = d.image
			}
			ct.imageID = imageID(ct.image)
			ct.crash = nil
			ct.restarts = 0
			if baseline {
				ct.restarts = p.baseRestarts[i]
			}
			ct.containerID = containerID(p.uid, ct.name, ct.restarts)
		}
	}
}

func imageID(image string) string {
	repo := image
	for i := len(image) - 1; i >= 0; i-- {
		if image[i] == ':' {
			repo = image[:i]
			break
		}
		if image[i] == '/' {
			break
		}
	}
	sum := sha256.Sum256([]byte(image))
	return repo + "@sha256:" + hex.EncodeToString(sum[:])
}

func containerID(uid, name string, restarts int64) string {
	sum := sha256.Sum256([]byte(uid + "/" + name + "/" + strconv.FormatInt(restarts, 10)))
	return "containerd://" + hex.EncodeToString(sum[:])
}

// shortHash returns n characters of the alphabet Kubernetes uses for generated names.
func shortHash(n int, parts ...string) string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	h := xxhash.New()
	for _, p := range parts {
		_, _ = h.WriteString(p)
		_, _ = h.WriteString("\x00")
	}
	v := h.Sum64()
	b := make([]byte, n)
	for i := range b {
		if v == 0 {
			v = xxhash.Sum64(b[:i]) | 1
		}
		b[i] = alphabet[v%uint64(len(alphabet))]
		v /= uint64(len(alphabet))
	}
	return string(b)
}

func uuidOf(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	s := hex.EncodeToString(h.Sum(nil))
	return s[0:8] + "-" + s[8:12] + "-4" + s[13:16] + "-a" + s[17:20] + "-" + s[20:32]
}
