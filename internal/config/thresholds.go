package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
)

// Thresholds are the numbers the built-in rule pack (rules/pack) alerts at. The YAML names are
// the keys under `rules: pack:` in fleetwatch.yml (rules.pack.node_ready_ratio and so on); an
// omitted key keeps its DefaultThresholds value. rules/README.md lists every rule each of them
// changes; placement shares the saturation ratio, the Ready ratio and silent_after with the
// pack, and the dashboards color their panels at them.
type Thresholds struct {
	// NodeReadyRatio: FleetClusterNodesNotReady fires when Ready nodes / all nodes of a
	// cluster drop below it, in (0, 1].
	NodeReadyRatio float64        `yaml:"node_ready_ratio,omitempty"`
	NodeReadyFor   model.Duration `yaml:"node_ready_for,omitempty"`
	// SaturationRatio: the CPU and memory request alerts fire when requests of Pending and
	// Running pods / allocatable rise above it, in (0, 1].
	SaturationRatio float64        `yaml:"saturation_ratio,omitempty"`
	SaturationFor   model.Duration `yaml:"saturation_for,omitempty"`
	// CrashLoopPerMinute: the crash-loop alerts fire when containers in CrashLoopBackOff
	// restart more often than this a minute (per cluster, and per workload).
	CrashLoopPerMinute float64        `yaml:"crash_loop_per_minute,omitempty"`
	CrashLoopFor       model.Duration `yaml:"crash_loop_for,omitempty"`
	// SilentAfter: FleetClusterSilent fires when fleetwatch stored nothing from a cluster for
	// longer than this; it must be positive.
	SilentAfter model.Duration `yaml:"silent_after,omitempty"`
	// ControlPlaneFor: how long every apiserver of a cluster must be down before
	// FleetClusterControlPlaneDown fires.
	ControlPlaneFor model.Duration `yaml:"control_plane_for,omitempty"`
	// APIUnreachableFor: how long fleetwatch's probe of a cluster's API server must fail, while
	// the cluster's data is still fresh (not silent for longer than SilentAfter), before
	// FleetClusterAPIUnreachable fires.
	APIUnreachableFor model.Duration `yaml:"api_unreachable_for,omitempty"`
	// DriftFor: how long a namespace/container must run different images in different
	// clusters before FleetImageDrift fires.
	DriftFor model.Duration `yaml:"drift_for,omitempty"`
	// EvaluationInterval is each rule group's interval; 0 leaves it to the evaluator's
	// global interval. It is not a fleetwatch.yml key: fleetwatch runs the pack at
	// rules.evaluation_interval; `fleetwatch rules export` sets it for other Prometheus.
	EvaluationInterval model.Duration `yaml:"-"`
}

// DefaultThresholds are the pack's defaults.
//
// APIUnreachableFor is 2m: with the default api_probe (every 15s, 5s timeout) that is eight
// failed probes in a row, so an API server restarting or a load balancer failing over does not
// warn, while fleetwatch losing its way to a cluster for good does before anyone needs to act
// on the cluster.
//
// NodeReadyFor is 1m, not 0s: nodes that an autoscaler or an upgrade adds register NotReady
// for the half minute or so their kubelet needs, and a scale-up of a few nodes at once would
// otherwise page (critical) for a ratio that heals by itself. The kubelet's own grace period
// already debounces real node failures, so 1m adds little delay to a real outage.
//
// CrashLoopFor is 1m: the restart rate is already averaged over 2m, and 1m more makes sure the
// loop persists (a crash loop that a rollback ends within a minute is not worth a page), while
// a real crash loop still alerts within about 3 minutes.
var DefaultThresholds = Thresholds{
	NodeReadyRatio:     0.90,
	NodeReadyFor:       model.Duration(time.Minute),
	SaturationRatio:    0.85,
	SaturationFor:      model.Duration(5 * time.Minute),
	CrashLoopPerMinute: 3,
	CrashLoopFor:       model.Duration(time.Minute),
	SilentAfter:        model.Duration(2 * time.Minute),
	ControlPlaneFor:    model.Duration(time.Minute),
	APIUnreachableFor:  model.Duration(2 * time.Minute),
	DriftFor:           model.Duration(30 * time.Minute),
	EvaluationInterval: model.Duration(15 * time.Second),
}

// UnmarshalYAML fills omitted keys from DefaultThresholds and validates the result.
func (t *Thresholds) UnmarshalYAML(unmarshal func(any) error) error {
	*t = DefaultThresholds
	type plain Thresholds
	if err := unmarshal((*plain)(t)); err != nil {
		return err
	}
	return t.Validate()
}

// Validate reports every out-of-range field, each named by its full key in fleetwatch.yml
// ("rules.pack.node_ready_ratio: ...").
func (t Thresholds) Validate() error {
	var errs []error
	ratio := func(name string, v float64) {
		if math.IsNaN(v) || v <= 0 || v > 1 {
			errs = append(errs, fmt.Errorf("rules.pack.%s: must be in (0, 1], got %s", name, formatFloat(v)))
		}
	}
	nonNegative := func(name string, v float64) {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			errs = append(errs, fmt.Errorf("rules.pack.%s: must be a finite number >= 0, got %s", name, formatFloat(v)))
		}
	}
	duration := func(name string, d model.Duration) {
		if d < 0 {
			errs = append(errs, fmt.Errorf("rules.pack.%s: must be >= 0, got %s", name, time.Duration(d)))
		}
	}
	ratio("node_ready_ratio", t.NodeReadyRatio)
	duration("node_ready_for", t.NodeReadyFor)
	ratio("saturation_ratio", t.SaturationRatio)
	duration("saturation_for", t.SaturationFor)
	nonNegative("crash_loop_per_minute", t.CrashLoopPerMinute)
	duration("crash_loop_for", t.CrashLoopFor)
	// A cluster's last ingest is always a little in the past, so silent_after 0 would report
	// every cluster as silent.
	if t.SilentAfter <= 0 {
		errs = append(errs, fmt.Errorf("rules.pack.silent_after: must be > 0, got %s", time.Duration(t.SilentAfter)))
	}
	duration("control_plane_for", t.ControlPlaneFor)
	duration("api_unreachable_for", t.APIUnreachableFor)
	duration("drift_for", t.DriftFor)
	duration("evaluation_interval", t.EvaluationInterval)
	return errors.Join(errs...)
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
