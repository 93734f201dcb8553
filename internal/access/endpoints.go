package access

import (
	"fmt"
	"net/http"
)

// Scope says how a team-scoped identity is held to its clusters on an endpoint.
type Scope int

// How endpoints are scoped.
const (
	// ScopeDeny: the endpoint shows the whole fleet; a scoped identity is refused (403).
	ScopeDeny Scope = iota
	// ScopeNone: the endpoint shows no cluster's data (build info, parsing a query).
	ScopeNone
	// ScopeHandler: the handler filters by the identity itself (the incident API).
	ScopeHandler
	// ScopeQuery: the cluster matcher is injected into every selector of the `query` parameter.
	ScopeQuery
	// ScopeMatch: the cluster matcher is added to every `match[]` selector, or is the only one.
	ScopeMatch
	// ScopeFederate: as ScopeMatch, but without match[] nothing is federated, as in Prometheus.
	ScopeFederate
	// ScopeRules and ScopeAlerts: the answer keeps only the identity's clusters' alerts (and
	// rules that concern them), as prom-label-proxy filters them.
	ScopeRules
	ScopeAlerts
)

// Endpoint is one route of fleetwatch's HTTP surface and what it needs.
type Endpoint struct {
	// Pattern is an http.ServeMux pattern ("POST /api/v1/incidents/{id}/ack", "/debug/pprof/").
	Pattern string
	// Name labels refusals in fleetwatch_http_requests_refused_total; keep it short and fixed.
	Name string
	// Need is the role required; empty: open to everyone (health and readiness probes).
	Need Role
	// Lifecycle endpoints also need --web.enable-lifecycle.
	Lifecycle bool
	Scope     Scope
}

// fallback is where a request that matches no endpoint lands: readers only, never scoped.
var fallback = Endpoint{Name: "other", Need: RoleRead, Scope: ScopeDeny}

// routes finds the Endpoint of a request with an http.ServeMux, so patterns mean exactly
// what they mean to the muxes behind the guard.
type routes struct {
	mux *http.ServeMux
	eps map[string]Endpoint
}

func newRoutes(eps []Endpoint) (*routes, error) {
	rt := &routes{mux: http.NewServeMux(), eps: map[string]Endpoint{}}
	for _, ep := range eps {
		if _, dup := rt.eps[ep.Pattern]; dup {
			return nil, fmt.Errorf("access: endpoint %q listed twice", ep.Pattern)
		}
		if ep.Name == "" {
			return nil, fmt.Errorf("access: endpoint %q has no name", ep.Pattern)
		}
		if err := register(rt.mux, ep.Pattern); err != nil {
			return nil, err
		}
		rt.eps[ep.Pattern] = ep
	}
	return rt, nil
}

// register adds a pattern, turning ServeMux's panic on a bad or conflicting one into an error.
func register(mux *http.ServeMux, pattern string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("access: endpoint %q: %v", pattern, p)
		}
	}()
	mux.Handle(pattern, http.NotFoundHandler())
	return nil
}

// classify returns the endpoint r is for.
func (rt *routes) classify(r *http.Request) Endpoint {
	_, pattern := rt.mux.Handler(r)
	if ep, ok := rt.eps[pattern]; ok {
		return ep
	}
	return fallback
}
