package console

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/dashboards"
	"github.com/fleetwatch/fleetwatch/remediate"
)

// resolvedPage is how many resolved incidents one page of the list shows.
const resolvedPage = 50

// incidentRow is one incident in a list.
type incidentRow struct {
	ID, State, Severity, Scope string
	RootCause                  string
	Clusters                   []string
	OpenedAt, UpdatedAt        time.Time
	ResolvedAt                 time.Time
	AckedBy                    string
}

func rowOf(inc *correlate.Incident) incidentRow {
	return incidentRow{ID: inc.ID, State: inc.State, Severity: inc.Severity, Scope: inc.Scope, RootCause: inc.RootCause,
		Clusters: inc.Clusters, OpenedAt: inc.OpenedAt, UpdatedAt: inc.UpdatedAt, ResolvedAt: inc.ResolvedAt, AckedBy: inc.AckedBy}
}

// incidentsPage is the content of /incidents: the active incidents, then a page of the
// resolved ones, newest first.
type incidentsPage struct {
	Enabled  bool
	Active   []incidentRow
	Resolved []incidentRow
	// Next is the URL of the next page of resolved incidents ("" on the last).
	Next  string
	Error string
}

func (c *Console) serveIncidents(w http.ResponseWriter, r *http.Request) {
	id := identity(r)
	p := incidentsPage{Enabled: c.o.Incidents != nil}
	if c.o.Incidents != nil {
		active := c.o.Incidents.Active()
		// Newest first, as the incident API lists them.
		for i := len(active) - 1; i >= 0; i-- {
			if id.AllowsAny(active[i].Clusters) {
				p.Active = append(p.Active, rowOf(&active[i]))
			}
		}
	}
	if c.o.IncidentStore != nil {
		incs, next, err := c.o.IncidentStore.IncidentsPage(correlate.Filter{State: correlate.StateResolved, Allow: id.AllowsAny},
			resolvedPage, r.URL.Query().Get("page_token"))
		switch {
		case errors.Is(err, correlate.ErrBadPageToken):
			c.fail(w, r, http.StatusBadRequest, "Bad page", err)
			return
		case err != nil:
			p.Error = err.Error()
		}
		for _, inc := range incs {
			p.Resolved = append(p.Resolved, rowOf(inc))
		}
		if next != "" {
			p.Next = "/incidents?" + url.Values{"page_token": {next}}.Encode()
		}
	}
	c.render(w, r, http.StatusOK, "incidents", "Incidents", "incidents", p)
}

// incidentPage is the content of one incident's page.
type incidentPage struct {
	Incident     *correlate.Incident
	Alerts       []alertRow
	Timeline     []timelineEntry
	Remediations []remediationRow
	// Grafana is the incidents dashboard, ClusterLinks each affected cluster's pages.
	Grafana      string
	ClusterLinks []clusterLink
}

// alertRow is one absorbed alert with a link to its expression on /graph.
type alertRow struct {
	Name     string
	Cluster  string
	Severity string
	Labels   string
	Summary  string
	StartsAt time.Time
	EndsAt   time.Time
	Source   string
	Expr     string
	GraphURL string
}

// timelineEntry is one thing that happened to an incident.
type timelineEntry struct {
	Time   time.Time
	Event  string
	Actor  string
	Detail string
	// Remediation links an audit entry to its remediation.
	Remediation string
}

type clusterLink struct {
	Name    string
	Grafana string
}

func (c *Console) serveIncident(w http.ResponseWriter, r *http.Request) {
	id := identity(r)
	incID := r.PathValue("id")
	if c.o.IncidentStore == nil {
		c.notFound(w, r, "incident "+incID)
		return
	}
	inc, err := c.o.IncidentStore.Incident(incID)
	if errors.Is(err, correlate.ErrNotFound) || (err == nil && !id.AllowsAny(inc.Clusters)) {
		c.notFound(w, r, "incident "+incID)
		return
	}
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "Reading the incident failed", err)
		return
	}
	p := incidentPage{Incident: inc, Grafana: c.grafana(dashboards.UIDIncidents, nil)}
	for _, cl := range inc.Clusters {
		p.ClusterLinks = append(p.ClusterLinks, clusterLink{Name: cl, Grafana: c.grafana(dashboards.UIDCluster, url.Values{"var-cluster": {cl}})})
	}
	var tl []timelineEntry
	for _, a := range inc.Alerts {
		row := alertRow{Name: a.Labels["alertname"], Cluster: a.Labels["cluster"], Severity: a.Labels["severity"],
			Summary: a.Annotations["summary"], StartsAt: a.StartsAt, EndsAt: a.EndsAt, Source: a.Source, Labels: labelString(a.Labels)}
		if row.Summary == "" {
			row.Summary = a.Annotations["description"]
		}
		row.Expr, row.GraphURL = localGraph(a.GeneratorURL)
		p.Alerts = append(p.Alerts, row)
		tl = append(tl, timelineEntry{Time: a.StartsAt, Event: "alert", Detail: row.Name + " " + row.Labels})
	}
	tl = append(tl, timelineEntry{Time: inc.OpenedAt, Event: "opened", Detail: inc.RootCause})
	if !inc.AckedAt.IsZero() {
		tl = append(tl, timelineEntry{Time: inc.AckedAt, Event: "acknowledged", Actor: inc.AckedBy})
	}
	if c.o.Remediations != nil {
		ids, err := c.o.Remediations.ForIncident(inc.ID)
		if err != nil {
			c.fail(w, r, http.StatusInternalServerError, "Reading the incident's remediations failed", err)
			return
		}
		for _, rid := range ids {
			rem, err := c.o.Remediations.Get(rid)
			if err != nil || !id.AllowsAny(rem.Clusters) {
				continue
			}
			p.Remediations = append(p.Remediations, remRow(rem))
			audit, err := c.o.Remediations.AuditLog(0, rid, 0)
			if err != nil {
				c.fail(w, r, http.StatusInternalServerError, "Reading the remediation audit failed", err)
				return
			}
			for _, en := range audit {
				tl = append(tl, timelineEntry{Time: en.Time, Event: "remediation " + en.Event, Actor: en.Actor, Detail: en.Detail, Remediation: rid})
			}
		}
	}
	if inc.State == correlate.StateResolved {
		detail := ""
		if inc.MergedInto != "" {
			detail = "merged into " + inc.MergedInto
		}
		tl = append(tl, timelineEntry{Time: inc.ResolvedAt, Event: "resolved", Detail: detail})
	}
	sort.SliceStable(tl, func(a, b int) bool { return tl[a].Time.Before(tl[b].Time) })
	p.Timeline = tl
	c.render(w, r, http.StatusOK, "incident", "Incident "+inc.ID, "incidents", p)
}

// localGraph turns an alert's generator URL into the expression and a link to fleetwatch's
// own /graph: fleetwatch's rules point there already, though at the external URL, and a
// member cluster's Prometheus points to itself, which the console never links to (its
// expression is shown over the fleet's view instead).
func localGraph(generator string) (expr, link string) {
	u, err := url.Parse(generator)
	if err != nil {
		return "", ""
	}
	q := u.Query()
	expr = q.Get("g0.expr")
	if expr == "" {
		return "", ""
	}
	tab := 0
	if q.Get("g0.tab") == "1" {
		tab = 1
	}
	return expr, graphURL(expr, q.Get("g0.range_input"), tab)
}

// labelString shows an alert's labels without its name: {cluster="eu-2", severity="critical"}.
func labelString(ls map[string]string) string {
	keys := make([]string, 0, len(ls))
	for k := range ls {
		if k != "alertname" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + quote(ls[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// remediationRow is one remediation in a list.
type remediationRow struct {
	ID, IncidentID, Playbook, State, Reason string
	Clusters                                []string
	DryRun                                  bool
	CreatedAt, UpdatedAt, DoneAt            time.Time
	// Step is the step that runs or waits now ("" when over).
	Step string
	// CanDecide: the remediation waits for an approval the caller may give or refuse.
	CanDecide bool
}

func remRow(rem *remediate.Remediation) remediationRow {
	row := remediationRow{ID: rem.ID, IncidentID: rem.IncidentID, Playbook: rem.Playbook, State: rem.State, Reason: rem.Reason,
		Clusters: rem.Clusters, DryRun: rem.DryRun, CreatedAt: rem.CreatedAt, UpdatedAt: rem.UpdatedAt, DoneAt: rem.DoneAt}
	if rem.Current >= 0 && rem.Current < len(rem.Steps) && !remediate.Final(rem.State) {
		row.Step = rem.Steps[rem.Current].Action
	}
	return row
}
