package collector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/semaphore"

	"github.com/fleetwatch/fleetwatch/internal/clusterauth"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/prometheus/prometheus/storage"
)

// maxDecodedBytes bounds a decompressed request, as client_golang's and Prometheus's receivers
// do, so a small snappy bomb cannot make us allocate gigabytes.
const maxDecodedBytes = 32 << 20

// MetadataSink receives metric metadata (type, help, unit) carried by remote-write requests.
type MetadataSink interface {
	SetMetadata(cluster, metric string, typ, help, unit string)
}

// Options configure a Receiver.
type Options struct {
	// Appendable is where accepted samples go. Required.
	Appendable storage.Appendable
	// Metadata receives metric metadata; nil drops it.
	Metadata MetadataSink
	// Logger defaults to discarding; Registerer to not registering metrics.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now defaults to time.Now; samples more than 10 minutes ahead of it are rejected.
	Now func() time.Time
}

// Receiver is the remote-write endpoint (/api/v1/write). Configure it with ApplyConfig before
// it accepts anything: with no clusters every request is 401.
type Receiver struct {
	opts    Options
	logger  *slog.Logger
	metrics *metrics
	store   *store
	handler http.Handler

	auth    atomic.Pointer[clusterauth.Table]
	limiter atomic.Pointer[limiter]
	bufs    sync.Pool
}

type limiter struct {
	maxBody     int64
	maxInflight int64
	sem         *semaphore.Weighted
}

// New returns a Receiver.
func New(o Options) (*Receiver, error) {
	if o.Appendable == nil {
		return nil, errors.New("collector: Options.Appendable is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := &Receiver{
		opts:    o,
		logger:  o.Logger.With("component", "collector"),
		metrics: newMetrics(o.Registerer),
		bufs:    sync.Pool{New: func() any { return new(bytes.Buffer) }},
	}
	r.store = &store{appendable: o.Appendable, metadata: o.Metadata, now: o.Now, metrics: r.metrics}
	r.handler = remote.NewWriteHandler(r.store,
		remote.MessageTypes{remote.WriteV1MessageType, remote.WriteV2MessageType},
		remote.WithWriteHandlerLogger(r.logger),
		// Our own decode step replaces the default one: it enforces the body limit (413 rather
		// than a generic 400) and reuses buffers across requests.
		remote.WithWriteHandlerMiddlewares(r.decode),
	)
	r.auth.Store(clusterauth.New(nil))
	r.limiter.Store(newLimiter(config.DefaultIngest))
	return r, nil
}

func newLimiter(c config.IngestConfig) *limiter {
	return &limiter{maxBody: c.MaxBodyBytes, maxInflight: c.MaxInflightBytes, sem: semaphore.NewWeighted(c.MaxInflightBytes)}
}

// ApplyConfig replaces the clusters' credentials and the ingest limits. Requests already being
// handled finish under the old ones.
func (r *Receiver) ApplyConfig(cfg *config.Config) error {
	r.auth.Store(clusterauth.New(cfg.Clusters))
	if l := r.limiter.Load(); l.maxBody != cfg.Ingest.MaxBodyBytes || l.maxInflight != cfg.Ingest.MaxInflightBytes {
		r.limiter.Store(newLimiter(cfg.Ingest))
	}
	return nil
}

type clusterKey struct{}

// ServeHTTP authenticates the cluster, applies the size and in-flight limits and hands the
// request to the remote-write protocol handler.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	cluster, ok := r.auth.Load().Authenticate(req)
	if !ok {
		r.metrics.requests.WithLabelValues("", "401").Inc()
		w.Header().Set("WWW-Authenticate", clusterauth.Challenge)
		http.Error(w, "unknown or missing cluster credentials", http.StatusUnauthorized)
		return
	}
	l := r.limiter.Load()
	size := req.ContentLength
	if size > l.maxBody {
		r.reject(w, cluster, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes exceeds the limit of %d bytes", size, l.maxBody))
		return
	}
	if size < 0 { // unknown length: reserve the most it may be
		size = l.maxBody
	}
	if !l.sem.TryAcquire(size) {
		r.metrics.overloaded.Inc()
		w.Header().Set("Retry-After", "1")
		r.reject(w, cluster, http.StatusTooManyRequests, "too many bytes in flight, retry later")
		return
	}
	defer l.sem.Release(size)
	req.Body = http.MaxBytesReader(w, req.Body, l.maxBody)

	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	r.handler.ServeHTTP(rec, req.WithContext(context.WithValue(req.Context(), clusterKey{}, cluster)))
	r.metrics.requests.WithLabelValues(cluster, strconv.Itoa(rec.code)).Inc()
}

func (r *Receiver) reject(w http.ResponseWriter, cluster string, code int, msg string) {
	r.metrics.requests.WithLabelValues(cluster, strconv.Itoa(code)).Inc()
	http.Error(w, msg, code)
}

// decode reads the snappy block-compressed body into pooled buffers and replaces it with the
// decompressed bytes. It does what client_golang's SnappyDecodeMiddleware does, plus a 413 for
// bodies over the limit, without allocating a fresh buffer per request.
func (r *Receiver) decode(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// The protocol handler checks the content type too, but only after this step has read
		// and decoded the body; an unsupported type is 415 whatever the body holds.
		if ct := req.Header.Get("Content-Type"); ct != "" {
			if _, err := remote.ParseProtoMsg(ct); err != nil {
				http.Error(w, err.Error(), http.StatusUnsupportedMediaType)
				return
			}
		}
		if enc := req.Header.Get("Content-Encoding"); enc != "" && enc != string(remote.SnappyBlockCompression) {
			http.Error(w, fmt.Sprintf("%s encoding (compression) is not accepted by this server; only %s is acceptable", enc, remote.SnappyBlockCompression), http.StatusUnsupportedMediaType)
			return
		}
		compressed := r.bufs.Get().(*bytes.Buffer)
		decoded := r.bufs.Get().(*bytes.Buffer)
		defer r.bufs.Put(compressed)
		defer r.bufs.Put(decoded)
		compressed.Reset()
		if _, err := compressed.ReadFrom(req.Body); err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "read request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		n, err := snappy.DecodedLen(compressed.Bytes())
		if err != nil {
			http.Error(w, "snappy block decoding: "+err.Error(), http.StatusBadRequest)
			return
		}
		if n > maxDecodedBytes {
			http.Error(w, fmt.Sprintf("decoded size %d exceeds the limit of %d bytes", n, maxDecodedBytes), http.StatusRequestEntityTooLarge)
			return
		}
		decoded.Reset()
		decoded.Grow(n)
		out, err := snappy.Decode(decoded.AvailableBuffer()[:n], compressed.Bytes())
		if err != nil {
			http.Error(w, "snappy block decoding: "+err.Error(), http.StatusBadRequest)
			return
		}
		req.Body = decodedBody{Reader: bytes.NewReader(out), b: out}
		req.Header.Del("Content-Encoding")
		next.ServeHTTP(w, req)
	})
}

// decodedBody is a decoded request body; the store reads b whole, without a copy. b is valid
// until the handler returns (the buffer goes back to the pool then).
type decodedBody struct {
	*bytes.Reader
	b []byte
}

func (decodedBody) Close() error { return nil }

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

type metrics struct {
	requests   *prometheus.CounterVec
	samples    *prometheus.CounterVec
	rejected   *prometheus.CounterVec
	overloaded prometheus.Counter
	lastIngest *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwatch_remote_write_requests_total",
			Help: "Remote-write requests by authenticated cluster (empty when authentication failed) and HTTP status code.",
		}, []string{"cluster", "code"}),
		samples: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwatch_remote_write_samples_total",
			Help: "Samples, histograms and exemplars stored from remote-write, by cluster and type.",
		}, []string{"cluster", "type"}),
		rejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRemoteWriteRejected,
			Help: "Remote-write requests rejected as a whole after decoding, by cluster and reason.",
		}, []string{"cluster", "reason"}),
		overloaded: f.NewCounter(prometheus.CounterOpts{
			Name: MetricRemoteWriteOverloaded,
			Help: "Remote-write requests answered 429 because the in-flight byte limit was reached.",
		}),
		lastIngest: lastIngestGauge(reg),
	}
}
