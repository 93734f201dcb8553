// This file carries Thanos's penalty-based deduplication of replicated series
// (github.com/thanos-io/thanos v0.42.4, pkg/dedup/iter.go, Copyright (c) The Thanos Authors,
// Apache License 2.0), with the chunk-level and chain variants left out.
//
// Why a copy and not the import: pkg/dedup also holds Thanos's deduplication of downsampled
// chunks, which imports pkg/compact/downsample, pkg/block and the object-storage client with
// every provider's SDK (S3, GCS, Azure, OCI, ...): 458 packages that fleetwatch never runs, more
// than a quarter of its build. The algorithm is unchanged; TestDedupMatchesThanosQuery in
// test/integration compares its answers with a real Thanos Query's on the same replicas.
//
// One difference, on purpose: Thanos Query applies counter resets to every StoreAPI read for a
// counter function (rate, increase, irate, resets), so resets() over its stores always answers 0
// (thanos-io/thanos#3644). fleetwatch applies them only where replicas are merged, where the
// merge compares the replicas as running totals; resets() of a series with one replica counts
// its resets.

package query

import (
	"math"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/util/annotations"
)

// dedupSeriesSet merges the replicas of each series of a set sorted by labels, in which the
// replicas of a series are next to each other with equal labels (the replica labels removed).
type dedupSeriesSet struct {
	set storage.SeriesSet
	// counter says the selector is the argument of rate, increase, irate or resets
	// (SelectHints.Func): the series are counters, whose replicas are adjusted so that a
	// switch between them is not a reset.
	counter bool

	replicas []storage.Series
	lset     labels.Labels
	peek     storage.Series
	ok       bool
}

func newDedupSeriesSet(set storage.SeriesSet, f string) storage.SeriesSet {
	s := &dedupSeriesSet{set: set, counter: isCounterFunc(f)}
	s.ok = s.set.Next()
	if s.ok {
		s.peek = s.set.At()
	}
	return s
}

// isCounterFunc says whether the selector's function only makes sense on counters.
func isCounterFunc(f string) bool {
	return f == "increase" || f == "rate" || f == "irate" || f == "resets"
}

func (s *dedupSeriesSet) Next() bool {
	if !s.ok {
		return false
	}
	// Gather the peeked series and every next one with the same labels.
	s.lset = s.peek.Labels()
	s.replicas = append(s.replicas[:0], s.peek)
	for {
		s.ok = s.set.Next()
		if !s.ok {
			return true
		}
		s.peek = s.set.At()
		if !labels.Equal(s.lset, s.peek.Labels()) {
			return true
		}
		s.replicas = append(s.replicas, s.peek)
	}
}

func (s *dedupSeriesSet) At() storage.Series {
	if len(s.replicas) == 1 {
		return s.replicas[0] // its labels are s.lset already
	}
	// Callers may keep the series: the replicas are copied before the set moves on.
	return &dedupSeries{lset: s.lset, replicas: append([]storage.Series(nil), s.replicas...), counter: s.counter}
}

func (s *dedupSeriesSet) Err() error                        { return s.set.Err() }
func (s *dedupSeriesSet) Warnings() annotations.Annotations { return s.set.Warnings() }

type dedupSeries struct {
	lset     labels.Labels
	replicas []storage.Series
	counter  bool
}

func (s *dedupSeries) Labels() labels.Labels { return s.lset }

func (s *dedupSeries) Iterator(chunkenc.Iterator) chunkenc.Iterator {
	wrap := func(it chunkenc.Iterator) adjustableIterator {
		if s.counter {
			// Each replica's counter resets are applied first, so that the replicas compare as
			// running totals when the merge switches between them (what Thanos's StoreAPI reads
			// do for counter functions).
			return &counterAdjustIterator{Iterator: &counterResetsIterator{it: it}}
		}
		return noAdjustIterator{Iterator: it}
	}
	it := wrap(s.replicas[0].Iterator(nil))
	for _, r := range s.replicas[1:] {
		it = newPenaltyIterator(it, wrap(r.Iterator(nil)))
	}
	return it
}

// adjustableIterator is an iterator whose current value can be adjusted knowing the last value
// returned before a switch of replicas.
type adjustableIterator interface {
	chunkenc.Iterator
	adjustAtValue(lastFloat float64)
}

type noAdjustIterator struct{ chunkenc.Iterator }

func (noAdjustIterator) adjustAtValue(float64) {}

// counterAdjustIterator keeps a counter from going down when the deduplication switches to a
// replica that is behind (it missed the end of the counter before a restart): the difference is
// added to its values from then on, so PromQL does not see a false counter reset
// (thanos-io/thanos#2401).
type counterAdjustIterator struct {
	chunkenc.Iterator
	errAdjust float64
}

func (it *counterAdjustIterator) adjustAtValue(lastFloat float64) {
	if _, v := it.At(); lastFloat > v {
		it.errAdjust += lastFloat - v
	}
}

func (it *counterAdjustIterator) At() (int64, float64) {
	t, v := it.Iterator.At()
	return t, v + it.errAdjust
}

// counterResetsIterator turns a counter into its running total: after a reset, the values go on
// from the total before it (Thanos's downsample.ApplyCounterResetsSeriesIterator over one
// iterator). NaN samples are skipped; histograms pass through.
type counterResetsIterator struct {
	it      chunkenc.Iterator
	vt      chunkenc.ValueType
	started bool
	lastT   int64
	lastV   float64
	totalV  float64
}

func (it *counterResetsIterator) Next() chunkenc.ValueType {
	for {
		vt := it.it.Next()
		if vt == chunkenc.ValNone {
			return vt
		}
		it.vt = vt
		if it.vt != chunkenc.ValFloat {
			it.lastT = it.it.AtT()
			return it.vt
		}
		t, v := it.it.At()
		switch {
		case math.IsNaN(v):
			continue
		case !it.started:
			it.started = true
			it.lastT, it.lastV, it.totalV = t, v, v
			return it.vt
		case t > it.lastT:
			if v >= it.lastV {
				it.totalV += v - it.lastV
			} else {
				it.totalV += v
			}
			it.lastT, it.lastV = t, v
			return it.vt
		case t == it.lastT:
			it.lastV = v
		}
	}
}

// Seek steps with Next rather than seeking, so that no reset is missed.
func (it *counterResetsIterator) Seek(t int64) chunkenc.ValueType {
	for it.vt == chunkenc.ValNone || it.lastT < t {
		if it.Next() == chunkenc.ValNone {
			return chunkenc.ValNone
		}
	}
	return it.vt
}

func (it *counterResetsIterator) At() (int64, float64) { return it.lastT, it.totalV }
func (it *counterResetsIterator) AtHistogram(h *histogram.Histogram) (int64, *histogram.Histogram) {
	return it.it.AtHistogram(h)
}
func (it *counterResetsIterator) AtFloatHistogram(fh *histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return it.it.AtFloatHistogram(fh)
}
func (it *counterResetsIterator) AtT() int64 { return it.lastT }
func (it *counterResetsIterator) Err() error { return it.it.Err() }

// penaltyIterator merges two replicas: it follows one replica and, when it has a gap, the
// other. The replica not followed is penalized: its next sample must be at least twice the last
// sample interval later, so the merge never samples faster than the replicas do.
type penaltyIterator struct {
	a, b       adjustableIterator
	aval, bval chunkenc.ValueType

	lastT    int64
	lastIter chunkenc.Iterator

	penA, penB int64
	useA       bool
}

// initialPenalty is the penalty before a sample interval is known: timestamps are in
// milliseconds, and scrape intervals are seconds long.
const initialPenalty = 5000

func newPenaltyIterator(a, b adjustableIterator) *penaltyIterator {
	return &penaltyIterator{a: a, b: b, lastT: math.MinInt64, lastIter: a, useA: true, aval: a.Next(), bval: b.Next()}
}

func (it *penaltyIterator) Next() chunkenc.ValueType {
	lastFloat, isFloat := it.lastFloatVal()
	lastUseA := it.useA
	defer func() {
		if it.useA != lastUseA && isFloat {
			// The replicas switched: adjust the new one to the value before.
			it.adjustAtValue(lastFloat)
		}
	}()

	// Advance both to past the last timestamp plus their penalty.
	if it.aval != chunkenc.ValNone {
		it.aval = it.a.Seek(it.lastT + 1 + it.penA)
	}
	if it.bval != chunkenc.ValNone {
		it.bval = it.b.Seek(it.lastT + 1 + it.penB)
	}
	if it.aval == chunkenc.ValNone {
		it.useA = false
		if it.bval != chunkenc.ValNone {
			it.lastT = it.b.AtT()
			it.lastIter = it.b
			it.penB = 0
		}
		return it.bval
	}
	if it.bval == chunkenc.ValNone {
		it.useA = true
		it.lastT = it.a.AtT()
		it.lastIter = it.a
		it.penA = 0
		return it.aval
	}
	// Both have data: the earlier sample wins, and the other replica is penalized by twice
	// the last interval.
	ta, tb := it.a.AtT(), it.b.AtT()
	it.useA = ta <= tb
	if it.useA {
		it.penB = initialPenalty
		if it.lastT != math.MinInt64 {
			it.penB = 2 * (ta - it.lastT)
		}
		it.penA = 0
		it.lastT = ta
		it.lastIter = it.a
		return it.aval
	}
	it.penA = initialPenalty
	if it.lastT != math.MinInt64 {
		it.penA = 2 * (tb - it.lastT)
	}
	it.penB = 0
	it.lastT = tb
	it.lastIter = it.b
	return it.bval
}

func (it *penaltyIterator) lastFloatVal() (float64, bool) {
	if (it.useA && it.aval == chunkenc.ValFloat) || (!it.useA && it.bval == chunkenc.ValFloat) {
		_, v := it.lastIter.At()
		return v, true
	}
	return 0, false
}

func (it *penaltyIterator) adjustAtValue(lastFloat float64) {
	if it.aval == chunkenc.ValFloat {
		it.a.adjustAtValue(lastFloat)
	}
	if it.bval == chunkenc.ValFloat {
		it.b.adjustAtValue(lastFloat)
	}
}

// Seek steps with Next rather than seeking the replicas, so that no gap is missed.
func (it *penaltyIterator) Seek(t int64) chunkenc.ValueType {
	for {
		ts := it.AtT()
		if ts >= t {
			if it.useA {
				return it.a.Seek(ts)
			}
			return it.b.Seek(ts)
		}
		if it.Next() == chunkenc.ValNone {
			return chunkenc.ValNone
		}
	}
}

func (it *penaltyIterator) At() (int64, float64) { return it.lastIter.At() }

func (it *penaltyIterator) AtHistogram(h *histogram.Histogram) (int64, *histogram.Histogram) {
	return it.lastIter.AtHistogram(h)
}

func (it *penaltyIterator) AtFloatHistogram(fh *histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return it.lastIter.AtFloatHistogram(fh)
}

func (it *penaltyIterator) AtT() int64 {
	if it.useA {
		return it.a.AtT()
	}
	return it.b.AtT()
}

func (it *penaltyIterator) Err() error {
	if err := it.a.Err(); err != nil {
		return err
	}
	return it.b.Err()
}

// boundedIterator yields only the samples of an iterator in [mint, maxt].
type boundedIterator struct {
	it         chunkenc.Iterator
	mint, maxt int64
}

func (it *boundedIterator) Seek(t int64) chunkenc.ValueType {
	if t > it.maxt {
		return chunkenc.ValNone
	}
	vt := it.it.Seek(max(t, it.mint))
	if vt != chunkenc.ValNone && it.it.AtT() > it.maxt {
		return chunkenc.ValNone
	}
	return vt
}

func (it *boundedIterator) Next() chunkenc.ValueType {
	vt := it.it.Next()
	if vt == chunkenc.ValNone {
		return vt
	}
	if it.it.AtT() < it.mint {
		if vt = it.it.Seek(it.mint); vt == chunkenc.ValNone {
			return vt
		}
	}
	// Once past the range, there is no way back.
	if it.it.AtT() > it.maxt {
		return chunkenc.ValNone
	}
	return vt
}

func (it *boundedIterator) At() (int64, float64) { return it.it.At() }
func (it *boundedIterator) AtHistogram(h *histogram.Histogram) (int64, *histogram.Histogram) {
	return it.it.AtHistogram(h)
}
func (it *boundedIterator) AtFloatHistogram(fh *histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return it.it.AtFloatHistogram(fh)
}
func (it *boundedIterator) AtT() int64 { return it.it.AtT() }
func (it *boundedIterator) Err() error { return it.it.Err() }
