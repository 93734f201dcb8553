package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Sim. Zero values get defaults.
type Options struct {
	// Clusters are the cluster names, e.g. eu-1, eu-2, us-1. Default: DefaultClusterNames(3).
	Clusters []string
	// Nodes per cluster. Default 50.
	Nodes int
	// PodsPerNode is the average number of pods per node. Default 30, at most 110.
	PodsPerNode int
	// Seed makes the fleet deterministic: the same seed gives the same names, images and requests.
	Seed int64
	// Now is the clock for scenario timing, restart counters and ramps. Default time.Now.
	Now func() time.Time
	// Logger defaults to discarding.
	Logger *slog.Logger
}

const (
	defaultClusters    = 3
	defaultNodes       = 50
	defaultPodsPerNode = 30
	maxNodes           = 5000
	maxPodsPerNode     = 110
	tickInterval       = time.Second
)

var clusterNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Errors callers branch on; the HTTP API maps them to status codes.
var (
	ErrUnknownCluster   = errors.New("unknown cluster")
	ErrUnknownScenario  = errors.New("unknown scenario")
	ErrScenarioRunning  = errors.New("scenario is running")
	ErrScenarioFinished = errors.New("scenario has no more steps")
)

// DefaultClusterNames returns n names: eu-1, eu-2, us-1, us-2, ap-1, ap-2, eu-3, eu-4, ...
func DefaultClusterNames(n int) []string {
	regions := []string{"eu", "us", "ap"}
	names := make([]string, 0, max(n, 0))
	for i := 0; i < n; i++ {
		round, j := i/(2*len(regions)), i%(2*len(regions))
		names = append(names, regions[j/2]+"-"+strconv.Itoa(round*2+j%2+1))
	}
	return names
}

func (o *Options) validate() error {
	if o.Clusters == nil {
		o.Clusters = DefaultClusterNames(defaultClusters)
	}
	if len(o.Clusters) == 0 {
		return errors.New("options: Clusters is empty")
	}
	seen := map[string]bool{}
	for i, c := range o.Clusters {
		if !clusterNameRE.MatchString(c) {
			return fmt.Errorf("options: Clusters[%d]: invalid cluster name %q (lower-case letters, digits and '-')", i, c)
		}
		if seen[c] {
			return fmt.Errorf("options: Clusters[%d]: duplicate cluster name %q", i, c)
		}
		seen[c] = true
	}
	switch {
	case o.Nodes == 0:
		o.Nodes = defaultNodes
	case o.Nodes < 0 || o.Nodes > maxNodes:
		return fmt.Errorf("options: Nodes must be between 1 and %d, got %d", maxNodes, o.Nodes)
	}
	switch {
	case o.PodsPerNode == 0:
		o.PodsPerNode = defaultPodsPerNode
	case o.PodsPerNode < 0 || o.PodsPerNode > maxPodsPerNode:
		return fmt.Errorf("options: PodsPerNode must be between 1 and %d, got %d", maxPodsPerNode, o.PodsPerNode)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Sim is the fleet lab. All methods are safe for concurrent use.
type Sim struct {
	opts   Options
	logger *slog.Logger
	now    func() time.Time

	// mu guards the model (clusters' content) and the scenario runs.
	mu       sync.RWMutex
	clusters []*cluster
	byName   map[string]*cluster
	runs     map[string]*run
	order    []string // scenario names in the order they were added
	// actuator, when set, carries steps out on real clusters (see Actuator).
	actuator Actuator

	// Set in New and never changed: safe to read without mu.
	endpoints map[string]*clusterEndpoints
	mux       *http.ServeMux

	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

type clusterEndpoints struct {
	ksm, apiserver http.Handler
}

// New builds the fleet, loads the bundled scenarios and starts the scenario ticker.
func New(o Options) (*Sim, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	s := &Sim{
		opts:      o,
		logger:    o.Logger.With("component", "sim"),
		now:       o.Now,
		byName:    map[string]*cluster{},
		runs:      map[string]*run{},
		endpoints: map[string]*clusterEndpoints{},
		closed:    make(chan struct{}),
	}
	now := s.now()
	sp := newSpec(&s.opts)
	for i, name := range o.Clusters {
		c := buildCluster(&s.opts, sp, i, name, now)
		s.clusters = append(s.clusters, c)
		s.byName[name] = c

		reg := prometheus.NewRegistry()
		if err := reg.Register(&ksmCollector{s: s, c: c}); err != nil {
			return nil, fmt.Errorf("register collector of cluster %s: %w", name, err)
		}
		apiReg := prometheus.NewRegistry()
		if err := apiReg.Register(&apiserverCollector{s: s, c: c}); err != nil {
			return nil, fmt.Errorf("register apiserver collector of cluster %s: %w", name, err)
		}
		s.endpoints[name] = &clusterEndpoints{
			ksm:       &cachingHandler{s: s, c: c, next: metricsHandler(reg)},
			apiserver: metricsHandler(apiReg),
		}
	}
	bundled, err := BundledScenarios()
	if err != nil {
		return nil, err
	}
	for _, sc := range bundled {
		s.addScenario(sc, "bundled")
	}
	s.mux = s.routes()

	s.wg.Add(1)
	go s.tickLoop()
	s.logger.Info("Fleet lab ready", "clusters", len(s.clusters), "nodes_per_cluster", o.Nodes, "pods_per_node", o.PodsPerNode, "seed", o.Seed)
	return s, nil
}

// Close stops the scenario ticker and releases scrapes held by silent clusters. It does not
// change the model.
func (s *Sim) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
	s.wg.Wait()
}

func (s *Sim) tickLoop() {
	defer s.wg.Done()
	t := time.NewTicker(tickInterval)
	defer t.Stop()
	for {
		select {
		case <-s.closed:
			return
		case <-t.C:
			s.Tick()
		}
	}
}

// Clusters returns the cluster names in order.
func (s *Sim) Clusters() []string {
	return append([]string(nil), s.opts.Clusters...)
}

// ClusterTruth is what a correct query over a cluster's metrics must find.
type ClusterTruth struct {
	Name               string `json:"name"`
	Nodes              int    `json:"nodes"`
	ReadyNodes         int    `json:"ready_nodes"`
	UnschedulableNodes int    `json:"unschedulable_nodes"`
	Pods               int    `json:"pods"`
	CrashLoopPods      int    `json:"crashloop_pods"`
	// CPURequestRatio and MemoryRequestRatio are sum(requests) / sum(allocatable), over all
	// pods and all nodes, as kube_pod_container_resource_requests and
	// kube_node_status_allocatable give them.
	CPURequestRatio    float64 `json:"cpu_request_ratio"`
	MemoryRequestRatio float64 `json:"memory_request_ratio"`
	// The sums behind the ratios: allocatable and requested CPU (cores) and memory (bytes).
	AllocatableCPUCores    float64 `json:"allocatable_cpu_cores"`
	RequestedCPUCores      float64 `json:"requested_cpu_cores"`
	AllocatableMemoryBytes float64 `json:"allocatable_memory_bytes"`
	RequestedMemoryBytes   float64 `json:"requested_memory_bytes"`
	ControlPlaneUp         bool    `json:"control_plane_up"`
	Silent                 bool    `json:"silent"`
	// Images maps "namespace/deployment" to the distinct images its main containers run.
	Images map[string][]string `json:"images"`
}

// SetResources sets the sums of allocatable and requested CPU (millicores) and memory (bytes),
// and the ratios behind them.
func (t *ClusterTruth) SetResources(allocCPUMilli, reqCPUMilli, allocMemBytes, reqMemBytes int64) {
	t.AllocatableCPUCores, t.RequestedCPUCores = float64(allocCPUMilli)/1000, float64(reqCPUMilli)/1000
	t.AllocatableMemoryBytes, t.RequestedMemoryBytes = float64(allocMemBytes), float64(reqMemBytes)
	if allocCPUMilli > 0 {
		t.CPURequestRatio = float64(reqCPUMilli) / float64(allocCPUMilli)
	}
	if allocMemBytes > 0 {
		t.MemoryRequestRatio = float64(reqMemBytes) / float64(allocMemBytes)
	}
}

// Truth returns the current truth of every cluster, in cluster order.
func (s *Sim) Truth() []ClusterTruth {
	s.mu.RLock()
	a := s.actuator
	if a != nil {
		// The actuator reads its clusters' objects; it must not wait for a step in progress.
		s.mu.RUnlock()
		out := make([]ClusterTruth, 0, len(s.opts.Clusters))
		for _, name := range s.opts.Clusters {
			t, err := a.Truth(name)
			if err != nil {
				s.logger.Warn("Truth of a cluster", "cluster", name, "err", err)
				t = ClusterTruth{Name: name}
			}
			out = append(out, t)
		}
		return out
	}
	defer s.mu.RUnlock()
	now := s.now()
	out := make([]ClusterTruth, 0, len(s.clusters))
	for _, c := range s.clusters {
		out = append(out, c.truth(now))
	}
	return out
}

func (c *cluster) truth(now time.Time) ClusterTruth {
	t := ClusterTruth{
		Name: c.name, Nodes: len(c.nodes), ControlPlaneUp: c.api.up, Silent: c.silent,
		Images: map[string][]string{},
	}
	var allocCPU, allocMem, reqCPU, reqMem int64
	for _, n := range c.nodes {
		if n.ready {
			t.ReadyNodes++
		}
		if n.unschedulable {
			t.UnschedulableNodes++
		}
		allocCPU += n.cpuAllocMilli
		allocMem += n.memAlloc
	}
	for _, d := range c.deployments {
		seen := map[string]bool{}
		for _, p := range d.visiblePods(now) {
			t.Pods++
			if p.crashing() {
				t.CrashLoopPods++
			}
			for _, ct := range p.containers {
				reqCPU += ct.cpuMilli
				reqMem += ct.memBytes
			}
			if img := p.containers[0].image; !seen[img] {
				seen[img] = true
				t.Images[d.key()] = append(t.Images[d.key()], img)
			}
		}
		sort.Strings(t.Images[d.key()])
	}
	t.SetResources(allocCPU, reqCPU, allocMem, reqMem)
	return t
}

// Recover brings one cluster ("" for all) back to its baseline.
func (s *Sim) Recover(clusterName string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs, err := s.resolve(clusterName, nil, true)
	if err != nil {
		return err
	}
	now := s.now()
	for _, c := range cs {
		if s.actuator != nil {
			if err := s.actuate(c.name, Step{Action: ActionRecover}, now); err != nil {
				return err
			}
			continue
		}
		c.recover(now)
	}
	return nil
}

// actuate carries one step out on one cluster through the actuator.
func (s *Sim) actuate(cluster string, st Step, now time.Time) error {
	ctx, cancel := context.WithTimeout(context.Background(), actuatorTimeout)
	defer cancel()
	if err := s.actuator.Apply(ctx, cluster, st, now); err != nil {
		return fmt.Errorf("cluster %s: %w", cluster, err)
	}
	return nil
}

// Apply validates one step and applies it now, outside any scenario. Its After is ignored.
func (s *Sim) Apply(st Step) error {
	if err := st.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkStep(0, &st); err != nil {
		return err
	}
	_, err := s.applyStep(&st)
	return err
}

// resolve returns the clusters a step names; all of them when allIfEmpty and none is named.
func (s *Sim) resolve(one string, many []string, allIfEmpty bool) ([]*cluster, error) {
	names := many
	if one != "" {
		names = []string{one}
	}
	if len(names) == 0 && allIfEmpty {
		return s.clusters, nil
	}
	out := make([]*cluster, 0, len(names))
	for _, n := range names {
		c, ok := s.byName[n]
		if !ok {
			return nil, fmt.Errorf("%w %q", ErrUnknownCluster, n)
		}
		out = append(out, c)
	}
	return out, nil
}
