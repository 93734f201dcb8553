package sim

import (
	"math"
	"time"
)

// The actions below mutate one cluster's model. Callers hold Sim.mu for writing.

// defaultRestartsPerMinute is about what a kubelet's back-off allows early in a crash loop.
const defaultRestartsPerMinute = 6

// nodesNotReady makes count Ready nodes NotReady. With crash, the main container of every
// pod on them goes into CrashLoopBackOff too (a node losing its network or storage takes its
// pods down with it), restarting perMinute times a minute.
func (c *cluster) nodesNotReady(count int, crash bool, perMinute float64, now time.Time) {
	c.gen++
	if perMinute <= 0 {
		perMinute = defaultRestartsPerMinute
	}
	hit := map[*node]bool{}
	for _, n := range c.nodes {
		if count <= 0 {
			break
		}
		if n.ready {
			n.ready = false
			hit[n] = true
			count--
		}
	}
	if !crash {
		return
	}
	for _, d := range c.deployments {
		for _, p := range d.pods {
			if ct := p.containers[0]; hit[p.node] && ct.crash == nil {
				ct.crash = &crashLoop{since: now, perMinute: perMinute}
			}
		}
	}
}

func (c *cluster) cordon(count int) {
	c.gen++
	for _, n := range c.nodes {
		if count <= 0 {
			return
		}
		if !n.unschedulable {
			n.unschedulable = true
			count--
		}
	}
}

// crashloop puts the main container of every pod of d into CrashLoopBackOff; its restart
// counter then grows by perMinute. The pod phase stays Running, as in a real cluster.
func (c *cluster) crashloop(d *deployment, perMinute float64, now time.Time) {
	c.gen++
	if perMinute <= 0 {
		perMinute = defaultRestartsPerMinute
	}
	for _, p := range d.pods {
		ct := p.containers[0]
		if ct.crash == nil {
			ct.crash = &crashLoop{since: now, perMinute: perMinute}
		}
	}
}

// setImage rolls d out to image: new ReplicaSet, new pods.
func (c *cluster) setImage(d *deployment, image string) {
	if d.image == image {
		return
	}
	d.image = image
	c.rebuildPods(d)
}

// saturate adds a load deployment whose pods' requests bring the cluster-wide
// sum(requests)/sum(allocatable) to the targets (0 = leave that resource alone). The pods
// appear progressively over the ramp, spread over nodes by free capacity so that no node is
// asked for more than it has.
func (c *cluster) saturate(cpuTarget, memTarget float64, over time.Duration, now time.Time) {
	c.gen++
	c.removeLoad()
	usedCPU := make([]int64, len(c.nodes))
	usedMem := make([]int64, len(c.nodes))
	idx := make(map[*node]int, len(c.nodes))
	for i, n := range c.nodes {
		idx[n] = i
	}
	for _, d := range c.deployments {
		for _, p := range d.pods {
			for _, ct := range p.containers {
				usedCPU[idx[p.node]] += ct.cpuMilli
				usedMem[idx[p.node]] += ct.memBytes
			}
		}
	}
	var allocCPU, allocMem, sumCPU, sumMem, freeCPU, freeMem float64
	for i, n := range c.nodes {
		allocCPU += float64(n.cpuAllocMilli)
		allocMem += float64(n.memAlloc)
		sumCPU += float64(usedCPU[i])
		sumMem += float64(usedMem[i])
		freeCPU += math.Max(float64(n.cpuAllocMilli-usedCPU[i]), 0)
		freeMem += math.Max(float64(n.memAlloc-usedMem[i]), 0)
	}
	needCPU, needMem := 0.0, 0.0
	if cpuTarget > 0 {
		needCPU = math.Max(cpuTarget*allocCPU-sumCPU, 0)
	}
	if memTarget > 0 {
		needMem = math.Max(memTarget*allocMem-sumMem, 0)
	}
	if needCPU == 0 && needMem == 0 {
		return
	}
	share := func(need, free, total float64, nodeFree, nodeAlloc int64) float64 {
		if free > 0 {
			return need * math.Max(float64(nodeFree), 0) / free
		}
		return need * float64(nodeAlloc) / total
	}
	d := &deployment{
		namespace: loadNamespace, name: loadDeployment, baseImage: loadImage, image: loadImage,
		ramp: true, rampStart: now, rampOver: over,
	}
	for r := 0; r < loadPodsPerNode; r++ {
		for i, n := range c.nodes {
			// Round up so the target is reached, never missed by rounding.
			cpu := int64(math.Ceil(share(needCPU, freeCPU, allocCPU, n.cpuAllocMilli-usedCPU[i], n.cpuAllocMilli) / loadPodsPerNode))
			mem := int64(math.Ceil(share(needMem, freeMem, allocMem, n.memAlloc-usedMem[i], n.memAlloc)/loadPodsPerNode/mi)) * mi
			p := &pod{index: len(d.pods), node: n, ip: podIP(n), baseRestarts: []int64{0}}
			p.containers = []*container{{name: "load", cpuMilli: cpu, memBytes: mem}}
			d.pods = append(d.pods, p)
		}
	}
	c.rebuildPods(d)
	c.deployments = append(c.deployments, d)
}

func (c *cluster) removeLoad() {
	c.gen++
	out := c.deployments[:0]
	for _, d := range c.deployments {
		if !d.ramp {
			out = append(out, d)
		}
	}
	clear(c.deployments[len(out):])
	c.deployments = out
}

func (c *cluster) silence() {
	if !c.silent {
		c.silent = true
		c.unsilenced = make(chan struct{})
	}
}

func (c *cluster) unsilence() {
	if c.silent {
		c.silent = false
		close(c.unsilenced)
	}
}

func (c *cluster) controlPlaneDown(now time.Time) {
	if c.api.up {
		c.api.accumSecs = c.api.uptime(now)
		c.api.up = false
	}
}

func (c *cluster) controlPlaneUp(now time.Time) {
	if !c.api.up {
		c.api.up = true
		c.api.upSince = now
	}
}

// recover brings the cluster back to its baseline. Counters stay monotonic: containers that
// were crash-looping keep the restarts they accumulated.
func (c *cluster) recover(now time.Time) {
	c.gen++
	for _, n := range c.nodes {
		n.ready = true
		n.unschedulable = false
	}
	c.removeLoad()
	for _, d := range c.deployments {
		if d.image != d.baseImage {
			c.setImage(d, d.baseImage)
			continue
		}
		for _, p := range d.pods {
			for _, ct := range p.containers {
				if ct.crash != nil {
					ct.restarts = ct.restartCount(now)
					ct.crash = nil
					ct.containerID = containerID(p.uid, ct.name, ct.restarts)
				}
			}
		}
	}
	c.unsilence()
	c.controlPlaneUp(now)
}
