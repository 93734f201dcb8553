// Package stats has the few statistics and number formats the benches report with.
package stats

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"
)

// Ms is d in milliseconds, to the microsecond.
func Ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Percentile is the nearest-rank q-quantile (0 < q <= 1) of xs; 0 when xs is empty.
func Percentile(xs []time.Duration, q float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func measured(xs []float64) []float64 {
	var s []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			s = append(s, x)
		}
	}
	return s
}

// Median is the median of the values that are not NaN (not measured); NaN when none is.
func Median(xs []float64) float64 {
	s := measured(xs)
	if len(s) == 0 {
		return math.NaN()
	}
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Spread is half the range over the median, in percent ("±7%"); "" with fewer than two values.
func Spread(xs []float64) string {
	s := measured(xs)
	if len(s) < 2 {
		return ""
	}
	m := Median(s)
	if m == 0 {
		return ""
	}
	return fmt.Sprintf("±%.0f%%", 100*(slices.Max(s)-slices.Min(s))/2/m)
}

// Num formats a table value: "-" when not measured, fewer decimals for larger numbers.
func Num(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "-"
	case math.Abs(v) >= 1000:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
