package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/fleetwatch/fleetwatch/internal/apiresp"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

// ReferenceRequest is the request the exported per-cluster score is computed for: one small
// replica, no constraints, spread not weighed (it depends on what else was picked).
var ReferenceRequest = Request{Replicas: 1, CPU: 0.1, Memory: 128 << 20, Mode: ModeDivided}

// Options configure a Service.
type Options struct {
	Source   Source
	Settings Settings
	// Publish, when set, receives every refreshed snapshot with its reference scores (for
	// example to write OCM AddOnPlacementScore objects). Its error is logged and counted.
	Publish    func(ctx context.Context, s *Snapshot, scores []ClusterScore) error
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// ClusterScore is a cluster's standing for ReferenceRequest, as exported.
type ClusterScore struct {
	Cluster     string
	Score       float64 // 0..100; 0 when not schedulable
	Schedulable bool
	Filtered    Reasons
	FreeCPU     float64
	FreeMemory  float64
}

// Service keeps a fresh snapshot, exports each cluster's score and headroom as metrics and
// answers placement and what-if requests over HTTP.
type Service struct {
	o      Options
	logger *slog.Logger
	kick   chan struct{}

	mtx      sync.RWMutex
	settings Settings
	snap     *Snapshot
	lastErr  error

	score, freeCPU, freeMem, schedulable *prometheus.GaugeVec
	snapTime                             prometheus.Gauge
	refreshFailures, publishFailures     prometheus.Counter
	decisions                            *prometheus.CounterVec
	decisionSeconds                      *prometheus.HistogramVec
}

// New validates the options and returns a Service; Run keeps its snapshot fresh.
func New(o Options) (*Service, error) {
	if o.Source.Query == nil {
		return nil, errors.New("schedule: Options.Source.Query is required")
	}
	if err := o.Settings.validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	f := promauto.With(o.Registerer)
	s := &Service{o: o, logger: o.Logger, settings: o.Settings, kick: make(chan struct{}, 1),
		score: f.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetwatch_cluster_placement_score",
			Help: "The cluster's placement score (0-100) for a reference replica of 100m CPU and 128Mi memory with the configured weights, spread not weighed; 0 when it is not a placement target."}, []string{"cluster"}),
		freeCPU: f.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetwatch_cluster_free_cpu_cores",
			Help: "CPU cores that placement may still put on the cluster before its requests reach the ceiling (min(1 - headroom, the saturation threshold))."}, []string{"cluster"}),
		freeMem: f.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetwatch_cluster_free_memory_bytes",
			Help: "Memory that placement may still put on the cluster before its requests reach the ceiling."}, []string{"cluster"}),
		schedulable: f.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetwatch_cluster_schedulable",
			Help: "1 when the cluster passes every placement filter that does not depend on the workload (fresh data, healthy, room for the reference replica), else 0."}, []string{"cluster"}),
		snapTime: f.NewGauge(prometheus.GaugeOpts{Name: "fleetwatch_schedule_snapshot_timestamp_seconds",
			Help: "When the placement snapshot was last built, in Unix seconds."}),
		refreshFailures: f.NewCounter(prometheus.CounterOpts{Name: "fleetwatch_schedule_snapshot_failures_total",
			Help: "Placement snapshots that could not be built, or were built with a query failing."}),
		publishFailures: f.NewCounter(prometheus.CounterOpts{Name: "fleetwatch_schedule_publish_failures_total",
			Help: "Refreshes whose scores could not all be published (OCM AddOnPlacementScore)."}),
		decisions: f.NewCounterVec(prometheus.CounterOpts{Name: "fleetwatch_schedule_decisions_total",
			Help: "Placement and what-if requests answered, by kind and result (placed, unsatisfiable, absorbed, not_absorbed, bad_request, unavailable)."}, []string{"kind", "result"}),
		decisionSeconds: f.NewHistogramVec(prometheus.HistogramOpts{Name: "fleetwatch_schedule_decision_duration_seconds",
			Help:    "Time to compute a placement or what-if answer on the current snapshot (what-if includes its workload queries).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"kind"}),
	}
	for _, k := range []string{"placement", "whatif"} {
		s.decisionSeconds.WithLabelValues(k)
	}
	return s, nil
}

// validate checks the settings as loading fleetwatch.yml does; a Settings filled from a loaded
// Config always passes.
func (st Settings) validate() error {
	if err := st.Schedule.Validate(); err != nil {
		return err
	}
	return st.Pack.Validate()
}

// ApplySettings replaces the settings (on reload); Run refreshes the snapshot with them at once.
func (s *Service) ApplySettings(st Settings) error {
	if err := st.validate(); err != nil {
		return err
	}
	s.mtx.Lock()
	s.settings = st
	s.mtx.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return nil
}

// Run refreshes the snapshot every interval, and after ApplySettings, until ctx ends; while
// enabled (nil: always) returns false it does not refresh.
func (s *Service) Run(ctx context.Context, enabled func() bool) error {
	for {
		if enabled == nil || enabled() {
			if err := s.Refresh(ctx); err != nil && ctx.Err() == nil {
				s.logger.Warn("placement snapshot", "err", err)
			}
		}
		s.mtx.RLock()
		every := s.settings.interval()
		s.mtx.RUnlock()
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.kick:
			t.Stop()
		case <-t.C:
		}
	}
}

// Refresh builds a new snapshot now, updates the metrics and publishes the scores.
func (s *Service) Refresh(ctx context.Context) error {
	s.mtx.RLock()
	st := s.settings
	s.mtx.RUnlock()
	snap, err := s.o.Source.Snapshot(ctx, s.o.Now(), st)
	if err != nil {
		s.refreshFailures.Inc()
		s.mtx.Lock()
		s.lastErr = err
		s.mtx.Unlock()
		return err
	}
	if len(snap.Errors) > 0 {
		s.refreshFailures.Inc()
		err = fmt.Errorf("placement snapshot: %d queries failed: %v", len(snap.Errors), snap.Errors)
	}
	scores := ReferenceScores(snap, st.Schedule.Weights)
	s.score.Reset()
	s.freeCPU.Reset()
	s.freeMem.Reset()
	s.schedulable.Reset()
	for _, sc := range scores {
		s.score.WithLabelValues(sc.Cluster).Set(sc.Score)
		s.freeCPU.WithLabelValues(sc.Cluster).Set(sc.FreeCPU)
		s.freeMem.WithLabelValues(sc.Cluster).Set(sc.FreeMemory)
		s.schedulable.WithLabelValues(sc.Cluster).Set(b2f(sc.Schedulable))
	}
	s.snapTime.Set(float64(snap.At.UnixMilli()) / 1000)
	s.mtx.Lock()
	s.snap, s.lastErr = snap, err
	s.mtx.Unlock()
	if s.o.Publish != nil {
		if perr := s.o.Publish(ctx, snap, scores); perr != nil {
			s.publishFailures.Inc()
			s.logger.Warn("publish placement scores", "err", perr)
		}
	}
	return err
}

// ReferenceScores scores every cluster of the snapshot for ReferenceRequest.
func ReferenceScores(snap *Snapshot, w config.Weights) []ClusterScore {
	req := ReferenceRequest
	req.Weights = w
	req.Weights.Spread = 0
	if req.Weights.Sum() == 0 {
		req.Weights = config.DefaultWeights
		req.Weights.Spread = 0
	}
	d := snap.decide(&req, nil, false)
	out := make([]ClusterScore, 0, len(d.Clusters))
	for _, r := range d.Clusters {
		sc := ClusterScore{Cluster: r.Cluster, Schedulable: !r.filtered, Filtered: r.Filtered(), FreeCPU: r.FreeCPU, FreeMemory: r.FreeMemory}
		if sc.Schedulable {
			sc.Score = r.Scores.Total
		}
		out = append(out, sc)
	}
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// ErrUnavailable means there is no snapshot fresh enough to decide on.
var ErrUnavailable = errors.New("placement unavailable")

// current returns the snapshot and settings, or ErrUnavailable when the snapshot is missing or
// older than the staleness limit (refreshes keep failing).
func (s *Service) current() (*Snapshot, Settings, error) {
	s.mtx.RLock()
	defer s.mtx.RUnlock()
	if s.snap == nil {
		return nil, s.settings, fmt.Errorf("%w: no snapshot of the fleet yet (%v)", ErrUnavailable, s.lastErr)
	}
	if age := s.o.Now().Sub(s.snap.At); age > s.settings.StaleAfter()+s.settings.interval() {
		return nil, s.settings, fmt.Errorf("%w: the fleet snapshot is %s old (last refresh error: %v)", ErrUnavailable, age.Round(time.Second), s.lastErr)
	}
	return s.snap, s.settings, nil
}

// Snapshot returns the current snapshot (nil before the first refresh).
func (s *Service) Snapshot() *Snapshot {
	s.mtx.RLock()
	defer s.mtx.RUnlock()
	return s.snap
}

// Place decides a request on the current snapshot. Request.Weights of zero value take the
// configured weights.
func (s *Service) Place(r Request) (*Decision, error) {
	snap, st, err := s.current()
	if err != nil {
		return nil, err
	}
	if r.Weights == (config.Weights{}) {
		r.Weights = st.Schedule.Weights
	}
	return Decide(snap, r)
}

// WhatIf answers a what-if on the current snapshot, reading the failed clusters' workloads.
func (s *Service) WhatIf(ctx context.Context, r WhatIfRequest) (*WhatIfResult, error) {
	snap, st, err := s.current()
	if err != nil {
		return nil, err
	}
	if r.Weights == (config.Weights{}) {
		r.Weights = st.Schedule.Weights
	}
	if err := snap.ValidateWhatIf(&r); err != nil {
		return nil, err
	}
	ws, err := s.o.Source.Workloads(ctx, snap.At, r.Fail)
	if err != nil {
		return nil, err
	}
	return WhatIf(snap, r, ws)
}

// WhatIfNow answers a what-if for workloads the caller knows (a failover's, from the specs it
// kept) on a snapshot read now, whether placement's refresh runs or not: a failover decides
// on the fleet as it is, not as the last refresh saw it.
func (s *Service) WhatIfNow(ctx context.Context, fail []string, workloads []Workload) (*WhatIfResult, error) {
	s.mtx.RLock()
	st := s.settings
	s.mtx.RUnlock()
	snap, err := s.o.Source.Snapshot(ctx, s.o.Now(), st)
	if err != nil {
		return nil, err
	}
	if len(snap.Errors) > 0 {
		return nil, fmt.Errorf("placement snapshot: %d queries failed: %v", len(snap.Errors), snap.Errors)
	}
	return WhatIf(snap, WhatIfRequest{Fail: fail, Weights: st.Schedule.Weights}, workloads)
}

// Handler serves, in the Prometheus API's envelope:
//
//	POST /api/v1/placements   Request -> Decision (422 "unsatisfiable" with the Decision when no placement fits)
//	POST /api/v1/whatif       WhatIfRequest -> WhatIfResult
//	GET  /api/v1/placements/snapshot   the current Snapshot
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/placements", s.servePlace)
	mux.HandleFunc("POST /api/v1/whatif", s.serveWhatIf)
	mux.HandleFunc("GET /api/v1/placements/snapshot", s.serveSnapshot)
	return mux
}

func (s *Service) fail(w http.ResponseWriter, kind string, err error) {
	code, typ, result := http.StatusInternalServerError, "internal", "error"
	switch {
	case errors.Is(err, ErrTooLarge):
		code, typ, result = http.StatusRequestEntityTooLarge, "bad_data", "bad_request"
	case errors.Is(err, ErrBadRequest):
		code, typ, result = http.StatusBadRequest, "bad_data", "bad_request"
	case errors.Is(err, ErrUnavailable):
		code, typ, result = http.StatusServiceUnavailable, "unavailable", "unavailable"
	}
	s.decisions.WithLabelValues(kind, result).Inc()
	apiresp.Error(w, code, typ, err)
}

// MaxBodyBytes is the largest placement or what-if request body; a larger one is a 413.
const MaxBodyBytes = 1 << 20

// ErrTooLarge is a request body over MaxBodyBytes.
var ErrTooLarge = errors.New("request body too large")

// decodeBody decodes a JSON body strictly: unknown fields and trailing data are bad requests
// that say what was wrong, a body over MaxBodyBytes is ErrTooLarge naming the limit.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		var me *http.MaxBytesError
		switch {
		case errors.As(err, &me):
			return fmt.Errorf("%w: the body is over the limit of %d bytes", ErrTooLarge, me.Limit)
		case errors.Is(err, io.EOF):
			return badRequest("empty body: want a JSON object")
		case errors.As(err, &se):
			return badRequest("body: invalid JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			return badRequest("%s: want %s, got a JSON %s", te.Field, te.Type, te.Value)
		default:
			return badRequest("body: %v", err)
		}
	}
	if dec.More() {
		return badRequest("body: more than one JSON value")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("body: data after the JSON object")
	}
	return nil
}

func (s *Service) servePlace(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s.mtx.RLock()
	req := Request{Weights: s.settings.Schedule.Weights}
	s.mtx.RUnlock()
	if err := decodeBody(r, &req); err != nil {
		s.fail(w, "placement", err)
		return
	}
	d, err := s.Place(req)
	if err != nil {
		s.fail(w, "placement", err)
		return
	}
	s.decisionSeconds.WithLabelValues("placement").Observe(time.Since(start).Seconds())
	// A decision over many clusters is large: written as encoded, not checked again.
	body, _ := d.MarshalJSON()
	if !d.Feasible {
		s.decisions.WithLabelValues("placement", "unsatisfiable").Inc()
		apiresp.WriteEncoded(w, http.StatusUnprocessableEntity, apiresp.Response{Status: "error", ErrorType: "unsatisfiable", Error: d.Reason}, body)
		return
	}
	s.decisions.WithLabelValues("placement", "placed").Inc()
	apiresp.WriteEncoded(w, http.StatusOK, apiresp.Response{Status: "success"}, body)
}

func (s *Service) serveWhatIf(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s.mtx.RLock()
	req := WhatIfRequest{Weights: s.settings.Schedule.Weights}
	s.mtx.RUnlock()
	if err := decodeBody(r, &req); err != nil {
		s.fail(w, "whatif", err)
		return
	}
	res, err := s.WhatIf(r.Context(), req)
	if err != nil {
		s.fail(w, "whatif", err)
		return
	}
	s.decisionSeconds.WithLabelValues("whatif").Observe(time.Since(start).Seconds())
	result := "absorbed"
	if !res.Absorbed {
		result = "not_absorbed"
	}
	s.decisions.WithLabelValues("whatif", result).Inc()
	apiresp.Success(w, http.StatusOK, res)
}

func (s *Service) serveSnapshot(w http.ResponseWriter, _ *http.Request) {
	snap, _, err := s.current()
	if err != nil {
		s.fail(w, "snapshot", err)
		return
	}
	apiresp.Success(w, http.StatusOK, snap)
}
