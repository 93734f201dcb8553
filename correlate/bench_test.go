package correlate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// benchAlerts generates n active alerts over clusters clusters, shaped like the kube-prometheus
// alerts hack/alertbench posts: mostly pod-level alerts unrelated to each other (each its own
// alert/ incident), crash loops (one failures/ incident per cluster) and deployment alerts that
// the same workload raises in many clusters (rollouts).
func benchAlerts(n, clusters int, now time.Time) []Alert {
	rng := rand.New(rand.NewPCG(1, 2))
	kinds := []string{"KubePodCrashLooping", "CPUThrottlingHigh", "KubePodNotReady", "KubeDeploymentReplicasMismatch", "TargetDown", "KubeContainerWaiting", "KubeJobFailed"}
	out := make([]Alert, 0, n)
	for i := range n {
		c := fmt.Sprintf("prod-eu-west-1-%03d", i%clusters)
		kind := kinds[rng.IntN(len(kinds))]
		ns := fmt.Sprintf("ns-%d", rng.IntN(30))
		deploy := fmt.Sprintf("%s-comp-%d", ns, rng.IntN(10))
		l := map[string]string{
			"alertname": kind, "cluster": c, "prometheus": "monitoring/k8s", "namespace": ns, "severity": "warning",
			"job": "kube-state-metrics", "instance": "10.64.1.2:8080", "endpoint": "http-main", "service": "kube-state-metrics",
		}
		switch kind {
		case "KubeDeploymentReplicasMismatch", "TargetDown":
			l["deployment"] = deploy
		default:
			l["pod"] = fmt.Sprintf("%s-%08x-%d", deploy, rng.Uint32(), i)
			l["container"] = "main"
		}
		out = append(out, Alert{
			Labels: l,
			Annotations: map[string]string{
				"summary":     "Something is wrong.",
				"description": fmt.Sprintf("%s of %s/%s on cluster %s.", kind, ns, deploy, c),
				"runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/" + kind,
			},
			StartsAt:     now.Add(-time.Duration(rng.IntN(6*3600)) * time.Second),
			EndsAt:       now.Add(4 * time.Minute),
			GeneratorURL: "https://prometheus." + c + ".example.com/graph",
			Source:       "prometheus",
		})
	}
	return out
}

// benchSizes are the numbers of held alerts the benchmarks run with.
var benchSizes = []int{10_000, 100_000}

// BenchmarkCorrelate correlates 10k and 100k alerts fingerprinted at ingest, as the engine does.
func BenchmarkCorrelate(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("alerts=%d", n), func(b *testing.B) {
			alerts := DefaultRules.withFingerprints(benchAlerts(n, 100, t0))
			b.ReportAllocs()
			for b.Loop() {
				Correlate(alerts, nil, DefaultRules)
			}
		})
	}
}

// benchEngine returns an engine holding n alerts, evaluated once.
func benchEngine(b *testing.B, n int) (*Engine, []Alert) {
	b.Helper()
	st, err := OpenStore(filepath.Join(b.TempDir(), "incidents.db"))
	require.NoError(b, err)
	b.Cleanup(func() { st.Close() })
	clk := &clock{t: t0}
	e, err := New(Options{Store: st, Rules: DefaultRules, ResolveAfter: 5 * time.Minute, Alertmanagers: []string{"http://am:9093"}, Now: clk.now})
	require.NoError(b, err)
	alerts := benchAlerts(n, 100, t0)
	for lo := 0; lo < len(alerts); lo += 1000 {
		require.NoError(b, e.Ingest(context.Background(), alerts[lo:min(lo+1000, len(alerts))]))
	}
	require.NoError(b, e.Evaluate(context.Background()))
	return e, alerts
}

// BenchmarkEvaluate is one evaluation of 10k and 100k held alerts after a batch of 64 was
// taken in: resent as they were (what a member Prometheus sends every minute), or changed (their
// annotations, so that they are grouped again). A batch holds alerts of 64 clusters, or, as a
// member cluster's Prometheus sends them (batch=one-cluster), of one.
func BenchmarkEvaluate(b *testing.B) {
	type variant struct {
		changed bool
		name    string
		batch   func(alerts []Alert, i int) []Alert
	}
	variants := []variant{
		{false, "", benchBatch},
		{true, "", benchBatch},
		{true, "/batch=one-cluster", func(alerts []Alert, i int) []Alert { return benchClusterBatch(alerts, 100, i) }},
	}
	for _, n := range benchSizes {
		for _, v := range variants {
			b.Run(fmt.Sprintf("alerts=%d/changed=%t%s", n, v.changed, v.name), func(b *testing.B) {
				changed := v.changed
				e, alerts := benchEngine(b, n)
				ctx := context.Background()
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					batch := v.batch(alerts, i)
					if changed {
						batch = slices.Clone(batch)
						for j := range batch {
							batch[j].Annotations = map[string]string{"summary": fmt.Sprint("round ", i)}
						}
					}
					require.NoError(b, e.Ingest(ctx, batch))
					require.NoError(b, e.Evaluate(ctx))
				}
			})
		}
	}
}

// BenchmarkIngest is taking in one Prometheus batch (64 alerts) with 100k alerts held.
func BenchmarkIngest(b *testing.B) {
	e, alerts := benchEngine(b, 100_000)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		batch := benchBatch(alerts, i)
		require.NoError(b, e.Ingest(ctx, batch))
	}
}

// benchClusterBatch is the i-th batch of 64 alerts of one cluster of benchAlerts(n, clusters),
// taking the clusters in turn.
func benchClusterBatch(alerts []Alert, clusters, i int) []Alert {
	c := i % clusters
	per := len(alerts) / clusters
	out := make([]Alert, 0, 64)
	for j := range 64 {
		out = append(out, alerts[c+((i/clusters*64+j)%per)*clusters])
	}
	return out
}

// benchBatch is the i-th batch of 64 alerts, wrapping around before the end (100k is not a
// multiple of 64).
func benchBatch(alerts []Alert, i int) []Alert {
	n := len(alerts) / 64
	return alerts[(i%n)*64:][:64]
}

// BenchmarkEvaluateStorm is the evaluation that takes in a storm's backlog: n alerts of 100
// clusters, all new, into an engine holding nothing (each its own incident, as most of
// hack/alertbench's). The storm's alert-to-incident latency is a few such evaluations. Only
// the evaluation is timed; each iteration has a fresh engine and store.
func BenchmarkEvaluateStorm(b *testing.B) {
	for _, n := range []int{10_000, 30_000} {
		b.Run(fmt.Sprintf("new=%d", n), func(b *testing.B) {
			alerts := benchAlerts(n, 100, t0)
			ctx := context.Background()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				st, err := OpenStore(filepath.Join(b.TempDir(), fmt.Sprintf("incidents-%d.db", i)))
				require.NoError(b, err)
				e, err := New(Options{Store: st, Rules: DefaultRules, ResolveAfter: 5 * time.Minute, Alertmanagers: []string{"http://am:9093"}, Now: (&clock{t: t0}).now})
				require.NoError(b, err)
				for lo := 0; lo < len(alerts); lo += 64 {
					require.NoError(b, e.Ingest(ctx, alerts[lo:min(lo+64, len(alerts))]))
				}
				b.StartTimer()
				require.NoError(b, e.Evaluate(ctx))
				b.StopTimer()
				require.NoError(b, st.Close())
				b.StartTimer()
			}
		})
	}
}
