package remediate

import (
	"slices"
	"time"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// Remediation states. A remediation is planned for an incident, waits for approval when a
// step asks for it, runs its steps one at a time and ends succeeded, failed, denied, expired,
// or inconclusive (a verification had no data: a human decides).
const (
	StatePlanned      = "planned"
	StateWaiting      = "waiting_approval"
	StateRunning      = "running"
	StateSucceeded    = "succeeded"
	StateFailed       = "failed"
	StateDenied       = "denied"
	StateExpired      = "expired"
	StateInconclusive = "inconclusive"
	// StateHeld: a guard keeps the remediation from starting its next action (budget, pause,
	// suppression, partition); it goes on by itself once the guard passes.
	StateHeld = "held"
	// StateNotified: a notify-only playbook ran; nothing was changed.
	StateNotified = "notified"
	// StateCancelled: the incident resolved before the remediation acted.
	StateCancelled = "cancelled"
	// StateRefused: a guard refused the plan outright (a failover the surviving clusters
	// have no room for); nothing was done, and the reason has the numbers.
	StateRefused = "refused"
)

// Final reports whether a remediation in state s is over.
func Final(s string) bool {
	switch s {
	case StateSucceeded, StateFailed, StateDenied, StateExpired, StateNotified, StateCancelled, StateRefused:
		return true
	}
	return false
}

// Step states.
const (
	StepPending   = "pending"
	StepWaiting   = "waiting_approval"
	StepActing    = "acting"
	StepVerifying = "verifying"
	StepVerified  = "verified"
	StepFailed    = "failed"
	StepSkipped   = "skipped"
	StepNotified  = "notified"
)

// Remediation is one playbook run for one incident. Field names are the JSON API's. It is
// stored (bbolt) at every change, before the change acts.
type Remediation struct {
	ID          string    `json:"id"`
	IncidentID  string    `json:"incident_id"`
	IncidentKey string    `json:"incident_key"`
	Playbook    string    `json:"playbook"`
	Clusters    []string  `json:"clusters"`
	State       string    `json:"state"`
	Reason      string    `json:"reason,omitempty"`
	DryRun      bool      `json:"dry_run,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// OpenedAt is when the incident opened: the RTO runs from there to the verified end.
	OpenedAt time.Time  `json:"incident_opened_at"`
	DoneAt   time.Time  `json:"done_at,omitzero"`
	Steps    []*StepRun `json:"steps"`
	// Current is the index of the step that runs now (len(Steps) when done).
	Current int `json:"current"`
	// Guards are the checks of the last evaluation, each with its verdict.
	Guards []Check `json:"guards,omitempty"`
	// Revision counts stored changes.
	Revision int `json:"revision"`
	// FailbackOf is the failover remediation a failback takes back; FailbackID, on a
	// failover, the failback planned for it.
	FailbackOf string `json:"failback_of,omitempty"`
	FailbackID string `json:"failback_id,omitempty"`
	// Capacity is placement's what-if for a failover, as planned.
	Capacity string `json:"capacity,omitempty"`
}

// StepRun is a step and what became of it.
type StepRun struct {
	config.StepConfig
	State    string    `json:"state"`
	Attempts int       `json:"attempts"`
	Ops      []*Op     `json:"ops"`
	Reason   string    `json:"reason,omitempty"`
	Approval *Approval `json:"approval,omitempty"`
	// RPOReading is the replication lag a failover step's RPO gate read when the step began: once,
	// not again before every op.
	RPOReading string `json:"rpo_reading,omitempty"`
	// StartedAt is when the step began acting; DoneAt when it verified, failed or was skipped.
	StartedAt time.Time `json:"started_at,omitzero"`
	DoneAt    time.Time `json:"done_at,omitzero"`
}

// Approval is the decision on an approve step.
type Approval struct {
	RequestedAt time.Time `json:"requested_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	Decision    string    `json:"decision,omitempty"` // EventApproved, EventDenied
	By          string    `json:"by,omitempty"`
	At          time.Time `json:"at,omitzero"`
}

// Op states.
const (
	OpPending   = "pending"
	OpDone      = "done"
	OpVerified  = "verified"
	OpFailed    = "failed"
	OpUndone    = "undone"
	OpBlocked   = "blocked" // e.g. an eviction a PodDisruptionBudget refused; tried again later
	OpDryRun    = "dry_run"
	OpNotified  = "notified"
	OpUndecided = "inconclusive"
)

// Op is one action on one target: cordon a node, drain it, roll back one Deployment in one
// cluster. Its ID goes into the annotation the action writes, so a restart resumes instead of
// acting twice.
type Op struct {
	ID        string `json:"id"`
	Action    string `json:"action"`
	Cluster   string `json:"cluster"`
	Kind      string `json:"kind"` // Node, Deployment
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// Image is the bad image a rollback takes out (the rollout incident's).
	Image string `json:"image,omitempty"`
	// From is the lost cluster a failover op moves the workload from (Cluster is where it
	// goes), and Replicas how many replicas it adds there.
	From     string `json:"from,omitempty"`
	Replicas int    `json:"replicas,omitempty"`
	// Of is the failover op a failback op takes back, and TakeBack what that op did
	// (its Undo).
	Of       string `json:"of,omitempty"`
	TakeBack string `json:"take_back,omitempty"`
	// Calls are the API calls the op makes, as `VERB path`, for the plan and the audit.
	Calls  []string `json:"calls"`
	Verify string   `json:"verify,omitempty"`
	State  string   `json:"state"`
	Detail string   `json:"detail,omitempty"`
	// ActedAt is when the op's writes went out; VerifiedAt when its verification passed.
	ActedAt time.Time `json:"acted_at,omitzero"`
	// TriedAt is the last attempt to act, refused or not.
	TriedAt    time.Time `json:"tried_at,omitzero"`
	VerifiedAt time.Time `json:"verified_at,omitzero"`
	// Undo says what the op did that a failed verification takes back.
	Undo string `json:"undo,omitempty"`
}

// Check is one guard's verdict on a remediation.
type Check struct {
	Guard  string `json:"guard"`
	Passed bool   `json:"passed"`
	Detail string `json:"detail"`
}

// Guard names, as checks and metric labels.
const (
	GuardDryRun      = "dry_run"
	GuardApproval    = "approval"
	GuardRateLimit   = "rate_limit"
	GuardBudget      = "budget"
	GuardPartition   = "partition"
	GuardSuppression = "suppression"
	GuardPause       = "pause"
	// GuardLost: a failover acts only while its cluster is lost: silent, its API server
	// unreachable, the rest of the fleet in sight.
	GuardLost = "lost"
	// GuardCapacity: a failover is refused when the surviving clusters would go past the
	// saturation ceiling.
	GuardCapacity = "capacity"
	// GuardRPO: a failover waits for an operator while replication lags past the RPO.
	GuardRPO = "rpo"
)

// AuditEntry is one line of the audit: a plan, an approval, an API call before it is made and
// its result, a verification, a state change. Entries are kept in order of Seq.
type AuditEntry struct {
	Seq           uint64    `json:"seq"`
	Time          time.Time `json:"time"`
	RemediationID string    `json:"remediation_id"`
	IncidentID    string    `json:"incident_id,omitempty"`
	OpID          string    `json:"op_id,omitempty"`
	// Event is plan, guard, approval, call, result, verify, state.
	Event  string `json:"event"`
	Actor  string `json:"actor"`
	Detail string `json:"detail"`
}

// Audit events.
const (
	EventPlan     = "plan"
	EventApproval = "approval"
	EventCall     = "call"
	EventResult   = "result"
	EventVerify   = "verify"
	EventState    = "state"
	EventGuard    = "guard"
)

// Remediation events, as the journal and the on-call hooks name them. Besides these, a
// remediation that ends journals its final state by name (succeeded, failed, expired,
// cancelled, refused, notified, inconclusive), and one a guard holds, "held".
const (
	EventPlanned    = "planned"
	EventWaiting    = "waiting_approval"
	EventApproved   = "approved"
	EventDenied     = "denied"
	EventExecuted   = "executed"
	EventVerified   = "verified"
	EventRolledBack = "rolled_back"
	// EventFrozen: the partition guard holds the remediation (most of the fleet looks
	// unreachable: fleetwatch is likelier cut off than the clusters are down).
	EventFrozen = "frozen"
)

// eventsOf names what changed from prev (nil: not stored before) to r, in the order it
// happened: step by step, then the remediation's own state.
func eventsOf(prev, r *Remediation) []string {
	var out []string
	add := func(kind string) {
		if !slices.Contains(out, kind) {
			out = append(out, kind)
		}
	}
	if prev == nil {
		add(EventPlanned)
	}
	for i, st := range r.Steps {
		var ps *StepRun
		if prev != nil && i < len(prev.Steps) {
			ps = prev.Steps[i]
		}
		was := func(state string) bool { return ps != nil && ps.State == state }
		if st.State == StepWaiting && !was(StepWaiting) {
			add(EventWaiting)
		}
		if a := st.Approval; a != nil && a.Decision != "" && (ps == nil || ps.Approval == nil || ps.Approval.Decision == "") {
			add(a.Decision)
		}
		// Executed: the step's writes went out; a step that went out and verified between two
		// stores says both.
		if (st.State == StepVerifying || st.State == StepVerified) && !was(StepVerifying) && !was(StepVerified) {
			add(EventExecuted)
		}
		if st.State == StepVerified && !was(StepVerified) {
			add(EventVerified)
		}
		for j, op := range st.Ops {
			if op.State == OpUndone && (ps == nil || j >= len(ps.Ops) || ps.Ops[j].State != OpUndone) {
				add(EventRolledBack)
			}
		}
	}
	if prev != nil && prev.State == r.State {
		return out
	}
	switch {
	case r.State == StateHeld && slices.ContainsFunc(r.Guards, func(c Check) bool { return c.Guard == GuardPartition && !c.Passed }):
		add(EventFrozen)
	case r.State == StateHeld || Final(r.State) || r.State == StateInconclusive:
		add(r.State)
	}
	return out
}
