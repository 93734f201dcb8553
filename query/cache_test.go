package query

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// cacheFixture is a view with the result cache on, a clock of its own, and three hours of
// data starting on an hour; next to it the same data in a view with the cache off.
type cacheFixture struct {
	cached, plain *viewFixture
	now           time.Time
}

func cacheConfig(engine string) config.QueryConfig {
	cfg := config.DefaultQuery
	cfg.Engine = engine
	cfg.ResultCache = config.ResultCacheConfig{MaxSizeBytes: 32 << 20, Freshness: model.Duration(5 * time.Minute), SplitInterval: model.Duration(time.Hour)}
	return cfg
}

func newCacheFixture(t *testing.T, engine string) *cacheFixture {
	cfg := cacheConfig(engine)
	f := &cacheFixture{cached: newView(t, cfg)}
	cfg.ResultCache.MaxSizeBytes = 0
	f.plain = newView(t, cfg)
	base := time.Now().Add(-4 * time.Hour).Truncate(time.Hour)
	f.cached.base, f.plain.base = base, base
	f.now = base.Add(3*time.Hour + 2*time.Minute)
	f.cached.v.state.Load().cache.now = func() time.Time { return f.now }
	f.write(t, f.cached.v.Appendable(), 0, 3*3600)
	f.write(t, f.plain.v.Appendable(), 0, 3*3600)
	return f
}

// write appends the fixture's series every 10s from fromSec to toSec after base, all series
// at each timestamp (the TSDB head takes samples in time order).
func (f *cacheFixture) write(t *testing.T, a storage.Appendable, fromSec, toSec int) {
	t.Helper()
	app := a.Appender(context.Background())
	for s := fromSec; s <= toSec; s += 10 {
		ts := f.cached.base.Add(time.Duration(s) * time.Second).UnixMilli()
		for i, c := range []string{"eu-1", "us-1", "ap-1"} {
			// A counter with a reset every 47 minutes.
			_, err := app.Append(0, labels.FromStrings("__name__", "c", "cluster", c), ts, float64((s%(47*60))*(i+1)))
			require.NoError(t, err)
			// A gauge that is absent from 40 to 80 minutes in eu-1 (staleness).
			g := labels.FromStrings("__name__", "m", "cluster", c)
			switch {
			case i == 0 && s == 40*60:
				_, err = app.Append(0, g, ts, math.Float64frombits(value.StaleNaN))
			case i == 0 && s > 40*60 && s < 80*60:
			default:
				_, err = app.Append(0, g, ts, math.Sin(float64(s)/600)*float64(10+i))
			}
			require.NoError(t, err)
		}
		// A series that appears only in the third hour.
		if s >= 2*3600+15*60 {
			_, err := app.Append(0, labels.FromStrings("__name__", "m", "cluster", "late-1"), ts, float64(s))
			require.NoError(t, err)
		}
		// A native histogram.
		h := &histogram.Histogram{Count: uint64(s), Sum: float64(s), Schema: 0, ZeroThreshold: 0.001,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []int64{int64(s)}}
		_, err := app.AppendHistogram(0, labels.FromStrings("__name__", "h", "cluster", "eu-1"), ts, h, nil)
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())
}

func (f *cacheFixture) rangeQuery(t *testing.T, vf *viewFixture, q string, start, end time.Time, step string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	params := url.Values{"query": {q}, "start": {strconv.FormatInt(start.Unix(), 10)}, "end": {strconv.FormatInt(end.Unix(), 10)}, "step": {step}}
	vf.h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/v1/query_range?"+params.Encode(), nil))
	return w
}

// same asks both views and requires the same answer; it returns the cached view's response.
// On Prometheus's engine the same answer is byte-equal. On the Thanos engine it is byte-equal
// but for info annotations: that engine adds "metric might not be a counter" when a range
// selector has run to the end of its range, which for a selector under a subquery depends on
// the order its goroutines run in (the uncached query, asked twice, differs). Warnings are
// never missing: an answer with any annotation is not cut.
func (f *cacheFixture) same(t *testing.T, q string, start, end time.Time, step string) *httptest.ResponseRecorder {
	t.Helper()
	want := f.rangeQuery(t, f.plain, q, start, end, step)
	got := f.rangeQuery(t, f.cached, q, start, end, step)
	require.Equal(t, want.Code, got.Code, "%s: %s", q, got.Body.String())
	if f.cached.v.state.Load().cfg.Engine == config.EnginePrometheus {
		require.Equal(t, want.Body.String(), got.Body.String(), "%s from %s to %s step %s", q, start, end, step)
		return got
	}
	withoutInfos := func(b []byte) string {
		var m map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(b, &m))
		delete(m, "infos")
		out, err := json.Marshal(m)
		require.NoError(t, err)
		return string(out)
	}
	require.Equal(t, withoutInfos(want.Body.Bytes()), withoutInfos(got.Body.Bytes()), "%s from %s to %s step %s", q, start, end, step)
	return got
}

func (f *cacheFixture) requests(result string) float64 {
	return testutil.ToFloat64(f.cached.v.metrics.cache.requests.WithLabelValues(result))
}

// TestResultCacheAnswersAsUncached asks the same range queries of a view with the cache and one
// without, on both engines, and requires byte-equal answers: when the pieces are computed and
// kept, and when they come from the cache.
func TestResultCacheAnswersAsUncached(t *testing.T) {
	queries := []string{
		`m`, `sum(m)`, `sum by (cluster) (rate(c[5m]))`, `increase(c[20m])`, `resets(c[1h])`,
		`max_over_time(m[20m])`, `m offset 10m`, `timestamp(m)`, `count(m > 5)`,
		`max_over_time(rate(c[5m])[30m:1m])`, `label_replace(m, "x", "$1", "cluster", "(.*)-1")`,
		`1`, `vector(time())`, `absent(nope)`, `histogram_count(h)`, `h`,
		`sum(rate(c[5m])) / sum(rate(c[5m] offset 1h))`,
	}
	for _, engine := range []string{config.EngineThanos, config.EnginePrometheus} {
		t.Run(engine, func(t *testing.T) {
			f := newCacheFixture(t, engine)
			b := f.cached.base
			ranges := []struct {
				start, end time.Time
				step       string
			}{
				{b, b.Add(3 * time.Hour), "60"},                                      // whole hours, up to the fresh end
				{b.Add(17 * time.Minute), b.Add(2*time.Hour + 31*time.Minute), "60"}, // inside pieces at both ends
				{b.Add(20 * time.Minute), b.Add(3*time.Hour + 2*time.Minute), "30"},  // up to now: fresh pieces
				{b.Add(-30 * time.Minute), b.Add(time.Hour), "15"},                   // before the data begins
				{b.Add(30 * time.Second), b.Add(2 * time.Hour), "90"},                // a step that does not divide an hour
				{b.Add(time.Hour), b.Add(time.Hour), "60"},                           // one step
			}
			for _, q := range queries {
				for _, r := range ranges {
					f.same(t, q, r.start, r.end, r.step) // computed (and kept where old enough)
					f.same(t, q, r.start, r.end, r.step) // from the cache where kept
				}
			}
			require.Positive(t, f.requests(CacheHit))
			require.Positive(t, f.requests(CacheMiss))
		})
	}
}

func TestResultCachePieces(t *testing.T) {
	f := newCacheFixture(t, config.EngineThanos)
	b := f.cached.base

	// Three hours and a half before now: pieces 0h-1h and 1h-2h are old enough, 2h-3h ends
	// 2 minutes before now (under the 5-minute freshness) and 3h-4h holds now.
	start, end := b.Add(10*time.Minute), b.Add(3*time.Hour)
	w := f.same(t, "sum(m)", start, end, "60")
	require.Equal(t, CacheMiss, w.Header().Get(HeaderCache))
	require.Equal(t, "0/4", w.Header().Get(HeaderCachePieces))
	w = f.same(t, "sum(m)", start, end, "60")
	require.Equal(t, CacheHit, w.Header().Get(HeaderCache))
	require.Equal(t, "2/4", w.Header().Get(HeaderCachePieces))

	// A refresh a minute later with the range moved along: the first piece was kept whole, so
	// it is still a hit although the range starts later in it.
	w = f.same(t, "sum(m)", start.Add(time.Minute), end.Add(time.Minute), "60")
	require.Equal(t, CacheHit, w.Header().Get(HeaderCache))

	// Ten minutes later the piece 2h-3h is old enough too. Kept once, it is what answers:
	// a sample written around the view into it (no late-sample notice) is not seen, so the
	// answer stays the one of the view without it.
	f.now = b.Add(3*time.Hour + 10*time.Minute)
	start, end = b.Add(2*time.Hour), b.Add(3*time.Hour)
	w = f.same(t, "count(m)", start, end, "60")
	require.Equal(t, CacheMiss, w.Header().Get(HeaderCache))
	invalidations := testutil.ToFloat64(f.cached.v.metrics.cache.invalidations)
	app := f.cached.v.db.Appender(context.Background())
	_, err := app.Append(0, labels.FromStrings("__name__", "m", "cluster", "sneaked"), b.Add(2*time.Hour+50*time.Minute).UnixMilli(), 1)
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	w = f.same(t, "count(m)", start, end, "60")
	require.Equal(t, CacheHit, w.Header().Get(HeaderCache))

	// A late sample (older than the freshness window) written through the view empties the
	// cache: the next answer has both samples.
	app = f.cached.v.Appendable().Appender(context.Background())
	_, err = app.Append(0, labels.FromStrings("__name__", "m", "cluster", "sneaked"), b.Add(2*time.Hour+51*time.Minute).UnixMilli(), 1)
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	require.Equal(t, invalidations+1, testutil.ToFloat64(f.cached.v.metrics.cache.invalidations))
	w = f.rangeQuery(t, f.cached, "count(m)", start, end, "60")
	require.Equal(t, CacheMiss, w.Header().Get(HeaderCache))
	for _, at := range []time.Duration{50 * time.Minute, 51 * time.Minute} {
		require.Contains(t, w.Body.String(), "["+strconv.FormatInt(b.Add(2*time.Hour+at).Unix(), 10)+`,"5"]`, "at 2h%s", at)
	}

	// The fresh pieces are computed every time: a sample written a minute ago shows at once,
	// and invalidates nothing.
	q := `count(m{cluster="fresh-1"})`
	require.Contains(t, f.rangeQuery(t, f.cached, q, f.now.Add(-2*time.Minute), f.now, "60").Body.String(), `"result":[]`)
	app = f.cached.v.Appendable().Appender(context.Background())
	_, err = app.Append(0, labels.FromStrings("__name__", "m", "cluster", "fresh-1"), f.now.Add(-time.Minute).UnixMilli(), 1)
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	require.Equal(t, invalidations+1, testutil.ToFloat64(f.cached.v.metrics.cache.invalidations))
	require.Contains(t, f.rangeQuery(t, f.cached, q, f.now.Add(-2*time.Minute), f.now, "60").Body.String(), `"1"]`)
}

func TestResultCacheDoesNotCut(t *testing.T) {
	parser.ExperimentalDurationExpr = true
	t.Cleanup(func() { parser.ExperimentalDurationExpr = false })
	f := newCacheFixture(t, config.EnginePrometheus)
	b := f.cached.base
	at := strconv.FormatInt(b.Add(time.Hour).Unix(), 10)
	for _, q := range []string{
		`m @ end()`, `sum(m @ start())`, `max_over_time(m[10m:1m] @ end())`, // the range's start or end
		`m @ ` + at, `m offset -5m`, // data ahead of the step
		`rate(c[5m+5m])`, `m offset (5m+1m)`, `max_over_time(m[10m:(1m+1m)])`, // duration expressions
	} {
		before := f.requests(CacheUncacheable)
		w := f.same(t, q, b.Add(10*time.Minute), b.Add(2*time.Hour), "60")
		require.Equal(t, http.StatusOK, w.Code, "%s: %s", q, w.Body.String())
		require.Empty(t, w.Header().Get(HeaderCache), q)
		require.Equal(t, before+1, f.requests(CacheUncacheable), q)
	}
	// A range not aligned to its step, and a request that asks for statistics.
	w := f.same(t, "sum(m)", b.Add(7*time.Second), b.Add(2*time.Hour), "60")
	require.Empty(t, w.Header().Get(HeaderCache))
	params := url.Values{"query": {"sum(m)"}, "start": {strconv.FormatInt(b.Unix(), 10)}, "end": {strconv.FormatInt(b.Add(2*time.Hour).Unix(), 10)}, "step": {"60"}, "stats": {"all"}}
	w, r := f.cached.get(t, "/api/v1/query_range", params)
	require.Equal(t, http.StatusOK, w.Code, r.Error)
	require.Empty(t, w.Header().Get(HeaderCache))
	require.Contains(t, w.Body.String(), `"stats":`)
	// The same errors as uncached: a query the engine refuses, and one that fails executing.
	f.same(t, `sum(`, b, b.Add(2*time.Hour), "60")
	f.same(t, `"a string"`, b, b.Add(2*time.Hour), "60")
	w = f.same(t, `m + on() group_left m`, b, b.Add(2*time.Hour), "60")
	require.Equal(t, http.StatusUnprocessableEntity, w.Code, w.Body.String())
}

// A piece computed whole reaches beyond the asked range; an error of a step out there is no
// error of the query, which is answered whole.
func TestResultCacheErrorOutsideTheRange(t *testing.T) {
	f := newCacheFixture(t, config.EnginePrometheus)
	b := f.cached.base
	f.now = b.Add(3*time.Hour + 10*time.Minute) // the piece 2h-3h is old enough to keep
	// Two series on the "one" side from 2h15m on, when the series late-1 appears.
	q := `vector(1) + on() group_left m{cluster=~"eu-1|late-1"}`
	w := f.same(t, q, b.Add(85*time.Minute), b.Add(2*time.Hour+10*time.Minute), "60")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	w = f.same(t, q, b.Add(85*time.Minute), b.Add(2*time.Hour+20*time.Minute), "60")
	require.Equal(t, http.StatusUnprocessableEntity, w.Code, w.Body.String())
}

// Native histograms are answered right but not kept: the piece encoding holds floats only.
func TestResultCacheHistogramsComputedEachTime(t *testing.T) {
	f := newCacheFixture(t, config.EngineThanos)
	b := f.cached.base
	for range 2 {
		w := f.same(t, "h", b, b.Add(2*time.Hour), "60")
		require.Equal(t, CacheMiss, w.Header().Get(HeaderCache))
		require.Contains(t, w.Body.String(), `"histograms":`)
	}
}

// FuzzPieceRoundTrip: a piece decodes to the series and points it was encoded from, any float
// (NaN payloads, infinities, negative zero) and any label text included, trimmed to the range
// asked.
func FuzzPieceRoundTrip(f *testing.F) {
	f.Add("m", "eu-1", int64(0), int64(60_000), 3, 1.5, math.Float64bits(math.NaN()))
	f.Add("", "\xff", int64(-120_000), int64(15_000), 1, math.Inf(-1), value.StaleNaN)
	f.Fuzz(func(t *testing.T, name, cluster string, t0, step int64, n int, f0 float64, bits uint64) {
		if step <= 0 || n <= 0 || n > 500 || t0 < -1<<40 || t0 > 1<<40 || step > 1<<30 {
			t.Skip()
		}
		ser := promql.Series{Metric: labels.FromStrings("__name__", name, "cluster", cluster)}
		for i := range n {
			v := f0 * float64(i)
			if i%3 == 1 {
				v = math.Float64frombits(bits + uint64(i))
			}
			ser.Floats = append(ser.Floats, promql.FPoint{T: t0 + int64(i)*step, F: v})
		}
		from, to := t0+step, t0+int64(n-1)*step
		b := encodePiece(promql.Matrix{ser}, from, to)
		require.NotNil(t, b)
		m := newMerger(from, to)
		require.NoError(t, m.addEncoded(b))
		got := m.matrix()
		want := ser.Floats[1:]
		if len(want) == 0 {
			require.Empty(t, got)
			return
		}
		require.Len(t, got, 1)
		require.True(t, labels.Equal(ser.Metric, got[0].Metric))
		require.Len(t, got[0].Floats, len(want))
		for i, p := range want {
			require.Equal(t, p.T, got[0].Floats[i].T)
			require.Equal(t, math.Float64bits(p.F), math.Float64bits(got[0].Floats[i].F), "point %d", i)
		}
	})
}
