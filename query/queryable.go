package query

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

// partialResponseKey carries the caller's partial-response choice through the PromQL engine to
// Select, where remote sources are merged.
type partialResponseKey struct{}

// WithPartialResponse returns a context that says whether a failing remote source may be
// answered with a warning (true, the default) or must fail the query (false).
func WithPartialResponse(ctx context.Context, allowed bool) context.Context {
	return context.WithValue(ctx, partialResponseKey{}, allowed)
}

func partialResponseAllowed(ctx context.Context) bool {
	v, ok := ctx.Value(partialResponseKey{}).(bool)
	return !ok || v
}

// RemoteSource is a named queryable merged into the view.
type RemoteSource struct {
	Name      string
	Queryable storage.Queryable
	// Closer, when set, releases the source's connections after a reload replaced it.
	Closer io.Closer
}

// mergedQueryable is the local TSDB merged with remote sources. A remote source that fails
// becomes a warning naming it, unless the context forbids partial responses.
type mergedQueryable struct {
	local   storage.Queryable
	remotes []RemoteSource
}

func (m *mergedQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	local, err := m.local.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	if len(m.remotes) == 0 {
		return local, nil
	}
	rq := make([]storage.Querier, 0, len(m.remotes))
	for _, r := range m.remotes {
		q, err := r.Queryable.Querier(mint, maxt)
		if err != nil {
			rq = append(rq, failingQuerier{fmt.Errorf("remote source %q: %w", r.Name, err)})
			continue
		}
		rq = append(rq, &namedQuerier{Querier: q, name: r.Name})
	}
	return &partialQuerier{local: local, remotes: rq}, nil
}

// partialQuerier decides per call, from the context, whether remote sources are primaries
// (errors abort) or secondaries (errors become warnings).
type partialQuerier struct {
	local   storage.Querier
	remotes []storage.Querier
}

func (p *partialQuerier) merged(ctx context.Context) storage.Querier {
	if partialResponseAllowed(ctx) {
		return storage.NewMergeQuerier([]storage.Querier{p.local}, p.remotes, storage.ChainedSeriesMerge)
	}
	return storage.NewMergeQuerier(append([]storage.Querier{p.local}, p.remotes...), nil, storage.ChainedSeriesMerge)
}

func (p *partialQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	return p.merged(ctx).Select(ctx, sortSeries, hints, ms...)
}

func (p *partialQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return p.merged(ctx).LabelValues(ctx, name, hints, ms...)
}

func (p *partialQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return p.merged(ctx).LabelNames(ctx, hints, ms...)
}

func (p *partialQuerier) Close() error {
	return p.merged(context.Background()).Close()
}

// namedQuerier prefixes a remote source's errors with its name so a partial-response warning
// says which source failed.
type namedQuerier struct {
	storage.Querier
	name string
}

func (n *namedQuerier) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("remote source %q: %w", n.name, err)
}

func (n *namedQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	return &namedSeriesSet{SeriesSet: n.Querier.Select(ctx, sortSeries, hints, ms...), q: n}
}

func (n *namedQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	v, w, err := n.Querier.LabelValues(ctx, name, hints, ms...)
	return v, w, n.wrap(err)
}

func (n *namedQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	v, w, err := n.Querier.LabelNames(ctx, hints, ms...)
	return v, w, n.wrap(err)
}

type namedSeriesSet struct {
	storage.SeriesSet
	q *namedQuerier
}

func (s *namedSeriesSet) Err() error { return s.q.wrap(s.SeriesSet.Err()) }

type failingQuerier struct{ err error }

func (f failingQuerier) Select(context.Context, bool, *storage.SelectHints, ...*labels.Matcher) storage.SeriesSet {
	return storage.ErrSeriesSet(f.err)
}

func (f failingQuerier) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, f.err
}

func (f failingQuerier) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, f.err
}
func (f failingQuerier) Close() error { return nil }

// dedupQueryable removes replica labels and merges the replicas of each series with Thanos's
// penalty-based deduplication (dedup.go), as Thanos Query does with --query.replica-label.
type dedupQueryable struct {
	storage.Queryable
	replicaLabels []string
}

func (d *dedupQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	q, err := d.Queryable.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return &dedupQuerier{Querier: q, replicaLabels: d.replicaLabels}, nil
}

type dedupQuerier struct {
	storage.Querier
	replicaLabels []string
}

func (d *dedupQuerier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	set := d.Querier.Select(ctx, true, hints, ms...)
	// Dedup needs the replicas of a series next to each other, so the replica labels are
	// removed first and the series sorted again (stable, so replicas keep their order).
	var series []storage.Series
	for set.Next() {
		s := set.At()
		ls := s.Labels()
		stripped := ls
		for _, rl := range d.replicaLabels {
			if stripped.Has(rl) {
				stripped = labels.NewBuilder(stripped).Del(rl).Labels()
			}
		}
		if len(d.replicaLabels) > 0 && !labels.Equal(ls, stripped) {
			s = relabeled{Series: s, lset: stripped}
		}
		series = append(series, s)
	}
	if err := set.Err(); err != nil {
		return storage.ErrSeriesSet(err)
	}
	slices.SortStableFunc(series, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	f := ""
	if hints != nil {
		f = hints.Func
	}
	return newDedupSeriesSet(&listSeriesSet{series: series, idx: -1, warnings: set.Warnings()}, f)
}

// LabelNames hides the replica labels, which deduplication removes from every series.
func (d *dedupQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	names, w, err := d.Querier.LabelNames(ctx, hints, ms...)
	return slices.DeleteFunc(names, func(n string) bool { return slices.Contains(d.replicaLabels, n) }), w, err
}

func (d *dedupQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	if slices.Contains(d.replicaLabels, name) {
		return nil, nil, nil
	}
	return d.Querier.LabelValues(ctx, name, hints, ms...)
}

type relabeled struct {
	storage.Series
	lset labels.Labels
}

func (r relabeled) Labels() labels.Labels { return r.lset }

type listSeriesSet struct {
	series   []storage.Series
	idx      int
	warnings annotations.Annotations
}

func (l *listSeriesSet) Next() bool                        { l.idx++; return l.idx < len(l.series) }
func (l *listSeriesSet) At() storage.Series                { return l.series[l.idx] }
func (l *listSeriesSet) Err() error                        { return nil }
func (l *listSeriesSet) Warnings() annotations.Annotations { return l.warnings }

// sourceNames lists remote source names for log lines.
func sourceNames(rs []RemoteSource) string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.Name
	}
	return strings.Join(names, ",")
}
