package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestRestartOnlySettings: ingest.forward is read at the start; a reload that changes it is
// refused, names the setting, and leaves the running configuration in force. A Lease in the
// cluster fleetwatch runs in needs a pod: outside one, the start fails and says so.
func TestRestartOnlySettings(t *testing.T) {
	dir := t.TempDir()
	testenv.WriteFile(t, dir, "eu-1.token", "eu-1-token\n")
	base := "clusters: [{name: eu-1, remote_write: {bearer_token_file: eu-1.token}}]\nrules: {pack: {enabled: false}}\ncorrelate: {enabled: false}\n"
	forward := "ingest: {forward: {url: \"http://127.0.0.1:1/api/v1/receive\"}}\n"
	cfg := testenv.WriteFile(t, dir, "fleetwatch.yml", base+forward)
	s, _ := runServer(t, cfg, filepath.Join(dir, "data"))

	require.NoError(t, s.reload(), "the same forwarding reloads")
	require.NoError(t, os.WriteFile(cfg, []byte(base), 0o600))
	require.EqualError(t, s.reload(), "ingest.forward: a change needs a restart")
	require.NotNil(t, s.cfg.Load().Ingest.Forward, "the running configuration stays")

	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	inCluster := testenv.WriteFile(t, dir, "in-cluster.yml", base+"remediation: {leader_election: {namespace: fleetwatch}}\n")
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln2.Close()
	_, err = newServer(serverOptions{ConfigFile: inCluster, TSDBPath: filepath.Join(dir, "data2"), Listener: ln2, Logger: slog.New(slog.DiscardHandler)})
	require.ErrorContains(t, err, "remediation.leader_election: no cluster is named, so the Lease is in the cluster fleetwatch runs in, but it does not run in a pod")
}

// runServer starts fleetwatch on the configuration file, its TSDB in dataDir, on a loopback
// port, and runs it (so that stopping it stops everything it started: rule groups wait for
// Run) until the test ends. It returns the server and its base URL.
func runServer(t *testing.T, cfg, dataDir string) (*server, string) {
	t.Helper()
	return runServerWith(t, serverOptions{ConfigFile: cfg, TSDBPath: dataDir})
}

// runServerWith is runServer with any options; the listener and the logger are its own.
func runServerWith(t *testing.T, o serverOptions) (*server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	o.Listener, o.Logger = ln, slog.New(slog.DiscardHandler)
	s, err := newServer(o)
	if err != nil {
		ln.Close()
		require.NoError(t, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return s, "http://" + ln.Addr().String()
}
