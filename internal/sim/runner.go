package sim

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// Scenario states.
const (
	StateIdle     = "idle"
	StateRunning  = "running"
	StateFinished = "finished"
)

type run struct {
	sc     *Scenario
	source string // bundled, file or uploaded
	state  string
	// manual runs advance only by Step; timed runs also advance on the ticker.
	manual     bool
	next       int       // index of the next step to apply
	applied    int       // index of the last applied step, -1 before the first
	due        time.Time // when the next step is due, for timed runs
	startedAt  time.Time
	lastStepAt time.Time
	loops      int
	touched    map[string]bool // clusters the run changed, recovered by Stop
	lastErr    string
}

// ScenarioStatus is a scenario and where its run is.
type ScenarioStatus struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Source      string `json:"source"`
	Loop        bool   `json:"loop"`
	Steps       int    `json:"steps"`
	// State is idle, running or finished (the last step of a non-looping scenario applied;
	// its effects stay until it is stopped).
	State  string `json:"state"`
	Manual bool   `json:"manual,omitempty"`
	// CurrentStep is the index of the last applied step, -1 before the first.
	CurrentStep int `json:"current_step"`
	// NextStep is the index of the step to apply next.
	NextStep   int        `json:"next_step"`
	NextDueAt  *time.Time `json:"next_due_at,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	LastStepAt *time.Time `json:"last_step_at,omitempty"`
	Loops      int        `json:"loops,omitempty"`
	LastError  string     `json:"last_error,omitempty"`
	Scenario   *Scenario  `json:"scenario,omitempty"`
}

func (r *run) status(withSpec bool) ScenarioStatus {
	st := ScenarioStatus{
		Name: r.sc.Name, Description: r.sc.Description, Source: r.source, Loop: r.sc.Loop,
		Steps: len(r.sc.Steps), State: r.state, Manual: r.manual, CurrentStep: r.applied,
		NextStep: r.next, Loops: r.loops, LastError: r.lastErr,
	}
	tp := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	st.StartedAt = tp(r.startedAt)
	st.LastStepAt = tp(r.lastStepAt)
	if r.state == StateRunning && !r.manual {
		st.NextDueAt = tp(r.due)
	}
	if withSpec {
		st.Scenario = r.sc
	}
	return st
}

func (s *Sim) addScenario(sc *Scenario, source string) {
	if _, ok := s.runs[sc.Name]; !ok {
		s.order = append(s.order, sc.Name)
	}
	s.runs[sc.Name] = &run{sc: sc, source: source, state: StateIdle, applied: -1}
}

// AddScenario adds or replaces a scenario after checking that the clusters and deployments
// it names exist. A running scenario cannot be replaced. source is free text shown in the
// status (e.g. "file", "uploaded"). It reports whether the scenario is new.
func (s *Sim) AddScenario(sc *Scenario, source string) (created bool, err error) {
	if err := sc.Validate(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkRefs(sc); err != nil {
		return false, err
	}
	if r, ok := s.runs[sc.Name]; ok {
		if r.state != StateIdle {
			return false, fmt.Errorf("replace scenario %s: %w (stop it first)", sc.Name, ErrScenarioRunning)
		}
		s.addScenario(sc, source)
		return false, nil
	}
	s.addScenario(sc, source)
	return true, nil
}

// Scenarios returns the status of every scenario, in the order they were added.
func (s *Sim) Scenarios() []ScenarioStatus {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]ScenarioStatus, 0, len(s.order))
	for _, n := range s.order {
		out = append(out, s.runs[n].status(false))
	}
	return out
}

// ScenarioStatus returns one scenario's status, with its steps.
func (s *Sim) ScenarioStatus(name string) (ScenarioStatus, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.runs[name]
	if !ok {
		return ScenarioStatus{}, fmt.Errorf("%w %q", ErrUnknownScenario, name)
	}
	return r.status(true), nil
}

// StartScenario starts a scenario on its timeline: steps due now (after: 0s) apply before it
// returns, later ones on the 1s ticker.
func (s *Sim) StartScenario(name string) (ScenarioStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runs[name]
	if !ok {
		return ScenarioStatus{}, fmt.Errorf("%w %q", ErrUnknownScenario, name)
	}
	if r.state == StateRunning {
		return r.status(false), fmt.Errorf("start scenario %s: %w", name, ErrScenarioRunning)
	}
	if err := s.checkRefs(r.sc); err != nil {
		return r.status(false), err
	}
	now := s.now()
	s.begin(r, now, false)
	s.advance(r, now)
	s.logger.Info("Scenario started", "scenario", name, "steps", len(r.sc.Steps), "loop", r.sc.Loop)
	return r.status(false), nil
}

func (s *Sim) begin(r *run, now time.Time, manual bool) {
	r.state = StateRunning
	r.manual = manual
	r.next = 0
	r.applied = -1
	r.loops = 0
	r.lastErr = ""
	r.startedAt = now
	r.lastStepAt = time.Time{}
	r.due = now.Add(time.Duration(r.sc.Steps[0].After))
	if r.touched == nil {
		r.touched = map[string]bool{}
	}
}

// StopScenario stops a scenario and recovers every cluster it changed. Stopping an idle
// scenario does nothing.
func (s *Sim) StopScenario(name string) (ScenarioStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runs[name]
	if !ok {
		return ScenarioStatus{}, fmt.Errorf("%w %q", ErrUnknownScenario, name)
	}
	now := s.now()
	names := make([]string, 0, len(r.touched))
	for n := range r.touched {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, n := range names {
		if s.actuator != nil {
			errs = append(errs, s.actuate(n, Step{Action: ActionRecover}, now))
			continue
		}
		s.byName[n].recover(now)
	}
	if err := errors.Join(errs...); err != nil {
		s.logger.Warn("Scenario stopped, recovering failed", "scenario", name, "err", err)
		r.lastErr = err.Error()
	}
	if r.state != StateIdle {
		s.logger.Info("Scenario stopped", "scenario", name, "recovered", names)
	}
	r.state = StateIdle
	r.manual = false
	r.next = 0
	r.touched = nil
	return r.status(false), nil
}

// StepScenario applies the scenario's next step now, whatever its After. An idle scenario
// starts in manual mode: it then advances only by StepScenario, never on the ticker. A timed
// run continues from now on its timeline.
func (s *Sim) StepScenario(name string) (ScenarioStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runs[name]
	if !ok {
		return ScenarioStatus{}, fmt.Errorf("%w %q", ErrUnknownScenario, name)
	}
	now := s.now()
	switch r.state {
	case StateFinished:
		return r.status(false), fmt.Errorf("step scenario %s: %w", name, ErrScenarioFinished)
	case StateIdle:
		if err := s.checkRefs(r.sc); err != nil {
			return r.status(false), err
		}
		s.begin(r, now, true)
	}
	s.applyNext(r, now)
	if r.state == StateRunning {
		r.due = now.Add(time.Duration(r.sc.Steps[r.next].After))
	}
	return r.status(false), nil
}

// Tick applies the steps that are due, as the 1s ticker does. Tests with a fake clock call
// it after moving the clock.
func (s *Sim) Tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, n := range s.order {
		if r := s.runs[n]; r.state == StateRunning && !r.manual {
			s.advance(r, now)
		}
	}
}

// advance applies every step due at now, keeping to the timeline (due times add up from the
// previous due time, not from when the ticker noticed).
func (s *Sim) advance(r *run, now time.Time) {
	// A looping scenario cannot spin: Validate requires its steps to take time.
	for guard := 0; r.state == StateRunning && !now.Before(r.due) && guard < 10*len(r.sc.Steps); guard++ {
		s.applyNext(r, now)
		if r.state == StateRunning {
			r.due = r.due.Add(time.Duration(r.sc.Steps[r.next].After))
		}
	}
}

func (s *Sim) applyNext(r *run, now time.Time) {
	i := r.next
	st := &r.sc.Steps[i]
	touched, err := s.applyStep(st)
	for _, c := range touched {
		r.touched[c] = true
	}
	if err != nil {
		r.lastErr = fmt.Sprintf("steps[%d]: %v", i, err)
		s.logger.Warn("Scenario step failed", "scenario", r.sc.Name, "step", i, "action", st.Action, "err", err)
	} else {
		s.logger.Info("Scenario step applied", "scenario", r.sc.Name, "step", i, "action", st.Action, "cluster", st.Cluster, "clusters", st.Clusters)
	}
	r.applied = i
	r.lastStepAt = now
	r.next = i + 1
	if r.next == len(r.sc.Steps) {
		if r.sc.Loop {
			r.next = 0
			r.loops++
		} else {
			r.state = StateFinished
		}
	}
}

// applyStep applies one step now and returns the names of the clusters it changed.
func (s *Sim) applyStep(st *Step) ([]string, error) {
	now := s.now()
	cs, err := s.resolve(st.Cluster, st.Clusters, st.Action == ActionRecover)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(cs))
	for _, c := range cs {
		names = append(names, c.name)
		if s.actuator != nil {
			if err := s.actuate(c.name, *st, now); err != nil {
				return names, err
			}
			continue
		}
		switch st.Action {
		case ActionNodesNotReady:
			c.nodesNotReady(st.Count, st.Crash, st.RestartsPerMinute, now)
		case ActionCordon:
			c.cordon(st.Count)
		case ActionCrashloop, ActionRollout, ActionImageDrift:
			d := c.deployment(st.Namespace, st.Deployment)
			if d == nil {
				return names, fmt.Errorf("cluster %s has no deployment %s/%s", c.name, st.Namespace, st.Deployment)
			}
			if st.Image != "" {
				c.setImage(d, st.Image)
			}
			if st.Action == ActionCrashloop || st.Crash {
				c.crashloop(d, st.RestartsPerMinute, now)
			}
		case ActionSaturation:
			c.saturate(st.CPU, st.Memory, time.Duration(st.Over), now)
		case ActionSilence:
			c.silence()
		case ActionControlPlaneDown:
			c.controlPlaneDown(now)
		case ActionRecover:
			c.recover(now)
		default:
			return names, fmt.Errorf("unknown action %q", st.Action)
		}
	}
	return names, nil
}

// checkRefs checks that the clusters and deployments a scenario names exist in this fleet.
func (s *Sim) checkRefs(sc *Scenario) error {
	for i := range sc.Steps {
		if err := s.checkStep(i, &sc.Steps[i]); err != nil {
			return fmt.Errorf("scenario %s: %w", sc.Name, err)
		}
	}
	return nil
}

func (s *Sim) checkStep(i int, st *Step) error {
	field := "cluster"
	if st.Cluster == "" {
		field = "clusters"
	}
	cs, err := s.resolve(st.Cluster, st.Clusters, true)
	if err != nil {
		return &FieldError{Step: i, Field: field, Msg: err.Error()}
	}
	for _, c := range cs {
		if st.Deployment != "" && c.deployment(st.Namespace, st.Deployment) == nil {
			return &FieldError{Step: i, Field: "deployment", Msg: fmt.Sprintf("cluster %s has no deployment %s/%s", c.name, st.Namespace, st.Deployment)}
		}
		if st.Count > len(c.nodes) {
			return &FieldError{Step: i, Field: "count", Msg: fmt.Sprintf("cluster %s has only %d nodes", c.name, len(c.nodes))}
		}
	}
	return nil
}
