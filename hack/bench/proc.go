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
// fleetwatch knows it by (nil for a peer that authenticates nobody). peers are processes the
// target needs besides (Thanos Receive and Query for fleetwatch on Thanos): their CPU and
// memory count as the target's.
type server struct {
	*benchproc.Proc
	tokens map[string]string
	peers  []*benchproc.Proc
}

// PIDs are the target's processes.
func (s *server) PIDs() []int {
	pids := []int{s.PID()}
	for _, p := range s.peers {
		pids = append(pids, p.PID())
	}
	return pids
}

// PeakRSSMiB is the sum of the target's processes' peak resident memory (VmHWM).
func (s *server) PeakRSSMiB() (float64, error) {
	var kb int64
	for _, pid := range s.PIDs() {
		v, err := benchproc.ProcStatusKB(pid, "VmHWM")
		if err != nil {
			return 0, err
		}
		kb += v
	}
	return float64(kb) / 1024, nil
}

// Stop stops fleetwatch, then its peers.
func (s *server) Stop() {
	s.Proc.Stop()
	for _, p := range s.peers {
		p.Stop()
	}
}

// Alive is nil while every process of the target runs.
func (s *server) Alive() error {
	for _, p := range append([]*benchproc.Proc{s.Proc}, s.peers...) {
		if err := p.Alive(); err != nil {
			return err
		}
	}
	return nil
}

// startFleetwatch writes a config with one bearer-token cluster per name, the result cache off
// (Prometheus has none; 0 turns it off) and starts bin/fleetwatch on a free loopback port.
func startFleetwatch(ctx context.Context, bin, root string, clusters []string, engine string, access bool) (*server, error) {
	return startFleetwatchOn(ctx, bin, root, clusters, engine, access, false, "", nil)
}

// startFleetwatchThanos starts a real Thanos Receive and Query (the thanos install's shape:
// one receiver, a filesystem bucket) and fleetwatch forwarding to Receive (ingest.forward)
// and reading through Query (query.stores).
func startFleetwatchThanos(ctx context.Context, bin, thanos, root string, clusters []string, engine string, access bool) (*server, error) {
	dir, err := os.MkdirTemp(root, "thanos-")
	if err != nil {
		return nil, err
	}
	objstore := filepath.Join(dir, "objstore.yml")
	if err := os.WriteFile(objstore, []byte("type: FILESYSTEM\nconfig:\n  directory: "+filepath.Join(dir, "bucket")+"\n"), 0o600); err != nil {
		return nil, err
	}
	addrs := make([]string, 5) // receive grpc, http, remote write; query grpc, http
	for i := range addrs {
		if addrs[i], err = benchproc.FreeAddr(); err != nil {
			return nil, err
		}
	}
	receive := &benchproc.Proc{Name: "thanos-receive", Dir: dir, Addr: addrs[1]}
	if err := receive.Start(ctx, thanos, []string{"receive", "--tsdb.path=" + filepath.Join(dir, "receive"),
		"--objstore.config-file=" + objstore, "--grpc-address=" + addrs[0], "--http-address=" + addrs[1],
		"--remote-write.address=" + addrs[2], `--label=receive_replica="0"`, "--log.level=warn"}); err != nil {
		return nil, err
	}
	query := &benchproc.Proc{Name: "thanos-query", Dir: dir, Addr: addrs[4]}
	if err := query.Start(ctx, thanos, []string{"query", "--endpoint=" + addrs[0], "--query.replica-label=receive_replica",
		"--grpc-address=" + addrs[3], "--http-address=" + addrs[4], "--log.level=warn"}); err != nil {
		receive.Stop()
		return nil, err
	}
	s, err := startFleetwatchOn(ctx, bin, root, clusters, engine, access, false, "", &thanosAddrs{receive: addrs[2], query: addrs[3]})
	if s != nil {
		s.peers = []*benchproc.Proc{receive, query}
	}
	if err != nil {
		receive.Stop()
		query.Stop()
	}
	return s, err
}

// thanosAddrs are Thanos Receive's remote-write address and Thanos Query's gRPC address.
type thanosAddrs struct{ receive, query string }

// startFleetwatchOn is startFleetwatch with the result cache in its default configuration when
// cache is set, and the TSDB blocks under the blocks directory (if any) copied into its data
// directory first.
func startFleetwatchOn(ctx context.Context, bin, root string, clusters []string, engine string, access, cache bool, blocks string, thanos *thanosAddrs) (*server, error) {
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
	if thanos != nil {
		fmt.Fprintf(&cfg, "ingest:\n  forward: {url: \"http://%s/api/v1/receive\"}\n", thanos.receive)
	}
	fmt.Fprintf(&cfg, "query:\n  engine: %s\n", engine)
	if thanos != nil {
		fmt.Fprintf(&cfg, "  replica_labels: [receive_replica, tenant_id]\n  stores:\n    - {name: thanos, address: %q, timeout: 2m}\n", thanos.query)
	}
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
