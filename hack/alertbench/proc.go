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

// Target names, as the report and the JSON output use them.
const (
	nameFleetwatch   = "fleetwatch"
	nameAlertmanager = "alertmanager"
)

// server is one running target process.
type server struct {
	name    string // nameFleetwatch or nameAlertmanager
	addr    string // 127.0.0.1:port
	dir     string // its own temporary directory, removed by stop
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
	// tokens maps each cluster to the bearer token fleetwatch knows it by; nil for Alertmanager,
	// which authenticates nobody.
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
func startFleetwatch(ctx context.Context, bin, root string, clusters []string) (*server, error) {
	dir, err := os.MkdirTemp(root, "fleetwatch-")
	if err != nil {
		return nil, err
	}
	s := &server{name: nameFleetwatch, dir: dir, tokens: make(map[string]string, len(clusters))}
	for i, c := range clusters {
		tok := fmt.Sprintf("alertbench-%d-%s", i, c)
		if err := os.WriteFile(filepath.Join(dir, c+".token"), []byte(tok+"\n"), 0o600); err != nil {
			return nil, err
		}
		s.tokens[c] = tok
	}
	cfgPath := filepath.Join(dir, "fleetwatch.yml")
	cfg := fleetwatchConfig(clusters, func(c string) string { return c + ".token" })
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	if s.addr, err = freeAddr(); err != nil {
		return nil, err
	}
	return s, s.start(ctx, bin, []string{"serve",
		"--config.file=" + cfgPath,
		"--web.listen-address=" + s.addr,
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
	s := &server{name: nameAlertmanager, dir: dir}
	cfgPath := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfgPath, []byte("# Written by hack/alertbench.\nroute: {receiver: blackhole}\nreceivers: [{name: blackhole}]\n"), 0o600); err != nil {
		return nil, err
	}
	if s.addr, err = freeAddr(); err != nil {
		return nil, err
	}
	return s, s.start(ctx, bin, []string{
		"--config.file=" + cfgPath,
		"--storage.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + s.addr,
		"--cluster.listen-address=",
		"--log.level=warn",
	})
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

func (s *server) url(path string) string { return "http://" + s.addr + path }

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
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
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
type cpuSnapshot struct {
	at                    time.Time
	server, self, machine float64
}

func takeCPU(pid int) (cpuSnapshot, error) {
	c := cpuSnapshot{at: time.Now()}
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

// otherCores is the average number of cores that processes other than the server and the
// bench used between two snapshots.
func otherCores(c0, c1 cpuSnapshot) float64 {
	secs := c1.at.Sub(c0.at).Seconds()
	if secs <= 0 {
		return 0
	}
	return max(0, (c1.machine-c0.machine)-(c1.server-c0.server)-(c1.self-c0.self)) / secs
}

// waitQuiet waits, up to limit, until the processes other than the server and the bench use
// less than half a core over half a second, and returns the last load seen (in cores).
func waitQuiet(ctx context.Context, pid int, limit time.Duration) (float64, error) {
	deadline := time.Now().Add(limit)
	for {
		c0, err := takeCPU(pid)
		if err != nil {
			return 0, err
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return 0, err
		}
		c1, err := takeCPU(pid)
		if err != nil {
			return 0, err
		}
		other := otherCores(c0, c1)
		if other < 0.5 || time.Now().After(deadline) {
			return other, nil
		}
	}
}

// waitIdle waits, up to limit, until the server uses less than 5% of a core over a quarter of
// a second, and returns the snapshot at the start of that idle window: the end of its work.
func waitIdle(ctx context.Context, pid int, limit time.Duration) (cpuSnapshot, error) {
	deadline := time.Now().Add(limit)
	c0, err := takeCPU(pid)
	if err != nil {
		return c0, err
	}
	for {
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return c0, err
		}
		c1, err := takeCPU(pid)
		if err != nil {
			return c0, err
		}
		if (c1.server-c0.server)/c1.at.Sub(c0.at).Seconds() < 0.05 || time.Now().After(deadline) {
			return c0, nil
		}
		c0 = c1
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
