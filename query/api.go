package query

import (
	"context"
	"encoding/json"
	"github.com/grafana/regexp"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/route"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/notifications"
	v1 "github.com/prometheus/prometheus/web/api/v1"
)

// APIOptions are what the HTTP API needs from the rest of fleetwatch.
type APIOptions struct {
	// Targets lists the federation scrape targets; nil means none.
	Targets func(context.Context) v1.TargetRetriever
	// Rules lists rule groups and alerts for /api/v1/rules and /api/v1/alerts; nil means none.
	Rules func(context.Context) v1.RulesRetriever
	// Ready reports whether fleetwatch is ready to answer queries; nil means always.
	Ready func() bool
	// BuildInfo is served at /api/v1/status/buildinfo.
	BuildInfo *v1.PrometheusVersion
	// Flags are served at /api/v1/status/flags.
	Flags         map[string]string
	ListenAddress string
	Gatherer      prometheus.Gatherer
	Registerer    prometheus.Registerer
}

// Handler returns the Prometheus HTTP API over the view, mounted at /api/v1. It is
// Prometheus's own API implementation, so the JSON (errors, warnings, resultType, stats) is
// exactly Prometheus's, and Grafana's Prometheus data source works unchanged.
func (v *View) Handler(o APIOptions) http.Handler {
	start := time.Now()
	if o.Targets == nil {
		o.Targets = func(context.Context) v1.TargetRetriever { return noTargets{} }
	}
	if o.Rules == nil {
		o.Rules = func(context.Context) v1.RulesRetriever { return noRules{} }
	}
	ready := func(f http.HandlerFunc) http.HandlerFunc {
		if o.Ready == nil {
			return f
		}
		return func(w http.ResponseWriter, r *http.Request) {
			if !o.Ready() {
				http.Error(w, "fleetwatch is not ready yet", http.StatusServiceUnavailable)
				return
			}
			f(w, r)
		}
	}
	if o.BuildInfo == nil {
		o.BuildInfo = &v1.PrometheusVersion{GoVersion: runtime.Version()}
	}
	gatherer := o.Gatherer
	if gatherer == nil {
		gatherer = prometheus.NewRegistry()
	}
	api := v1.NewAPI(
		v, v, nil, v.db,
		func(ctx context.Context) v1.ScrapePoolsRetriever { return scrapePools{o.Targets(ctx)} },
		o.Targets,
		func(context.Context) v1.AlertmanagerRetriever { return noAlertmanagers{} },
		func() promconfig.Config { return promconfig.Config{} },
		o.Flags,
		v1.GlobalURLOptions{ListenAddress: o.ListenAddress, Host: o.ListenAddress, Scheme: "http"},
		ready,
		adminStats{v.db, v.stats},
		v.opts.Dir,
		false, // the admin API (delete series, snapshots) stays off
		v.logger.With("subcomponent", "api"),
		o.Rules,
		5e7, 10, 1048576, // remote-read limits: Prometheus's defaults
		false,
		regexp.MustCompile(".*"),
		func() (v1.RuntimeInfo, error) {
			cwd, _ := os.Getwd()
			host, _ := os.Hostname()
			return v1.RuntimeInfo{
				StartTime: start, CWD: cwd, Hostname: host, ServerTime: time.Now().UTC(),
				ReloadConfigSuccess: true, GoroutineCount: runtime.NumGoroutine(), GOMAXPROCS: runtime.GOMAXPROCS(0),
				GOGC: os.Getenv("GOGC"), GODEBUG: os.Getenv("GODEBUG"), StorageRetention: v.retention().String(),
			}, nil
		},
		o.BuildInfo,
		func() []notifications.Notification { return nil },
		func() (<-chan notifications.Notification, func(), bool) { return nil, func() {}, false },
		gatherer,
		nil, // registers nothing: fleetwatch's own receiver serves /api/v1/write
		nil,
		false, nil, // remote-write: served by the collector, not by this API
		false, false, false, false,
		time.Duration(v.state.Load().cfg.LookbackDelta),
		false, false, nil, nil,
	)
	router := route.New()
	api.Register(router.WithPrefix("/api/v1"))

	mux := http.NewServeMux()
	mux.Handle("/api/v1/", router)
	mux.Handle("GET /api/v1/metadata", ready(v.serveMetadata(o.Targets)))
	rangeQueries := http.Handler(router)
	mux.Handle("/api/v1/query_range", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := v.state.Load().cache; c != nil {
			c.serve(w, r, rangeQueries)
			return
		}
		rangeQueries.ServeHTTP(w, r)
	}))
	return partialResponse(mux)
}

// partialResponse reads Thanos's partial_response parameter into the context: true (the
// default) answers with a warning when a remote source fails, false fails the query.
func partialResponse(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := r.FormValue("partial_response"); s != "" {
			allowed, err := strconv.ParseBool(s)
			if err != nil {
				writeAPIError(w, http.StatusBadRequest, "bad_data", "invalid parameter \"partial_response\": "+err.Error())
				return
			}
			r = r.WithContext(WithPartialResponse(r.Context(), allowed))
		}
		next.ServeHTTP(w, r)
	})
}

// serveMetadata answers /api/v1/metadata from the metadata that clusters send with
// remote-write, plus what the federation scrapes saw, in Prometheus's format.
func (v *View) serveMetadata(targets func(context.Context) v1.TargetRetriever) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		limit, limitPerMetric := -1, -1
		for name, dst := range map[string]*int{"limit": &limit, "limit_per_metric": &limitPerMetric} {
			if s := r.FormValue(name); s != "" {
				n, err := strconv.Atoi(s)
				if err != nil {
					writeAPIError(w, http.StatusBadRequest, "bad_data", name+" must be a number")
					return
				}
				*dst = n
			}
		}
		metric := r.FormValue("metric")
		out := v.meta.list(metric, -1, -1)
		for _, tt := range targets(r.Context()).TargetsActive() {
			for _, t := range tt {
				for _, mm := range t.ListMetadata() {
					if metric != "" && mm.MetricFamily != metric {
						continue
					}
					m := metadata.Metadata{Type: mm.Type, Help: mm.Help, Unit: mm.Unit}
					if !containsMeta(out[mm.MetricFamily], m) {
						out[mm.MetricFamily] = append(out[mm.MetricFamily], m)
					}
				}
			}
		}
		res := map[string][]metadata.Metadata{}
		for name, ms := range out {
			if limit >= 0 && len(res) >= limit {
				break
			}
			if limitPerMetric > 0 && len(ms) > limitPerMetric {
				ms = ms[:limitPerMetric]
			}
			res[name] = ms
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": res})
	}
}

func containsMeta(ms []metadata.Metadata, m metadata.Metadata) bool {
	for _, have := range ms {
		if have == m {
			return true
		}
	}
	return false
}

// writeAPIError answers in Prometheus's error format.
func writeAPIError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"status": "error", "errorType": typ, "error": msg})
}

type noTargets struct{}

func (noTargets) TargetsActive() map[string][]*scrape.Target  { return nil }
func (noTargets) TargetsDropped() map[string][]*scrape.Target { return nil }
func (noTargets) TargetsDroppedCounts() map[string]int        { return nil }
func (noTargets) ScrapePoolConfig(string) (*promconfig.ScrapeConfig, error) {
	return nil, nil
}

type scrapePools struct{ t v1.TargetRetriever }

func (s scrapePools) ScrapePools() []string {
	var out []string
	for name := range s.t.TargetsActive() {
		out = append(out, name)
	}
	return out
}

type noRules struct{}

func (noRules) RuleGroups() []*rules.Group           { return nil }
func (noRules) AlertingRules() []*rules.AlertingRule { return nil }

type noAlertmanagers struct{}

func (noAlertmanagers) Alertmanagers() []*url.URL        { return nil }
func (noAlertmanagers) DroppedAlertmanagers() []*url.URL { return nil }

// adminStats gives Prometheus's API the TSDB statistics it serves at /api/v1/status/tsdb.
type adminStats struct {
	db    *tsdb.DB
	stats *tsdb.DBStats
}

func (a adminStats) CleanTombstones() error { return a.db.CleanTombstones() }
func (a adminStats) Delete(ctx context.Context, mint, maxt int64, ms ...*labels.Matcher) error {
	return a.db.Delete(ctx, mint, maxt, ms...)
}
func (a adminStats) Snapshot(dir string, withHead bool) error { return a.db.Snapshot(dir, withHead) }
func (a adminStats) Stats(name string, limit int) (*tsdb.Stats, error) {
	return a.db.Head().Stats(name, limit), nil
}
func (a adminStats) WALReplayStatus() (tsdb.WALReplayStatus, error) {
	return a.stats.Head.WALReplayStatus.GetWALReplayStatus(), nil
}
func (a adminStats) BlockMetas() ([]tsdb.BlockMeta, error) { return a.db.BlockMetas(), nil }
