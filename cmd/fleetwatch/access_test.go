package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/fleetwatch/fleetwatch/internal/access"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// accessFleet is an in-process fleetwatch with identities of every kind, two clusters with
// data (eu-1 labelled team a, eu-2 team b) and a rule that fires for every cluster.
type accessFleet struct {
	url string
	srv *server
}

// caller is one way of calling fleetwatch.
type caller struct {
	name string
	set  func(*http.Request)
}

func bearer(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

var (
	anon      = caller{"anonymous", func(*http.Request) {}}
	reader    = caller{"reader", bearer("reader-token")}
	operator  = caller{"operator", func(r *http.Request) { r.SetBasicAuth("operator", "operator-pw") }}
	webUser   = caller{"web-user", func(r *http.Request) { r.SetBasicAuth("grafana", "grafana-pw") }}
	admin     = caller{"admin", bearer("admin-token")}
	teamA     = caller{"team-a", bearer("team-a-token")}
	teamB     = caller{"team-b-selector", bearer("team-b-token")}
	clusterEU = caller{"cluster eu-1", bearer("eu-1-token")}
	badToken  = caller{"bad token", bearer("nope")}
	badPass   = caller{"bad password", func(r *http.Request) { r.SetBasicAuth("operator", "wrong") }}
)

func startAccessFleet(t *testing.T, identities string, lifecycle bool) *accessFleet {
	t.Helper()
	dir := t.TempDir()
	for name, tok := range map[string]string{
		"eu-1.token": "eu-1-token", "eu-2.token": "eu-2-token", "reader.token": "reader-token",
		"admin.token": "admin-token", "team-a.token": "team-a-token", "team-b.token": "team-b-token",
	} {
		testenv.WriteFile(t, dir, name, tok+"\n")
	}
	testenv.WriteFile(t, dir, "always.rules.yml", `groups:
- name: always
  interval: 1s
  rules:
  - alert: AlwaysUp
    expr: up == 1
    labels: {severity: info}
`)
	cfg := testenv.WriteFile(t, dir, "fleetwatch.yml", `clusters:
- name: eu-1
  labels: {team: a}
  remote_write: {bearer_token_file: eu-1.token}
- name: eu-2
  labels: {team: b}
  remote_write: {bearer_token_file: eu-2.token}
rules:
  evaluation_interval: 1s
  rule_files: [always.rules.yml]
  pack: {enabled: false}
correlate: {enabled: false}
`+identities)
	webCfg := ""
	if identities != "" {
		var users []string
		for u, pw := range map[string]string{"operator": "operator-pw", "grafana": "grafana-pw"} {
			h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
			require.NoError(t, err)
			users = append(users, fmt.Sprintf("  %s: %s", u, h))
		}
		webCfg = testenv.WriteFile(t, dir, "web.yml", "basic_auth_users:\n"+strings.Join(users, "\n")+"\n")
	}
	s, base := runServerWith(t, serverOptions{ConfigFile: cfg, WebConfigFile: webCfg, EnableLifecycle: lifecycle,
		TSDBPath: filepath.Join(dir, "data")})
	app := s.view.Appendable().Appender(context.Background())
	now := time.Now()
	for _, c := range []string{"eu-1", "eu-2"} {
		for i := range 3 {
			ts := now.Add(time.Duration(i-2) * 10 * time.Second).UnixMilli()
			_, err := app.Append(0, labels.FromStrings("__name__", "up", "cluster", c, "job", "kube"), ts, 1)
			require.NoError(t, err)
			_, err = app.Append(0, labels.FromStrings("__name__", "secret_"+strings.ReplaceAll(c, "-", "_"), "cluster", c), ts, 42)
			require.NoError(t, err)
		}
	}
	require.NoError(t, app.Commit())
	f := &accessFleet{url: base, srv: s}
	testenv.Eventually(t, 10*time.Second, func() error {
		resp, err := http.Get(f.url + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ready: %d", resp.StatusCode)
		}
		return nil
	})
	return f
}

func (f *accessFleet) do(t *testing.T, c caller, method, path string, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	require.NoError(t, err)
	if strings.HasPrefix(body, "query=") || strings.HasPrefix(body, "match") {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	c.set(req)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

const testIdentities = `access:
  identities:
  - {name: reader, roles: [read], bearer_token_file: reader.token}
  - {name: operator, roles: [operate]}
  - {name: admin, roles: [admin], bearer_token_file: admin.token}
  - {name: team-a, roles: [read, operate], bearer_token_file: team-a.token, clusters: [eu-1]}
  - {name: team-b, roles: [read], bearer_token_file: team-b.token, cluster_selector: {team: b}}
`

// allowed is any answer the access layer let through: the handler's own answer.
const allowed = 0

// TestAccessMatrix: every endpoint class against every kind of caller: allowed, 401 or 403.
func TestAccessMatrix(t *testing.T) {
	f := startAccessFleet(t, testIdentities, true)
	type row struct {
		method, path, body string
		want               map[string]int // caller name -> status; allowed: not 401/403
	}
	all := func(code int, except map[string]int) map[string]int {
		m := map[string]int{}
		for _, c := range []caller{anon, reader, operator, webUser, admin, teamA, teamB, clusterEU, badToken, badPass} {
			m[c.name] = code
		}
		for k, v := range except {
			m[k] = v
		}
		return m
	}
	rows := []row{
		{"GET", "/-/healthy", "", all(http.StatusOK, nil)},
		{"GET", "/-/ready", "", all(http.StatusOK, nil)},
		{"GET", "/api/v1/query?query=up", "", all(allowed, map[string]int{"anonymous": 401, "cluster eu-1": 403, "bad token": 401, "bad password": 401})},
		{"POST", "/api/v1/query", "query=up", all(allowed, map[string]int{"anonymous": 401, "cluster eu-1": 403, "bad token": 401, "bad password": 401})},
		{"GET", "/api/v1/series?match[]=up", "", all(allowed, map[string]int{"anonymous": 401, "cluster eu-1": 403, "bad token": 401, "bad password": 401})},
		{"GET", "/federate?match[]=up", "", all(allowed, map[string]int{"anonymous": 401, "cluster eu-1": 403, "bad token": 401, "bad password": 401})},
		{"GET", "/api/v1/status/tsdb", "", all(allowed, map[string]int{"anonymous": 401, "cluster eu-1": 403, "bad token": 401, "bad password": 401, "team-a": 403, "team-b-selector": 403})},
		{"GET", "/metrics", "", all(allowed, map[string]int{"anonymous": 401, "cluster eu-1": 403, "bad token": 401, "bad password": 401, "team-a": 403, "team-b-selector": 403})},
		{"POST", "/api/v1/placements", `{"replicas":1,"cpu":"1","memory":"1Gi"}`, all(allowed, map[string]int{"anonymous": 401, "cluster eu-1": 403, "bad token": 401, "bad password": 401, "team-a": 403, "team-b-selector": 403})},
		{"GET", "/api/v1/incidents", "", all(allowed, map[string]int{"anonymous": 401, "cluster eu-1": 403, "bad token": 401, "bad password": 401})},
		{"POST", "/api/v1/incidents/inc-x/ack", "", all(403, map[string]int{"anonymous": 401, "operator": allowed, "team-a": allowed, "bad token": 401, "bad password": 401})},
		{"POST", "/api/v1/incidents/inc-x/resolve", "", all(403, map[string]int{"anonymous": 401, "operator": allowed, "team-a": allowed, "bad token": 401, "bad password": 401})},
		{"POST", "/api/v1/approvals/fwa1.x.y", `{"decision":"approve"}`, all(403, map[string]int{"anonymous": 401, "operator": allowed, "team-a": allowed, "bad token": 401, "bad password": 401})},
		{"GET", "/api/v1/approvals/fwa1.x.y", "", all(allowed, map[string]int{"anonymous": 401, "cluster eu-1": 403, "bad token": 401, "bad password": 401})},
		{"GET", "/api/v1/hooks", "", all(allowed, map[string]int{"anonymous": 401, "cluster eu-1": 403, "bad token": 401, "bad password": 401, "team-a": 403, "team-b-selector": 403})},
		{"GET", "/debug/pprof/", "", all(403, map[string]int{"anonymous": 401, "admin": allowed, "bad token": 401, "bad password": 401})},
		{"POST", "/-/reload", "", all(403, map[string]int{"anonymous": 401, "admin": allowed, "bad token": 401, "bad password": 401})},
		{"POST", "/api/v1/write", "not snappy", all(403, map[string]int{"anonymous": 401, "cluster eu-1": allowed, "bad token": 401, "bad password": 401})},
		{"POST", "/api/v2/alerts", "[]", all(403, map[string]int{"anonymous": 401, "cluster eu-1": allowed, "bad token": 401, "bad password": 401})},
	}
	for _, r := range rows {
		for _, c := range []caller{anon, reader, operator, webUser, admin, teamA, teamB, clusterEU, badToken, badPass} {
			t.Run(r.method+" "+r.path+" as "+c.name, func(t *testing.T) {
				code, body := f.do(t, c, r.method, r.path, r.body)
				want := r.want[c.name]
				if want == allowed {
					require.NotContains(t, []int{401, 403}, code, body)
					return
				}
				require.Equal(t, want, code, body)
				if code == http.StatusUnauthorized {
					require.NotEmpty(t, body)
				}
			})
		}
	}
	// Every refusal was counted by endpoint and reason.
	require.Positive(t, testutil.ToFloat64(f.srv.guard.RefusedCounter("reload", access.ReasonForbidden)))
	require.Positive(t, testutil.ToFloat64(f.srv.guard.RefusedCounter("query", access.ReasonUnauthenticated)))
	require.Positive(t, testutil.ToFloat64(f.srv.guard.RefusedCounter("metrics", access.ReasonScope)))
}

// TestCrossOriginChangesRefused: a browser's state-changing request from another site (a forged
// form or script riding on saved basic-auth credentials) is refused before it is authenticated;
// the same request from fleetwatch's own pages, or from an API client, is not.
func TestCrossOriginChangesRefused(t *testing.T) {
	f := startAccessFleet(t, testIdentities, false)
	for _, tc := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"another site", map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"an old browser's origin", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"its own page", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": f.url}, allowed},
		{"an API client", nil, allowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.do(t, caller{"operator", func(r *http.Request) {
				operator.set(r)
				for k, v := range tc.header {
					r.Header.Set(k, v)
				}
			}}, "POST", "/api/v1/incidents/inc-x/ack", "")
			if tc.want == allowed {
				require.NotContains(t, []int{401, 403}, code, body)
				return
			}
			require.Equal(t, tc.want, code, body)
			require.Contains(t, body, "fleetwatch takes changes from its own pages and from API clients only")
		})
	}
	require.Equal(t, 2.0, testutil.ToFloat64(f.srv.guard.RefusedCounter("incident_ack", access.ReasonCrossOrigin)))
}

// TestOpenMode: without identities reads stay open, every state change is 403 naming the
// setting to turn on, and each refusal is counted.
func TestOpenMode(t *testing.T) {
	f := startAccessFleet(t, "", true)
	code, _ := f.do(t, anon, "GET", "/api/v1/query?query=up", "")
	require.Equal(t, http.StatusOK, code)
	for _, p := range []string{"/api/v1/incidents/inc-x/ack", "/-/reload", "/-/quit"} {
		code, body := f.do(t, anon, "POST", p, "")
		require.Equal(t, http.StatusForbidden, code, p)
		require.Contains(t, body, "access.identities", p)
	}
	code, body := f.do(t, anon, "GET", "/debug/pprof/", "")
	require.Equal(t, http.StatusForbidden, code)
	require.Contains(t, body, "access.identities")
	require.Equal(t, 1.0, testutil.ToFloat64(f.srv.guard.RefusedCounter("incident_ack", access.ReasonNoAccessConfig)))
	// The cluster's token still ingests.
	code, _ = f.do(t, clusterEU, "POST", "/api/v1/write", "not snappy")
	require.Equal(t, http.StatusBadRequest, code)
}

// TestLifecycleFlag: /-/reload and /-/quit need --web.enable-lifecycle even for an admin.
func TestLifecycleFlag(t *testing.T) {
	f := startAccessFleet(t, testIdentities, false)
	for _, p := range []string{"/-/reload", "/-/quit"} {
		code, body := f.do(t, admin, "POST", p, "")
		require.Equal(t, http.StatusForbidden, code, p)
		require.Contains(t, body, "--web.enable-lifecycle")
	}
	code, _ := f.do(t, admin, "GET", "/debug/pprof/", "")
	require.Equal(t, http.StatusOK, code)
}

// promResult decodes a Prometheus API answer's series labels.
func promResult(t *testing.T, body string) []map[string]string {
	t.Helper()
	var r struct {
		Status string `json:"status"`
		Data   json.RawMessage
	}
	require.NoError(t, json.Unmarshal([]byte(body), &r), body)
	require.Equal(t, "success", r.Status, body)
	var q struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
		} `json:"result"`
	}
	if json.Unmarshal(r.Data, &q) == nil && q.Result != nil {
		out := make([]map[string]string, len(q.Result))
		for i, s := range q.Result {
			out[i] = s.Metric
		}
		return out
	}
	var series []map[string]string
	if json.Unmarshal(r.Data, &series) == nil {
		return series
	}
	return nil
}

// TestTeamScope: a team identity's PromQL, series, labels, federate, rules and alerts never
// show another team's cluster, also through or, subqueries, label_replace and aggregations.
func TestTeamScope(t *testing.T) {
	f := startAccessFleet(t, testIdentities, true)
	for _, tc := range []struct {
		who  caller
		mine string
	}{{teamA, "eu-1"}, {teamB, "eu-2"}} {
		other := map[string]string{"eu-1": "eu-2", "eu-2": "eu-1"}[tc.mine]
		secret := "secret_" + strings.ReplaceAll(other, "-", "_")
		for _, q := range []string{
			`up`,
			`up{cluster="` + other + `"}`,
			`up or up{cluster="` + other + `"}`,
			`up{cluster=~".+"} or on() vector(1)`,
			secret,
			`{__name__=~"secret_.*"}`,
			`max_over_time(up{cluster="` + other + `"}[5m:10s])`,
			`label_replace(` + secret + `, "cluster", "` + tc.mine + `", "", "")`,
			`sum by (cluster) (up)`,
			`count({__name__=~".+"}) by (cluster, __name__)`,
			`up unless on() ` + secret,
		} {
			for _, method := range []string{"GET", "POST"} {
				var code int
				var body string
				if method == "GET" {
					code, body = f.do(t, tc.who, "GET", "/api/v1/query?query="+url.QueryEscape(q), "")
				} else {
					code, body = f.do(t, tc.who, "POST", "/api/v1/query", "query="+url.QueryEscape(q))
				}
				require.Equal(t, http.StatusOK, code, "%s %s: %s", method, q, body)
				require.NotContains(t, body, "secret_"+strings.ReplaceAll(other, "-", "_"), q)
				for _, s := range promResult(t, body) {
					if c, ok := s["cluster"]; ok {
						require.Equal(t, tc.mine, c, "%s %s: %s", method, q, body)
					}
				}
			}
		}
		// The unscoped reader sees both clusters: the queries above would have shown them.
		code, body := f.do(t, reader, "GET", "/api/v1/query?query="+url.QueryEscape(`count(up) by (cluster)`), "")
		require.Equal(t, http.StatusOK, code)
		require.Len(t, promResult(t, body), 2, body)

		code, body = f.do(t, tc.who, "GET", "/api/v1/query_range?query=up&start="+fmt.Sprint(time.Now().Add(-time.Minute).Unix())+"&end="+fmt.Sprint(time.Now().Unix())+"&step=15", "")
		require.Equal(t, http.StatusOK, code, body)
		require.NotContains(t, body, `"`+other+`"`)
		for _, p := range []string{
			"/api/v1/series?match[]=" + url.QueryEscape(`{__name__=~".+"}`),
			"/api/v1/series?match[]=" + url.QueryEscape(`up{cluster="`+other+`"}`),
			"/api/v1/labels",
			"/api/v1/label/cluster/values",
			"/api/v1/label/__name__/values",
			"/federate?match[]=" + url.QueryEscape(`{__name__=~".+"}`),
		} {
			code, body := f.do(t, tc.who, "GET", p, "")
			require.Equal(t, http.StatusOK, code, "%s: %s", p, body)
			require.NotContains(t, body, other, p)
			require.NotContains(t, body, secret, p)
		}
		code, body = f.do(t, tc.who, "POST", "/api/v1/series", "match[]="+url.QueryEscape(`{__name__=~".+"}`))
		require.Equal(t, http.StatusOK, code, body)
		require.NotContains(t, body, other)
		code, body = f.do(t, tc.who, "GET", "/api/v1/label/cluster/values", "")
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, body, tc.mine)
	}
	// Rules and alerts: the rule fires for both clusters; each team sees only its own alert.
	testenv.Eventually(t, 20*time.Second, func() error {
		_, body := f.do(t, reader, "GET", "/api/v1/alerts", "")
		if !strings.Contains(body, `"eu-1"`) || !strings.Contains(body, `"eu-2"`) {
			return fmt.Errorf("not firing for both clusters yet: %s", body)
		}
		return nil
	})
	for _, tc := range []struct {
		who         caller
		mine, other string
	}{{teamA, "eu-1", "eu-2"}, {teamB, "eu-2", "eu-1"}} {
		for _, p := range []string{"/api/v1/alerts", "/api/v1/rules"} {
			code, body := f.do(t, tc.who, "GET", p, "")
			require.Equal(t, http.StatusOK, code, body)
			require.Contains(t, body, `"`+tc.mine+`"`, p)
			require.NotContains(t, body, `"`+tc.other+`"`, p)
		}
	}
}
