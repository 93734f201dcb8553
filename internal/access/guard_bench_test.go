package access

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// clusterTokens is a stand-in for internal/clusterauth's table (which imports this package).
type clusterTokens map[string]string

func (c clusterTokens) Authenticate(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 {
		return "", false
	}
	cl, ok := c[h[7:]]
	return cl, ok
}

// benchGuard is a guard with a cluster, a reader, a basic-auth web user and a team.
func benchGuard(b *testing.B) *Guard {
	g, err := NewGuard(GuardOptions{Endpoints: []Endpoint{
		{Pattern: "/api/v1/write", Name: EndpointWrite, Need: RoleIngest},
		{Pattern: "/api/v1/query", Name: "query", Need: RoleRead, Scope: ScopeQuery},
		{Pattern: "/api/v1/query_range", Name: "query_range", Need: RoleRead, Scope: ScopeQuery},
	}})
	if err != nil {
		b.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		b.Fatal(err)
	}
	if err := g.Apply(Settings{
		Clusters: clusterTokens{"cluster-token": "eu-1"},
		Users: []User{
			{Name: "reader", Roles: []Role{RoleRead}, BearerToken: "reader-token"},
			{Name: "team", Roles: []Role{RoleRead}, BearerToken: "team-token", Scope: []string{"eu-1", "eu-2"}},
		},
		Web: &WebConfig{Users: map[string]string{"grafana": string(hash)}},
	}); err != nil {
		b.Fatal(err)
	}
	return g
}

// BenchmarkGuard is the access layer's cost per request, around a handler that does nothing:
// what remote-write and queries pay on top of their own work (a 2,000-sample remote-write
// request costs milliseconds of CPU, a query at least hundreds of microseconds).
func BenchmarkGuard(b *testing.B) {
	g := benchGuard(b)
	h := g.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	query := "/api/v1/query_range?" + url.Values{"query": {`sum by (cluster) (rate(container_cpu_usage_seconds_total{namespace="a"}[5m]))`}, "start": {"0"}, "end": {"3600"}, "step": {"15"}}.Encode()
	for _, bc := range []struct {
		name, path string
		set        func(*http.Request)
	}{
		{"write/cluster-token", "/api/v1/write", func(r *http.Request) { r.Header.Set("Authorization", "Bearer cluster-token") }},
		{"query/reader-token", query, func(r *http.Request) { r.Header.Set("Authorization", "Bearer reader-token") }},
		{"query/basic-auth-cached", query, func(r *http.Request) { r.SetBasicAuth("grafana", "pw") }},
		{"query/team-scoped", query, func(r *http.Request) { r.Header.Set("Authorization", "Bearer team-token") }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodGet, bc.path, nil)
				bc.set(r)
				h.ServeHTTP(w, r)
				if w.Code != http.StatusOK {
					b.Fatalf("%s: %d %s", bc.name, w.Code, w.Body)
				}
			}
		})
	}
	b.Run("baseline/no-guard", func(b *testing.B) {
		inner := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
		w := httptest.NewRecorder()
		b.ReportAllocs()
		for b.Loop() {
			r := httptest.NewRequest(http.MethodGet, query, nil)
			r.Header.Set("Authorization", "Bearer reader-token")
			inner.ServeHTTP(w, r)
		}
	})
}
