package promqlengine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/teststorage"
	"github.com/stretchr/testify/require"
	"github.com/thanos-io/promql-engine/engine"
)

// benchQueries are range queries of hack/bench's set, over data shaped like its: 4 clusters,
// 10 namespaces, pods with requests, counters and an `up` series per target.
var benchQueries = []struct{ name, expr string }{
	{"selector_filter", `kube_pod_container_resource_requests{resource="cpu", namespace=~"team-a.*|payments"}`},
	{"requests_by_ns", `sum by (cluster, namespace) (kube_pod_container_resource_requests{resource="memory"})`},
	{"count_up", `count by (cluster) (up)`},
	{"cpu_by_cluster", `sum by (cluster) (rate(container_cpu_usage_seconds_total[5m]))`},
}

// benchStorage holds 4 clusters x 625 pods of each series kind, one sample every 15s for 50
// minutes (200 samples, as the bench sends).
func benchStorage(b *testing.B) storage.Storage {
	b.Helper()
	st := teststorage.New(b)
	b.Cleanup(func() { st.Close() })
	app := st.Appender(context.Background())
	namespaces := []string{"team-a", "team-a-jobs", "payments", "web", "search", "ads", "infra", "data", "ml", "kube-system"}
	for c := range 4 {
		cluster := fmt.Sprintf("prod-%d", c)
		for p := range 625 {
			ns := namespaces[p%len(namespaces)]
			pod := fmt.Sprintf("pod-%d", p)
			series := []labels.Labels{
				labels.FromStrings("__name__", "kube_pod_container_resource_requests", "cluster", cluster, "namespace", ns, "pod", pod, "resource", "cpu"),
				labels.FromStrings("__name__", "kube_pod_container_resource_requests", "cluster", cluster, "namespace", ns, "pod", pod, "resource", "memory"),
				labels.FromStrings("__name__", "container_cpu_usage_seconds_total", "cluster", cluster, "namespace", ns, "pod", pod),
			}
			if p%25 == 0 {
				series = append(series, labels.FromStrings("__name__", "up", "cluster", cluster, "instance", pod))
			}
			for i, ls := range series {
				for s := range 200 {
					if _, err := app.Append(0, ls, int64(s)*15_000, float64(s*(i+1)+p)); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
	}
	require.NoError(b, app.Commit())
	return st
}

// BenchmarkRangeQuery runs each query over the whole 50 minutes at step 15s on each engine.
func BenchmarkRangeQuery(b *testing.B) {
	st := benchStorage(b)
	opts := promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute, EnableAtModifier: true, EnableNegativeOffset: true}
	engines := []struct {
		name string
		e    promql.QueryEngine
	}{{"thanos", engine.New(engine.Opts{EngineOpts: opts})}, {"prometheus", promql.NewEngine(opts)}}
	start, end := time.Unix(0, 0), time.Unix(0, 0).Add(199*15*time.Second)
	for _, q := range benchQueries {
		for _, e := range engines {
			b.Run(q.name+"/engine="+e.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					qry, err := e.e.NewRangeQuery(context.Background(), st, nil, q.expr, start, end, 15*time.Second)
					if err != nil {
						b.Fatal(err)
					}
					if res := qry.Exec(context.Background()); res.Err != nil {
						b.Fatal(res.Err)
					}
					qry.Close()
				}
			})
		}
	}
}
