package console

import (
	"html/template"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// funcs are the templates' formatting functions.
var funcs = template.FuncMap{
	"pct":   func(v float64) string { return formatValue(v, unitRatio) },
	"secs":  func(v float64) string { return formatValue(v, unitSeconds) },
	"num":   func(v float64) string { return formatValue(v, unitNone) },
	"cores": func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) },
	"bytes": bytesIEC,
	"nan":   math.IsNaN,
	"when":  when,
	"join":  func(s []string) string { return strings.Join(s, ", ") },
	"in":    func(s string, list []string) bool { return slices.Contains(list, s) },
	"graph": func(expr string) string { return graphURL(expr, "", 1) },
	"score": func(v float64) string { return formatScore(v) },
	"below": func(v, threshold float64) bool { return !math.IsNaN(v) && v < threshold },
	"above": func(v, threshold float64) bool { return !math.IsNaN(v) && v > threshold },
}

// when shows a time in UTC to the second; the zero time is empty.
func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func formatScore(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// bytesIEC shows an amount of memory in binary units.
func bytesIEC(v float64) string {
	const unit = 1024
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for math.Abs(v) >= unit && i < len(units)-1 {
		v /= unit
		i++
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + units[i]
}
