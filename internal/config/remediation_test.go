package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRemediationConfig(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "eu-1.token"), []byte("t\n"), 0o600))
	load := func(remediation string) (*Config, error) {
		return Load([]byte("clusters: [{name: eu-1, remote_write: {bearer_token_file: eu-1.token}}]\nremediation:\n"+remediation), dir)
	}
	cfg, err := load("  enabled: true\n")
	require.NoError(t, err)
	require.True(t, cfg.Remediation.Enabled)
	require.Equal(t, DefaultRemediation.RateLimits, cfg.Remediation.RateLimits)
	require.Equal(t, DefaultRemediation.Budget, cfg.Remediation.Budget)

	cfg, err = load("  enabled: true\n  playbooks:\n    - name: drain-only\n      match: {kinds: [nodes]}\n      steps:\n        - {action: drain, verify: 'vector(1)'}\n")
	require.NoError(t, err)
	st := cfg.Remediation.Playbooks[0].Steps[0]
	require.Equal(t, ModeAuto, st.Mode, "a step's mode defaults to auto")
	require.Equal(t, WhenVerified, st.When)
	require.Positive(t, st.Timeout)
	require.Equal(t, DefaultRPO, st.RPO, "a step's RPO defaults to 5 minutes")

	cfg, err = load("  enabled: true\n  specs: {interval: 15s}\n")
	require.NoError(t, err)
	require.Equal(t, DefaultRemediation.Specs.ExcludeNamespaces, cfg.Remediation.Specs.ExcludeNamespaces, "the defaults a block leaves out stay")

	// No cluster named: the Lease is in the cluster fleetwatch runs in (the ha install).
	cfg, err = load("  enabled: true\n  leader_election: {namespace: fleetwatch}\n")
	require.NoError(t, err)
	require.Empty(t, cfg.Remediation.LeaderElection.Cluster)
	require.Equal(t, "fleetwatch", cfg.Remediation.LeaderElection.Namespace)
	require.Equal(t, DefaultLeaderElection.LeaseName, cfg.Remediation.LeaderElection.LeaseName)

	for _, tc := range []struct{ yaml, err string }{
		{"  evaluation_interval: 0s\n", "remediation.evaluation_interval: must be positive"},
		{"  rate_limits: {node: {per_second: 0, burst: 1}}\n", "remediation.rate_limits.node: per_second must be positive"},
		{"  rate_limits: {degraded_factor: 2}\n", "remediation.rate_limits.degraded_factor: must be in (0, 1]"},
		{"  budget: {max_nodes: 1.5}\n", "remediation.budget.max_nodes: must be in (0, 1]"},
		{"  playbooks: [{name: x, steps: []}]\n", "remediation.playbooks[0] (x).steps: a playbook needs at least one step"},
		{"  playbooks: [{name: x, steps: [{action: reboot, verify: up}]}]\n", `remediation.playbooks[0] (x).steps[0].action: unknown action "reboot"`},
		{"  playbooks: [{name: x, steps: [{action: cordon, mode: maybe, verify: up}]}]\n", "steps[0].mode: must be auto, approve or notify"},
		{"  playbooks: [{name: x, steps: [{action: cordon, when: failed, verify: up}]}]\n", "steps[0].when: the first step has no step before it to fail"},
		{"  playbooks: [{name: x, steps: [{action: cordon}]}]\n", "steps[0].verify: an action that changes a cluster needs a verification"},
		{"  playbooks: [{name: x, steps: [{action: cordon, verify: 'up{cluster=\"{{.Cluster}\"}'}]}]\n", "steps[0].verify: template"},
		{"  playbooks: [{name: x, steps: [{action: cordon, verify: 'up{cluster=\"{{.Cluster}}\"'}]}]\n", "steps[0].verify: \"up{cluster=\\\"c\\\"\": "},
		{"  playbooks: [{name: x, steps: [{action: cordon, verify: '{{.Pod}}'}]}]\n", "can't evaluate field Pod"},
		{"  playbooks: [{name: x, steps: [{action: notify}]}, {name: x, steps: [{action: notify}]}]\n", `remediation.playbooks[1].name: "x" is defined more than once`},
		{"  playbooks: [{name: x, match: {scope: region}, steps: [{action: notify}]}]\n", "match.scope: must be cluster or fleet"},
		{"  playbooks: [{name: x, steps: [{action: notify, timeout: 0s}]}]\n", "steps[0].timeout: must be positive"},
		{"  playbooks: [{name: x, steps: [{action: notify, retries: -1}]}]\n", "steps[0].retries: must be >= 0"},
		{"  playbooks: [{name: x, steps: [{action: notify, nope: 1}]}]\n", "field nope not found"},
		{"  specs: {interval: 0s}\n", "remediation.specs.interval: must be positive"},
		{"  leader_election: {namespace: ''}\n", "remediation.leader_election: namespace and lease_name must not be empty"},
		{"  leader_election: {cluster: us-9}\n", `remediation.leader_election.cluster: "us-9" is not a configured cluster`},
		{"  leader_election: {cluster: eu-1}\n", `remediation.leader_election.cluster: cluster "eu-1" has no kubeconfig_file`},
		{"  playbooks: [{name: x, steps: [{action: cordon, verify: up, rpo_query: lag}]}]\n", "steps[0].rpo_query: only a failover step has a recovery point"},
		{"  playbooks: [{name: x, steps: [{action: failover, verify: up, rpo_query: 'lag{'}]}]\n", "steps[0].rpo_query: \"lag{\": "},
	} {
		_, err := load(tc.yaml)
		require.Error(t, err, tc.yaml)
		require.True(t, strings.Contains(err.Error(), tc.err), "%s: got %q, want it to contain %q", tc.yaml, err, tc.err)
	}
}
