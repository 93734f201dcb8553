package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// Protocols.
const (
	protoV1 = "rw1"
	protoV2 = "rw2"

	ctV1 = "application/x-protobuf;proto=prometheus.WriteRequest"
	ctV2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
)

// label is one name/value pair; a series' labels are kept sorted by name, as Prometheus's
// remote-write sender sends them.
type label struct{ name, value string }

// seriesDef is one generated series with the function giving its value at scrape k.
type seriesDef struct {
	labels []label
	// offset is the series' fixed scrape offset inside the interval (targets are scraped at
	// different moments), in milliseconds.
	offset int64
	value  func(k int) float64
}

// request is one encoded remote-write request, ready to send as is.
type request struct {
	cluster string
	body    []byte // snappy block compressed protobuf
	samples int
}

// stream is the requests of one (cluster, shard) in the order they must be sent: a shard owns a
// fixed subset of a cluster's series (as a Prometheus remote-write queue shard does), so two
// streams never hold the same series and may be sent concurrently, while the requests of one
// stream are sent in order, which keeps every series' samples in time order.
type stream struct {
	cluster string
	reqs    []request
}

// phase is everything sent in one measured (or warm-up) step.
type phase struct {
	name     string // warmup, rw1, rw2
	proto    string
	streams  []*stream
	samples  int
	requests int
	bytes    int64
	// first and last scrape index covered.
	k0, k1 int
}

// dataset is the whole pre-generated workload.
type dataset struct {
	clusters        []string
	seriesPerClustr int
	interval        time.Duration
	t0              int64 // ms, timestamp of scrape 0 (before offsets)
	steps           int   // scrapes in total over all phases
	warmup, rw1     *phase
	rw2             *phase
	totalSamples    int
	seriesByCluster map[string][]*seriesDef
}

// tStart and tEnd bound the sample timestamps of the whole dataset (ms).
func (d *dataset) tStart() int64 { return d.t0 }
func (d *dataset) tEnd() int64 {
	return d.t0 + int64(d.steps-1)*d.interval.Milliseconds() + d.interval.Milliseconds()
}

func (d *dataset) ts(s *seriesDef, k int) int64 {
	// A scrape a few milliseconds late, deterministically, as real scrapes are.
	jitter := int64((uint64(k)*2654435761 + uint64(s.offset)) % 7)
	return d.t0 + int64(k)*d.interval.Milliseconds() + s.offset + jitter
}

var clusterNames = []string{"prod-eu-west-1", "prod-us-east-1", "prod-us-west-2", "prod-ap-south-1", "staging-eu-central-1", "prod-sa-east-1", "dev-us-east-2", "prod-ap-northeast-1"}

func clusterName(i int) string {
	n := clusterNames[i%len(clusterNames)]
	if i >= len(clusterNames) {
		n = fmt.Sprintf("%s-%d", n, i/len(clusterNames))
	}
	return n
}

// histogram buckets of http_request_duration_seconds, and the share of requests at or below each.
var (
	bucketLE  = []string{"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"}
	bucketCDF = []float64{0.02, 0.08, 0.25, 0.48, 0.70, 0.88, 0.95, 0.98, 0.994, 0.998, 0.9995, 1}
)

var namespaces = []string{"team-a-prod", "team-a-batch", "team-b-prod", "team-b-web", "payments", "checkout", "search", "monitoring", "kube-system", "ingress-nginx", "logging", "data-platform"}

var deployments = []string{"api", "worker", "frontend", "cache", "scheduler", "indexer", "gateway", "consumer", "exporter", "controller"}

// genCluster builds a kube-state-metrics / cAdvisor / application-like series set of about n
// series: per pod, cAdvisor CPU (counter) and memory (gauge), kube-state-metrics restarts
// (counter) and CPU and memory requests (gauges); classic histograms of request latency (11
// finite buckets, +Inf, _sum and _count); and `up` for the rest. Every series carries the
// cluster label (see main.go for why) and has 8 to 11 labels.
func genCluster(cluster string, ci, n int, interval time.Duration) []*seriesDef {
	rng := rand.New(rand.NewPCG(uint64(ci)+1, 0x5eed))
	pods := n * 3 / 25 // 5 series each: 60%
	groups := n / 40   // 14 series each: 35%
	ups := n - 5*pods - 14*groups
	if ups < 1 || pods < 1 || groups < 1 {
		panic(fmt.Sprintf("series per cluster %d is too small", n))
	}
	iv := interval.Milliseconds()
	nodes := max(pods/15, 3)
	var out []*seriesDef
	add := func(offset int64, f func(k int) float64, kv ...string) {
		ls := []label{{"cluster", cluster}}
		for i := 0; i < len(kv); i += 2 {
			ls = append(ls, label{kv[i], kv[i+1]})
		}
		sort.Slice(ls, func(i, j int) bool { return ls[i].name < ls[j].name })
		out = append(out, &seriesDef{labels: ls, offset: offset, value: f})
	}
	node := func(i int) string { return fmt.Sprintf("ip-10-%d-%d-%d.ec2.internal", ci, i/250, i%250+1) }
	scrapeSec := interval.Seconds()

	kubelet := rng.Int64N(iv - 10)
	ksm := rng.Int64N(iv - 10)
	for p := range pods {
		ns := namespaces[p%len(namespaces)]
		dep := deployments[(p/len(namespaces))%len(deployments)]
		pod := fmt.Sprintf("%s-%08x-%05x", dep, rng.Uint32(), rng.Uint32()&0xfffff)
		nd := node(rng.IntN(nodes))
		image := fmt.Sprintf("registry.example.com/%s/%s:v1.%d.%d", ns, dep, rng.IntN(30), rng.IntN(10))
		uid := fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", rng.Uint32(), rng.Uint32()&0xffff, rng.Uint32()&0xffff, rng.Uint32()&0xffff, rng.Uint64()&0xffffffffffff)

		cores := 0.01 + rng.Float64()*1.5
		cpu0 := rng.Float64() * 1e5
		add(kubelet, func(k int) float64 {
			return cpu0 + cores*scrapeSec*float64(k)*(1+0.05*math.Sin(float64(k)/7))
		}, "__name__", "container_cpu_usage_seconds_total", "container", dep, "image", image, "instance", nd, "job", "kubelet", "namespace", ns, "node", nd, "pod", pod)

		mem := float64(64<<20) * (1 + 30*rng.Float64())
		phase := rng.Float64() * 6
		add(kubelet, func(k int) float64 {
			return math.Round(mem * (1 + 0.1*math.Sin(float64(k)/10+phase)))
		}, "__name__", "container_memory_working_set_bytes", "container", dep, "image", image, "instance", nd, "job", "kubelet", "namespace", ns, "node", nd, "pod", pod)

		restartEvery := 0
		if rng.IntN(10) == 0 {
			restartEvery = 20 + rng.IntN(100)
		}
		add(ksm, func(k int) float64 {
			if restartEvery == 0 {
				return 0
			}
			return float64(k / restartEvery)
		}, "__name__", "kube_pod_container_status_restarts_total", "container", dep, "instance", "10.0.0.5:8080", "job", "kube-state-metrics", "namespace", ns, "pod", pod, "uid", uid)

		reqCPU := float64(1+rng.IntN(20)) / 10
		add(ksm, func(int) float64 { return reqCPU },
			"__name__", "kube_pod_container_resource_requests", "container", dep, "instance", "10.0.0.5:8080", "job", "kube-state-metrics", "namespace", ns, "node", nd, "pod", pod, "resource", "cpu", "unit", "core")
		reqMem := float64((1 + rng.IntN(16)) << 28)
		add(ksm, func(int) float64 { return reqMem },
			"__name__", "kube_pod_container_resource_requests", "container", dep, "instance", "10.0.0.5:8080", "job", "kube-state-metrics", "namespace", ns, "node", nd, "pod", pod, "resource", "memory", "unit", "byte")
	}

	handlers := []string{"/api/v1/orders", "/api/v1/users", "/api/v1/search", "/healthz", "/api/v1/cart", "/api/v1/payments", "/metrics"}
	methods := []string{"GET", "POST"}
	for g := range groups {
		svc := deployments[g%len(deployments)]
		ns := namespaces[(g/len(deployments))%len(namespaces)]
		handler := handlers[(g/3)%len(handlers)]
		method := methods[g%len(methods)]
		inst := fmt.Sprintf("10.%d.%d.%d:8080", ci, g/200, g%200+10)
		rps := 1 + rng.Float64()*100
		mean := 0.03 + rng.Float64()*0.2
		off := rng.Int64N(iv - 10)
		// total(k) is the cumulative request count at scrape k.
		total := func(k int) float64 { return math.Floor(rps * scrapeSec * float64(k+1000)) }
		base := []string{"handler", handler, "instance", inst, "job", svc, "method", method, "namespace", ns, "service", svc}
		for b, le := range bucketLE {
			cdf := bucketCDF[b]
			add(off, func(k int) float64 { return math.Floor(total(k) * cdf) },
				append([]string{"__name__", "http_request_duration_seconds_bucket", "le", le}, base...)...)
		}
		add(off, func(k int) float64 { return total(k) * mean }, append([]string{"__name__", "http_request_duration_seconds_sum"}, base...)...)
		add(off, total, append([]string{"__name__", "http_request_duration_seconds_count"}, base...)...)
	}

	jobs := []string{"kubelet", "node-exporter", "kube-state-metrics", "coredns", "api", "gateway"}
	for u := range ups {
		job := jobs[u%len(jobs)]
		add(rng.Int64N(iv-10), func(int) float64 { return 1 },
			"__name__", "up", "instance", fmt.Sprintf("10.%d.%d.%d:9100", ci, u/200, u%200+10), "job", job, "namespace", namespaces[u%len(namespaces)])
	}
	return out
}

// genDataset pre-generates every request of every phase. Scrapes [0, warmup) are the warm-up,
// then `samples` scrapes in RW 1.0 and `samples` more in RW 2.0.
func genDataset(nClusters, seriesPerCluster, warmup, samples, shards, perRequest int, interval time.Duration, now time.Time) (*dataset, error) {
	d := &dataset{
		seriesPerClustr: seriesPerCluster,
		interval:        interval,
		steps:           warmup + 2*samples,
		seriesByCluster: map[string][]*seriesDef{},
	}
	// End two intervals before now: every sample is in the past, the whole window well inside
	// one TSDB head block.
	d.t0 = now.Add(-time.Duration(d.steps+2) * interval).Truncate(interval).UnixMilli()
	for i := range nClusters {
		c := clusterName(i)
		d.clusters = append(d.clusters, c)
		d.seriesByCluster[c] = genCluster(c, i, seriesPerCluster, interval)
	}
	var err error
	if d.warmup, err = d.encodePhase("warmup", protoV1, 0, warmup, shards, perRequest); err != nil {
		return nil, err
	}
	if d.rw1, err = d.encodePhase(protoV1, protoV1, warmup, warmup+samples, shards, perRequest); err != nil {
		return nil, err
	}
	if d.rw2, err = d.encodePhase(protoV2, protoV2, warmup+samples, warmup+2*samples, shards, perRequest); err != nil {
		return nil, err
	}
	d.totalSamples = d.warmup.samples + d.rw1.samples + d.rw2.samples
	return d, nil
}

// encodePhase encodes scrapes [k0, k1) of every cluster. Within a stream, samples are in time
// order (all of scrape k before scrape k+1); each time series entry carries one sample, as
// Prometheus's remote-write queue sends them.
func (d *dataset) encodePhase(name, protocol string, k0, k1, shards, perRequest int) (*phase, error) {
	p := &phase{name: name, proto: protocol, k0: k0, k1: k1}
	for _, c := range d.clusters {
		all := d.seriesByCluster[c]
		for sh := range shards {
			st := &stream{cluster: c}
			var batch []entry
			flush := func() error {
				if len(batch) == 0 {
					return nil
				}
				body, err := encode(protocol, batch)
				if err != nil {
					return err
				}
				st.reqs = append(st.reqs, request{cluster: c, body: body, samples: len(batch)})
				p.samples += len(batch)
				p.requests++
				p.bytes += int64(len(body))
				batch = batch[:0]
				return nil
			}
			for k := k0; k < k1; k++ {
				for i := sh; i < len(all); i += shards {
					s := all[i]
					batch = append(batch, entry{s: s, t: d.ts(s, k), v: s.value(k)})
					if len(batch) == perRequest {
						if err := flush(); err != nil {
							return nil, err
						}
					}
				}
			}
			if err := flush(); err != nil {
				return nil, err
			}
			if len(st.reqs) > 0 {
				p.streams = append(p.streams, st)
			}
		}
	}
	return p, nil
}

type entry struct {
	s *seriesDef
	t int64
	v float64
}

func encode(protocol string, batch []entry) ([]byte, error) {
	var raw []byte
	var err error
	switch protocol {
	case protoV1:
		req := &prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, len(batch))}
		for i, e := range batch {
			ls := make([]prompb.Label, len(e.s.labels))
			for j, l := range e.s.labels {
				ls[j] = prompb.Label{Name: l.name, Value: l.value}
			}
			req.Timeseries[i] = prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Timestamp: e.t, Value: e.v}}}
		}
		raw, err = proto.Marshal(req)
	case protoV2:
		st := writev2.NewSymbolTable()
		req := &writev2.Request{Timeseries: make([]writev2.TimeSeries, len(batch))}
		for i, e := range batch {
			refs := make([]uint32, 0, 2*len(e.s.labels))
			for _, l := range e.s.labels {
				refs = append(refs, st.Symbolize(l.name), st.Symbolize(l.value))
			}
			req.Timeseries[i] = writev2.TimeSeries{LabelsRefs: refs, Samples: []writev2.Sample{{Value: e.v, Timestamp: e.t}}}
		}
		req.Symbols = st.Symbols()
		raw, err = proto.Marshal(req)
	default:
		return nil, fmt.Errorf("unknown protocol %q", protocol)
	}
	if err != nil {
		return nil, err
	}
	return snappy.Encode(nil, raw), nil
}

// metricNames lists the metric names of the dataset.
func (d *dataset) metricNames() []string {
	seen := map[string]bool{}
	var out []string
	for _, ss := range d.seriesByCluster {
		for _, s := range ss {
			for _, l := range s.labels {
				if l.name == "__name__" && !seen[l.value] {
					seen[l.value] = true
					out = append(out, l.value)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}
