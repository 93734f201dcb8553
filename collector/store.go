package collector

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// maxAheadTime is how far in the future a sample may be, as in Prometheus's receiver.
const maxAheadTime = 10 * time.Minute

// ErrForgedCluster is returned for a series whose `cluster` label names another cluster than
// the one whose credentials sent it.
var ErrForgedCluster = errors.New("series carries a cluster label of another cluster")

// badRequest marks an error as the sender's fault: answered 400, not retried.
type badRequest struct {
	reason string
	err    error
}

func (e *badRequest) Error() string { return e.err.Error() }
func (e *badRequest) Unwrap() error { return e.err }

func invalid(reason string, format string, args ...any) error {
	return &badRequest{reason: reason, err: fmt.Errorf(format, args...)}
}

// store decodes a remote-write message and appends it in one transaction: everything is
// committed, or nothing.
type store struct {
	appendable storage.Appendable
	metadata   MetadataSink
	now        func() time.Time
	metrics    *metrics
}

type counts struct{ samples, histograms, exemplars int }

// Store implements client_golang's remote write storage interface.
func (s *store) Store(req *http.Request, msgType remote.WriteMessageType) (*remote.WriteResponse, error) {
	cluster, _ := req.Context().Value(clusterKey{}).(string)
	resp := remote.NewWriteResponse()
	// The receiver hands over the decoded body it holds (decodedBody): read as it is, not copied.
	var body []byte
	var err error
	if d, ok := req.Body.(decodedBody); ok {
		body = d.b
	} else if body, err = io.ReadAll(req.Body); err != nil {
		resp.SetStatusCode(http.StatusBadRequest)
		return resp, fmt.Errorf("read request body: %w", err)
	}

	var n counts
	switch msgType {
	case remote.WriteV1MessageType:
		var wr prompb.WriteRequest
		if uerr := wr.Unmarshal(body); uerr != nil {
			err = invalid("decode", "decode remote write 1.0 request: %w", uerr)
			break
		}
		n, err = s.writeV1(req, cluster, &wr)
	default:
		var wr writev2.Request
		if uerr := wr.Unmarshal(body); uerr != nil {
			err = invalid("decode", "decode remote write 2.0 request: %w", uerr)
			break
		}
		n, err = s.writeV2(req, cluster, &wr)
	}
	if err != nil {
		if br, ok := errors.AsType[*badRequest](err); ok {
			s.metrics.rejected.WithLabelValues(cluster, br.reason).Inc()
			resp.SetStatusCode(http.StatusBadRequest)
		} else {
			s.metrics.rejected.WithLabelValues(cluster, "internal").Inc()
			resp.SetStatusCode(http.StatusInternalServerError)
		}
		// Nothing was kept, and the 2.0 headers say so (they report zero).
		return resp, err
	}
	resp.Add(remote.WriteResponseStats{Samples: n.samples, Histograms: n.histograms, Exemplars: n.exemplars})
	s.metrics.samples.WithLabelValues(cluster, "sample").Add(float64(n.samples))
	s.metrics.samples.WithLabelValues(cluster, "histogram").Add(float64(n.histograms))
	s.metrics.samples.WithLabelValues(cluster, "exemplar").Add(float64(n.exemplars))
	if n.samples+n.histograms > 0 {
		s.metrics.lastIngest.WithLabelValues(cluster).Set(float64(s.now().UnixNano()) / 1e9)
	}
	return resp, nil
}

// txn is one request's appender. append errors roll the whole request back.
type txn struct {
	app     storage.Appender
	cluster string
	maxTime int64
	b       labels.ScratchBuilder
	n       counts
	// last is each series' latest sample in this request. The TSDB checks a sample only
	// against committed ones, and at commit silently drops a sample that is not after the one
	// before it in the same batch, so the request is checked here to be rejected whole instead.
	last map[storage.SeriesRef]pendingSample
}

// pendingSample is a sample appended but not yet committed: a float (its bits) or a histogram.
type pendingSample struct {
	ts int64
	v  uint64
	h  *histogram.Histogram
	fh *histogram.FloatHistogram
}

// sameAs says whether p is an exact duplicate of q, which the TSDB accepts (and stores once),
// as it does for a duplicate of a committed sample.
func (p pendingSample) sameAs(q pendingSample) bool {
	switch {
	case p.h != nil && q.h != nil:
		return p.h.Equals(q.h)
	case p.fh != nil && q.fh != nil:
		return p.fh.Equals(q.fh)
	case p.h == nil && p.fh == nil && q.h == nil && q.fh == nil:
		return p.v == q.v
	}
	return false
}

// begin starts a request's transaction; series is how many series it has (to size last).
func (s *store) begin(req *http.Request, cluster string, series int) *txn {
	return &txn{
		app:     s.appendable.Appender(req.Context()),
		cluster: cluster,
		maxTime: timestamp.FromTime(s.now().Add(maxAheadTime)),
		b:       labels.NewScratchBuilder(16),
		last:    make(map[storage.SeriesRef]pendingSample, series),
	}
}

// finish commits when err is nil and rolls back otherwise. A failed commit is a server error.
func (t *txn) finish(err error) (counts, error) {
	if err != nil {
		if rerr := t.app.Rollback(); rerr != nil {
			return counts{}, fmt.Errorf("%w (and rolling back: %v)", err, rerr)
		}
		return counts{}, err
	}
	if err := t.app.Commit(); err != nil {
		return counts{}, fmt.Errorf("commit: %w", err)
	}
	return t.n, nil
}

// addLabel adds one label of a series to the builder, enforcing the cluster's identity: a
// `cluster` label equal to the sender's name is accepted (it is re-added below), any other
// value is forged.
func (t *txn) addLabel(name, value string) error {
	if name == config.ClusterLabel {
		if value != t.cluster {
			return invalid("forged_cluster", "%w: sent by %q, labelled %q", ErrForgedCluster, t.cluster, value)
		}
		return nil
	}
	t.b.Add(name, value)
	return nil
}

// seriesLabels finishes the series' labels: stamps the cluster, sorts, validates.
func (t *txn) seriesLabels() (labels.Labels, error) {
	t.b.Add(config.ClusterLabel, t.cluster)
	t.b.Sort()
	ls := t.b.Labels()
	if !ls.Has(labels.MetricName) {
		return ls, invalid("invalid_labels", "series %s has no metric name", ls.String())
	}
	if !ls.IsValid(model.UTF8Validation) {
		return ls, invalid("invalid_labels", "series %s has an invalid metric or label name, or a value that is not UTF-8", ls.String())
	}
	if dup, ok := ls.HasDuplicateLabelNames(); ok {
		return ls, invalid("invalid_labels", "series %s has label %q more than once", ls.String(), dup)
	}
	return ls, nil
}

func (t *txn) appendSample(ref storage.SeriesRef, ls labels.Labels, ts int64, v float64) (storage.SeriesRef, error) {
	if ts > t.maxTime {
		return 0, t.appendErr(storage.ErrOutOfBounds, ls, ts)
	}
	ref, err := t.app.Append(ref, ls, ts, v)
	if err != nil {
		return 0, t.appendErr(err, ls, ts)
	}
	if err := t.checkOrder(ref, ls, pendingSample{ts: ts, v: math.Float64bits(v)}); err != nil {
		return 0, err
	}
	t.n.samples++
	return ref, nil
}

func (t *txn) appendHistogram(ref storage.SeriesRef, ls labels.Labels, ts int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	if ts > t.maxTime {
		return 0, t.appendErr(storage.ErrOutOfBounds, ls, ts)
	}
	ref, err := t.app.AppendHistogram(ref, ls, ts, h, fh)
	if err != nil {
		return 0, t.appendErr(err, ls, ts)
	}
	if err := t.checkOrder(ref, ls, pendingSample{ts: ts, h: h, fh: fh}); err != nil {
		return 0, err
	}
	t.n.histograms++
	return ref, nil
}

// checkOrder rejects a sample that is not after the series' previous sample in this request,
// unless it is an exact duplicate of it. The series is identified by the reference the TSDB
// returned, so it is the same whichever time series entry of the request the sample came in.
func (t *txn) checkOrder(ref storage.SeriesRef, ls labels.Labels, p pendingSample) error {
	if ref == 0 { // an appender that does not hand out references; nothing to key on
		return nil
	}
	prev, ok := t.last[ref]
	switch {
	case !ok || p.ts > prev.ts:
		t.last[ref] = p
		return nil
	case p.ts < prev.ts:
		return t.appendErr(storage.ErrOutOfOrderSample, ls, p.ts)
	case !p.sameAs(prev):
		return t.appendErr(storage.ErrDuplicateSampleForTimestamp, ls, p.ts)
	}
	return nil
}

// appendExemplar stores an exemplar. As in Prometheus, exemplar storage is best effort: an
// exemplar that cannot be stored does not fail the request.
func (t *txn) appendExemplar(ref storage.SeriesRef, ls labels.Labels, e exemplar.Exemplar) {
	if _, err := t.app.AppendExemplar(ref, ls, e); err == nil {
		t.n.exemplars++
	}
}

// appendErr sorts an append error into the sender's fault (400, never retried) and ours (500).
func (t *txn) appendErr(err error, ls labels.Labels, ts int64) error {
	switch {
	case errors.Is(err, storage.ErrOutOfOrderSample), errors.Is(err, storage.ErrDuplicateSampleForTimestamp):
		return invalid("out_of_order", "series %s at %d: %w", ls.String(), ts, err)
	case errors.Is(err, storage.ErrOutOfBounds), errors.Is(err, storage.ErrTooOldSample):
		return invalid("out_of_bounds", "series %s at %d: %w", ls.String(), ts, err)
	case isHistogramError(err):
		return invalid("invalid_histogram", "series %s at %d: %w", ls.String(), ts, err)
	}
	return fmt.Errorf("append series %s: %w", ls.String(), err)
}

func isHistogramError(err error) bool {
	_, ok := errors.AsType[histogram.Error](err)
	return ok
}

func (s *store) writeV1(req *http.Request, cluster string, wr *prompb.WriteRequest) (counts, error) {
	t := s.begin(req, cluster, len(wr.Timeseries))
	err := func() error {
		for i := range wr.Timeseries {
			ts := &wr.Timeseries[i]
			t.b.Reset()
			for _, l := range ts.Labels {
				if err := t.addLabel(l.Name, l.Value); err != nil {
					return err
				}
			}
			ls, err := t.seriesLabels()
			if err != nil {
				return err
			}
			var ref storage.SeriesRef
			for _, smp := range ts.Samples {
				if ref, err = t.appendSample(ref, ls, smp.Timestamp, smp.Value); err != nil {
					return err
				}
			}
			for _, hp := range ts.Histograms {
				h, fh := v1Histogram(hp)
				if ref, err = t.appendHistogram(ref, ls, hp.Timestamp, h, fh); err != nil {
					return err
				}
			}
			for _, ep := range ts.Exemplars {
				t.appendExemplar(ref, ls, ep.ToExemplar(&labels.ScratchBuilder{}, nil))
			}
		}
		return nil
	}()
	n, err := t.finish(err)
	if err == nil && s.metadata != nil {
		for _, md := range wr.Metadata {
			s.metadata.SetMetadata(cluster, md.MetricFamilyName, metricType(md.Type), md.Help, md.Unit)
		}
	}
	return n, err
}

func v1Histogram(hp prompb.Histogram) (*histogram.Histogram, *histogram.FloatHistogram) {
	if hp.IsFloatHistogram() {
		return nil, hp.ToFloatHistogram()
	}
	return hp.ToIntHistogram(), nil
}

func metricType(t prompb.MetricMetadata_MetricType) string {
	switch t {
	case prompb.MetricMetadata_COUNTER:
		return string(model.MetricTypeCounter)
	case prompb.MetricMetadata_GAUGE:
		return string(model.MetricTypeGauge)
	case prompb.MetricMetadata_HISTOGRAM:
		return string(model.MetricTypeHistogram)
	case prompb.MetricMetadata_GAUGEHISTOGRAM:
		return string(model.MetricTypeGaugeHistogram)
	case prompb.MetricMetadata_SUMMARY:
		return string(model.MetricTypeSummary)
	case prompb.MetricMetadata_INFO:
		return string(model.MetricTypeInfo)
	case prompb.MetricMetadata_STATESET:
		return string(model.MetricTypeStateset)
	}
	return string(model.MetricTypeUnknown)
}

func (s *store) writeV2(req *http.Request, cluster string, wr *writev2.Request) (counts, error) {
	t := s.begin(req, cluster, len(wr.Timeseries))
	syms := wr.Symbols
	symbol := func(ref uint32) (string, error) {
		if int(ref) >= len(syms) {
			return "", invalid("invalid_labels", "symbol reference %d is out of range of %d symbols", ref, len(syms))
		}
		return syms[ref], nil
	}
	type md struct{ name, typ, help, unit string }
	var metas []md
	err := func() error {
		for i := range wr.Timeseries {
			ts := &wr.Timeseries[i]
			refs := ts.LabelsRefs
			if len(refs)%2 != 0 {
				return invalid("invalid_labels", "series %d has an odd number of label references", i)
			}
			t.b.Reset()
			for j := 0; j < len(refs); j += 2 {
				name, err := symbol(refs[j])
				if err != nil {
					return err
				}
				value, err := symbol(refs[j+1])
				if err != nil {
					return err
				}
				if err := t.addLabel(name, value); err != nil {
					return err
				}
			}
			ls, err := t.seriesLabels()
			if err != nil {
				return err
			}
			if len(ts.Samples) == 0 && len(ts.Histograms) == 0 {
				return invalid("invalid_samples", "series %s has no samples or histograms", ls.String())
			}
			var ref storage.SeriesRef
			for _, smp := range ts.Samples {
				if ref, err = t.appendSample(ref, ls, smp.Timestamp, smp.Value); err != nil {
					return err
				}
			}
			for _, hp := range ts.Histograms {
				var h *histogram.Histogram
				var fh *histogram.FloatHistogram
				if hp.IsFloatHistogram() {
					fh = hp.ToFloatHistogram()
				} else {
					h = hp.ToIntHistogram()
				}
				if ref, err = t.appendHistogram(ref, ls, hp.Timestamp, h, fh); err != nil {
					return err
				}
			}
			for _, ep := range ts.Exemplars {
				e, err := ep.ToExemplar(&labels.ScratchBuilder{}, syms)
				if err != nil {
					return invalid("invalid_exemplar", "series %s: %w", ls.String(), err)
				}
				t.appendExemplar(ref, ls, e)
			}
			if s.metadata != nil && ts.Metadata.Type != writev2.Metadata_METRIC_TYPE_UNSPECIFIED {
				if int(ts.Metadata.HelpRef) >= len(syms) || int(ts.Metadata.UnitRef) >= len(syms) {
					return invalid("invalid_metadata", "series %s: metadata symbol reference out of range of %d symbols", ls.String(), len(syms))
				}
				m := ts.ToMetadata(syms)
				metas = append(metas, md{ls.Get(labels.MetricName), string(m.Type), m.Help, m.Unit})
			}
		}
		return nil
	}()
	n, err := t.finish(err)
	if err == nil {
		for _, m := range metas {
			s.metadata.SetMetadata(cluster, m.name, m.typ, m.help, m.unit)
		}
	}
	return n, err
}
