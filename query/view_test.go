package query

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }

type viewFixture struct {
	v    *View
	reg  *prometheus.Registry
	h    http.Handler
	base time.Time
}

func newView(t *testing.T, cfg config.QueryConfig, remotes ...RemoteSource) *viewFixture {
	t.Helper()
	reg := prometheus.NewRegistry()
	v, err := Open(Options{
		Dir: t.TempDir(), Registerer: reg,
		RemoteSources: func(config.QueryConfig) ([]RemoteSource, error) { return remotes, nil },
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, v.Close()) })
	require.NoError(t, v.ApplyConfig(cfg))
	return &viewFixture{v: v, reg: reg, h: v.Handler(APIOptions{}), base: time.Now().Add(-time.Hour).Truncate(time.Minute)}
}

// add appends one sample per step (10s) for the given minutes offset range.
func (f *viewFixture) add(t *testing.T, ls labels.Labels, fromSec, toSec int, value func(sec int) float64) {
	t.Helper()
	app := f.v.Appendable().Appender(context.Background())
	for s := fromSec; s <= toSec; s += 10 {
		_, err := app.Append(0, ls, f.base.Add(time.Duration(s)*time.Second).UnixMilli(), value(s))
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())
}

type apiResp struct {
	Status   string   `json:"status"`
	Error    string   `json:"error"`
	Warnings []string `json:"warnings"`
	Data     struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
			Values [][]any           `json:"values"`
		} `json:"result"`
	} `json:"data"`
}

func (f *viewFixture) get(t *testing.T, path string, params url.Values) (*httptest.ResponseRecorder, apiResp) {
	t.Helper()
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path+"?"+params.Encode(), nil))
	var r apiResp
	if path == "/api/v1/query" || path == "/api/v1/query_range" {
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &r), w.Body.String())
	} else {
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &struct {
			Status *string `json:"status"`
		}{&r.Status}), w.Body.String())
	}
	return w, r
}

func (f *viewFixture) instant(t *testing.T, q string, atSec int) apiResp {
	t.Helper()
	w, r := f.get(t, "/api/v1/query", url.Values{"query": {q}, "time": {strconv.FormatInt(f.base.Add(time.Duration(atSec)*time.Second).Unix(), 10)}})
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	return r
}

func TestDedupMergesReplicas(t *testing.T) {
	f := newView(t, config.QueryConfig{Engine: config.EngineThanos, LookbackDelta: model.Duration(time.Minute), Timeout: model.Duration(time.Minute), MaxSamples: 1e6, ReplicaLabels: []string{"prometheus_replica"}})
	a := labels.FromStrings("__name__", "up", "cluster", "eu-1", "prometheus_replica", "a")
	b := labels.FromStrings("__name__", "up", "cluster", "eu-1", "prometheus_replica", "b")
	// Replica a stops after 60s; b goes on. The view must show one series that goes on too.
	f.add(t, a, 0, 60, func(int) float64 { return 1 })
	f.add(t, b, 0, 300, func(int) float64 { return 2 })

	for _, at := range []int{30, 240} {
		r := f.instant(t, "up", at)
		require.Len(t, r.Data.Result, 1, "one series per target at %ds", at)
		require.Equal(t, map[string]string{"__name__": "up", "cluster": "eu-1"}, r.Data.Result[0].Metric)
	}
	require.Equal(t, "2", f.instant(t, "up", 240).Data.Result[0].Value[1])

	w, r := f.get(t, "/api/v1/labels", nil)
	require.Equal(t, http.StatusOK, w.Code)
	require.NotContains(t, w.Body.String(), "prometheus_replica")
	require.Equal(t, "success", r.Status)
}

type failingQueryable struct{}

func (failingQueryable) Querier(int64, int64) (storage.Querier, error) {
	return failingQuerier{errors.New("connection refused")}, nil
}

func TestPartialResponse(t *testing.T) {
	cfg := config.DefaultQuery
	cfg.ResultCache.MaxSizeBytes = 0
	f := newView(t, cfg, RemoteSource{Name: "thanos-eu", Queryable: failingQueryable{}})
	f.add(t, labels.FromStrings("__name__", "up", "cluster", "local"), 0, 60, func(int) float64 { return 1 })

	r := f.instant(t, "up", 60)
	require.Len(t, r.Data.Result, 1, "the local data is answered")
	require.Len(t, r.Warnings, 1)
	require.Contains(t, r.Warnings[0], `remote source "thanos-eu": connection refused`)

	w, r := f.get(t, "/api/v1/query", url.Values{"query": {"up"}, "partial_response": {"false"}, "time": {strconv.FormatInt(f.base.Add(time.Minute).Unix(), 10)}})
	require.NotEqual(t, http.StatusOK, w.Code)
	require.Equal(t, "error", r.Status)
	require.Contains(t, r.Error, `remote source "thanos-eu"`)

	w, _ = f.get(t, "/api/v1/labels", url.Values{"partial_response": {"false"}})
	require.NotEqual(t, http.StatusOK, w.Code)
}

func TestResultCacheResetOnReload(t *testing.T) {
	cfg := config.DefaultQuery
	cfg.ResultCache = config.ResultCacheConfig{MaxSizeBytes: 32 << 20, Freshness: model.Duration(5 * time.Minute), SplitInterval: model.Duration(10 * time.Minute)}
	f := newView(t, cfg)
	f.add(t, labels.FromStrings("__name__", "m", "cluster", "eu-1"), 0, 3600, func(s int) float64 { return float64(s) })
	rangeQuery := func() *httptest.ResponseRecorder {
		w, r := f.get(t, "/api/v1/query_range", url.Values{"query": {"sum(m)"}, "start": {strconv.FormatInt(f.base.Unix(), 10)}, "end": {strconv.FormatInt(f.base.Add(30*time.Minute).Unix(), 10)}, "step": {"10"}})
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		require.Len(t, r.Data.Result[0].Values, 181)
		return w
	}
	require.Equal(t, CacheMiss, rangeQuery().Header().Get(HeaderCache))
	require.Equal(t, CacheHit, rangeQuery().Header().Get(HeaderCache))
	// A reload resets the cache: sources or dedup may have changed the answer.
	require.NoError(t, f.v.ApplyConfig(cfg))
	require.Equal(t, CacheMiss, rangeQuery().Header().Get(HeaderCache))
}

func TestResultCacheSkipsPartialAnswers(t *testing.T) {
	cfg := config.DefaultQuery
	cfg.ResultCache.SplitInterval = model.Duration(10 * time.Minute)
	down := &countingQueryable{Queryable: failingQueryable{}}
	f := newView(t, cfg, RemoteSource{Name: "down", Queryable: down})
	f.add(t, labels.FromStrings("__name__", "m"), 0, 600, func(s int) float64 { return float64(s) })
	params := url.Values{"query": {"sum(m)"}, "start": {strconv.FormatInt(f.base.Unix(), 10)}, "end": {strconv.FormatInt(f.base.Add(10*time.Minute).Unix(), 10)}, "step": {"10"}}
	var queriers []int64
	for _, stats := range []string{"", "", "all"} {
		params.Set("stats", stats)
		before := down.n.Load()
		w, r := f.get(t, "/api/v1/query_range", params)
		require.Equal(t, http.StatusOK, w.Code)
		require.NotEmpty(t, r.Warnings)
		require.Empty(t, w.Header().Get(HeaderCache), "a partial answer must be computed again")
		queriers = append(queriers, down.n.Load()-before)
	}
	// The first answer cut the query, saw the warning and asked again whole; the second went
	// whole at once, as a request that is never cut (stats=all) does.
	require.Greater(t, queriers[0], queriers[2])
	require.Equal(t, queriers[2], queriers[1])
}

type countingQueryable struct {
	storage.Queryable
	n atomic.Int64
}

func (c *countingQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	c.n.Add(1)
	return c.Queryable.Querier(mint, maxt)
}

func TestEngineFallback(t *testing.T) {
	cfg := config.DefaultQuery
	cfg.ResultCache.MaxSizeBytes = 0
	f := newView(t, cfg)
	f.add(t, labels.FromStrings("__name__", "m"), 0, 600, func(s int) float64 { return float64(s) })
	rangeQuery := func(q string) apiResp {
		w, r := f.get(t, "/api/v1/query_range", url.Values{"query": {q}, "start": {strconv.FormatInt(f.base.Add(590*time.Second).Unix(), 10)}, "end": {strconv.FormatInt(f.base.Add(600*time.Second).Unix(), 10)}, "step": {"10"}})
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		return r
	}
	// The Thanos engine does not implement quantile_over_time with an expression as its
	// first argument; Prometheus's engine answers it.
	r := rangeQuery("quantile_over_time(scalar(vector(0.5)), m[5m])")
	require.Equal(t, "success", r.Status)
	require.Len(t, r.Data.Result, 1)
	// Ranges are left-open: m[5m] at 600s holds the samples of 310s..600s, whose median is 455.
	require.Equal(t, "455", r.Data.Result[0].Values[1][1])
	require.Equal(t, 1.0, testutil.ToFloat64(f.v.metrics.fallbacks))

	// An ordinary range query stays on the Thanos engine, and an instant query runs on
	// Prometheus's engine without counting as a fallback.
	r = rangeQuery("sum(m)")
	require.Equal(t, "600", r.Data.Result[0].Values[1][1])
	require.Equal(t, "455", f.instant(t, "quantile_over_time(scalar(vector(0.5)), m[5m])", 600).Data.Result[0].Value[1])
	require.Equal(t, 1.0, testutil.ToFloat64(f.v.metrics.fallbacks))
}

func TestOpenValidates(t *testing.T) {
	_, err := Open(Options{})
	require.ErrorContains(t, err, "Dir")
}
