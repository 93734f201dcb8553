package access

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/prometheus-community/prom-label-proxy/injectproxy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// ClusterMatcher is the matcher that limits a selector to clusters: always a regular
// expression, even for one cluster, so that injectproxy keeps a selector's own cluster matcher
// beside it (a team's query for another team's cluster then selects nothing, instead of being
// silently redirected to its own).
func ClusterMatcher(label string, clusters []string) (*labels.Matcher, error) {
	quoted := make([]string, len(clusters))
	for i, c := range clusters {
		quoted[i] = regexp.QuoteMeta(c)
	}
	return labels.NewMatcher(labels.MatchRegexp, label, strings.Join(quoted, "|"))
}

// EnforceQuery injects m into every selector of a PromQL expression with prom-label-proxy's
// enforcer. An expression the enforcer cannot walk is an error, never passed on unscoped.
func EnforceQuery(q string, m *labels.Matcher) (out string, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, err = "", fmt.Errorf("the query cannot be limited to your clusters: %v", p)
		}
	}()
	return injectproxy.NewPromQLEnforcer(false, m).Enforce(q)
}

// enforceSelector adds m to one series selector (a match[] value).
func enforceSelector(sel string, m *labels.Matcher) (string, error) {
	ms, err := parser.ParseMetricSelector(sel)
	if err != nil {
		return "", err
	}
	ms = append(ms, m)
	parts := make([]string, len(ms))
	for i, x := range ms {
		parts[i] = x.String()
	}
	return "{" + strings.Join(parts, ",") + "}", nil
}

// errBadParam is a parameter that cannot be scoped because it is invalid: a 400, not a refusal.
type errBadParam struct{ err error }

func (e errBadParam) Error() string { return e.err.Error() }

// scopeRequest serves r for a team-scoped identity: it rewrites what selects series, or
// filters what the handler answers, then calls next. It returns an error for a refusal; it
// answers bad parameters (400) itself.
func (g *Guard) scopeRequest(ep Endpoint, id Identity, w http.ResponseWriter, r *http.Request, next http.Handler) error {
	switch ep.Scope {
	case ScopeNone, ScopeHandler:
		next.ServeHTTP(w, r)
		return nil
	case ScopeDeny:
		return fmt.Errorf("%s shows the whole fleet; %s is limited to the clusters %s", ep.Name, id, strings.Join(id.clusters, ", "))
	}
	if len(id.clusters) == 0 {
		return fmt.Errorf("%s is limited to clusters, and its cluster_selector matches none", id)
	}
	m, err := ClusterMatcher(g.label, id.clusters)
	if err != nil {
		return err
	}
	var rewrite func(url.Values) error
	switch ep.Scope {
	case ScopeQuery:
		rewrite = func(v url.Values) error {
			for i, q := range v["query"] {
				out, err := EnforceQuery(q, m)
				if err != nil {
					return errBadParam{fmt.Errorf("invalid parameter \"query\": %w", err)}
				}
				v["query"][i] = out
			}
			return nil
		}
	case ScopeMatch, ScopeFederate:
		rewrite = func(v url.Values) error {
			for i, sel := range v["match[]"] {
				out, err := enforceSelector(sel, m)
				if err != nil {
					return errBadParam{fmt.Errorf("invalid parameter \"match[]\": %w", err)}
				}
				v["match[]"][i] = out
			}
			return nil
		}
	case ScopeRules, ScopeAlerts:
		filterAnswer(w, r, next, ep.Scope, g.label, id)
		return nil
	default:
		return fmt.Errorf("%s cannot be limited to clusters", ep.Name)
	}
	if err := rewriteForm(r, rewrite); err != nil {
		writeError(w, http.StatusBadRequest, "bad_data", err.Error())
		return nil
	}
	if ep.Scope == ScopeMatch && len(r.Form["match[]"]) == 0 {
		// No selector at all (labels, label values): the identity's clusters are the selector.
		q := r.URL.Query()
		q.Add("match[]", "{"+m.String()+"}")
		r.URL.RawQuery = q.Encode()
		r.Form = nil
		if r.PostForm == nil {
			r.PostForm = url.Values{}
		}
	}
	next.ServeHTTP(w, r)
	return nil
}

// rewriteForm applies f to the URL's query and, for a form POST, to the body, so that
// whichever the handler reads is scoped; the parsed forms are reset for the handler to
// parse the rewritten ones.
func rewriteForm(r *http.Request, f func(url.Values) error) error {
	q := r.URL.Query()
	if err := f(q); err != nil {
		return err
	}
	r.URL.RawQuery = q.Encode()
	if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		r.Form, r.PostForm = nil, nil
		if err := r.ParseForm(); err != nil {
			return errBadParam{err}
		}
		pf := r.PostForm
		if err := f(pf); err != nil {
			return err
		}
		body := pf.Encode()
		r.Body = io.NopCloser(strings.NewReader(body))
		r.ContentLength = int64(len(body))
		r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	r.Form, r.PostForm = nil, nil
	if err := r.ParseForm(); err != nil {
		return errBadParam{err}
	}
	// ParseForm consumed the rewritten body; give it back for handlers that read it again.
	if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		body := r.PostForm.Encode()
		r.Body = io.NopCloser(strings.NewReader(body))
	}
	return nil
}

// filterAnswer serves the request into a buffer and passes on only what the identity may
// see: alerts of its clusters; alerting rules with such alerts (holding only those); rules
// labelled with one of its clusters. These are prom-label-proxy's filters (with active alerts).
func filterAnswer(w http.ResponseWriter, r *http.Request, next http.Handler, scope Scope, label string, id Identity) {
	rec := &recorder{header: http.Header{}, code: http.StatusOK}
	// The answer is read here: ask for it uncompressed.
	r.Header.Del("Accept-Encoding")
	next.ServeHTTP(rec, r)
	for k, v := range rec.header {
		if k != "Content-Length" {
			w.Header()[k] = v
		}
	}
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	if rec.code != http.StatusOK {
		// An error answer holds no cluster's data: pass it on.
		w.WriteHeader(rec.code)
		_, _ = w.Write(rec.buf.Bytes())
		return
	}
	if err := json.Unmarshal(rec.buf.Bytes(), &env); err != nil || env.Status != "success" {
		// Never pass on what could not be filtered.
		writeError(w, http.StatusInternalServerError, "internal", "limiting the answer to your clusters: the answer could not be read")
		return
	}
	var (
		data any
		err  error
	)
	if scope == ScopeAlerts {
		data, err = filterAlerts(env.Data, label, id)
	} else {
		data, err = filterRules(env.Data, label, id)
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "limiting the answer to your clusters: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": data})
}

type alertJSON struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (a alertJSON) in(label string, id Identity) bool {
	c, ok := a.Labels[label]
	return ok && id.AllowsCluster(c)
}

func filterAlerts(raw json.RawMessage, label string, id Identity) (any, error) {
	var data struct {
		Alerts []json.RawMessage `json:"alerts"`
	}
	if err := json.Unmarshal(raw, &data); err != nil {
		return nil, err
	}
	kept := []json.RawMessage{}
	for _, a := range data.Alerts {
		var al alertJSON
		if err := json.Unmarshal(a, &al); err != nil {
			return nil, err
		}
		if al.in(label, id) {
			kept = append(kept, a)
		}
	}
	return map[string]any{"alerts": kept}, nil
}

func filterRules(raw json.RawMessage, label string, id Identity) (any, error) {
	var data struct {
		Groups []map[string]json.RawMessage `json:"groups"`
	}
	if err := json.Unmarshal(raw, &data); err != nil {
		return nil, err
	}
	groups := []map[string]json.RawMessage{}
	for _, g := range data.Groups {
		var rules []map[string]json.RawMessage
		if err := json.Unmarshal(g["rules"], &rules); err != nil {
			return nil, err
		}
		var kept []map[string]json.RawMessage
		for _, rule := range rules {
			var ls map[string]string
			if rule["labels"] != nil {
				if err := json.Unmarshal(rule["labels"], &ls); err != nil {
					return nil, err
				}
			}
			if c, ok := ls[label]; ok && id.AllowsCluster(c) {
				kept = append(kept, rule)
				continue
			}
			if string(rule["type"]) != `"alerting"` || rule["alerts"] == nil {
				continue
			}
			var alerts []json.RawMessage
			if err := json.Unmarshal(rule["alerts"], &alerts); err != nil {
				return nil, err
			}
			var mine []json.RawMessage
			state := "inactive"
			for _, a := range alerts {
				var al alertJSON
				if err := json.Unmarshal(a, &al); err != nil {
					return nil, err
				}
				if !al.in(label, id) {
					continue
				}
				mine = append(mine, a)
				if al.State == "firing" || state == "inactive" {
					state = al.State
				}
			}
			if len(mine) == 0 {
				continue
			}
			rule["alerts"], _ = json.Marshal(mine)
			rule["state"], _ = json.Marshal(state)
			kept = append(kept, rule)
		}
		if len(kept) == 0 {
			continue
		}
		g["rules"], _ = json.Marshal(kept)
		groups = append(groups, g)
	}
	return map[string]any{"groups": groups}, nil
}

// recorder keeps a handler's answer for filterAnswer.
type recorder struct {
	header http.Header
	code   int
	buf    bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(code int)        { r.code = code }
func (r *recorder) Write(b []byte) (int, error) { return r.buf.Write(b) }
