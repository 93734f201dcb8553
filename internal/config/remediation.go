package config

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
)

// Remediation actions: what a playbook step does (remediate/README.md).
const (
	// ActionCordon marks a node unschedulable.
	ActionCordon = "cordon"
	// ActionDrain evicts a node's pods through the Eviction API, PodDisruptionBudgets respected.
	ActionDrain = "drain"
	// ActionRollback rolls a Deployment back to its previous pod template.
	ActionRollback = "rollback"
	// ActionNotify does nothing but say, in the audit and the incident, what it would advise.
	ActionNotify = "notify"
	// ActionFailover creates (or scales up) a lost cluster's Deployments in the clusters
	// placement picks, from the specs fleetwatch kept while the cluster was healthy. It never
	// writes to the lost cluster.
	ActionFailover = "failover"
	// ActionFailback takes back what a failover created or scaled once the lost cluster's
	// own Deployments run again.
	ActionFailback = "failback"
	// ActionShed scales a saturated cluster's Deployments down by the replicas the failover
	// step before it moved to other clusters.
	ActionShed = "shed"
	// ActionRestart restarts a failing Deployment's pods, as `kubectl rollout restart` does.
	ActionRestart = "restart"
)

// Actions are every action a step may name.
var Actions = []string{ActionCordon, ActionDrain, ActionRollback, ActionNotify, ActionFailover, ActionFailback, ActionShed, ActionRestart}

// DefaultRPO is a failover step's recovery point objective: with an rpo_query, a failover
// waits for an operator while a workload's replication lag is above it.
const DefaultRPO = model.Duration(5 * time.Minute)

// Step modes.
const (
	// ModeAuto runs the step when its guards pass.
	ModeAuto = "auto"
	// ModeApprove waits for an identity with the operate role to approve it.
	ModeApprove = "approve"
	// ModeNotify plans the step and records it, and never acts.
	ModeNotify = "notify"
)

// When a step runs, after the step before it.
const (
	// WhenVerified runs the step once the step before it verified (the usual sequence).
	WhenVerified = "verified"
	// WhenFailed runs the step only if the step before it failed: an escalation.
	WhenFailed = "failed"
)

// DefaultRemediation are the remediation defaults (remediate/README.md). Remediation is off
// until enabled, and then every guard is on.
var DefaultRemediation = RemediationConfig{
	EvaluationInterval: model.Duration(10 * time.Second),
	ApprovalTimeout:    model.Duration(time.Hour),
	RateLimits: RateLimitsConfig{
		// One node every 5 s, three at once: a NotReady pool is cordoned and drained in
		// minutes, never all at once.
		Node: RateConfig{PerSecond: 0.2, Burst: 3},
		// 450 workloads (the RTO budget's sizing) in under 4 minutes at full rate, under 8
		// when the fleet is degraded, inside a 15-minute recovery.
		Workload:   RateConfig{PerSecond: 2, Burst: 50},
		PerCluster: RateConfig{PerSecond: 1, Burst: 20},
		Degraded:   0.5,
	},
	Budget: BudgetConfig{MaxNodes: 0.2, MaxWorkloads: 0.25, MaxClusters: 0.34},
	Specs: SpecsConfig{
		Interval:          model.Duration(time.Minute),
		ExcludeNamespaces: []string{"kube-system", "kube-public", "kube-node-lease"},
	},
}

// RemediationConfig is fleetwatch.yml's remediation block: what fleetwatch may do about an
// incident, and the guards around it.
type RemediationConfig struct {
	Enabled bool `yaml:"enabled"`
	// DryRun plans, approves, audits and sends every write with dryRun=All: nothing changes.
	DryRun bool `yaml:"dry_run,omitempty"`
	// EvaluationInterval is how often incidents are matched and running remediations advanced.
	EvaluationInterval model.Duration `yaml:"evaluation_interval,omitempty"`
	// ApprovalTimeout is how long an approve step waits before it expires.
	ApprovalTimeout model.Duration   `yaml:"approval_timeout,omitempty"`
	RateLimits      RateLimitsConfig `yaml:"rate_limits,omitempty"`
	Budget          BudgetConfig     `yaml:"budget,omitempty"`
	// PauseWhile names alerts: while any of them fires, no new action starts.
	PauseWhile []string `yaml:"pause_while,omitempty"`
	// Specs is how fleetwatch keeps every reachable cluster's Deployments, the manifests a
	// failover recreates elsewhere when the cluster is lost.
	Specs SpecsConfig `yaml:"specs,omitempty"`
	// LeaderElection, when set, makes fleetwatch processes sharing it elect one that acts
	// (a Lease in a hub cluster, client-go's leaderelection); the others only answer reads.
	LeaderElection *LeaderElectionConfig `yaml:"leader_election,omitempty"`
	// Playbooks replace the built-in playbook of the same name, or add one.
	Playbooks []PlaybookConfig `yaml:"playbooks,omitempty"`
}

// LeaderElectionConfig is remediation.leader_election: a Lease in one of the configured
// clusters (the hub), through that cluster's kubeconfig_file, or in the cluster fleetwatch runs
// in, through its pod's ServiceAccount.
type LeaderElectionConfig struct {
	// Cluster is the hub: a configured cluster with a kubeconfig_file. Empty: the cluster
	// fleetwatch runs in (the ha install, deploy/kubernetes/overlays/ha), whose ServiceAccount
	// needs a Role for Leases in Namespace.
	Cluster   string `yaml:"cluster,omitempty"`
	Namespace string `yaml:"namespace,omitempty"`
	// LeaseName names the Lease and the ConfigMap next to it where the leader keeps what the
	// next one continues from (remediate/handover.go).
	LeaseName string `yaml:"lease_name,omitempty"`
	// Identity names this process in the Lease and in remediation's user agent (default:
	// the host name and a random suffix).
	Identity      string         `yaml:"identity,omitempty"`
	LeaseDuration model.Duration `yaml:"lease_duration,omitempty"`
	RenewDeadline model.Duration `yaml:"renew_deadline,omitempty"`
	RetryPeriod   model.Duration `yaml:"retry_period,omitempty"`
}

// DefaultLeaderElection are client-go's usual leader election timings (kube-controller-
// manager's), a Lease named fleetwatch-remediation in kube-system.
var DefaultLeaderElection = LeaderElectionConfig{
	Namespace: "kube-system", LeaseName: "fleetwatch-remediation",
	LeaseDuration: model.Duration(15 * time.Second), RenewDeadline: model.Duration(10 * time.Second), RetryPeriod: model.Duration(2 * time.Second),
}

// UnmarshalYAML sets the defaults.
func (l *LeaderElectionConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*l = DefaultLeaderElection
	type plain LeaderElectionConfig
	return unmarshal((*plain)(l))
}

// Validate checks the leader election against the configured clusters.
func (l *LeaderElectionConfig) Validate(clusters []*ClusterConfig) error {
	const where = "remediation.leader_election"
	i := slices.IndexFunc(clusters, func(c *ClusterConfig) bool { return c != nil && c.Name == l.Cluster })
	// An empty cluster is the one fleetwatch runs in: whether it runs in one is known only
	// when serving.
	switch {
	case l.Cluster != "" && i < 0:
		return fmt.Errorf("%s.cluster: %q is not a configured cluster", where, l.Cluster)
	case l.Cluster != "" && clusters[i].KubeconfigFile == "":
		return fmt.Errorf("%s.cluster: cluster %q has no kubeconfig_file to reach its API server", where, l.Cluster)
	case l.Namespace == "" || l.LeaseName == "":
		return fmt.Errorf("%s: namespace and lease_name must not be empty", where)
	case !(l.RetryPeriod > 0 && l.RetryPeriod < l.RenewDeadline && l.RenewDeadline < l.LeaseDuration):
		return fmt.Errorf("%s: want 0 < retry_period < renew_deadline < lease_duration, got %s, %s, %s", where, l.RetryPeriod, l.RenewDeadline, l.LeaseDuration)
	}
	return nil
}

// SpecsConfig is remediation.specs.
type SpecsConfig struct {
	// Interval is how often each reachable cluster's Deployments are read and kept.
	Interval model.Duration `yaml:"interval,omitempty"`
	// ExcludeNamespaces are not kept (and so never failed over). A Deployment annotated
	// fleetwatch.io/failover: "false" is not either.
	ExcludeNamespaces []string `yaml:"exclude_namespaces,omitempty"`
}

// RateLimitsConfig are token buckets: one per action class, one per cluster.
type RateLimitsConfig struct {
	// Node actions: cordon, drain.
	Node RateConfig `yaml:"node,omitempty"`
	// Workload actions: rollback (and, later, scale and failover).
	Workload RateConfig `yaml:"workload,omitempty"`
	// PerCluster limits every action on one cluster.
	PerCluster RateConfig `yaml:"per_cluster,omitempty"`
	// Degraded multiplies every rate while the fleet is degraded (a remediation failed or
	// froze, or clusters are lost).
	Degraded float64 `yaml:"degraded_factor,omitempty"`
}

// RateConfig is one token bucket.
type RateConfig struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// BudgetConfig is the fleet's blast-radius budget: the largest share of its nodes, workloads
// and clusters that may be under remediation (in flight or not yet verified) at once. Above it,
// nothing new starts and a remediation storm is reported.
type BudgetConfig struct {
	MaxNodes     float64 `yaml:"max_nodes,omitempty"`
	MaxWorkloads float64 `yaml:"max_workloads,omitempty"`
	MaxClusters  float64 `yaml:"max_clusters,omitempty"`
}

// PlaybookConfig is a playbook: the incidents it matches and its steps.
type PlaybookConfig struct {
	Name  string       `yaml:"name"`
	Match MatchConfig  `yaml:"match"`
	Steps []StepConfig `yaml:"steps"`
}

// MatchConfig selects incidents; every field given must match, an empty field matches all.
type MatchConfig struct {
	// Kinds are incident kinds: the first part of an incident's key (nodes, rollout, failures,
	// cluster, saturation, alert).
	Kinds      []string          `yaml:"kinds,omitempty"`
	Scope      string            `yaml:"scope,omitempty"`
	Severities []string          `yaml:"severities,omitempty"`
	Labels     map[string]string `yaml:"labels,omitempty"`
}

// StepConfig is one step of a playbook.
type StepConfig struct {
	Action string `yaml:"action"`
	Mode   string `yaml:"mode,omitempty"`
	// When says which outcome of the step before starts this one.
	When string `yaml:"when,omitempty"`
	// Timeout is how long the step may take to verify, per target.
	Timeout model.Duration `yaml:"timeout,omitempty"`
	// Verify is a PromQL expression over the global view, a Go template over the target
	// ({{.Cluster}}, {{.Node}}, {{.Namespace}}, {{.Name}}). The step is verified when every
	// sample is non-zero, failed when one is zero at the timeout; an empty result or NaN is
	// inconclusive and pauses for a human.
	Verify string `yaml:"verify,omitempty"`
	// Retries is how many more times the step is tried after it failed.
	Retries int `yaml:"retries,omitempty"`
	// RPOQuery (failover steps) is PromQL for a workload's replication lag in seconds, a
	// template like Verify with {{.Cluster}} the lost cluster. While a value is above RPO, or
	// unknown, the failover waits for an operator's approval; the plan shows the values.
	RPOQuery string `yaml:"rpo_query,omitempty"`
	// RPO is the recovery point objective the RPOQuery is held to (default 5m).
	RPO model.Duration `yaml:"rpo,omitempty"`
}

// VerifyTarget is what a verification template sees: the target, and for failover ops the
// cluster the workload came from and the replicas it must have there.
type VerifyTarget struct {
	Cluster, Node, Namespace, Name string
	From                           string
	Replicas                       int
}

// UnmarshalYAML sets the defaults and validates.
func (c *RemediationConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultRemediation
	type plain RemediationConfig
	if err := unmarshal((*plain)(c)); err != nil {
		return fmt.Errorf("remediation: %w", err)
	}
	return c.Validate()
}

// Validate reports the first wrong field, named by its key in fleetwatch.yml.
func (c RemediationConfig) Validate() error {
	if c.EvaluationInterval <= 0 {
		return fmt.Errorf("remediation.evaluation_interval: must be positive, got %s", c.EvaluationInterval)
	}
	if c.ApprovalTimeout <= 0 {
		return fmt.Errorf("remediation.approval_timeout: must be positive, got %s", c.ApprovalTimeout)
	}
	for name, r := range map[string]RateConfig{"node": c.RateLimits.Node, "workload": c.RateLimits.Workload, "per_cluster": c.RateLimits.PerCluster} {
		if !(r.PerSecond > 0) || math.IsInf(r.PerSecond, 0) || r.Burst < 1 {
			return fmt.Errorf("remediation.rate_limits.%s: per_second must be positive and burst at least 1, got %v and %d", name, r.PerSecond, r.Burst)
		}
	}
	if d := c.RateLimits.Degraded; !(d > 0 && d <= 1) {
		return fmt.Errorf("remediation.rate_limits.degraded_factor: must be in (0, 1], got %v", d)
	}
	for name, v := range map[string]float64{"max_nodes": c.Budget.MaxNodes, "max_workloads": c.Budget.MaxWorkloads, "max_clusters": c.Budget.MaxClusters} {
		if !(v > 0 && v <= 1) {
			return fmt.Errorf("remediation.budget.%s: must be in (0, 1], got %v", name, v)
		}
	}
	if c.Specs.Interval <= 0 {
		return fmt.Errorf("remediation.specs.interval: must be positive, got %s", c.Specs.Interval)
	}
	seen := map[string]bool{}
	for i, p := range c.Playbooks {
		where := fmt.Sprintf("remediation.playbooks[%d]", i)
		if p.Name == "" {
			return fmt.Errorf("%s.name: must not be empty", where)
		}
		if seen[p.Name] {
			return fmt.Errorf("%s.name: %q is defined more than once", where, p.Name)
		}
		seen[p.Name] = true
		if err := p.Validate(); err != nil {
			return fmt.Errorf("%s (%s).%w", where, p.Name, err)
		}
	}
	return nil
}

// Validate checks a playbook's steps; the error starts with the field's path inside it.
func (p PlaybookConfig) Validate() error {
	if len(p.Steps) == 0 {
		return fmt.Errorf("steps: a playbook needs at least one step")
	}
	if s := p.Match.Scope; s != "" && s != "cluster" && s != "fleet" {
		return fmt.Errorf("match.scope: must be cluster or fleet, got %q", s)
	}
	for i, s := range p.Steps {
		if !slices.Contains(Actions, s.Action) {
			return fmt.Errorf("steps[%d].action: unknown action %q; known: %s", i, s.Action, strings.Join(Actions, ", "))
		}
		switch s.Mode {
		case ModeAuto, ModeApprove, ModeNotify:
		default:
			return fmt.Errorf("steps[%d].mode: must be auto, approve or notify, got %q", i, s.Mode)
		}
		switch s.When {
		case WhenVerified, WhenFailed:
		default:
			return fmt.Errorf("steps[%d].when: must be verified or failed, got %q", i, s.When)
		}
		if i == 0 && s.When == WhenFailed {
			return fmt.Errorf("steps[0].when: the first step has no step before it to fail")
		}
		if s.Timeout <= 0 {
			return fmt.Errorf("steps[%d].timeout: must be positive, got %s", i, s.Timeout)
		}
		if s.Retries < 0 {
			return fmt.Errorf("steps[%d].retries: must be >= 0, got %d", i, s.Retries)
		}
		if s.Action != ActionNotify && s.Verify == "" {
			return fmt.Errorf("steps[%d].verify: an action that changes a cluster needs a verification", i)
		}
		probe := VerifyTarget{Cluster: "c", Node: "n", Namespace: "ns", Name: "w", From: "f", Replicas: 1}
		if s.Verify != "" {
			if _, err := RenderVerify(s.Verify, probe); err != nil {
				return fmt.Errorf("steps[%d].verify: %w", i, err)
			}
		}
		if s.RPOQuery != "" {
			if s.Action != ActionFailover {
				return fmt.Errorf("steps[%d].rpo_query: only a failover step has a recovery point", i)
			}
			if _, err := RenderVerify(s.RPOQuery, probe); err != nil {
				return fmt.Errorf("steps[%d].rpo_query: %w", i, err)
			}
		}
		if s.RPO < 0 {
			return fmt.Errorf("steps[%d].rpo: must not be negative, got %s", i, s.RPO)
		}
	}
	return nil
}

// UnmarshalYAML fills a step's defaults: mode auto, when verified, timeout 5 minutes, RPO 5
// minutes.
func (s *StepConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*s = StepConfig{Mode: ModeAuto, When: WhenVerified, Timeout: model.Duration(5 * time.Minute), RPO: DefaultRPO}
	type plain StepConfig
	return unmarshal((*plain)(s))
}

// RenderVerify expands a verification template for a target and checks that the result is
// PromQL.
func RenderVerify(tmpl string, t VerifyTarget) (string, error) {
	tp, err := template.New("verify").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := tp.Execute(&b, t); err != nil {
		return "", err
	}
	if _, err := parser.ParseExpr(b.String()); err != nil {
		return "", fmt.Errorf("%q: %w", b.String(), err)
	}
	return b.String(), nil
}
