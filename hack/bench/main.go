// Command bench runs fleetwatch side by side with Prometheus's own remote-write receiver
// (`prometheus --web.enable-remote-write-receiver`) on the same pre-generated workload and
// prints how they compare: ingest throughput, CPU per sample and peak memory for Remote-Write
// 1.0 and 2.0, and query latency for a set of typical fleet queries. `make bench` runs it.
//
// The workload is kube-state-metrics / cAdvisor / application-like: several clusters of a few
// thousand series each (8 to 11 labels; counters, gauges and classic histograms), encoded once
// as snappy-compressed requests of about 2,000 samples with one sample per time series entry,
// as Prometheus's remote-write queue sends them. Timestamps advance in order: a warm-up scrape
// creates every series (not measured), then the RW 1.0 phase and the RW 2.0 phase each send
// -samples further scrapes of every series.
//
// Both targets receive the very same bytes. Every series carries its `cluster` label in the
// payload, as it does when a member Prometheus sets `cluster` as an external label: fleetwatch
// accepts a `cluster` label equal to the authenticated cluster's name (and would stamp it if it
// were absent), Prometheus stores it as sent, so both end up with the same series. fleetwatch
// authenticates each cluster by its bearer token; Prometheus has no authentication.
//
// The targets run one after the other, never at the same time, so they do not compete for
// CPU, each from an empty data directory. CPU is the server process's user+system time from
// /proc/<pid>/stat over the phase; peak memory is VmHWM from /proc/<pid>/status. fleetwatch's
// range-query result cache is turned off (max_size_bytes: 0) there, since Prometheus has none.
//
// Then the dashboard phase (dashboard.go): the query set as the panels of a 12-hour dashboard,
// refreshed cold and warm, on fleetwatch as configured by default (result cache on), on
// fleetwatch without its cache, and on Prometheus, all serving the same TSDB blocks.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fleetwatch/fleetwatch/hack/internal/benchproc"
	"github.com/fleetwatch/fleetwatch/hack/internal/stats"
)

type options struct {
	fleetwatch, prometheus string
	thanos                 string
	noAccess               bool
	clusters, series       int
	warmup, samples        int
	perRequest             int
	interval               time.Duration
	concurrency            int
	rounds                 int
	queryRuns              int
	engine                 string
	jsonOut                string
	profileDir             string
	quietWait              time.Duration
	dashboardSpan          time.Duration
	dashboardStep          time.Duration
	dashboardRefreshes     int
}

func main() {
	var o options
	flag.StringVar(&o.fleetwatch, "fleetwatch", "bin/fleetwatch", "fleetwatch binary")
	flag.BoolVar(&o.noAccess, "no-access", false, "run fleetwatch without identities (as before the access layer; for comparing with an older binary)")
	flag.StringVar(&o.prometheus, "prometheus", "", "prometheus binary (make peers installs one)")
	flag.StringVar(&o.thanos, "thanos", "", "thanos binary: also bench fleetwatch on Thanos (the thanos install: forwarding to a real Thanos Receive, reading through Thanos Query; their CPU and memory count as its own) against the embedded TSDB")
	flag.IntVar(&o.clusters, "clusters", 4, "clusters remote-writing")
	flag.IntVar(&o.series, "series", 2500, "series per cluster")
	flag.IntVar(&o.warmup, "warmup", 1, "scrapes sent before measuring (they create the series)")
	flag.DurationVar(&o.quietWait, "quiet-wait", 5*time.Second, "before each target's ingest, wait up to this long for other processes to use less than half a core")
	flag.IntVar(&o.samples, "samples", 100, "samples per series in each measured phase (RW 1.0, then RW 2.0); the whole data set must span under "+maxSpan.String()+" at -interval")
	flag.IntVar(&o.perRequest, "per-request", 2000, "samples per remote-write request")
	flag.DurationVar(&o.interval, "interval", 15*time.Second, "scrape interval of the generated data")
	flag.IntVar(&o.concurrency, "concurrency", 4, "concurrent senders (each owns a shard of every cluster's series)")
	flag.IntVar(&o.rounds, "rounds", 5, "ingest rounds, each on fresh servers; the median is reported")
	flag.IntVar(&o.queryRuns, "query-runs", 20, "timed runs of each query (after one untimed run)")
	flag.StringVar(&o.engine, "fleetwatch-engine", "thanos", "fleetwatch query engine: thanos or prometheus")
	flag.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	flag.StringVar(&o.profileDir, "profile", "", "after the measured rounds, run fleetwatch once more and write CPU and heap profiles of ingest and queries to this directory")
	flag.DurationVar(&o.dashboardSpan, "dashboard-span", 12*time.Hour, "range of the dashboard phase's panels (0 skips the phase)")
	flag.DurationVar(&o.dashboardStep, "dashboard-step", time.Minute, "step of the dashboard phase's range queries")
	flag.IntVar(&o.dashboardRefreshes, "dashboard-refreshes", 10, "dashboard refreshes per target; the first is cold")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	benchproc.StopAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// targetResult is everything measured on one target.
type targetResult struct {
	Name   string           `json:"name"`
	Rounds [][]ingestResult `json:"rounds"`
	// Peak RSS (VmHWM) at the end of each round's ingest, and after the queries.
	PeakRSSIngestMiB  []float64               `json:"peak_rss_after_ingest_mib"`
	PeakRSSQueriesMiB float64                 `json:"peak_rss_after_queries_mib"`
	Queries           map[string]*queryTiming `json:"queries"`
	results           map[string]*queryResult // by query key, for comparison
	StoredSamples     float64                 `json:"stored_samples"`
}

type queryTiming struct {
	Expr      string    `json:"expr"`
	Kind      string    `json:"kind"` // instant or range
	P50ms     float64   `json:"p50_ms"`
	P90ms     float64   `json:"p90_ms"`
	RunsMs    []float64 `json:"runs_ms"`
	Series    int       `json:"series"`
	Mismatch  string    `json:"mismatch,omitempty"`
	ValueWarn string    `json:"value_warning,omitempty"`
}

type report struct {
	Started     time.Time                   `json:"started"`
	Seconds     float64                     `json:"seconds"`
	Options     map[string]any              `json:"options"`
	Dataset     map[string]any              `json:"dataset"`
	Targets     map[string]*targetResult    `json:"targets"`
	Rows        []row                       `json:"table"`
	ThanosRows  []thanosRow                 `json:"thanos_table,omitempty"`
	Dashboard   map[string]*dashboardTiming `json:"dashboard,omitempty"`
	Errors      []string                    `json:"errors,omitempty"`
	ProfileNote string                      `json:"profile,omitempty"`
}

type row struct {
	Metric     string  `json:"metric"`
	Fleetwatch float64 `json:"fleetwatch"`
	Prometheus float64 `json:"prometheus"`
	Ratio      float64 `json:"ratio"`
	Better     string  `json:"better"` // higher or lower
	Note       string  `json:"note,omitempty"`
}

// maxSpan is how far back the generated data may start: under the TSDB head's one-hour
// appendable window, with room for the time the bench itself takes.
const maxSpan = 55 * time.Minute

func run(ctx context.Context, o options) error {
	began := time.Now()
	if o.prometheus == "" {
		return errors.New("-prometheus is required")
	}
	paths := []*string{&o.fleetwatch, &o.prometheus}
	if o.thanos != "" {
		paths = append(paths, &o.thanos)
	}
	for _, p := range paths {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("%w (run `make build` / `make peers`)", err)
		}
		*p = abs
	}
	if o.concurrency < 1 || o.rounds < 1 || o.queryRuns < 1 || o.samples < 1 || o.warmup < 1 {
		return errors.New("-concurrency, -rounds, -query-runs, -samples and -warmup must be >= 1")
	}
	if o.dashboardSpan > 0 && (o.dashboardRefreshes < 2 || o.dashboardStep <= 0) {
		return errors.New("-dashboard-refreshes must be >= 2 (one cold, the rest warm) and -dashboard-step > 0")
	}
	if span := time.Duration(o.warmup+2*o.samples+2) * o.interval; span > maxSpan {
		return fmt.Errorf("-warmup, -samples and -interval span %s of data, over %s: both servers' TSDB heads accept samples only within an hour of their newest, and fleetwatch writes series of its own at the current time (last ingest, rules), so the oldest samples would be refused as out of bounds", span, maxSpan)
	}
	root, err := os.MkdirTemp("", "fleetwatch-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	defer benchproc.StopAll() // before the directory goes

	fmt.Printf("generating %d clusters x %d series, %d warm-up + 2 x %d scrapes at %s, %d samples/request, %d shards per cluster ...\n",
		o.clusters, o.series, o.warmup, o.samples, o.interval, o.perRequest, o.concurrency)
	t := time.Now()
	ds, err := genDataset(o.clusters, o.series, o.warmup, o.samples, o.concurrency, o.perRequest, o.interval, time.Now())
	if err != nil {
		return err
	}
	runtime.GC()
	fmt.Printf("generated in %.1fs: %d samples (%d series); rw1 %d requests %.1f MiB (%.1f B/sample), rw2 %d requests %.1f MiB (%.1f B/sample)\n",
		time.Since(t).Seconds(), ds.totalSamples, o.clusters*o.series,
		ds.rw1.requests, mib(ds.rw1.bytes), float64(ds.rw1.bytes)/float64(ds.rw1.samples),
		ds.rw2.requests, mib(ds.rw2.bytes), float64(ds.rw2.bytes)/float64(ds.rw2.samples))

	rep := &report{
		Started: began,
		Options: map[string]any{
			"clusters": o.clusters, "series_per_cluster": o.series, "warmup": o.warmup, "samples": o.samples,
			"per_request": o.perRequest, "interval": o.interval.String(), "concurrency": o.concurrency,
			"rounds": o.rounds, "query_runs": o.queryRuns, "fleetwatch_engine": o.engine, "gomaxprocs": runtime.GOMAXPROCS(0),
		},
		Dataset: map[string]any{
			"series": o.clusters * o.series, "samples_total": ds.totalSamples,
			"rw1_requests": ds.rw1.requests, "rw1_bytes": ds.rw1.bytes,
			"rw2_requests": ds.rw2.requests, "rw2_bytes": ds.rw2.bytes,
			"start_ms": ds.tStart(), "end_ms": ds.tEnd(),
		},
		Targets: map[string]*targetResult{
			"fleetwatch": {Name: "fleetwatch", Queries: map[string]*queryTiming{}, results: map[string]*queryResult{}},
			"prometheus": {Name: "prometheus", Queries: map[string]*queryTiming{}, results: map[string]*queryResult{}},
		},
	}
	if o.thanos != "" {
		rep.Targets[targetThanos] = &targetResult{Name: targetThanos, Queries: map[string]*queryTiming{}, results: map[string]*queryResult{}}
	}
	client := newHTTPClient(o.concurrency)
	qs := queries(ds.clusters[0])

	for r := range o.rounds {
		order := []string{"fleetwatch", "prometheus"}
		if o.thanos != "" {
			order = append(order, targetThanos)
		}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		last := r == o.rounds-1
		for _, name := range order {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := benchTarget(ctx, o, root, client, ds, qs, rep.Targets[name], r, last); err != nil {
				return err
			}
		}
	}

	if o.profileDir != "" {
		note, err := profileFleetwatch(ctx, o, root, client, ds, qs, rep)
		if err != nil {
			return fmt.Errorf("profile: %w", err)
		}
		rep.ProfileNote = note
	}

	buildRows(rep, ds, qs)
	if o.thanos != "" {
		buildThanosRows(rep, qs)
	}
	if o.dashboardSpan > 0 {
		if err := runDashboard(ctx, o, root, client, qs, rep); err != nil {
			return err
		}
	}
	rep.Seconds = time.Since(began).Seconds()
	printReport(os.Stdout, rep, ds)
	if o.jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Printf("results written to %s\n", o.jsonOut)
	}
	if len(rep.Errors) > 0 {
		return fmt.Errorf("%d check(s) failed, see ERROR lines above", len(rep.Errors))
	}
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// targetThanos is fleetwatch on Thanos (-thanos).
const targetThanos = "fleetwatch-thanos"

func startTarget(ctx context.Context, o options, root, name string, clusters []string) (*server, error) {
	if name == targetThanos {
		return startFleetwatchThanos(ctx, o.fleetwatch, o.thanos, root, clusters, o.engine, !o.noAccess)
	}
	if name == "fleetwatch" {
		return startFleetwatch(ctx, o.fleetwatch, root, clusters, o.engine, !o.noAccess)
	}
	return startPrometheus(ctx, o.prometheus, root)
}

// benchTarget runs one round on one target: start it fresh, ingest the warm-up, RW 1.0 and
// RW 2.0 phases, and in the last round check what was stored and time the queries.
func benchTarget(ctx context.Context, o options, root string, client *http.Client, ds *dataset, qs []benchQuery, tr *targetResult, round int, last bool) error {
	s, err := startTarget(ctx, o, root, tr.Name, ds.clusters)
	if err != nil {
		return err
	}
	defer s.Stop()
	if other, err := benchproc.WaitQuiet(ctx, s.PID(), o.quietWait); err != nil {
		return err
	} else if other > 0.5 {
		fmt.Printf("note: other processes keep using %.1f cores; wall-clock numbers of this round are noisy\n", other)
	}
	var res []ingestResult
	for _, p := range []*phase{ds.warmup, ds.rw1, ds.rw2} {
		ir, err := send(ctx, client, s, p, o.concurrency)
		if err != nil {
			if aerr := s.Alive(); aerr != nil {
				return fmt.Errorf("%w\n%v", err, aerr)
			}
			return err
		}
		res = append(res, ir)
	}
	hwm, err := s.PeakRSSMiB()
	if err != nil {
		return err
	}
	tr.Rounds = append(tr.Rounds, res)
	tr.PeakRSSIngestMiB = append(tr.PeakRSSIngestMiB, hwm)
	fmt.Printf("round %d %-10s  %s  peak RSS %.0f MiB\n", round+1, tr.Name, phaseLine(res), hwm)
	if !last {
		return nil
	}

	// Everything sent must be stored: count the samples of every series over the whole window.
	window := time.Duration(ds.tEnd()-ds.tStart()+60_000) * time.Millisecond
	end := time.Duration(ds.tEnd()) * time.Millisecond
	// Thanos Query learns what Receive holds when it next asks it (every few seconds): until
	// then it does not ask Receive for the window, and the count is short. Ask again a while.
	deadline := time.Now()
	if tr.Name == targetThanos {
		deadline = deadline.Add(time.Minute)
	}
	for {
		// count_over_time drops the metric name, so count one metric name at a time.
		tr.StoredSamples = 0
		for _, name := range ds.metricNames() {
			_, cnt, err := timedQuery(ctx, client, s, fmt.Sprintf(`sum(count_over_time({__name__=%q, cluster=~".+"}[%dms]))`, name, window.Milliseconds()), 0, end, 0)
			if err != nil {
				return err
			}
			for _, v := range cnt.series {
				tr.StoredSamples += v[0]
			}
		}
		if int(tr.StoredSamples) == ds.totalSamples {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s stored %.0f samples, %d were sent and acknowledged", tr.Name, tr.StoredSamples, ds.totalSamples)
		}
		if err := benchproc.Sleep(ctx, time.Second); err != nil {
			return err
		}
	}

	start, step := queryRange(ds)
	for _, q := range qs {
		for _, kind := range []string{"instant", "range"} {
			st := time.Duration(0)
			if kind == "range" {
				st = step
			}
			key := q.Name + " " + kind
			qt := &queryTiming{Expr: q.Expr, Kind: kind}
			var lats []time.Duration
			for i := 0; i <= o.queryRuns; i++ {
				lat, r, err := timedQuery(ctx, client, s, q.Expr, start, end, st)
				if err != nil {
					return err
				}
				if i == 0 { // untimed: warms caches the same way on both targets
					tr.results[key] = r
					qt.Series = len(r.series)
					continue
				}
				lats = append(lats, lat)
				qt.RunsMs = append(qt.RunsMs, stats.Ms(lat))
			}
			qt.P50ms = stats.Ms(stats.Percentile(lats, 0.5))
			qt.P90ms = stats.Ms(stats.Percentile(lats, 0.9))
			tr.Queries[key] = qt
		}
	}
	if tr.PeakRSSQueriesMiB, err = s.PeakRSSMiB(); err != nil {
		return err
	}
	return s.Alive()
}

// queryRange is the range of the range queries: the ingested window less the first 10
// minutes (so 5m and 10m rate windows are full), with a step giving about 250 points.
func queryRange(ds *dataset) (start, step time.Duration) {
	start = time.Duration(ds.tStart())*time.Millisecond + 10*time.Minute
	end := time.Duration(ds.tEnd()) * time.Millisecond
	if start >= end {
		start = time.Duration(ds.tStart()) * time.Millisecond
	}
	step = max(15*time.Second, ((end - start) / 250).Truncate(time.Second))
	return start, step
}

func phaseLine(res []ingestResult) string {
	var parts []string
	for _, r := range res {
		if r.Phase == "warmup" {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %7.0f samples/s %5.2f CPU-s/1M (server %.2f cores, bench %.2f, other %.2f; request p50 %.0fms p99 %.0fms)",
			r.Phase, r.SamplesPerSec, r.CPUPerMillion, r.CPUSeconds/r.Seconds, r.BenchCores, r.OtherCores, r.ReqP50ms, r.ReqP99ms))
	}
	return strings.Join(parts, "\n           ")
}

// phaseStat collects one statistic of one phase over the rounds.
func phaseStat(tr *targetResult, phase string, f func(ingestResult) float64) []float64 {
	var out []float64
	for _, rr := range tr.Rounds {
		for _, r := range rr {
			if r.Phase == phase {
				out = append(out, f(r))
			}
		}
	}
	return out
}

func buildRows(rep *report, ds *dataset, qs []benchQuery) {
	fw, pr := rep.Targets["fleetwatch"], rep.Targets["prometheus"]
	add := func(metric string, a, b []float64, better string) {
		ma, mb := stats.Median(a), stats.Median(b)
		note := ""
		if sa, sb := stats.Spread(a), stats.Spread(b); sa != "" || sb != "" {
			note = fmt.Sprintf("spread fw %s, prom %s", sa, sb)
		}
		rep.Rows = append(rep.Rows, row{Metric: metric, Fleetwatch: ma, Prometheus: mb, Ratio: ma / mb, Better: better, Note: note})
	}
	for _, ph := range []string{protoV1, protoV2} {
		sps := func(r ingestResult) float64 { return r.SamplesPerSec }
		cpu := func(r ingestResult) float64 { return r.CPUPerMillion }
		add(ph+" ingest samples/s", phaseStat(fw, ph, sps), phaseStat(pr, ph, sps), "higher")
		add(ph+" ingest CPU-s per 1M samples", phaseStat(fw, ph, cpu), phaseStat(pr, ph, cpu), "lower")
	}
	add("peak RSS after ingest MiB", fw.PeakRSSIngestMiB, pr.PeakRSSIngestMiB, "lower")
	add("peak RSS after queries MiB", []float64{fw.PeakRSSQueriesMiB}, []float64{pr.PeakRSSQueriesMiB}, "lower")
	for _, q := range qs {
		for _, kind := range []string{"instant", "range"} {
			key := q.Name + " " + kind
			a, b := fw.Queries[key], pr.Queries[key]
			if a == nil || b == nil {
				continue
			}
			errMsg, warn := compareResults(fw.results[key], pr.results[key])
			a.Mismatch, a.ValueWarn = errMsg, warn
			note := fmt.Sprintf("%d series", a.Series)
			if errMsg != "" {
				note = "MISMATCH: " + errMsg
				rep.Errors = append(rep.Errors, fmt.Sprintf("query %s (%s): %s", key, q.Expr, errMsg))
			} else if warn != "" {
				note += "; " + warn
			}
			rep.Rows = append(rep.Rows,
				row{Metric: key + " p50 ms", Fleetwatch: a.P50ms, Prometheus: b.P50ms, Ratio: a.P50ms / b.P50ms, Better: "lower", Note: note},
				row{Metric: key + " p90 ms", Fleetwatch: a.P90ms, Prometheus: b.P90ms, Ratio: a.P90ms / b.P90ms, Better: "lower"})
		}
	}
}

// thanosRow is one figure of fleetwatch on Thanos next to fleetwatch on its embedded TSDB.
type thanosRow struct {
	Metric   string  `json:"metric"`
	Thanos   float64 `json:"thanos"`
	Embedded float64 `json:"embedded"`
	Ratio    float64 `json:"ratio"`
	Better   string  `json:"better"`
	Note     string  `json:"note,omitempty"`
}

// buildThanosRows compares fleetwatch on Thanos with the embedded fleetwatch, and checks its
// answers against Prometheus's as buildRows does for the embedded one.
func buildThanosRows(rep *report, qs []benchQuery) {
	th, fw, pr := rep.Targets[targetThanos], rep.Targets["fleetwatch"], rep.Targets["prometheus"]
	add := func(metric string, a, b []float64, better, note string) {
		ma, mb := stats.Median(a), stats.Median(b)
		if sa, sb := stats.Spread(a), stats.Spread(b); sa != "" || sb != "" {
			note = strings.TrimPrefix(note+"; ", "; ") + fmt.Sprintf("spread thanos %s, embedded %s", sa, sb)
		}
		rep.ThanosRows = append(rep.ThanosRows, thanosRow{Metric: metric, Thanos: ma, Embedded: mb, Ratio: ma / mb, Better: better, Note: note})
	}
	for _, ph := range []string{protoV1, protoV2} {
		sps := func(r ingestResult) float64 { return r.SamplesPerSec }
		cpu := func(r ingestResult) float64 { return r.CPUPerMillion }
		add(ph+" ingest samples/s", phaseStat(th, ph, sps), phaseStat(fw, ph, sps), "higher", "")
		add(ph+" ingest CPU-s per 1M samples", phaseStat(th, ph, cpu), phaseStat(fw, ph, cpu), "lower", "fleetwatch + Receive + Query")
	}
	add("peak RSS after ingest MiB", th.PeakRSSIngestMiB, fw.PeakRSSIngestMiB, "lower", "sum of the three processes' peaks")
	add("peak RSS after queries MiB", []float64{th.PeakRSSQueriesMiB}, []float64{fw.PeakRSSQueriesMiB}, "lower", "")
	for _, q := range qs {
		for _, kind := range []string{"instant", "range"} {
			key := q.Name + " " + kind
			a, b := th.Queries[key], fw.Queries[key]
			if a == nil || b == nil {
				continue
			}
			note := fmt.Sprintf("%d series", a.Series)
			if errMsg, _ := compareResults(th.results[key], pr.results[key]); errMsg != "" {
				note = "MISMATCH with Prometheus: " + errMsg
				rep.Errors = append(rep.Errors, fmt.Sprintf("query %s on Thanos (%s): %s", key, q.Expr, errMsg))
			}
			add(key+" p50 ms", []float64{a.P50ms}, []float64{b.P50ms}, "lower", note)
			add(key+" p90 ms", []float64{a.P90ms}, []float64{b.P90ms}, "lower", "")
		}
	}
}

func printReport(w *os.File, rep *report, ds *dataset) {
	fmt.Fprintf(w, "\n%d clusters x %d series = %d series; %d samples per run (warm-up %d + rw1 %d + rw2 %d); %d concurrent senders; %d round(s), median shown; queries: %v runs each, range step %s\n",
		len(ds.clusters), ds.seriesPerClustr, len(ds.clusters)*ds.seriesPerClustr, ds.totalSamples, ds.warmup.samples, ds.rw1.samples, ds.rw2.samples,
		rep.Options["concurrency"], rep.Options["rounds"], rep.Options["query_runs"], func() time.Duration { _, s := queryRange(ds); return s }())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "metric\tfleetwatch\tprometheus\tratio fw/prom\tbetter\tnote\t")
	for _, r := range rep.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%s\t%s\t\n", r.Metric, stats.Num(r.Fleetwatch), stats.Num(r.Prometheus), r.Ratio, r.Better, r.Note)
	}
	tw.Flush()
	if len(rep.ThanosRows) > 0 {
		fmt.Fprintln(w, "\nfleetwatch on Thanos (Receive + Query) next to fleetwatch on its embedded TSDB, same data, same run:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
		fmt.Fprintln(tw, "metric\ton thanos\tembedded\tratio\tbetter\tnote\t")
		for _, r := range rep.ThanosRows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%s\t%s\t\n", r.Metric, stats.Num(r.Thanos), stats.Num(r.Embedded), r.Ratio, r.Better, r.Note)
		}
		tw.Flush()
	}
	for _, e := range rep.Errors {
		fmt.Fprintln(w, "ERROR:", e)
	}
	if rep.ProfileNote != "" {
		fmt.Fprintln(w, rep.ProfileNote)
	}
	fmt.Fprintf(w, "total run time %.1fs\n", rep.Seconds)
}
