// Package benchproc runs the servers the benches compare (fleetwatch and its real peers) as
// processes on loopback and measures them from /proc: CPU time, memory, the machine's other
// load. hack/bench and hack/alertbench share it.
package benchproc

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
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

// Proc is one running server process.
type Proc struct {
	Name string // as the reports name it
	Addr string // 127.0.0.1:port
	Dir  string // its own temporary directory, removed by Stop
	// Token, when set, is the bearer token of an identity allowed to read and to profile:
	// fleetwatch runs with its access layer on in the benches, as in production.
	Token string

	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

var (
	runningMu sync.Mutex
	running   = map[*Proc]bool{}
)

// StopAll stops every process still running; used on errors and signals.
func StopAll() {
	runningMu.Lock()
	var all []*Proc
	for s := range running {
		all = append(all, s)
	}
	runningMu.Unlock()
	for _, s := range all {
		s.Stop()
	}
}

// FreeAddr is a loopback address with a port nobody listens on now.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Start runs bin with args in s.Dir, logging to a file there, and waits until its /-/ready
// answers 200 (60s at most).
func (s *Proc) Start(ctx context.Context, bin string, args []string) error {
	s.logPath = filepath.Join(s.Dir, s.Name+".log")
	logf, err := os.Create(s.logPath)
	if err != nil {
		return err
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir = s.Dir
	s.cmd.Stdout = logf
	s.cmd.Stderr = logf
	// If the bench dies without cleaning up (SIGKILL), the server goes with it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", s.Name, err)
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
			return fmt.Errorf("%s exited during startup: %v\n%s", s.Name, s.waitErr, s.LogTail())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := http.Get("http://" + s.Addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 60s\n%s", s.Name, s.LogTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop terminates the process (SIGTERM, SIGKILL after 15s) and removes its directory.
func (s *Proc) Stop() {
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
	if s.Dir != "" {
		_ = os.RemoveAll(s.Dir)
	}
}

// Alive is nil while the process runs, else how it ended and its log.
func (s *Proc) Alive() error {
	select {
	case <-s.done:
		return fmt.Errorf("%s exited: %v\n%s", s.Name, s.waitErr, s.LogTail())
	default:
		return nil
	}
}

// LogTail is the end of the process's log.
func (s *Proc) LogTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "--- " + s.Name + " log (tail) ---\n" + string(b)
}

// PID is the process ID.
func (s *Proc) PID() int { return s.cmd.Process.Pid }

// URL is the address of path on the process.
func (s *Proc) URL(path string) string { return "http://" + s.Addr + path }

var clkTck = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}()

// CPUSeconds is the user+system CPU time the process has used, from /proc/<pid>/stat.
func CPUSeconds(pid int) (float64, error) {
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

// ProcStatusKB reads a "Vm...:  N kB" field of /proc/<pid>/status.
func ProcStatusKB(pid int, field string) (int64, error) {
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

// MachineBusySeconds is the CPU time all processes of the machine have used, from /proc/stat.
func MachineBusySeconds() (float64, error) {
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

// CPU is the CPU time (seconds) used so far by the server, by the bench itself and by the
// whole machine, at a time.
type CPU struct {
	At                    time.Time
	Server, Self, Machine float64
}

// TakeCPU reads the CPU used so far by the server's processes (their sum), this process and
// the machine.
func TakeCPU(pids ...int) (CPU, error) {
	c := CPU{At: time.Now()}
	for _, pid := range pids {
		s, err := CPUSeconds(pid)
		if err != nil {
			return c, err
		}
		c.Server += s
	}
	var err error
	if c.Self, err = CPUSeconds(os.Getpid()); err != nil {
		return c, err
	}
	c.Machine, err = MachineBusySeconds()
	return c, err
}

// OtherCores is the average number of cores that processes other than the server and the
// bench used between two snapshots.
func OtherCores(c0, c1 CPU) float64 {
	secs := c1.At.Sub(c0.At).Seconds()
	if secs <= 0 {
		return 0
	}
	return max(0, (c1.Machine-c0.Machine)-(c1.Server-c0.Server)-(c1.Self-c0.Self)) / secs
}

// WaitQuiet waits, up to limit, until the processes other than the server and the bench use
// less than half a core over half a second, and returns the last load seen (in cores).
func WaitQuiet(ctx context.Context, pid int, limit time.Duration) (float64, error) {
	deadline := time.Now().Add(limit)
	for {
		c0, err := TakeCPU(pid)
		if err != nil {
			return 0, err
		}
		if err := Sleep(ctx, 500*time.Millisecond); err != nil {
			return 0, err
		}
		c1, err := TakeCPU(pid)
		if err != nil {
			return 0, err
		}
		other := OtherCores(c0, c1)
		if other < 0.5 || time.Now().After(deadline) {
			return other, nil
		}
	}
}

// WaitIdle waits, up to limit, until the server uses less than 5% of a core over a quarter of
// a second, and returns the snapshot at the start of that idle window: the end of its work.
func WaitIdle(ctx context.Context, pid int, limit time.Duration) (CPU, error) {
	deadline := time.Now().Add(limit)
	c0, err := TakeCPU(pid)
	if err != nil {
		return c0, err
	}
	for {
		if err := Sleep(ctx, 250*time.Millisecond); err != nil {
			return c0, err
		}
		c1, err := TakeCPU(pid)
		if err != nil {
			return c0, err
		}
		if (c1.Server-c0.Server)/c1.At.Sub(c0.At).Seconds() < 0.05 || time.Now().After(deadline) {
			return c0, nil
		}
		c0 = c1
	}
}

// Sleep waits d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Authorize adds s's identity to a request that carries no credentials of its own.
func (s *Proc) Authorize(req *http.Request) {
	if s.Token != "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+s.Token)
	}
}

// Identity is the access section and token file of the benches' reader and profiler
// identity; WriteIdentity writes the token into s.Dir and remembers it.
const Identity = "access:\n  identities:\n    - {name: bench, roles: [read, admin], bearer_token_file: bench.token}\n"

// WriteIdentity writes the bench identity's token file into s.Dir; add Identity to the config.
func (s *Proc) WriteIdentity() error {
	s.Token = "bench-reader-" + filepath.Base(s.Dir)
	return os.WriteFile(filepath.Join(s.Dir, "bench.token"), []byte(s.Token+"\n"), 0o600)
}

// Fetch saves what GET path on s answers (a profile) to the file to.
func Fetch(ctx context.Context, client *http.Client, s *Proc, path, to string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL(path), nil)
	if err != nil {
		return err
	}
	s.Authorize(req)
	c := *client
	c.Timeout = 10 * time.Minute
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1000))
		return fmt.Errorf("GET %s: HTTP %d: %s", path, resp.StatusCode, b)
	}
	f, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
