package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"golang.org/x/sync/errgroup"

	"github.com/fleetwatch/fleetwatch/hack/internal/benchproc"
	"github.com/fleetwatch/fleetwatch/hack/internal/stats"
)

// The dashboard phase: a Grafana dashboard of the query set over the last -dashboard-span
// (12 hours), refreshed again and again, on fleetwatch with its result cache on (the default
// configuration) and on Prometheus, which has none. Both serve the very same TSDB blocks,
// written before they start with Prometheus's block writer (as `promtool tsdb
// create-blocks-from` does): same series as the ingest phase, one sample per -interval, up to
// a minute before the phase starts. A refresh asks every panel's range query at once, six at a
// time as a browser does, over the range Grafana asks for: aligned to the step, ending when the
// phase started (the same range on both targets, so that their answers can be compared; a
// refresh in the same minute asks the same). The first refresh after start is cold; the others
// are warm. fleetwatch runs a second time with its result cache off, to tell the cache's share
// from the engine's.

// dashboardTiming is one target's refreshes.
type dashboardTiming struct {
	RefreshMs []float64      `json:"refresh_ms"` // the first one is cold
	PeakRSS   float64        `json:"peak_rss_mib"`
	results   []*queryResult // the cold refresh's, in the order of the query set
}

// dashboardConcurrency is how many panel queries a browser sends to one host at a time.
const dashboardConcurrency = 6

func runDashboard(ctx context.Context, o options, root string, client *http.Client, qs []benchQuery, rep *report) error {
	clusters := make([]string, o.clusters)
	var series []*seriesDef
	for i := range o.clusters {
		clusters[i] = clusterName(i)
		series = append(series, genCluster(clusters[i], i, o.series, o.interval)...)
	}
	blocks := filepath.Join(root, "dashboard-blocks")
	end := time.Now().Add(-time.Minute).Truncate(o.interval)
	start := end.Add(-o.dashboardSpan - 15*time.Minute) // rate windows are full at the first step
	fmt.Printf("\ndashboard: writing %s of %d series at %s into TSDB blocks ...\n", end.Sub(start), len(series), o.interval)
	t := time.Now()
	samples, err := writeBlocks(ctx, blocks, series, start, end, o.interval)
	if err != nil {
		return fmt.Errorf("dashboard blocks: %w", err)
	}
	fmt.Printf("dashboard: %d samples written in %.1fs\n", samples, time.Since(t).Seconds())

	rangeEnd := time.Duration(time.Now().Truncate(o.dashboardStep).UnixMilli()) * time.Millisecond
	timings := map[string]*dashboardTiming{}
	for _, name := range []string{"fleetwatch", "fleetwatch-uncached", "prometheus"} {
		dt, err := dashboardTarget(ctx, o, root, blocks, name, clusters, client, qs, rangeEnd)
		if err != nil {
			return fmt.Errorf("dashboard %s: %w", name, err)
		}
		timings[name] = dt
		fmt.Printf("dashboard %-19s refresh ms: cold %.0f, warm %v; peak RSS %.0f MiB\n", name, dt.RefreshMs[0], dt.RefreshMs[1:], dt.PeakRSS)
	}
	rep.Dashboard = timings
	fw, pr := timings["fleetwatch"], timings["prometheus"]
	span := o.dashboardSpan.String()
	cold := row{Metric: span + " dashboard refresh, cold ms", Fleetwatch: fw.RefreshMs[0], Prometheus: pr.RefreshMs[0], Better: "lower",
		Note: fmt.Sprintf("%d panels, step %s", len(qs), o.dashboardStep)}
	cold.Ratio = cold.Fleetwatch / cold.Prometheus
	warmFw, warmPr := fw.RefreshMs[1:], pr.RefreshMs[1:]
	warm := row{Metric: span + " dashboard refresh, warm ms", Fleetwatch: stats.Median(warmFw), Prometheus: stats.Median(warmPr), Better: "lower",
		Note: fmt.Sprintf("median of %d; spread fw %s, prom %s", len(warmFw), stats.Spread(warmFw), stats.Spread(warmPr))}
	warm.Ratio = warm.Fleetwatch / warm.Prometheus
	rss := row{Metric: "peak RSS after dashboard MiB", Fleetwatch: fw.PeakRSS, Prometheus: pr.PeakRSS, Ratio: fw.PeakRSS / pr.PeakRSS, Better: "lower"}
	// The same fleetwatch without its result cache: what the cache costs a cold refresh and
	// saves a warm one, apart from the engine.
	un := timings["fleetwatch-uncached"]
	unCold := row{Metric: span + " refresh, cold ms, fleetwatch uncached", Fleetwatch: un.RefreshMs[0], Prometheus: pr.RefreshMs[0], Better: "lower",
		Note: fmt.Sprintf("cached/uncached %.2f", fw.RefreshMs[0]/un.RefreshMs[0])}
	unCold.Ratio = unCold.Fleetwatch / unCold.Prometheus
	unWarm := row{Metric: span + " refresh, warm ms, fleetwatch uncached", Fleetwatch: stats.Median(un.RefreshMs[1:]), Prometheus: stats.Median(warmPr), Better: "lower",
		Note: fmt.Sprintf("spread fw %s", stats.Spread(un.RefreshMs[1:]))}
	unWarm.Ratio = unWarm.Fleetwatch / unWarm.Prometheus
	rep.Rows = append(rep.Rows, cold, warm, rss, unCold, unWarm)
	for _, name := range []string{"fleetwatch", "fleetwatch-uncached"} {
		for i, q := range qs {
			if errMsg, warn := compareResults(timings[name].results[i], pr.results[i]); errMsg != "" {
				rep.Errors = append(rep.Errors, fmt.Sprintf("dashboard query %s (%s) on %s: %s", q.Name, q.Expr, name, errMsg))
			} else if warn != "" {
				rep.Errors = append(rep.Errors, fmt.Sprintf("dashboard query %s (%s) on %s: %s", q.Name, q.Expr, name, warn))
			}
		}
	}
	return nil
}

// writeBlocks writes the series' samples in [start, end] into two-hour TSDB blocks in dir.
func writeBlocks(ctx context.Context, dir string, series []*seriesDef, start, end time.Time, interval time.Duration) (int, error) {
	const blockSize = 2 * time.Hour
	iv := interval.Milliseconds()
	lsets := make([]labels.Labels, len(series))
	for i, s := range series {
		b := labels.NewScratchBuilder(len(s.labels))
		for _, l := range s.labels {
			b.Add(l.name, l.value)
		}
		lsets[i] = b.Labels()
	}
	logger := slog.New(slog.DiscardHandler)
	total := 0
	t0 := start.UnixMilli()
	for from := start.Truncate(blockSize); from.Before(end); from = from.Add(blockSize) {
		w, err := tsdb.NewBlockWriter(logger, dir, blockSize.Milliseconds())
		if err != nil {
			return 0, err
		}
		lo, hi := max(from.UnixMilli(), t0), min(from.Add(blockSize).UnixMilli(), end.UnixMilli()+1)
		for k := (lo - t0 + iv - 1) / iv; t0+k*iv < hi; k++ {
			app := w.Appender(ctx)
			for i, s := range series {
				// The scrape offset stays inside the interval, so a sample never leaves its block.
				ts := min(t0+k*iv+s.offset, hi-1)
				if _, err := app.Append(0, lsets[i], ts, s.value(int(k))); err != nil {
					w.Close()
					return 0, err
				}
				total++
			}
			if err := app.Commit(); err != nil {
				w.Close()
				return 0, err
			}
		}
		if _, err := w.Flush(ctx); err != nil {
			w.Close()
			return 0, err
		}
		if err := w.Close(); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// dashboardTarget starts one target on a copy of the blocks and refreshes the dashboard.
func dashboardTarget(ctx context.Context, o options, root, blocks, name string, clusters []string, client *http.Client, qs []benchQuery, end time.Duration) (*dashboardTiming, error) {
	var (
		s   *server
		err error
	)
	switch name {
	case "fleetwatch", "fleetwatch-uncached":
		s, err = startFleetwatchOn(ctx, o.fleetwatch, root, clusters, o.engine, !o.noAccess, name == "fleetwatch", blocks, nil)
	default:
		s, err = startPrometheusOn(ctx, o.prometheus, root, blocks)
	}
	if err != nil {
		return nil, err
	}
	defer s.Stop()
	if _, err := benchproc.WaitQuiet(ctx, s.PID(), o.quietWait); err != nil {
		return nil, err
	}
	dt := &dashboardTiming{}
	// With -profile, fleetwatch's CPU is profiled over the cold refresh and, after the measured
	// ones, over further warm refreshes.
	profile := func(name string, secs int) chan error {
		done := make(chan error, 1)
		if o.profileDir == "" || name != "fleetwatch" {
			close(done)
			return done
		}
		go func() {
			done <- benchproc.Fetch(ctx, client, s.Proc, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), filepath.Join(o.profileDir, name))
		}()
		return done
	}
	doRefresh := func() ([]*queryResult, error) {
		t0 := time.Now()
		results, err := refresh(ctx, client, s, qs, end-o.dashboardSpan, end, o.dashboardStep)
		if err == nil {
			dt.RefreshMs = append(dt.RefreshMs, stats.Ms(time.Since(t0)))
		}
		return results, err
	}
	coldProfile := profile("dashboard-cold.cpu.pprof", 3)
	for r := range o.dashboardRefreshes {
		results, err := doRefresh()
		if err != nil {
			return nil, err
		}
		if r == 0 {
			dt.results = results
			if err := <-coldProfile; err != nil {
				return nil, err
			}
		}
	}
	if o.profileDir != "" && name == "fleetwatch" {
		measured := dt.RefreshMs
		warmProfile := profile("dashboard-warm.cpu.pprof", 10)
		for running := true; running; {
			select {
			case err := <-warmProfile:
				if err != nil {
					return nil, err
				}
				running = false
			default:
				if _, err := doRefresh(); err != nil {
					return nil, err
				}
			}
		}
		dt.RefreshMs = measured
	}
	hwm, err := benchproc.ProcStatusKB(s.PID(), "VmHWM")
	if err != nil {
		return nil, err
	}
	dt.PeakRSS = float64(hwm) / 1024
	return dt, s.Alive()
}

// refresh asks every query of the dashboard, dashboardConcurrency at a time, and returns
// their answers in the order of qs.
func refresh(ctx context.Context, client *http.Client, s *server, qs []benchQuery, start, end, step time.Duration) ([]*queryResult, error) {
	out := make([]*queryResult, len(qs))
	var g errgroup.Group
	g.SetLimit(dashboardConcurrency)
	for i, q := range qs {
		g.Go(func() (err error) {
			_, out[i], err = timedQuery(ctx, client, s, q.Expr, start, end, step)
			return err
		})
	}
	return out, g.Wait()
}
