package main

import (
	"bytes"
	"context"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testenv.RemoveBuild) }

// binaries builds fleetwatch from this tree and returns it with the Alertmanager `make peers`
// installs (a missing peer fails the test outside -short, so CI cannot skip it).
func binaries(t *testing.T) (fleetwatch, alertmanager string) {
	t.Helper()
	return testenv.Fleetwatch(t), testenv.Peer(t, "alertmanager")
}

// TestSmoke runs a small bench and checks that both targets took in every alert: fleetwatch
// has each in exactly one active incident and counted both sends, Alertmanager lists each.
func TestSmoke(t *testing.T) {
	testenv.SkipIfShort(t)
	fw, am := binaries(t)
	var out bytes.Buffer
	o := options{
		fleetwatch: fw, alertmanager: am,
		clusters: 3, alerts: 2000, batch: 64, workers: 8, rounds: 1, seed: 1,
		jsonOut:   filepath.Join(t.TempDir(), "alertbench.json"),
		quietWait: time.Second, settle: time.Minute, probeTimeout: time.Minute, steady: 0,
		out: &out,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := run(ctx, o)
	t.Log(out.String())
	require.NoError(t, err)
	require.Empty(t, rep.Warnings)

	for _, name := range []string{nameFleetwatch, nameAlertmanager} {
		tr := rep.Targets[name]
		require.Len(t, tr.Rounds, 1, name)
		r := tr.Rounds[0]
		require.Len(t, r.Phases, 2, name)
		for _, p := range r.Phases {
			require.Equal(t, 2000, p.Alerts, "%s %s", name, p.Phase)
			require.Equal(t, 33, p.Requests, "%s %s: 667+667+666 alerts in batches of 64", name, p.Phase)
			require.Positive(t, p.AlertsPerSec, "%s %s", name, p.Phase)
		}
		// Every alert and the probe, each once.
		require.Equal(t, 2001, r.HeldDistinct, name)
		require.Equal(t, 2001, r.HeldListed, name)
		require.Positive(t, r.Probe.VisibleMs, name)
		require.Positive(t, r.PeakRSSMiB, name)
	}
	r := rep.Targets[nameFleetwatch].Rounds[0]
	require.Equal(t, float64(2*2000+1), r.Received, "fleetwatch_correlate_alerts_received_total: both phases and the probe")
	for _, p := range r.Phases {
		require.Equal(t, float64(2000), p.IncidentCount, p.Phase)
		require.Positive(t, p.IncidentP99ms, p.Phase)
	}
	require.FileExists(t, o.jsonOut)
}

// TestStream checks the generator: deterministic, evenly spread, distinct alerts per cluster,
// and batches of one cluster each.
func TestStream(t *testing.T) {
	now := time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)
	a, b := genStream(7, 1000, 42, now), genStream(7, 1000, 42, now)
	require.Equal(t, a.clusters, b.clusters)
	for ci := range a.alerts {
		require.Len(t, a.alerts[ci], map[bool]int{true: 143, false: 142}[ci < 1000%7], a.clusters[ci])
		seen := map[string]bool{}
		for i, al := range a.alerts[ci] {
			require.Equal(t, al.labels, b.alerts[ci][i].labels)
			k := labelKey(al.labels)
			require.False(t, seen[k], "duplicate alert %v", al.labels)
			seen[k] = true
			require.NotEmpty(t, al.labels["severity"])
			require.NotEmpty(t, al.annotations["summary"])
			require.True(t, al.startsAt.Before(now))
		}
	}
	enc, err := a.encode(64, true, now)
	require.NoError(t, err)
	n := 0
	for _, bt := range enc.batches {
		require.LessOrEqual(t, bt.alerts, 64)
		require.Contains(t, string(bt.body), `"cluster":"`+bt.cluster+`"`)
		n += bt.alerts
	}
	require.Equal(t, 1000, n)
	// Clusters take turns: the first batches are one from each cluster.
	for i := range a.clusters {
		require.Equal(t, a.clusters[i], enc.batches[i].cluster)
	}
	noCluster, err := a.encode(64, false, now)
	require.NoError(t, err)
	require.NotContains(t, string(noCluster.batches[0].body), `"cluster"`)
	require.Len(t, clusterNames(100), 100)
}

func TestHistogramQuantile(t *testing.T) {
	inf := func() float64 { var z float64; return 1 / z }()
	a := fwMetrics{buckets: map[float64]float64{0.1: 0, 1: 0, inf: 0}}
	b := fwMetrics{buckets: map[float64]float64{0.1: 50, 1: 100, inf: 100}}
	require.InDelta(t, 0.1, histogramQuantile(0.5, a, b), 1e-9)
	require.InDelta(t, 0.982, histogramQuantile(0.99, a, b), 1e-9)
	c := fwMetrics{buckets: map[float64]float64{0.1: 50, 1: 90, inf: 100}}
	require.Equal(t, 1.0, histogramQuantile(0.99, a, c), "in the +Inf bucket: the highest finite bound")
}

// TestHeldDiff: a count off by one names the alert.
func TestHeldDiff(t *testing.T) {
	st := genStream(2, 10, 1, time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC))
	probe := probeLabels("p1")
	probe["cluster"] = st.clusters[0]
	held := map[string]bool{labelKey(probe): true}
	for ci, c := range st.clusters {
		for _, a := range st.alerts[ci] {
			ls := maps.Clone(a.labels)
			ls["cluster"] = c
			held[labelKey(ls)] = true
		}
	}
	require.Equal(t, `not held: []; held, not posted: []`, heldDiff(st, probe, held))
	delete(held, labelKey(probe))
	held[labelKey(map[string]string{"alertname": "Stray"})] = true
	got := heldDiff(st, probe, held)
	require.Contains(t, got, "probe_id=p1 ")
	require.Contains(t, got, `held, not posted: ["alertname=Stray "]`)
}
