package kubelab

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/internal/sim"
)

// DefaultBinDir is where `make peers` installs the binaries: $FLEETWATCH_PEERS_BIN, or
// ~/.cache/fleetwatch/peers/bin.
func DefaultBinDir() string {
	if d := os.Getenv("FLEETWATCH_PEERS_BIN"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "fleetwatch", "peers", "bin")
}

// Attach starts a real control plane for each of the simulator's clusters, materializes each
// cluster's inventory on it, and hands the simulator's steps to the Fleet (sim.SetActuator).
func Attach(ctx context.Context, s *sim.Sim, dir, binDir string, logger *slog.Logger) (*Fleet, error) {
	names := s.Clusters()
	invs := map[string]sim.Inventory{}
	for _, n := range names {
		inv, err := s.Inventory(n)
		if err != nil {
			return nil, err
		}
		invs[n] = inv
	}
	f, err := StartFleet(ctx, FleetOptions{Dir: dir, BinDir: binDir, Clusters: names, Inventories: invs, Logger: logger})
	if err != nil {
		return nil, err
	}
	s.SetActuator(f)
	return f, nil
}

// ScrapeConfigs is the scrape_configs part of a Prometheus configuration for the cluster:
// kube-state-metrics (job kube-state-metrics) and the API server's own /metrics (job
// apiserver, with the admin client certificate), each every interval.
func (e Endpoint) ScrapeConfigs(interval time.Duration) string {
	return fmt.Sprintf(`  - job_name: kube-state-metrics
    scrape_interval: %[1]s
    scrape_timeout: %[1]s
    static_configs: [{targets: ['%[2]s']}]
  - job_name: apiserver
    scrape_interval: %[1]s
    scrape_timeout: %[1]s
    scheme: https
    tls_config: {ca_file: %[3]s, cert_file: %[4]s, key_file: %[5]s}
    static_configs: [{targets: ['%[6]s']}]
`, promDuration(interval), e.KubeStateMetrics, e.CA, e.ClientCert, e.ClientKey, strings.TrimPrefix(e.APIServer, "https://"))
}

// promDuration renders a duration the way Prometheus's configuration wants it.
func promDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
	return fmt.Sprintf("%dms", int(d/time.Millisecond))
}
