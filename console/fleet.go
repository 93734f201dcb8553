package console

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/internal/access"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/rules/pack"
	"github.com/fleetwatch/fleetwatch/schedule"
)

// signal is one per-cluster series the console shows: on the fleet page its value now, on a
// cluster's page its history. The names are the rule pack's recorded series and the
// collector's, imported, so a rename there cannot leave a column silently empty.
type signal struct {
	Key   string
	Title string
	Unit  string
	// expr returns the PromQL of the signal, for every cluster (sel "") or for one (sel a
	// matcher such as cluster="eu-1"), one series per cluster either way.
	expr func(sel string) string
}

// selector is metric{sel}, or metric alone without a matcher.
func selector(metric, sel string) string {
	if sel == "" {
		return metric
	}
	return metric + "{" + sel + "}"
}

// byCluster aggregates an expression to one series per cluster.
func byCluster(agg, inner string) string {
	return agg + " by (" + config.ClusterLabel + ") (" + inner + ")"
}

// signals are what a cluster's health is read from.
var signals = []signal{
	{"ready", "Nodes Ready", unitRatio, func(sel string) string { return selector(pack.RecordNodeReadyRatio, sel) }},
	{"cpu", "CPU requests / allocatable", unitRatio, func(sel string) string { return selector(pack.RecordCPURequestsRatio, sel) }},
	{"memory", "Memory requests / allocatable", unitRatio, func(sel string) string { return selector(pack.RecordMemoryRequestsRatio, sel) }},
	// The last-ingest series is written for every configured cluster, silent or not, so the
	// age is there even when the pack's rules are off.
	{"freshness", "Seconds since the last ingest", unitSeconds, func(sel string) string {
		return "time() - " + byCluster("max", selector(collector.LastIngestMetric, sel))
	}},
	{"crashloop", "CrashLoopBackOff restarts a minute", unitNone, func(sel string) string { return selector(pack.RecordCrashLoopRate, sel) }},
	{"api", "API server up (fleetwatch's probe)", unitNone, func(sel string) string {
		return byCluster("max", selector(collector.APIUpMetric, sel))
	}},
}

// signalByKey returns the signal named key.
func signalByKey(key string) signal {
	for _, s := range signals {
		if s.Key == key {
			return s
		}
	}
	panic("console: no signal " + key)
}

// clusterSelector is the matcher of one cluster's series, quoted as PromQL wants it.
func clusterSelector(name string) string {
	return labels.MustNewMatcher(labels.MatchEqual, config.ClusterLabel, name).String()
}

// fleetRow is one cluster on the fleet page. Missing values are NaN.
type fleetRow struct {
	Name      string
	Labels    []string
	Ready     float64
	CPU       float64
	Memory    float64
	Age       float64
	Incidents int
	// Score is placement's score for a reference replica (NaN: no snapshot); Filtered says
	// why the cluster is no placement target.
	Score    float64
	Filtered string
}

// fleetColumns are the sortable columns, by their sort key.
var fleetColumns = []struct{ Key, Title string }{
	{"name", "Cluster"}, {"ready", "Nodes Ready"}, {"cpu", "CPU requests"}, {"memory", "Memory requests"},
	{"freshness", "Last ingest"}, {"incidents", "Open incidents"}, {"score", "Placement score"},
}

// fleetPage is the content of the fleet page.
type fleetPage struct {
	Rows    []fleetRow
	Columns []fleetHeader
	Label   string
	// LabelChoices are the clusters' labels (key=value) the caller may filter by.
	LabelChoices []string
	Sort, Dir    string
	Thresholds   config.Thresholds
	Errors       []string
	At           time.Time
}

type fleetHeader struct {
	Key, Title, URL string
	// Current is "asc" or "desc" for the column sorted by, "" for the others.
	Current string
}

func (c *Console) serveFleet(w http.ResponseWriter, r *http.Request) {
	id := identity(r)
	q := r.URL.Query()
	p := fleetPage{Label: strings.TrimSpace(q.Get("label")), Sort: q.Get("sort"), Dir: q.Get("dir"), At: c.o.Now().UTC()}
	if !slices.ContainsFunc(fleetColumns, func(col struct{ Key, Title string }) bool { return col.Key == p.Sort }) {
		p.Sort = "name"
	}
	if p.Dir != "desc" {
		p.Dir = "asc"
	}
	var wantKey, wantValue string
	if p.Label != "" {
		k, v, ok := strings.Cut(p.Label, "=")
		if !ok || k == "" {
			c.fail(w, r, http.StatusBadRequest, "Bad filter", fmt.Errorf("label: %q is not key=value", p.Label))
			return
		}
		wantKey, wantValue = strings.TrimSpace(k), strings.TrimSpace(v)
	}
	p.Thresholds = c.thresholds()
	clusters := c.clusters(id)
	choices := map[string]bool{}
	for _, cl := range clusters {
		for k, v := range cl.Labels {
			choices[k+"="+v] = true
		}
	}
	p.LabelChoices = slices.Sorted(func(yield func(string) bool) {
		for k := range choices {
			if !yield(k) {
				return
			}
		}
	})
	values, errs := c.fleetValues(r.Context())
	p.Errors = errs
	open := c.openIncidents(id)
	scores := c.scores()
	for _, cl := range clusters {
		if p.Label != "" {
			if v, ok := cl.Labels[wantKey]; !ok || v != wantValue {
				continue
			}
		}
		row := fleetRow{Name: cl.Name, Ready: values["ready"].of(cl.Name), CPU: values["cpu"].of(cl.Name),
			Memory: values["memory"].of(cl.Name), Age: values["freshness"].of(cl.Name), Incidents: open[cl.Name], Score: math.NaN()}
		for k, v := range cl.Labels {
			row.Labels = append(row.Labels, k+"="+v)
		}
		slices.Sort(row.Labels)
		if sc, ok := scores[cl.Name]; ok {
			row.Score = sc.Score
			if !sc.Schedulable {
				row.Filtered = sc.Filtered.String()
			}
		}
		p.Rows = append(p.Rows, row)
	}
	sortFleet(p.Rows, p.Sort, p.Dir == "desc")
	for _, col := range fleetColumns {
		h := fleetHeader{Key: col.Key, Title: col.Title}
		dir := "asc"
		if col.Key == p.Sort {
			h.Current = p.Dir
			if p.Dir == "asc" {
				dir = "desc"
			}
		}
		v := url.Values{"sort": {col.Key}, "dir": {dir}}
		if p.Label != "" {
			v.Set("label", p.Label)
		}
		h.URL = "/?" + v.Encode()
		p.Columns = append(p.Columns, h)
	}
	c.render(w, r, http.StatusOK, "fleet", "Fleet", "fleet", p)
}

// perCluster is one instant query's values by cluster.
type perCluster map[string]float64

func (p perCluster) of(cluster string) float64 {
	if v, ok := p[cluster]; ok {
		return v
	}
	return math.NaN()
}

// fleetValues reads the fleet page's signals for every cluster at once; a failing query is
// an error on the page, its column empty, rather than no page.
func (c *Console) fleetValues(ctx context.Context) (map[string]perCluster, []string) {
	out := map[string]perCluster{}
	var errs []string
	now := c.o.Now()
	for _, key := range []string{"ready", "cpu", "memory", "freshness"} {
		s := signalByKey(key)
		expr := s.expr("")
		v, err := c.o.Query(ctx, expr, now)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", expr, err))
			continue
		}
		vec, ok := v.(promql.Vector)
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: a %s, not a vector", expr, v.Type()))
			continue
		}
		m := perCluster{}
		for _, smp := range vec {
			if cl := smp.Metric.Get(config.ClusterLabel); cl != "" {
				m[cl] = smp.F
			}
		}
		out[key] = m
	}
	return out, errs
}

// openIncidents counts the active incidents the identity sees, by cluster.
func (c *Console) openIncidents(id access.Identity) map[string]int {
	out := map[string]int{}
	if c.o.Incidents == nil {
		return out
	}
	for _, inc := range c.o.Incidents.Active() {
		if !id.AllowsAny(inc.Clusters) {
			continue
		}
		for _, cl := range inc.Clusters {
			out[cl]++
		}
	}
	return out
}

// scores are placement's reference scores on its current snapshot, by cluster (none while
// placement is off or has no snapshot yet), with the configured weights.
func (c *Console) scores() map[string]schedule.ClusterScore {
	out := map[string]schedule.ClusterScore{}
	if !c.scheduling() {
		return out
	}
	snap := c.o.Schedule.Snapshot()
	if snap == nil {
		return out
	}
	var w config.Weights
	if cfg := c.o.Config(); cfg != nil {
		w = cfg.Schedule.Weights
	}
	for _, sc := range schedule.ReferenceScores(snap, w) {
		out[sc.Cluster] = sc
	}
	return out
}

// scheduling says whether placement runs.
func (c *Console) scheduling() bool {
	return c.o.Schedule != nil && (c.o.ScheduleEnabled == nil || c.o.ScheduleEnabled())
}

// thresholds are the rule pack's thresholds in force, for coloring values as the alerts
// judge them.
func (c *Console) thresholds() config.Thresholds {
	if cfg := c.o.Config(); cfg != nil && cfg.Rules.Pack.Thresholds.SaturationRatio > 0 {
		return cfg.Rules.Pack.Thresholds
	}
	return config.DefaultThresholds
}

// sortFleet sorts rows by a column; missing values go last either way, and ties by name.
func sortFleet(rows []fleetRow, key string, desc bool) {
	num := func(r fleetRow) float64 {
		switch key {
		case "ready":
			return r.Ready
		case "cpu":
			return r.CPU
		case "memory":
			return r.Memory
		case "freshness":
			return r.Age
		case "incidents":
			return float64(r.Incidents)
		case "score":
			return r.Score
		}
		return 0
	}
	slices.SortStableFunc(rows, func(a, b fleetRow) int {
		if key != "name" {
			va, vb := num(a), num(b)
			switch na, nb := math.IsNaN(va), math.IsNaN(vb); {
			case na && !nb:
				return 1
			case nb && !na:
				return -1
			case !na && va != vb:
				if desc {
					return cmp.Compare(vb, va)
				}
				return cmp.Compare(va, vb)
			}
			return strings.Compare(a.Name, b.Name)
		}
		if desc {
			return strings.Compare(b.Name, a.Name)
		}
		return strings.Compare(a.Name, b.Name)
	})
}
