package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/hack/internal/benchproc"
)

// profileFleetwatch runs fleetwatch once more, outside the measured rounds, and writes to
// o.profileDir, for each phase, a CPU profile covering it until its alerts are in incidents
// (<phase>.cpu.pprof) and goroutine dumps taken every two seconds meanwhile
// (<phase>.goroutines.txt, to see where requests wait); then a heap profile
// (intake.heap.pprof) and a CPU profile of fleetwatch holding the alerts with nothing coming
// in (steady.cpu.pprof). Inspect them with `go tool pprof -top bin/fleetwatch DIR/new.cpu.pprof`.
func profileFleetwatch(ctx context.Context, o options, root string, client *http.Client, st *stream, tr *targetResult) (string, error) {
	if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
		return "", err
	}
	s, err := startFleetwatch(ctx, o.fleetwatch, root, st.clusters, !o.noAccess)
	if err != nil {
		return "", err
	}
	defer s.Stop()

	o.quietWait = 0
	var notes []string
	for _, phase := range []string{"new", "resend"} {
		// A profile has a fixed length: the slowest measured round's phase, with margin, and
		// the encoding before it.
		var longest float64
		for _, r := range tr.Rounds {
			longest = max(longest, phaseOf(r, phase).SettledSeconds)
		}
		secs := int(math.Ceil(longest*1.2)) + 3
		prof := filepath.Join(o.profileDir, phase+".cpu.pprof")
		dumps := filepath.Join(o.profileDir, phase+".goroutines.txt")
		pctx, cancel := context.WithCancel(ctx)
		var (
			wg         sync.WaitGroup
			perr, derr error
		)
		wg.Go(func() {
			perr = benchproc.Fetch(ctx, client, s.Proc, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), prof)
		})
		wg.Go(func() { derr = sampleGoroutines(pctx, client, s, dumps, 2*time.Second) })
		time.Sleep(200 * time.Millisecond) // let the profile start before the first request
		pr, err := runPhase(ctx, o, client, st, s, phase)
		cancel()
		if err != nil {
			wg.Wait()
			return "", err
		}
		wg.Wait()
		if perr != nil {
			return "", perr
		}
		if derr != nil {
			return "", derr
		}
		notes = append(notes, fmt.Sprintf("%s (%ds; %.0f alerts/s, settled after %.1fs), %s", prof, secs, pr.AlertsPerSec, pr.SettledSeconds, dumps))
	}
	heap := filepath.Join(o.profileDir, "intake.heap.pprof")
	if err := benchproc.Fetch(ctx, client, s.Proc, "/debug/pprof/heap?gc=1", heap); err != nil {
		return "", err
	}
	const steadySecs = 10
	steady := filepath.Join(o.profileDir, "steady.cpu.pprof")
	if err := benchproc.Fetch(ctx, client, s.Proc, fmt.Sprintf("/debug/pprof/profile?seconds=%d", steadySecs), steady); err != nil {
		return "", err
	}
	notes = append(notes, heap, fmt.Sprintf("%s (%ds, no input)", steady, steadySecs))
	return "profiles: " + strings.Join(notes, "; "), nil
}

// sampleGoroutines appends a goroutine dump (debug=1: stacks grouped, with counts) to file
// every interval until ctx ends.
func sampleGoroutines(ctx context.Context, client *http.Client, s *server, file string, every time.Duration) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	for i := 0; ; i++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL("/debug/pprof/goroutine?debug=1"), nil)
		if err != nil {
			return err
		}
		s.Authorize(req)
		resp, err := client.Do(req)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(f, "=== sample %d at %s\n", i, time.Now().Format(time.RFC3339Nano))
		_, err = io.Copy(f, resp.Body)
		resp.Body.Close()
		if err != nil && ctx.Err() == nil {
			return err
		}
		if benchproc.Sleep(ctx, every) != nil {
			return nil
		}
	}
}
