package query

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/util/stats"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// The result cache's metrics.
const (
	MetricResultCacheRequests      = "fleetwatch_query_result_cache_requests_total"
	MetricResultCacheInvalidations = "fleetwatch_query_result_cache_invalidations_total"
)

// What the result cache did with a range query (the result label of MetricResultCacheRequests).
const (
	CacheHit         = "hit"         // every piece old enough to cache came from the cache
	CacheMiss        = "miss"        // at least one such piece was computed (and cached)
	CacheUncacheable = "uncacheable" // nothing to cache: too fresh, unaligned, or start/end-dependent
)

// The response headers that say what the result cache did with a range query: CacheHit or
// CacheMiss (absent when nothing was cacheable), and how many of its pieces came from the
// cache, as "cached/total".
const (
	HeaderCache       = "X-Fleetwatch-Cache"
	HeaderCachePieces = "X-Fleetwatch-Cache-Pieces"
)

// MinStepsPerSplit is the fewest steps a cached piece holds: with a coarse step the pieces grow
// beyond query.result_cache.split_interval, so that a month at a one-hour step is not cut into
// 720 pieces of one point, each repeating every series' labels.
const MinStepsPerSplit = 60

// resultCache caches range-query results by step-aligned pieces ("splits"), the way Thanos's
// query-frontend and Cortex's results cache do, in fastcache as VictoriaMetrics caches rollup
// results. A range query is cut at multiples of the split length (a multiple of its step, so
// that every piece lies on the query's own step grid); a piece that ends more than `freshness`
// ago is taken from the cache, or computed whole and kept; the pieces younger than that are
// computed every time and never kept. A dashboard that refreshes the last 12 hours thus
// recomputes only the newest piece or two. PromQL evaluates every step of a range query on its
// own, so the merged pieces are the answer the whole query gives; expressions that depend on
// the query's start or end (`@ start()`, `@ end()`, duration expressions) or may read data
// younger than the evaluation time (`@` a timestamp, negative offsets) are never cut.
//
// Samples that arrive late (older than `freshness` when committed: a cluster catching up after
// a partition) invalidate the whole cache, as does a configuration reload.
type resultCache struct {
	c         *fastcache.Cache
	freshness time.Duration
	split     time.Duration
	gen       atomic.Uint64 // part of every key: bumping it drops every entry at once
	metrics   *cacheMetrics
	now       func() time.Time
}

type cacheMetrics struct {
	requests      *prometheus.CounterVec
	invalidations prometheus.Counter
}

func newCacheMetrics(reg prometheus.Registerer) *cacheMetrics {
	m := &cacheMetrics{
		requests: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: MetricResultCacheRequests,
			Help: "Range queries by what the result cache did: hit (every piece old enough to cache came from it), miss (some were computed and cached), or uncacheable.",
		}, []string{"result"}),
		invalidations: newCounter(reg, MetricResultCacheInvalidations,
			"Times the result cache was emptied because samples older than its freshness window arrived."),
	}
	// Every result from the start, so that a ratio of them has a series before the first hit.
	for _, r := range []string{CacheHit, CacheMiss, CacheUncacheable} {
		m.requests.WithLabelValues(r)
	}
	return m
}

func newCounter(reg prometheus.Registerer, name, help string) prometheus.Counter {
	return promauto.With(reg).NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func newResultCache(cfg config.ResultCacheConfig, m *cacheMetrics) *resultCache {
	return &resultCache{
		c:         fastcache.New(int(cfg.MaxSizeBytes)),
		freshness: time.Duration(cfg.Freshness),
		split:     time.Duration(cfg.SplitInterval),
		metrics:   m,
		now:       time.Now,
	}
}

func (c *resultCache) reset() { c.gen.Add(1); c.c.Reset() }

// written is told the oldest sample of every committed write; a sample old enough to fall
// into a cacheable piece empties the cache.
func (c *resultCache) written(mint int64) {
	if mint <= c.now().Add(-c.freshness).UnixMilli() {
		c.gen.Add(1)
		c.metrics.invalidations.Inc()
	}
}

// splitLen is the length in milliseconds of the pieces of a query with this step: a multiple
// of the step, at least the configured interval and MinStepsPerSplit steps.
func (c *resultCache) splitLen(step int64) int64 {
	n := (c.split.Milliseconds() + step - 1) / step
	return max(n, MinStepsPerSplit) * step
}

// splitRequest is what the HTTP API hands down to the engine through the request's context:
// the request may be cut and cached (no per-request statistics asked for), and the engine
// reports back how many pieces there were and how many came from the cache.
type splitRequest struct {
	pieces, cached, cacheable int
}

type splitRequestKey struct{}

// header is the HeaderCache value: hit, miss, or empty when nothing was cacheable.
func (s *splitRequest) header() string {
	switch {
	case s.cacheable == 0:
		return ""
	case s.cached == s.cacheable:
		return CacheHit
	default:
		return CacheMiss
	}
}

// serve lets the engine cut and cache r (see newRangeQuery), and tells in the response's
// HeaderCache whether the cacheable pieces came from the cache.
func (c *resultCache) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if r.FormValue("stats") != "" {
		// Statistics describe one execution; pieces from the cache have none.
		c.metrics.requests.WithLabelValues(CacheUncacheable).Inc()
		next.ServeHTTP(w, r)
		return
	}
	req := &splitRequest{}
	next.ServeHTTP(&cacheHeaderWriter{ResponseWriter: w, req: req}, r.WithContext(context.WithValue(r.Context(), splitRequestKey{}, req)))
}

type cacheHeaderWriter struct {
	http.ResponseWriter
	req     *splitRequest
	written bool
}

func (w *cacheHeaderWriter) WriteHeader(code int) {
	if !w.written {
		w.written = true
		if h := w.req.header(); h != "" {
			w.Header().Set(HeaderCache, h)
			w.Header().Set(HeaderCachePieces, strconv.Itoa(w.req.cached)+"/"+strconv.Itoa(w.req.pieces))
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *cacheHeaderWriter) Write(b []byte) (int, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// newRangeQuery returns a query that answers from cached pieces where it can. The whole query
// is always built first: a query the engine refuses fails exactly as it would uncached.
func (c *resultCache) newRangeQuery(ctx context.Context, req *splitRequest, eng promql.QueryEngine, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, step time.Duration) (promql.Query, error) {
	whole, err := eng.NewRangeQuery(ctx, q, opts, qs, start, end, step)
	if err != nil {
		return nil, err
	}
	s, e, st := start.UnixMilli(), end.UnixMilli(), step.Milliseconds()
	if st <= 0 || time.Duration(st)*time.Millisecond != step || !time.UnixMilli(s).Equal(start) || !time.UnixMilli(e).Equal(end) || s%st != 0 || !splittable(qs) {
		c.metrics.requests.WithLabelValues(CacheUncacheable).Inc()
		return whole, nil
	}
	var lookback time.Duration
	if opts != nil {
		lookback = opts.LookbackDelta()
	}
	return &splitQuery{
		c: c, req: req, eng: eng, q: q, opts: opts, qs: qs, whole: whole,
		start: s, end: e, step: st,
		keyPrefix: "qr\x00" + strconv.FormatInt(st, 10) + "\x00" + lookback.String() + "\x00" + qs + "\x00",
	}, nil
}

// splittable says whether every step of qs depends only on data up to that step and not on
// the query's start or end, so that the pieces of a range query are the whole query's answer.
func splittable(qs string) bool {
	expr, err := parser.ParseExpr(qs)
	if err != nil {
		return false
	}
	ok := true
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			ok = ok && n.StartOrEnd == 0 && n.Timestamp == nil && n.OriginalOffset >= 0 && n.OriginalOffsetExpr == nil
		case *parser.MatrixSelector:
			ok = ok && n.RangeExpr == nil
		case *parser.SubqueryExpr:
			ok = ok && n.StartOrEnd == 0 && n.Timestamp == nil && n.OriginalOffset >= 0 && n.OriginalOffsetExpr == nil && n.RangeExpr == nil && n.StepExpr == nil
		}
		if !ok {
			return errors.New("stop")
		}
		return nil
	})
	return ok
}

// splitQuery is a range query answered piece by piece.
type splitQuery struct {
	c                *resultCache
	req              *splitRequest
	eng              promql.QueryEngine
	q                storage.Queryable
	opts             promql.QueryOpts
	qs               string
	whole            promql.Query
	start, end, step int64
	keyPrefix        string

	mu     sync.Mutex
	subs   []promql.Query
	cancel context.CancelFunc
}

// piece is one split of the query: its step-aligned range, and whether it is old enough to
// be cached.
type piece struct {
	from, to  int64
	cacheable bool
	cached    []byte // the entry, when the cache had it
}

func (s *splitQuery) Exec(ctx context.Context) *promql.Result {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	s.cancel = cancel
	s.mu.Unlock()

	c := s.c
	gen := c.gen.Load()
	freshUntil := c.now().Add(-c.freshness).UnixMilli()
	l := c.splitLen(s.step)
	var pieces []piece
	for from := floorDiv(s.start, l) * l; from <= s.end; from += l {
		p := piece{from: from, to: from + l - s.step}
		p.cacheable = p.to <= freshUntil
		if p.cacheable {
			p.cached = c.get(s.key(gen, from))
		}
		pieces = append(pieces, p)
	}
	req := s.req
	req.pieces = len(pieces)
	for _, p := range pieces {
		if p.cacheable {
			req.cacheable++
			if p.cached != nil {
				req.cached++
			}
		}
	}
	if req.cacheable == 0 || c.annotated(s.annotatedKey(gen)) {
		return s.execWhole(ctx)
	}

	m := newMerger(s.start, s.end)
	for i := 0; i < len(pieces); {
		if p := pieces[i]; p.cached != nil {
			if err := m.addEncoded(p.cached); err != nil {
				return &promql.Result{Err: err}
			}
			i++
			continue
		}
		// Compute the run of pieces up to the next cached one in one query: cacheable pieces
		// whole (they are kept), fresh ones only as far as asked.
		j := i
		for j < len(pieces) && pieces[j].cached == nil {
			j++
		}
		run := pieces[i:j]
		from, to := run[0].from, run[len(run)-1].to
		if !run[0].cacheable {
			from = max(from, s.start)
		}
		if !run[len(run)-1].cacheable {
			to = min(to, s.end)
		}
		res := s.execRange(ctx, from, to)
		if res.Err != nil {
			if timedOut(ctx, res.Err) {
				// As the whole query would have: not run again, which would take as long.
				req.cacheable, req.cached = 0, 0
				c.metrics.requests.WithLabelValues(CacheUncacheable).Inc()
				return res
			}
			// The error may be of a step before or after the asked range (a piece computed
			// whole): the whole query answers.
			return s.execWhole(ctx)
		}
		if len(res.Warnings) > 0 {
			// Warnings and annotations depend on the range evaluated (a piece computed whole
			// reaches beyond the asked range), and a failing remote source is no answer to
			// keep: the whole query answers, as uncached, and the cache is not asked again
			// for this query for a while.
			c.setAnnotated(s.annotatedKey(gen))
			return s.execWhole(ctx)
		}
		mat, ok := res.Value.(promql.Matrix)
		if !ok {
			return &promql.Result{Err: errors.New("range query returned " + string(res.Value.Type()) + ", not a matrix")}
		}
		for _, p := range run {
			if p.cacheable {
				c.set(s.key(gen, p.from), encodePiece(mat, p.from, p.to))
			}
		}
		m.addMatrix(mat)
		i = j
	}
	if req.cached == req.cacheable {
		c.metrics.requests.WithLabelValues(CacheHit).Inc()
	} else {
		c.metrics.requests.WithLabelValues(CacheMiss).Inc()
	}
	return &promql.Result{Value: m.matrix()}
}

// execWhole answers with the whole query, uncached.
func (s *splitQuery) execWhole(ctx context.Context) *promql.Result {
	s.req.cacheable, s.req.cached = 0, 0
	s.c.metrics.requests.WithLabelValues(CacheUncacheable).Inc()
	return s.whole.Exec(ctx)
}

// timedOut says whether a query failed for its time running out or being cancelled.
func timedOut(ctx context.Context, err error) bool {
	var timeout promql.ErrQueryTimeout
	var canceled promql.ErrQueryCanceled
	return ctx.Err() != nil || errors.As(err, &timeout) || errors.As(err, &canceled) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

func (s *splitQuery) execRange(ctx context.Context, from, to int64) *promql.Result {
	sub, err := s.eng.NewRangeQuery(ctx, s.q, s.opts, s.qs, time.UnixMilli(from), time.UnixMilli(to), time.Duration(s.step)*time.Millisecond)
	if err != nil {
		return &promql.Result{Err: err}
	}
	s.mu.Lock()
	s.subs = append(s.subs, sub)
	s.mu.Unlock()
	return sub.Exec(ctx)
}

// key names a piece: the query, its step and lookback, the piece's start, and the cache's
// generation.
func (s *splitQuery) key(gen uint64, from int64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64([]byte(s.keyPrefix), gen), uint64(from))
}

func (s *splitQuery) annotatedKey(gen uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(s.keyPrefix+"annotated\x00"), gen)
}

func (s *splitQuery) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.whole.Close()
	for _, q := range s.subs {
		q.Close()
	}
	s.subs = nil
}

func (s *splitQuery) Statement() parser.Statement { return s.whole.Statement() }

// Stats is empty: pieces from the cache were not executed (a request that asks for statistics
// is never cut).
func (s *splitQuery) Stats() *stats.Statistics {
	return &stats.Statistics{Timers: stats.NewQueryTimers(), Samples: stats.NewQuerySamples(false)}
}
func (s *splitQuery) String() string { return s.qs }

func (s *splitQuery) Cancel() {
	s.whole.Cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// An entry starts with the full key it was stored under: fastcache finds entries by a hash of
// the key, and a collision must read as a miss, never as another query's answer.
const pieceVersion = 1

// maxPieceBytes keeps one huge piece from evicting everything else.
const maxPieceBytes = 16 << 20

func (c *resultCache) get(key []byte) []byte {
	v := c.c.GetBig(nil, key)
	if len(v) == 0 || v[0] != pieceVersion {
		return nil
	}
	n, w := binary.Uvarint(v[1:])
	if w <= 0 || uint64(len(v)-1-w) < n || !bytes.Equal(v[1+w:1+w+int(n)], key) {
		return nil
	}
	return v[1+w+int(n):]
}

// annotated says whether a query answered with warnings or annotations less than `freshness`
// (at least a minute) ago.
func (c *resultCache) annotated(key []byte) bool {
	v := c.get(key)
	return len(v) == 8 && c.now().UnixMilli() < int64(binary.BigEndian.Uint64(v))
}

func (c *resultCache) setAnnotated(key []byte) {
	until := c.now().Add(max(c.freshness, time.Minute)).UnixMilli()
	c.set(key, binary.BigEndian.AppendUint64(nil, uint64(until)))
}

func (c *resultCache) set(key, body []byte) {
	if body == nil {
		return
	}
	entry := append([]byte{pieceVersion}, binary.AppendUvarint(nil, uint64(len(key)))...)
	entry = append(append(entry, key...), body...)
	if len(entry) > maxPieceBytes {
		return
	}
	c.c.SetBig(key, entry)
}

// encodePiece encodes the points of mat in [from, to]: per series its labels and its samples
// as a Gorilla (XOR) chunk, the TSDB's own lossless encoding. It returns nil (not cacheable)
// for a piece with native histograms.
func encodePiece(mat promql.Matrix, from, to int64) []byte {
	var (
		out  []byte
		n    int
		body []byte
	)
	for _, ser := range mat {
		for _, h := range ser.Histograms {
			if h.T >= from && h.T <= to {
				return nil
			}
		}
		chk := chunkenc.NewXORChunk()
		app, err := chk.Appender()
		if err != nil {
			return nil
		}
		count := 0
		for _, p := range ser.Floats {
			if p.T >= from && p.T <= to {
				app.Append(p.T, p.F)
				count++
			}
		}
		if count == 0 {
			continue
		}
		n++
		body = binary.AppendUvarint(body, uint64(ser.Metric.Len()))
		ser.Metric.Range(func(l labels.Label) {
			body = binary.AppendUvarint(body, uint64(len(l.Name)))
			body = append(body, l.Name...)
			body = binary.AppendUvarint(body, uint64(len(l.Value)))
			body = append(body, l.Value...)
		})
		b := chk.Bytes()
		body = binary.AppendUvarint(body, uint64(len(b)))
		body = append(body, b...)
	}
	out = binary.AppendUvarint(out, uint64(n))
	return append(out, body...)
}

// merger joins the pieces of a range query into one matrix, in time order, keeping the points
// in [start, end].
type merger struct {
	start, end int64
	byHash     map[uint64][]int
	out        promql.Matrix
	sb         labels.ScratchBuilder
}

func newMerger(start, end int64) *merger {
	return &merger{start: start, end: end, byHash: map[uint64][]int{}}
}

func (m *merger) series(ls labels.Labels) *promql.Series {
	h := ls.Hash()
	for _, i := range m.byHash[h] {
		if labels.Equal(m.out[i].Metric, ls) {
			return &m.out[i]
		}
	}
	m.byHash[h] = append(m.byHash[h], len(m.out))
	m.out = append(m.out, promql.Series{Metric: ls})
	return &m.out[len(m.out)-1]
}

func (m *merger) addMatrix(mat promql.Matrix) {
	for _, ser := range mat {
		var dst *promql.Series
		for _, p := range ser.Floats {
			if p.T >= m.start && p.T <= m.end {
				if dst == nil {
					dst = m.series(ser.Metric)
				}
				dst.Floats = append(dst.Floats, p)
			}
		}
		for _, p := range ser.Histograms {
			if p.T >= m.start && p.T <= m.end {
				if dst == nil {
					dst = m.series(ser.Metric)
				}
				dst.Histograms = append(dst.Histograms, promql.HPoint{T: p.T, H: p.H.Copy()})
			}
		}
	}
}

var errCorruptPiece = errors.New("result cache: corrupt entry")

func (m *merger) addEncoded(b []byte) error {
	uv := func() (uint64, bool) {
		v, w := binary.Uvarint(b)
		if w <= 0 {
			return 0, false
		}
		b = b[w:]
		return v, true
	}
	str := func() (string, bool) {
		n, ok := uv()
		if !ok || uint64(len(b)) < n {
			return "", false
		}
		s := string(b[:n])
		b = b[n:]
		return s, true
	}
	n, ok := uv()
	if !ok {
		return errCorruptPiece
	}
	for range n {
		nl, ok := uv()
		if !ok {
			return errCorruptPiece
		}
		m.sb.Reset()
		for range nl {
			name, ok1 := str()
			value, ok2 := str()
			if !ok1 || !ok2 {
				return errCorruptPiece
			}
			m.sb.Add(name, value)
		}
		cl, ok := uv()
		if !ok || uint64(len(b)) < cl {
			return errCorruptPiece
		}
		chk, err := chunkenc.FromData(chunkenc.EncXOR, b[:cl])
		if err != nil {
			return errCorruptPiece
		}
		b = b[cl:]
		var dst *promql.Series
		it := chk.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			t, v := it.At()
			if t < m.start || t > m.end {
				continue
			}
			if dst == nil {
				dst = m.series(m.sb.Labels())
			}
			dst.Floats = append(dst.Floats, promql.FPoint{T: t, F: v})
		}
		if it.Err() != nil {
			return errCorruptPiece
		}
	}
	return nil
}

// matrix is the merged answer, sorted by labels as both engines sort a range query's.
func (m *merger) matrix() promql.Matrix {
	sort.Sort(m.out)
	return m.out
}
