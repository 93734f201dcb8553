package query

import (
	"math"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/stretchr/testify/require"
)

func floats(it chunkenc.Iterator) (out [][2]float64) {
	for it.Next() != chunkenc.ValNone {
		t, v := it.At()
		out = append(out, [2]float64{float64(t), v})
	}
	return out
}

func listSeries(pts ...[2]float64) storage.Series {
	s := make([]chunks.Sample, len(pts))
	for i, p := range pts {
		s[i] = sample{t: int64(p[0]), f: p[1]}
	}
	return storage.NewListSeries(labels.FromStrings("__name__", "c"), s)
}

type sample struct {
	t int64
	f float64
}

func (s sample) T() int64                      { return s.t }
func (s sample) F() float64                    { return s.f }
func (s sample) H() *histogram.Histogram       { return nil }
func (s sample) FH() *histogram.FloatHistogram { return nil }
func (s sample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s sample) Copy() chunks.Sample           { return s }

func TestCounterResetsIterator(t *testing.T) {
	in := listSeries([2]float64{1, 5}, [2]float64{2, 10}, [2]float64{3, 2}, [2]float64{4, 4}, [2]float64{5, math.NaN()}, [2]float64{6, 1})
	require.Equal(t, [][2]float64{{1, 5}, {2, 10}, {3, 12}, {4, 14}, {6, 15}}, floats(&counterResetsIterator{it: in.Iterator(nil)}))

	// Seek walks, so a reset before the sought time still counts.
	it := &counterResetsIterator{it: in.Iterator(nil)}
	require.Equal(t, chunkenc.ValFloat, it.Seek(4))
	tt, v := it.At()
	require.Equal(t, [2]float64{4, 14}, [2]float64{float64(tt), v})
	require.Equal(t, chunkenc.ValNone, it.Seek(7))
}

// A replica that restarted misses the counter's past: when the merge switches to it, it goes on
// from the other replica's total instead of going down (which PromQL would take for a reset).
func TestDedupCounterDoesNotGoDown(t *testing.T) {
	// a: scrapes every 10 s until 40 s. b: every 10 s from 5 s, restarted at 25 s.
	a := listSeries([2]float64{0, 100}, [2]float64{10000, 110}, [2]float64{20000, 120}, [2]float64{30000, 130}, [2]float64{40000, 140})
	b := listSeries([2]float64{5000, 105}, [2]float64{15000, 115}, [2]float64{25000, 0}, [2]float64{35000, 2}, [2]float64{45000, 4}, [2]float64{55000, 6}, [2]float64{65000, 8}, [2]float64{75000, 10})
	set := newDedupSeriesSet(&listSeriesSet{series: []storage.Series{a, b}, idx: -1}, "rate")
	require.True(t, set.Next())
	got := floats(set.At().Iterator(nil))
	require.False(t, set.Next())
	for i := 1; i < len(got); i++ {
		require.GreaterOrEqual(t, got[i][1], got[i-1][1], "the merged counter went down: %v", got)
	}
	// a's samples while a runs, then b's from twice a's interval after a's last: its running
	// total (123 at 65 s) lifted to a's last value.
	require.Equal(t, [][2]float64{{0, 100}, {10000, 110}, {20000, 120}, {30000, 130}, {40000, 140}, {65000, 140}, {75000, 142}}, got)

	// Not a counter function: the values are the replicas' own.
	set = newDedupSeriesSet(&listSeriesSet{series: []storage.Series{a, b}, idx: -1}, "")
	require.True(t, set.Next())
	got = floats(set.At().Iterator(nil))
	require.Equal(t, [2]float64{75000, 10}, got[len(got)-1])
}

func TestBoundedIterator(t *testing.T) {
	in := listSeries([2]float64{1, 1}, [2]float64{2, 2}, [2]float64{3, 3}, [2]float64{4, 4})
	require.Equal(t, [][2]float64{{2, 2}, {3, 3}}, floats(&boundedIterator{it: in.Iterator(nil), mint: 2, maxt: 3}))
	it := &boundedIterator{it: in.Iterator(nil), mint: 2, maxt: 3}
	require.Equal(t, chunkenc.ValNone, it.Seek(4))
	it = &boundedIterator{it: in.Iterator(nil), mint: 2, maxt: 3}
	require.Equal(t, chunkenc.ValFloat, it.Seek(0))
	require.Equal(t, int64(2), it.AtT())
	// A seek inside the range that lands past it finds nothing.
	gap := listSeries([2]float64{1, 1}, [2]float64{5, 5})
	require.Equal(t, chunkenc.ValNone, (&boundedIterator{it: gap.Iterator(nil), mint: 2, maxt: 3}).Seek(2))
}
