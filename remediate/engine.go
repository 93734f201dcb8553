package remediate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql"
	"golang.org/x/time/rate"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/ident"
	"github.com/fleetwatch/fleetwatch/schedule"
)

// QueryFunc evaluates an instant PromQL query over the global view.
type QueryFunc func(ctx context.Context, q string, ts time.Time) (promql.Vector, error)

// Options configure an Engine.
type Options struct {
	Store *Store
	Query QueryFunc
	// Incidents returns the active incidents, oldest first (nil: correlation is off); they may
	// be the correlation engine's own (correlate.Engine.ActiveWithAlerts): read them only.
	Incidents func() []*correlate.Incident
	Clients   Clients
	// WhatIf is placement's what-if, for failovers (nil: no failover is planned).
	WhatIf WhatIfFunc
	// Remediated tells the correlation engine what a remediation did about its incident, for
	// the incident's explanation and its Alertmanager alert (nil: not told).
	Remediated func(incidentID, text string) error
	// Alerts takes the engine's own alerts (a freeze, a remediation storm) to the correlation
	// engine, which makes them incidents (nil: not raised).
	Alerts   correlate.Sink
	Settings config.RemediationConfig
	// Identify names the caller of an API request (nil: everyone may do everything, for tests).
	Identify   correlate.IdentifyFunc
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Engine matches incidents to playbooks, plans remediations, runs them through their guards,
// verifies every action in the global view and keeps the audit. One goroutine (Run) advances
// remediations; the API approves, denies and pauses through the same lock.
type Engine struct {
	o       Options
	logger  *slog.Logger
	now     func() time.Time
	metrics *metrics

	mu        sync.Mutex
	settings  config.RemediationConfig
	playbooks []config.PlaybookConfig
	active    map[string]*Remediation // ID -> not final
	// covered: incident ID -> the clusters its remediations (final ones too) were planned for.
	// An incident is remediated once per cluster: when it grows to more clusters (a bad
	// rollout reaching one more), the new ones get a remediation of their own once the
	// incident's current one is over.
	covered map[string]map[string]bool
	limits  *limits
	paused  map[string]string // "" (the fleet) or a cluster -> who paused it
	kick    chan struct{}
	// raised are the engine's own alerts (AlertFrozen, AlertStorm) found by this evaluation's
	// guards, with why; sent when each was last sent as firing.
	raised map[string]string
	sent   map[string]time.Time
	// failovers are the failover remediations that are over with something to take back,
	// and no failback planned yet.
	failovers map[string]*Remediation
	// told is what each incident was last told (tell).
	told map[string]string
	lead leadership
	// hub is what this process shares with the next leader, with leader election (nil
	// without).
	hub *handover
	// ended are the remediations that ended in the last causedFor, and actions what the last
	// evaluation found remediation doing (Actions), read without the lock.
	ended   []*Remediation
	actions atomic.Pointer[[]correlate.Action]
	// budgetLeft is the blast-radius budget left by resource, as the last evaluation
	// measured it (BudgetLeft).
	budgetLeft atomic.Pointer[map[string]float64]
}

// causedFor is how long after its verification an action still explains alerts (pods evicted
// by a drain can pend for a while after the node is empty).
const causedFor = 5 * time.Minute

// The engine's own alerts, raised into the correlation engine while the guard holds.
const (
	// AlertFrozen: more than half of the fleet looks unreachable; every action is frozen.
	AlertFrozen = "FleetRemediationFrozen"
	// AlertStorm: the blast-radius budget holds new actions.
	AlertStorm = "FleetRemediationStorm"
)

// alertResend is how often a raised alert is sent again; it ends by itself four resends
// after the last one should the engine stop, and at once when its guard passes again.
const alertResend = time.Minute

// actor is how the engine signs the audit entries it writes itself.
const actor = "fleetwatch"

// New returns an engine that continues the remediations in the store.
func New(o Options) (*Engine, error) {
	if o.Store == nil || o.Query == nil || o.Clients == nil {
		return nil, errors.New("remediate: Store, Query and Clients are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Incidents == nil {
		o.Incidents = func() []*correlate.Incident { return nil }
	}
	e := &Engine{o: o, logger: o.Logger, now: o.Now, active: map[string]*Remediation{}, covered: map[string]map[string]bool{},
		paused: map[string]string{}, kick: make(chan struct{}, 1), raised: map[string]string{}, sent: map[string]time.Time{},
		failovers: map[string]*Remediation{}, told: map[string]string{}}
	if err := e.ApplySettings(o.Settings); err != nil {
		return nil, err
	}
	all, err := o.Store.List()
	if err != nil {
		return nil, err
	}
	if e.paused, err = o.Store.Paused(); err != nil {
		return nil, err
	}
	for _, r := range all {
		e.cover(r)
		if !Final(r.State) {
			e.active[r.ID] = r
		}
		e.awaitFailback(r)
	}
	e.metrics = newMetrics(o.Registerer)
	e.metrics.init(e.playbooks)
	// Without leader election this process acts; with it, not before RunElected holds the Lease.
	e.setLeader(o.Settings.LeaderElection == nil, "")
	return e, nil
}

// ApplySettings switches to new settings (a reload); running remediations keep the steps they
// were planned with.
func (e *Engine) ApplySettings(s config.RemediationConfig) error {
	if err := s.Validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.settings = s
	e.playbooks = Playbooks(s.Playbooks)
	e.limits = newLimits(s.RateLimits)
	return nil
}

// Run keeps the clusters' Deployments for failover (keepSpecsEvery) and evaluates
// (evaluateEvery) until ctx ends: one process, no leader election (RunElected).
func (e *Engine) Run(ctx context.Context) {
	var specs sync.WaitGroup
	specs.Go(func() { e.keepSpecsEvery(ctx) })
	e.evaluateEvery(ctx)
	specs.Wait()
}

// evaluateEvery evaluates every evaluation interval, and at once after an approval, until ctx
// ends.
func (e *Engine) evaluateEvery(ctx context.Context) {
	e.every(ctx, func(s config.RemediationConfig) time.Duration { return time.Duration(s.EvaluationInterval) }, e.kick, func() {
		if err := e.Evaluate(ctx); err != nil && ctx.Err() == nil {
			e.logger.Error("remediation evaluation failed", "err", err)
		}
	})
}

// keepSpecsEvery keeps the clusters' Deployments every specs interval until ctx ends, on its
// own: reading every cluster's Deployments holds up neither an evaluation nor an approval, and
// with leader election every replica keeps them, leading or not, so that the one that takes
// over fails a cluster over from what it read itself.
func (e *Engine) keepSpecsEvery(ctx context.Context) {
	e.every(ctx, func(s config.RemediationConfig) time.Duration { return time.Duration(s.Specs.Interval) }, nil, func() {
		e.mu.Lock()
		enabled := e.settings.Enabled
		e.mu.Unlock()
		if !enabled {
			return
		}
		if err := e.keepSpecs(ctx); err != nil && ctx.Err() == nil {
			e.logger.Warn("keeping Deployment specs for failover", "err", err)
		}
	})
}

// every runs do, then waits the interval the settings give (or for kick, when it is not nil)
// before it runs it again, until ctx ends.
func (e *Engine) every(ctx context.Context, interval func(config.RemediationConfig) time.Duration, kick <-chan struct{}, do func()) {
	for {
		do()
		e.mu.Lock()
		t := time.NewTimer(interval(e.settings))
		e.mu.Unlock()
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-kick:
		case <-t.C:
		}
		t.Stop()
	}
}

func (e *Engine) wake() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Evaluate plans a remediation for every active incident a playbook matches and that has none
// yet, and advances every remediation that is not over.
func (e *Engine) Evaluate(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	if leading, _ := e.Leading(); !leading {
		return nil // another process acts
	}
	if !e.settings.Enabled {
		e.metrics.update(e, e.budgetItems(ctx, nil, now))
		return nil
	}
	if e.hub != nil {
		// Every evaluation starts from the hub's state: when this process took the Lease, or
		// when another process wrote the state since (this one no longer leads, and does not
		// know it yet), it continues from what the hub says before it decides anything.
		if e.hub.ready {
			if err := e.hub.check(ctx); err != nil {
				return err
			}
		}
		if !e.hub.ready {
			if err := e.adopt(ctx, now); err != nil {
				return err
			}
		}
	}
	incidents := e.o.Incidents()
	open := map[string]*correlate.Incident{}
	var errs []error
	if err := e.bindAdopted(incidents, now); err != nil {
		errs = append(errs, err)
	}
	clear(e.raised)
	defer func() {
		if err := e.raise(ctx, now); err != nil {
			e.logger.Error("raising remediation alerts", "err", err)
		}
	}()
	running := map[string]*Remediation{} // incident -> its remediation not over
	for _, r := range e.active {
		running[r.IncidentID] = r
	}
	for _, inc := range incidents {
		open[inc.ID] = inc
		uncovered := slices.DeleteFunc(slices.Clone(inc.Clusters), func(c string) bool { return e.covered[inc.ID][c] })
		if len(uncovered) == 0 {
			continue
		}
		part := *inc
		part.Clusters = uncovered
		if r := running[inc.ID]; r != nil {
			// The incident grew (a rollout reached one more cluster): the new clusters join
			// the remediation that runs, after the targets it has.
			if err := e.extend(ctx, r, &part, now); err != nil {
				errs = append(errs, fmt.Errorf("extend remediation %s: %w", r.ID, err))
			}
			continue
		}
		pb, ok := e.match(inc)
		if !ok {
			continue
		}
		r, err := e.plan(ctx, &part, pb, now, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("plan for incident %s: %w", inc.ID, err))
			continue
		}
		if r == nil {
			continue // nothing to act on yet
		}
		entries := []*AuditEntry{e.entry(r, "", EventPlan, actor, planSummary(r))}
		if Final(r.State) {
			entries = append(entries, e.entry(r, "", EventState, actor, r.State+": "+r.Reason))
		}
		if err := e.o.Store.Save(r, entries...); err != nil {
			errs = append(errs, err)
			continue
		}
		e.tell(r)
		e.cover(r)
		if Final(r.State) {
			e.metrics.finished(r)
			e.endShared(r)
			continue
		}
		e.active[r.ID] = r
	}
	if err := e.planFailbacks(ctx, open, now); err != nil {
		errs = append(errs, err)
	}
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range e.active {
			if !yield(id) {
				return
			}
		}
	})
	for _, id := range ids {
		r := e.active[id]
		if Final(r.State) { // decided over the API since
			delete(e.active, id)
			e.endShared(r)
			continue
		}
		if err := e.advance(ctx, r, open, now); err != nil {
			errs = append(errs, fmt.Errorf("remediation %s: %w", id, err))
		}
		if Final(r.State) {
			delete(e.active, id)
			e.awaitFailback(r)
			e.endShared(r)
			e.ended = append(e.ended, r)
		}
	}
	if err := e.share(ctx, open, e.paused, now); err != nil {
		errs = append(errs, err)
	}
	// What an incident was told is kept while it is open or one of its remediations runs.
	for id := range e.told {
		if _, ok := open[id]; !ok && !slices.ContainsFunc(slices.Collect(maps.Values(e.active)), func(r *Remediation) bool { return r.IncidentID == id }) {
			delete(e.told, id)
		}
	}
	e.metrics.update(e, e.budgetItems(ctx, nil, now))
	e.publishActions(now)
	return errors.Join(errs...)
}

// publishActions records what remediation does now, for the correlation engine (Actions):
// every op of a remediation that runs (acted or about to), and every op that acted, until
// causedFor after it verified. A remediation that waits (for an approval, behind a guard)
// causes nothing yet: its plan must not take the alerts it means to cure away from their
// incident (seen under load: a waiting rollback took a rollout's alerts, the rollout incident
// resolved and another opened).
func (e *Engine) publishActions(now time.Time) {
	e.ended = slices.DeleteFunc(e.ended, func(r *Remediation) bool { return now.Sub(r.DoneAt) > causedFor })
	var out []correlate.Action
	for _, r := range append(slices.Collect(maps.Values(e.active)), e.ended...) {
		if r.FailbackOf != "" {
			continue // its incident is over
		}
		for _, st := range r.Steps {
			for _, op := range st.Ops {
				running := r.State == StateRunning && op.State != OpFailed && op.State != OpUndone
				if !running && (op.ActedAt.IsZero() || (!op.VerifiedAt.IsZero() && now.Sub(op.VerifiedAt) > causedFor)) {
					continue
				}
				a := correlate.Action{Cluster: op.Cluster, IncidentKey: r.IncidentKey,
					What: fmt.Sprintf("%s of %s (remediation %s)", op.Action, op.target(), r.ID)}
				if op.Kind == "Node" {
					a.Node = op.Name
				} else {
					a.Namespace, a.Workload = op.Namespace, op.Name
				}
				out = append(out, a)
			}
		}
	}
	slices.SortFunc(out, func(a, b correlate.Action) int { return strings.Compare(a.What, b.What) })
	e.actions.Store(&out)
}

// BudgetLeft is how many more nodes, workloads and clusters may be under remediation at
// once, as the last evaluation measured it (MetricBudgetRemaining); nil before the first.
// It does not take the engine's lock.
func (e *Engine) BudgetLeft() map[string]float64 {
	if p := e.budgetLeft.Load(); p != nil {
		return *p
	}
	return nil
}

// Actions is what remediation does now or did in the last 5 minutes, for the correlation
// engine: the alerts these actions cause join the incident they remediate. It does not take
// the engine's lock (the correlation engine asks while remediation may wait for it).
func (e *Engine) Actions() []correlate.Action {
	if p := e.actions.Load(); p != nil {
		return *p
	}
	return nil
}

// awaitFailback remembers a failover that is over and has something to take back.
func (e *Engine) awaitFailback(r *Remediation) {
	// Only a lost cluster's failover is taken back: a saturated cluster's replicas stay where
	// they moved.
	if Final(r.State) && r.FailbackID == "" && r.FailbackOf == "" && schedule.IncidentKind(r.IncidentKey) == schedule.IncidentClusterDown && len(failbackTargets(r)) > 0 {
		e.failovers[r.ID] = r
	}
}

// planFailbacks plans the failback of every failover that is over once all the clusters it
// came from are back. The failback and the failover's link to it are stored together.
func (e *Engine) planFailbacks(ctx context.Context, open map[string]*correlate.Incident, now time.Time) error {
	if len(e.failovers) == 0 {
		return nil
	}
	up, err := e.apiUp(ctx, now)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(e.playbooks, func(p config.PlaybookConfig) bool { return p.Name == PlaybookFailback })
	if i < 0 {
		return nil
	}
	pb := e.playbooks[i]
	for _, id := range slices.Sorted(maps.Keys(e.failovers)) {
		fo := e.failovers[id]
		ready := true
		for _, c := range fo.Clusters {
			if ok, _ := back(c, open, up); !ok {
				ready = false
			}
		}
		if !ready {
			continue
		}
		inc := &correlate.Incident{ID: fo.IncidentID, Group: correlate.Group{Key: KindFailback + "/" + strings.Join(fo.Clusters, ","), Clusters: fo.Clusters}}
		r, err := e.plan(ctx, inc, pb, now, fo)
		if err != nil {
			return fmt.Errorf("plan the failback of %s: %w", fo.ID, err)
		}
		if r == nil {
			delete(e.failovers, id)
			continue
		}
		linked := fo.clone()
		linked.FailbackID, linked.Revision = r.ID, linked.Revision+1
		if err := e.o.Store.SaveAll([]*Remediation{r, linked}, e.entry(r, "", EventPlan, actor,
			fmt.Sprintf("%s is back: failback of failover %s; %s", strings.Join(fo.Clusters, ", "), fo.ID, planSummary(r)))); err != nil {
			return err
		}
		delete(e.failovers, id)
		e.endShared(linked)
		e.active[r.ID] = r
	}
	return nil
}

// raise sends the engine's own alerts: each one a guard raised in this evaluation as firing
// (again every alertResend), each one that no guard raised any more as resolved.
func (e *Engine) raise(ctx context.Context, now time.Time) error {
	if e.o.Alerts == nil {
		return nil
	}
	var out []correlate.Alert
	for _, name := range []string{AlertFrozen, AlertStorm} {
		why, firing := e.raised[name]
		last, sent := e.sent[name]
		a := correlate.Alert{Labels: map[string]string{"alertname": name, "severity": "critical"}, Source: "rules",
			Annotations: map[string]string{"summary": why}, StartsAt: now}
		if name == AlertStorm {
			a.Labels["severity"] = "warning"
		}
		switch {
		case firing && (!sent || now.Sub(last) >= alertResend):
			a.EndsAt = now.Add(4 * alertResend)
			e.sent[name] = now
		case !firing && sent:
			a.EndsAt = now
			a.Annotations["summary"] = "the guard passes again"
			delete(e.sent, name)
		default:
			continue
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil
	}
	return e.o.Alerts.Ingest(ctx, out)
}

// extend adds the targets of an incident's new clusters to the steps of its running
// remediation that have not finished, and records it.
func (e *Engine) extend(ctx context.Context, r *Remediation, part *correlate.Incident, now time.Time) error {
	pb := config.PlaybookConfig{Name: r.Playbook}
	for _, st := range r.Steps {
		pb.Steps = append(pb.Steps, st.StepConfig)
	}
	more, err := e.plan(ctx, part, pb, now, nil)
	if err != nil || more == nil {
		return err
	}
	added := 0
	for i := r.Current; i < len(r.Steps) && i < len(more.Steps); i++ {
		st := r.Steps[i]
		if st.State != StepPending && st.State != StepWaiting && st.State != StepActing && st.State != StepVerifying {
			continue
		}
		for _, op := range more.Steps[i].Ops {
			op.ID = fmt.Sprintf("%s-%d-%d", r.ID, i, len(st.Ops))
			st.Ops = append(st.Ops, op)
			added++
		}
	}
	if added == 0 {
		return nil
	}
	r.Clusters = append(r.Clusters, part.Clusters...)
	e.cover(r)
	return e.save(r, now, e.entry(r, "", EventPlan, actor, fmt.Sprintf("the incident grew to %s: %d more targets", strings.Join(part.Clusters, ", "), added)))
}

// cover records the clusters a remediation was planned for.
func (e *Engine) cover(r *Remediation) {
	if e.covered[r.IncidentID] == nil {
		e.covered[r.IncidentID] = map[string]bool{}
	}
	for _, c := range r.Clusters {
		e.covered[r.IncidentID][c] = true
	}
}

func (e *Engine) match(inc *correlate.Incident) (config.PlaybookConfig, bool) {
	for _, p := range e.playbooks {
		if matches(p.Match, inc) {
			return p, true
		}
	}
	return config.PlaybookConfig{}, false
}

// remediationIDs makes remediation IDs: time-ordered and unique, "rem-" + 8 bytes of time + 4
// random bytes, in hex.
var remediationIDs ident.IDs

// plan turns a playbook into a remediation for an incident: every step with the ops it will
// run and the API calls each makes. It returns nil when the first step has nothing to act on.
// A failover whose what-if finds no room is planned refused (final, with the numbers). fo is
// the failover a failback takes back (nil otherwise).
func (e *Engine) plan(ctx context.Context, inc *correlate.Incident, pb config.PlaybookConfig, now time.Time, fo *Remediation) (*Remediation, error) {
	r := &Remediation{ID: remediationIDs.New("rem", now), IncidentID: inc.ID, IncidentKey: inc.Key, Playbook: pb.Name, Clusters: slices.Clone(inc.Clusters),
		State: StatePlanned, DryRun: e.settings.DryRun, CreatedAt: now, UpdatedAt: now, OpenedAt: inc.OpenedAt}
	if fo != nil {
		r.FailbackOf, r.OpenedAt = fo.ID, time.Time{}
	}
	var prev []target // the step before's targets
	for si, sc := range pb.Steps {
		var targets []target
		var err error
		switch {
		case sc.Action == config.ActionShed:
			targets = shedTargets(prev)
		case sc.Action == config.ActionFailover:
			var capacity string
			targets, capacity, err = e.failoverTargets(ctx, inc, now)
			if ref := (*refusal)(nil); errors.As(err, &ref) {
				r.State, r.Reason, r.Capacity, r.DoneAt = StateRefused, "failover refused: "+ref.Error(), ref.reason, now
				e.metrics.held(ref.guard)
				return r, nil
			}
			if capacity != "" {
				r.Capacity = capacity
			}
		case sc.Action == config.ActionFailback && fo != nil:
			targets = failbackTargets(fo)
		default:
			targets, err = e.targets(ctx, inc, sc.Action, now)
		}
		if err != nil {
			return nil, err
		}
		if si == 0 && len(targets) == 0 {
			return nil, nil
		}
		prev = targets
		st := &StepRun{StepConfig: sc, State: StepPending}
		for oi, t := range targets {
			op := &Op{ID: fmt.Sprintf("%s-%d-%d", r.ID, si, oi), Action: sc.Action, Cluster: t.cluster, Kind: t.kind,
				Namespace: t.namespace, Name: t.name, Calls: describeCalls(sc.Action, t), State: OpPending,
				From: t.from, Replicas: t.replicas, Of: t.of, TakeBack: t.undo}
			if sc.Action == config.ActionRollback {
				op.Image = inc.Image
			}
			if sc.Verify != "" {
				q, err := config.RenderVerify(sc.Verify, config.VerifyTarget{Cluster: t.cluster, Node: t.name, Namespace: t.namespace, Name: t.name,
					From: t.from, Replicas: t.expect})
				if err != nil {
					return nil, fmt.Errorf("step %d (%s) verify: %w", si, sc.Action, err)
				}
				op.Verify = q
			}
			st.Ops = append(st.Ops, op)
		}
		r.Steps = append(r.Steps, st)
	}
	return r, nil
}

func planSummary(r *Remediation) string {
	var b strings.Builder
	fmt.Fprintf(&b, "playbook %s for incident %s (%s)", r.Playbook, r.IncidentID, r.IncidentKey)
	if r.DryRun {
		b.WriteString(", dry run")
	}
	for i, st := range r.Steps {
		fmt.Fprintf(&b, "; step %d %s (%s, when %s): ", i+1, st.Action, st.Mode, st.When)
		for j, op := range st.Ops {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(op.target())
		}
	}
	return b.String()
}

func (op *Op) target() string {
	if op.Namespace != "" {
		return fmt.Sprintf("%s %s/%s in %s", op.Kind, op.Namespace, op.Name, op.Cluster)
	}
	return fmt.Sprintf("%s %s in %s", op.Kind, op.Name, op.Cluster)
}

func (e *Engine) entry(r *Remediation, op, event, who, detail string) *AuditEntry {
	return &AuditEntry{Time: e.now(), RemediationID: r.ID, IncidentID: r.IncidentID, OpID: op, Event: event, Actor: who, Detail: detail}
}

// save stores a remediation's new state with the audit entries that say why, then tells its
// incident.
func (e *Engine) save(r *Remediation, now time.Time, entries ...*AuditEntry) error {
	r.UpdatedAt = now
	r.Revision++
	if err := e.o.Store.Save(r, entries...); err != nil {
		return err
	}
	e.tell(r)
	return nil
}

// tell says on the remediation's incident what the remediation did, when that changed.
func (e *Engine) tell(r *Remediation) {
	if e.o.Remediated == nil {
		return
	}
	text := fmt.Sprintf("fleetwatch remediation %s (playbook %s) %s", r.ID, r.Playbook, r.State)
	if r.Reason != "" {
		text += ": " + r.Reason
	}
	if r.State == StateSucceeded || r.State == StateRunning {
		var acted []string
		for _, st := range r.Steps {
			n := 0
			for _, op := range st.Ops {
				if !op.ActedAt.IsZero() {
					n++
				}
			}
			if n > 0 {
				acted = append(acted, fmt.Sprintf("%s %d of %d targets", st.Action, n, len(st.Ops)))
			}
		}
		if len(acted) > 0 {
			text += " (" + strings.Join(acted, ", ") + ")"
		}
	}
	if e.told[r.IncidentID] == text {
		return
	}
	if err := e.o.Remediated(r.IncidentID, text); err != nil && !errors.Is(err, correlate.ErrNotActive) {
		e.logger.Warn("telling the incident what remediation did", "incident", r.IncidentID, "err", err)
		return
	}
	e.told[r.IncidentID] = text
}

// setState changes a remediation's state, audited.
func (e *Engine) setState(r *Remediation, now time.Time, state, reason string) error {
	r.State, r.Reason = state, reason
	if Final(state) {
		r.DoneAt = now
		e.metrics.finished(r)
	}
	return e.save(r, now, e.entry(r, "", EventState, actor, state+": "+reason))
}

// acted reports whether any op of the remediation made a write.
func (r *Remediation) acted() bool {
	for _, st := range r.Steps {
		for _, op := range st.Ops {
			if !op.ActedAt.IsZero() {
				return true
			}
		}
	}
	return false
}

// advance moves a remediation on as far as it can go now.
func (e *Engine) advance(ctx context.Context, r *Remediation, open map[string]*correlate.Incident, now time.Time) error {
	if _, ok := open[r.IncidentID]; !ok && !r.acted() && r.FailbackOf == "" {
		return e.setState(r, now, StateCancelled, "the incident resolved before anything was done")
	}
	for r.Current < len(r.Steps) && !Final(r.State) {
		st := r.Steps[r.Current]
		progressed, err := e.advanceStep(ctx, r, st, open, now)
		if err != nil || !progressed {
			return err
		}
	}
	if r.Current >= len(r.Steps) && !Final(r.State) {
		last := r.lastRun()
		switch {
		case last == nil:
			return e.setState(r, now, StateFailed, "no step ran")
		case last.State == StepNotified && r.acted():
			return e.setState(r, now, StateNotified, "escalated to an operator: the steps before did not recover it")
		case last.State == StepNotified:
			return e.setState(r, now, StateNotified, "notify only: nothing was changed")
		case last.State == StepVerified && r.DryRun:
			return e.setState(r, now, StateSucceeded, "dry run: every call was accepted with dryRun=All; nothing was changed")
		case last.State == StepVerified:
			return e.setState(r, now, StateSucceeded, fmt.Sprintf("every step verified, %s after the incident opened", now.Sub(r.OpenedAt).Round(time.Second)))
		default:
			return e.setState(r, now, StateFailed, fmt.Sprintf("step %s %s", last.Action, last.State))
		}
	}
	return nil
}

// lastRun is the last step that was not skipped.
func (r *Remediation) lastRun() *StepRun {
	for i := len(r.Steps) - 1; i >= 0; i-- {
		if r.Steps[i].State != StepSkipped && r.Steps[i].State != StepPending {
			return r.Steps[i]
		}
	}
	return nil
}

// next moves to the step after the current one that runs on outcome (verified or failed),
// skipping the others.
func (r *Remediation) next(outcome string) {
	i := r.Current + 1
	for ; i < len(r.Steps); i++ {
		if r.Steps[i].When == outcome {
			break
		}
		r.Steps[i].State = StepSkipped
	}
	if outcome == config.WhenFailed && i >= len(r.Steps) {
		// No escalation: the remediation ends failed at this step.
		r.Current = len(r.Steps)
		return
	}
	r.Current = i
}

// advanceStep moves one step on; it reports whether the step finished, so the next may start.
func (e *Engine) advanceStep(ctx context.Context, r *Remediation, st *StepRun, open map[string]*correlate.Incident, now time.Time) (bool, error) {
	switch st.State {
	case StepPending:
		if st.Mode == config.ModeNotify || st.Action == config.ActionNotify {
			for _, op := range st.Ops {
				op.State, op.Detail = OpNotified, "advised: "+op.target()
			}
			st.State, st.DoneAt = StepNotified, now
			r.next(config.WhenVerified)
			return true, e.save(r, now, e.entry(r, "", EventState, actor, fmt.Sprintf("notified (%d targets), nothing changed", len(st.Ops))))
		}
		// The RPO gate: a failover whose replication lags past the RPO (or cannot be told)
		// waits for an operator, as an approve step does.
		gate := ""
		if st.Action == config.ActionFailover && st.Approval == nil {
			ok, detail := e.rpo(ctx, st, now)
			st.RPOReading = detail
			if !ok {
				gate = "; " + GuardRPO + ": " + detail
				e.metrics.held(GuardRPO)
			}
		}
		if (st.Mode == config.ModeApprove || gate != "") && st.Approval == nil {
			st.Approval = &Approval{RequestedAt: now, ExpiresAt: now.Add(time.Duration(e.settings.ApprovalTimeout))}
			st.State = StepWaiting
			r.State, r.Reason = StateWaiting, fmt.Sprintf("step %d (%s) waits for an operator's approval until %s%s", r.Current+1, st.Action, st.Approval.ExpiresAt.UTC().Format(time.RFC3339), gate)
			return false, e.save(r, now, e.entry(r, "", EventApproval, actor, r.Reason))
		}
		st.State, st.StartedAt, st.Attempts = StepActing, now, 1
		r.State, r.Reason = StateRunning, ""
		if err := e.save(r, now, e.entry(r, "", EventState, actor, fmt.Sprintf("step %d (%s) starts", r.Current+1, st.Action))); err != nil {
			return false, err
		}
		return e.runOps(ctx, r, st, open, now)
	case StepWaiting:
		if now.After(st.Approval.ExpiresAt) {
			return false, e.setState(r, now, StateExpired, fmt.Sprintf("nobody approved step %d (%s) by %s", r.Current+1, st.Action, st.Approval.ExpiresAt.UTC().Format(time.RFC3339)))
		}
		return false, nil
	case StepActing, StepVerifying:
		return e.runOps(ctx, r, st, open, now)
	}
	return false, fmt.Errorf("step %d in unexpected state %q", r.Current, st.State)
}

// runOps runs a step's ops one after the other, each verified before the next starts (node by
// node, cluster by cluster, canary first). A failover's (and a failback's) ops all act as the
// guards and rate limits let them and are verified together: a lost cluster's workloads do not
// wait for each other.
func (e *Engine) runOps(ctx context.Context, r *Remediation, st *StepRun, open map[string]*correlate.Incident, now time.Time) (bool, error) {
	timeout := time.Duration(st.Timeout)
	parallel := st.Action == config.ActionFailover || st.Action == config.ActionFailback
	waiting := false // parallel: an op acted and is not verified yet
	for _, op := range st.Ops {
		switch op.State {
		case OpVerified, OpDryRun, OpNotified:
			continue
		case OpUndecided:
			return false, nil // waits for an operator (Decide)
		case OpPending, OpBlocked:
			if r.State == StateInconclusive {
				return false, nil
			}
			if op.State == OpBlocked && now.Sub(op.TriedAt) < blockedRetry {
				return false, nil // as kubectl drain waits between evictions a PDB refused
			}
			if held, err := e.hold(r, op, open, now); held || err != nil {
				return false, err
			}
			if err := e.act(ctx, r, st, op, now); err != nil {
				return false, err
			}
			if op.State == OpPending || op.State == OpBlocked {
				if now.Sub(st.StartedAt) > timeout*time.Duration(len(st.Ops)) {
					return e.failOp(ctx, r, st, op, now, "could not act before the step's timeout: "+op.Detail)
				}
				return false, nil
			}
			if op.State == OpDryRun {
				continue
			}
			if parallel {
				waiting = true
				continue
			}
			return false, nil // verified from the next evaluation on: the view needs a scrape
		case OpDone:
			verdict, why := e.verify(ctx, op, now)
			switch {
			case verdict > 0:
				op.State, op.VerifiedAt, op.Detail = OpVerified, now, why
				e.metrics.verified(op, now)
				if err := e.save(r, now, e.entry(r, op.ID, EventVerify, actor, "verified: "+why)); err != nil {
					return false, err
				}
				continue
			case now.Sub(op.ActedAt) <= timeout:
				if st.State != StepVerifying {
					st.State = StepVerifying
				}
				if parallel {
					waiting = true
					continue
				}
				return false, nil
			case verdict < 0:
				op.State, op.Detail = OpUndecided, why
				return false, e.setState(r, now, StateInconclusive, fmt.Sprintf("cannot verify %s %s: %s; an operator decides (approve: verify again, deny: stop)", op.Action, op.target(), why))
			default:
				return e.failOp(ctx, r, st, op, now, "verification failed at the timeout: "+why)
			}
		default:
			return false, fmt.Errorf("op %s in unexpected state %q", op.ID, op.State)
		}
	}
	if waiting {
		return false, nil
	}
	st.State, st.DoneAt = StepVerified, now
	r.next(config.WhenVerified)
	return true, e.save(r, now, e.entry(r, "", EventState, actor, fmt.Sprintf("step %s verified", st.Action)))
}

// failOp undoes what a failed op did where that is safe, then retries the step or ends it.
func (e *Engine) failOp(ctx context.Context, r *Remediation, st *StepRun, op *Op, now time.Time, why string) (bool, error) {
	if op.Undo != "" {
		// The undo writes: the hub has the remediation this far first.
		if err := e.shareFirst(ctx, r, now); err != nil {
			return false, err
		}
	}
	op.State, op.Detail = OpFailed, why
	entries := []*AuditEntry{e.entry(r, op.ID, EventVerify, actor, "failed: "+why)}
	if op.Undo != "" {
		if c, err := e.o.Clients(op.Cluster); err == nil {
			before := func(call string) error { return e.o.Store.Audit(e.entry(r, op.ID, EventCall, actor, "undo: "+call)) }
			var detail string
			if op.Undo == ActionUncordon {
				detail, err = uncordon(ctx, c, op, r.DryRun, before)
			} else {
				// A failover that did not verify: delete what it created, scale back what it
				// scaled.
				var res actResult
				res, err = takeBack(ctx, c, op, op.ID, op.Undo, op.ID+"-undo", r.DryRun, before)
				detail = res.detail
			}
			if err != nil {
				detail = "undo failed: " + err.Error()
			} else {
				op.State = OpUndone
			}
			op.Detail += "; " + detail
			entries = append(entries, e.entry(r, op.ID, EventResult, actor, "undo: "+detail))
		}
	}
	e.metrics.action(op.Action, "failed")
	if st.Attempts <= st.Retries {
		st.Attempts++
		op.State, op.ActedAt = OpPending, time.Time{}
		entries = append(entries, e.entry(r, op.ID, EventState, actor, fmt.Sprintf("retry %d of %d", st.Attempts-1, st.Retries)))
		return false, e.save(r, now, entries...)
	}
	st.State, st.DoneAt, st.Reason = StepFailed, now, why
	r.next(config.WhenFailed)
	return true, e.save(r, now, entries...)
}

// act makes an op's writes, each audited before it goes out.
func (e *Engine) act(ctx context.Context, r *Remediation, st *StepRun, op *Op, now time.Time) error {
	c, err := e.o.Clients(op.Cluster)
	if err != nil {
		op.Detail = err.Error()
		return e.save(r, now)
	}
	if err := e.shareFirst(ctx, r, now); err != nil {
		// The next leader must know what this one is about to do, or it could not finish it.
		op.Detail = "not acted (tried again): " + err.Error()
		e.metrics.action(op.Action, "error")
		return e.save(r, now, e.entry(r, op.ID, EventResult, actor, op.Detail))
	}
	before := func(call string) error {
		if r.DryRun {
			call += " (dryRun=All)"
		}
		return e.o.Store.Audit(e.entry(r, op.ID, EventCall, actor, call))
	}
	var res actResult
	op.TriedAt = now
	switch op.Action {
	case config.ActionCordon:
		res, err = cordon(ctx, c, op, r.DryRun, before)
	case config.ActionDrain:
		res, err = drain(ctx, c, op, r.DryRun, before)
	case config.ActionRollback:
		res, err = rollback(ctx, c, op, r.DryRun, before)
	case config.ActionFailover:
		// Never a write to the cluster a failover comes from: it may be alive behind a
		// partition, and whatever is there must be there when it comes back.
		if op.Cluster == op.From || slices.Contains(r.Clusters, op.Cluster) {
			err = fmt.Errorf("refusing to write to %s: the failover is from it", op.Cluster)
			break
		}
		var sp *KeptSpec
		if sp, err = e.o.Store.Spec(op.From, op.Namespace, op.Name); err == nil {
			res, err = failover(ctx, c, op, sp, r.DryRun, before)
		}
	case config.ActionFailback:
		res, err = takeBack(ctx, c, op, op.Of, op.TakeBack, op.ID, r.DryRun, before)
	case config.ActionShed:
		res, err = shed(ctx, c, op, r.DryRun, before)
	case config.ActionRestart:
		res, err = restart(ctx, c, op, st.Attempts, now, r.DryRun, before)
	default:
		err = fmt.Errorf("unknown action %q", op.Action)
	}
	switch {
	case err != nil:
		op.Detail = "API error (tried again): " + err.Error()
		e.metrics.action(op.Action, "error")
		return e.save(r, now, e.entry(r, op.ID, EventResult, actor, op.Detail))
	case res.blocked:
		op.State, op.Detail = OpBlocked, res.detail
		e.metrics.action(op.Action, "blocked")
	case r.DryRun:
		op.State, op.Detail, op.ActedAt = OpDryRun, "dry run accepted: "+res.detail, now
		e.metrics.action(op.Action, "dry_run")
	default:
		op.State, op.Detail, op.ActedAt, op.Undo = OpDone, res.detail, now, res.undo
		e.metrics.action(op.Action, "done")
		if res.expect > 0 && st.Verify != "" {
			// The replicas the plan expected came from the view; the API server's answer
			// at the write is what the verification waits for.
			q, err := config.RenderVerify(st.Verify, config.VerifyTarget{Cluster: op.Cluster, Node: op.Name, Namespace: op.Namespace, Name: op.Name,
				From: op.From, Replicas: res.expect})
			if err == nil {
				op.Verify = q
			}
		}
	}
	return e.save(r, now, e.entry(r, op.ID, EventResult, actor, res.detail))
}

// verify evaluates an op's verification: 1 passed, 0 failed, -1 inconclusive (no data, NaN,
// or the query failed).
func (e *Engine) verify(ctx context.Context, op *Op, now time.Time) (int, string) {
	v, err := e.query(ctx, op.Verify, now)
	if err != nil {
		return -1, "the verification query failed: " + err.Error()
	}
	if len(v) == 0 {
		return -1, "no data for " + op.Verify
	}
	for _, s := range v {
		if math.IsNaN(s.F) {
			return -1, "NaN from " + op.Verify
		}
		if s.F == 0 {
			return 0, "0 from " + op.Verify
		}
	}
	return 1, op.Verify
}

func (e *Engine) query(ctx context.Context, q string, now time.Time) (promql.Vector, error) {
	return e.o.Query(ctx, q, now)
}

// blockedRetry is how long an op whose writes were refused for now (an eviction a
// PodDisruptionBudget refused, a conflict) waits before it is tried again: kubectl drain's 5s.
const blockedRetry = 5 * time.Second

// ErrConflict is returned when a decision does not fit the remediation's state.
var ErrConflict = errors.New("conflict")

// Decide records an operator's decision on a remediation that waits for one: an approve step
// (approve: it runs; deny: the remediation ends denied) or an inconclusive verification
// (approve: verify again for the step's timeout; deny: the remediation ends failed).
func (e *Engine) Decide(id, who string, approve bool, comment string) (*Remediation, error) {
	return e.decide(id, who, approve, comment, nil)
}

// DecideApproval decides the approval request of step that was made at requested, and nothing
// else: an approval link names the request it was sent for, so a link used twice, or after
// the step was decided or asked again, is a conflict instead of a decision on something its
// holder never saw.
func (e *Engine) DecideApproval(id string, step int, requested time.Time, who string, approve bool, comment string) (*Remediation, error) {
	return e.decide(id, who, approve, comment, func(r *Remediation) error {
		if r.Current != step || r.State != StateWaiting || r.Steps[step].State != StepWaiting ||
			r.Steps[step].Approval == nil || !r.Steps[step].Approval.RequestedAt.Equal(requested) {
			return fmt.Errorf("%w: remediation %s: this approval request was already decided or replaced (state %s)", ErrConflict, id, r.State)
		}
		return nil
	})
}

func (e *Engine) decide(id, who string, approve bool, comment string, check func(*Remediation) error) (*Remediation, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	cur, ok := e.active[id]
	if !ok {
		if _, err := e.o.Store.Get(id); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: remediation %s is over", ErrConflict, id)
	}
	if cur.Current >= len(cur.Steps) {
		return nil, fmt.Errorf("%w: remediation %s has no step left", ErrConflict, id)
	}
	if check != nil {
		if err := check(cur); err != nil {
			return nil, err
		}
	}
	// The decision is made on a copy, stored with its audit in one transaction, and only then
	// takes the running remediation's place: a failed write leaves both as they were.
	r := cur.clone()
	now := e.now()
	decision := map[bool]string{true: EventApproved, false: EventDenied}[approve]
	detail := decision + " by " + who
	if comment != "" {
		detail += ": " + comment
	}
	st := r.Steps[r.Current]
	entries := []*AuditEntry{e.entry(r, "", EventApproval, who, detail)}
	end := func(state, reason string) {
		r.State, r.Reason, r.DoneAt = state, reason, now
		entries = append(entries, e.entry(r, "", EventState, actor, state+": "+reason))
	}
	switch {
	case r.State == StateWaiting && st.State == StepWaiting:
		st.Approval.Decision, st.Approval.By, st.Approval.At = decision, who, now
		if approve {
			st.State, st.StartedAt, st.Attempts = StepActing, now, 1
			r.State, r.Reason = StateRunning, ""
		} else {
			end(StateDenied, detail)
		}
	case r.State == StateInconclusive:
		if approve {
			for _, op := range st.Ops {
				if op.State == OpUndecided {
					op.State, op.ActedAt = OpDone, now
				}
			}
			r.State, r.Reason = StateRunning, ""
		} else {
			end(StateFailed, "stopped after an inconclusive verification: "+detail)
		}
	default:
		return nil, fmt.Errorf("%w: remediation %s does not wait for a decision (state %s)", ErrConflict, id, r.State)
	}
	// In the hub first, with leader election: a decision this process acknowledges is one the
	// next leader knows.
	if err := e.share(context.Background(), nil, e.paused, now, r); err != nil {
		return nil, err
	}
	if err := e.save(r, now, entries...); err != nil {
		// Not kept here: the hub takes it back too, as far as it can.
		if err := e.share(context.Background(), nil, e.paused, now); err != nil {
			e.logger.Warn("taking a decision that was not kept back from the hub", "remediation", id, "err", err)
		}
		return nil, err
	}
	e.active[id] = r
	if Final(r.State) {
		e.metrics.finished(r)
	}
	e.wake()
	return r.clone(), nil
}

// clone is a deep copy, for an answer encoded outside the engine's lock.
func (r *Remediation) clone() *Remediation {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // a Remediation always marshals
	}
	var c Remediation
	if err := json.Unmarshal(b, &c); err != nil {
		panic(err)
	}
	return &c
}

// Pause stops new actions on the fleet (cluster "") or on one cluster until Resume. The pause
// is stored (with its audit entry) before it takes effect, so a restart keeps it.
func (e *Engine) Pause(cluster, who string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	paused := maps.Clone(e.paused)
	paused[cluster] = who
	if err := e.share(context.Background(), nil, paused, e.now()); err != nil {
		return err
	}
	if err := e.o.Store.SetPaused(cluster, who, &AuditEntry{Time: e.now(), Event: EventGuard, Actor: who, Detail: "paused " + scopeName(cluster)}); err != nil {
		return err
	}
	e.paused[cluster] = who
	return nil
}

// Resume lifts a pause, stored first.
func (e *Engine) Resume(cluster, who string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	paused := maps.Clone(e.paused)
	delete(paused, cluster)
	if err := e.share(context.Background(), nil, paused, e.now()); err != nil {
		return err
	}
	if err := e.o.Store.SetPaused(cluster, "", &AuditEntry{Time: e.now(), Event: EventGuard, Actor: who, Detail: "resumed " + scopeName(cluster)}); err != nil {
		return err
	}
	delete(e.paused, cluster)
	e.wake()
	return nil
}

func scopeName(cluster string) string {
	if cluster == "" {
		return "the fleet"
	}
	return "cluster " + cluster
}

// Paused lists what is paused: "" for the fleet, or cluster names, with who paused them.
func (e *Engine) Paused() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]string, len(e.paused))
	for k, v := range e.paused {
		out[k] = v
	}
	return out
}

// Plan says what the engine would do about an incident now, without keeping it.
func (e *Engine) Plan(ctx context.Context, inc *correlate.Incident) (*Remediation, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	pb, ok := e.match(inc)
	if !ok {
		return nil, fmt.Errorf("no playbook matches incident %s (%s)", inc.ID, inc.Key)
	}
	now := e.now()
	r, err := e.plan(ctx, inc, pb, now, nil)
	if err != nil || r == nil || Final(r.State) {
		return r, err
	}
	open := map[string]*correlate.Incident{}
	for _, i := range e.o.Incidents() {
		open[i.ID] = i
	}
	if st := r.Steps[0]; len(st.Ops) > 0 {
		r.Guards = e.checks(r, st.Ops[0], open, now, false)
	}
	return r, nil
}

// apiUp reads every cluster's API probe from the view: 1 reachable, 0 not.
func (e *Engine) apiUp(ctx context.Context, now time.Time) (map[string]float64, error) {
	v, err := e.query(ctx, collector.APIUpMetric, now)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, s := range v {
		out[s.Metric.Get(config.ClusterLabel)] = s.F
	}
	return out, nil
}

// limits are the token buckets.
type limits struct {
	node, workload *rate.Limiter
	perCluster     map[string]*rate.Limiter
	cfg            config.RateLimitsConfig
}

func newLimits(c config.RateLimitsConfig) *limits {
	return &limits{
		node:       rate.NewLimiter(rate.Limit(c.Node.PerSecond), c.Node.Burst),
		workload:   rate.NewLimiter(rate.Limit(c.Workload.PerSecond), c.Workload.Burst),
		perCluster: map[string]*rate.Limiter{}, cfg: c,
	}
}

// take takes a token from the op's class and its cluster, or from neither; degraded slows
// both down by the configured factor.
func (l *limits) take(op *Op, now time.Time, degraded bool) (bool, string) {
	class, name := l.workload, "workload"
	rc := l.cfg.Workload
	if op.Kind == "Node" {
		class, name, rc = l.node, "node", l.cfg.Node
	}
	cl := l.perCluster[op.Cluster]
	if cl == nil {
		cl = rate.NewLimiter(rate.Limit(l.cfg.PerCluster.PerSecond), l.cfg.PerCluster.Burst)
		l.perCluster[op.Cluster] = cl
	}
	factor := 1.0
	if degraded {
		factor = l.cfg.Degraded
	}
	class.SetLimitAt(now, rate.Limit(rc.PerSecond*factor))
	cl.SetLimitAt(now, rate.Limit(l.cfg.PerCluster.PerSecond*factor))
	a := class.ReserveN(now, 1)
	if d := a.DelayFrom(now); !a.OK() || d > 0 {
		a.CancelAt(now)
		return false, fmt.Sprintf("%s actions are over their rate (%.2f/s, burst %d%s); next in %s", name, rc.PerSecond*factor, rc.Burst, degradedNote(degraded), d.Round(time.Millisecond))
	}
	b := cl.ReserveN(now, 1)
	if d := b.DelayFrom(now); !b.OK() || d > 0 {
		b.CancelAt(now)
		a.CancelAt(now)
		return false, fmt.Sprintf("actions on cluster %s are over their rate (%.2f/s, burst %d%s); next in %s", op.Cluster, l.cfg.PerCluster.PerSecond*factor, l.cfg.PerCluster.Burst, degradedNote(degraded), d.Round(time.Millisecond))
	}
	return true, fmt.Sprintf("%s and cluster %s tokens taken", name, op.Cluster)
}

func degradedNote(degraded bool) string {
	if degraded {
		return ", slowed: the fleet is degraded"
	}
	return ""
}
