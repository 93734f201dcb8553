package correlate

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// testCaller stands for the access layer's identity (access.Identity, which this package
// cannot import in its own tests; api_access_test.go uses the real one).
type testCaller struct {
	name     string
	clusters []string // nil: every cluster
}

func (c testCaller) String() string { return c.name }

func (c testCaller) AllowsAny(clusters []string) bool {
	if c.clusters == nil {
		return true
	}
	for _, cl := range clusters {
		if slices.Contains(c.clusters, cl) {
			return true
		}
	}
	return false
}

// user is a caller who sees clusters, or every cluster if none are given.
func user(name string, clusters ...string) Caller {
	c := testCaller{name: name}
	if len(clusters) > 0 {
		c.clusters = clusters
	}
	return c
}

type callerKey struct{}

// testIdentify reads what asCaller put into the context, as access.FromContext does.
func testIdentify(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// asCaller is the access layer in small: it puts c (nil: nobody) into every request's context.
func asCaller(h http.Handler, c Caller) http.Handler {
	if c == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}

// call serves one request and returns the status code and the body.
func call(h http.Handler, method, path, body string) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	return rec.Code, rec.Body.String()
}

// apiFleet is an engine (not running: the test evaluates) with three active incidents: one
// of eu-1, one of us-1 and one fleet-wide incident of both, by key.
func apiFleet(t *testing.T) (*Engine, map[string]string) {
	t.Helper()
	st, err := OpenStore(filepath.Join(t.TempDir(), "c.db"))
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	clk := &clock{t: t0}
	e, err := New(Options{Store: st, Rules: DefaultRules, ResolveAfter: time.Minute, Now: clk.now, Identify: testIdentify})
	require.NoError(t, err)
	require.NoError(t, e.Ingest(context.Background(), []Alert{
		alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", "eu-1", "severity", "critical"),
		alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", "us-1", "severity", "critical"),
		alert(0, "alertname", "CertificateExpiring", "cluster", "eu-1", "severity", "warning"),
		alert(0, "alertname", "CertificateExpiring", "cluster", "us-1", "severity", "warning"),
	}))
	require.NoError(t, e.Evaluate(context.Background()))
	ids := map[string]string{}
	for _, inc := range e.Active() {
		switch {
		case inc.Scope == "fleet":
			ids["fleet"] = inc.ID
		default:
			ids[inc.Clusters[0]] = inc.ID
		}
	}
	require.Len(t, ids, 3, "%v", ids)
	return e, ids
}

func listIDs(t *testing.T, body string) []string {
	t.Helper()
	var r struct {
		Status string      `json:"status"`
		Data   []*Incident `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &r), body)
	require.Equal(t, "success", r.Status)
	require.NotNil(t, r.Data, "data is an array")
	out := []string{}
	for _, inc := range r.Data {
		out = append(out, inc.ID)
	}
	return out
}

// TestAPIIdentity: the actor recorded is the authenticated identity, never a name the caller
// sends; a team-scoped identity sees and changes only incidents of its clusters, and another
// team's incident does not exist for it; nothing is changed without an identity.
func TestAPIIdentity(t *testing.T) {
	alice, bob := user("alice"), user("bob", "eu-1")
	for _, tc := range []struct {
		name   string
		caller Caller // nil: no identity in the context
		method string
		path   string // {eu-1}, {us-1}, {fleet} are replaced by the incidents' IDs
		body   string
		code   int
		want   string // in the answer
		// ackedBy is whom the store and memory then say acknowledged {path}'s incident ("":
		// nobody).
		ackedBy string
		// active: the incidents still active afterwards (default all three).
		active []string
		// resolved: the incident (key) resolved before the request.
		resolved string
	}{
		{name: "ack without body", caller: alice, method: "POST", path: "/api/v1/incidents/{eu-1}/ack", code: 200, want: `"acked_by":"alice"`, ackedBy: "alice"},
		{name: "ack with {}", caller: alice, method: "POST", path: "/api/v1/incidents/{eu-1}/ack", body: `{}`, code: 200, ackedBy: "alice"},
		{name: "ack by the identity itself", caller: alice, method: "POST", path: "/api/v1/incidents/{eu-1}/ack", body: `{"by":"alice"}`, code: 200, ackedBy: "alice"},
		{name: "ack by someone else", caller: alice, method: "POST", path: "/api/v1/incidents/{eu-1}/ack", body: `{"by":"mallory"}`, code: 400,
			want: `\"by\" is \"mallory\", but the actor is the authenticated identity \"alice\"`},
		{name: "ack with unknown field", caller: alice, method: "POST", path: "/api/v1/incidents/{eu-1}/ack", body: `{"who":"alice"}`, code: 400, want: `unknown field`},
		{name: "ack with two bodies", caller: alice, method: "POST", path: "/api/v1/incidents/{eu-1}/ack", body: `{} {}`, code: 400, want: `more than one JSON value`},
		{name: "ack without identity", method: "POST", path: "/api/v1/incidents/{eu-1}/ack", body: `{"by":"alice"}`, code: 403, want: `no authenticated identity`},
		{name: "resolve without identity", method: "POST", path: "/api/v1/incidents/{eu-1}/resolve", code: 403, want: `no authenticated identity`},
		{name: "unknown incident", caller: alice, method: "POST", path: "/api/v1/incidents/inc-nope/ack", code: 404, want: `incident inc-nope: not found`},
		{name: "resolve", caller: alice, method: "POST", path: "/api/v1/incidents/{us-1}/resolve", code: 200, want: `"state":"resolved"`, active: []string{"eu-1", "fleet"}},

		{name: "scoped ack of its cluster", caller: bob, method: "POST", path: "/api/v1/incidents/{eu-1}/ack", code: 200, ackedBy: "bob"},
		{name: "scoped ack of a fleet incident touching its cluster", caller: bob, method: "POST", path: "/api/v1/incidents/{fleet}/ack", code: 200, ackedBy: "bob"},
		{name: "scoped ack of another cluster", caller: bob, method: "POST", path: "/api/v1/incidents/{us-1}/ack", code: 404, want: `incident {us-1}: not found`},
		{name: "scoped resolve of another cluster", caller: bob, method: "POST", path: "/api/v1/incidents/{us-1}/resolve", code: 404, want: `incident {us-1}: not found`},
		{name: "scoped get of another cluster", caller: bob, method: "GET", path: "/api/v1/incidents/{us-1}", code: 404, want: `incident {us-1}: not found`},
		{name: "scoped get of its cluster", caller: bob, method: "GET", path: "/api/v1/incidents/{eu-1}", code: 200, want: `"id":"{eu-1}"`},
		{name: "ack of a resolved incident", caller: alice, resolved: "us-1", method: "POST", path: "/api/v1/incidents/{us-1}/ack", code: 409,
			want: `incident {us-1}: not active`, active: []string{"eu-1", "fleet"}},
		{name: "scoped ack of another cluster's resolved incident", caller: bob, resolved: "us-1", method: "POST", path: "/api/v1/incidents/{us-1}/ack", code: 404,
			want: `incident {us-1}: not found`, active: []string{"eu-1", "fleet"}},
		{name: "get without identity reads", method: "GET", path: "/api/v1/incidents/{us-1}", code: 200, want: `"id":"{us-1}"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, ids := apiFleet(t)
			if tc.resolved != "" {
				_, err := e.Resolve(ids[tc.resolved])
				require.NoError(t, err)
			}
			sub := func(s string) string {
				for k, id := range ids {
					s = strings.ReplaceAll(s, "{"+k+"}", id)
				}
				return s
			}
			code, body := call(asCaller(e.Handler(), tc.caller), tc.method, sub(tc.path), tc.body)
			require.Equal(t, tc.code, code, body)
			require.Contains(t, body, sub(tc.want))
			if tc.method != http.MethodPost {
				return
			}
			if id := sub(strings.Split(tc.path, "/")[4]); id != "inc-nope" {
				stored, err := e.o.Store.Incident(id)
				require.NoError(t, err)
				require.Equal(t, tc.ackedBy, stored.AckedBy, "stored")
				for _, inc := range e.Active() {
					if inc.ID == id {
						require.Equal(t, tc.ackedBy, inc.AckedBy, "in memory")
					}
				}
			}
			want := tc.active
			if want == nil {
				want = []string{"eu-1", "fleet", "us-1"}
			}
			var got []string
			for k, id := range ids {
				if slices.ContainsFunc(e.Active(), func(i Incident) bool { return i.ID == id }) {
					got = append(got, k)
				}
			}
			require.ElementsMatch(t, want, got)
		})
	}
}

// TestAPIListScoped: a team-scoped identity lists only incidents that touch its clusters,
// from memory (active) and from the store (history) alike.
func TestAPIListScoped(t *testing.T) {
	e, ids := apiFleet(t)
	_, err := e.Resolve(ids["us-1"])
	require.NoError(t, err)
	_, err = e.Resolve(ids["eu-1"])
	require.NoError(t, err)
	for _, tc := range []struct {
		caller Caller
		query  string
		want   []string
	}{
		{user("bob", "eu-1"), "state=active", []string{"fleet"}},
		{user("bob", "eu-1"), "state=resolved", []string{"eu-1"}},
		{user("bob", "eu-1"), "", []string{"eu-1", "fleet"}},
		{user("carol", "us-1"), "state=resolved", []string{"us-1"}},
		{user("dave", "ap-1"), "", []string{}},
		{user("alice"), "", []string{"eu-1", "fleet", "us-1"}},
		{nil, "state=active", []string{"fleet"}},
	} {
		t.Run(fmt.Sprintf("%v %s", tc.caller, tc.query), func(t *testing.T) {
			code, body := call(asCaller(e.Handler(), tc.caller), http.MethodGet, "/api/v1/incidents?"+tc.query, "")
			require.Equal(t, http.StatusOK, code, body)
			want := []string{}
			for _, k := range tc.want {
				want = append(want, ids[k])
			}
			require.ElementsMatch(t, want, listIDs(t, body))
		})
	}
}

// TestAPIStoreFailure: an acknowledgement or resolution that the store cannot keep is an
// error to the caller (500) and changes nothing in memory: the incident, the active list,
// subscribers and counters are as before.
func TestAPIStoreFailure(t *testing.T) {
	for _, action := range []string{"ack", "resolve"} {
		t.Run(action, func(t *testing.T) {
			e, ids := apiFleet(t)
			id := ids["eu-1"]
			before := e.Active()
			tracked := *e.tracker.find(id)
			ch, cancel := e.Subscribe()
			defer cancel()
			require.NoError(t, e.o.Store.Close()) // every write fails from now on

			code, body := call(asCaller(e.Handler(), user("alice")), http.MethodPost, "/api/v1/incidents/"+id+"/"+action, "")
			require.Equal(t, http.StatusInternalServerError, code, body)
			require.Contains(t, body, "store incident "+id)
			require.Equal(t, before, e.Active(), "the active list")
			require.Equal(t, tracked, *e.tracker.find(id), "the tracker")
			require.Empty(t, ch, "nothing published")
			require.Equal(t, 0.0, testutil.ToFloat64(e.resolved.WithLabelValues("critical", "cluster", "manual")))
		})
	}
}

// TestEvaluateStoreFailure: an evaluation whose changes the store cannot keep changes nothing
// in memory, so that the next one makes them again.
func TestEvaluateStoreFailure(t *testing.T) {
	st, err := OpenStore(filepath.Join(t.TempDir(), "c.db"))
	require.NoError(t, err)
	e, err := New(Options{Store: st, Rules: DefaultRules, Now: func() time.Time { return t0 }})
	require.NoError(t, err)
	require.NoError(t, e.Ingest(context.Background(), []Alert{alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", "eu-1")}))
	require.NoError(t, st.Close())
	require.ErrorContains(t, e.Evaluate(context.Background()), "store incidents")
	require.Empty(t, e.tracker.active)
	require.Empty(t, e.Active())
}

// TestAPIBodyLimit: a body over MaxBodyBytes is 413 naming the limit, never a decoding error,
// whether or not its length is announced, and changes nothing.
func TestAPIBodyLimit(t *testing.T) {
	for _, tc := range []struct {
		action string
		length bool // Content-Length set
	}{{"ack", true}, {"ack", false}, {"resolve", true}, {"resolve", false}} {
		t.Run(fmt.Sprintf("%s length %v", tc.action, tc.length), func(t *testing.T) {
			e, ids := apiFleet(t)
			body := `{"by":"alice"` + strings.Repeat(" ", MaxBodyBytes) + `}`
			req := httptest.NewRequest(http.MethodPost, "/api/v1/incidents/"+ids["eu-1"]+"/"+tc.action, io.MultiReader(strings.NewReader(body)))
			if !tc.length {
				req.ContentLength = -1
			}
			rec := httptest.NewRecorder()
			asCaller(e.Handler(), user("alice")).ServeHTTP(rec, req)
			require.Equal(t, http.StatusRequestEntityTooLarge, rec.Code, rec.Body.String())
			require.JSONEq(t, `{"status":"error","errorType":"bad_data","error":"request body exceeds the limit of 65536 bytes"}`, rec.Body.String())
			inc := e.tracker.find(ids["eu-1"])
			require.NotNil(t, inc)
			require.Equal(t, StateOpen, inc.State)
		})
	}
}

// TestAPIListPages: the history is listed in pages of limit (default DefaultPageLimit), with
// the next page's token in HeaderNextPageToken, until a page without one; every incident
// once. Active lists stay complete and unpaged.
func TestAPIListPages(t *testing.T) {
	st, err := OpenStore(filepath.Join(t.TempDir(), "c.db"))
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	const resolved, active = 230, 3
	var want []string
	var incs []*Incident
	for i := range resolved + active {
		inc := testIncident(i, "eu-1")
		if i >= active {
			resolve(inc, t0.Add(time.Duration(i)*time.Minute))
			want = append(want, inc.ID)
		}
		incs = append(incs, inc)
	}
	require.NoError(t, st.SaveIncidents(incs, nil))
	slices.Reverse(want) // the latest resolved first
	e, err := New(Options{Store: st, Rules: DefaultRules, Now: func() time.Time { return t0 }})
	require.NoError(t, err)
	h := e.Handler()

	page := func(query string) ([]string, string) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/incidents?"+query, nil))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		return listIDs(t, rec.Body.String()), rec.Header().Get(HeaderNextPageToken)
	}
	for _, tc := range []struct {
		limit string
		sizes []int
	}{{"", []int{100, 100, 30}}, {"limit=1000", []int{230}}, {"limit=70", []int{70, 70, 70, 20}}, {"limit=115", []int{115, 115}}} {
		t.Run(tc.limit, func(t *testing.T) {
			var got []string
			var sizes []int
			token := ""
			for {
				q := "state=resolved&" + tc.limit
				if token != "" {
					q += "&page_token=" + token
				}
				ids, next := page(q)
				got = append(got, ids...)
				sizes = append(sizes, len(ids))
				if next == "" {
					break
				}
				token = next
			}
			require.Equal(t, want, got)
			require.Equal(t, tc.sizes, sizes)
		})
	}
	ids, next := page("state=active&limit=1")
	require.Len(t, ids, active, "active lists are complete")
	require.Empty(t, next)

	for q, msg := range map[string]string{
		"limit=0":                                `limit: \"0\" is not a number from 1 to 1000`,
		"limit=1001":                             `limit: \"1001\" is not a number from 1 to 1000`,
		"limit=ten":                              `limit: \"ten\" is not a number from 1 to 1000`,
		"state=resolved&page_token=%21%21":       `page_token: page token \"!!\": not a page token of this listing`,
		"state=resolved&page_token=aW5jLTAwMQ":   `not a page token of this listing`, // an incidents-bucket token
		"page_token=cgAAAAAAAAAAaW5j&state=":     `not a page token of this listing`, // a resolved-index token
		"state=resolved&page_token=cgAAAAAAAAAA": `not a page token of this listing`, // too short
	} {
		code, body := call(h, http.MethodGet, "/api/v1/incidents?"+q, "")
		require.Equal(t, http.StatusBadRequest, code, q)
		require.Contains(t, body, msg, q)
	}
}
