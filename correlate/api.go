package correlate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/fleetwatch/fleetwatch/internal/apiresp"
)

// Caller is who sent a request to the incident API, as the access layer in front of every
// handler (internal/access) established it: access.Identity is one. correlate declares it
// rather than importing internal/access, which imports (through internal/clusterauth,
// internal/config and schedule) correlate itself.
type Caller interface {
	// String is the actor name recorded for what the caller changes.
	String() string
	// AllowsAny says whether the caller may see something that touches one of clusters: a
	// team-scoped caller sees an incident when one of its clusters is affected.
	AllowsAny(clusters []string) bool
}

// IdentifyFunc returns the Caller the access layer put into a request's context, and false
// if there is none. With access.FromContext:
//
//	func(ctx context.Context) (correlate.Caller, bool) { return access.FromContext(ctx) }
type IdentifyFunc func(ctx context.Context) (Caller, bool)

// everyone is the caller of a request without identity for what may be read without one:
// unscoped, as access.FromContext answers then.
type everyone struct{}

func (everyone) String() string            { return "anonymous" }
func (everyone) AllowsAny(_ []string) bool { return true }

// CallerOf returns the identity identify finds in r's context, or an unscoped anonymous
// caller and false (identify nil or finding none). The remediation API uses it too.
func CallerOf(identify IdentifyFunc, r *http.Request) (Caller, bool) {
	if identify != nil {
		if c, ok := identify(r.Context()); ok && c != nil {
			return c, true
		}
	}
	return everyone{}, false
}

// caller returns the request's identity, or everyone and false.
func (e *Engine) caller(r *http.Request) (Caller, bool) { return CallerOf(e.o.Identify, r) }

// Incident API limits.
const (
	// DefaultPageLimit and MaxPageLimit bound how many incidents one page of a listing from
	// the store holds.
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
	// MaxBodyBytes is the largest request body the incident API reads (413 above it); an
	// acknowledgement is a few bytes.
	MaxBodyBytes = 64 << 10
	// HeaderNextPageToken carries the token of the next page of a listing from the store,
	// absent on the last page. It is a header so that the answer stays the Prometheus API's
	// envelope with `data` an array, as it always was.
	HeaderNextPageToken = "X-Next-Page-Token"
)

// Handler serves the incident API under /api/v1/incidents, in the Prometheus API's envelope
// ({"status": "success", "data": ...} or {"status": "error", "errorType", "error"}):
//
//	GET  /api/v1/incidents?state=&cluster=&severity=&since=&limit=&page_token=   list, newest first
//	GET  /api/v1/incidents/{id}                               one, with its alerts
//	POST /api/v1/incidents/{id}/ack                           acknowledge
//	POST /api/v1/incidents/{id}/resolve                       resolve by hand
//
// It sits behind the access layer (internal/access), which puts the caller's identity into
// the request context (read here with Options.Identify) and refuses callers without the role
// an endpoint needs (read; operate to acknowledge or resolve). The handler holds everything
// to that identity: a team-scoped identity lists, reads and changes only incidents that
// touch one of its clusters (any other is 404, as if it did not exist), the actor recorded is
// the identity, and nothing is acknowledged or resolved without an identity (403), even if
// the access layer in front were missing.
func (e *Engine) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/incidents", e.list)
	mux.HandleFunc("GET /api/v1/incidents/{id}", e.get)
	mux.HandleFunc("POST /api/v1/incidents/{id}/ack", e.ack)
	mux.HandleFunc("POST /api/v1/incidents/{id}/resolve", e.resolve)
	return mux
}

func (e *Engine) list(w http.ResponseWriter, r *http.Request) {
	id, _ := e.caller(r)
	q := r.URL.Query()
	f := Filter{State: q.Get("state"), Cluster: q.Get("cluster"), Severity: q.Get("severity"), Allow: id.AllowsAny}
	switch f.State {
	case "", "active", StateOpen, StateAcknowledged, StateResolved:
	default:
		apiresp.Error(w, http.StatusBadRequest, "bad_data", fmt.Errorf("state: %q is not one of active, open, acknowledged, resolved", f.State))
		return
	}
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			apiresp.Error(w, http.StatusBadRequest, "bad_data", fmt.Errorf("since: %q is not an RFC 3339 time", s))
			return
		}
		f.Since = t
	}
	limit := DefaultPageLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageLimit {
			apiresp.Error(w, http.StatusBadRequest, "bad_data", fmt.Errorf("limit: %q is not a number from 1 to %d", s, MaxPageLimit))
			return
		}
		limit = n
	}
	var incs []*Incident
	switch f.State {
	case "active", StateOpen, StateAcknowledged:
		// Active incidents are in memory: no need to read the history. These lists are
		// complete, never paged (limit and page_token do not apply).
		incs = e.activeIncidents(f)
	default:
		var next string
		var err error
		incs, next, err = e.o.Store.IncidentsPage(f, limit, q.Get("page_token"))
		if errors.Is(err, ErrBadPageToken) {
			apiresp.Error(w, http.StatusBadRequest, "bad_data", fmt.Errorf("page_token: %w", err))
			return
		}
		if err != nil {
			apiresp.Error(w, http.StatusInternalServerError, "internal", err)
			return
		}
		if next != "" {
			w.Header().Set(HeaderNextPageToken, next)
		}
	}
	if incs == nil {
		incs = []*Incident{}
	}
	apiresp.Success(w, http.StatusOK, incs)
}

func (e *Engine) get(w http.ResponseWriter, r *http.Request) {
	id, _ := e.caller(r)
	inc, err := e.o.Store.Incident(r.PathValue("id"))
	if err == nil && !id.AllowsAny(inc.Clusters) {
		// Another team's incident: answered exactly as an unknown one.
		err = fmt.Errorf("incident %s: %w", r.PathValue("id"), ErrNotFound)
	}
	if errors.Is(err, ErrNotFound) {
		apiresp.Error(w, http.StatusNotFound, "not_found", err)
		return
	}
	if err != nil {
		apiresp.Error(w, http.StatusInternalServerError, "internal", err)
		return
	}
	apiresp.Success(w, http.StatusOK, inc)
}

// ack acknowledges as the authenticated identity. The body may be empty; an older client's
// {"by": "<who>"} is accepted when it names that identity, and refused (400) when it names
// anyone else, rather than ignored: a caller that believes it acts for someone else learns
// that it does not, instead of finding another name recorded than the one it sent.
func (e *Engine) ack(w http.ResponseWriter, r *http.Request) {
	id, ok := e.actor(w, r)
	if !ok {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	if len(bytes.TrimSpace(body)) > 0 {
		var req struct {
			By *string `json:"by"`
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err := dec.Decode(&req)
		if err == nil && dec.More() {
			err = errors.New("more than one JSON value")
		}
		if err != nil {
			apiresp.Error(w, http.StatusBadRequest, "bad_data", fmt.Errorf("body: want nothing, {} or {\"by\": %q}: %w", id.String(), err))
			return
		}
		if req.By != nil && *req.By != id.String() {
			apiresp.Error(w, http.StatusBadRequest, "bad_data", fmt.Errorf(`body: "by" is %q, but the actor is the authenticated identity %q: omit "by"`, *req.By, id.String()))
			return
		}
	}
	inc, err := e.acknowledgeAs(r.PathValue("id"), id.String(), id.AllowsAny)
	e.answer(w, inc, err)
}

// resolve resolves by hand as the authenticated identity. Its body, if any, is not read
// beyond the limit.
func (e *Engine) resolve(w http.ResponseWriter, r *http.Request) {
	id, ok := e.actor(w, r)
	if !ok {
		return
	}
	if _, ok := readBody(w, r); !ok {
		return
	}
	inc, err := e.resolveAs(r.PathValue("id"), id.AllowsAny)
	if err == nil {
		e.logger.Info("incident resolved by hand", "id", inc.ID, "by", id.String())
	}
	e.answer(w, inc, err)
}

// actor returns the identity that changes an incident, or answers 403: nothing acts without
// an identity. Whether it may operate is the access layer's to check (the role is not
// visible through Caller).
func (e *Engine) actor(w http.ResponseWriter, r *http.Request) (Caller, bool) {
	id, ok := e.caller(r)
	if !ok {
		apiresp.Error(w, http.StatusForbidden, "forbidden", errors.New("no authenticated identity: acknowledging and resolving need one"))
		return nil, false
	}
	return id, true
}

// readBody reads a request body of at most MaxBodyBytes, or answers 413 naming the limit (or
// 400 if the body could not be read).
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			apiresp.Error(w, http.StatusRequestEntityTooLarge, "bad_data", fmt.Errorf("request body exceeds the limit of %d bytes", MaxBodyBytes))
			return nil, false
		}
		apiresp.Error(w, http.StatusBadRequest, "bad_data", fmt.Errorf("read request body: %w", err))
		return nil, false
	}
	return body, true
}

// answer writes the result of a change: unknown (or not the caller's) 404, not active 409,
// anything else (the store failed) 500.
func (e *Engine) answer(w http.ResponseWriter, inc *Incident, err error) {
	switch {
	case err == nil:
		apiresp.Success(w, http.StatusOK, inc)
	case errors.Is(err, ErrNotFound):
		apiresp.Error(w, http.StatusNotFound, "not_found", err)
	case errors.Is(err, ErrNotActive):
		apiresp.Error(w, http.StatusConflict, "conflict", err)
	default:
		e.logger.Error("changing an incident", "err", err)
		apiresp.Error(w, http.StatusInternalServerError, "internal", err)
	}
}
