package schedule

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// ErrBadRequest marks a request that is invalid as such (HTTP 400); its message names the field.
var ErrBadRequest = errors.New("bad request")

func badRequest(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, a...))
}

// maxReplicas bounds a request; a larger one is a typo, not a workload.
const maxReplicas = 1_000_000

// Validate checks a request against the snapshot's vocabulary (regions, tags, clusters it
// knows) and fills defaults. Errors wrap ErrBadRequest and name the field.
func (s *Snapshot) Validate(r *Request) error {
	if r.Mode == "" {
		r.Mode = ModeDivided
	}
	switch {
	case r.Replicas < 1:
		return badRequest("replicas: must be >= 1, got %d", r.Replicas)
	case r.Replicas > maxReplicas:
		return badRequest("replicas: must be <= %d, got %d", maxReplicas, r.Replicas)
	case r.CPU < 0 || !finite(float64(r.CPU)):
		return badRequest("cpu: must be a finite quantity >= 0, got %v", float64(r.CPU))
	case r.Memory < 0 || !finite(float64(r.Memory)):
		return badRequest("memory: must be a finite quantity >= 0, got %v", float64(r.Memory))
	case r.CPU == 0 && r.Memory == 0:
		return badRequest("cpu, memory: a replica must request some CPU or memory")
	case r.Mode != ModeDivided && r.Mode != ModeClusters:
		return badRequest("mode: must be %q or %q, got %q", ModeDivided, ModeClusters, r.Mode)
	case r.Clusters < 0:
		return badRequest("clusters: must be >= 0, got %d", r.Clusters)
	case r.Mode == ModeClusters && r.Clusters < 1:
		return badRequest("clusters: mode %q needs the number of clusters to pick (>= 1)", ModeClusters)
	case r.Constraints.MaxLatency < 0:
		return badRequest("constraints.max_latency: must be >= 0, got %s", time.Duration(r.Constraints.MaxLatency))
	case r.Constraints.MaxLatency > 0 && len(r.Constraints.UserRegions) == 0:
		return badRequest("constraints.max_latency: needs constraints.user_regions to measure latency to")
	}
	if err := r.Weights.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	known := func(field string, asked []string, have func(c *Cluster, v string) bool, extra []string) error {
		for _, v := range asked {
			if slices.Contains(extra, v) {
				continue
			}
			found := false
			for i := range s.Clusters {
				if have(&s.Clusters[i], v) {
					found = true
					break
				}
			}
			if !found {
				return badRequest("constraints.%s: %q is not known; known: %s", field, v, s.vocabulary(have, extra))
			}
		}
		return nil
	}
	c := &r.Constraints
	// Constraints that contradict each other or the fleet's size can never be met, whatever
	// the fleet's state: a bad request, not an unsatisfiable one.
	for _, name := range c.ExcludeClusters {
		if slices.Contains(c.Clusters, name) {
			return badRequest("constraints: cluster %q is both in clusters and in exclude_clusters", name)
		}
	}
	if r.Mode == ModeClusters {
		switch {
		case r.Clusters > len(s.Clusters):
			return badRequest("clusters: %d clusters asked for, the fleet has %d", r.Clusters, len(s.Clusters))
		case len(c.Clusters) > 0 && r.Clusters > len(c.Clusters):
			return badRequest("clusters: %d clusters asked for, constraints.clusters allows %d", r.Clusters, len(c.Clusters))
		}
	}
	if err := errors.Join(
		known("compliance", c.Compliance, func(c *Cluster, v string) bool { return slices.Contains(c.Compliance, v) }, s.ComplianceTags),
		known("regions", c.Regions, func(c *Cluster, v string) bool { return c.Region == v }, nil),
		known("providers", c.Providers, func(c *Cluster, v string) bool { return c.Provider == v }, nil),
		known("tiers", c.Tiers, func(c *Cluster, v string) bool { return c.Tier == v }, nil),
		known("clusters", c.Clusters, func(c *Cluster, v string) bool { return c.Name == v }, nil),
		known("exclude_clusters", c.ExcludeClusters, func(c *Cluster, v string) bool { return c.Name == v }, nil),
		known("user_regions", c.UserRegions, func(c *Cluster, v string) bool { _, ok := c.LatencyMs[v]; return ok }, nil),
	); err != nil {
		return err
	}
	return nil
}

// vocabulary lists the values some cluster has, for an error message.
func (s *Snapshot) vocabulary(have func(c *Cluster, v string) bool, extra []string) string {
	seen := map[string]bool{}
	for _, v := range extra {
		seen[v] = true
	}
	for i := range s.Clusters {
		c := &s.Clusters[i]
		for _, v := range append(append([]string{c.Name, c.Region, c.Provider, c.Tier}, c.Compliance...), mapKeys(c.LatencyMs)...) {
			if v != "" && have(c, v) {
				seen[v] = true
			}
		}
	}
	if len(seen) == 0 {
		return "(none)"
	}
	out := mapKeys(seen)
	slices.Sort(out)
	return strings.Join(out, ", ")
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Decide validates the request and places it on the snapshot. A valid request that cannot be
// met is a Decision with Feasible false and a reason per cluster, not an error.
func Decide(s *Snapshot, r Request) (*Decision, error) {
	if err := s.Validate(&r); err != nil {
		return nil, err
	}
	return s.decide(&r, nil, false), nil
}

// candidate is a cluster that passed the filters, with its static scores.
type candidate struct {
	idx      int // into Snapshot.Clusters
	fits     int
	capacity float64 // replicas that fit, unrounded
	cost     float64
	latency  float64 // mean ms to the user regions; NaN when unknown
	scores   Scores
	base     float64 // weighted scores without spread, divided by the weight sum
	region   string
}

// decide places a validated request. failed names clusters that are down in a what-if;
// partial places as many replicas as fit (up to r.Replicas) instead of none when not all fit.
func (s *Snapshot) decide(r *Request, failed map[string]bool, partial bool) *Decision {
	d := &Decision{Workload: r.Workload, Mode: r.Mode, Replicas: r.Replicas, SnapshotAt: s.At, Ceiling: s.Ceiling}
	results := make([]ClusterResult, len(s.Clusters))
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	cands := sc.cands[:0]
	need := 1
	if r.Mode == ModeClusters {
		need = r.Replicas
	}
	ctx := &decisionCtx{snap: s, failed: failed, need: need,
		ref: &reasonRef{ceiling: s.Ceiling, cpu: float64(r.CPU), memory: float64(r.Memory), constraints: &r.Constraints}}
	cpu, mem := float64(r.CPU), float64(r.Memory)
	for i := range s.Clusters {
		c := &s.Clusters[i]
		res := &results[i]
		res.Cluster, res.idx, res.ctx = c.Name, int32(i), ctx
		res.FreeCPU, res.FreeMemory = s.FreeCPU(c), s.FreeMemory(c)
		capacity := replicasFitting(res.FreeCPU, res.FreeMemory, cpu, mem)
		if s.aboveCeiling(c) {
			// Already past the ceiling in one resource: no replica, not even one that asks
			// nothing of it (every pod uses some of both).
			capacity = 0
		}
		res.Fits = int(math.Min(capacity, maxReplicas))
		if res.filtered = s.filter(nil, ctx.ref, c, failed, res.Fits, need); res.filtered {
			continue
		}
		cands = append(cands, candidate{idx: i, fits: res.Fits, capacity: capacity, cost: c.CostPerCPUHour, latency: meanLatency(c, r.Constraints.UserRegions), region: c.Region})
	}
	s.score(cands, r)
	order := orderBySpread(cands, r.Weights)
	for rank, ci := range order {
		cd := &cands[ci]
		res := &results[cd.idx]
		res.Rank, res.Scores = rank+1, cd.scores
	}

	switch r.Mode {
	case ModeClusters:
		if len(order) < r.Clusters {
			d.Reason = fmt.Sprintf("no %d clusters fit: %d cluster(s) can take all %d replicas within the %s ceiling and pass every constraint", r.Clusters, len(order), r.Replicas, pct(s.Ceiling))
			break
		}
		for _, ci := range order[:r.Clusters] {
			results[cands[ci].idx].Replicas = r.Replicas
		}
		d.Feasible = true
	default:
		use := order
		if r.Clusters > 0 && len(use) > r.Clusters {
			use = use[:r.Clusters]
		}
		total := 0
		for _, ci := range use {
			total += cands[ci].fits
		}
		n := r.Replicas
		if partial && total < n && total > 0 {
			n = total
			d.Reason = fmt.Sprintf("only %d of %d replicas fit within the %s ceiling on the %d cluster(s) that pass every constraint", total, r.Replicas, pct(s.Ceiling), len(use))
		} else if total < r.Replicas {
			if len(order) == 0 {
				d.Reason = "no cluster fits: every cluster fails a constraint (see clusters[].filtered)"
			} else {
				d.Reason = fmt.Sprintf("only %d of %d replicas fit within the %s ceiling on the %d cluster(s) that pass every constraint", total, r.Replicas, pct(s.Ceiling), len(use))
			}
			break
		}
		weights := make([]float64, len(use))
		caps := make([]int, len(use))
		for k, ci := range use {
			weights[k], caps[k] = cands[ci].scores.Total, cands[ci].fits
		}
		for k, got := range divide(n, weights, caps) {
			results[cands[use[k]].idx].Replicas = got
		}
		d.Feasible = true
	}
	if len(order) == 0 && d.Reason == "" {
		d.Reason = "no cluster fits: every cluster fails a constraint (see clusters[].filtered)"
	}

	// Candidates first in rank order, then the filtered ones by name: moved in place.
	dest := slices.Grow(sc.dest[:0], len(results))[:len(results)]
	pos := int32(0)
	for _, ci := range order {
		dest[cands[ci].idx] = pos
		pos++
	}
	for i := range results {
		if results[i].filtered {
			dest[i] = pos
			pos++
		}
	}
	permute(results, dest)
	d.Clusters = results
	sc.cands, sc.dest = cands[:0], dest[:0]
	for i := range d.Clusters {
		res := &d.Clusters[i]
		switch {
		case res.filtered:
		case !d.Feasible:
			res.note = noteInfeasible
		case res.Replicas > 0:
			res.note = noteGets
		case r.Mode == ModeClusters || (r.Clusters > 0 && res.Rank > r.Clusters):
			res.note = noteNotPicked
		default:
			res.note = noteRoundedToZero
		}
		if res.Replicas > 0 && d.Feasible {
			d.Placements = append(d.Placements, Placement{Cluster: res.Cluster, Replicas: res.Replicas, Score: res.Scores.Total})
		}
	}
	if !d.Feasible {
		for i := range d.Clusters {
			d.Clusters[i].Replicas = 0
		}
	}
	if d.Placements == nil {
		d.Placements = []Placement{}
	}
	return d
}

// decisionCtx is what a filtered cluster's reasons are worked out from when they are shown.
type decisionCtx struct {
	snap   *Snapshot
	ref    *reasonRef
	failed map[string]bool
	need   int
}

// Filtered lists every hard constraint the cluster fails; nil when it is a candidate.
func (res ClusterResult) Filtered() Reasons {
	if !res.filtered || res.ctx == nil {
		return nil
	}
	var out Reasons
	s := res.ctx.snap
	s.filter(&out, res.ctx.ref, &s.Clusters[res.idx], res.ctx.failed, res.Fits, res.ctx.need)
	return out
}

// scratch is a decision's working memory that does not outlive it.
type scratch struct {
	cands []candidate
	dest  []int32
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// permute moves xs[i] to xs[dest[i]] for every i, following the permutation's cycles so each
// element moves once; dest is left as the identity.
func permute[T any](xs []T, dest []int32) {
	for i := range xs {
		for dest[i] != int32(i) {
			j := dest[i]
			xs[i], xs[j] = xs[j], xs[i]
			dest[i], dest[j] = dest[j], j
		}
	}
}

// aboveCeiling reports whether c's requests are past the ceiling in CPU or memory.
func (s *Snapshot) aboveCeiling(c *Cluster) bool {
	return c.RequestedCPU > c.AllocatableCPU*s.Ceiling || c.RequestedMemory > c.AllocatableMemory*s.Ceiling
}

// replicasFitting is how many replicas of (cpu, mem) fit in the free capacity, unrounded.
func replicasFitting(freeCPU, freeMem, cpu, mem float64) float64 {
	n := math.Inf(1)
	if cpu > 0 {
		n = math.Min(n, freeCPU/cpu)
	}
	if mem > 0 {
		n = math.Min(n, freeMem/mem)
	}
	// A replica that fills the headroom exactly fits, despite float rounding.
	return math.Floor(n + 1e-9)
}

// filter reports whether the cluster fails a hard constraint. With out nil it stops at the
// first (deciding needs no more); otherwise it appends every one to out, in words when shown.
func (s *Snapshot) filter(out *Reasons, ref *reasonRef, c *Cluster, failed map[string]bool, fits, need int) bool {
	k := ref.constraints
	bad := false
	// fail records a reason; true means "stop, the answer is known".
	fail := func(r Reason) bool {
		bad = true
		if out == nil {
			return true
		}
		*out = append(*out, r)
		return false
	}
	if failed[c.Name] && fail(Reason{kind: reasonFailed}) {
		return true
	}
	if slices.Contains(k.ExcludeClusters, c.Name) && fail(Reason{kind: reasonExcluded}) {
		return true
	}
	if len(k.Clusters) > 0 && !slices.Contains(k.Clusters, c.Name) && fail(Reason{kind: reasonNotListed}) {
		return true
	}
	switch {
	case c.LastIngest.IsZero():
		if fail(Reason{kind: reasonNeverIngested}) {
			return true
		}
	case s.At.Sub(c.LastIngest) > s.StaleAfter:
		if fail(Reason{kind: reasonStale, f1: float64(s.At.Sub(c.LastIngest)), f2: float64(s.StaleAfter)}) {
			return true
		}
	}
	if !c.HasCapacity && fail(Reason{kind: reasonNoCapacity}) {
		return true
	}
	if c.ReadyRatio >= 0 && c.ReadyRatio < s.MinReadyRatio && fail(Reason{kind: reasonNotReady, f1: c.ReadyRatio, f2: s.MinReadyRatio}) {
		return true
	}
	for i := range c.Incidents {
		if inc := &c.Incidents[i]; inc.Severity == "critical" && inc.ClusterHealth() && fail(Reason{kind: reasonIncident, inc: inc}) {
			return true
		}
	}
	for _, tag := range k.Compliance {
		if !slices.Contains(c.Compliance, tag) && fail(Reason{kind: reasonCompliance, s: tag}) {
			return true
		}
	}
	if len(k.Regions) > 0 && !slices.Contains(k.Regions, c.Region) && fail(Reason{kind: reasonNotAllowed, n1: 0, s: c.Region, ref: ref}) {
		return true
	}
	if len(k.Providers) > 0 && !slices.Contains(k.Providers, c.Provider) && fail(Reason{kind: reasonNotAllowed, n1: 1, s: c.Provider, ref: ref}) {
		return true
	}
	if len(k.Tiers) > 0 && !slices.Contains(k.Tiers, c.Tier) && fail(Reason{kind: reasonNotAllowed, n1: 2, s: c.Tier, ref: ref}) {
		return true
	}
	if k.MaxLatency > 0 {
		maxMs := float64(time.Duration(k.MaxLatency)) / float64(time.Millisecond)
		for _, ur := range k.UserRegions {
			ms, ok := c.LatencyMs[ur]
			switch {
			case !ok:
				if fail(Reason{kind: reasonLatencyUnknown, s: ur}) {
					return true
				}
			case ms > maxMs:
				if fail(Reason{kind: reasonLatencyAbove, s: ur, f1: ms, f2: float64(k.MaxLatency)}) {
					return true
				}
			}
		}
	}
	if c.HasCapacity && fits < need && fail(Reason{kind: reasonCapacity, n1: int32(fits), n2: int32(need), f1: s.FreeCPU(c), f2: s.FreeMemory(c), ref: ref}) {
		return true
	}
	return bad
}

func meanLatency(c *Cluster, regions []string) float64 {
	if len(regions) == 0 {
		return 0
	}
	sum := 0.0
	for _, ur := range regions {
		ms, ok := c.LatencyMs[ur]
		if !ok {
			return math.NaN()
		}
		sum += ms
	}
	return sum / float64(len(regions))
}

// score sets each candidate's static scores. Cost and latency are normalized over the
// candidates (best 100, worst 0, all equal 100), free capacity against the candidate that fits
// the most replicas, saturation against the ceiling.
func (s *Snapshot) score(cands []candidate, r *Request) {
	if len(cands) == 0 {
		return
	}
	minCost, maxCost := math.Inf(1), math.Inf(-1)
	minLat, maxLat := math.Inf(1), math.Inf(-1)
	maxCap := 0.0
	for _, cd := range cands {
		minCost, maxCost = math.Min(minCost, cd.cost), math.Max(maxCost, cd.cost)
		if !math.IsNaN(cd.latency) {
			minLat, maxLat = math.Min(minLat, cd.latency), math.Max(maxLat, cd.latency)
		}
		maxCap = math.Max(maxCap, math.Min(cd.capacity, maxReplicas))
	}
	w := r.Weights
	for i := range cands {
		cd := &cands[i]
		c := &s.Clusters[cd.idx]
		sc := &cd.scores
		if maxCap > 0 {
			sc.FreeCapacity = 100 * math.Min(cd.capacity, maxReplicas) / maxCap
		}
		sc.Cost = normalize(cd.cost, minCost, maxCost)
		switch {
		case math.IsNaN(cd.latency):
			sc.Latency = 0
		default:
			sc.Latency = normalize(cd.latency, minLat, maxLat)
		}
		sat := math.Max(c.CPUSaturation(), c.MemorySaturation())
		sc.Saturation = 100 * math.Max(0, math.Min(1, 1-sat/s.Ceiling))
		cd.base = (w.FreeCapacity*sc.FreeCapacity + w.Cost*sc.Cost + w.Latency*sc.Latency + w.Saturation*sc.Saturation) / w.Sum()
	}
}

// normalize maps v in [lo, hi] to 100 (lo) .. 0 (hi); 100 when all are equal.
func normalize(v, lo, hi float64) float64 {
	if hi <= lo {
		return 100
	}
	return 100 * (hi - v) / (hi - lo)
}

// orderBySpread ranks the candidates greedily: each step takes the candidate with the highest
// total, where the spread score of a cluster is 100 / (1 + clusters already ranked in its
// region). Within a region the order is by base score, so only each region's best remaining
// candidate competes: O(n log n + n x regions). Ties go to the cluster name, so the order is
// deterministic. It sets scores.Spread and scores.Total and returns indexes into cands.
func orderBySpread(cands []candidate, w config.Weights) []int {
	byRegion := map[string][]int{}
	var regions []string
	for i := range cands {
		rg := cands[i].region
		if _, ok := byRegion[rg]; !ok {
			regions = append(regions, rg)
		}
		byRegion[rg] = append(byRegion[rg], i)
	}
	slices.Sort(regions)
	queues := make([][]int, len(regions))
	for k, rg := range regions {
		q := byRegion[rg]
		slices.SortFunc(q, func(a, b int) int {
			if c := cmp.Compare(cands[b].base, cands[a].base); c != 0 {
				return c
			}
			return cmp.Compare(cands[a].idx, cands[b].idx) // clusters are sorted by name
		})
		queues[k] = q
	}
	picked := make([]int, len(regions))
	order := make([]int, 0, len(cands))
	ws := w.Spread / w.Sum()
	for len(order) < len(cands) {
		best, bestTotal := -1, math.Inf(-1)
		for k, q := range queues {
			if len(q) == 0 {
				continue
			}
			cd := &cands[q[0]]
			total := cd.base + ws*100/float64(1+picked[k])
			if best < 0 || total > bestTotal || (total == bestTotal && cd.idx < cands[queues[best][0]].idx) {
				best, bestTotal = k, total
			}
		}
		ci := queues[best][0]
		queues[best] = queues[best][1:]
		cands[ci].scores.Spread = 100 / float64(1+picked[best])
		cands[ci].scores.Total = bestTotal
		picked[best]++
		order = append(order, ci)
	}
	return order
}

// divide splits n replicas in proportion to weights, no slot above its cap (sum(caps) >= n).
// Largest remainders go first; what a capped slot cannot take is divided again among the
// others. Weights <= 0 count as a tiny positive weight, so every slot can take replicas.
func divide(n int, weights []float64, caps []int) []int {
	out := make([]int, len(weights))
	open := make([]int, 0, len(weights))
	for i := range weights {
		if caps[i] > 0 {
			open = append(open, i)
		}
	}
	for n > 0 && len(open) > 0 {
		sum := 0.0
		for _, i := range open {
			sum += math.Max(weights[i], 1e-9)
		}
		type rem struct {
			i    int
			frac float64
		}
		rems := make([]rem, 0, len(open))
		given := 0
		for _, i := range open {
			share := float64(n) * math.Max(weights[i], 1e-9) / sum
			k := min(int(math.Floor(share)), caps[i]-out[i])
			out[i] += k
			given += k
			rems = append(rems, rem{i, share - math.Floor(share)})
		}
		left := n - given
		// Largest remainder first, then rank order (open is in rank order).
		slices.SortStableFunc(rems, func(a, b rem) int { return cmp.Compare(b.frac, a.frac) })
		for _, rm := range rems {
			if left == 0 {
				break
			}
			if out[rm.i] < caps[rm.i] {
				out[rm.i]++
				left--
			}
		}
		n = left
		open = slices.DeleteFunc(open, func(i int) bool { return out[i] >= caps[i] })
	}
	return out
}

// Why says in words why the cluster got its replicas or none.
func (res ClusterResult) Why() string {
	if res.filtered {
		return "filtered: " + res.Filtered().String()
	}
	return string(res.appendWhy(make([]byte, 0, 160)))
}

// appendWhy appends a candidate's explanation (digits and fixed words: nothing a JSON string
// needs escaped).
func (res *ClusterResult) appendWhy(b []byte) []byte {
	sc := res.Scores
	b = append(b, "rank "...)
	b = strconv.AppendInt(b, int64(res.Rank), 10)
	b = append(b, ", score "...)
	b = strconv.AppendFloat(b, sc.Total, 'f', 1, 64)
	b = append(b, " (free capacity "...)
	b = strconv.AppendFloat(b, sc.FreeCapacity, 'f', 0, 64)
	b = append(b, ", cost "...)
	b = strconv.AppendFloat(b, sc.Cost, 'f', 0, 64)
	b = append(b, ", latency "...)
	b = strconv.AppendFloat(b, sc.Latency, 'f', 0, 64)
	b = append(b, ", saturation "...)
	b = strconv.AppendFloat(b, sc.Saturation, 'f', 0, 64)
	b = append(b, ", spread "...)
	b = strconv.AppendFloat(b, sc.Spread, 'f', 0, 64)
	b = append(b, "); fits "...)
	b = strconv.AppendInt(b, int64(res.Fits), 10)
	switch res.note {
	case noteInfeasible:
		b = append(b, "; nothing placed: the request cannot be met"...)
	case noteGets:
		b = append(b, "; gets "...)
		b = strconv.AppendInt(b, int64(res.Replicas), 10)
	case noteNotPicked:
		b = append(b, "; not picked: higher-ranked clusters were enough"...)
	case noteRoundedToZero:
		b = append(b, "; gets none: its share of the replicas rounded to 0"...)
	}
	return b
}

func pct(v float64) string { return strconv.FormatFloat(math.Round(1000*v)/10, 'f', -1, 64) + "%" }

func cores(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

func bytesIEC(v float64) string {
	switch {
	case v >= 1<<30:
		return strconv.FormatFloat(v/(1<<30), 'f', 2, 64) + " GiB"
	case v >= 1<<20:
		return strconv.FormatFloat(v/(1<<20), 'f', 1, 64) + " MiB"
	default:
		return strconv.FormatFloat(v, 'f', 0, 64) + " B"
	}
}
