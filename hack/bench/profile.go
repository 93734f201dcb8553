package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/hack/internal/benchproc"
)

// profileFleetwatch runs fleetwatch once more, outside the measured rounds, and writes a CPU
// profile of the ingest (warm-up, RW 1.0 and RW 2.0), a heap profile after it, and a CPU
// profile of the query set run in a loop, to o.profileDir. Inspect them with
// `go tool pprof -top bin/fleetwatch DIR/ingest.cpu.pprof`.
func profileFleetwatch(ctx context.Context, o options, root string, client *http.Client, ds *dataset, qs []benchQuery, rep *report) (string, error) {
	if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
		return "", err
	}
	s, err := startFleetwatch(ctx, o.fleetwatch, root, ds.clusters, o.engine, !o.noAccess)
	if err != nil {
		return "", err
	}
	defer s.Stop()

	// The profile must cover the ingest: take the slowest measured ingest and add margin.
	var longest float64
	for _, rr := range rep.Targets["fleetwatch"].Rounds {
		var sum float64
		for _, r := range rr {
			sum += r.Seconds
		}
		longest = max(longest, sum)
	}
	secs := int(math.Ceil(longest*1.2)) + 1
	ingestProf := filepath.Join(o.profileDir, "ingest.cpu.pprof")
	var wg sync.WaitGroup
	var perr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		perr = benchproc.Fetch(ctx, client, s.Proc, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), ingestProf)
	}()
	time.Sleep(200 * time.Millisecond) // let the profile start before the first request
	for _, p := range []*phase{ds.warmup, ds.rw1, ds.rw2} {
		if _, err := send(ctx, client, s, p, o.concurrency); err != nil {
			return "", err
		}
	}
	wg.Wait()
	if perr != nil {
		return "", perr
	}
	heapProf := filepath.Join(o.profileDir, "ingest.heap.pprof")
	if err := benchproc.Fetch(ctx, client, s.Proc, "/debug/pprof/heap?gc=1", heapProf); err != nil {
		return "", err
	}

	// Queries: loop over the query set for a fixed time while profiling.
	const querySecs = 20
	queryProf := filepath.Join(o.profileDir, "query.cpu.pprof")
	wg.Add(1)
	go func() {
		defer wg.Done()
		perr = benchproc.Fetch(ctx, client, s.Proc, fmt.Sprintf("/debug/pprof/profile?seconds=%d", querySecs), queryProf)
	}()
	start, step := queryRange(ds)
	end := time.Duration(ds.tEnd()) * time.Millisecond
	deadline := time.Now().Add(querySecs * time.Second)
	for time.Now().Before(deadline) {
		for _, q := range qs {
			for _, st := range []time.Duration{0, step} {
				if _, _, err := timedQuery(ctx, client, s, q.Expr, start, end, st); err != nil {
					return "", err
				}
			}
		}
	}
	wg.Wait()
	if perr != nil {
		return "", perr
	}
	return fmt.Sprintf("profiles: %s (ingest, %ds), %s, %s (queries, %ds)", ingestProf, secs, heapProf, queryProf, querySecs), nil
}
