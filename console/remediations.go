package console

import (
	"errors"
	"math"
	"net/http"
	"slices"
	"time"

	"github.com/fleetwatch/fleetwatch/internal/access"
	"github.com/fleetwatch/fleetwatch/remediate"
)

// historyLength is how many finished remediations /remediations lists.
const historyLength = 100

// remediationsPage is the content of /remediations.
type remediationsPage struct {
	Enabled bool
	// Waiting wait for an approval; InFlight run, are held or planned; History are over,
	// newest first.
	Waiting, InFlight, History []remediationRow
	HistoryMore                int
	Pauses                     []pauseRow
	Budget                     []budgetRow
	// CanOperate says whether the caller may act at all: the page loads its script then.
	CanOperate bool
	Error      string
}

// pauseRow is the fleet or one cluster, paused or not.
type pauseRow struct {
	// Cluster is "" for the fleet.
	Cluster  string
	Name     string
	PausedBy string
	// CanToggle: the caller may pause or resume it (operate, and its scope covers it: only
	// unscoped identities pause the fleet, as the API has it).
	CanToggle bool
}

// budgetRow is one resource of the blast-radius budget.
type budgetRow struct {
	Resource string
	// Share is the configured largest share under remediation at once; Left how many more
	// may be (NaN until remediation measured it).
	Share float64
	Left  float64
}

// decide says whether id may approve, deny, pause or resume for clusters: the same rule the
// remediation API applies, so the console never shows a button the API would refuse.
func decide(id access.Identity, clusters []string) bool {
	return id.Has(access.RoleOperate) && id.AllowsAny(clusters)
}

func (c *Console) serveRemediations(w http.ResponseWriter, r *http.Request) {
	id := identity(r)
	p := remediationsPage{Enabled: c.o.Remediations != nil}
	if c.o.Remediations == nil {
		c.render(w, r, http.StatusOK, "remediations", "Remediations", "remediations", p)
		return
	}
	all, err := c.o.Remediations.List()
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "Reading remediations failed", err)
		return
	}
	for i := len(all) - 1; i >= 0; i-- {
		rem := all[i]
		if !id.AllowsAny(rem.Clusters) {
			continue
		}
		row := remRow(rem)
		row.CanDecide = rem.State == remediate.StateWaiting && decide(id, rem.Clusters)
		p.CanOperate = p.CanOperate || row.CanDecide
		switch {
		case rem.State == remediate.StateWaiting:
			p.Waiting = append(p.Waiting, row)
		case !remediate.Final(rem.State):
			p.InFlight = append(p.InFlight, row)
		case len(p.History) < historyLength:
			p.History = append(p.History, row)
		default:
			p.HistoryMore++
		}
	}
	// Oldest first for what waits and runs: the longest waiting comes first.
	slices.Reverse(p.Waiting)
	slices.Reverse(p.InFlight)
	var paused map[string]string
	if c.o.Remediator != nil {
		paused = c.o.Remediator.Paused()
	}
	p.Pauses = append(p.Pauses, pauseRow{Name: "the fleet", PausedBy: paused[""], CanToggle: c.o.Remediator != nil && decide(id, nil)})
	for _, cl := range c.clusters(id) {
		p.Pauses = append(p.Pauses, pauseRow{Cluster: cl.Name, Name: cl.Name, PausedBy: paused[cl.Name],
			CanToggle: c.o.Remediator != nil && decide(id, []string{cl.Name})})
	}
	for _, pr := range p.Pauses {
		p.CanOperate = p.CanOperate || pr.CanToggle
	}
	p.Budget = c.budget()
	c.render(w, r, http.StatusOK, "remediations", "Remediations", "remediations", p)
}

// budget is the blast-radius budget: the configured shares, and what is left as remediation
// last measured it (remediate.Engine.BudgetLeft).
func (c *Console) budget() []budgetRow {
	var rows []budgetRow
	if cfg := c.o.Config(); cfg != nil {
		b := cfg.Remediation.Budget
		rows = []budgetRow{{"nodes", b.MaxNodes, math.NaN()}, {"workloads", b.MaxWorkloads, math.NaN()}, {"clusters", b.MaxClusters, math.NaN()}}
	}
	if c.o.Remediator == nil {
		return rows
	}
	for res, left := range c.o.Remediator.BudgetLeft() {
		i := slices.IndexFunc(rows, func(b budgetRow) bool { return b.Resource == res })
		if i < 0 {
			rows = append(rows, budgetRow{Resource: res, Share: math.NaN()})
			i = len(rows) - 1
		}
		rows[i].Left = left
	}
	return rows
}

// remediationPage is the content of one remediation's page.
type remediationPage struct {
	Rem       *remediate.Remediation
	CanDecide bool
	Audit     []remediate.AuditEntry
	// Incident links the incident when the caller may see it.
	Incident string
}

func (c *Console) serveRemediation(w http.ResponseWriter, r *http.Request) {
	id := identity(r)
	rid := r.PathValue("id")
	if c.o.Remediations == nil {
		c.notFound(w, r, "remediation "+rid)
		return
	}
	rem, err := c.o.Remediations.Get(rid)
	if errors.Is(err, remediate.ErrNotFound) || (err == nil && !id.AllowsAny(rem.Clusters)) {
		c.notFound(w, r, "remediation "+rid)
		return
	}
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "Reading the remediation failed", err)
		return
	}
	audit, err := c.o.Remediations.AuditLog(0, rem.ID, 0)
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "Reading the remediation audit failed", err)
		return
	}
	p := remediationPage{Rem: rem, Audit: audit, CanDecide: rem.State == remediate.StateWaiting && decide(id, rem.Clusters)}
	if rem.IncidentID != "" {
		p.Incident = "/incidents/" + rem.IncidentID
	}
	c.render(w, r, http.StatusOK, "remediation", "Remediation "+rem.ID, "remediations", p)
}

// ago is how long before now t was, for lists.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return formatSeconds(now.Sub(t).Seconds()) + " ago"
}
