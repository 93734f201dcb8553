// Package e2e runs fleetwatch in the fleet lab: the simulator, a real Prometheus per simulated
// cluster remote-writing into fleetwatch, and a real Alertmanager.
package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/lab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

func query(t *testing.T, l *lab.Lab, q string) map[string]float64 {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, warns, err := l.API().Query(c, q, time.Now())
	require.NoError(t, err, q)
	require.Empty(t, warns, q)
	return lab.VectorByCluster(v)
}

// TestFleetView: three clusters' kube-state-metrics arrive through their own Prometheus, the
// node count per cluster equals the simulator's truth, and a cluster whose Prometheus dies goes
// stale while the others stay fresh.
func TestFleetView(t *testing.T) {
	l := lab.Start(t, lab.Options{Clusters: 3})

	truth := l.Truth()
	require.Len(t, truth, 3)
	testenv.Eventually(t, 30*time.Second, func() error {
		got := query(t, l, `sum by (cluster) (kube_node_info)`)
		for _, c := range l.Clusters {
			if got[c] != float64(truth[c].Nodes) || truth[c].Nodes == 0 {
				return fmt.Errorf("cluster %s: fleetwatch says %v nodes, the simulator %d", c, got[c], truth[c].Nodes)
			}
		}
		if len(got) != len(l.Clusters) {
			return fmt.Errorf("clusters in fleetwatch: %v", got)
		}
		return nil
	})
	// The pods, too, and the control plane signal.
	// A scrape reaches fleetwatch in several remote-write batches, so the first complete node
	// count does not mean the pods are all there yet.
	testenv.Eventually(t, 30*time.Second, func() error {
		pods := query(t, l, `count by (cluster) (kube_pod_info)`)
		apiserver := query(t, l, `max by (cluster) (up{job="apiserver"})`)
		for _, c := range l.Clusters {
			if pods[c] != float64(truth[c].Pods) || apiserver[c] != 1 {
				return fmt.Errorf("cluster %s: %v pods (simulator: %d), apiserver up %v", c, pods[c], truth[c].Pods, apiserver[c])
			}
		}
		return nil
	})

	// A scenario driven step by step: a crash loop in one cluster shows in that cluster only,
	// with the simulator's count, and goes away when the scenario stops.
	victim := l.Clusters[2]
	var workload string
	for w := range truth[victim].Images {
		workload = w
		break
	}
	ns, deploy, _ := strings.Cut(workload, "/")
	l.UploadScenario(fmt.Sprintf("name: e2e-crashloop\nsteps:\n  - {after: 0s, action: crashloop, cluster: %s, namespace: %s, deployment: %s}\n", victim, ns, deploy))
	l.Step("e2e-crashloop")
	const crashing = `sum by (cluster) (kube_pod_container_status_waiting_reason{reason="CrashLoopBackOff"})`
	testenv.Eventually(t, 30*time.Second, func() error {
		want := l.Truth()[victim].CrashLoopPods
		got := query(t, l, crashing)
		if want == 0 || len(got) != 1 || got[victim] != float64(want) {
			return fmt.Errorf("CrashLoopBackOff: fleetwatch %v, simulator %d in %s", got, want, victim)
		}
		return nil
	})
	l.StopScenario("e2e-crashloop")
	testenv.Eventually(t, 30*time.Second, func() error {
		if got := query(t, l, crashing); len(got) != 0 {
			return fmt.Errorf("still crash looping after recovery: %v", got)
		}
		return nil
	})

	// One cluster's Prometheus dies: its data stops arriving, the others' keeps coming.
	dead := l.Clusters[1]
	l.Members[dead].Process.Kill()
	const age = `max by (cluster) (time() - timestamp(up{job="kube-state-metrics"}))`
	testenv.Eventually(t, 60*time.Second, func() error {
		got := query(t, l, age)
		for _, c := range l.Clusters {
			switch {
			case c == dead && got[c] < 10:
				return fmt.Errorf("%s is still fresh: newest sample %.1fs old", c, got[c])
			case c != dead && got[c] > 6:
				return fmt.Errorf("%s went stale too: newest sample %.1fs old", c, got[c])
			}
		}
		return nil
	})
	// fleetwatch's own record of each cluster's last ingest, written into the view, says the
	// same, and keeps saying it after the dead cluster's own series are gone.
	const silent = `time() - fleetwatch_cluster_last_ingest_timestamp_seconds`
	testenv.Eventually(t, 60*time.Second, func() error {
		got := query(t, l, silent)
		for _, c := range l.Clusters {
			switch {
			case c == dead && got[c] < 25:
				return fmt.Errorf("%s: last ingest only %.1fs ago", c, got[c])
			case c != dead && got[c] > 20:
				return fmt.Errorf("%s: last ingest %.1fs ago", c, got[c])
			}
		}
		return nil
	})
}
