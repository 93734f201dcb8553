package collector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/gogo/protobuf/proto"
	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// MetricForwarded counts the requests forwarded to Thanos Receive, by cluster and result
// (success, rejected: Receive refused them as invalid; error: not taken, the member retries).
const MetricForwarded = "fleetwatch_forward_requests_total"

// ForwardOptions configure a Forwarder.
type ForwardOptions struct {
	// URL is Thanos Receive's remote-write endpoint (…/api/v1/receive).
	URL string
	// Client sends the requests (its timeout bounds each one).
	Client *http.Client
	// TenantHeader carries the cluster's name (default config.DefaultTenantHeader).
	TenantHeader string
	Registerer   prometheus.Registerer
}

// Forwarder is a storage.Appendable that keeps nothing itself: each transaction (one
// member's request, its cluster label already stamped and checked) is sent on to Thanos
// Receive as one remote-write 1.0 request, with the cluster as the tenant, when it commits.
// A commit returns only once Receive acknowledged it, so fleetwatch's 200 to the member still
// means the samples are kept (by Receive now), and a Receive that is down makes the member
// retry (5xx) rather than lose anything.
type Forwarder struct {
	o       ForwardOptions
	results *prometheus.CounterVec
}

// NewForwarder returns a Forwarder.
func NewForwarder(o ForwardOptions) (*Forwarder, error) {
	if o.URL == "" || o.Client == nil {
		return nil, errors.New("collector: a Forwarder needs a URL and a client")
	}
	if o.TenantHeader == "" {
		o.TenantHeader = config.DefaultTenantHeader
	}
	return &Forwarder{o: o, results: promauto.With(o.Registerer).NewCounterVec(prometheus.CounterOpts{
		Name: MetricForwarded,
		Help: "Remote-write requests forwarded to Thanos Receive, by cluster and result (success; rejected: refused as invalid; error: not taken, retried by the member).",
	}, []string{"cluster", "result"})}, nil
}

// Appender starts one request's transaction.
func (f *Forwarder) Appender(ctx context.Context) storage.Appender {
	return &forwardAppender{f: f, ctx: ctx, index: map[uint64][]int{}}
}

// forwardAppender gathers a transaction's samples by series. Its series references are
// indexes into the request (plus one), so the receiver's order checks work as on the TSDB.
type forwardAppender struct {
	f       *Forwarder
	ctx     context.Context
	req     prompb.WriteRequest
	index   map[uint64][]int // labels hash -> indexes into req.Timeseries
	cluster string
}

func (a *forwardAppender) series(ref storage.SeriesRef, l labels.Labels) (*prompb.TimeSeries, storage.SeriesRef) {
	// A reference may come from an earlier transaction (a scrape loop keeps them), where it
	// named another position: it is taken only when the labels there are l's.
	if ref > 0 && int(ref) <= len(a.req.Timeseries) && sameLabels(a.req.Timeseries[ref-1].Labels, l) {
		return &a.req.Timeseries[ref-1], ref
	}
	h := l.Hash()
	for _, i := range a.index[h] {
		if sameLabels(a.req.Timeseries[i].Labels, l) {
			return &a.req.Timeseries[i], storage.SeriesRef(i + 1)
		}
	}
	if a.cluster == "" {
		a.cluster = l.Get(config.ClusterLabel)
	}
	a.req.Timeseries = append(a.req.Timeseries, prompb.TimeSeries{Labels: prompb.FromLabels(l, nil)})
	i := len(a.req.Timeseries) - 1
	a.index[h] = append(a.index[h], i)
	return &a.req.Timeseries[i], storage.SeriesRef(i + 1)
}

// sameLabels reports whether pl, as FromLabels wrote it, holds l.
func sameLabels(pl []prompb.Label, l labels.Labels) bool {
	if len(pl) != l.Len() {
		return false
	}
	i, same := 0, true
	l.Range(func(x labels.Label) {
		same = same && pl[i].Name == x.Name && pl[i].Value == x.Value
		i++
	})
	return same
}

func (a *forwardAppender) Append(ref storage.SeriesRef, l labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	ts, ref := a.series(ref, l)
	ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: t, Value: v})
	return ref, nil
}

func (a *forwardAppender) AppendHistogram(ref storage.SeriesRef, l labels.Labels, t int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	ts, ref := a.series(ref, l)
	if h != nil {
		ts.Histograms = append(ts.Histograms, prompb.FromIntHistogram(t, h))
	} else {
		ts.Histograms = append(ts.Histograms, prompb.FromFloatHistogram(t, fh))
	}
	return ref, nil
}

func (a *forwardAppender) AppendExemplar(ref storage.SeriesRef, l labels.Labels, e exemplar.Exemplar) (storage.SeriesRef, error) {
	ts, ref := a.series(ref, l)
	ts.Exemplars = append(ts.Exemplars, prompb.Exemplar{Labels: prompb.FromLabels(e.Labels, nil), Value: e.Value, Timestamp: e.Ts})
	return ref, nil
}

// The start-timestamp zero samples of remote write 2.0 are not forwarded: Receive takes
// remote write 1.0, which has no place for them (a sender's counter resets still show).
func (a *forwardAppender) AppendSTZeroSample(ref storage.SeriesRef, _ labels.Labels, _, _ int64) (storage.SeriesRef, error) {
	return ref, nil
}

func (a *forwardAppender) AppendHistogramSTZeroSample(ref storage.SeriesRef, _ labels.Labels, _, _ int64, _ *histogram.Histogram, _ *histogram.FloatHistogram) (storage.SeriesRef, error) {
	return ref, nil
}

// Metadata stays in fleetwatch (the receiver hands it to the view's metadata sink).
func (a *forwardAppender) UpdateMetadata(ref storage.SeriesRef, _ labels.Labels, _ metadata.Metadata) (storage.SeriesRef, error) {
	return ref, nil
}

func (a *forwardAppender) SetOptions(*storage.AppendOptions) {}

func (a *forwardAppender) Rollback() error {
	a.req.Timeseries = nil
	clear(a.index)
	return nil
}

// Commit sends the request and waits for Receive's answer: a 2xx keeps it; 400, 409 and 413
// are the request's fault (answered 400 to the member, which drops it, as Receive would
// have); anything else, a 401, 403 or 404 of a misconfigured forward among them, is ours
// (5xx: the member retries, and keeps its samples until it is fixed).
func (a *forwardAppender) Commit() error {
	if len(a.req.Timeseries) == 0 {
		return nil
	}
	raw, err := proto.Marshal(&a.req)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(a.ctx, http.MethodPost, a.f.o.URL, bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Encoding", "snappy")
	hreq.Header.Set("Content-Type", "application/x-protobuf")
	hreq.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	hreq.Header.Set(a.f.o.TenantHeader, a.cluster)
	resp, err := a.f.o.Client.Do(hreq)
	if err != nil {
		a.f.results.WithLabelValues(a.cluster, "error").Inc()
		return fmt.Errorf("forward to Thanos Receive: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	_, _ = io.Copy(io.Discard, resp.Body) // the rest, so that the connection is reused
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNoContent, http.StatusAccepted, http.StatusCreated:
		a.f.results.WithLabelValues(a.cluster, "success").Inc()
		return nil
	case http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge:
		a.f.results.WithLabelValues(a.cluster, "rejected").Inc()
		return invalid("forward_rejected", "Thanos Receive refused the request: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	a.f.results.WithLabelValues(a.cluster, "error").Inc()
	return fmt.Errorf("forward to Thanos Receive: %s: %s", resp.Status, strings.TrimSpace(string(body)))
}
