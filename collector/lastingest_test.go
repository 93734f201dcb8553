package collector

import (
	"context"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// lastIngestSamples returns the recorded (ts ms, value) pairs per cluster.
func lastIngestSamples(t *testing.T, db *tsdb.DB) map[string][][2]float64 {
	t.Helper()
	q, err := db.Querier(math.MinInt64, math.MaxInt64)
	require.NoError(t, err)
	defer q.Close()
	set := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, LastIngestMetric))
	out := map[string][][2]float64{}
	for set.Next() {
		it := set.At().Iterator(nil)
		for it.Next() != 0 {
			ts, v := it.At()
			c := set.At().Labels().Get("cluster")
			out[c] = append(out[c], [2]float64{float64(ts), v})
		}
	}
	require.NoError(t, set.Err())
	return out
}

func TestIngestRecorderWritesLastIngestIntoTheView(t *testing.T) {
	f := newFixture(t, config.DefaultIngest)
	clock := f.now.Add(time.Minute)
	rec := NewIngestRecorder(Options{Appendable: f.db, Registerer: f.reg, Now: func() time.Time { return clock }})
	cfg := &config.Config{Clusters: []*config.ClusterConfig{{Name: "eu-1"}, {Name: "us-2"}}}
	rec.ApplyConfig(cfg)

	// eu-1 sends data at f.now; us-2 never does and is recorded as of the recorder's start.
	w := f.send(request{body: v1Body(t, v1Series(f.now.UnixMilli(), 1, "__name__", "up")), contentType: ctV1, token: "token-eu-1"})
	require.Equal(t, http.StatusNoContent, w.Code)
	require.NoError(t, rec.Record())
	clock = clock.Add(15 * time.Second)
	require.NoError(t, rec.Record())

	got := lastIngestSamples(t, f.db)
	start := float64(f.now.Add(time.Minute).UnixNano()) / 1e9
	require.Equal(t, [][2]float64{
		{float64(f.now.Add(time.Minute).UnixMilli()), float64(f.now.UnixNano()) / 1e9},
		{float64(clock.UnixMilli()), float64(f.now.UnixNano()) / 1e9},
	}, got["eu-1"])
	require.Equal(t, [][2]float64{
		{float64(f.now.Add(time.Minute).UnixMilli()), start},
		{float64(clock.UnixMilli()), start},
	}, got["us-2"])

	// After a restart (a fresh registry and recorder), the last ingest time comes back from the
	// view instead of turning into "now".
	reg := prometheus.NewRegistry()
	clock = clock.Add(time.Hour)
	rec2 := NewIngestRecorder(Options{Appendable: f.db, Registerer: reg, Now: func() time.Time { return clock }})
	rec2.ApplyConfig(cfg)
	require.NoError(t, rec2.Restore(context.Background(), f.db))
	require.NoError(t, rec2.Record())
	got = lastIngestSamples(t, f.db)
	require.Equal(t, float64(f.now.UnixNano())/1e9, got["eu-1"][2][1])
	require.Equal(t, start, got["us-2"][2][1])
}
