package main

import (
	"context"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/rules/pack"
)

// viewAPI answers the demo's queries from a table, the same value for every cluster listed.
type viewAPI struct {
	promv1.API
	answers map[string]float64
}

func (v viewAPI) Query(_ context.Context, q string, ts time.Time, _ ...promv1.Option) (model.Value, promv1.Warnings, error) {
	f, ok := v.answers[q]
	if !ok {
		return model.Vector{}, nil, nil
	}
	return model.Vector{{Metric: model.Metric{"cluster": "eu-1"}, Value: model.SampleValue(f), Timestamp: model.TimeFromUnixNano(ts.UnixNano())}}, nil, nil
}

// TestDemoReadsThePacksSeries: the demo prints and reads the rule pack's recorded Ready ratio
// and request saturation, and reports saturation at the alerts' threshold, so what it says
// matches the alerts.
func TestDemoReadsThePacksSeries(t *testing.T) {
	queries := map[string]string{}
	for _, s := range demoSignals {
		queries[s.name] = s.query
	}
	require.Equal(t, pack.RecordNodeReadyRatio, queries["node Ready ratio"])
	require.Equal(t, pack.RecordCPURequestsRatio, queries["CPU request saturation"])
	require.Equal(t, pack.RecordMemoryRequestsRatio, queries["memory request saturation"])

	above := config.DefaultThresholds.SaturationRatio + 0.01
	lines, err := demoReport(t.Context(), viewAPI{answers: map[string]float64{
		pack.RecordCPURequestsRatio:    above,
		pack.RecordMemoryRequestsRatio: config.DefaultThresholds.SaturationRatio, // at the threshold: no alert
	}}, time.Now(), 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "CPU requests at 86% of allocatable", lines["cluster eu-1 cpu"])
	require.NotContains(t, lines, "cluster eu-1 memory")
}

// TestDemoControlPlanesWithoutBinaries: without the control-plane binaries, `demo
// --control-planes` says in one line which are missing and how to get them, before it starts
// anything.
func TestDemoControlPlanesWithoutBinaries(t *testing.T) {
	d := &demoCmd{controlPlanes: true, cpBinDir: t.TempDir(), log: &logFlags{level: "info", format: "logfmt"}}
	err := d.run()
	require.Error(t, err)
	msg := err.Error()
	require.NotContains(t, msg, "\n")
	for _, want := range []string{"etcd", "kube-apiserver", "kube-state-metrics", "make peers", d.cpBinDir} {
		require.Contains(t, msg, want)
	}
}
