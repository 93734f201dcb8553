package backtest

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/rules/pack"
)

// fleet describes synthetic kube-state-metrics history: every cluster has the same nodes and
// pods, scraped every step, and notReady says which nodes are NotReady when.
type fleet struct {
	clusters    []string
	nodes       int
	podsPerNode int
	from, to    time.Time
	step        time.Duration
	notReady    func(cluster string, node int, t time.Time) bool
	// crashing says which pods (by node and index) are in CrashLoopBackOff when; a crashing
	// pod restarts every 20s.
	crashing func(cluster string, node, pod int, t time.Time) bool
	// extra samples, appended at every step.
	extra func(t time.Time) []sample

	ss []*series // built once: the series carry state (counters, what is exposed)
}

type sample struct {
	lset labels.Labels
	v    float64
}

type series struct {
	lset labels.Labels
	ref  storage.SeriesRef
	// value returns the sample at t; NaN means the series is not exposed at t, and a stale
	// marker is written when it stops being exposed, as a scrape would.
	value   func(t time.Time) float64
	exposed bool
}

func (f *fleet) series() []*series {
	var out []*series
	add := func(v func(time.Time) float64, kv ...string) {
		out = append(out, &series{lset: labels.FromStrings(kv...), value: v})
	}
	one := func(time.Time) float64 { return 1 }
	zero := func(time.Time) float64 { return 0 }
	for _, c := range f.clusters {
		add(one, "__name__", "up", "cluster", c, "job", "apiserver", "instance", "10.0.0.1:6443")
		add(func(t time.Time) float64 { return float64(t.Unix()) }, "__name__", "fleetwatch_cluster_last_ingest_timestamp_seconds", "cluster", c)
		for n := 0; n < f.nodes; n++ {
			node := fmt.Sprintf("node-%03d", n)
			ready := func(t time.Time) bool { return f.notReady == nil || !f.notReady(c, n, t) }
			ksm := func(name string, v func(time.Time) float64, kv ...string) {
				add(v, append([]string{"__name__", name, "cluster", c, "job", "kube-state-metrics", "node", node}, kv...)...)
			}
			ksm("kube_node_status_condition", func(t time.Time) float64 { return b2f(ready(t)) }, "condition", "Ready", "status", "true")
			ksm("kube_node_status_condition", func(t time.Time) float64 { return b2f(!ready(t)) }, "condition", "Ready", "status", "false")
			ksm("kube_node_status_condition", zero, "condition", "Ready", "status", "unknown")
			ksm("kube_node_status_allocatable", func(time.Time) float64 { return 4 }, "resource", "cpu", "unit", "core")
			ksm("kube_node_status_allocatable", func(time.Time) float64 { return 16 << 30 }, "resource", "memory", "unit", "byte")
			for p := 0; p < f.podsPerNode; p++ {
				pod := fmt.Sprintf("app-%03d-%02d", n, p)
				uid := fmt.Sprintf("uid-%s-%s", c, pod)
				pk := func(name string, v func(time.Time) float64, kv ...string) {
					add(v, append([]string{"__name__", name, "cluster", c, "job", "kube-state-metrics", "namespace", "apps", "pod", pod, "uid", uid}, kv...)...)
				}
				pk("kube_pod_container_resource_requests", func(time.Time) float64 { return 0.1 }, "container", "app", "node", node, "resource", "cpu", "unit", "core")
				pk("kube_pod_container_resource_requests", func(time.Time) float64 { return 256 << 20 }, "container", "app", "node", node, "resource", "memory", "unit", "byte")
				pk("kube_pod_status_phase", one, "phase", "Running")
				pk("kube_pod_status_phase", zero, "phase", "Pending")
				crash := func(t time.Time) bool { return f.crashing != nil && f.crashing(c, n, p, t) }
				var restarts float64
				lastRestart := time.Time{}
				pk("kube_pod_container_status_restarts_total", func(t time.Time) float64 {
					if crash(t) && t.Sub(lastRestart) >= 20*time.Second {
						restarts++
						lastRestart = t
					}
					return restarts
				}, "container", "app")
				pk("kube_pod_container_status_waiting_reason", func(t time.Time) float64 {
					if crash(t) {
						return 1
					}
					return math.NaN()
				}, "container", "app", "reason", "CrashLoopBackOff")
				pk("kube_pod_owner", one, "owner_kind", "ReplicaSet", "owner_name", fmt.Sprintf("app-%03d", n), "owner_is_controller", "true")
				pk("kube_pod_container_info", one, "container", "app", "image", "registry.example/app:1.0")
			}
		}
	}
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// write appends the fleet's samples from f.from to f.to (inclusive) with one appender commit per
// step.
func (f *fleet) write(t testing.TB, app func() storage.Appender, from, to time.Time) {
	t.Helper()
	if f.ss == nil {
		f.ss = f.series()
	}
	ss := f.ss
	for _, s := range ss {
		s.ref = 0 // refs are the appender's storage's
	}
	for ts := from; !ts.After(to); ts = ts.Add(f.step) {
		a := app()
		ms := timestamp.FromTime(ts)
		for _, s := range ss {
			v := s.value(ts)
			if math.IsNaN(v) {
				if !s.exposed {
					continue
				}
				v = math.Float64frombits(value.StaleNaN)
			}
			s.exposed = !value.IsStaleNaN(v)
			ref, err := a.Append(s.ref, s.lset, ms, v)
			require.NoError(t, err)
			s.ref = ref
		}
		if f.extra != nil {
			for _, x := range f.extra(ts) {
				_, err := a.Append(0, x.lset, ms, x.v)
				require.NoError(t, err)
			}
		}
		require.NoError(t, a.Commit())
	}
}

// openFleetTSDB writes the fleet into a TSDB as fleetwatch does (head and WAL), compacts what
// it can into blocks, and leaves the TSDB open, as a running fleetwatch would.
func openFleetTSDB(t testing.TB, f *fleet) string {
	t.Helper()
	dir := t.TempDir()
	db, err := tsdb.Open(dir, nil, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	f.write(t, func() storage.Appender { return db.Appender(context.Background()) }, f.from, f.to)
	require.NoError(t, db.Compact(context.Background()))
	return dir
}

// writeFleetBlocks writes the fleet straight into 2h blocks, without a WAL: the fastest way to
// a day of history.
func writeFleetBlocks(t testing.TB, f *fleet) string {
	t.Helper()
	dir := t.TempDir()
	const block = 2 * time.Hour
	for start := f.from; !start.After(f.to); start = start.Add(block) {
		w, err := tsdb.NewBlockWriter(slog.New(slog.DiscardHandler), dir, block.Milliseconds())
		require.NoError(t, err)
		end := start.Add(block - f.step)
		if end.After(f.to) {
			end = f.to
		}
		f.write(t, func() storage.Appender { return w.Appender(context.Background()) }, start, end)
		_, err = w.Flush(context.Background())
		require.NoError(t, err)
		require.NoError(t, w.Close())
	}
	return dir
}

func packRuleFiles(t testing.TB) []RuleFile {
	t.Helper()
	rendered, err := pack.Render(config.DefaultThresholds)
	require.NoError(t, err)
	var files []RuleFile
	for n, c := range rendered {
		files = append(files, RuleFile{Name: "pack/" + n, Content: c})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files
}

func find(rep *Report, alert, cluster string) (AlertStats, bool) {
	for _, a := range rep.Alerts {
		if a.Alert == alert && a.Cluster == cluster {
			return a, true
		}
	}
	return AlertStats{}, false
}

func within(t *testing.T, want, got, tolerance time.Duration, what string) {
	t.Helper()
	require.LessOrEqual(t, math.Abs(float64(got-want)), float64(tolerance), "%s: got %s, want %s ± %s", what, got, want, tolerance)
}
