package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// server is one running target process.
type server struct {
	name    string // fleetwatch or prometheus
	addr    string // 127.0.0.1:port
	dir     string // its own temporary directory
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
	// tokens maps each cluster to the bearer token fleetwatch knows it by; nil for prometheus.
	tokens map[string]string
}

var (
	runningMu sync.Mutex
	running   = map[*server]bool{}
)

// stopAll stops every server still running; used on errors and signals.
func stopAll() {
	runningMu.Lock()
	var all []*server
	for s := range running {
		all = append(all, s)
	}
	runningMu.Unlock()
	for _, s := range all {
		s.stop()
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startFleetwatch writes a config with one bearer-token cluster per name, the result cache off
// (Prometheus has none; 0 turns it off) and starts bin/fleetwatch on a free loopback port.
func startFleetwatch(ctx context.Context, bin, root string, clusters []string, engine string) (*server, error) {
	dir, err := os.MkdirTemp(root, "fleetwatch-")
	if err != nil {
		return nil, err
	}
	s := &server{name: "fleetwatch", dir: dir, tokens: map[string]string{}}
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
	fmt.Fprintf(&cfg, "query:\n  engine: %s\n  result_cache:\n    max_size_bytes: 0\n", engine)
	cfgPath := filepath.Join(dir, "fleetwatch.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		return nil, err
	}
	if s.addr, err = freeAddr(); err != nil {
		return nil, err
	}
	args := []string{"serve",
		"--config.file=" + cfgPath,
		"--web.listen-address=" + s.addr,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--log.level=warn",
	}
	return s, s.start(ctx, bin, args)
}

// startPrometheus starts Prometheus with the remote-write receiver on, accepting both protocol
// versions, and a configuration without scrape jobs: everything in its TSDB came from us.
func startPrometheus(ctx context.Context, bin, root string) (*server, error) {
	dir, err := os.MkdirTemp(root, "prometheus-")
	if err != nil {
		return nil, err
	}
	s := &server{name: "prometheus", dir: dir}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte("# Written by hack/bench: no scrape jobs.\nglobal:\n  scrape_interval: 15s\n"), 0o600); err != nil {
		return nil, err
	}
	if s.addr, err = freeAddr(); err != nil {
		return nil, err
	}
	args := []string{
		"--config.file=" + cfgPath,
		"--web.listen-address=" + s.addr,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.enable-remote-write-receiver",
		"--web.remote-write-receiver.accepted-protobuf-messages=prometheus.WriteRequest",
		"--web.remote-write-receiver.accepted-protobuf-messages=io.prometheus.write.v2.Request",
		"--log.level=warn",
	}
	return s, s.start(ctx, bin, args)
}

func (s *server) start(ctx context.Context, bin string, args []string) error {
	s.logPath = filepath.Join(s.dir, s.name+".log")
	logf, err := os.Create(s.logPath)
	if err != nil {
		return err
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir = s.dir
	s.cmd.Stdout = logf
	s.cmd.Stderr = logf
	// If the bench dies without cleaning up (SIGKILL), the server goes with it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	s.done = make(chan struct{})
	runningMu.Lock()
	running[s] = true
	runningMu.Unlock()
	go func() {
		s.waitErr = s.cmd.Wait()
		logf.Close()
		close(s.done)
	}()

	// Poll readiness with a deadline.
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("%s exited during startup: %v\n%s", s.name, s.waitErr, s.logTail())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := http.Get("http://" + s.addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 60s\n%s", s.name, s.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop terminates the process (SIGTERM, SIGKILL after 15s) and removes its directory.
func (s *server) stop() {
	runningMu.Lock()
	live := running[s]
	delete(running, s)
	runningMu.Unlock()
	if live && s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

func (s *server) alive() error {
	select {
	case <-s.done:
		return fmt.Errorf("%s exited: %v\n%s", s.name, s.waitErr, s.logTail())
	default:
		return nil
	}
}

func (s *server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "--- " + s.name + " log (tail) ---\n" + string(b)
}

func (s *server) pid() int { return s.cmd.Process.Pid }

var clkTck = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}()

// cpuSeconds is the user+system CPU time the process has used, from /proc/<pid>/stat.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may contain spaces: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(3) ... utime(14) stime(15), so indexes 11 and 12 here.
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, b)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, b)
	}
	return (ut + st) / clkTck, nil
}

// procStatusKB reads a "Vm...:  N kB" field of /proc/<pid>/status.
func procStatusKB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			fs := strings.Fields(rest)
			if len(fs) == 0 {
				break
			}
			return strconv.ParseInt(fs[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s not in /proc/%d/status", field, pid)
}

// machineBusySeconds is the CPU time all processes of the machine have used, from /proc/stat.
func machineBusySeconds() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("unexpected /proc/stat: %q", line)
	}
	var busy float64
	// user nice system idle iowait irq softirq steal: all but idle and iowait.
	for i, v := range f[1:min(len(f), 9)] {
		if i == 3 || i == 4 {
			continue
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, err
		}
		busy += x
	}
	return busy / clkTck, nil
}

// cpuSnapshot is the CPU used so far by the server, by the bench itself and by the machine.
type cpuSnapshot struct{ server, self, machine float64 }

func takeCPU(pid int) (cpuSnapshot, error) {
	var c cpuSnapshot
	var err error
	if c.server, err = cpuSeconds(pid); err != nil {
		return c, err
	}
	if c.self, err = cpuSeconds(os.Getpid()); err != nil {
		return c, err
	}
	c.machine, err = machineBusySeconds()
	return c, err
}

// waitQuiet waits, up to max, until the processes other than the server and the bench use
// less than half a core over half a second, and returns the last load seen (in cores).
func waitQuiet(ctx context.Context, pid int, max time.Duration) (float64, error) {
	deadline := time.Now().Add(max)
	for {
		c0, err := takeCPU(pid)
		if err != nil {
			return 0, err
		}
		t0 := time.Now()
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		c1, err := takeCPU(pid)
		if err != nil {
			return 0, err
		}
		other := ((c1.machine - c0.machine) - (c1.server - c0.server) - (c1.self - c0.self)) / time.Since(t0).Seconds()
		if other < 0.5 || time.Now().After(deadline) {
			return other, nil
		}
	}
}
