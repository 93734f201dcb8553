package query

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/promql-engine/engine"

	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/promqlengine"
)

// Options configure a View.
type Options struct {
	// Dir is the TSDB directory. Required.
	Dir string
	// Retention is how long samples are kept; 0 means the TSDB default (15d).
	Retention time.Duration
	// Logger defaults to discarding; Registerer to not registering metrics.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// RemoteSources builds the remote queryables for a config; nil uses NewRemoteSources.
	RemoteSources func(config.QueryConfig) ([]RemoteSource, error)
}

// View is the global view: the embedded TSDB, merged with remote sources, deduplicated, and
// queried with PromQL.
type View struct {
	opts    Options
	logger  *slog.Logger
	db      *tsdb.DB
	stats   *tsdb.DBStats
	meta    *metadataStore
	metrics *viewMetrics

	// engines are built once: their metrics can be registered only once. Which one answers
	// is part of the reloadable state.
	thanos *engine.Engine
	prom   *promql.Engine

	state atomic.Pointer[state]
}

// state is what a config reload replaces.
type state struct {
	cfg       config.QueryConfig
	queryable storage.Queryable
	engine    promql.QueryEngine
	cache     *resultCache
	remotes   []RemoteSource
}

type viewMetrics struct {
	fallbacks, wideWindows, selectors prometheus.Counter
	cache                             *cacheMetrics
}

// Open opens (or creates) the TSDB in o.Dir, replaying its WAL, and returns a View with the
// default query configuration. Call ApplyConfig to change it.
func Open(o Options) (*View, error) {
	if o.Dir == "" {
		return nil, errors.New("query: Options.Dir is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RemoteSources == nil {
		o.RemoteSources = NewRemoteSources
	}
	v := &View{opts: o, logger: o.Logger.With("component", "query"), meta: newMetadataStore(), stats: tsdb.NewDBStats()}
	topts := tsdb.DefaultOptions()
	if o.Retention > 0 {
		topts.RetentionDuration = o.Retention.Milliseconds()
	}
	// Exemplars arrive with remote-write; keep a bounded ring of them as Prometheus does.
	topts.EnableExemplarStorage = true
	topts.MaxExemplars = 100_000
	db, err := tsdb.Open(o.Dir, v.logger.With("subcomponent", "tsdb"), o.Registerer, topts, v.stats)
	if err != nil {
		return nil, fmt.Errorf("open TSDB in %s: %w", o.Dir, err)
	}
	v.db = db

	reg := o.Registerer
	v.metrics = &viewMetrics{
		fallbacks: newCounter(reg, promqlengine.MetricFallbacks,
			"Range queries the Thanos engine does not implement, answered by Prometheus's engine (instant queries all run there and are not counted)."),
		wideWindows: newCounter(reg, promqlengine.MetricWideWindows,
			"Range queries answered by Prometheus's engine because a range-vector window spans more steps than the Thanos engine evaluates faster."),
		selectors: newCounter(reg, promqlengine.MetricSelectors,
			"Range queries answered by Prometheus's engine because they are a bare selector, which it evaluates faster."),
		cache: newCacheMetrics(reg),
	}
	eopts := promql.EngineOpts{
		Logger:                   v.logger.With("subcomponent", "engine"),
		Reg:                      reg,
		MaxSamples:               config.DefaultQuery.MaxSamples,
		Timeout:                  time.Duration(config.DefaultQuery.Timeout),
		LookbackDelta:            time.Duration(config.DefaultQuery.LookbackDelta),
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
		EnablePerStepStats:       true,
		NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() },
	}
	v.prom = promql.NewEngine(eopts)
	// The Thanos engine registers metrics of its own; the Prometheus engine above already has
	// the promql ones.
	topt := eopts
	topt.Reg = nil
	v.thanos = engine.New(engine.Opts{EngineOpts: topt})
	if err := v.ApplyConfig(config.DefaultQuery); err != nil {
		db.Close()
		return nil, err
	}
	return v, nil
}

// ApplyConfig replaces the query settings: engine, remote sources, replica labels and cache.
// Queries already running finish with the old ones.
func (v *View) ApplyConfig(cfg config.QueryConfig) error {
	remotes, err := v.opts.RemoteSources(cfg)
	if err != nil {
		return fmt.Errorf("remote sources: %w", err)
	}
	var q storage.Queryable = v.db
	if len(remotes) > 0 {
		q = &mergedQueryable{local: v.db, remotes: remotes}
	}
	if len(cfg.ReplicaLabels) > 0 {
		q = &dedupQueryable{Queryable: q, replicaLabels: cfg.ReplicaLabels}
	}
	var eng promql.QueryEngine = v.prom
	if cfg.Engine == config.EngineThanos {
		eng = &promqlengine.Engine{Thanos: v.thanos, Prom: v.prom, Fallbacks: v.metrics.fallbacks, WideWindows: v.metrics.wideWindows, Selectors: v.metrics.selectors}
	}
	eng = &limitedEngine{QueryEngine: eng, timeout: time.Duration(cfg.Timeout), lookback: time.Duration(cfg.LookbackDelta)}
	var cache *resultCache
	if old := v.state.Load(); old != nil && old.cache != nil && old.cfg.ResultCache == cfg.ResultCache {
		cache = old.cache
		cache.reset() // remote sources or dedup may have changed what a query returns
	} else if cfg.ResultCache.MaxSizeBytes > 0 {
		cache = newResultCache(cfg.ResultCache, v.metrics.cache)
	}
	old := v.state.Swap(&state{cfg: cfg, queryable: q, engine: eng, cache: cache, remotes: remotes})
	if old != nil {
		// A query that still holds an old source fails with a warning naming it; that is the
		// price of not blocking reloads on long queries.
		closeSources(old.remotes)
	}
	v.logger.Info("query configuration applied", "engine", cfg.Engine, "remote_sources", sourceNames(remotes), "replica_labels", fmt.Sprint(cfg.ReplicaLabels))
	return nil
}

// Appendable is where the collector writes: the TSDB, telling the result cache the oldest
// sample of each commit (a late sample empties it).
func (v *View) Appendable() storage.Appendable { return v.AppendableOver(v.db) }

// AppendableOver is Appendable for samples kept elsewhere (ingest.forward: Thanos Receive) and
// read back through a remote source: a late one still empties the result cache.
func (v *View) AppendableOver(next storage.Appendable) storage.Appendable {
	return lateAppendable{v, next}
}

type lateAppendable struct {
	v    *View
	next storage.Appendable
}

func (a lateAppendable) Appender(ctx context.Context) storage.Appender {
	return &lateAppender{Appender: a.next.Appender(ctx), v: a.v, mint: math.MaxInt64}
}

// lateAppender notes the oldest sample it appends, and tells the result cache after a commit.
type lateAppender struct {
	storage.Appender
	v    *View
	mint int64
}

func (a *lateAppender) Append(ref storage.SeriesRef, l labels.Labels, t int64, f float64) (storage.SeriesRef, error) {
	a.mint = min(a.mint, t)
	return a.Appender.Append(ref, l, t, f)
}

func (a *lateAppender) AppendHistogram(ref storage.SeriesRef, l labels.Labels, t int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	a.mint = min(a.mint, t)
	return a.Appender.AppendHistogram(ref, l, t, h, fh)
}

func (a *lateAppender) Commit() error {
	if err := a.Appender.Commit(); err != nil {
		return err
	}
	if c := a.v.state.Load().cache; c != nil && a.mint != math.MaxInt64 {
		c.written(a.mint)
	}
	return nil
}

// DB is the embedded TSDB.
func (v *View) DB() *tsdb.DB { return v.db }

// Querier implements storage.Queryable over the whole view (local, remote, deduplicated).
func (v *View) Querier(mint, maxt int64) (storage.Querier, error) {
	return v.state.Load().queryable.Querier(mint, maxt)
}

// ChunkQuerier serves the local TSDB to remote-read clients of fleetwatch.
func (v *View) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	return v.db.ChunkQuerier(mint, maxt)
}

// NewInstantQuery implements promql.QueryEngine with the configured engine.
func (v *View) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	return v.state.Load().engine.NewInstantQuery(ctx, q, opts, qs, ts)
}

// NewRangeQuery implements promql.QueryEngine with the configured engine. A range query of
// the HTTP API is answered through the result cache when it is on.
func (v *View) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, step time.Duration) (promql.Query, error) {
	st := v.state.Load()
	if req, ok := ctx.Value(splitRequestKey{}).(*splitRequest); ok && st.cache != nil {
		return st.cache.newRangeQuery(ctx, req, st.engine, q, opts, qs, start, end, step)
	}
	return st.engine.NewRangeQuery(ctx, q, opts, qs, start, end, step)
}

// SetMetadata records metric metadata (collector.MetadataSink).
func (v *View) SetMetadata(cluster, metric, typ, help, unit string) {
	v.meta.set(metric, typ, help, unit)
}

// Close closes the TSDB. Nothing may write or query after it.
func (v *View) Close() error { return v.db.Close() }

// limitedEngine applies the configured timeout and lookback delta per query, so a reload can
// change them without building new engines.
type limitedEngine struct {
	promql.QueryEngine
	timeout  time.Duration
	lookback time.Duration
}

type queryOpts struct {
	perStep  bool
	lookback time.Duration
}

func (o queryOpts) EnablePerStepStats() bool     { return o.perStep }
func (o queryOpts) LookbackDelta() time.Duration { return o.lookback }

func (l *limitedEngine) opts(o promql.QueryOpts) promql.QueryOpts {
	q := queryOpts{lookback: l.lookback}
	if o != nil {
		q.perStep = o.EnablePerStepStats()
		if o.LookbackDelta() > 0 {
			q.lookback = o.LookbackDelta()
		}
	}
	return q
}

func (l *limitedEngine) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	qry, err := l.QueryEngine.NewInstantQuery(ctx, q, l.opts(opts), qs, ts)
	return timeoutQuery(qry, err, l.timeout)
}

func (l *limitedEngine) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, step time.Duration) (promql.Query, error) {
	qry, err := l.QueryEngine.NewRangeQuery(ctx, q, l.opts(opts), qs, start, end, step)
	return timeoutQuery(qry, err, l.timeout)
}

func timeoutQuery(q promql.Query, err error, d time.Duration) (promql.Query, error) {
	if err != nil {
		return nil, err
	}
	return &timedQuery{Query: q, timeout: d}, nil
}

type timedQuery struct {
	promql.Query
	timeout time.Duration
}

func (t *timedQuery) Exec(ctx context.Context) *promql.Result {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	return t.Query.Exec(ctx)
}

// Ensure the View can stand wherever Prometheus expects a queryable and an engine.
var (
	_ storage.SampleAndChunkQueryable = (*View)(nil)
	_ promql.QueryEngine              = (*View)(nil)
)

func (v *View) retention() model.Duration {
	if v.opts.Retention > 0 {
		return model.Duration(v.opts.Retention)
	}
	return model.Duration(time.Duration(tsdb.DefaultOptions().RetentionDuration) * time.Millisecond)
}

// CheckConfig says whether ApplyConfig would accept cfg, without switching: the remote sources
// are built and closed again.
func (v *View) CheckConfig(cfg config.QueryConfig) error {
	remotes, err := v.opts.RemoteSources(cfg)
	if err != nil {
		return fmt.Errorf("remote sources: %w", err)
	}
	closeSources(remotes)
	return nil
}
