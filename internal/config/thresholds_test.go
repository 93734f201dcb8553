package config

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v2"
)

func TestThresholdsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Thresholds)
		want []string // every error line, in field order; nil: valid
	}{
		{"defaults", func(*Thresholds) {}, nil},
		{"ratios at 1 and zero durations", func(th *Thresholds) {
			th.NodeReadyRatio, th.SaturationRatio, th.CrashLoopPerMinute = 1, 1, 0
			th.NodeReadyFor, th.SaturationFor, th.CrashLoopFor, th.ControlPlaneFor, th.APIUnreachableFor, th.DriftFor, th.EvaluationInterval = 0, 0, 0, 0, 0, 0, 0
		}, nil},
		{"node_ready_ratio 0", func(th *Thresholds) { th.NodeReadyRatio = 0 },
			[]string{"rules.pack.node_ready_ratio: must be in (0, 1], got 0"}},
		{"node_ready_ratio above 1", func(th *Thresholds) { th.NodeReadyRatio = 1.5 },
			[]string{"rules.pack.node_ready_ratio: must be in (0, 1], got 1.5"}},
		{"node_ready_ratio NaN", func(th *Thresholds) { th.NodeReadyRatio = math.NaN() },
			[]string{"rules.pack.node_ready_ratio: must be in (0, 1], got NaN"}},
		{"saturation_ratio negative", func(th *Thresholds) { th.SaturationRatio = -0.1 },
			[]string{"rules.pack.saturation_ratio: must be in (0, 1], got -0.1"}},
		{"saturation_ratio a percentage", func(th *Thresholds) { th.SaturationRatio = 85 },
			[]string{"rules.pack.saturation_ratio: must be in (0, 1], got 85"}},
		{"crash_loop_per_minute negative", func(th *Thresholds) { th.CrashLoopPerMinute = -1 },
			[]string{"rules.pack.crash_loop_per_minute: must be a finite number >= 0, got -1"}},
		{"crash_loop_per_minute infinite", func(th *Thresholds) { th.CrashLoopPerMinute = math.Inf(1) },
			[]string{"rules.pack.crash_loop_per_minute: must be a finite number >= 0, got +Inf"}},
		{"node_ready_for negative", func(th *Thresholds) { th.NodeReadyFor = model.Duration(-time.Minute) },
			[]string{"rules.pack.node_ready_for: must be >= 0, got -1m0s"}},
		{"saturation_for negative", func(th *Thresholds) { th.SaturationFor = model.Duration(-time.Second) },
			[]string{"rules.pack.saturation_for: must be >= 0, got -1s"}},
		{"crash_loop_for negative", func(th *Thresholds) { th.CrashLoopFor = model.Duration(-time.Second) },
			[]string{"rules.pack.crash_loop_for: must be >= 0, got -1s"}},
		{"silent_after 0", func(th *Thresholds) { th.SilentAfter = 0 },
			[]string{"rules.pack.silent_after: must be > 0, got 0s"}},
		{"silent_after negative", func(th *Thresholds) { th.SilentAfter = model.Duration(-time.Minute) },
			[]string{"rules.pack.silent_after: must be > 0, got -1m0s"}},
		{"control_plane_for negative", func(th *Thresholds) { th.ControlPlaneFor = model.Duration(-time.Second) },
			[]string{"rules.pack.control_plane_for: must be >= 0, got -1s"}},
		{"api_unreachable_for negative", func(th *Thresholds) { th.APIUnreachableFor = model.Duration(-time.Second) },
			[]string{"rules.pack.api_unreachable_for: must be >= 0, got -1s"}},
		{"drift_for negative", func(th *Thresholds) { th.DriftFor = model.Duration(-time.Hour) },
			[]string{"rules.pack.drift_for: must be >= 0, got -1h0m0s"}},
		{"evaluation_interval negative", func(th *Thresholds) { th.EvaluationInterval = model.Duration(-time.Second) },
			[]string{"rules.pack.evaluation_interval: must be >= 0, got -1s"}},
		{"every error at once", func(th *Thresholds) {
			th.NodeReadyRatio, th.CrashLoopPerMinute, th.SilentAfter = 2, math.NaN(), 0
		}, []string{
			"rules.pack.node_ready_ratio: must be in (0, 1], got 2",
			"rules.pack.crash_loop_per_minute: must be a finite number >= 0, got NaN",
			"rules.pack.silent_after: must be > 0, got 0s",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			th := DefaultThresholds
			tc.edit(&th)
			err := th.Validate()
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, strings.Join(tc.want, "\n"))
		})
	}
}

func TestThresholdsUnmarshalYAML(t *testing.T) {
	t.Run("omitted keys keep their defaults", func(t *testing.T) {
		var th Thresholds
		require.NoError(t, yaml.UnmarshalStrict([]byte("node_ready_ratio: 0.8\nsaturation_for: 10m\n"), &th))
		want := DefaultThresholds
		want.NodeReadyRatio = 0.8
		want.SaturationFor = model.Duration(10 * time.Minute)
		require.Equal(t, want, th)
	})
	t.Run("an empty map is the defaults", func(t *testing.T) {
		var th Thresholds
		require.NoError(t, yaml.UnmarshalStrict([]byte("{}"), &th))
		require.Equal(t, DefaultThresholds, th)
	})
	t.Run("values are validated", func(t *testing.T) {
		var th Thresholds
		err := yaml.UnmarshalStrict([]byte("saturation_ratio: 85\ndrift_for: 1h\n"), &th)
		require.EqualError(t, err, "rules.pack.saturation_ratio: must be in (0, 1], got 85")
	})
	t.Run("durations are Prometheus durations", func(t *testing.T) {
		var th Thresholds
		require.Error(t, yaml.UnmarshalStrict([]byte("drift_for: soon\n"), &th))
	})
	t.Run("unknown keys are errors", func(t *testing.T) {
		var th Thresholds
		require.ErrorContains(t, yaml.UnmarshalStrict([]byte("node_ready_ratoi: 0.8\n"), &th), "node_ready_ratoi")
	})
}
