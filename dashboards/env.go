package dashboards

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"

	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/rules/pack"
)

// env is what the dashboards are built from: the thresholds, and the rule pack rendered with
// them, so a panel colors a value with the severity of the alert that fires there and reads
// only series the pack records.
type env struct {
	t config.Thresholds
	// records are the pack's recording rules; severity is each alert's severity label.
	records  map[string]bool
	severity map[string]string
	errs     []error
}

func newEnv(t config.Thresholds) (*env, error) {
	files, err := pack.Render(t)
	if err != nil {
		return nil, err
	}
	e := &env{t: t, records: map[string]bool{}, severity: map[string]string{}}
	for _, name := range sortedKeys(files) {
		groups, errs := rulefmt.Parse(files[name], false, model.LegacyValidation)
		if len(errs) > 0 {
			return nil, fmt.Errorf("rule pack file %s: %w", name, errors.Join(errs...))
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					e.records[r.Record] = true
				}
				if r.Alert != "" {
					e.severity[r.Alert] = r.Labels["severity"]
				}
			}
		}
	}
	return e, nil
}

// color is the color of a crossing of alert's threshold: that of the alert's severity.
func (e *env) color(alert string) string {
	s, ok := e.severity[alert]
	if !ok {
		e.errs = append(e.errs, fmt.Errorf("alert %s is not in the rule pack", alert))
	}
	return severityColor(s)
}

// silentAfter is FleetClusterSilent's threshold in seconds, as the pack renders it.
func (e *env) silentAfter() float64 { return time.Duration(e.t.SilentAfter).Seconds() }

// checkRecords fails for a recorded series (a name with a colon, the recording rule naming
// convention) that a view dashboard reads and the pack does not record.
func (e *env) checkRecords(d Dashboard) error {
	if d.Source != SourceView {
		return nil
	}
	var errs []error
	for _, q := range d.Queries() {
		names, err := q.Metrics()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, n := range names {
			if strings.Contains(n, ":") && !e.records[n] {
				errs = append(errs, fmt.Errorf("%s: %s is not a recording rule of the rule pack", q, n))
			}
		}
	}
	return errors.Join(errs...)
}
