package schedule

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// The service's tests serve HTTP and the snapshot loop runs on timers: nothing may outlive a test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testSettings are fleetwatch.yml's defaults as placement reads them (headroom 0.15, the pack's
// saturation ratio 0.85 and Ready ratio 0.9, stale after the pack's silent_after of 2m, a
// refresh every 15s, every weight 1) for the given clusters.
func testSettings(clusters ...*config.ClusterConfig) Settings {
	return Settings{Schedule: config.DefaultSchedule, Pack: config.DefaultThresholds, Clusters: clusters}
}
