package console

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
)

// Units a chart's values are shown in.
const (
	unitNone    = ""
	unitRatio   = "ratio"   // 0..1, shown as a percentage
	unitSeconds = "seconds" // a duration
)

// The chart's drawing area, in the SVG's own coordinates: the SVG scales to its container's
// width, so these only set the proportions.
const (
	chartWidth  = 600
	chartHeight = 180
	plotLeft    = 48
	plotRight   = chartWidth - 6
	plotTop     = 8
	plotBottom  = chartHeight - 20
)

// maxSeries is how many series one chart draws: a page stays a few tens of KB even for an
// expression that selects thousands of series (the table below the chart says how many more
// there are).
const maxSeries = 12

// palette is how many series colors the stylesheet defines (.s0 to .s7, .l0 to .l7).
const palette = 8

// chart is an inline SVG line chart, computed here so that the template only places numbers.
type chart struct {
	Width, Height int
	Left, Right   int
	Top, Bottom   int
	Paths         []chartPath
	// Ticks label the value axis, Start and End the time axis.
	Ticks      []chartTick
	Start, End string
	Legend     []legendItem
	// More is the number of series not drawn; Empty says there was nothing to draw.
	More  int
	Empty bool
}

type chartPath struct {
	D     string
	Class string
}

type chartTick struct {
	Y     float64
	Label string
}

type legendItem struct {
	Label string
	Class string
	Last  string
}

// newChart draws m over [start, end]; a gap longer than two steps breaks a line, so a silent
// cluster shows as a hole rather than as a straight line across it.
func newChart(m promql.Matrix, start, end time.Time, step time.Duration, unit string) *chart {
	c := &chart{Width: chartWidth, Height: chartHeight, Left: plotLeft, Right: plotRight, Top: plotTop, Bottom: plotBottom,
		Start: start.UTC().Format("15:04"), End: end.UTC().Format("15:04")}
	if end.Sub(start) > 24*time.Hour {
		c.Start, c.End = start.UTC().Format("01-02 15:04"), end.UTC().Format("01-02 15:04")
	}
	series := m
	if len(series) > maxSeries {
		c.More = len(series) - maxSeries
		series = series[:maxSeries]
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, p := range s.Floats {
			if math.IsNaN(p.F) || math.IsInf(p.F, 0) {
				continue
			}
			lo, hi = math.Min(lo, p.F), math.Max(hi, p.F)
		}
	}
	if math.IsInf(lo, 1) {
		c.Empty = true
		return c
	}
	// Ratios are drawn from 0 to at least 1, so 50% looks like half; anything else from 0
	// (or its minimum below 0) to its maximum.
	lo = math.Min(lo, 0)
	if unit == unitRatio {
		hi = math.Max(hi, 1)
	}
	if hi <= lo {
		hi = lo + 1
	}
	if unit != unitRatio {
		// Headroom above the highest point, so a flat series is not drawn on the frame.
		hi += (hi - lo) * 0.1
	}
	span := float64(end.Sub(start).Milliseconds())
	if span <= 0 {
		span = 1
	}
	x := func(t int64) float64 {
		return plotLeft + float64(t-start.UnixMilli())/span*(plotRight-plotLeft)
	}
	y := func(v float64) float64 { return plotBottom - (v-lo)/(hi-lo)*(plotBottom-plotTop) }
	gap := 2 * step.Milliseconds()
	for i, s := range series {
		var d strings.Builder
		prev := int64(math.MinInt64)
		last := math.NaN()
		for _, p := range s.Floats {
			if math.IsNaN(p.F) || math.IsInf(p.F, 0) {
				prev = math.MinInt64
				continue
			}
			cmd := "L"
			if prev == math.MinInt64 || p.T-prev > gap {
				cmd = "M"
			}
			d.WriteString(cmd)
			d.WriteString(strconv.FormatFloat(x(p.T), 'f', 1, 64))
			d.WriteByte(' ')
			d.WriteString(strconv.FormatFloat(y(p.F), 'f', 1, 64))
			prev, last = p.T, p.F
		}
		class := "s" + strconv.Itoa(i%palette)
		c.Paths = append(c.Paths, chartPath{D: d.String(), Class: class})
		c.Legend = append(c.Legend, legendItem{Label: seriesLabel(s.Metric), Class: "l" + strconv.Itoa(i%palette), Last: formatValue(last, unit)})
	}
	for _, v := range []float64{hi, (hi + lo) / 2, lo} {
		c.Ticks = append(c.Ticks, chartTick{Y: y(v), Label: formatValue(v, unit)})
	}
	return c
}

// seriesLabel is how a series is named in a legend or a table, as Prometheus shows it:
// name{label="value", ...}, or "{}" for a series without labels (an aggregation over
// everything).
func seriesLabel(ls labels.Labels) string {
	name := ls.Get(labels.MetricName)
	rest := ls.DropMetricName()
	if rest.IsEmpty() && name != "" {
		return name
	}
	return name + rest.String()
}

// formatValue shows a value in its unit; NaN (no data) is a dash.
func formatValue(v float64, unit string) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case math.IsInf(v, 0):
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	switch unit {
	case unitRatio:
		return strconv.FormatFloat(100*v, 'f', 1, 64) + "%"
	case unitSeconds:
		return formatSeconds(v)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// formatSeconds shows a number of seconds the way a person reads an age: "42s", "5m10s",
// "3h5m", "2d4h".
func formatSeconds(v float64) string {
	if v < 0 {
		return "-" + formatSeconds(-v)
	}
	d := time.Duration(v * float64(time.Second)).Round(time.Second)
	switch {
	case d < time.Minute:
		return strconv.FormatFloat(v, 'f', 0, 64) + "s"
	case d < time.Hour:
		return strings.TrimSuffix(d.String(), "0s")
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
	days := int(d / (24 * time.Hour))
	return strconv.Itoa(days) + "d" + strconv.Itoa(int((d%(24*time.Hour))/time.Hour)) + "h"
}
