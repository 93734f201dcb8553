package collector

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/storage"
)

// LastIngestMetric is the series fleetwatch writes into the view for every configured cluster:
// when data from the cluster was last stored, in Unix seconds. A cluster's own series vanish
// when it goes silent; this one keeps being written, so "silent for longer than X" is a plain
// comparison with time() that never resolves for lack of data.
const LastIngestMetric = "fleetwatch_cluster_last_ingest_timestamp_seconds"

// MetricRemoteWriteRejected counts remote-write requests rejected as a whole, by cluster and
// reason; MetricRemoteWriteOverloaded those answered 429 at the in-flight byte limit.
const (
	MetricRemoteWriteRejected   = "fleetwatch_remote_write_rejected_requests_total"
	MetricRemoteWriteOverloaded = "fleetwatch_remote_write_overloaded_total"
)

// IngestRecorder writes LastIngestMetric into the view at a fixed interval, from the
// fleetwatch_cluster_last_ingest_timestamp_seconds gauge the receiver and the federator keep.
// A cluster that has sent nothing since fleetwatch started is recorded as of the start (or of
// the last value in the view, after a restart), so it turns silent once the window passes
// rather than at once.
type IngestRecorder struct {
	app    storage.Appendable
	gauge  *prometheus.GaugeVec
	logger *slog.Logger
	now    func() time.Time
	start  time.Time

	mtx      sync.Mutex
	clusters []string
}

// NewIngestRecorder returns a recorder appending to o.Appendable. o.Registerer must be the one
// the Receiver and Federator were given, so it reads the gauge they update.
func NewIngestRecorder(o Options) *IngestRecorder {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &IngestRecorder{app: o.Appendable, gauge: lastIngestGauge(o.Registerer), logger: o.Logger, now: o.Now, start: o.Now()}
}

// ApplyConfig sets the clusters to record.
func (r *IngestRecorder) ApplyConfig(cfg *config.Config) {
	names := make([]string, 0, len(cfg.Clusters))
	for _, c := range cfg.Clusters {
		names = append(names, c.Name)
	}
	r.mtx.Lock()
	r.clusters = names
	r.mtx.Unlock()
}

// Restore sets the gauge of every cluster that has not sent anything yet in this process from
// the newest LastIngestMetric sample in q, so a restart does not reset "last seen".
func (r *IngestRecorder) Restore(ctx context.Context, q storage.Queryable) error {
	now := timestamp.FromTime(r.now())
	qr, err := q.Querier(math.MinInt64, now)
	if err != nil {
		return fmt.Errorf("restore last ingest times: %w", err)
	}
	defer qr.Close()
	set := qr.Select(ctx, false, nil, labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, LastIngestMetric))
	for set.Next() {
		s := set.At()
		cluster := s.Labels().Get(config.ClusterLabel)
		it := s.Iterator(nil)
		var last float64
		for it.Next() != 0 {
			_, v := it.At()
			last = max(last, v)
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("restore last ingest time of %q: %w", cluster, err)
		}
		if cluster != "" && last > 0 && r.value(cluster) == 0 {
			r.gauge.WithLabelValues(cluster).Set(last)
		}
	}
	return set.Err()
}

// value reads the gauge of a cluster without creating it, so a cluster that never sent
// anything does not show up on /metrics as if it had, at time 0.
func (r *IngestRecorder) value(cluster string) float64 {
	ch := make(chan prometheus.Metric)
	go func() { r.gauge.Collect(ch); close(ch) }()
	var v float64
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			continue
		}
		for _, lp := range d.GetLabel() {
			if lp.GetName() == config.ClusterLabel && lp.GetValue() == cluster {
				v = d.GetGauge().GetValue()
			}
		}
	}
	return v
}

// Record appends one sample per configured cluster, at now.
func (r *IngestRecorder) Record() error {
	r.mtx.Lock()
	clusters := r.clusters
	r.mtx.Unlock()
	now := r.now()
	app := r.app.Appender(context.Background())
	for _, c := range clusters {
		v := r.value(c)
		if v == 0 {
			v = float64(r.start.UnixNano()) / 1e9
		}
		ls := labels.FromStrings(labels.MetricName, LastIngestMetric, config.ClusterLabel, c)
		if _, err := app.Append(0, ls, timestamp.FromTime(now), v); err != nil {
			_ = app.Rollback()
			return fmt.Errorf("record last ingest time of %q: %w", c, err)
		}
	}
	return app.Commit()
}

// Run records every interval until ctx ends.
func (r *IngestRecorder) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := r.Record(); err != nil {
			r.logger.Error("recording last ingest times", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
