package remediate

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/schedule"
)

// hold runs the guards before an op acts. When one fails, the remediation is held (stored
// once per change of reason) and the op waits for the next evaluation.
func (e *Engine) hold(r *Remediation, op *Op, open map[string]*correlate.Incident, now time.Time) (bool, error) {
	checks := e.checks(r, op, open, now, true)
	var failed []string
	for _, c := range checks {
		if !c.Passed {
			failed = append(failed, c.Guard+": "+c.Detail)
		}
	}
	if len(failed) == 0 {
		r.Guards = checks
		if r.State == StateHeld {
			r.State, r.Reason = StateRunning, ""
		}
		return false, nil
	}
	reason := fmt.Sprintf("%s %s held: %s", op.Action, op.target(), strings.Join(failed, "; "))
	if r.State == StateHeld && r.Reason == reason {
		return true, nil
	}
	for _, c := range checks {
		if !c.Passed {
			e.metrics.held(c.Guard)
		}
	}
	r.State, r.Reason, r.Guards = StateHeld, reason, checks
	return true, e.save(r, now, e.entry(r, op.ID, EventGuard, actor, reason))
}

// checks evaluates every guard for an op about to act; take says whether to take rate-limit
// tokens (only when every other guard passed).
func (e *Engine) checks(r *Remediation, op *Op, open map[string]*correlate.Incident, now time.Time, take bool) []Check {
	ctx := context.Background()
	var out []Check
	add := func(guard string, passed bool, format string, a ...any) {
		out = append(out, Check{Guard: guard, Passed: passed, Detail: fmt.Sprintf(format, a...)})
	}
	if r.DryRun {
		add(GuardDryRun, true, "dry run: every write goes out with dryRun=All and changes nothing")
	} else {
		add(GuardDryRun, true, "off: writes change the cluster")
	}
	if st := r.Steps[min(r.Current, len(r.Steps)-1)]; st.Approval != nil && st.Approval.Decision != "" {
		add(GuardApproval, true, "%s by %s at %s", st.Approval.Decision, st.Approval.By, st.Approval.At.UTC().Format(time.RFC3339))
	} else if st.Mode == config.ModeApprove {
		add(GuardApproval, true, "waits for an operator with the operate role")
	}

	if who, ok := e.paused[""]; ok {
		add(GuardPause, false, "the fleet is paused by %s", who)
	} else if who, ok := e.paused[op.Cluster]; ok {
		add(GuardPause, false, "cluster %s is paused by %s", op.Cluster, who)
	} else if names := e.settings.PauseWhile; len(names) > 0 {
		firing, err := e.firing(ctx, names, now)
		switch {
		case err != nil:
			add(GuardPause, false, "cannot tell whether %s fire: %v", strings.Join(names, ", "), err)
		case len(firing) > 0:
			add(GuardPause, false, "paused while %s fires", strings.Join(firing, ", "))
		default:
			add(GuardPause, true, "none of %s fires", strings.Join(names, ", "))
		}
	} else {
		add(GuardPause, true, "not paused")
	}

	// Suppression: nothing on the nodes or workloads of a cluster while the cluster itself is
	// the problem (silent, control plane down): that incident's playbook decides.
	suppressed := ""
	for _, inc := range open {
		if inc.ID != r.IncidentID && schedule.IncidentKind(inc.Key) == schedule.IncidentClusterDown && slices.Contains(inc.Clusters, op.Cluster) {
			suppressed = inc.ID
		}
	}
	if suppressed != "" {
		add(GuardSuppression, false, "cluster %s has its own incident %s open (%s)", op.Cluster, suppressed, open[suppressed].RootCause)
	} else {
		add(GuardSuppression, true, "no cluster-level incident on %s", op.Cluster)
	}

	// Partition: act only on a cluster fleetwatch reaches, and on none when more than half of
	// the fleet looks unreachable at once: then the observer is the likelier fault.
	degraded := false
	up, err := e.apiUp(ctx, now)
	if err != nil {
		add(GuardPartition, false, "cannot read %s: %v", "the API probes", err)
	} else {
		var down []string
		for c, v := range up {
			if v == 0 {
				down = append(down, c)
			}
		}
		slices.Sort(down)
		degraded = len(down) > 0
		switch v, probed := up[op.Cluster]; {
		case len(up) > 0 && 2*len(down) > len(up):
			add(GuardPartition, false, "frozen: %d of %d clusters look unreachable (%s); fleetwatch is likelier cut off than they are all down", len(down), len(up), strings.Join(down, ", "))
			e.raised[AlertFrozen] = "Remediation is frozen: " + out[len(out)-1].Detail
		case probed && v == 0:
			add(GuardPartition, false, "fleetwatch cannot reach the API server of %s", op.Cluster)
		case !probed:
			add(GuardPartition, true, "%s's API server is not probed (no kubeconfig_file?)", op.Cluster)
		default:
			add(GuardPartition, true, "%s's API server answers; %d of %d clusters unreachable", op.Cluster, len(down), len(up))
		}
		switch {
		case op.Action == config.ActionFailover && schedule.IncidentKind(r.IncidentKey) == schedule.IncidentClusterDown:
			ok, detail := lost(op.From, open[r.IncidentID], up)
			add(GuardLost, ok, "%s", detail)
		case op.Action == config.ActionFailback:
			ok, detail := back(op.From, open, up)
			add(GuardLost, ok, "%s", detail)
		}
	}
	if r.Capacity != "" {
		add(GuardCapacity, true, "%s", r.Capacity)
	}
	if st := r.Steps[min(r.Current, len(r.Steps)-1)]; st.Action == config.ActionFailover {
		// The gate ran when the step began (StepRun.RPOReading); an op about to act reports that
		// reading rather than querying every op's lag again before each op. A plan reads it now.
		ok, detail := true, st.RPOReading
		if !take || detail == "" {
			ok, detail = e.rpo(ctx, st, now)
		}
		if !ok && st.Approval != nil && st.Approval.Decision != "" {
			ok, detail = true, detail+"; approved by "+st.Approval.By
		}
		add(GuardRPO, ok, "%s", detail)
	}

	budget, detail := e.budget(ctx, op, now)
	add(GuardBudget, budget, "%s", detail)
	if !budget {
		e.raised[AlertStorm] = "Remediation holds new actions: " + detail
	}

	for _, c := range out {
		if !c.Passed {
			return out
		}
	}
	switch {
	case take && !op.TriedAt.IsZero():
		// A retry of an op already started (an eviction a PodDisruptionBudget refused) is the
		// same action: it waits blockedRetry, not for a token.
		add(GuardRateLimit, true, "a retry of an action already counted")
	case take:
		ok, detail := e.limits.take(op, now, degraded)
		add(GuardRateLimit, ok, "%s", detail)
	default:
		add(GuardRateLimit, true, "checked when the op starts")
	}
	return out
}

// firing returns which of the named alerts fire now, from the ALERTS series in the view.
func (e *Engine) firing(ctx context.Context, names []string, now time.Time) ([]string, error) {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(n)
	}
	v, err := e.query(ctx, fmt.Sprintf(`count by (alertname) (ALERTS{alertstate="firing",alertname=~%q})`, strings.Join(quoted, "|")), now)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range v {
		out = append(out, s.Metric.Get(labels.AlertName))
	}
	slices.Sort(out)
	return out, nil
}

// inFlight are the nodes, workloads and clusters that ops acted on and did not verify yet,
// with extra (an op about to act) when it is not nil.
func (e *Engine) inFlight(extra *Op) (nodes, workloads, clusters map[string]bool) {
	nodes, workloads, clusters = map[string]bool{}, map[string]bool{}, map[string]bool{}
	count := func(o *Op) {
		// A failover (and its failback) moves a cluster: it counts as that one cluster, the
		// one unhealthy, not as each of its workloads.
		if o.From != "" {
			clusters[o.From] = true
			return
		}
		key := o.Cluster + "/" + o.Namespace + "/" + o.Name
		if o.Kind == "Node" {
			nodes[key] = true
		} else {
			workloads[key] = true
		}
		clusters[o.Cluster] = true
	}
	for _, r := range e.active {
		for _, st := range r.Steps {
			for _, o := range st.Ops {
				if o.State == OpDone || o.State == OpBlocked {
					count(o)
				}
			}
		}
	}
	if extra != nil {
		count(extra)
	}
	return nodes, workloads, clusters
}

// budgetItem is one resource of the blast-radius budget.
type budgetItem struct {
	what  string
	n     int
	total float64
	max   float64
}

// budgetItems counts the fleet's nodes, workloads and clusters in the view, and those under
// remediation (with extra).
func (e *Engine) budgetItems(ctx context.Context, extra *Op, now time.Time) []budgetItem {
	nodes, workloads, clusters := e.inFlight(extra)
	total := func(q string) float64 {
		v, err := e.query(ctx, q, now)
		if err != nil || len(v) == 0 {
			return 0
		}
		return v[0].F
	}
	b := e.settings.Budget
	return []budgetItem{
		{"nodes", len(nodes), total(`count(kube_node_info)`), b.MaxNodes},
		{"workloads", len(workloads), total(`count(kube_deployment_created)`), b.MaxWorkloads},
		// Every configured cluster has a last-ingest series, silent or not: a lost cluster
		// still counts in the fleet it is part of.
		{"clusters", len(clusters), total(`count(count by (cluster) (` + collector.LastIngestMetric + `))`), b.MaxClusters},
	}
}

// budget checks the fleet's blast-radius budget: the ops acted on and not verified yet, plus
// this one, must stay within the configured shares of the fleet's nodes, workloads and
// clusters.
func (e *Engine) budget(ctx context.Context, op *Op, now time.Time) (bool, string) {
	var parts []string
	for _, c := range e.budgetItems(ctx, op, now) {
		if c.n == 0 {
			continue
		}
		if c.total == 0 {
			return false, fmt.Sprintf("the view has no %s to measure the budget against", c.what)
		}
		share := float64(c.n) / c.total
		if share > c.max {
			return false, fmt.Sprintf("remediation storm: %d of %.0f %s (%.0f%%) would be under remediation at once, above the budget of %.0f%%; nothing new starts until some verify",
				c.n, c.total, c.what, 100*share, 100*c.max)
		}
		parts = append(parts, fmt.Sprintf("%d of %.0f %s (budget %.0f%%)", c.n, c.total, c.what, 100*c.max))
	}
	return true, "under remediation with this op: " + strings.Join(parts, ", ")
}
