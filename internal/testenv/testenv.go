// Package testenv starts real processes for integration and end-to-end tests: fleetwatch
// itself and the peer binaries (prometheus, promtool, alertmanager, thanos) that
// `make peers` installs. Every process runs on 127.0.0.1 with a free port and its own temporary
// directory, readiness is polled with a deadline (never a fixed sleep), each process's log is
// kept and printed when the test fails, and every process is stopped when the test ends.
//
// It is test plumbing: production code must not import it.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fleetwatch/fleetwatch/internal/kubelab"
)

// PeersBin is the directory holding the peer binaries (kubelab.DefaultBinDir).
func PeersBin() string { return kubelab.DefaultBinDir() }

// Peer returns the path of a peer binary, skipping the test when it is not installed and the
// test runs with -short; without -short a missing peer fails the test, so CI cannot go green
// by skipping.
func Peer(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(PeersBin(), name)
	if _, err := os.Stat(p); err != nil {
		if testing.Short() {
			t.Skipf("peer %s not installed (run `make peers`): %v", name, err)
		}
		t.Fatalf("peer %s not installed (run `make peers`): %v", name, err)
	}
	return p
}

// SkipIfShort skips tests that start real processes under -short.
func SkipIfShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
}

// FreePort returns a loopback address with a port that was free a moment ago.
func FreePort(t testing.TB) string {
	t.Helper()
	port, err := kubelab.FreePort()
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

// Fleetwatch builds the fleetwatch binary once per test binary and returns its path. The
// package's TestMain must be VerifyNoLeaks (or pass RemoveBuild to goleak.VerifyTestMain), which
// deletes the binary when the test binary exits: at about 135 MB a package, they would otherwise
// pile up in the temporary directory run after run.
func Fleetwatch(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fleetwatch-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildDir = dir
		buildPath = filepath.Join(dir, "fleetwatch")
		cmd := exec.Command("go", "build", "-o", buildPath, "github.com/fleetwatch/fleetwatch/cmd/fleetwatch")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build fleetwatch: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Process is a running binary.
type Process struct {
	Name string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Start runs bin with args. Its output is kept and printed if the test fails; it is killed
// when the test ends.
func Start(t testing.TB, name, bin string, args ...string) *Process {
	t.Helper()
	return StartEnv(t, name, bin, nil, args...)
}

// StartEnv is Start with extra environment variables ("KEY=value") on top of the test's.
func StartEnv(t testing.TB, name, bin string, env []string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, cmd: exec.Command(bin, args...), log: &syncBuffer{}, done: make(chan struct{})}
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	// Own process group, so nothing the process starts outlives the test.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("----- log of %s (%s), last %d bytes -----\n%s", name, bin, maxLogTail, tail(p.log.String()))
		}
	})
	return p
}

// Log returns what the process printed so far.
func (p *Process) Log() string { return p.log.String() }

// Kill sends SIGKILL to the process group and waits for the process to exit.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to d for a clean exit, then kills.
func (p *Process) Stop(d time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		p.Kill()
		return fmt.Errorf("%s did not stop within %s", p.Name, d)
	}
}

// Wait waits up to d for the process to exit by itself and returns how it exited.
func (p *Process) Wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s still running after %s", p.Name, d)
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitReady polls url until it answers 200 or the deadline passes; the process exiting first
// fails at once.
func (p *Process) WaitReady(t testing.TB, url string, deadline time.Duration) {
	t.Helper()
	Eventually(t, deadline, func() error {
		if p.Exited() {
			return &stopError{fmt.Errorf("%s exited before it was ready: %v", p.Name, p.err)}
		}
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	})
}

type stopError struct{ error }

// Eventually calls f every 200ms until it returns nil or deadline passes, and fails the test
// with f's last error.
func Eventually(t testing.TB, deadline time.Duration, f func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if se, ok := err.(*stopError); ok {
			t.Fatal(se.error)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not reached within %s: %v", deadline, err)
		case <-tick.C:
		}
	}
}

// WriteFile writes content to dir/name and returns the path.
func WriteFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// maxLogTail bounds what a failed test prints per process: the end of a log is where the
// reason is, and a whole log drowns the failure.
const maxLogTail = 8 << 10

func tail(s string) string {
	if len(s) <= maxLogTail {
		return s
	}
	return "..." + s[len(s)-maxLogTail:]
}

// VerifyNoLeaks runs the package's tests and fails them when one leaves a goroutine behind
// (goleak), past the goroutines that libraries Prometheus and Thanos pull in start once per
// process and never stop. extra adds what a package knowingly leaves.
func VerifyNoLeaks(m goleak.TestingM, extra ...goleak.Option) {
	goleak.VerifyTestMain(m, append([]goleak.Option{
		RemoveBuild,
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		// Thanos's libraries import objstore, whose Baidu client starts a logger at init.
		goleak.IgnoreTopFunction("github.com/baidubce/bce-sdk-go/util/log.NewLogger.func1"),
	}, extra...)...)
}

// RemoveBuild is the goleak.VerifyTestMain option that deletes the binary Fleetwatch built, then
// exits with the tests' code. VerifyNoLeaks includes it.
var RemoveBuild = goleak.Cleanup(func(exitCode int) {
	if buildDir != "" {
		if err := os.RemoveAll(buildDir); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		}
	}
	os.Exit(exitCode)
})

// IdleConnections ignores the goroutines of idle keep-alive connections of a shared HTTP
// client, for VerifyNoLeaks: they are not leaks.
var IdleConnections = []goleak.Option{
	goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
	goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
}
