package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// haReplicas writes two replicas of one target as OpenMetrics, from start for 30 minutes: what
// an HA pair of Prometheus servers scraped. The target's counter grows by 2 a second and
// restarts from 0 at minute 12. Replica a scrapes on the second, every 15 s, and is down from
// minute 10 to 15; replica b scrapes 3 s later and misses minute 20 to 22. Only a scrapes the
// "extra" instance.
func haReplicas(start time.Time) string {
	var b strings.Builder
	type sample struct {
		labels string
		t      time.Time
		v      float64
	}
	counter := func(at time.Duration) float64 {
		if at >= 12*time.Minute {
			at -= 12 * time.Minute
		}
		return 2 * at.Seconds()
	}
	var counters, gauges []sample
	for i := 0; i < 120; i++ {
		at := time.Duration(i) * 15 * time.Second
		if at < 10*time.Minute || at >= 15*time.Minute {
			t := start.Add(at)
			counters = append(counters, sample{`instance="x",job="api",prometheus_replica="a"`, t, counter(at)})
			counters = append(counters, sample{`instance="extra",job="api",prometheus_replica="a"`, t, float64(3 * i)})
			gauges = append(gauges, sample{`instance="x",job="api",prometheus_replica="a"`, t, float64(i % 7)})
		}
		if at < 20*time.Minute || at >= 22*time.Minute {
			at += 3 * time.Second
			t := start.Add(at)
			counters = append(counters, sample{`instance="x",job="api",prometheus_replica="b"`, t, counter(at)})
			gauges = append(gauges, sample{`instance="x",job="api",prometheus_replica="b"`, t, float64(i%5) + 0.5})
		}
	}
	write := func(name, typ string, ss []sample) {
		fmt.Fprintf(&b, "# TYPE %s %s\n", name, typ)
		for _, s := range ss {
			suffix := ""
			if typ == "counter" {
				suffix = "_total"
			}
			fmt.Fprintf(&b, "%s%s{%s} %g %d\n", name, suffix, s.labels, s.v, s.t.Unix())
		}
	}
	write("requests", "counter", counters)
	write("temperature", "gauge", gauges)
	b.WriteString("# EOF\n")
	return b.String()
}

// TestDedupMatchesThanosQuery: fleetwatch's deduplication of replicas (query/dedup.go, Thanos's
// penalty algorithm carried over) gives the answers of a real Thanos Query over the same
// blocks, read by both through the same Thanos Store Gateway: gaps in either replica, a counter
// reset, a series only one replica has, and the counter functions, for which the replicas are
// merged as running totals.
func TestDedupMatchesThanosQuery(t *testing.T) {
	testenv.SkipIfShort(t)
	thanos := testenv.Peer(t, "thanos")
	dir := t.TempDir()
	start := time.Now().Add(-3 * time.Hour).Truncate(time.Hour)

	// Blocks from the replicas' samples, made by promtool as a backfill makes them, in a
	// filesystem bucket.
	bucket := filepath.Join(dir, "bucket")
	om := testenv.WriteFile(t, dir, "replicas.om", haReplicas(start))
	p := testenv.Start(t, "promtool", testenv.Peer(t, "promtool"), "tsdb", "create-blocks-from", "openmetrics", om, bucket)
	require.NoError(t, p.Wait(2*time.Minute), p.Log())
	blocks, err := filepath.Glob(filepath.Join(bucket, "*", "meta.json"))
	require.NoError(t, err)
	require.NotEmpty(t, blocks, p.Log())
	for _, m := range blocks {
		// What Thanos's own uploads add to a block's meta: a raw-resolution block from a source.
		raw, err := os.ReadFile(m)
		require.NoError(t, err)
		var meta map[string]any
		require.NoError(t, json.Unmarshal(raw, &meta))
		meta["thanos"] = map[string]any{"labels": map[string]string{}, "downsample": map[string]int{"resolution": 0}, "source": "sidecar"}
		out, err := json.Marshal(meta)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(m, out, 0o644))
	}
	objstore := testenv.WriteFile(t, dir, "bucket.yml", "type: FILESYSTEM\nconfig:\n  directory: "+bucket+"\n")

	storeGRPC, storeHTTP := testenv.FreePort(t), testenv.FreePort(t)
	store := testenv.Start(t, "thanos-store", thanos, "store",
		"--data-dir="+filepath.Join(dir, "store"), "--objstore.config-file="+objstore,
		"--grpc-address="+storeGRPC, "--http-address="+storeHTTP)
	store.WaitReady(t, "http://"+storeHTTP+"/-/ready", 60*time.Second)

	queryHTTP := testenv.FreePort(t)
	tq := testenv.Start(t, "thanos-query", thanos, "query",
		"--endpoint="+storeGRPC, "--query.replica-label=prometheus_replica",
		"--query.promql-engine=prometheus", "--query.lookback-delta=5m",
		"--grpc-address="+testenv.FreePort(t), "--http-address="+queryHTTP)
	tq.WaitReady(t, "http://"+queryHTTP+"/-/ready", 60*time.Second)

	// The same engine as Thanos Query's, so that only the deduplication can differ.
	_, fw := startFleetwatch(t, dir, fmt.Sprintf(`
clusters: []
query:
  engine: prometheus
  lookback_delta: 5m
  replica_labels: [prometheus_replica]
  stores:
    - {name: store, address: "%s", timeout: 10s}
`, storeGRPC))
	want, got := apiClient(t, "http://"+queryHTTP), apiClient(t, fw)

	// Thanos Query finds its endpoint on its own schedule: wait until it answers with data.
	testenv.Eventually(t, 60*time.Second, func() error {
		v, _, err := want.Query(ctx(t), "count(requests_total)", start.Add(time.Minute))
		if err != nil {
			return err
		}
		if normalize(v) == "" {
			return fmt.Errorf("thanos query has no data yet")
		}
		return nil
	})

	queries := []string{
		"requests_total",
		"temperature",
		"rate(requests_total[1m])",
		"irate(requests_total[1m])",
		"increase(requests_total[5m])",
		"resets(requests_total[10m])",
		"max_over_time(temperature[2m])",
		"count_over_time(requests_total[1m])",
		"sum by (job) (rate(requests_total[2m]))",
	}
	r := promv1.Range{Start: start, End: start.Add(35 * time.Minute), Step: 20 * time.Second}
	for _, q := range queries {
		wv, _, err := want.QueryRange(ctx(t), q, r)
		require.NoError(t, err, q)
		gv, _, err := got.QueryRange(ctx(t), q, r)
		require.NoError(t, err, q)
		require.NotEmpty(t, normalize(wv), q)
		require.Equal(t, normalize(wv), normalize(gv), "range query %s", q)
		for _, at := range []time.Duration{2 * time.Minute, 12 * time.Minute, 21 * time.Minute, 29*time.Minute + 50*time.Second} {
			wv, _, err := want.Query(ctx(t), q, start.Add(at))
			require.NoError(t, err, q)
			gv, _, err := got.Query(ctx(t), q, start.Add(at))
			require.NoError(t, err, q)
			require.Equal(t, normalize(wv), normalize(gv), "%s at minute %v", q, at)
		}
	}
	// The replicas were merged: one series per instance, no replica label.
	v, _, err := got.Query(ctx(t), "requests_total", start.Add(12*time.Minute))
	require.NoError(t, err)
	require.NotContains(t, v.String(), "prometheus_replica")
	require.Equal(t, 2, strings.Count(v.String(), "requests_total"), v.String())
}
