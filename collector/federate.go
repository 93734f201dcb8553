package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/common/model"

	"github.com/fleetwatch/fleetwatch/internal/config"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
)

// FederateJob is the `job` label of the series fleetwatch's own federation scrapes produce
// (`up`, `scrape_duration_seconds`, ...). Federated series keep the job of the cluster's
// Prometheus (honor_labels).
const FederateJob = "federate"

// federatePoolPrefix prefixes a federated cluster's scrape pool name, as seen in
// /api/v1/targets.
const federatePoolPrefix = "federate/"

// reportMetrics are the series a scrape adds about itself; they are not data from the cluster.
var reportMetrics = map[string]bool{
	"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true,
	"scrape_samples_post_metric_relabeling": true, "scrape_series_added": true,
}

// Federator pulls the clusters that cannot push from their Prometheus's /federate endpoint,
// with Prometheus's own scrape manager: honor_labels and honor_timestamps as the federation
// docs prescribe, staleness tracked for series that disappear, the config's match[] selectors
// and HTTP client settings (TLS, basic auth, bearer token, proxy).
//
// Every series is checked against the cluster it was pulled from: a series without `cluster`
// gets the cluster's name (a target label), and a series whose `cluster` names another cluster
// fails the whole scrape, like any other append error in Prometheus: nothing of it is stored,
// `up` is 0 and the target's last error says why.
type Federator struct {
	logger  *slog.Logger
	manager *scrape.Manager
	metrics *federateMetrics

	mtx   sync.Mutex // serialises ApplyConfig
	tsets chan map[string][]*targetgroup.Group
}

type federateMetrics struct {
	samples    *prometheus.CounterVec
	rejected   *prometheus.CounterVec
	lastIngest *prometheus.GaugeVec
}

// NewFederator returns a Federator appending to o.Appendable. Start it with Run and configure
// it with ApplyConfig (in either order).
func NewFederator(o Options) (*Federator, error) {
	if o.Appendable == nil {
		return nil, errors.New("collector: Options.Appendable is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registerer == nil {
		// The scrape manager registers its metrics unconditionally.
		o.Registerer = prometheus.NewRegistry()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	f := &Federator{
		logger: o.Logger,
		tsets:  make(chan map[string][]*targetgroup.Group, 1),
	}
	fm := promauto.With(o.Registerer)
	f.metrics = &federateMetrics{
		samples: fm.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwatch_federate_samples_total",
			Help: "Samples stored from federation scrapes, by cluster (including the scrape's own up and scrape_* series).",
		}, []string{"cluster"}),
		rejected: fm.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwatch_federate_rejected_scrapes_total",
			Help: "Federation scrapes discarded as a whole, by cluster and reason.",
		}, []string{"cluster", "reason"}),
		lastIngest: lastIngestGauge(o.Registerer),
	}
	app := &federateAppendable{next: o.Appendable, metadata: o.Metadata, metrics: f.metrics, now: o.Now}
	m, err := scrape.NewManager(&scrape.Options{
		// The appender learns which cluster it is appending for from the target in its context.
		PassMetadataInContext:   true,
		DiscoveryReloadInterval: model.Duration(time.Second),
	}, o.Logger.With("component", "federate"), nil, app, o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("collector: scrape manager: %w", err)
	}
	f.manager = m
	return f, nil
}

// Run scrapes until Stop is called.
func (f *Federator) Run() error { return f.manager.Run(f.tsets) }

// Stop stops all scrapes.
func (f *Federator) Stop() { f.manager.Stop() }

// Targets is the scrape manager, for /api/v1/targets and target metadata.
func (f *Federator) Targets() *scrape.Manager { return f.manager }

// CheckConfig says whether ApplyConfig would accept cfg, without switching.
func (f *Federator) CheckConfig(cfg *config.Config) error {
	pc, err := promconfig.Load("", f.logger)
	if err != nil {
		return fmt.Errorf("federate: default scrape config: %w", err)
	}
	for _, c := range cfg.Clusters {
		if c.Federate == nil {
			continue
		}
		if _, _, err := federateScrapeConfig(c.Name, c.Federate, pc.GlobalConfig); err != nil {
			return fmt.Errorf("cluster %q: federate: %w", c.Name, err)
		}
	}
	return nil
}

// ApplyConfig replaces the set of federated clusters. Clusters whose settings did not change
// keep scraping without a gap.
func (f *Federator) ApplyConfig(cfg *config.Config) error {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	pc, err := promconfig.Load("", f.logger)
	if err != nil {
		return fmt.Errorf("federate: default scrape config: %w", err)
	}
	tsets := map[string][]*targetgroup.Group{}
	for _, c := range cfg.Clusters {
		if c.Federate == nil {
			continue
		}
		sc, tg, err := federateScrapeConfig(c.Name, c.Federate, pc.GlobalConfig)
		if err != nil {
			return fmt.Errorf("cluster %q: federate: %w", c.Name, err)
		}
		pc.ScrapeConfigs = append(pc.ScrapeConfigs, sc)
		tsets[sc.JobName] = []*targetgroup.Group{tg}
	}
	if err := f.manager.ApplyConfig(pc); err != nil {
		return fmt.Errorf("federate: %w", err)
	}
	// The manager reads target sets in Run; keep only the newest if it has not yet.
	select {
	case <-f.tsets:
	default:
	}
	f.tsets <- tsets
	return nil
}

// federateScrapeConfig is the Prometheus scrape config federation docs recommend for one
// cluster, and its single target.
func federateScrapeConfig(cluster string, fc *config.FederateConfig, global promconfig.GlobalConfig) (*promconfig.ScrapeConfig, *targetgroup.Group, error) {
	u, err := url.Parse(fc.URL)
	if err != nil {
		return nil, nil, fmt.Errorf("url: %w", err)
	}
	sc := promconfig.DefaultScrapeConfig
	sc.JobName = federatePoolPrefix + cluster
	sc.HonorLabels = true
	sc.HonorTimestamps = true
	sc.TrackTimestampsStaleness = true
	sc.ScrapeInterval = fc.Interval
	sc.ScrapeTimeout = fc.Timeout
	sc.Scheme = u.Scheme
	sc.MetricsPath = u.Path
	if sc.MetricsPath == "" {
		sc.MetricsPath = "/federate"
	}
	params := u.Query()
	for _, m := range fc.Match {
		params.Add("match[]", m)
	}
	sc.Params = params
	sc.HTTPClientConfig = fc.HTTPClientConfig
	if err := sc.Validate(global); err != nil {
		return nil, nil, err
	}
	tg := &targetgroup.Group{
		Source:  sc.JobName,
		Targets: []model.LabelSet{{model.AddressLabel: model.LabelValue(u.Host)}},
		Labels: model.LabelSet{
			model.JobLabel:                       FederateJob,
			model.LabelName(config.ClusterLabel): model.LabelValue(cluster),
		},
	}
	return &sc, tg, nil
}

// lastIngestGauge is shared by the receiver and the federator.
func lastIngestGauge(reg prometheus.Registerer) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fleetwatch_cluster_last_ingest_timestamp_seconds",
		Help: "When data from the cluster was last stored, as a Unix timestamp.",
	}, []string{"cluster"})
	if reg == nil {
		return g
	}
	if err := reg.Register(g); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(*prometheus.GaugeVec); ok {
				return existing
			}
		}
		panic(err)
	}
	return g
}

// federateAppendable hands each scrape loop an appender bound to the cluster of its target.
type federateAppendable struct {
	next     storage.Appendable
	metadata MetadataSink
	metrics  *federateMetrics
	now      func() time.Time
}

func (a *federateAppendable) Appender(ctx context.Context) storage.Appender {
	fa := &federateAppender{Appender: a.next.Appender(ctx), parent: a}
	if t, ok := scrape.TargetFromContext(ctx); ok {
		fa.cluster = t.GetValue(config.ClusterLabel)
	}
	return fa
}

// federateAppender enforces the cluster's identity on every series of one scrape.
type federateAppender struct {
	storage.Appender
	parent  *federateAppendable
	cluster string
	samples int
	data    bool // something other than the scrape's own report series was appended
}

func (a *federateAppender) check(l labels.Labels) error {
	if a.cluster == "" {
		return errors.New("federate: appender without a cluster target")
	}
	if v := l.Get(config.ClusterLabel); v != a.cluster {
		a.parent.metrics.rejected.WithLabelValues(a.cluster, "forged_cluster").Inc()
		return fmt.Errorf("%w: series %s pulled from cluster %q", ErrForgedCluster, l.String(), a.cluster)
	}
	a.samples++
	if !a.data && !(reportMetrics[l.Get(labels.MetricName)] && l.Get(model.JobLabel) == FederateJob) {
		a.data = true
	}
	return nil
}

func (a *federateAppender) Append(ref storage.SeriesRef, l labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	if err := a.check(l); err != nil {
		return 0, err
	}
	return a.Appender.Append(ref, l, t, v)
}

func (a *federateAppender) AppendHistogram(ref storage.SeriesRef, l labels.Labels, t int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	if err := a.check(l); err != nil {
		return 0, err
	}
	return a.Appender.AppendHistogram(ref, l, t, h, fh)
}

func (a *federateAppender) AppendExemplar(ref storage.SeriesRef, l labels.Labels, e exemplar.Exemplar) (storage.SeriesRef, error) {
	if l.Get(config.ClusterLabel) != a.cluster {
		return 0, fmt.Errorf("%w: exemplar of %s pulled from cluster %q", ErrForgedCluster, l.String(), a.cluster)
	}
	return a.Appender.AppendExemplar(ref, l, e)
}

func (a *federateAppender) AppendSTZeroSample(ref storage.SeriesRef, l labels.Labels, t, st int64) (storage.SeriesRef, error) {
	if l.Get(config.ClusterLabel) != a.cluster {
		return 0, fmt.Errorf("%w: series %s pulled from cluster %q", ErrForgedCluster, l.String(), a.cluster)
	}
	return a.Appender.AppendSTZeroSample(ref, l, t, st)
}

func (a *federateAppender) AppendHistogramSTZeroSample(ref storage.SeriesRef, l labels.Labels, t, st int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	if l.Get(config.ClusterLabel) != a.cluster {
		return 0, fmt.Errorf("%w: series %s pulled from cluster %q", ErrForgedCluster, l.String(), a.cluster)
	}
	return a.Appender.AppendHistogramSTZeroSample(ref, l, t, st, h, fh)
}

func (a *federateAppender) UpdateMetadata(ref storage.SeriesRef, l labels.Labels, m metadata.Metadata) (storage.SeriesRef, error) {
	if l.Get(config.ClusterLabel) != a.cluster {
		return 0, fmt.Errorf("%w: metadata of %s pulled from cluster %q", ErrForgedCluster, l.String(), a.cluster)
	}
	if s := a.parent.metadata; s != nil {
		s.SetMetadata(a.cluster, l.Get(labels.MetricName), string(m.Type), m.Help, m.Unit)
	}
	return a.Appender.UpdateMetadata(ref, l, m)
}

func (a *federateAppender) Commit() error {
	if err := a.Appender.Commit(); err != nil {
		return err
	}
	if a.samples > 0 {
		a.parent.metrics.samples.WithLabelValues(a.cluster).Add(float64(a.samples))
	}
	if a.data {
		a.parent.metrics.lastIngest.WithLabelValues(a.cluster).Set(float64(a.parent.now().UnixNano()) / 1e9)
	}
	return nil
}
