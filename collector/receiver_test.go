package collector

import (
	"bytes"
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

const (
	ctV1 = "application/x-protobuf;proto=prometheus.WriteRequest"
	ctV2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
)

type fixture struct {
	t   *testing.T
	db  *tsdb.DB
	rcv *Receiver
	reg *prometheus.Registry
	now time.Time
}

func newFixture(t *testing.T, ingest config.IngestConfig) *fixture {
	t.Helper()
	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	reg := prometheus.NewRegistry()
	now := time.Now()
	rcv, err := New(Options{Appendable: db, Registerer: reg, Now: func() time.Time { return now }})
	require.NoError(t, err)
	require.NoError(t, rcv.ApplyConfig(&config.Config{
		Ingest: ingest,
		Clusters: []*config.ClusterConfig{
			{Name: "eu-1", RemoteWrite: &config.RemoteWriteConfig{BearerToken: "token-eu-1"}},
			{Name: "us-2", RemoteWrite: &config.RemoteWriteConfig{BasicAuth: &config.BasicAuthConfig{Username: "us-2", Password: "pw-us-2"}}},
		},
	}))
	return &fixture{t: t, db: db, rcv: rcv, reg: reg, now: now}
}

type request struct {
	body        []byte
	contentType string
	encoding    string
	token       string
	user, pass  string
}

func (f *fixture) send(r request) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(r.body))
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	if r.encoding != "-" {
		enc := r.encoding
		if enc == "" {
			enc = "snappy"
		}
		req.Header.Set("Content-Encoding", enc)
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	if r.user != "" {
		req.SetBasicAuth(r.user, r.pass)
	}
	w := httptest.NewRecorder()
	f.rcv.ServeHTTP(w, req)
	return w
}

// stored returns every series in the TSDB with its number of samples.
func (f *fixture) stored() map[string]int {
	q, err := f.db.Querier(math.MinInt64, math.MaxInt64)
	require.NoError(f.t, err)
	defer q.Close()
	set := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+"))
	out := map[string]int{}
	for set.Next() {
		it := set.At().Iterator(nil)
		n := 0
		for it.Next() != 0 {
			n++
		}
		require.NoError(f.t, it.Err())
		out[set.At().Labels().String()] = n
	}
	require.NoError(f.t, set.Err())
	return out
}

func v1Body(t *testing.T, series ...prompb.TimeSeries) []byte {
	t.Helper()
	b, err := proto.Marshal(&prompb.WriteRequest{Timeseries: series})
	require.NoError(t, err)
	return snappy.Encode(nil, b)
}

func v1Series(ts int64, v float64, lbls ...string) prompb.TimeSeries {
	s := prompb.TimeSeries{Samples: []prompb.Sample{{Timestamp: ts, Value: v}}}
	for i := 0; i < len(lbls); i += 2 {
		s.Labels = append(s.Labels, prompb.Label{Name: lbls[i], Value: lbls[i+1]})
	}
	return s
}

// v2Body builds a 2.0 request; each series is labels (name, value, ...) with one sample.
func v2Body(t *testing.T, ts int64, series ...[]string) []byte {
	t.Helper()
	st := writev2.NewSymbolTable()
	req := &writev2.Request{}
	for _, s := range series {
		var refs []uint32
		for _, sym := range s {
			refs = append(refs, st.Symbolize(sym))
		}
		req.Timeseries = append(req.Timeseries, writev2.TimeSeries{LabelsRefs: refs, Samples: []writev2.Sample{{Value: 1, Timestamp: ts}}})
	}
	req.Symbols = st.Symbols()
	b, err := proto.Marshal(req)
	require.NoError(t, err)
	return snappy.Encode(nil, b)
}

func TestReceiverAcceptsAndStampsCluster(t *testing.T) {
	f := newFixture(t, config.DefaultIngest)
	ts := f.now.UnixMilli()

	w := f.send(request{body: v1Body(t, v1Series(ts, 1, "__name__", "up", "job", "ksm")), contentType: ctV1, token: "token-eu-1"})
	require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())

	// A series that already names its own cluster is fine; the label is not duplicated.
	w = f.send(request{body: v2Body(t, ts, []string{"__name__", "up", "cluster", "us-2", "job", "ksm"}), contentType: ctV2, user: "us-2", pass: "pw-us-2"})
	require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
	require.Equal(t, "1", w.Header().Get("X-Prometheus-Remote-Write-Samples-Written"))
	require.Equal(t, "0", w.Header().Get("X-Prometheus-Remote-Write-Histograms-Written"))

	require.Equal(t, map[string]int{
		`{__name__="up", cluster="eu-1", job="ksm"}`: 1,
		`{__name__="up", cluster="us-2", job="ksm"}`: 1,
	}, f.stored())
	require.Equal(t, 1.0, testutil.ToFloat64(f.rcv.metrics.samples.WithLabelValues("eu-1", "sample")))
}

// TestReceiverRejectsBadInput sends each kind of bad request on top of a good series, so "nothing
// partial is stored" is checked: the good series of the same request must not be there either.
func TestReceiverRejectsBadInput(t *testing.T) {
	good := []string{"__name__", "good", "job", "ksm"}
	for _, tc := range []struct {
		name     string
		req      func(f *fixture, ts int64) request
		code     int
		contains string
	}{
		{"missing token", func(f *fixture, ts int64) request {
			return request{body: v2Body(t, ts, good), contentType: ctV2}
		}, 401, "credentials"},
		{"wrong token", func(f *fixture, ts int64) request {
			return request{body: v2Body(t, ts, good), contentType: ctV2, token: "token-eu-2"}
		}, 401, "credentials"},
		{"wrong basic auth password", func(f *fixture, ts int64) request {
			return request{body: v2Body(t, ts, good), contentType: ctV2, user: "us-2", pass: "nope"}
		}, 401, "credentials"},
		{"garbage body", func(f *fixture, ts int64) request {
			return request{body: []byte("this is not snappy"), contentType: ctV1, token: "token-eu-1"}
		}, 400, "snappy"},
		{"snappy but not protobuf", func(f *fixture, ts int64) request {
			return request{body: snappy.Encode(nil, []byte("\x0a\x64truncated")), contentType: ctV2, token: "token-eu-1"}
		}, 400, "decode remote write 2.0"},
		{"wrong content type", func(f *fixture, ts int64) request {
			return request{body: v2Body(t, ts, good), contentType: "application/json", token: "token-eu-1"}
		}, 415, "application/x-protobuf"},
		{"unknown proto message", func(f *fixture, ts int64) request {
			return request{body: v2Body(t, ts, good), contentType: "application/x-protobuf;proto=io.prometheus.write.v9.Request", token: "token-eu-1"}
		}, 415, "v9"},
		{"wrong content encoding", func(f *fixture, ts int64) request {
			return request{body: v2Body(t, ts, good), contentType: ctV2, encoding: "gzip", token: "token-eu-1"}
		}, 415, "gzip"},
		{"snappy framed instead of block", func(f *fixture, ts int64) request {
			raw, err := proto.Marshal(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{v1Series(ts, 1, good...)}})
			require.NoError(t, err)
			var buf bytes.Buffer
			sw := snappy.NewBufferedWriter(&buf)
			_, err = sw.Write(raw)
			require.NoError(t, err)
			require.NoError(t, sw.Close())
			return request{body: buf.Bytes(), contentType: ctV1, token: "token-eu-1"}
		}, 400, "snappy"},
		{"forged cluster label v1", func(f *fixture, ts int64) request {
			return request{body: v1Body(t, v1Series(ts, 1, good...), v1Series(ts, 1, "__name__", "up", "cluster", "us-2")), contentType: ctV1, token: "token-eu-1"}
		}, 400, `sent by "eu-1", labelled "us-2"`},
		{"forged cluster label v2", func(f *fixture, ts int64) request {
			return request{body: v2Body(t, ts, good, []string{"__name__", "up", "cluster", "eu-1"}), contentType: ctV2, user: "us-2", pass: "pw-us-2"}
		}, 400, `sent by "us-2", labelled "eu-1"`},
		{"invalid label name v1", func(f *fixture, ts int64) request {
			return request{body: v1Body(t, v1Series(ts, 1, good...), v1Series(ts, 1, "__name__", "up", "bad\xffname", "x")), contentType: ctV1, token: "token-eu-1"}
		}, 400, "invalid metric or label name"},
		{"empty label name v2", func(f *fixture, ts int64) request {
			return request{body: v2Body(t, ts, good, []string{"__name__", "up", "", "x"}), contentType: ctV2, token: "token-eu-1"}
		}, 400, "invalid metric or label name"},
		{"no metric name", func(f *fixture, ts int64) request {
			return request{body: v1Body(t, v1Series(ts, 1, good...), v1Series(ts, 1, "job", "x")), contentType: ctV1, token: "token-eu-1"}
		}, 400, "no metric name"},
		{"duplicate label", func(f *fixture, ts int64) request {
			return request{body: v1Body(t, v1Series(ts, 1, good...), v1Series(ts, 1, "__name__", "up", "job", "a", "job", "b")), contentType: ctV1, token: "token-eu-1"}
		}, 400, `label "job" more than once`},
		{"too old sample", func(f *fixture, ts int64) request {
			return request{body: v1Body(t, v1Series(ts, 1, good...), v1Series(ts-48*time.Hour.Milliseconds(), 1, "__name__", "old")), contentType: ctV1, token: "token-eu-1"}
		}, 400, "out of bounds"},
		{"sample from the future", func(f *fixture, ts int64) request {
			return request{body: v1Body(t, v1Series(ts, 1, good...), v1Series(ts+time.Hour.Milliseconds(), 1, "__name__", "future")), contentType: ctV1, token: "token-eu-1"}
		}, 400, "out of bounds"},
		{"series without samples v2", func(f *fixture, ts int64) request {
			b := v2Body(t, ts, good, []string{"__name__", "empty"})
			raw, err := snappy.Decode(nil, b)
			require.NoError(t, err)
			var req writev2.Request
			require.NoError(t, proto.Unmarshal(raw, &req))
			req.Timeseries[1].Samples = nil
			raw, err = proto.Marshal(&req)
			require.NoError(t, err)
			return request{body: snappy.Encode(nil, raw), contentType: ctV2, token: "token-eu-1"}
		}, 400, "no samples"},
		{"symbol reference out of range v2", func(f *fixture, ts int64) request {
			st := writev2.NewSymbolTable()
			req := &writev2.Request{Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{st.Symbolize("__name__"), 99}, Samples: []writev2.Sample{{Value: 1, Timestamp: ts}}}}}
			req.Symbols = st.Symbols()
			raw, err := proto.Marshal(req)
			require.NoError(t, err)
			return request{body: snappy.Encode(nil, raw), contentType: ctV2, token: "token-eu-1"}
		}, 400, "out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, config.DefaultIngest)
			w := f.send(tc.req(f, f.now.UnixMilli()))
			require.Equal(t, tc.code, w.Code, w.Body.String())
			require.Contains(t, w.Body.String(), tc.contains)
			require.Empty(t, f.stored(), "a rejected request must leave nothing behind")
			if w.Header().Get("X-Prometheus-Remote-Write-Samples-Written") != "" {
				require.Equal(t, "0", w.Header().Get("X-Prometheus-Remote-Write-Samples-Written"))
			}
		})
	}
}

func TestReceiverOutOfOrderRollsBackWholeRequest(t *testing.T) {
	f := newFixture(t, config.DefaultIngest)
	ts := f.now.UnixMilli()
	w := f.send(request{body: v1Body(t, v1Series(ts, 1, "__name__", "a")), contentType: ctV1, token: "token-eu-1"})
	require.Equal(t, http.StatusNoContent, w.Code)

	// b is new and valid; a goes backwards in time. Neither may be stored.
	for _, body := range [][]byte{
		v1Body(t, v1Series(ts, 1, "__name__", "b"), v1Series(ts-1000, 2, "__name__", "a")),
	} {
		w = f.send(request{body: body, contentType: ctV1, token: "token-eu-1"})
		require.Equal(t, http.StatusBadRequest, w.Code, w.Body.String())
		require.Contains(t, w.Body.String(), "out of order")
	}
	w = f.send(request{body: v2Body(t, ts-1000, []string{"__name__", "c"}, []string{"__name__", "a"}), contentType: ctV2, token: "token-eu-1"})
	require.Equal(t, http.StatusBadRequest, w.Code, w.Body.String())
	require.Equal(t, "0", w.Header().Get("X-Prometheus-Remote-Write-Samples-Written"))

	require.Equal(t, map[string]int{`{__name__="a", cluster="eu-1"}`: 1}, f.stored())
	require.Equal(t, 2.0, testutil.ToFloat64(f.rcv.metrics.rejected.WithLabelValues("eu-1", "out_of_order")))
}

func TestReceiverLimits(t *testing.T) {
	body := func(t *testing.T, ts int64) []byte {
		var series []prompb.TimeSeries
		for i := range 200 {
			series = append(series, v1Series(ts, float64(i), "__name__", "m", "i", strings.Repeat("x", i)))
		}
		return v1Body(t, series...)
	}

	t.Run("body over the limit is 413", func(t *testing.T) {
		f := newFixture(t, config.IngestConfig{MaxBodyBytes: 512, MaxInflightBytes: 4096})
		w := f.send(request{body: body(t, f.now.UnixMilli()), contentType: ctV1, token: "token-eu-1"})
		require.Equal(t, http.StatusRequestEntityTooLarge, w.Code, w.Body.String())
		require.Empty(t, f.stored())
	})
	t.Run("body over the limit without Content-Length is 413", func(t *testing.T) {
		f := newFixture(t, config.IngestConfig{MaxBodyBytes: 512, MaxInflightBytes: 4096})
		req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body(t, f.now.UnixMilli())))
		req.ContentLength = -1
		req.Header.Set("Authorization", "Bearer token-eu-1")
		req.Header.Set("Content-Type", ctV1)
		w := httptest.NewRecorder()
		f.rcv.ServeHTTP(w, req)
		require.Equal(t, http.StatusRequestEntityTooLarge, w.Code, w.Body.String())
		require.Empty(t, f.stored())
	})
	t.Run("in-flight bytes over the limit is 429", func(t *testing.T) {
		f := newFixture(t, config.IngestConfig{MaxBodyBytes: 1 << 20, MaxInflightBytes: 1 << 20})
		b := body(t, f.now.UnixMilli())
		// Hold most of the in-flight budget as a slow concurrent request would.
		l := f.rcv.limiter.Load()
		require.True(t, l.sem.TryAcquire(l.maxInflight-int64(len(b))+1))
		w := f.send(request{body: b, contentType: ctV1, token: "token-eu-1"})
		require.Equal(t, http.StatusTooManyRequests, w.Code, w.Body.String())
		require.NotEmpty(t, w.Header().Get("Retry-After"))
		require.Empty(t, f.stored())
		l.sem.Release(l.maxInflight - int64(len(b)) + 1)
		w = f.send(request{body: b, contentType: ctV1, token: "token-eu-1"})
		require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
		require.Len(t, f.stored(), 200)
		require.Equal(t, 1.0, testutil.ToFloat64(f.rcv.metrics.overloaded))
	})
}

func TestReceiverReloadSwapsCredentials(t *testing.T) {
	f := newFixture(t, config.DefaultIngest)
	ts := f.now.UnixMilli()
	require.NoError(t, f.rcv.ApplyConfig(&config.Config{Ingest: config.DefaultIngest, Clusters: []*config.ClusterConfig{
		{Name: "eu-1", RemoteWrite: &config.RemoteWriteConfig{BearerToken: "rotated"}},
	}}))
	w := f.send(request{body: v1Body(t, v1Series(ts, 1, "__name__", "a")), contentType: ctV1, token: "token-eu-1"})
	require.Equal(t, http.StatusUnauthorized, w.Code)
	w = f.send(request{body: v1Body(t, v1Series(ts, 1, "__name__", "a")), contentType: ctV1, token: "rotated"})
	require.Equal(t, http.StatusNoContent, w.Code)
}

func TestNewRequiresAppendable(t *testing.T) {
	_, err := New(Options{})
	require.ErrorContains(t, err, "Appendable")
}

var _ storage.Appendable = (*tsdb.DB)(nil)
