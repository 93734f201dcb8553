package agent

import (
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

// TestAgentScrapesAndRemoteWrites runs the agent against fleetwatch's real receiver: what it
// scrapes arrives, stamped with the cluster of the token it sends.
func TestAgentScrapesAndRemoteWrites(t *testing.T) {
	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	rcv, err := collector.New(collector.Options{Appendable: db})
	require.NoError(t, err)
	require.NoError(t, rcv.ApplyConfig(&config.Config{Ingest: config.DefaultIngest, Clusters: []*config.ClusterConfig{
		{Name: "c1", RemoteWrite: &config.RemoteWriteConfig{BearerToken: "tok-c1"}},
	}}))
	fw := httptest.NewServer(rcv)
	t.Cleanup(fw.Close)

	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "demo_gauge", Help: "A gauge."})
	g.Set(42)
	reg.MustRegister(g)
	target := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(target.Close)

	a, err := Start(fmt.Sprintf(`
global: {scrape_interval: 200ms, scrape_timeout: 200ms}
scrape_configs:
  - job_name: demo
    static_configs: [{targets: [%q]}]
remote_write:
  - url: %s/api/v1/write
    authorization: {credentials: tok-c1}
    queue_config: {batch_send_deadline: 100ms}
`, target.Listener.Addr().String(), fw.URL), t.TempDir(), nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, a.Stop()) }()

	require.Eventually(t, func() bool {
		q, err := db.Querier(0, math.MaxInt64)
		require.NoError(t, err)
		defer q.Close()
		set := q.Select(context.Background(), false, nil,
			labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "demo_gauge"),
			labels.MustNewMatcher(labels.MatchEqual, "cluster", "c1"),
			labels.MustNewMatcher(labels.MatchEqual, "job", "demo"))
		for set.Next() {
			it := set.At().Iterator(nil)
			for it.Next() != 0 {
				if _, v := it.At(); v == 42 {
					return true
				}
			}
		}
		return false
	}, 30*time.Second, 100*time.Millisecond)
}
