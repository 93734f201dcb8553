package main

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/console"
	"github.com/fleetwatch/fleetwatch/internal/access"
)

// TestConsoleEndpoints: every console page is an endpoint the access layer knows, open to
// readers and team identities alike (the pages filter by the identity themselves).
func TestConsoleEndpoints(t *testing.T) {
	for _, p := range console.Routes {
		i := slices.IndexFunc(endpoints, func(ep access.Endpoint) bool { return ep.Pattern == p })
		require.GreaterOrEqual(t, i, 0, "console route %q is not among the endpoints", p)
		ep := endpoints[i]
		require.Equal(t, access.RoleRead, ep.Need, p)
		require.Contains(t, []access.Scope{access.ScopeHandler, access.ScopeNone}, ep.Scope, p)
	}
}

// TestConsoleServed: fleetwatch serves the console at / behind the access layer, next to
// the APIs, which keep working; a team sees its clusters only, in pages and queries.
func TestConsoleServed(t *testing.T) {
	f := startAccessFleet(t, testIdentities, false)
	code, body := f.do(t, reader, "GET", "/", "")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `id="cluster-eu-1"`)
	require.Contains(t, body, `id="cluster-eu-2"`)

	code, body = f.do(t, teamA, "GET", "/", "")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `id="cluster-eu-1"`)
	require.NotContains(t, body, "eu-2")
	code, _ = f.do(t, teamA, "GET", "/clusters/eu-2", "")
	require.Equal(t, http.StatusNotFound, code)
	code, body = f.do(t, teamA, "GET", "/clusters/eu-1", "")
	require.Equal(t, http.StatusOK, code, body)

	// The team's query runs with its clusters' matcher: another cluster's series is not there.
	code, body = f.do(t, teamA, "GET", "/graph?g0.expr=secret_eu_2", "")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "Empty result.")
	code, body = f.do(t, teamA, "GET", "/graph?g0.expr=secret_eu_1", "")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `<td class="num pre">42</td>`)
	code, body = f.do(t, reader, "GET", "/graph?g0.expr=sum(", "")
	require.Equal(t, http.StatusBadRequest, code, body)

	for _, path := range []string{"/incidents", "/remediations", "/whatif", "/static/console.css", "/static/console.js"} {
		code, body = f.do(t, teamA, "GET", path, "")
		require.Equal(t, http.StatusOK, code, "%s: %s", path, body)
	}
	code, _ = f.do(t, reader, "GET", "/nope", "")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = f.do(t, anon, "GET", "/", "")
	require.Equal(t, http.StatusUnauthorized, code)
	code, _ = f.do(t, clusterEU, "GET", "/", "")
	require.Equal(t, http.StatusForbidden, code)

	// The APIs beside the console are unchanged.
	code, body = f.do(t, reader, "GET", "/api/v1/incidents", "")
	require.Equal(t, http.StatusOK, code, body)
	require.True(t, strings.HasPrefix(body, `{"status":"success"`), body)
	code, body = f.do(t, reader, "GET", "/api/v1/query?query=up", "")
	require.Equal(t, http.StatusOK, code, body)
	// What the console's buttons call: an operator reaches the remediation API (404: there
	// is no such remediation), a reader is refused before it.
	code, body = f.do(t, operator, "POST", "/api/v1/remediations/rem-x/approve", `{"comment":"ok"}`)
	require.Equal(t, http.StatusNotFound, code, body)
	code, _ = f.do(t, reader, "POST", "/api/v1/remediations/rem-x/approve", `{"comment":"ok"}`)
	require.Equal(t, http.StatusForbidden, code)
}
