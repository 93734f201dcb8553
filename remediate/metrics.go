package remediate

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// Metric names, one home for the engine and the dashboards.
const (
	// MetricRemediations counts remediations that ended, by playbook and final state.
	MetricRemediations = "fleetwatch_remediations_total"
	// MetricActions counts op attempts by action and result (done, dry_run, blocked, error,
	// failed).
	MetricActions = "fleetwatch_remediation_actions_total"
	// MetricActive is the remediations not over, by state (running, held, waiting_approval,
	// inconclusive, planned).
	MetricActive = "fleetwatch_remediations_active"
	// MetricInFlight is the ops that acted and are not verified yet.
	MetricInFlight = "fleetwatch_remediation_ops_in_flight"
	// MetricHolds counts the times a guard held an op, by guard.
	MetricHolds = "fleetwatch_remediation_guard_holds_total"
	// MetricBudgetRemaining is how many more nodes, workloads or clusters may be under
	// remediation at once before the blast-radius budget holds new actions.
	MetricBudgetRemaining = "fleetwatch_remediation_budget_remaining"
	// MetricVerifySeconds is how long an op took from its writes to its verification.
	MetricVerifySeconds = "fleetwatch_remediation_verify_seconds"
	// MetricRTO is the recovery time of a remediation that succeeded: from the incident's
	// opening to its last verification.
	MetricRTO = "fleetwatch_remediation_rto_seconds"
	// MetricSpecsKept is how many Deployments of each cluster fleetwatch keeps for a
	// failover, and MetricSpecsKeptAt when they were last read (Unix seconds): its age is
	// how old the manifests a failover would recreate are.
	MetricSpecsKept   = "fleetwatch_remediation_specs_kept"
	MetricSpecsKeptAt = "fleetwatch_remediation_specs_kept_timestamp_seconds"
	// MetricLeader is 1 while this process acts (it holds the Lease, or there is no leader
	// election), 0 while another does.
	MetricLeader = "fleetwatch_remediation_leader"
)

type metrics struct {
	remediations *prometheus.CounterVec
	actions      *prometheus.CounterVec
	active       *prometheus.GaugeVec
	inFlight     prometheus.Gauge
	holds        *prometheus.CounterVec
	budget       *prometheus.GaugeVec
	verify       prometheus.Histogram
	rto          prometheus.Histogram
	specsKept    *prometheus.GaugeVec
	specsKeptAt  *prometheus.GaugeVec
	leader       prometheus.Gauge
}

// States reported by MetricActive, so that a state that empties shows 0.
var activeStates = []string{StatePlanned, StateWaiting, StateRunning, StateHeld, StateInconclusive}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		remediations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRemediations, Help: "Remediations that ended, by playbook and final state."}, []string{"playbook", "state"}),
		actions:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricActions, Help: "Remediation op attempts, by action and result."}, []string{"action", "result"}),
		active:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricActive, Help: "Remediations not over, by state."}, []string{"state"}),
		inFlight:     prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricInFlight, Help: "Remediation ops that acted and are not verified yet."}),
		holds:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricHolds, Help: "Times a guard held a remediation op, by guard."}, []string{"guard"}),
		budget: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricBudgetRemaining,
			Help: "How many more nodes, workloads or clusters may be under remediation at once before the blast-radius budget holds new actions."}, []string{"resource"}),
		verify: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricVerifySeconds, Help: "Time from a remediation op's writes to its verification in the global view.",
			Buckets: []float64{5, 10, 15, 30, 60, 120, 300, 600}}),
		rto: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricRTO, Help: "Recovery time of successful remediations: from the incident's opening to the last verification.",
			Buckets: []float64{30, 60, 120, 300, 600, 900, 1800, 3600}}),
		specsKept: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricSpecsKept, Help: "Deployments of each cluster kept for a failover."}, []string{"cluster"}),
		specsKeptAt: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricSpecsKeptAt,
			Help: "When each cluster's Deployments were last read and kept for a failover (Unix seconds)."}, []string{"cluster"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricLeader, Help: "1 while this fleetwatch process acts on remediations (it holds the Lease, or there is no leader election), 0 while another does."}),
	}
	for _, s := range activeStates {
		m.active.WithLabelValues(s)
	}
	if reg != nil {
		reg.MustRegister(m.remediations, m.actions, m.active, m.inFlight, m.holds, m.budget, m.verify, m.rto, m.specsKept, m.specsKeptAt, m.leader)
	}
	return m
}

// update sets the gauges from the remediations not over and the budget's items.
// init makes every counter's known series exist at 0, so that a dashboard shows 0 rather than
// no data before the first remediation.
func (m *metrics) init(playbooks []config.PlaybookConfig) {
	for _, p := range playbooks {
		for _, st := range []string{StateSucceeded, StateFailed, StateDenied, StateExpired, StateNotified, StateCancelled, StateRefused} {
			m.remediations.WithLabelValues(p.Name, st)
		}
	}
	for _, a := range config.Actions {
		if a == config.ActionNotify {
			continue
		}
		for _, res := range []string{"done", "dry_run", "blocked", "error", "failed"} {
			m.actions.WithLabelValues(a, res)
		}
	}
	for _, g := range []string{GuardPause, GuardSuppression, GuardPartition, GuardBudget, GuardRateLimit, GuardLost, GuardCapacity, GuardRPO} {
		m.holds.WithLabelValues(g)
	}
}

func (m *metrics) update(e *Engine, items []budgetItem) {
	left := make(map[string]float64, len(items))
	for _, it := range items {
		left[it.what] = math.Max(0, math.Floor(it.max*it.total)-float64(it.n))
		m.budget.WithLabelValues(it.what).Set(left[it.what])
	}
	e.budgetLeft.Store(&left)
	counts := map[string]int{}
	inFlight := 0
	for _, r := range e.active {
		counts[r.State]++
		for _, st := range r.Steps {
			for _, op := range st.Ops {
				if op.State == OpDone || op.State == OpBlocked {
					inFlight++
				}
			}
		}
	}
	for _, s := range activeStates {
		m.active.WithLabelValues(s).Set(float64(counts[s]))
	}
	m.inFlight.Set(float64(inFlight))
}

func (m *metrics) finished(r *Remediation) {
	m.remediations.WithLabelValues(r.Playbook, r.State).Inc()
	if r.State == StateSucceeded && !r.DryRun && !r.OpenedAt.IsZero() {
		m.rto.Observe(r.DoneAt.Sub(r.OpenedAt).Seconds())
	}
}

func (m *metrics) action(action, result string) { m.actions.WithLabelValues(action, result).Inc() }

func (m *metrics) held(guard string) { m.holds.WithLabelValues(guard).Inc() }

func (m *metrics) verified(op *Op, now time.Time) {
	if !op.ActedAt.IsZero() {
		m.verify.Observe(now.Sub(op.ActedAt).Seconds())
	}
}
