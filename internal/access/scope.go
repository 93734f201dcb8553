package access

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/prometheus-community/prom-label-proxy/injectproxy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/fleetwatch/fleetwatch/internal/config"
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
	m, err := ClusterMatcher(config.ClusterLabel, id.clusters)
	if err != nil {
		return err
	}
	var (
		param   string
		enforce func(string) (string, error)
	)
	switch ep.Scope {
	case ScopeQuery:
		param, enforce = "query", func(q string) (string, error) { return EnforceQuery(q, m) }
	case ScopeMatch, ScopeFederate:
		param, enforce = "match[]", func(sel string) (string, error) { return enforceSelector(sel, m) }
	case ScopeRules, ScopeAlerts:
		filterAnswer(w, r, next, ep.Scope, config.ClusterLabel, id)
		return nil
	default:
		return fmt.Errorf("%s cannot be limited to clusters", ep.Name)
	}
	// Without any selector (labels, label values), the identity's clusters are the selector;
	// /federate without match[] federates nothing, as in Prometheus.
	var orElse string
	if ep.Scope == ScopeMatch {
		orElse = "{" + m.String() + "}"
	}
	if err := rewriteParam(r, param, enforce, orElse); err != nil {
		writeError(w, http.StatusBadRequest, "bad_data", err.Error())
		return nil
	}
	next.ServeHTTP(w, r)
	return nil
}

// rewriteParam replaces every value of param, in the URL's query and in a form body alike, so
// that whichever the handler reads is scoped; when neither holds param and orElse is set, the
// query gets orElse. The handler parses the rewritten request.
func rewriteParam(r *http.Request, param string, enforce func(string) (string, error), orElse string) error {
	q := r.URL.Query()
	var body url.Values
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/x-www-form-urlencoded" &&
		(r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch) {
		if err := r.ParseForm(); err != nil {
			return err
		}
		body = r.PostForm
	}
	for _, v := range []url.Values{q, body} {
		for i, val := range v[param] {
			out, err := enforce(val)
			if err != nil {
				return fmt.Errorf("invalid parameter %q: %w", param, err)
			}
			v[param][i] = out
		}
	}
	if orElse != "" && len(q[param]) == 0 && len(body[param]) == 0 {
		q.Set(param, orElse)
	}
	r.URL.RawQuery = q.Encode()
	if body != nil {
		enc := body.Encode()
		r.Body = io.NopCloser(strings.NewReader(enc))
		r.ContentLength = int64(len(enc))
		r.Header.Set("Content-Length", strconv.Itoa(len(enc)))
	}
	r.Form, r.PostForm = nil, nil
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
