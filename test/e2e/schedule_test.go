package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/lab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
	"github.com/fleetwatch/fleetwatch/schedule"
)

// postJSON posts body to fleetwatch and decodes the API envelope's data into out.
func postJSON(t *testing.T, url string, body any, out any) (int, string) {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	require.NoError(t, err)
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
	if out != nil && len(env.Data) > 0 {
		require.NoError(t, json.Unmarshal(env.Data, out))
	}
	return resp.StatusCode, env.Error
}

// gauges reads one gauge family by cluster from fleetwatch's /metrics.
func gauges(t *testing.T, base, name string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+`{cluster="`) {
			continue
		}
		rest := strings.TrimPrefix(line, name+`{cluster="`)
		cluster, val, _ := strings.Cut(rest, `"} `)
		v, err := strconv.ParseFloat(val, 64)
		require.NoError(t, err, line)
		out[cluster] = v
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*math.Max(1, math.Abs(b)) }

// TestPlacement: in a four-cluster fleet, one cluster is saturated above the 85% threshold and
// another goes silent. Placements avoid both, with the reason for each; the exported free
// capacity and what-if's capacity numbers for the remaining clusters match the simulator's
// truth (allocatable and requested CPU and memory); `fleetwatch schedule whatif` prints it.
func TestPlacement(t *testing.T) {
	l := lab.Start(t, lab.Options{
		Clusters: 4,
		Rules:    "  evaluation_interval: 1s\n  pack: {silent_after: 30s}\n",
		// Lookback shortened so a silent cluster's series leave the view within the test.
		FleetwatchConfig: queryConfig + "schedule:\n  refresh_interval: 1s\n",
	})
	c := l.Clusters // eu-1 eu-2 us-1 us-2
	saturated, silent := c[1], c[2]
	l.UploadScenario(fmt.Sprintf("name: e2e-placement\nsteps:\n  - {after: 0s, action: saturation, cluster: %s, cpu: 0.92}\n  - {after: 0s, action: silence, cluster: %s}\n", saturated, silent))
	l.Step("e2e-placement")
	l.Step("e2e-placement")
	start := time.Now()

	req := map[string]any{"workload": "shop/api", "replicas": 6, "cpu": "250m", "memory": "256Mi"}
	var d struct {
		Feasible   bool                 `json:"feasible"`
		Placements []schedule.Placement `json:"placements"`
		Clusters   []struct {
			Cluster  string   `json:"cluster"`
			Filtered []string `json:"filtered"`
			Replicas int      `json:"replicas"`
			Why      string   `json:"why"`
		} `json:"clusters"`
	}
	testenv.Eventually(t, 3*time.Minute, func() error {
		code, msg := postJSON(t, l.FleetwatchURL+"/api/v1/placements", req, &d)
		if code != http.StatusOK {
			return fmt.Errorf("HTTP %d: %s", code, msg)
		}
		why := map[string]string{}
		for _, r := range d.Clusters {
			why[r.Cluster] = r.Why
		}
		if !strings.Contains(why[saturated], "fits 0 of 1 replicas below the 85% ceiling") {
			return fmt.Errorf("%s not yet filtered as saturated: %s", saturated, why[saturated])
		}
		if !strings.Contains(why[silent], "stale: last data") {
			return fmt.Errorf("%s not yet filtered as stale: %s", silent, why[silent])
		}
		return nil
	})
	t.Logf("saturated %s and silent %s filtered %s after the scenario started", saturated, silent, time.Since(start).Round(time.Second))
	require.True(t, d.Feasible)
	placed := 0
	for _, p := range d.Placements {
		require.Contains(t, []string{c[0], c[3]}, p.Cluster, "placed on a saturated or silent cluster")
		placed += p.Replicas
	}
	require.Equal(t, 6, placed)
	for _, r := range d.Clusters {
		t.Logf("%s: %s", r.Cluster, r.Why)
	}

	// A request the two healthy clusters cannot take: 422 with the reason.
	code, msg := postJSON(t, l.FleetwatchURL+"/api/v1/placements", map[string]any{"replicas": 1, "cpu": 100000}, nil)
	require.Equal(t, http.StatusUnprocessableEntity, code)
	require.Equal(t, "no cluster fits: every cluster fails a constraint (see clusters[].filtered)", msg)
	code, msg = postJSON(t, l.FleetwatchURL+"/api/v1/placements", map[string]any{"replicas": -3, "cpu": 1}, nil)
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "bad request: replicas: must be >= 1, got -3", msg)

	// What-if eu-1 fails: the capacity numbers of every surviving cluster with data match the
	// simulator's truth, and the moved requests are eu-1's.
	var w schedule.WhatIfResult
	testenv.Eventually(t, time.Minute, func() error {
		code, msg := postJSON(t, l.FleetwatchURL+"/api/v1/whatif", map[string]any{"fail": []string{c[0]}}, &w)
		if code != http.StatusOK {
			return fmt.Errorf("HTTP %d: %s", code, msg)
		}
		truth := l.Truth()
		if tr := truth[c[0]]; !near(w.Moved.CPU, tr.RequestedCPUCores) || !near(w.Moved.Memory, tr.RequestedMemoryBytes) {
			return fmt.Errorf("moved %.3f cores, %.0f bytes; %s requests %.3f cores, %.0f bytes", w.Moved.CPU, w.Moved.Memory, c[0], tr.RequestedCPUCores, tr.RequestedMemoryBytes)
		}
		free := gauges(t, l.FleetwatchURL, "fleetwatch_cluster_free_cpu_cores")
		for _, ca := range w.Clusters {
			tr := truth[ca.Cluster]
			if ca.Cluster == silent {
				continue // its data left the view: nothing to compare
			}
			if !near(ca.AllocatableCPU, tr.AllocatableCPUCores) || !near(ca.RequestedCPUBefore, tr.RequestedCPUCores) ||
				!near(ca.AllocatableMemory, tr.AllocatableMemoryBytes) || !near(ca.RequestedMemoryBefore, tr.RequestedMemoryBytes) {
				return fmt.Errorf("%s: view %.3f/%.3f cores, %.0f/%.0f bytes; truth %.3f/%.3f cores, %.0f/%.0f bytes", ca.Cluster,
					ca.RequestedCPUBefore, ca.AllocatableCPU, ca.RequestedMemoryBefore, ca.AllocatableMemory,
					tr.RequestedCPUCores, tr.AllocatableCPUCores, tr.RequestedMemoryBytes, tr.AllocatableMemoryBytes)
			}
			wantFree := math.Max(0, 0.85*tr.AllocatableCPUCores-tr.RequestedCPUCores)
			if !near(free[ca.Cluster], wantFree) {
				return fmt.Errorf("fleetwatch_cluster_free_cpu_cores{cluster=%q} = %v, truth says %v", ca.Cluster, free[ca.Cluster], wantFree)
			}
		}
		return nil
	})
	t.Log(w.Summary)
	for _, ca := range w.Clusters {
		switch ca.Cluster {
		case c[0]:
			require.True(t, ca.Failed)
		case silent:
			require.Zero(t, ca.ReceivedReplicas)
			require.Contains(t, ca.Filtered.String(), "stale")
		case saturated:
			require.Zero(t, ca.ReceivedReplicas, "a cluster above the ceiling takes nothing")
		default:
			require.LessOrEqual(t, ca.CPUSaturationAfter, 0.85+1e-9)
			require.InDelta(t, ca.RequestedCPUBefore+ca.ReceivedCPU, ca.RequestedCPUAfter, 1e-6)
		}
	}

	// The command line prints the same as a table.
	out, err := exec.Command(testenv.Fleetwatch(t), "schedule", "--url="+l.FleetwatchURL, "whatif", "--fail="+c[0]).CombinedOutput()
	require.NoError(t, err, string(out))
	t.Logf("fleetwatch schedule whatif --fail %s:\n%s", c[0], out)
	require.Contains(t, string(out), "if "+c[0]+" fail(s):")
	require.Regexp(t, c[0]+`\s+FAILED`, string(out))
	require.Regexp(t, silent+`\s+takes none`, string(out))
}
