package e2e

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/correlate/amconfig"
	"github.com/fleetwatch/fleetwatch/internal/lab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestIncidents: three problems at once in a five-cluster fleet become exactly three
// incidents, read back from the real Alertmanager: NotReady nodes in one cluster with the
// pods on them crash-looping (one incident rooted at the nodes, absorbing the crash loops
// that the cluster's own Prometheus reports too), a bad rollout to three clusters (one
// fleet-scoped incident naming the image), and saturation in a fifth cluster. Recovery
// resolves all three.
func TestIncidents(t *testing.T) {
	l := lab.Start(t, lab.Options{
		Clusters:    5,
		Rules:       "  evaluation_interval: 1s\n  pack: {node_ready_for: 5s, crash_loop_for: 5s, saturation_for: 10s}\n",
		Correlate:   "  evaluation_interval: 1s\n  resolve_after: 10s\n",
		MemberRules: lab.MemberCrashLoopRules,
	})
	c := l.Clusters // eu-1 eu-2 us-1 us-2 ap-1
	var ns, deploy string
	for w := range l.Truth()[c[2]].Images {
		ns, deploy, _ = strings.Cut(w, "/")
		break
	}
	const badImage = "registry.example/rollout:v9.9.9-bad"
	l.UploadScenario(fmt.Sprintf(`name: e2e-incidents
steps:
  - {after: 0s, action: nodes_not_ready, cluster: %[2]s, count: 6, crash: true, restarts_per_minute: 12}
  - {after: 0s, action: rollout, clusters: [%[3]s, %[4]s, %[5]s], namespace: %[6]s, deployment: %[7]s, image: %[8]s, crash: true, restarts_per_minute: 12}
  - {after: 0s, action: saturation, cluster: %[1]s, cpu: 0.92}
`, c[0], c[1], c[2], c[3], c[4], ns, deploy, badImage))
	start := time.Now()
	for range 3 {
		l.Step("e2e-incidents")
	}

	rollout := "rollout/" + ns + "/" + deploy
	want := map[string]struct {
		scope    string
		clusters []string
	}{
		"nodes/" + c[1]:      {"cluster", []string{c[1]}},
		rollout:              {"fleet", sorted(c[2], c[3], c[4])},
		"saturation/" + c[0]: {"cluster", []string{c[0]}},
	}
	var active []lab.Incident
	testenv.Eventually(t, 4*time.Minute, func() error {
		active = l.Incidents("state=active")
		got := map[string]lab.Incident{}
		for _, inc := range active {
			got[inc.Key] = inc
		}
		for k, w := range want {
			inc, ok := got[k]
			if !ok {
				return fmt.Errorf("no incident %s yet (active: %v)", k, lab.IncidentKeys(active))
			}
			if inc.Scope != w.scope || strings.Join(inc.Clusters, ",") != strings.Join(w.clusters, ",") {
				return fmt.Errorf("incident %s: scope %s clusters %v, want %s %v", k, inc.Scope, inc.Clusters, w.scope, w.clusters)
			}
		}
		if len(active) != len(want) {
			return fmt.Errorf("%d active incidents, want %d: %v", len(active), len(want), lab.IncidentKeys(active))
		}
		// The nodes incident holds the crash loops of the pods on them, as fleetwatch's rules
		// and the cluster's own Prometheus report them.
		names := map[string]bool{}
		for _, a := range got["nodes/"+c[1]].Alerts {
			names[a.Labels[amconfig.LabelAlertName]+"/"+a.Source] = true
		}
		for _, n := range []string{"FleetClusterNodesNotReady/rules", "FleetClusterCrashLooping/rules", "FleetWorkloadCrashLooping/rules", "KubePodCrashLooping/prometheus"} {
			if !names[n] {
				return fmt.Errorf("nodes incident lacks %s yet: %v", n, names)
			}
		}
		if got[rollout].Image != badImage {
			return fmt.Errorf("rollout incident names image %q, want %q", got[rollout].Image, badImage)
		}
		return nil
	})
	t.Logf("3 incidents after %s: %v", time.Since(start).Round(time.Second), lab.IncidentKeys(active))

	// Alertmanager holds exactly those three, one active alert each, with the routing labels
	// fleetwatch has for them now (an incident that escalated from warning to critical has
	// its former label set resolved, not left firing).
	ids := map[string]lab.Incident{}
	testenv.Eventually(t, 60*time.Second, func() error {
		ids = map[string]lab.Incident{}
		for _, inc := range l.Incidents("state=active") {
			ids[inc.ID] = inc
		}
		got := map[string][]lab.AMAlert{}
		for _, a := range l.AlertmanagerAlerts() {
			if a.Labels[amconfig.LabelAlertName] == amconfig.AlertName && a.Status.State == "active" && a.EndsAt.After(time.Now()) {
				got[a.Annotations[amconfig.AnnotationIncidentID]] = append(got[a.Annotations[amconfig.AnnotationIncidentID]], a)
			}
		}
		if len(got) != len(ids) {
			return fmt.Errorf("Alertmanager has %d active incidents, want %d", len(got), len(ids))
		}
		for id, inc := range ids {
			as := got[id]
			if len(as) != 1 {
				return fmt.Errorf("Alertmanager has %d active alerts for incident %s (%s), want 1", len(as), id, inc.Key)
			}
			a := as[0]
			if a.Labels[amconfig.LabelIncidentKey] != inc.Key || a.Labels["scope"] != inc.Scope || a.Labels["severity"] != inc.Severity || a.Annotations["explanation"] == "" {
				return fmt.Errorf("Alertmanager's %s: labels %v annotations %v; fleetwatch: %s %s", inc.Key, a.Labels, a.Annotations, inc.Scope, inc.Severity)
			}
			if inc.Scope == "cluster" && a.Labels["cluster"] != inc.Clusters[0] {
				return fmt.Errorf("Alertmanager's %s: cluster %q", inc.Key, a.Labels["cluster"])
			}
		}
		return nil
	})

	// kill -9 and restart: the same incidents continue, and Alertmanager gets no new one.
	l.RestartFleetwatch()
	time.Sleep(15 * time.Second) // fifteen evaluations and deliveries
	after := map[string]bool{}
	for _, inc := range l.Incidents("state=active") {
		after[inc.ID] = true
	}
	for id, inc := range ids {
		require.True(t, after[id], "incident %s (%s) continues after the restart", id, inc.Key)
	}
	require.Len(t, after, len(ids), "no new incident after the restart")
	for _, a := range l.AlertmanagerAlerts() {
		if a.Labels[amconfig.LabelAlertName] == amconfig.AlertName && a.Status.State == "active" && a.EndsAt.After(time.Now()) {
			_, known := ids[a.Annotations[amconfig.AnnotationIncidentID]]
			require.True(t, known, "Alertmanager got a new incident after the restart: %v", a.Labels)
		}
	}

	// Recovery resolves every incident, in fleetwatch and in Alertmanager.
	l.StopScenario("e2e-incidents")
	recovered := time.Now()
	testenv.Eventually(t, 5*time.Minute, func() error {
		if a := l.Incidents("state=active"); len(a) > 0 {
			return fmt.Errorf("still active: %v", lab.IncidentKeys(a))
		}
		for _, a := range l.AlertmanagerAlerts() {
			if a.Labels[amconfig.LabelAlertName] == amconfig.AlertName && a.Status.State == "active" && a.EndsAt.After(time.Now()) {
				state := "unknown to fleetwatch"
				for _, inc := range l.Incidents("") {
					if inc.ID == a.Annotations[amconfig.AnnotationIncidentID] {
						state = fmt.Sprintf("%s in fleetwatch (%s, merged into %q)", inc.State, inc.Key, inc.MergedInto)
					}
				}
				return fmt.Errorf("Alertmanager still has incident %s active (starts %s, ends %s); %s",
					a.Annotations[amconfig.AnnotationIncidentID], a.StartsAt, a.EndsAt, state)
			}
		}
		return nil
	})
	t.Logf("every incident resolved %s after recovery", time.Since(recovered).Round(time.Second))
	for id := range ids {
		found := false
		for _, inc := range l.Incidents("state=resolved") {
			found = found || inc.ID == id
		}
		require.True(t, found, "incident %s is in the history", id)
	}
}

func sorted(s ...string) []string { sort.Strings(s); return s }
