package dashboards

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// Source is the Prometheus API a dashboard's panels query.
type Source string

const (
	// SourceView is fleetwatch's Prometheus HTTP API: the fleet's series, each with `cluster`,
	// the rule pack's recording rules and ALERTS.
	SourceView Source = "view"
	// SourceMetrics is a Prometheus that scrapes fleetwatch's /metrics: fleetwatch's own
	// telemetry (ingest, queries, rules, incidents) is not written into the view.
	SourceMetrics Source = "metrics"
)

// Names the dashboards and the provisioning files share.
const (
	// DatasourceUID is the uid (and name) of the provisioned data source for fleetwatch's
	// query API: the default of the view dashboards' data source variable.
	DatasourceUID = "fleetwatch"
	// MetricsDatasourceUID is the uid (and name) of the data source for the Prometheus that
	// scrapes fleetwatch: the default of the other dashboards' data source variable.
	MetricsDatasourceUID = "fleetwatch-metrics"
	// DefaultJob is the scrape job name under which that Prometheus scrapes fleetwatch: the
	// default of the $job variable.
	DefaultJob = "fleetwatch"
	// Tag is on every dashboard; the dashboards link to each other through it.
	Tag = "fleetwatch"
)

// Dashboard UIDs: stable, so links, bookmarks and pushes find the same dashboard again.
const (
	UIDOverview  = "fleetwatch-overview"
	UIDCluster   = "fleetwatch-cluster"
	UIDWorkloads = "fleetwatch-workloads"
	UIDIncidents = "fleetwatch-incidents"
	UIDSelf      = "fleetwatch-self"
)

const (
	titleOverview  = "Fleet overview"
	titleCluster   = "Cluster detail"
	titleWorkloads = "Workloads across clusters"
	titleIncidents = "Incidents and remediation"
	titleSelf      = "fleetwatch"
)

// Template variables.
const (
	varDatasource = "datasource"
	varCluster    = "cluster"
	varJob        = "job"
	varNamespace  = "namespace"
	varDeployment = "deployment"
)

// Dashboard is one generated dashboard.
type Dashboard struct {
	UID   string
	Title string
	// File is the dashboard's file name in the dashboards directory.
	File string
	// Source is the Prometheus API its panels query.
	Source Source
	// Model is the dashboard as Grafana's dashboard JSON (schema v1), the format file
	// provisioning and POST /api/dashboards/db take. The SDK marks it deprecated in favour
	// of the v2 schema, which only Grafana 12 with its new dashboard API reads.
	Model dashboard.Dashboard
}

// JSON is the dashboard file: indented, with a final newline, stable for a given input.
func (d Dashboard) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(d.Model, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode dashboard %s: %w", d.UID, err)
	}
	return append(b, '\n'), nil
}

// spec is one dashboard to build.
type spec struct {
	uid, title, file string
	source           Source
	build            func(e *env) *dashboard.DashboardBuilder
}

var specs = []spec{
	{UIDOverview, titleOverview, "fleet-overview.json", SourceView, fleetOverview},
	{UIDCluster, titleCluster, "cluster-detail.json", SourceView, clusterDetail},
	{UIDWorkloads, titleWorkloads, "workloads.json", SourceView, workloads},
	{UIDIncidents, titleIncidents, "incidents.json", SourceMetrics, incidents},
	{UIDSelf, titleSelf, "fleetwatch.json", SourceMetrics, self},
}

// Build generates every dashboard with the rule pack's thresholds t (rules.pack of
// fleetwatch.yml; config.DefaultThresholds without a configuration).
func Build(t config.Thresholds) ([]Dashboard, error) {
	e, err := newEnv(t)
	if err != nil {
		return nil, err
	}
	out := make([]Dashboard, 0, len(specs))
	for _, s := range specs {
		m, err := s.build(e).Build()
		if err != nil {
			return nil, fmt.Errorf("build dashboard %s: %w", s.uid, err)
		}
		numberPanels(&m)
		d := Dashboard{UID: s.uid, Title: s.title, File: s.file, Source: s.source, Model: m}
		if err := e.checkRecords(d); err != nil {
			return nil, fmt.Errorf("build dashboard %s: %w", s.uid, err)
		}
		out = append(out, d)
	}
	if err := errors.Join(e.errs...); err != nil {
		return nil, fmt.Errorf("build dashboards: %w", err)
	}
	return out, nil
}

// board starts a dashboard with what every fleetwatch dashboard has: uid, tags, time range,
// refresh, links to the other dashboards, and the data source variable.
func board(uid, title, description string, src Source) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).Uid(uid).Description(description).
		Tags([]string{Tag}).Timezone("browser").Time("now-1h", "now").Refresh("30s").
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Timepicker(dashboard.NewTimePickerBuilder().RefreshIntervals([]string{"10s", "30s", "1m", "5m", "15m"})).
		// Other dashboards keep the time range but not the variables: the data source
		// variable means a different Prometheus on the view and on the metrics dashboards.
		Link(dashboard.NewDashboardLinkBuilder("fleetwatch").Type(dashboard.DashboardLinkTypeDashboards).
			Tags([]string{Tag}).AsDropdown(true).KeepTime(true).IncludeVars(false).Icon("external link").Tooltip("")).
		WithVariable(datasourceVar(src))
}

// numberPanels gives every panel and row a dashboard-unique id, in layout order, as Grafana
// does when it saves a dashboard; panel links and "view panel" need them.
func numberPanels(m *dashboard.Dashboard) {
	id := uint32(1)
	for _, p := range m.Panels {
		switch {
		case p.Panel != nil:
			p.Panel.Id = ptr(id)
			id++
		case p.RowPanel != nil:
			p.RowPanel.Id = id
			id++
			for i := range p.RowPanel.Panels {
				p.RowPanel.Panels[i].Id = ptr(id)
				id++
			}
		}
	}
}

// datasourceVar selects the Prometheus the panels query, defaulting to the provisioned one.
func datasourceVar(src Source) *dashboard.DatasourceVariableBuilder {
	label, def, desc := "fleetwatch", DatasourceUID, "fleetwatch's Prometheus API: the fleet view."
	if src == SourceMetrics {
		label, def, desc = "Prometheus scraping fleetwatch", MetricsDatasourceUID,
			"A Prometheus that scrapes fleetwatch's /metrics endpoint; fleetwatch's own metrics are not in the fleet view."
	}
	return dashboard.NewDatasourceVariableBuilder(varDatasource).Label(label).Description(desc).Type("prometheus").
		Current(dashboard.VariableOption{Selected: ptr(true), Text: str(def), Value: str(def)})
}

func str(s string) dashboard.StringOrArrayOfString {
	return dashboard.StringOrArrayOfString{String: &s}
}

// queryVar is a variable filled from label_values(...) on the dashboard's data source.
func queryVar(name, label, q string) *dashboard.QueryVariableBuilder {
	return dashboard.NewQueryVariableBuilder(name).Label(label).Datasource(datasourceRef).
		Query(dashboard.StringOrMap{String: &q}).Definition(q).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).Sort(dashboard.VariableSortAlphabeticalAsc)
}

// clusterVar is the multi-select cluster filter; "All" is the regex .+, so a dashboard's
// queries stay short in a fleet of hundreds of clusters.
func clusterVar(src Source) *dashboard.QueryVariableBuilder {
	q := "label_values(fleetwatch_cluster_last_ingest_timestamp_seconds, cluster)"
	if src == SourceMetrics {
		q = `label_values(fleetwatch_cluster_last_ingest_timestamp_seconds{job=~"$job"}, cluster)`
	}
	return queryVar(varCluster, "Cluster", q).
		Description("Clusters configured in fleetwatch (fleetwatch_cluster_last_ingest_timestamp_seconds, which fleetwatch writes for every configured cluster, silent or not).").
		Multi(true).IncludeAll(true).AllValue(".+").
		Current(dashboard.VariableOption{Selected: ptr(true),
			Text:  dashboard.StringOrArrayOfString{ArrayOfString: []string{"All"}},
			Value: dashboard.StringOrArrayOfString{ArrayOfString: []string{"$__all"}}})
}

// jobVar is the scrape job of fleetwatch on the Prometheus that scrapes it.
func jobVar() *dashboard.QueryVariableBuilder {
	return queryVar(varJob, "Job", "label_values("+config.MetricLastReloadSuccessful+", job)").
		Description("The job under which the Prometheus scrapes fleetwatch's /metrics.").
		Current(dashboard.VariableOption{Selected: ptr(true), Text: str(DefaultJob), Value: str(DefaultJob)})
}

// Query is one PromQL query of a panel.
type Query struct {
	Dashboard string // the dashboard's UID
	Panel     string // the panel's title
	RefID     string
	// Expr is the PromQL as Grafana sends it after replacing the dashboard's variables
	// ($cluster, $job, $__rate_interval, ...): see Interpolate.
	Expr    string
	Legend  string
	Instant bool
	Source  Source
}

func (q Query) String() string { return q.Dashboard + " / " + q.Panel + " / " + q.RefID }

// Queries lists every panel query of the dashboard, in layout order.
func (d Dashboard) Queries() []Query {
	var out []Query
	add := func(p dashboard.Panel) {
		for _, t := range p.Targets {
			dq, ok := promQuery(t)
			if !ok {
				continue
			}
			q := Query{Dashboard: d.UID, Expr: dq.Expr, Source: d.Source}
			if p.Title != nil {
				q.Panel = *p.Title
			}
			if dq.RefId != nil {
				q.RefID = *dq.RefId
			}
			if dq.LegendFormat != nil {
				q.Legend = *dq.LegendFormat
			}
			q.Instant = dq.Instant != nil && *dq.Instant
			out = append(out, q)
		}
	}
	for _, p := range d.Model.Panels {
		switch {
		case p.Panel != nil:
			add(*p.Panel)
		case p.RowPanel != nil:
			for _, c := range p.RowPanel.Panels {
				add(c)
			}
		}
	}
	return out
}

func promQuery(t variants.Dataquery) (prometheus.Dataquery, bool) {
	switch q := t.(type) {
	case prometheus.Dataquery:
		return q, true
	case *prometheus.Dataquery:
		return *q, true
	}
	return prometheus.Dataquery{}, false
}

// Variables are the dashboard's template variables.
func (d Dashboard) Variables() []dashboard.VariableModel { return d.Model.Templating.List }

// variableRE matches Grafana's variable syntaxes: $name, ${name}, ${name:format}, [[name]].
var variableRE = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// Interpolate replaces the variables of vars in a query, as Grafana does before it sends the
// query: a multi-value variable for a regex matcher is given as the regex Grafana makes of it
// ("eu-1|eu-2", or ".+" for All). Variables not in vars are left alone, as Grafana leaves
// "$1" of a label_replace.
func Interpolate(expr string, vars map[string]string) string {
	return variableRE.ReplaceAllStringFunc(expr, func(m string) string {
		sub := variableRE.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		if v, ok := vars[name]; ok {
			return v
		}
		return m
	})
}

// CheckVars are values of every variable the dashboards use, for checking that a query
// parses: Grafana's built-in intervals and one value of each template variable.
var CheckVars = map[string]string{
	"__rate_interval": "2m", "__interval": "30s", "__range": "1h",
	varCluster: ".+", varJob: DefaultJob, varNamespace: "default", varDeployment: "api",
}

// Parse parses the query as PromQL, its variables replaced with CheckVars.
func (q Query) Parse() (parser.Expr, error) {
	e, err := parser.ParseExpr(Interpolate(q.Expr, CheckVars))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
	}
	return e, nil
}

// Metrics are the metric names the query selects, sorted.
func (q Query) Metrics() ([]string, error) {
	e, err := q.Parse()
	if err != nil {
		return nil, err
	}
	var names []string
	var errs []error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if vs.Name == "" {
			errs = append(errs, fmt.Errorf("%s: selector %s has no metric name", q, vs))
			return nil
		}
		if !slices.Contains(names, vs.Name) {
			names = append(names, vs.Name)
		}
		return nil
	})
	sort.Strings(names)
	return names, errors.Join(errs...)
}

// slug is Grafana's URL slug of a title.
func slug(title string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(title) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
			continue
		}
		if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
