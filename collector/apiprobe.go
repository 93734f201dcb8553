package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// APIUpMetric is the series fleetwatch writes into the view for every cluster with a
// kubeconfig_file: 1 when the cluster's API server answered fleetwatch's last GET /readyz with
// 200 "ok", 0 when it did not (an error, another status or body, no answer within
// api_probe.timeout). It is fleetwatch's own way to the cluster, with the credentials
// remediation acts with, not the cluster's view of itself: 0 while the cluster's metrics still
// arrive is a one-sided partition.
const APIUpMetric = "fleetwatch_cluster_api_up"

// APIProbeDurationMetric is how long fleetwatch's last probe of the cluster's API server took,
// in seconds; a probe that got no answer took api_probe.timeout.
const APIProbeDurationMetric = "fleetwatch_cluster_api_probe_duration_seconds"

// readyzPath is the API server's readiness endpoint; it answers 200 "ok" when ready.
const readyzPath = "/readyz"

// APIProber probes the API server of every cluster with a kubeconfig_file (GET /readyz with
// client-go, from the kubeconfig's current context) every api_probe.interval, and writes
// APIUpMetric and APIProbeDurationMetric into the view, and as gauges of the same names on the
// registry it was given.
//
// Each cluster is probed by its own goroutine, so an API server that does not answer delays
// only its own samples; a probe is cancelled after api_probe.timeout. A cluster that
// ApplyConfig removes (or whose kubeconfig_file goes) stops being probed and its series end
// with a staleness marker.
type APIProber struct {
	app      storage.Appendable
	logger   *slog.Logger
	now      func() time.Time
	up       *prometheus.GaugeVec
	duration *prometheus.GaugeVec

	mtx sync.Mutex
	// ctx is Run's context while Run runs, nil otherwise: targets are probed only then.
	ctx     context.Context
	targets map[string]*apiTarget
}

// apiTarget is one cluster's API server and the loop probing it.
type apiTarget struct {
	cluster           string
	kube              *rest.Config // as loaded, to tell a changed kubeconfig on reload
	client            rest.Interface
	http              *http.Client
	interval, timeout time.Duration

	// Set while its loop runs.
	cancel context.CancelFunc
	done   chan struct{}
}

// NewAPIProber returns a prober appending to o.Appendable. Configure it with ApplyConfig and
// start it with Run, in either order.
func NewAPIProber(o Options) (*APIProber, error) {
	if o.Appendable == nil {
		return nil, errors.New("collector: Options.Appendable is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	p := &APIProber{
		app:    o.Appendable,
		logger: o.Logger.With("component", "api-probe"),
		now:    o.Now,
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: APIUpMetric,
			Help: "Whether the cluster's API server answered fleetwatch's last GET /readyz with 200 ok (1) or not (0).",
		}, []string{config.ClusterLabel}),
		duration: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: APIProbeDurationMetric,
			Help: "How long fleetwatch's last probe of the cluster's API server took, in seconds.",
		}, []string{config.ClusterLabel}),
		targets: map[string]*apiTarget{},
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{p.up, p.duration} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("collector: register API probe metrics: %w", err)
			}
		}
	}
	return p, nil
}

// CheckConfig says whether ApplyConfig would accept cfg, without switching.
func (p *APIProber) CheckConfig(cfg *config.Config) error {
	_, err := apiTargets(cfg)
	return err
}

// ApplyConfig replaces the set of probed clusters with cfg's clusters that have a
// kubeconfig_file. A cluster whose client configuration and probe settings did not change
// keeps being probed on its schedule; a changed one starts again with a probe at once; a
// removed one stops, and its series end. On error nothing changed.
func (p *APIProber) ApplyConfig(cfg *config.Config) error {
	want, err := apiTargets(cfg)
	if err != nil {
		return err
	}
	p.mtx.Lock()
	defer p.mtx.Unlock()
	for name, old := range p.targets {
		if t, ok := want[name]; ok && old.same(t) {
			want[name] = old
			continue
		}
		old.stop()
		if _, ok := want[name]; !ok {
			p.forget(name)
		}
	}
	p.targets = want
	if p.ctx != nil {
		for _, t := range want {
			p.start(t)
		}
	}
	return nil
}

// apiTargets builds a client for the API server of every cluster of cfg with a kubeconfig.
func apiTargets(cfg *config.Config) (map[string]*apiTarget, error) {
	out := map[string]*apiTarget{}
	for _, c := range cfg.Clusters {
		if c.KubeConfig == nil {
			continue
		}
		if err := cfg.APIProbe.Validate(); err != nil {
			return nil, err
		}
		rc := rest.CopyConfig(c.KubeConfig)
		hc, err := rest.HTTPClientFor(rc)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: kubeconfig_file: %w", c.Name, err)
		}
		dc, err := discovery.NewDiscoveryClientForConfigAndClient(rc, hc)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: kubeconfig_file: %w", c.Name, err)
		}
		out[c.Name] = &apiTarget{
			cluster: c.Name, kube: c.KubeConfig, client: dc.RESTClient(), http: hc,
			interval: time.Duration(cfg.APIProbe.Interval), timeout: time.Duration(cfg.APIProbe.Timeout),
		}
	}
	return out, nil
}

// same says whether n probes what t probes, the same way. A client configuration that cannot be
// compared (one holding functions) counts as changed.
func (t *apiTarget) same(n *apiTarget) bool {
	return t.interval == n.interval && t.timeout == n.timeout && reflect.DeepEqual(t.kube, n.kube)
}

// Run probes until ctx ends, and returns once every probe has stopped, so nothing is appended
// after it returned.
func (p *APIProber) Run(ctx context.Context) error {
	p.mtx.Lock()
	p.ctx = ctx
	for _, t := range p.targets {
		p.start(t)
	}
	p.mtx.Unlock()

	<-ctx.Done()

	p.mtx.Lock()
	defer p.mtx.Unlock()
	for _, t := range p.targets {
		t.stop()
	}
	p.ctx = nil
	return nil
}

// start starts t's loop unless it runs. p.mtx is held.
func (p *APIProber) start(t *apiTarget) {
	if t.done != nil {
		return
	}
	ctx, cancel := context.WithCancel(p.ctx)
	t.cancel, t.done = cancel, make(chan struct{})
	go p.loop(ctx, t, t.done)
}

// stop stops t's loop, if it runs, and waits for it to end.
func (t *apiTarget) stop() {
	if t.done == nil {
		return
	}
	t.cancel()
	<-t.done
	t.cancel, t.done = nil, nil
}

// loop probes t at once and then every interval until ctx ends.
func (p *APIProber) loop(ctx context.Context, t *apiTarget, done chan<- struct{}) {
	defer close(done)
	// Keep-alive connections die with the loop; a new client takes over on a change.
	defer t.http.CloseIdleConnections()
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	logger := p.logger.With(config.ClusterLabel, t.cluster)
	wasUp := true // so that a first failed probe is logged
	for {
		start := p.now()
		err := t.probe(ctx)
		took := p.now().Sub(start)
		// Stopped in the middle of a probe (a reload, shutdown): its result says nothing
		// about the cluster.
		if ctx.Err() != nil {
			return
		}
		up := err == nil
		if rerr := p.record(t.cluster, start, up, took); rerr != nil {
			logger.Error("recording the API server probe", "err", rerr)
		}
		switch {
		case !up && wasUp:
			logger.Warn("cluster API server unreachable", "server", t.kube.Host, "err", err)
		case up && !wasUp:
			logger.Info("cluster API server reachable again", "server", t.kube.Host)
		}
		wasUp = up
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// probe asks the API server whether it is ready; nil means it answered 200 "ok" within the
// timeout.
func (t *apiTarget) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	// No retries: the probe reports what fleetwatch gets, and client-go's retries after a
	// Retry-After would only wait out the timeout.
	res := t.client.Get().AbsPath(readyzPath).MaxRetries(0).Do(ctx)
	var code int
	body, err := res.StatusCode(&code).Raw()
	if err != nil {
		return fmt.Errorf("GET %s: %w", readyzPath, err)
	}
	if got := strings.TrimSpace(string(body)); code != http.StatusOK || got != "ok" {
		const limit = 200
		if len(got) > limit {
			got = got[:limit] + "..."
		}
		return fmt.Errorf("GET %s: %d %q, want 200 \"ok\"", readyzPath, code, got)
	}
	return nil
}

// record writes one probe's result into the view at ts and sets the gauges.
func (p *APIProber) record(cluster string, ts time.Time, up bool, took time.Duration) error {
	v := 0.0
	if up {
		v = 1
	}
	p.up.WithLabelValues(cluster).Set(v)
	p.duration.WithLabelValues(cluster).Set(took.Seconds())
	return p.appendSamples(cluster, ts, v, took.Seconds())
}

// forget ends a cluster that is no longer probed: a staleness marker ends its series in the
// view, as Prometheus ends a target's, and its gauges go.
func (p *APIProber) forget(cluster string) {
	p.up.DeleteLabelValues(cluster)
	p.duration.DeleteLabelValues(cluster)
	stale := math.Float64frombits(value.StaleNaN)
	if err := p.appendSamples(cluster, p.now(), stale, stale); err != nil {
		// A probe recorded in the same millisecond; the series goes stale after the lookback.
		p.logger.Debug("ending the API probe series of a removed cluster", config.ClusterLabel, cluster, "err", err)
	}
}

func (p *APIProber) appendSamples(cluster string, ts time.Time, up, took float64) error {
	app := p.app.Appender(context.Background())
	t := timestamp.FromTime(ts)
	for _, s := range []struct {
		name string
		v    float64
	}{{APIUpMetric, up}, {APIProbeDurationMetric, took}} {
		ls := labels.FromStrings(labels.MetricName, s.name, config.ClusterLabel, cluster)
		if _, err := app.Append(0, ls, t, s.v); err != nil {
			_ = app.Rollback()
			return fmt.Errorf("append %s of %q: %w", s.name, cluster, err)
		}
	}
	return app.Commit()
}
