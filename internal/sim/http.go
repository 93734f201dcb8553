package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

const maxScenarioBytes = 1 << 20

// Handler serves the fleet lab's HTTP API:
//
//	GET  /                                   a plain-text index of the endpoints
//	GET  /clusters                           the truth per cluster (JSON)
//	GET  /clusters/{name}/metrics            kube-state-metrics v2 series of a cluster
//	GET  /clusters/{name}/apiserver/metrics  200 while the control plane is up, 503 while down
//	POST /clusters/{name}/recover            back to baseline ("all" for every cluster)
//	     /control-planes/...                 with real control planes: their endpoints and faults
//	GET  /scenarios                          scenarios and their state
//	POST /scenarios                          upload a scenario (YAML body)
//	GET  /scenarios/{name}                   one scenario's status and steps
//	POST /scenarios/{name}/start|stop|step   run, stop (and recover) or step a scenario
//
// Both metrics endpoints of a silent cluster hold the request until the client gives up.
// Errors are JSON: {"error": "...", "line": n, "step": i, "field": "..."}.
func (s *Sim) Handler() http.Handler { return s.mux }

func (s *Sim) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.handleIndex)
	mux.HandleFunc("GET /clusters", s.handleClusters)
	mux.HandleFunc("GET /clusters/{name}/metrics", s.handleMetrics(func(e *clusterEndpoints) http.Handler { return e.ksm }, false))
	mux.HandleFunc("GET /clusters/{name}/apiserver/metrics", s.handleMetrics(func(e *clusterEndpoints) http.Handler { return e.apiserver }, true))
	mux.HandleFunc("POST /clusters/{name}/recover", s.handleRecover)
	mux.HandleFunc("GET /scenarios", s.handleScenarios)
	mux.HandleFunc("POST /scenarios", s.handleUpload)
	mux.HandleFunc("GET /scenarios/{name}", s.handleScenario(func(n string) (ScenarioStatus, error) { return s.ScenarioStatus(n) }, http.StatusOK))
	mux.HandleFunc("POST /scenarios/{name}/start", s.handleScenario(s.StartScenario, http.StatusOK))
	mux.HandleFunc("POST /scenarios/{name}/stop", s.handleScenario(s.StopScenario, http.StatusOK))
	mux.HandleFunc("POST /scenarios/{name}/step", s.handleScenario(s.StepScenario, http.StatusOK))
	mux.HandleFunc("/control-planes/", s.handleControlPlanes)
	mux.HandleFunc("/control-planes", s.handleControlPlanes)
	return mux
}

func (s *Sim) handleIndex(w http.ResponseWriter, _ *http.Request) {
	var b strings.Builder
	b.WriteString("fleetwatch fleet lab\n\n")
	for _, c := range s.opts.Clusters {
		fmt.Fprintf(&b, "GET  /clusters/%s/metrics\nGET  /clusters/%s/apiserver/metrics\n", c, c)
	}
	b.WriteString("GET  /clusters\nGET  /scenarios\nPOST /scenarios\nGET  /scenarios/{name}\nPOST /scenarios/{name}/start\nPOST /scenarios/{name}/stop\nPOST /scenarios/{name}/step\nPOST /clusters/{name}/recover\n")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, b.String())
}

// ScrapeConfigs is the scrape_configs part of a Prometheus configuration for one simulated
// cluster served at simAddr (host:port): its kube-state-metrics series (job
// kube-state-metrics) and its control-plane signal (job apiserver).
func ScrapeConfigs(cluster, simAddr string) string {
	return fmt.Sprintf(`  - job_name: kube-state-metrics
    metrics_path: /clusters/%[1]s/metrics
    static_configs: [{targets: ['%[2]s']}]
  - job_name: apiserver
    metrics_path: /clusters/%[1]s/apiserver/metrics
    static_configs: [{targets: ['%[2]s']}]
`, cluster, simAddr)
}

// handleControlPlanes hands /control-planes to the actuator, if there is one.
func (s *Sim) handleControlPlanes(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	a := s.actuator
	s.mu.RUnlock()
	if a == nil {
		http.Error(w, "this fleet lab has no control planes (fleetwatch sim --control-planes)", http.StatusNotFound)
		return
	}
	a.Handler().ServeHTTP(w, r)
}

func (s *Sim) handleClusters(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Truth())
}

func (s *Sim) handleMetrics(pick func(*clusterEndpoints) http.Handler, apiserver bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		s.mu.RLock()
		real := s.actuator != nil
		s.mu.RUnlock()
		if real {
			http.Error(w, "cluster "+name+" has a real control plane: scrape its kube-state-metrics and API server (GET /control-planes)", http.StatusNotFound)
			return
		}
		e, ok := s.endpoints[name]
		if !ok {
			writeError(w, fmt.Errorf("%w %q", ErrUnknownCluster, name))
			return
		}
		c := s.byName[name]
		if !s.holdWhileSilent(w, r, c) {
			return
		}
		if apiserver {
			s.mu.RLock()
			up := c.api.up
			s.mu.RUnlock()
			if !up {
				http.Error(w, "control plane of "+name+" is down", http.StatusServiceUnavailable)
				return
			}
		}
		pick(e).ServeHTTP(w, r)
	}
}

// holdWhileSilent blocks while the cluster is silent, so that a scrape times out the way it
// does against a cluster that stopped answering. It returns false if the request is over.
func (s *Sim) holdWhileSilent(w http.ResponseWriter, r *http.Request, c *cluster) bool {
	for {
		s.mu.RLock()
		silent, unsilenced := c.silent, c.unsilenced
		s.mu.RUnlock()
		if !silent {
			return true
		}
		select {
		case <-r.Context().Done():
			return false
		case <-s.closed:
			http.Error(w, "fleet lab is shutting down", http.StatusServiceUnavailable)
			return false
		case <-unsilenced:
		}
	}
}

func (s *Sim) handleRecover(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if name == "all" {
		name = ""
	}
	if err := s.Recover(name); err != nil {
		writeError(w, err)
		return
	}
	s.handleClusters(w, r)
}

func (s *Sim) handleScenarios(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Scenarios())
}

func (s *Sim) handleUpload(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxScenarioBytes))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{Error: "read scenario: " + err.Error()})
		return
	}
	sc, err := ParseScenario(data)
	if err != nil {
		writeError(w, err)
		return
	}
	created, err := s.AddScenario(sc, "uploaded")
	if err != nil {
		writeError(w, err)
		return
	}
	st, err := s.ScenarioStatus(sc.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	writeJSON(w, code, st)
}

func (s *Sim) handleScenario(f func(string) (ScenarioStatus, error), code int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		st, err := f(r.PathValue("name"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, code, st)
	}
}

type apiError struct {
	Error string `json:"error"`
	Line  int    `json:"line,omitempty"`
	Step  *int   `json:"step,omitempty"`
	Field string `json:"field,omitempty"`
}

func writeError(w http.ResponseWriter, err error) {
	body := apiError{Error: err.Error()}
	code := http.StatusInternalServerError
	var pe *ParseError
	var fe *FieldError
	switch {
	case errors.Is(err, ErrUnknownCluster) && !errors.As(err, &fe), errors.Is(err, ErrUnknownScenario):
		code = http.StatusNotFound
	case errors.Is(err, ErrScenarioRunning), errors.Is(err, ErrScenarioFinished):
		code = http.StatusConflict
	case errors.As(err, &pe):
		code = http.StatusBadRequest
		body.Line = pe.Line
	case errors.As(err, &fe):
		code = http.StatusBadRequest
		body.Field = fe.Field
		if fe.Step >= 0 {
			step := fe.Step
			body.Step = &step
		}
	}
	writeJSON(w, code, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
