package correlate_test

import (
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/correlate/input"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

// TestConfigSettings: the correlate settings this package and correlate/input take, their
// defaults (the packages' own) and their validation.
func TestConfigSettings(t *testing.T) {
	cfg, err := config.Load([]byte("clusters: []"), ".")
	require.NoError(t, err)
	require.Equal(t, model.Duration(correlate.DefaultResolvedRetention), cfg.Correlate.ResolvedRetention)
	require.Equal(t, model.Duration(input.DefaultResolveTimeout), cfg.Correlate.ResolveTimeout)
	require.Equal(t, model.Duration(input.DefaultWebhookResolveTimeout), cfg.Correlate.WebhookResolveTimeout)

	cfg, err = config.LoadFile("../internal/config/testdata/correlate_retention.good.yml")
	require.NoError(t, err)
	require.Equal(t, model.Duration(168*time.Hour), cfg.Correlate.ResolvedRetention)
	require.Equal(t, model.Duration(10*time.Minute), cfg.Correlate.ResolveTimeout)
	require.Equal(t, model.Duration(13*time.Hour), cfg.Correlate.WebhookResolveTimeout)

	for in, want := range map[string]string{
		"correlate: {resolved_retention: 0s}":      "correlate.resolved_retention: must be positive, got 0s",
		"correlate: {resolved_retention: -1h}":     "not a valid duration string",
		"correlate: {resolve_timeout: 0s}":         "correlate.resolve_timeout: must be positive, got 0s",
		"correlate: {webhook_resolve_timeout: 0s}": "correlate.webhook_resolve_timeout: must be positive, got 0s",
		"correlate: {resolved_retention: forever}": "not a valid duration string",
	} {
		_, err := config.Load([]byte(in), ".")
		require.ErrorContains(t, err, want, in)
	}
}

// TestSettingsRules: the rules a loaded correlate section gives: the defaults, a role that
// correlate.alerts names replaced as a whole, the rollout settings and teams of the section, and
// query.replica_labels added to the default replica labels.
func TestSettingsRules(t *testing.T) {
	cfg, err := config.Load([]byte(`
query: {replica_labels: [ha]}
correlate:
  rollout_clusters: 3
  rollout_window: 1h
  teams: {payments: team-payments}
  alerts: {nodes_root: [NodeDown]}
`), ".")
	require.NoError(t, err)
	r := correlate.Settings{Correlate: cfg.Correlate, ReplicaLabels: cfg.Query.ReplicaLabels}.Rules()
	want := correlate.DefaultRules
	want.NodesRoot = []string{"NodeDown"}
	want.RolloutClusters, want.RolloutWindow = 3, time.Hour
	want.Teams = map[string]string{"payments": "team-payments"}
	want.ReplicaLabels = []string{"prometheus_replica", "replica", "ha"}
	require.Equal(t, want, r)

	cfg, err = config.Load([]byte("clusters: []"), ".")
	require.NoError(t, err)
	require.Equal(t, correlate.DefaultRules, correlate.Settings{Correlate: cfg.Correlate}.Rules(), "the defaults are the defaults")
}
