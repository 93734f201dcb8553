package console

import (
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/fleetwatch/fleetwatch/dashboards"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

// clusterPage is the content of a cluster's page.
type clusterPage struct {
	Name   string
	Labels []string
	Range  string
	Ranges []string
	Charts []signalChart
	// Incidents are the cluster's active incidents.
	Incidents []incidentRow
	Grafana   string
	At        time.Time
}

// signalChart is one signal's history.
type signalChart struct {
	Key, Title string
	Expr       string
	GraphURL   string
	Chart      *chart
	Error      string
}

func (c *Console) serveCluster(w http.ResponseWriter, r *http.Request) {
	id := identity(r)
	name := r.PathValue("name")
	i := slices.IndexFunc(c.clusters(id), func(cl *config.ClusterConfig) bool { return cl.Name == name })
	if i < 0 {
		c.notFound(w, r, "cluster "+name)
		return
	}
	cl := c.clusters(id)[i]
	rng, d, err := parseRange(r.URL.Query().Get("range"))
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, "Bad range", err)
		return
	}
	now := c.o.Now()
	p := clusterPage{Name: name, Range: rng, Ranges: ranges, At: now.UTC(),
		Grafana: c.grafana(dashboards.UIDCluster, url.Values{"var-cluster": {name}})}
	for k, v := range cl.Labels {
		p.Labels = append(p.Labels, k+"="+v)
	}
	slices.Sort(p.Labels)
	step := stepFor(d)
	end := now.Truncate(step)
	for _, s := range signals {
		expr := s.expr(clusterSelector(name))
		sc := signalChart{Key: s.Key, Title: s.Title, Expr: expr, GraphURL: graphURL(expr, rng, 0)}
		m, err := c.o.Range(r.Context(), expr, end.Add(-d), end, step)
		if err != nil {
			sc.Error = err.Error()
		} else {
			sc.Chart = newChart(m, end.Add(-d), end, step, s.Unit)
		}
		p.Charts = append(p.Charts, sc)
	}
	if c.o.Incidents != nil {
		for _, inc := range c.o.Incidents.Active() {
			if slices.Contains(inc.Clusters, name) && id.AllowsAny(inc.Clusters) {
				p.Incidents = append(p.Incidents, rowOf(&inc))
			}
		}
	}
	c.render(w, r, http.StatusOK, "cluster", "Cluster "+name, "fleet", p)
}
