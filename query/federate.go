package query

import (
	"net/http"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// FederateHandler serves /federate over the view as Prometheus's web/federate.go does: the
// latest float sample within the lookback of every series the match[] selectors pick, in the
// exposition format the client asks for. Without match[] it answers nothing, as Prometheus
// does. Native histograms are left out (the text format cannot carry them).
func (v *View) FederateHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "error parsing form values: "+err.Error(), http.StatusBadRequest)
			return
		}
		sets, err := parser.ParseMetricSelectors(r.Form["match[]"])
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		st := v.state.Load()
		now := time.Now()
		mint := timestamp.FromTime(now.Add(-time.Duration(st.cfg.LookbackDelta)))
		maxt := timestamp.FromTime(now)
		q, err := st.queryable.Querier(mint, maxt)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer q.Close()
		hints := &storage.SelectHints{Start: mint, End: maxt}
		var ss []storage.SeriesSet
		for _, ms := range sets {
			ss = append(ss, q.Select(r.Context(), true, hints, ms...))
		}
		set := storage.NewMergeSeriesSet(ss, 0, storage.ChainedSeriesMerge)
		type sample struct {
			ls labels.Labels
			t  int64
			f  float64
		}
		var out []sample
		var it chunkenc.Iterator
		for set.Next() {
			s := set.At()
			it = s.Iterator(it)
			var (
				t    int64
				f    float64
				have bool
			)
			for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
				if vt != chunkenc.ValFloat {
					have = false
					continue
				}
				if ts, fv := it.At(); ts <= maxt {
					t, f, have = ts, fv, true
				}
			}
			if it.Err() != nil || !have || value.IsStaleNaN(f) {
				continue
			}
			out = append(out, sample{ls: s.Labels(), t: t, f: f})
		}
		if err := set.Err(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		slices.SortStableFunc(out, func(a, b sample) int {
			return strings.Compare(a.ls.Get(labels.MetricName), b.ls.Get(labels.MetricName))
		})
		format := expfmt.Negotiate(r.Header)
		w.Header().Set("Content-Type", string(format))
		enc := expfmt.NewEncoder(w, format)
		var fam *dto.MetricFamily
		flush := func() {
			if fam != nil {
				_ = enc.Encode(fam)
			}
		}
		for _, s := range out {
			name := s.ls.Get(labels.MetricName)
			if fam == nil || fam.GetName() != name {
				flush()
				fam = &dto.MetricFamily{Name: &name, Type: dto.MetricType_UNTYPED.Enum()}
			}
			m := &dto.Metric{Untyped: &dto.Untyped{Value: &s.f}, TimestampMs: &s.t}
			s.ls.Range(func(l labels.Label) {
				if l.Name == labels.MetricName {
					return
				}
				m.Label = append(m.Label, &dto.LabelPair{Name: &l.Name, Value: &l.Value})
			})
			fam.Metric = append(fam.Metric, m)
		}
		flush()
	})
}
