package e2e

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/lab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// The pack's `for` durations and windows, shortened so that the lab runs in minutes; the
// thresholds are the defaults. lookback_delta is shortened too, so that the data of a silent
// cluster vanishes from queries within the test (it must stay above the 15s at which
// fleetwatch rewrites each cluster's last-ingest series). silent_after stays below it: when a
// silent cluster's series vanish, its data must already count as stopped, or its alerts
// resolve as cleared conditions instead of being held.
const (
	rulesConfig = "  evaluation_interval: 1s\n" +
		"  pack: {node_ready_for: 5s, saturation_for: 10s, crash_loop_for: 5s, control_plane_for: 5s, silent_after: 20s, drift_for: 5s}\n"
	queryConfig = "query:\n  lookback_delta: 25s\n"
)

type alertKey struct{ name, cluster string }

func (k alertKey) String() string { return k.name + "{cluster=" + k.cluster + "}" }

func byKey(alerts []promv1.Alert, state promv1.AlertState) map[alertKey]promv1.Alert {
	out := map[alertKey]promv1.Alert{}
	for _, a := range alerts {
		if a.State == state {
			out[alertKey{string(a.Labels["alertname"]), string(a.Labels["cluster"])}] = a
		}
	}
	return out
}

func keys[V any](m map[alertKey]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k.String())
	}
	sort.Strings(out)
	return out
}

// TestRuleScenarios runs one scenario per cluster at once, six clusters: each makes exactly
// its alert fire for exactly its cluster, no other alert fires anywhere, every one reaches the
// real Alertmanager, a firing alert of a cluster that then goes silent is held (stale) rather
// than resolved, the alert state survives a SIGKILL and restart of fleetwatch, and every alert
// resolves after recovery.
func TestRuleScenarios(t *testing.T) {
	l := lab.Start(t, lab.Options{Clusters: 6, Rules: rulesConfig, FleetwatchConfig: queryConfig})
	c := l.Clusters // eu-1 eu-2 us-1 us-2 ap-1 ap-2
	truth := l.Truth()
	var ns, deploy string
	for w := range truth[c[0]].Images {
		ns, deploy, _ = strings.Cut(w, "/")
		break
	}
	scenario := fmt.Sprintf(`name: e2e-rules
steps:
  - {after: 0s, action: crashloop, cluster: %[1]s, namespace: %[7]s, deployment: %[8]s, restarts_per_minute: 12}
  - {after: 0s, action: nodes_not_ready, cluster: %[2]s, count: 6}
  - {after: 0s, action: saturation, cluster: %[3]s, cpu: 0.92, memory: 0.5}
  - {after: 0s, action: control_plane_down, cluster: %[4]s}
  - {after: 0s, action: image_drift, cluster: %[5]s, namespace: %[7]s, deployment: %[8]s, image: registry.example/drift:v0.0.1-hotfix}
  - {after: 0s, action: nodes_not_ready, cluster: %[6]s, count: 6}
`, c[0], c[1], c[2], c[3], c[4], c[5], ns, deploy)
	l.UploadScenario(scenario)
	l.UploadScenario(fmt.Sprintf("name: e2e-silence\nsteps:\n  - {after: 0s, action: silence, cluster: %s}\n", c[5]))

	want := map[alertKey]bool{
		{"FleetClusterCrashLooping", c[0]}:         true,
		{"FleetWorkloadCrashLooping", c[0]}:        true,
		{"FleetClusterNodesNotReady", c[1]}:        true,
		{"FleetClusterCPURequestsSaturated", c[2]}: true,
		{"FleetClusterControlPlaneDown", c[3]}:     true,
		{"FleetImageDrift", c[4]}:                  true,
		{"FleetClusterNodesNotReady", c[5]}:        true,
		{"FleetClusterSilent", c[5]}:               true,
	}
	// noStrays fails on any firing alert that no scenario asked for.
	noStrays := func(firing map[alertKey]promv1.Alert) {
		t.Helper()
		for k := range firing {
			require.True(t, want[k], "unexpected alert firing: %s (firing: %v)", k, keys(firing))
		}
	}

	start := time.Now()
	for range 6 {
		l.Step("e2e-rules")
	}
	firedAt := map[alertKey]time.Duration{}
	// Everything but the silent cluster's alert fires, each only for its cluster.
	testenv.Eventually(t, 4*time.Minute, func() error {
		firing := byKey(l.Alerts(), promv1.AlertStateFiring)
		noStrays(firing)
		for k := range firing {
			if _, ok := firedAt[k]; !ok {
				firedAt[k] = time.Since(start)
				t.Logf("%s firing after %s", k, firedAt[k].Round(100*time.Millisecond))
			}
		}
		for k := range want {
			if _, ok := firing[k]; !ok && k.name != "FleetClusterSilent" {
				return fmt.Errorf("not firing yet: %s (firing: %v)", k, keys(firing))
			}
		}
		return nil
	})

	// The last cluster goes silent: its Prometheus stops sending. Its nodes alert is held,
	// stale, with its original active-since time, and the silent-cluster alert says why.
	nodesAlert := byKey(l.Alerts(), promv1.AlertStateFiring)[alertKey{"FleetClusterNodesNotReady", c[5]}]
	silencedAt := time.Now()
	l.StartScenario("e2e-silence")
	testenv.Eventually(t, 3*time.Minute, func() error {
		firing := byKey(l.Alerts(), promv1.AlertStateFiring)
		noStrays(firing)
		if _, ok := firing[alertKey{"FleetClusterSilent", c[5]}]; !ok {
			return fmt.Errorf("%s not silent yet (firing: %v)", c[5], keys(firing))
		}
		held, ok := firing[alertKey{"FleetClusterNodesNotReady", c[5]}]
		require.True(t, ok, "the nodes alert of the silent cluster resolved")
		require.Equal(t, nodesAlert.ActiveAt, held.ActiveAt)
		if held.Annotations["fleetwatch_data"] != "stale" {
			return fmt.Errorf("nodes alert of %s not marked stale yet: %v", c[5], held.Annotations)
		}
		if reason := string(held.Annotations["fleetwatch_stale_reason"]); !strings.Contains(reason, "no data from cluster "+c[5]) {
			return fmt.Errorf("nodes alert of %s held, reason not yet the silent cluster: %s", c[5], reason)
		}
		return nil
	})
	t.Logf("%s silent: FleetClusterSilent firing and its nodes alert held %s after its Prometheus stopped", c[5], time.Since(silencedAt).Round(time.Second))
	// Let the silent cluster's data fall out of the lookback window for good, then check the
	// hold again: the other clusters' alerts are unaffected.
	time.Sleep(10 * time.Second)
	firing := byKey(l.Alerts(), promv1.AlertStateFiring)
	require.ElementsMatch(t, keys(want), keys(firing))

	// Every alert reached the real Alertmanager, labels and annotations intact.
	testenv.Eventually(t, 90*time.Second, func() error {
		got := map[alertKey]lab.AMAlert{}
		for _, a := range l.AlertmanagerAlerts() {
			got[alertKey{a.Labels["alertname"], a.Labels["cluster"]}] = a
		}
		for k := range want {
			a, ok := got[k]
			if !ok {
				return fmt.Errorf("Alertmanager does not have %s (has %v)", k, keys(got))
			}
			if a.Annotations["summary"] == "" || a.Annotations["runbook"] == "" || a.Labels["severity"] == "" {
				return fmt.Errorf("Alertmanager's %s lacks severity, summary or runbook: %+v", k, a)
			}
		}
		if got[alertKey{"FleetClusterNodesNotReady", c[5]}].Annotations["fleetwatch_data"] != "stale" {
			return fmt.Errorf("Alertmanager's nodes alert of %s is not marked stale yet", c[5])
		}
		return nil
	})

	// SIGKILL and restart: the alerts come back firing with their original active-since times,
	// the silent cluster's nodes alert still held, stale (rules/README.md, Completeness).
	before := byKey(l.Alerts(), promv1.AlertStateFiring)
	l.RestartFleetwatch()
	testenv.Eventually(t, 60*time.Second, func() error {
		after := byKey(l.Alerts(), promv1.AlertStateFiring)
		if held := after[alertKey{"FleetClusterNodesNotReady", c[5]}]; held.Annotations["fleetwatch_data"] != "stale" {
			return fmt.Errorf("the nodes alert of the silent %s is not held after the restart: %+v", c[5], held)
		}
		for k, a := range before {
			b, ok := after[k]
			if !ok {
				return fmt.Errorf("%s not firing after the restart (firing: %v)", k, keys(after))
			}
			if !b.ActiveAt.Equal(a.ActiveAt.Truncate(time.Second)) {
				return fmt.Errorf("%s active since %s after the restart, %s before", k, b.ActiveAt, a.ActiveAt)
			}
		}
		return nil
	})

	// Recovery: every alert resolves.
	l.StopScenario("e2e-silence")
	l.StopScenario("e2e-rules")
	recovered := time.Now()
	testenv.Eventually(t, 5*time.Minute, func() error {
		active := map[alertKey]promv1.AlertState{}
		for _, a := range l.Alerts() {
			active[alertKey{string(a.Labels["alertname"]), string(a.Labels["cluster"])}] = a.State
		}
		if len(active) > 0 {
			return fmt.Errorf("still active after recovery: %v", active)
		}
		return nil
	})
	t.Logf("every alert resolved %s after recovery", time.Since(recovered).Round(time.Second))
}
