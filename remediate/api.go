package remediate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/apiresp"
)

// MaxBodyBytes is the largest request body the remediation API reads (413 above it).
const MaxBodyBytes = 64 << 10

// Handler serves the remediation API, in the Prometheus API's envelope:
//
//	GET  /api/v1/remediations?state=&incident=        list, oldest first
//	GET  /api/v1/remediations/{id}                    one, with its audit
//	POST /api/v1/remediations/{id}/approve            approve the step that waits (operate)
//	POST /api/v1/remediations/{id}/deny               deny it (operate)
//	POST /api/v1/remediations/plan?incident=ID        what would be done now; nothing is kept
//	GET  /api/v1/remediations/audit?after=&limit=     the audit, in order
//	POST /api/v1/remediations/pause?cluster=          pause the fleet or a cluster (operate)
//	POST /api/v1/remediations/resume?cluster=         lift it (operate)
//	GET  /api/v1/remediations/paused                  what is paused, by whom
//
// Like the incident API it sits behind the access layer, which checks the role; here a
// team-scoped identity sees and decides only remediations of its clusters (others are 404),
// and nothing is approved, denied, paused or resumed without an identity (403), nor by a
// process that does not lead remediation (503, with leader election).
func (e *Engine) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/remediations", e.serveList)
	mux.HandleFunc("GET /api/v1/remediations/{id}", e.serveGet)
	mux.HandleFunc("POST /api/v1/remediations/{id}/approve", func(w http.ResponseWriter, r *http.Request) { e.serveDecide(w, r, true) })
	mux.HandleFunc("POST /api/v1/remediations/{id}/deny", func(w http.ResponseWriter, r *http.Request) { e.serveDecide(w, r, false) })
	mux.HandleFunc("POST /api/v1/remediations/plan", e.servePlan)
	mux.HandleFunc("GET /api/v1/remediations/audit", e.serveAudit)
	mux.HandleFunc("POST /api/v1/remediations/pause", func(w http.ResponseWriter, r *http.Request) { e.servePause(w, r, true) })
	mux.HandleFunc("POST /api/v1/remediations/resume", func(w http.ResponseWriter, r *http.Request) { e.servePause(w, r, false) })
	mux.HandleFunc("GET /api/v1/remediations/paused", func(w http.ResponseWriter, _ *http.Request) { apiresp.Success(w, http.StatusOK, e.Paused()) })
	return mux
}

func (e *Engine) caller(r *http.Request) (correlate.Caller, bool) {
	return correlate.CallerOf(e.o.Identify, r)
}

func (e *Engine) serveList(w http.ResponseWriter, r *http.Request) {
	id, _ := e.caller(r)
	q := r.URL.Query()
	all, err := e.o.Store.List()
	if err != nil {
		apiresp.Error(w, http.StatusInternalServerError, "internal", err)
		return
	}
	out := []*Remediation{}
	for _, rem := range all {
		if s := q.Get("state"); s != "" && rem.State != s && !(s == "active" && !Final(rem.State)) {
			continue
		}
		if inc := q.Get("incident"); inc != "" && rem.IncidentID != inc {
			continue
		}
		if id.AllowsAny(rem.Clusters) {
			out = append(out, rem)
		}
	}
	apiresp.Success(w, http.StatusOK, out)
}

// Detail is one remediation with its audit.
type Detail struct {
	*Remediation
	Audit []AuditEntry `json:"audit"`
}

func (e *Engine) serveGet(w http.ResponseWriter, r *http.Request) {
	id, _ := e.caller(r)
	rem, err := e.o.Store.Get(r.PathValue("id"))
	if err == nil && !id.AllowsAny(rem.Clusters) {
		err = ErrNotFound
	}
	if err != nil {
		e.answer(w, nil, err)
		return
	}
	audit, err := e.o.Store.AuditLog(0, rem.ID, 0)
	if err != nil {
		apiresp.Error(w, http.StatusInternalServerError, "internal", err)
		return
	}
	apiresp.Success(w, http.StatusOK, Detail{Remediation: rem, Audit: audit})
}

func (e *Engine) serveDecide(w http.ResponseWriter, r *http.Request, approve bool) {
	id, ok := e.caller(r)
	if !ok {
		apiresp.Error(w, http.StatusForbidden, "forbidden", errors.New("no authenticated identity: approving and denying need one"))
		return
	}
	if e.NotLeading(w) {
		return
	}
	var req struct {
		Comment string `json:"comment"`
	}
	if !DecodeBody(w, r, &req) {
		return
	}
	rid := r.PathValue("id")
	if rem, err := e.o.Store.Get(rid); err != nil || !id.AllowsAny(rem.Clusters) {
		e.answer(w, nil, ErrNotFound)
		return
	}
	rem, err := e.Decide(rid, id.String(), approve, req.Comment)
	e.answer(w, rem, err)
}

func (e *Engine) servePlan(w http.ResponseWriter, r *http.Request) {
	id, _ := e.caller(r)
	incID := r.URL.Query().Get("incident")
	if incID == "" {
		apiresp.Error(w, http.StatusBadRequest, "bad_data", errors.New("incident: name an active incident's ID"))
		return
	}
	var inc *correlate.Incident
	for _, i := range e.o.Incidents() {
		if i.ID == incID && id.AllowsAny(i.Clusters) {
			inc = i
		}
	}
	if inc == nil {
		apiresp.Error(w, http.StatusNotFound, "not_found", fmt.Errorf("incident %s is not active", incID))
		return
	}
	plan, err := e.Plan(r.Context(), inc)
	switch {
	case err != nil:
		apiresp.Error(w, http.StatusUnprocessableEntity, "execution", err)
	case plan == nil:
		apiresp.Error(w, http.StatusUnprocessableEntity, "execution", fmt.Errorf("incident %s: the playbook finds nothing to act on now", incID))
	default:
		if err := e.o.Store.Audit(e.entry(plan, "", EventPlan, id.String(), "asked for (not kept): "+planSummary(plan))); err != nil {
			apiresp.Error(w, http.StatusInternalServerError, "internal", err)
			return
		}
		apiresp.Success(w, http.StatusOK, plan)
	}
}

func (e *Engine) serveAudit(w http.ResponseWriter, r *http.Request) {
	id, _ := e.caller(r)
	q := r.URL.Query()
	var after uint64
	limit := 1000
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			apiresp.Error(w, http.StatusBadRequest, "bad_data", fmt.Errorf("after: %q is not a sequence number", s))
			return
		}
		after = n
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			apiresp.Error(w, http.StatusBadRequest, "bad_data", fmt.Errorf("limit: %q is not a number from 1 to 10000", s))
			return
		}
		limit = n
	}
	entries, err := e.o.Store.AuditLog(after, "", limit)
	if err != nil {
		apiresp.Error(w, http.StatusInternalServerError, "internal", err)
		return
	}
	// A team sees the entries of its clusters' remediations only.
	clusters := map[string][]string{}
	out := []AuditEntry{}
	for _, en := range entries {
		if en.RemediationID != "" {
			cl, ok := clusters[en.RemediationID]
			if !ok {
				if rem, err := e.o.Store.Get(en.RemediationID); err == nil {
					cl = rem.Clusters
				}
				clusters[en.RemediationID] = cl
			}
			if !id.AllowsAny(cl) {
				continue
			}
		} else if !id.AllowsAny(nil) {
			continue
		}
		out = append(out, en)
	}
	apiresp.Success(w, http.StatusOK, out)
}

func (e *Engine) servePause(w http.ResponseWriter, r *http.Request, pause bool) {
	id, ok := e.caller(r)
	if !ok {
		apiresp.Error(w, http.StatusForbidden, "forbidden", errors.New("no authenticated identity: pausing and resuming need one"))
		return
	}
	if e.NotLeading(w) {
		return
	}
	cluster := r.URL.Query().Get("cluster")
	if cluster == "" && !id.AllowsAny(nil) {
		apiresp.Error(w, http.StatusForbidden, "forbidden", errors.New("cluster: a team-scoped identity pauses its own clusters, not the fleet"))
		return
	}
	if cluster != "" && !id.AllowsAny([]string{cluster}) {
		apiresp.Error(w, http.StatusNotFound, "not_found", fmt.Errorf("cluster %q is not known", cluster))
		return
	}
	var err error
	if pause {
		err = e.Pause(cluster, id.String())
	} else {
		err = e.Resume(cluster, id.String())
	}
	if err != nil {
		e.answer(w, nil, err)
		return
	}
	apiresp.Success(w, http.StatusOK, e.Paused())
}

// DecodeBody reads an optional JSON object body of at most MaxBodyBytes with known fields only.
func DecodeBody(w http.ResponseWriter, r *http.Request, into any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			apiresp.Error(w, http.StatusRequestEntityTooLarge, "bad_data", fmt.Errorf("request body exceeds the limit of %d bytes", MaxBodyBytes))
			return false
		}
		apiresp.Error(w, http.StatusBadRequest, "bad_data", fmt.Errorf("read request body: %w", err))
		return false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		apiresp.Error(w, http.StatusBadRequest, "bad_data", fmt.Errorf("body: %w", err))
		return false
	}
	if dec.More() {
		apiresp.Error(w, http.StatusBadRequest, "bad_data", errors.New("body: more than one JSON value"))
		return false
	}
	return true
}

func (e *Engine) answer(w http.ResponseWriter, rem *Remediation, err error) {
	switch {
	case err == nil:
		apiresp.Success(w, http.StatusOK, rem)
	case errors.Is(err, ErrNotFound):
		apiresp.Error(w, http.StatusNotFound, "not_found", err)
	case errors.Is(err, ErrConflict):
		apiresp.Error(w, http.StatusConflict, "conflict", err)
	case errors.Is(err, ErrHandedOver):
		apiresp.Error(w, http.StatusServiceUnavailable, "unavailable", err)
	default:
		e.logger.Error("remediation API", "err", err)
		apiresp.Error(w, http.StatusInternalServerError, "internal", err)
	}
}
