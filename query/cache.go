package query

import (
	"bytes"
	"encoding/binary"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/common/model"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// resultCache caches whole /api/v1/query_range responses in fastcache, as VictoriaMetrics
// caches rollup results. Only responses that cannot change are cached: the range must be
// aligned to its step (as Grafana sends it), end more than `freshness` in the past (late
// samples still land in the last minutes), the response a plain success with no warnings (a
// partial response is not the answer), and the request free of per-request knobs (stats,
// timeout) that change the body.
type resultCache struct {
	c         *fastcache.Cache
	freshness time.Duration
	metrics   *cacheMetrics
	now       func() time.Time
}

type cacheMetrics struct {
	requests *prometheus.CounterVec
}

func newCacheMetrics(reg prometheus.Registerer) *cacheMetrics {
	return &cacheMetrics{requests: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "fleetwatch_query_result_cache_requests_total",
		Help: "Range queries by what the result cache did: hit, miss (cached after), or uncacheable.",
	}, []string{"result"})}
}

func newCounter(reg prometheus.Registerer, name, help string) prometheus.Counter {
	return promauto.With(reg).NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func newResultCache(cfg config.ResultCacheConfig, m *cacheMetrics) *resultCache {
	return &resultCache{
		c:         fastcache.New(int(cfg.MaxSizeBytes)),
		freshness: time.Duration(cfg.Freshness),
		metrics:   m,
		now:       time.Now,
	}
}

func (c *resultCache) reset() { c.c.Reset() }

// cachedHeaders are the response headers a cached entry restores.
var cachedHeaders = []string{"Content-Type", "Content-Encoding"}

func (c *resultCache) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	key, ok := c.key(r)
	if !ok {
		c.metrics.requests.WithLabelValues("uncacheable").Inc()
		next.ServeHTTP(w, r)
		return
	}
	if v := c.c.GetBig(nil, key); len(v) > 0 {
		c.metrics.requests.WithLabelValues("hit").Inc()
		body := v
		for _, h := range cachedHeaders {
			n := binary.BigEndian.Uint16(body)
			if val := string(body[2 : 2+n]); val != "" {
				w.Header().Set(h, val)
			}
			body = body[2+n:]
		}
		w.Header().Set("X-Fleetwatch-Cache", "hit")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
		return
	}
	c.metrics.requests.WithLabelValues("miss").Inc()
	rec := &recorder{ResponseWriter: w, code: http.StatusOK}
	next.ServeHTTP(rec, r)
	if rec.code != http.StatusOK || rec.uncacheable {
		return
	}
	// Prometheus puts "warnings" or "infos" into the body of a partial or annotated answer;
	// those must be computed again next time.
	if bytes.Contains(rec.buf.Bytes(), []byte(`"warnings":`)) || bytes.Contains(rec.buf.Bytes(), []byte(`"infos":`)) {
		return
	}
	var entry []byte
	for _, h := range cachedHeaders {
		val := rec.Header().Get(h)
		entry = binary.BigEndian.AppendUint16(entry, uint16(len(val)))
		entry = append(entry, val...)
	}
	c.c.SetBig(key, append(entry, rec.buf.Bytes()...))
}

// key returns the cache key of a cacheable request.
func (c *resultCache) key(r *http.Request) ([]byte, bool) {
	if err := r.ParseForm(); err != nil {
		return nil, false
	}
	f := r.Form
	if f.Get("stats") != "" || f.Get("timeout") != "" || f.Get("query") == "" {
		return nil, false
	}
	start, err1 := parseTimeMillis(f.Get("start"))
	end, err2 := parseTimeMillis(f.Get("end"))
	step, err3 := parseStepMillis(f.Get("step"))
	if err1 != nil || err2 != nil || err3 != nil || step <= 0 || end < start {
		return nil, false
	}
	if start%step != 0 || end%step != 0 {
		return nil, false
	}
	if end > c.now().Add(-c.freshness).UnixMilli() {
		return nil, false
	}
	h := xxhash.New()
	for _, p := range []string{"query", "lookback_delta", "partial_response"} {
		_, _ = h.WriteString(p + "=" + f.Get(p) + "\x00")
	}
	_, _ = h.WriteString(strconv.FormatInt(start, 10) + "\x00" + strconv.FormatInt(end, 10) + "\x00" + strconv.FormatInt(step, 10) + "\x00")
	_, _ = h.WriteString(r.Header.Get("Accept") + "\x00")
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		_, _ = h.WriteString("gzip")
	}
	return binary.BigEndian.AppendUint64([]byte("qr"), h.Sum64()), true
}

func parseTimeMillis(s string) (int64, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return int64(math.Round(f * 1000)), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, err
	}
	return t.UnixMilli(), nil
}

func parseStepMillis(s string) (int64, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return int64(math.Round(f * 1000)), nil
	}
	d, err := model.ParseDuration(s)
	return time.Duration(d).Milliseconds(), err
}

// recorder keeps a copy of the response while it goes out.
type recorder struct {
	http.ResponseWriter
	code        int
	buf         bytes.Buffer
	uncacheable bool
}

func (r *recorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.buf.Len()+len(b) > maxCachedBody {
		r.uncacheable = true
	} else {
		r.buf.Write(b)
	}
	return r.ResponseWriter.Write(b)
}

// maxCachedBody keeps one huge answer from evicting everything else.
const maxCachedBody = 16 << 20
