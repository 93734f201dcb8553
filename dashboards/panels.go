package dashboards

import (
	"fmt"
	"math"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// Grafana's named colors, as its threshold and override editors write them.
const (
	green  = "green"
	orange = "orange"
	red    = "red"
	blue   = "blue"
	text   = "text"
)

// severityColor is the color of a threshold crossing, by the severity of the alert that fires
// there: the dashboards and Alertmanager speak the same language.
func severityColor(severity string) string {
	switch severity {
	case "critical":
		return red
	case "warning":
		return orange
	}
	return blue
}

// step is one threshold of a Grafana thresholds config: from value on (>=), color.
type step struct {
	value float64
	color string
}

// thresholds is an absolute thresholds config: base up to the first step.
func thresholds(base string, steps ...step) *dashboard.ThresholdsConfigBuilder {
	out := []dashboard.Threshold{{Color: base}}
	for _, s := range steps {
		v := s.value
		out = append(out, dashboard.Threshold{Value: &v, Color: s.color})
	}
	return dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps(out)
}

// thresholdsValue is thresholds as the value of a field override.
func thresholdsValue(base string, steps ...step) dashboard.ThresholdsConfig {
	t, err := thresholds(base, steps...).Build()
	if err != nil {
		// Building a thresholds config has no failure mode; a change in the SDK that adds one
		// is a bug every test catches.
		panic(fmt.Sprintf("thresholds: %v", err))
	}
	return t
}

// above is the smallest number above v. Grafana colors a value by the last step whose value it
// reaches (>=), the rules fire strictly above their threshold ("exactly 85% does not fire"), so
// a step "fires here" sits just above the threshold, not on it.
func above(v float64) float64 { return math.Nextafter(v, math.Inf(1)) }

// datasourceRef is the panels' data source: the dashboard's data source variable.
var datasourceRef = common.DataSourceRef{Type: ptr("prometheus"), Uid: ptr("${" + varDatasource + "}")}

func ptr[T any](v T) *T { return &v }

// query is a range query, for time series panels.
func query(ref, expr, legend string) *prometheus.DataqueryBuilder {
	q := prometheus.NewDataqueryBuilder().RefId(ref).Datasource(datasourceRef).
		Expr(dedent(expr)).Range().EditorMode(prometheus.QueryEditorModeCode)
	if legend != "" {
		q.LegendFormat(legend)
	}
	return q
}

// instant is an instant query, for stat panels.
func instant(ref, expr, legend string) *prometheus.DataqueryBuilder {
	q := prometheus.NewDataqueryBuilder().RefId(ref).Datasource(datasourceRef).
		Expr(dedent(expr)).Instant().EditorMode(prometheus.QueryEditorModeCode)
	if legend != "" {
		q.LegendFormat(legend)
	}
	return q
}

// tableQuery is an instant query whose series become the rows of a table.
func tableQuery(ref, expr string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().RefId(ref).Datasource(datasourceRef).
		Expr(dedent(expr)).Instant().Format(prometheus.PromQueryFormatTable).EditorMode(prometheus.QueryEditorModeCode)
}

// dedent removes the common indentation of a multi-line expression written as an indented Go
// raw string, and the blank first and last lines, so the query editor shows it as written.
func dedent(s string) string {
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	indent := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, " \t"))
		if indent < 0 || n < indent {
			indent = n
		}
	}
	for i, l := range lines {
		if len(l) >= indent {
			lines[i] = l[indent:]
		}
	}
	return strings.Join(lines, "\n")
}

// timeSeries is a time series panel of w×h grid units.
func timeSeries(title, description string, w, h uint32) *timeseries.PanelBuilder {
	return timeseries.NewPanelBuilder().Title(title).Description(description).Datasource(datasourceRef).
		Span(w).Height(h).
		Legend(common.NewVizLegendOptionsBuilder().DisplayMode(common.LegendDisplayModeList).Placement(common.LegendPlacementBottom).ShowLegend(true)).
		Tooltip(common.NewVizTooltipOptionsBuilder().Mode(common.TooltipDisplayModeMulti).Sort(common.SortOrderDescending)).
		LineWidth(1).FillOpacity(10).ShowPoints(common.VisibilityModeNever).
		SpanNulls(common.BoolOrFloat64{Bool: ptr(false)})
}

// thresholdLine draws the thresholds of a time series panel as dashed lines, where the alert
// fires.
func thresholdLine(p *timeseries.PanelBuilder) *timeseries.PanelBuilder {
	return p.ThresholdsStyle(common.NewGraphThresholdsStyleConfigBuilder().Mode(common.GraphThresholdsStyleModeDashed))
}

// statPanel is a single-value panel: the last value of an instant query.
func statPanel(title, description string, w, h uint32) *stat.PanelBuilder {
	return stat.NewPanelBuilder().Title(title).Description(description).Datasource(datasourceRef).
		Span(w).Height(h).
		GraphMode(common.BigValueGraphModeNone).ColorMode(common.BigValueColorModeValue).
		TextMode(common.BigValueTextModeAuto).Orientation(common.VizOrientationAuto).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Values(false))
}

// tablePanel is a table of instant query results.
func tablePanel(title, description string, w, h uint32) *table.PanelBuilder {
	return table.NewPanelBuilder().Title(title).Description(description).Datasource(datasourceRef).
		Span(w).Height(h).ShowHeader(true).CellHeight(common.TableCellHeightSm).
		// Grafana's default footer; the SDK's leaves the reducer null, which its own schema
		// (and Grafana's) requires.
		Footer(common.NewTableFooterOptionsBuilder().Show(false).Reducer([]string{"sum"}).CountRows(false))
}

// Transformations of table panels.

// mergeTables joins the tables of several instant queries on their common label columns, one
// row per label set (per cluster in the fleet table).
func mergeTables() dashboard.DataTransformerConfig {
	return dashboard.DataTransformerConfig{Id: "merge", Options: map[string]any{}}
}

// organize hides columns and orders the others.
func organize(hide []string, order []string) dashboard.DataTransformerConfig {
	excl := map[string]any{}
	for _, h := range hide {
		excl[h] = true
	}
	idx := map[string]any{}
	for i, o := range order {
		idx[o] = i
	}
	return dashboard.DataTransformerConfig{Id: "organize", Options: map[string]any{
		"excludeByName": excl, "indexByName": idx, "renameByName": map[string]any{},
	}}
}

// column is the field override of one value column of a table: the "Value #<refId>" field an
// instant query in table format yields.
type column struct {
	ref, name, unit string
	decimals        *float64
	thresholds      *dashboard.ThresholdsConfig
	mappings        []dashboard.ValueMapping
	description     string
}

func (c column) properties() []dashboard.DynamicConfigValue {
	props := []dashboard.DynamicConfigValue{{Id: "displayName", Value: c.name}}
	if c.unit != "" {
		props = append(props, dashboard.DynamicConfigValue{Id: "unit", Value: c.unit})
	}
	if c.decimals != nil {
		props = append(props, dashboard.DynamicConfigValue{Id: "decimals", Value: *c.decimals})
	}
	if c.description != "" {
		props = append(props, dashboard.DynamicConfigValue{Id: "description", Value: c.description})
	}
	if c.mappings != nil {
		props = append(props, dashboard.DynamicConfigValue{Id: "mappings", Value: c.mappings})
	}
	if c.thresholds != nil {
		props = append(props,
			dashboard.DynamicConfigValue{Id: "thresholds", Value: *c.thresholds},
			dashboard.DynamicConfigValue{Id: "color", Value: map[string]any{"mode": "thresholds"}},
			dashboard.DynamicConfigValue{Id: "custom.cellOptions", Value: map[string]any{"type": "color-background", "mode": "basic"}},
		)
	}
	return props
}

// valueField is the name Grafana gives the value column of table query ref when a panel has
// several queries.
func valueField(ref string) string { return "Value #" + ref }

// textMapping maps exact values to texts and colors (1 -> "up", green).
func textMapping(m map[string][2]string) dashboard.ValueMapping {
	opts := map[string]dashboard.ValueMappingResult{}
	i := int32(0)
	for _, k := range sortedKeys(m) {
		opts[k] = dashboard.ValueMappingResult{Text: ptr(m[k][0]), Color: ptr(m[k][1]), Index: ptr(i)}
		i++
	}
	return dashboard.ValueMapping{ValueMap: &dashboard.ValueMap{Type: dashboard.MappingTypeValueToText, Options: opts}}
}

// specialMapping shows a special value (null, NaN, ...) as text in a color.
func specialMapping(match dashboard.SpecialValueMatch, txt, color string) dashboard.ValueMapping {
	return dashboard.ValueMapping{SpecialValueMap: &dashboard.SpecialValueMap{
		Type:    dashboard.MappingTypeSpecialValue,
		Options: dashboard.DashboardSpecialValueMapOptions{Match: match, Result: dashboard.ValueMappingResult{Text: ptr(txt), Color: ptr(color)}},
	}}
}

// linkToCluster is a data link from a cell to the cluster dashboard, filtered to the cell's
// cluster, keeping the time range.
func linkToCluster() []map[string]any {
	return []map[string]any{{
		"title": "Cluster detail",
		"url":   "/d/" + UIDCluster + "/" + slug(titleCluster) + "?var-cluster=${__value.raw}&${__url_time_range}",
	}}
}
