package backtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/util/annotations"
)

// history is the stored TSDB, opened read only. DBReadOnly loads every block and replays the
// WAL each time it is asked for a querier, and closes the previous querier's blocks when it
// is, so it is asked once, for the head; the blocks get a querier each. A query is sent only to
// the parts its time range overlaps: a TSDB querier would otherwise look up every matching
// series of every block for each evaluation, only to find no samples in most of them.
type history struct {
	db    *tsdb.DBReadOnly
	parts []part
	// hidden are the metric names the replayed rules record; the stored series of those
	// names (what fleetwatch recorded live) are not read.
	hidden map[string]bool
}

// part is a block or the head, and the times it holds.
type part struct {
	mint, maxt int64
	q          storage.Querier
}

// openAttempts bounds the retries of opening a TSDB that a running fleetwatch writes to: its
// compaction can delete a block, or its WAL truncation a segment, while they are being read.
const openAttempts = 3

func openHistory(dir, sandboxRoot string, mint, maxt int64, hidden map[string]bool, logger *slog.Logger) (*history, error) {
	if err := looksLikeTSDB(dir); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 1; attempt <= openAttempts; attempt++ {
		db, err := tsdb.OpenDBReadOnly(dir, sandboxRoot, logger)
		if err != nil {
			return nil, fmt.Errorf("open TSDB %s read only: %w", dir, err)
		}
		h := &history{db: db, hidden: hidden}
		if lastErr = h.open(dir, mint, maxt); lastErr == nil {
			return h, nil
		}
		h.Close()
		logger.Debug("reading the TSDB failed; retrying", "dir", dir, "attempt", attempt, "err", lastErr)
		time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
	}
	return nil, fmt.Errorf("read TSDB %s: %w", dir, lastErr)
}

func (h *history) open(dir string, mint, maxt int64) error {
	// The blocks' time ranges first: opening the head's querier below closes these readers.
	blocks, err := h.db.Blocks()
	if err != nil {
		return err
	}
	type span struct {
		id         string
		mint, maxt int64
	}
	var spans []span
	headMint := int64(math.MinInt64)
	for _, b := range blocks {
		m := b.Meta()
		headMint = max(headMint, m.MaxTime) // block ranges are half-open: [MinTime, MaxTime)
		if m.MinTime <= maxt && mint < m.MaxTime {
			spans = append(spans, span{id: m.ULID.String(), mint: m.MinTime, maxt: m.MaxTime - 1})
		}
	}
	// The head, replayed from the WAL, holds what comes after the last block. A TSDB of
	// blocks only (a copy, a backfill) has nothing there, and no WAL to replay.
	if _, err := os.Stat(filepath.Join(dir, "wal")); err == nil && maxt >= headMint {
		hmint := max(mint, headMint)
		// Asked from the block's end on, DB.Querier would add the last block, whose closed
		// interval ends there; the head's sample at that very time is still read, as the
		// select hints, not the querier's range, bound what a query reads.
		q, err := h.db.Querier(max(hmint, headMint+1), maxt)
		if err != nil {
			return err
		}
		h.parts = append(h.parts, part{mint: hmint, maxt: maxt, q: q})
	}
	for _, s := range spans {
		b, err := h.db.Block(s.id, tsdb.DefaultPostingsDecoderFactory)
		if err != nil {
			return fmt.Errorf("open block %s: %w", s.id, err)
		}
		q, err := tsdb.NewBlockQuerier(b, s.mint, s.maxt)
		if err != nil {
			return fmt.Errorf("query block %s: %w", s.id, err)
		}
		h.parts = append(h.parts, part{mint: s.mint, maxt: s.maxt, q: q})
	}
	return nil
}

// looksLikeTSDB refuses a directory with neither a WAL nor a block: reading it would create an
// empty WAL directory in, say, a mistyped home directory, and replay nothing.
func looksLikeTSDB(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("open TSDB: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if e.Name() == "wal" {
			return nil
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "meta.json")); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s is not a TSDB directory: it has neither a wal directory nor blocks", dir)
}

func (h *history) Close() error {
	var errs []error
	for _, p := range h.parts {
		errs = append(errs, p.q.Close())
	}
	return errors.Join(append(errs, h.db.Close())...)
}

// Querier implements storage.Queryable.
func (h *history) Querier(mint, maxt int64) (storage.Querier, error) {
	return &historyQuerier{h: h, mint: mint, maxt: maxt}, nil
}

// historyQuerier is one query's view of the history. Closing it closes nothing: the parts live
// as long as the replay.
type historyQuerier struct {
	h          *history
	mint, maxt int64
}

// overlapping returns a querier over the parts that hold samples between mint and maxt.
func (q *historyQuerier) overlapping(mint, maxt int64) storage.Querier {
	var qs []storage.Querier
	for _, p := range q.h.parts {
		if p.mint <= maxt && mint <= p.maxt {
			qs = append(qs, p.q)
		}
	}
	switch len(qs) {
	case 0:
		return storage.NoopQuerier()
	case 1:
		return qs[0]
	}
	return storage.NewMergeQuerier(qs, nil, storage.ChainedSeriesMerge)
}

func (q *historyQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	if hints == nil {
		hints = &storage.SelectHints{Start: q.mint, End: q.maxt}
	}
	named := false
	for _, m := range ms {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			if q.h.hidden[m.Value] {
				return storage.EmptySeriesSet()
			}
			named = true
		}
	}
	set := q.overlapping(hints.Start, hints.End).Select(ctx, sortSeries, hints, ms...)
	if named || len(q.h.hidden) == 0 {
		return set
	}
	return &hidingSeriesSet{SeriesSet: set, hidden: q.h.hidden}
}

func (q *historyQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return q.overlapping(q.mint, q.maxt).LabelValues(ctx, name, hints, ms...)
}

func (q *historyQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return q.overlapping(q.mint, q.maxt).LabelNames(ctx, hints, ms...)
}

func (*historyQuerier) Close() error { return nil }

// hasSamples reports whether any series has a sample between mint and maxt. It stops at the
// first one, so it is quick whenever the answer is yes.
func (h *history) hasSamples(ctx context.Context, mint, maxt int64) bool {
	q, _ := h.Querier(mint, maxt)
	ss := q.Select(ctx, false, &storage.SelectHints{Start: mint, End: maxt}, labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+"))
	var it chunkenc.Iterator
	for ss.Next() {
		it = ss.At().Iterator(it)
		if it.Seek(mint) != chunkenc.ValNone && it.AtT() <= maxt {
			return true
		}
	}
	return false
}

// hidingSeriesSet skips the series whose metric name is hidden.
type hidingSeriesSet struct {
	storage.SeriesSet
	hidden map[string]bool
}

func (s *hidingSeriesSet) Next() bool {
	for s.SeriesSet.Next() {
		if !s.hidden[s.At().Labels().Get(labels.MetricName)] {
			return true
		}
	}
	return false
}

// recorded is the temporary TSDB the recording rules and the alerts' ALERTS series write to.
type recorded struct {
	db      *tsdb.DB
	dir     string
	samples atomic.Int64
}

func openRecorded(logger *slog.Logger) (*recorded, error) {
	dir, err := os.MkdirTemp("", "fleetwatch-backtest-")
	if err != nil {
		return nil, fmt.Errorf("create temporary TSDB: %w", err)
	}
	opts := tsdb.DefaultOptions()
	opts.WALSegmentSize = -1 // nothing to recover: it is deleted at the end
	// The head takes no sample older than half its chunk range before its newest one. Rules
	// evaluated ahead write a window of one rule before the next rule's, and a query offset
	// writes into the past; a year is far more than either reaches back.
	opts.MinBlockDuration = (365 * 24 * time.Hour).Milliseconds()
	opts.MaxBlockDuration = opts.MinBlockDuration
	db, err := tsdb.Open(dir, logger, nil, opts, nil)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("open temporary TSDB in %s: %w", dir, err)
	}
	// Everything stays in the head: the replay reads what it has just written, and compacting
	// it into blocks would only cost time.
	db.DisableCompactions()
	return &recorded{db: db, dir: dir}, nil
}

func (r *recorded) Close() error {
	return errors.Join(r.db.Close(), os.RemoveAll(r.dir))
}

// Appender implements storage.Appendable, counting the samples recorded (stale markers aside).
func (r *recorded) Appender(ctx context.Context) storage.Appender {
	return &countingAppender{Appender: r.db.Appender(ctx), n: &r.samples}
}

type countingAppender struct {
	storage.Appender
	n *atomic.Int64
}

func (a *countingAppender) Append(ref storage.SeriesRef, l labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	ref, err := a.Appender.Append(ref, l, t, v)
	if err == nil && !value.IsStaleNaN(v) {
		a.count(l)
	}
	return ref, err
}

func (a *countingAppender) AppendHistogram(ref storage.SeriesRef, l labels.Labels, t int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	ref, err := a.Appender.AppendHistogram(ref, l, t, h, fh)
	if err == nil {
		a.count(l)
	}
	return ref, err
}

// count counts what recording rules record, not the alerts' ALERTS series.
func (a *countingAppender) count(l labels.Labels) {
	if n := l.Get(labels.MetricName); n != "ALERTS" && n != "ALERTS_FOR_STATE" {
		a.n.Add(1)
	}
}
