// Command labstat measures the fleet lab on real control planes: how long `fleetwatch sim
// --control-planes` takes until every cluster's pods run, and the CPU and memory each lab
// cluster's processes use once it has settled (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kube-state-metrics, and the simulator's share: it plays every cluster's
// kubelets).
//
//	go run ./hack/labstat --fleetwatch=bin/fleetwatch --clusters=1 --nodes=50 --pods-per-node=30
//
// Linux only: it reads /proc.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fleetwatch/fleetwatch/internal/kubelab"
)

func main() {
	fw := flag.String("fleetwatch", "bin/fleetwatch", "fleetwatch binary")
	clusters := flag.Int("clusters", 1, "lab clusters")
	nodes := flag.Int("nodes", 50, "nodes per cluster")
	pods := flag.Int("pods-per-node", 30, "pods per node")
	settle := flag.Duration("settle", 30*time.Second, "wait after start-up before measuring")
	window := flag.Duration("window", 60*time.Second, "CPU measuring window")
	binDir := flag.String("bin-dir", kubelab.DefaultBinDir(), "control-plane binaries")
	flag.Parse()
	// A closed stdout (| head) must not kill labstat before it stops the lab.
	signal.Ignore(syscall.SIGPIPE)
	if err := run(*fw, *binDir, *clusters, *nodes, *pods, *settle, *window); err != nil {
		fmt.Fprintln(os.Stderr, "labstat:", err)
		os.Exit(1)
	}
}

func run(fw, binDir string, clusters, nodes, pods int, settle, window time.Duration) error {
	dir, err := os.MkdirTemp("", "labstat-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(fw, "sim", "--web.listen-address="+addr, "--control-planes",
		"--control-planes.dir="+filepath.Join(dir, "clusters"), "--control-planes.bin-dir="+binDir,
		"--clusters="+strconv.Itoa(clusters), "--nodes="+strconv.Itoa(nodes), "--pods-per-node="+strconv.Itoa(pods))
	logf, err := os.Create(filepath.Join(dir, "sim.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() }()

	var eps []kubelab.Endpoint
	for {
		if time.Since(start) > 15*time.Minute {
			b, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("lab not ready after 15 minutes:\n%s", b)
		}
		resp, err := http.Get("http://" + addr + "/control-planes")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&eps)
			resp.Body.Close()
			if err == nil && resp.StatusCode == 200 {
				break
			}
		}
		if cmd.ProcessState != nil {
			b, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("sim exited:\n%s", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ready := time.Since(start)
	fmt.Printf("lab of %d cluster(s) x %d nodes x %d pods per node: ready (every pod running) after %.1fs\n", clusters, nodes, pods, ready.Seconds())

	time.Sleep(settle)
	pids := map[string]int{"simulator (kubelets of all clusters)": cmd.Process.Pid}
	for _, e := range eps {
		for name, pid := range e.Pids {
			pids[e.Name+" "+name] = pid
		}
	}
	cpu0 := map[string]float64{}
	for k, pid := range pids {
		cpu0[k] = cpuSeconds(pid)
	}
	time.Sleep(window)
	names := make([]string, 0, len(pids))
	for k := range pids {
		names = append(names, k)
	}
	sort.Strings(names)
	var totCPU, totRSS float64
	fmt.Printf("%-48s %8s %10s %10s\n", "process", "cores", "RSS MiB", "peak MiB")
	for _, k := range names {
		cores := (cpuSeconds(pids[k]) - cpu0[k]) / window.Seconds()
		rss, hwm := memMiB(pids[k])
		totCPU += cores
		totRSS += rss
		fmt.Printf("%-48s %8.3f %10.0f %10.0f\n", k, cores, rss, hwm)
	}
	fmt.Printf("%-48s %8.3f %10.0f\n", "total", totCPU, totRSS)
	fmt.Printf("%-48s %8.3f %10.0f\n", "per cluster", totCPU/float64(clusters), totRSS/float64(clusters))
	return nil
}

// cpuSeconds is the process's user+system CPU time.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may contain spaces.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func memMiB(pid int) (rss, peak float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = v / 1024
		case "VmHWM:":
			peak = v / 1024
		}
	}
	return rss, peak
}
