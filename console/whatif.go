package console

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/fleetwatch/fleetwatch/schedule"
)

// whatIfPage is the content of /whatif.
type whatIfPage struct {
	Enabled bool
	// Choices are the clusters the caller may fail, with Checked those it chose.
	Choices []whatIfChoice
	Result  *schedule.WhatIfResult
	// Moves and Clusters are the result as the caller may see it: a team sees its own
	// clusters; what goes to other teams' clusters is counted, not named.
	Moves    []whatIfMove
	Clusters []schedule.ClusterAfter
	Hidden   int
	Scoped   bool
	Error    string
}

type whatIfChoice struct {
	Name    string
	Checked bool
}

// whatIfMove is one workload of a failed cluster and where its replicas would go.
type whatIfMove struct {
	schedule.WorkloadMove
	// To lists the placements as "cluster:replicas" ("elsewhere:n" for other teams').
	To string
}

func (c *Console) serveWhatIf(w http.ResponseWriter, r *http.Request) {
	id := identity(r)
	p := whatIfPage{Enabled: c.scheduling(), Scoped: id.Scoped()}
	if !p.Enabled {
		c.render(w, r, http.StatusOK, "whatif", "What-if", "whatif", p)
		return
	}
	fail := r.URL.Query()["fail"]
	known := map[string]bool{}
	for _, cl := range c.clusters(id) {
		known[cl.Name] = true
		p.Choices = append(p.Choices, whatIfChoice{Name: cl.Name, Checked: slices.Contains(fail, cl.Name)})
	}
	if len(fail) == 0 {
		c.render(w, r, http.StatusOK, "whatif", "What-if", "whatif", p)
		return
	}
	for _, f := range fail {
		if !known[f] {
			// Another team's cluster is as unknown as one that does not exist.
			p.Error = "cluster " + strconv.Quote(f) + " is not known"
			c.render(w, r, http.StatusBadRequest, "whatif", "What-if", "whatif", p)
			return
		}
	}
	res, err := c.o.Schedule.WhatIf(r.Context(), schedule.WhatIfRequest{Fail: fail})
	if err != nil {
		p.Error = err.Error()
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, schedule.ErrBadRequest):
			code = http.StatusBadRequest
		case errors.Is(err, schedule.ErrUnavailable):
			code = http.StatusServiceUnavailable
		}
		c.render(w, r, code, "whatif", "What-if", "whatif", p)
		return
	}
	p.Result = res
	for _, ca := range res.Clusters {
		if id.AllowsCluster(ca.Cluster) {
			p.Clusters = append(p.Clusters, ca)
		} else {
			p.Hidden++
		}
	}
	for _, m := range res.Workloads {
		var to []string
		elsewhere := 0
		for _, pl := range m.Placements {
			if id.AllowsCluster(pl.Cluster) {
				to = append(to, pl.Cluster+":"+strconv.Itoa(pl.Replicas))
			} else {
				elsewhere += pl.Replicas
			}
		}
		if elsewhere > 0 {
			to = append(to, "other teams' clusters:"+strconv.Itoa(elsewhere))
		}
		p.Moves = append(p.Moves, whatIfMove{WorkloadMove: m, To: strings.Join(to, " ")})
	}
	c.render(w, r, http.StatusOK, "whatif", "What-if", "whatif", p)
}
