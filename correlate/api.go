package correlate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/internal/apiresp"
)

// Handler serves the incident API under /api/v1/incidents, in the Prometheus API's envelope
// ({"status": "success", "data": ...} or {"status": "error", "errorType", "error"}):
//
//	GET  /api/v1/incidents?state=&cluster=&severity=&since=   list, newest first
//	GET  /api/v1/incidents/{id}                               one, with its alerts
//	POST /api/v1/incidents/{id}/ack      {"by": "alice"}      acknowledge
//	POST /api/v1/incidents/{id}/resolve                       resolve by hand
func (e *Engine) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/incidents", e.list)
	mux.HandleFunc("GET /api/v1/incidents/{id}", e.get)
	mux.HandleFunc("POST /api/v1/incidents/{id}/ack", e.ack)
	mux.HandleFunc("POST /api/v1/incidents/{id}/resolve", e.resolve)
	return mux
}

func (e *Engine) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := Filter{State: q.Get("state"), Cluster: q.Get("cluster"), Severity: q.Get("severity")}
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
	var incs []*Incident
	switch f.State {
	case "active", StateOpen, StateAcknowledged:
		// Active incidents are in memory: no need to decode the whole history.
		incs = e.activeIncidents(f)
	default:
		var err error
		if incs, err = e.o.Store.Incidents(f); err != nil {
			apiresp.Error(w, http.StatusInternalServerError, "internal", err)
			return
		}
	}
	if incs == nil {
		incs = []*Incident{}
	}
	apiresp.Success(w, http.StatusOK, incs)
}

func (e *Engine) get(w http.ResponseWriter, r *http.Request) {
	inc, err := e.o.Store.Incident(r.PathValue("id"))
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

func (e *Engine) ack(w http.ResponseWriter, r *http.Request) {
	var body struct {
		By string `json:"by"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		apiresp.Error(w, http.StatusBadRequest, "bad_data", fmt.Errorf("body: want {\"by\": \"<who>\"}: %w", err))
		return
	}
	if strings.TrimSpace(body.By) == "" {
		apiresp.Error(w, http.StatusBadRequest, "bad_data", errors.New(`body: "by" is required: who acknowledges`))
		return
	}
	e.lifecycle(w, r, func(id string) (*Incident, error) { return e.Acknowledge(id, body.By) })
}

func (e *Engine) resolve(w http.ResponseWriter, r *http.Request) {
	e.lifecycle(w, r, e.Resolve)
}

func (e *Engine) lifecycle(w http.ResponseWriter, r *http.Request, f func(string) (*Incident, error)) {
	id := r.PathValue("id")
	if _, err := e.o.Store.Incident(id); errors.Is(err, ErrNotFound) {
		apiresp.Error(w, http.StatusNotFound, "not_found", err)
		return
	}
	inc, err := f(id)
	if err != nil {
		apiresp.Error(w, http.StatusConflict, "conflict", err)
		return
	}
	apiresp.Success(w, http.StatusOK, inc)
}
