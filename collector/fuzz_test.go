package collector

import (
	"bytes"
	"context"
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// fuzzNow is the receiver's clock in FuzzRemoteWrite. It is fixed, and every run starts from an
// empty TSDB, so an input saved in testdata/fuzz replays the same way on any day.
var fuzzNow = time.UnixMilli(1_750_000_000_000)

// The fuzzer picks the request's headers with small integers.
var (
	fuzzContentTypes = []string{ctV1, ctV2, "", "application/x-protobuf", "application/json", "application/x-protobuf;proto=io.prometheus.write.v9.Request"}
	fuzzEncodings    = []string{"", "-", "gzip", "zstd"} // "" is snappy and "-" no header, as in send
)

// documentedCodes are the answers the README promises. A 500 would make Prometheus retry the
// same request forever, so it is a bug for any input.
var documentedCodes = map[int]bool{
	http.StatusNoContent:             true,
	http.StatusBadRequest:            true,
	http.StatusUnauthorized:          true,
	http.StatusRequestEntityTooLarge: true,
	http.StatusUnsupportedMediaType:  true,
	http.StatusTooManyRequests:       true,
}

// newFuzzFixture is newFixture with a fixed clock and one sample already stored, so a rejected
// request has something to leave untouched and the out-of-order paths are reachable.
func newFuzzFixture(t *testing.T) *fixture {
	t.Helper()
	opts := tsdb.DefaultOptions()
	// A TSDB per run is what makes a saved input replay alike; without a WAL and with a small
	// series map it costs little to open. Appends, rollbacks and commits are unchanged.
	opts.WALSegmentSize = -1
	opts.StripeSize = 64
	db, err := tsdb.Open(t.TempDir(), nil, nil, opts, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	rcv, err := New(Options{Appendable: db, Registerer: prometheus.NewRegistry(), Now: func() time.Time { return fuzzNow }})
	require.NoError(t, err)
	require.NoError(t, rcv.ApplyConfig(&config.Config{
		Ingest: config.DefaultIngest,
		Clusters: []*config.ClusterConfig{
			{Name: "eu-1", RemoteWrite: &config.RemoteWriteConfig{BearerToken: "token-eu-1"}},
			{Name: "us-2", RemoteWrite: &config.RemoteWriteConfig{BasicAuth: &config.BasicAuthConfig{Username: "us-2", Password: "pw-us-2"}}},
		},
	}))
	app := db.Appender(context.Background())
	_, err = app.Append(0, labels.FromStrings("__name__", "baseline", "cluster", "eu-1"), fuzzNow.UnixMilli()-60_000, 1)
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	return &fixture{t: t, db: db, rcv: rcv, now: fuzzNow}
}

// point is one stored sample: a float value, or a histogram (only its presence is compared).
type point struct {
	hist bool
	v    float64
}

// contents returns every stored sample, by series and timestamp.
func (f *fixture) contents() map[string]map[int64]point {
	q, err := f.db.Querier(math.MinInt64, math.MaxInt64)
	require.NoError(f.t, err)
	defer q.Close()
	set := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".*"))
	out := map[string]map[int64]point{}
	var it chunkenc.Iterator
	for set.Next() {
		pts := map[int64]point{}
		it = set.At().Iterator(it)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			switch vt {
			case chunkenc.ValFloat:
				ts, v := it.At()
				pts[ts] = point{v: v}
			default:
				pts[it.AtT()] = point{hist: true}
			}
		}
		require.NoError(f.t, it.Err())
		out[set.At().Labels().String()] = pts
	}
	require.NoError(f.t, set.Err())
	return out
}

// sentSample is a sample of an accepted request as the receiver should have stored it.
type sentSample struct {
	series string
	ts     int64
	point
}

// sentSamples decodes an accepted request the way a sender meant it: each series with the
// sender's cluster label, each sample and histogram.
func sentSamples(t *testing.T, decoded []byte, v2 bool, cluster string) (samples []sentSample, floats, histograms int) {
	t.Helper()
	series := func(pairs []string) string {
		b := labels.NewScratchBuilder(len(pairs) / 2)
		for i := 0; i < len(pairs); i += 2 {
			if pairs[i] != config.ClusterLabel {
				b.Add(pairs[i], pairs[i+1])
			}
		}
		b.Add(config.ClusterLabel, cluster)
		b.Sort()
		// The TSDB drops labels with an empty value: {a=""} is the series without a.
		return b.Labels().WithoutEmpty().String()
	}
	if !v2 {
		var wr prompb.WriteRequest
		require.NoError(t, wr.Unmarshal(decoded), "an accepted 1.0 request must decode")
		for _, ts := range wr.Timeseries {
			var pairs []string
			for _, l := range ts.Labels {
				pairs = append(pairs, l.Name, l.Value)
			}
			s := series(pairs)
			for _, smp := range ts.Samples {
				samples = append(samples, sentSample{s, smp.Timestamp, point{v: smp.Value}})
			}
			for _, h := range ts.Histograms {
				samples = append(samples, sentSample{s, h.Timestamp, point{hist: true}})
			}
			floats += len(ts.Samples)
			histograms += len(ts.Histograms)
		}
		return samples, floats, histograms
	}
	var wr writev2.Request
	require.NoError(t, wr.Unmarshal(decoded), "an accepted 2.0 request must decode")
	for _, ts := range wr.Timeseries {
		var pairs []string
		for _, ref := range ts.LabelsRefs {
			require.Less(t, int(ref), len(wr.Symbols), "an accepted 2.0 request has only valid symbol references")
			pairs = append(pairs, wr.Symbols[ref])
		}
		s := series(pairs)
		for _, smp := range ts.Samples {
			samples = append(samples, sentSample{s, smp.Timestamp, point{v: smp.Value}})
		}
		for _, h := range ts.Histograms {
			samples = append(samples, sentSample{s, h.Timestamp, point{hist: true}})
		}
		floats += len(ts.Samples)
		histograms += len(ts.Histograms)
	}
	return samples, floats, histograms
}

// FuzzRemoteWrite sends arbitrary remote-write requests to a receiver on a real TSDB. The
// receiver must never panic and must answer with a documented status; a rejected request must
// leave the TSDB as it was; an accepted one must have stored every sample it carried, and a 2.0
// answer must report exactly what the request held.
//
// raw is the body; when compress is set it is snappy block-compressed first, so the fuzzer can
// reach the protobuf decoding without having to find valid snappy.
func FuzzRemoteWrite(f *testing.F) {
	ts := fuzzNow.UnixMilli()
	encode := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		require.NoError(f, err)
		return b
	}
	v1 := func(series ...prompb.TimeSeries) []byte {
		return encode(&prompb.WriteRequest{Timeseries: series})
	}
	v2 := func(series ...[]string) []byte {
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
		return encode(req)
	}
	const (
		ctV1Choice, ctV2Choice = 0, 1
		snappyEnc, noEnc       = 0, 1
		authToken, authBasic   = 0, 1
		authWrong, authNone    = 2, 3
	)
	good := v1Series(ts, 1, "__name__", "up", "job", "ksm")

	f.Add(v1(good), true, uint8(ctV1Choice), uint8(snappyEnc), uint8(authToken))
	f.Add(v1(good, v1Series(ts, 2, "__name__", "up", "job", "ksm", "cluster", "eu-1")), true, uint8(ctV1Choice), uint8(snappyEnc), uint8(authToken))
	f.Add(v2([]string{"__name__", "up", "job", "ksm"}, []string{"__name__", "up", "cluster", "us-2"}), true, uint8(ctV2Choice), uint8(snappyEnc), uint8(authBasic))
	// A forged cluster label, in both versions.
	f.Add(v1(good, v1Series(ts, 1, "__name__", "up", "cluster", "us-2")), true, uint8(ctV1Choice), uint8(snappyEnc), uint8(authToken))
	f.Add(v2([]string{"__name__", "up"}, []string{"__name__", "up", "cluster", "eu-1"}), true, uint8(ctV2Choice), uint8(snappyEnc), uint8(authBasic))
	// Out of order against the stored baseline, and within one request.
	f.Add(v1(v1Series(ts-120_000, 1, "__name__", "baseline")), true, uint8(ctV1Choice), uint8(snappyEnc), uint8(authToken))
	f.Add(v1(v1Series(ts, 1, "__name__", "a"), v1Series(ts-1000, 2, "__name__", "a")), true, uint8(ctV1Choice), uint8(snappyEnc), uint8(authToken))
	f.Add(v1(v1Series(ts, 1, "__name__", "a"), v1Series(ts, 2, "__name__", "a")), true, uint8(ctV1Choice), uint8(snappyEnc), uint8(authToken))
	// A native histogram and an exemplar.
	f.Add(v1(prompb.TimeSeries{
		Labels:     []prompb.Label{{Name: "__name__", Value: "h"}},
		Histograms: []prompb.Histogram{{Count: &prompb.Histogram_CountInt{CountInt: 2}, Sum: 3, Schema: 0, ZeroCount: &prompb.Histogram_ZeroCountInt{ZeroCountInt: 0}, PositiveSpans: []prompb.BucketSpan{{Offset: 0, Length: 1}}, PositiveDeltas: []int64{2}, Timestamp: ts}},
	}, prompb.TimeSeries{
		Labels:    []prompb.Label{{Name: "__name__", Value: "e"}},
		Samples:   []prompb.Sample{{Value: 1, Timestamp: ts}},
		Exemplars: []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "abc"}}, Value: 1, Timestamp: ts}},
	}), true, uint8(ctV1Choice), uint8(snappyEnc), uint8(authToken))
	// Garbage, snappy framing instead of block, an empty body.
	f.Add([]byte("this is not snappy"), false, uint8(ctV1Choice), uint8(snappyEnc), uint8(authToken))
	var framed bytes.Buffer
	sw := snappy.NewBufferedWriter(&framed)
	_, err := sw.Write(v1(good))
	require.NoError(f, err)
	require.NoError(f, sw.Close())
	f.Add(framed.Bytes(), false, uint8(ctV1Choice), uint8(snappyEnc), uint8(authToken))
	f.Add([]byte{}, true, uint8(ctV2Choice), uint8(snappyEnc), uint8(authToken))
	// Headers and credentials the receiver must refuse.
	f.Add(v1(good), true, uint8(4), uint8(snappyEnc), uint8(authToken))
	f.Add(v1(good), true, uint8(ctV1Choice), uint8(2), uint8(authToken))
	f.Add(v1(good), true, uint8(ctV1Choice), uint8(noEnc), uint8(authToken))
	f.Add(v1(good), true, uint8(ctV1Choice), uint8(snappyEnc), uint8(authWrong))
	f.Add(v1(good), true, uint8(ctV1Choice), uint8(snappyEnc), uint8(authNone))

	f.Fuzz(func(t *testing.T, raw []byte, compress bool, ctChoice, encChoice, authChoice uint8) {
		fx := newFuzzFixture(t)
		body := raw
		if compress {
			body = snappy.Encode(nil, raw)
		}
		r := request{
			body:        body,
			contentType: fuzzContentTypes[int(ctChoice)%len(fuzzContentTypes)],
			encoding:    fuzzEncodings[int(encChoice)%len(fuzzEncodings)],
		}
		cluster := ""
		switch authChoice % 4 {
		case authToken:
			r.token, cluster = "token-eu-1", "eu-1"
		case authBasic:
			r.user, r.pass, cluster = "us-2", "pw-us-2", "us-2"
		case authWrong:
			r.token = "token-eu-2"
		}
		before := fx.contents()

		w := fx.send(r)

		require.True(t, documentedCodes[w.Code], "undocumented status %d: %s", w.Code, w.Body.String())
		after := fx.contents()
		if w.Code/100 != 2 {
			require.Equal(t, before, after, "a request answered %d must leave nothing behind", w.Code)
			if n := w.Header().Get("X-Prometheus-Remote-Write-Samples-Written"); n != "" {
				require.Equal(t, "0", n)
			}
			return
		}

		require.Equal(t, http.StatusNoContent, w.Code)
		require.NotEmpty(t, cluster, "accepted without credentials")
		decoded, err := snappy.Decode(nil, body)
		require.NoError(t, err, "accepted a body that is not snappy block-compressed")
		isV2 := r.contentType == ctV2
		sent, floats, histograms := sentSamples(t, decoded, isV2, cluster)
		for _, s := range sent {
			got, ok := after[s.series][s.ts]
			require.True(t, ok, "accepted sample %s@%d is not stored", s.series, s.ts)
			require.Equal(t, s.hist, got.hist, "sample %s@%d stored with another type", s.series, s.ts)
			if !s.hist {
				require.Equal(t, math.Float64bits(s.v), math.Float64bits(got.v), "accepted sample %s@%d is stored with another value", s.series, s.ts)
			}
		}
		// Everything that was there before is still there, unchanged.
		for series, pts := range before {
			for ts, p := range pts {
				require.Equal(t, p, after[series][ts])
			}
		}
		if isV2 {
			require.Equal(t, strconv.Itoa(floats), w.Header().Get("X-Prometheus-Remote-Write-Samples-Written"))
			require.Equal(t, strconv.Itoa(histograms), w.Header().Get("X-Prometheus-Remote-Write-Histograms-Written"))
		}
	})
}
