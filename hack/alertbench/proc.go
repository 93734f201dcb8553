package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/fleetwatch/fleetwatch/hack/internal/benchproc"
)

// Target names, as the report and the JSON output use them.
const (
	nameFleetwatch   = "fleetwatch"
	nameAlertmanager = "alertmanager"
)

// server is one running target process; tokens maps each cluster to the bearer token
// fleetwatch knows it by (nil for a peer that authenticates nobody).
type server struct {
	*benchproc.Proc
	tokens map[string]string
}

// fleetwatchConfig is the fleetwatch.yml of the bench: one bearer-token cluster per name, the
// built-in rule pack off (nothing is remote-written, so its rules would only add noise) and
// incidents recomputed every second.
func fleetwatchConfig(clusters []string, tokenFile func(string) string) string {
	var cfg strings.Builder
	cfg.WriteString("# Written by hack/alertbench.\nclusters:\n")
	for _, c := range clusters {
		fmt.Fprintf(&cfg, "  - name: %s\n    remote_write: {bearer_token_file: %s}\n", c, tokenFile(c))
	}
	cfg.WriteString("rules:\n  pack: {enabled: false}\ncorrelate:\n  evaluation_interval: 1s\n")
	return cfg.String()
}

// startFleetwatch writes the config and the token files and starts `fleetwatch serve` on a
// free loopback port with its own storage directory.
func startFleetwatch(ctx context.Context, bin, root string, clusters []string, access bool) (*server, error) {
	dir, err := os.MkdirTemp(root, "fleetwatch-")
	if err != nil {
		return nil, err
	}
	s := &server{Proc: &benchproc.Proc{Name: nameFleetwatch, Dir: dir}, tokens: make(map[string]string, len(clusters))}
	for i, c := range clusters {
		tok := fmt.Sprintf("alertbench-%d-%s", i, c)
		if err := os.WriteFile(filepath.Join(dir, c+".token"), []byte(tok+"\n"), 0o600); err != nil {
			return nil, err
		}
		s.tokens[c] = tok
	}
	cfgPath := filepath.Join(dir, "fleetwatch.yml")
	cfg := fleetwatchConfig(clusters, func(c string) string { return c + ".token" })
	if access {
		if err := s.WriteIdentity(); err != nil {
			return nil, err
		}
		cfg += benchproc.Identity
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	if s.Addr, err = benchproc.FreeAddr(); err != nil {
		return nil, err
	}
	return s, s.Start(ctx, bin, []string{"serve",
		"--config.file=" + cfgPath,
		"--web.listen-address=" + s.Addr,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--log.level=warn",
	})
}

// startAlertmanager starts a real Alertmanager that routes everything to a receiver without
// integrations, with clustering (gossip) off, as internal/lab does.
func startAlertmanager(ctx context.Context, bin, root string) (*server, error) {
	dir, err := os.MkdirTemp(root, "alertmanager-")
	if err != nil {
		return nil, err
	}
	s := &server{Proc: &benchproc.Proc{Name: nameAlertmanager, Dir: dir}}
	cfgPath := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfgPath, []byte("# Written by hack/alertbench.\nroute: {receiver: blackhole}\nreceivers: [{name: blackhole}]\n"), 0o600); err != nil {
		return nil, err
	}
	if s.Addr, err = benchproc.FreeAddr(); err != nil {
		return nil, err
	}
	return s, s.Start(ctx, bin, []string{
		"--config.file=" + cfgPath,
		"--storage.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + s.Addr,
		"--cluster.listen-address=",
		"--log.level=warn",
	})
}
