package kubelab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Handler serves the lab's control planes (sim.Actuator), under the simulator's
// /control-planes:
//
//	GET  /control-planes                                  every cluster's endpoints and faults (JSON)
//	POST /control-planes/{name}/apiserver/stop            stop its API server (control plane down)
//	POST /control-planes/{name}/apiserver/start           start it again, answering once it is ready
//	POST /control-planes/{name}/fleetwatch-path/cut       cut fleetwatch's path to its API server
//	POST /control-planes/{name}/fleetwatch-path/heal      restore it
//	POST /control-planes/{name}/fleetwatch-path/latency?duration=2s   slow it (0s: not any more)
//
// The cluster's Prometheus (a silent cluster) is the lab's to stop: it is not part of the
// cluster here.
func (f *Fleet) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /control-planes", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, f.Endpoints())
	})
	mux.HandleFunc("POST /control-planes/{name}/{part}/{op}", func(w http.ResponseWriter, r *http.Request) {
		c := f.byName[r.PathValue("name")]
		if c == nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("unknown cluster %q", r.PathValue("name"))})
			return
		}
		part, op := r.PathValue("part"), r.PathValue("op")
		switch part + "/" + op {
		case "apiserver/stop":
			c.CP.StopAPIServer()
		case "apiserver/start":
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
			defer cancel()
			if err := c.CP.StartAPIServer(ctx); err != nil {
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
				return
			}
		case "fleetwatch-path/cut":
			c.Proxy.Cut()
		case "fleetwatch-path/heal":
			c.Proxy.Heal()
		case "fleetwatch-path/latency":
			d, err := time.ParseDuration(r.URL.Query().Get("duration"))
			if err != nil || d < 0 {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("duration: want a duration such as 2s, got %q", r.URL.Query().Get("duration"))})
				return
			}
			c.Proxy.SetLatency(d)
		default:
			writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("unknown operation %s/%s (apiserver/stop|start, fleetwatch-path/cut|heal|latency)", part, op)})
			return
		}
		for _, e := range f.Endpoints() {
			if e.Name == c.Name {
				writeJSON(w, http.StatusOK, e)
				return
			}
		}
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
