package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/fleetwatch/fleetwatch/hack/internal/benchproc"
)

// server is one running target process; tokens maps each cluster to the bearer token
// fleetwatch knows it by (nil for a peer that authenticates nobody).
type server struct {
	*benchproc.Proc
	tokens map[string]string
}

// startFleetwatch writes a config with one bearer-token cluster per name, the result cache off
// (Prometheus has none; 0 turns it off) and starts bin/fleetwatch on a free loopback port.
func startFleetwatch(ctx context.Context, bin, root string, clusters []string, engine string, access bool) (*server, error) {
	return startFleetwatchOn(ctx, bin, root, clusters, engine, access, false, "")
}

// startFleetwatchOn is startFleetwatch with the result cache in its default configuration when
// cache is set, and the TSDB blocks under the blocks directory (if any) copied into its data
// directory first.
func startFleetwatchOn(ctx context.Context, bin, root string, clusters []string, engine string, access, cache bool, blocks string) (*server, error) {
	dir, err := os.MkdirTemp(root, "fleetwatch-")
	if err != nil {
		return nil, err
	}
	if blocks != "" {
		if err := os.CopyFS(filepath.Join(dir, "data"), os.DirFS(blocks)); err != nil {
			return nil, err
		}
	}
	s := &server{Proc: &benchproc.Proc{Name: "fleetwatch", Dir: dir}, tokens: map[string]string{}}
	var cfg strings.Builder
	cfg.WriteString("# Written by hack/bench.\nclusters:\n")
	for i, c := range clusters {
		tok := fmt.Sprintf("bench-token-%d-%s", i, c)
		f := fmt.Sprintf("%s.token", c)
		if err := os.WriteFile(filepath.Join(dir, f), []byte(tok+"\n"), 0o600); err != nil {
			return nil, err
		}
		s.tokens[c] = tok
		fmt.Fprintf(&cfg, "  - name: %s\n    remote_write:\n      bearer_token_file: %s\n", c, f)
	}
	fmt.Fprintf(&cfg, "query:\n  engine: %s\n", engine)
	if !cache {
		cfg.WriteString("  result_cache:\n    max_size_bytes: 0\n")
	}
	if access {
		cfg.WriteString(benchproc.Identity)
		if err := s.WriteIdentity(); err != nil {
			return nil, err
		}
	}
	cfgPath := filepath.Join(dir, "fleetwatch.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		return nil, err
	}
	if s.Addr, err = benchproc.FreeAddr(); err != nil {
		return nil, err
	}
	args := []string{"serve",
		"--config.file=" + cfgPath,
		"--web.listen-address=" + s.Addr,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--log.level=warn",
	}
	return s, s.Start(ctx, bin, args)
}

// startPrometheus starts Prometheus with the remote-write receiver on, accepting both protocol
// versions, and a configuration without scrape jobs: everything in its TSDB came from us.
func startPrometheus(ctx context.Context, bin, root string) (*server, error) {
	return startPrometheusOn(ctx, bin, root, "")
}

// startPrometheusOn is startPrometheus with the TSDB blocks under the blocks directory (if
// any) copied into its data directory first.
func startPrometheusOn(ctx context.Context, bin, root, blocks string) (*server, error) {
	dir, err := os.MkdirTemp(root, "prometheus-")
	if err != nil {
		return nil, err
	}
	if blocks != "" {
		if err := os.CopyFS(filepath.Join(dir, "data"), os.DirFS(blocks)); err != nil {
			return nil, err
		}
	}
	s := &server{Proc: &benchproc.Proc{Name: "prometheus", Dir: dir}}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte("# Written by hack/bench: no scrape jobs.\nglobal:\n  scrape_interval: 15s\n"), 0o600); err != nil {
		return nil, err
	}
	if s.Addr, err = benchproc.FreeAddr(); err != nil {
		return nil, err
	}
	args := []string{
		"--config.file=" + cfgPath,
		"--web.listen-address=" + s.Addr,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.enable-remote-write-receiver",
		"--web.remote-write-receiver.accepted-protobuf-messages=prometheus.WriteRequest",
		"--web.remote-write-receiver.accepted-protobuf-messages=io.prometheus.write.v2.Request",
		"--log.level=warn",
	}
	return s, s.Start(ctx, bin, args)
}
