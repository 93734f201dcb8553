package console

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// Query page limits: what one page shows at most, so that it stays light whatever the
// expression selects.
const (
	// maxRows is how many rows the table of an instant result shows.
	maxRows = 200
	// maxRange is the longest range the graph draws.
	maxRange = 30 * 24 * time.Hour
	// chartSteps is about how many points a range query computes per series.
	chartSteps = 240
)

// ranges are the ranges offered on the cluster and query pages.
var ranges = []string{"15m", "1h", "6h", "1d", "7d"}

// defaultRange is the range a graph shows unless told otherwise.
const defaultRange = "1h"

// graphURL is the query page's URL for an expression over a range, in Prometheus's
// /graph parameters, which alerts' generator URLs use too. tab 0 is the graph, 1 the table.
func graphURL(expr, rng string, tab int) string {
	v := url.Values{"g0.expr": {expr}, "g0.tab": {strconv.Itoa(tab)}}
	if rng != "" {
		v.Set("g0.range_input", rng)
	}
	// Spaces as %20 rather than "+": the link then reads the same wherever it is copied to.
	return "/graph?" + strings.ReplaceAll(v.Encode(), "+", "%20")
}

// parseRange reads a range such as "1h" or "7d", defaulting to defaultRange and bounded by
// maxRange.
func parseRange(s string) (string, time.Duration, error) {
	if s == "" {
		s = defaultRange
	}
	d, err := model.ParseDuration(s)
	if err != nil {
		return s, 0, fmt.Errorf("range %q: %w", s, err)
	}
	if d <= 0 || time.Duration(d) > maxRange {
		return s, 0, fmt.Errorf("range %q: must be above 0 and at most %s", s, model.Duration(maxRange))
	}
	return s, time.Duration(d), nil
}

// stepFor is the resolution of a range query over d: about chartSteps points, whole seconds.
func stepFor(d time.Duration) time.Duration {
	return max(time.Second, (d / chartSteps).Truncate(time.Second))
}

// graphPage is the content of /graph.
type graphPage struct {
	Expr   string
	Range  string
	Ranges []string
	Tab    int
	// Scoped says the expression was limited to the caller's clusters, and Enforced is what
	// ran.
	Scoped   bool
	Enforced string
	Error    string
	// Result is the instant query's result, Chart the range query's.
	Result *resultTable
	Chart  *chart
	At     time.Time
}

// resultTable is an instant query's value as rows.
type resultTable struct {
	Type  string
	Rows  []resultRow
	Total int
}

type resultRow struct {
	Series string
	Value  string
}

func (c *Console) serveGraph(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := graphPage{Expr: q.Get("g0.expr"), Ranges: ranges, At: c.o.Now().UTC()}
	if q.Get("g0.tab") == "1" {
		p.Tab = 1
	}
	rng, d, err := parseRange(q.Get("g0.range_input"))
	p.Range = rng
	if err != nil {
		p.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "graph", "Query", "graph", p)
		return
	}
	if p.Expr == "" {
		c.render(w, r, http.StatusOK, "graph", "Query", "graph", p)
		return
	}
	if _, err := parser.ParseExpr(p.Expr); err != nil {
		p.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "graph", "Query", "graph", p)
		return
	}
	// A team's expression runs with its clusters' matcher in every selector, exactly as
	// /api/v1/query runs it for the team.
	id := identity(r)
	expr, err := id.EnforceQuery(p.Expr, config.ClusterLabel)
	if err != nil {
		p.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "graph", "Query", "graph", p)
		return
	}
	p.Scoped, p.Enforced = id.Scoped(), expr
	now := c.o.Now()
	v, err := c.o.Query(r.Context(), expr, now)
	if err != nil {
		p.Error = err.Error()
		c.render(w, r, http.StatusUnprocessableEntity, "graph", "Query", "graph", p)
		return
	}
	p.Result = table(v)
	// A range query of a string or a range vector is an error; the instant result says it
	// all then.
	if t := v.Type(); t == parser.ValueTypeVector || t == parser.ValueTypeScalar {
		step := stepFor(d)
		end := now.Truncate(step)
		m, err := c.o.Range(r.Context(), expr, end.Add(-d), end, step)
		if err != nil {
			p.Error = err.Error()
		} else {
			p.Chart = newChart(m, end.Add(-d), end, step, unitNone)
		}
	}
	c.render(w, r, http.StatusOK, "graph", "Query", "graph", p)
}

// table turns an instant query's value into at most maxRows rows.
func table(v parser.Value) *resultTable {
	t := &resultTable{Type: string(v.Type())}
	add := func(series, value string) {
		t.Total++
		if len(t.Rows) < maxRows {
			t.Rows = append(t.Rows, resultRow{Series: series, Value: value})
		}
	}
	switch v := v.(type) {
	case promql.Vector:
		for _, s := range v {
			if s.H != nil {
				add(seriesLabel(s.Metric), s.H.String())
				continue
			}
			add(seriesLabel(s.Metric), value(s.F))
		}
	case promql.Matrix:
		for _, s := range v {
			out := ""
			for i, p := range s.Floats {
				if i > 0 {
					out += "\n"
				}
				out += value(p.F) + " @" + strconv.FormatFloat(float64(p.T)/1000, 'f', 3, 64)
			}
			for _, p := range s.Histograms {
				out += p.H.String() + " @" + strconv.FormatFloat(float64(p.T)/1000, 'f', 3, 64) + "\n"
			}
			add(seriesLabel(s.Metric), out)
		}
	case promql.Scalar:
		add("scalar", value(v.V))
	case promql.String:
		add("string", v.V)
	}
	return t
}

// value shows a sample value as Prometheus's API does.
func value(f float64) string {
	if math.IsNaN(f) {
		return "NaN"
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}
