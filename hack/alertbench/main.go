package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fleetwatch/fleetwatch/hack/internal/benchproc"
	"github.com/fleetwatch/fleetwatch/hack/internal/stats"
)

type options struct {
	fleetwatch, alertmanager string
	noAccess                 bool
	clusters, alerts         int
	batch, workers, rounds   int
	seed                     uint64
	jsonOut, profileDir      string
	quietWait, settle        time.Duration
	probeTimeout, steady     time.Duration
	endsAfter                time.Duration
	out                      io.Writer
}

func main() {
	var o options
	flag.StringVar(&o.fleetwatch, "fleetwatch", "bin/fleetwatch", "fleetwatch binary (make build)")
	flag.BoolVar(&o.noAccess, "no-access", false, "run fleetwatch without identities (as before the access layer; for comparing with an older binary)")
	flag.StringVar(&o.alertmanager, "alertmanager", "", "alertmanager binary (make peers installs one)")
	flag.IntVar(&o.clusters, "clusters", 100, "member clusters posting alerts")
	flag.IntVar(&o.alerts, "alerts", 100_000, "active alerts, spread evenly over the clusters")
	flag.IntVar(&o.batch, "batch", 64, "alerts per request at most (Prometheus's notifier default)")
	flag.IntVar(&o.workers, "workers", 8, "requests in flight")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds, each on fresh servers; medians are reported")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the generated alerts")
	flag.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	flag.StringVar(&o.profileDir, "profile", "", "after the rounds, run fleetwatch once more and write CPU profiles of the intake and of the steady state, and a heap profile, to this directory")
	flag.DurationVar(&o.quietWait, "quiet-wait", 5*time.Second, "before each phase, wait up to this long for other processes to use less than half a core")
	flag.DurationVar(&o.settle, "settle-timeout", 5*time.Minute, "how long fleetwatch may take to put a phase's alerts into incidents")
	flag.DurationVar(&o.probeTimeout, "probe-timeout", 2*time.Minute, "how long the probe alert may take to show up")
	flag.DurationVar(&o.steady, "steady", 5*time.Second, "after the load, measure the CPU each target uses holding the alerts for this long (0: skip)")
	flag.DurationVar(&o.endsAfter, "ends-after", 4*time.Minute, "endsAt of the posted alerts, from when each phase starts (Prometheus: 4 x its 1m resend delay); alerts that expire during a round make its held-alerts check a warning")
	flag.Parse()
	o.out = os.Stdout

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	_, err := run(ctx, o)
	stop()
	benchproc.StopAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "alertbench:", err)
		os.Exit(1)
	}
}

// roundResult is one round on one target.
type roundResult struct {
	Round  int           `json:"round"`
	First  bool          `json:"ran_first"`
	Phases []phaseResult `json:"phases"`
	// PeakRSSMiB is VmHWM after the probe (before the listing that checks what is held).
	PeakRSSMiB float64     `json:"peak_rss_mib"`
	Probe      probeResult `json:"probe"`
	// SteadyCores is the CPU the target used with every alert held and nothing coming in.
	SteadyCores float64 `json:"steady_cores"`
	// HeldDistinct is how many distinct alerts the target holds at the end (all alerts and the
	// probe); HeldListed how many it listed (fleetwatch: summed over its active incidents).
	HeldDistinct int `json:"held_distinct"`
	HeldListed   int `json:"held_listed"`
	// Received is the increase of fleetwatch_correlate_alerts_received_total (fleetwatch only).
	Received float64 `json:"received,omitempty"`
	// Expired says that alerts' endsAt passed before they were posted again or before the
	// check: the round took longer than --ends-after, so the held counts are not exact.
	Expired string `json:"expired,omitempty"`
}

type targetResult struct {
	Name   string        `json:"name"`
	Binary string        `json:"binary"`
	Rounds []roundResult `json:"rounds"`
}

type report struct {
	Started  time.Time                `json:"started"`
	Seconds  float64                  `json:"seconds"`
	Options  map[string]any           `json:"options"`
	Stream   map[string]any           `json:"stream"`
	Targets  map[string]*targetResult `json:"targets"`
	Rows     []row                    `json:"table"`
	Errors   []string                 `json:"errors,omitempty"`
	Warnings []string                 `json:"warnings,omitempty"`
	Profile  string                   `json:"profile,omitempty"`
}

type row struct {
	Metric       string  `json:"metric"`
	Fleetwatch   float64 `json:"fleetwatch"`
	Alertmanager float64 `json:"alertmanager"`
	Ratio        float64 `json:"ratio"`
	Better       string  `json:"better"` // higher or lower
	Note         string  `json:"note,omitempty"`
}

// MarshalJSON writes NaN (not measured) as null.
func (r row) MarshalJSON() ([]byte, error) {
	type plain struct {
		Metric       string   `json:"metric"`
		Fleetwatch   *float64 `json:"fleetwatch"`
		Alertmanager *float64 `json:"alertmanager"`
		Ratio        *float64 `json:"ratio"`
		Better       string   `json:"better"`
		Note         string   `json:"note,omitempty"`
	}
	return json.Marshal(plain{r.Metric, finite(r.Fleetwatch), finite(r.Alertmanager), finite(r.Ratio), r.Better, r.Note})
}

// MarshalJSON writes NaN (not measured) as null.
func (p phaseResult) MarshalJSON() ([]byte, error) {
	type plain phaseResult
	v := struct {
		plain
		IncidentP50ms *float64 `json:"incident_p50_ms"`
		IncidentP99ms *float64 `json:"incident_p99_ms"`
		Evaluations   *float64 `json:"evaluations"`
		EvalMeanMs    *float64 `json:"evaluation_mean_ms"`
	}{plain(p), finite(p.IncidentP50ms), finite(p.IncidentP99ms), finite(p.Evaluations), finite(p.EvalMeanMs)}
	return json.Marshal(v)
}

// MarshalJSON writes NaN (not measured) as null.
func (r roundResult) MarshalJSON() ([]byte, error) {
	type plain roundResult
	v := struct {
		plain
		SteadyCores *float64 `json:"steady_cores"`
	}{plain(r), finite(r.SteadyCores)}
	return json.Marshal(v)
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func run(ctx context.Context, o options) (*report, error) {
	began := time.Now()
	if o.out == nil {
		o.out = io.Discard
	}
	if o.alertmanager == "" {
		return nil, errors.New("--alertmanager is required")
	}
	for _, p := range []*string{&o.fleetwatch, &o.alertmanager} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("%w (run `make build` / `make peers`)", err)
		}
		*p = abs
	}
	if o.clusters < 1 || o.alerts < o.clusters || o.batch < 1 || o.workers < 1 || o.rounds < 1 {
		return nil, errors.New("--clusters, --batch, --workers and --rounds must be >= 1, and --alerts >= --clusters")
	}
	if o.endsAfter <= 0 {
		o.endsAfter = 4 * time.Minute
	}
	root, err := os.MkdirTemp("", "fleetwatch-alertbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)
	defer benchproc.StopAll() // before the directory goes

	t := time.Now()
	st := genStream(o.clusters, o.alerts, o.seed, time.Now())
	sample, err := st.encode(o.batch, true, time.Now())
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(st.byName))
	for n := range st.byName {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return st.byName[names[i]] > st.byName[names[j]] })
	var mix []string
	for _, n := range names {
		mix = append(mix, fmt.Sprintf("%s %d", n, st.byName[n]))
	}
	fmt.Fprintf(o.out, "generated %d alerts over %d clusters in %.1fs: %d requests of <= %d alerts, %.1f MiB (%.0f B/alert, with the cluster label); %s\n",
		st.total, o.clusters, time.Since(t).Seconds(), len(sample.batches), o.batch, float64(sample.bytes)/(1<<20), float64(sample.bytes)/float64(st.total), strings.Join(mix, ", "))

	rep := &report{
		Started: began,
		Options: map[string]any{
			"clusters": o.clusters, "alerts": o.alerts, "batch": o.batch, "workers": o.workers,
			"rounds": o.rounds, "seed": o.seed, "ends_after": o.endsAfter.String(), "gomaxprocs": runtime.GOMAXPROCS(0), "num_cpu": runtime.NumCPU(),
		},
		Stream: map[string]any{
			"alerts": st.total, "requests_per_phase": len(sample.batches), "bytes_per_phase_alertmanager": sample.bytes,
			"alertnames": st.byName, "clusters": st.clusters,
		},
		Targets: map[string]*targetResult{
			nameFleetwatch:   {Name: nameFleetwatch, Binary: o.fleetwatch},
			nameAlertmanager: {Name: nameAlertmanager, Binary: o.alertmanager + " " + version(o.alertmanager)},
		},
	}
	sample = nil
	client := newHTTPClient(o.workers)
	defer client.CloseIdleConnections()

	for r := range o.rounds {
		order := []string{nameFleetwatch, nameAlertmanager}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for i, name := range order {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			rr, errs, err := benchTarget(ctx, o, root, client, st, name, r)
			if err != nil {
				return rep, fmt.Errorf("round %d, %s: %w", r+1, name, err)
			}
			rr.First = i == 0
			rep.Targets[name].Rounds = append(rep.Targets[name].Rounds, rr)
			for _, e := range errs {
				rep.Errors = append(rep.Errors, fmt.Sprintf("round %d, %s: %s", r+1, name, e))
			}
			if rr.Expired != "" {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("round %d, %s: %s", r+1, name, rr.Expired))
			}
			printRound(o.out, name, rr, errs)
		}
	}

	if o.profileDir != "" {
		note, err := profileFleetwatch(ctx, o, root, client, st, rep.Targets[nameFleetwatch])
		if err != nil {
			return rep, fmt.Errorf("profile: %w", err)
		}
		rep.Profile = note
	}

	rep.Seconds = time.Since(began).Seconds()
	buildRows(rep)
	printReport(o.out, rep, o)
	if o.jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return rep, err
		}
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return rep, err
		}
		fmt.Fprintf(o.out, "results written to %s\n", o.jsonOut)
	}
	if len(rep.Errors) > 0 {
		return rep, fmt.Errorf("%d check(s) failed, see ERROR lines above", len(rep.Errors))
	}
	return rep, nil
}

func version(bin string) string {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

func startTarget(ctx context.Context, o options, root, name string, clusters []string) (*server, error) {
	if name == nameFleetwatch {
		return startFleetwatch(ctx, o.fleetwatch, root, clusters, !o.noAccess)
	}
	return startAlertmanager(ctx, o.alertmanager, root)
}

// benchTarget runs one round on one target, on a fresh server. It returns an error when the
// round cannot go on, and the checks that failed as strings.
func benchTarget(ctx context.Context, o options, root string, client *http.Client, st *stream, name string, round int) (roundResult, []string, error) {
	rr := roundResult{Round: round + 1}
	var errs []string
	s, err := startTarget(ctx, o, root, name, st.clusters)
	if err != nil {
		return rr, nil, err
	}
	defer s.Stop()
	fw := name == nameFleetwatch
	var mStart fwMetrics
	if fw {
		if mStart, err = scrapeFleetwatch(ctx, client, s); err != nil {
			return rr, nil, err
		}
	}
	var expiries []string
	var validUntil time.Time // the endsAt of the alerts as last posted
	for _, phase := range []string{"new", "resend"} {
		pr, err := runPhase(ctx, o, client, st, s, phase)
		if err != nil {
			if aerr := s.Alive(); aerr != nil {
				return rr, nil, fmt.Errorf("%w\n%v", err, aerr)
			}
			return rr, nil, err
		}
		if !validUntil.IsZero() && pr.sendsEnded.After(validUntil) {
			expiries = append(expiries, fmt.Sprintf("alerts of the %s phase expired before the %s phase had posted them again", rr.Phases[len(rr.Phases)-1].Phase, phase))
		}
		validUntil = pr.endsAt
		rr.Phases = append(rr.Phases, pr)
	}

	id := fmt.Sprintf("r%d-%s-%d", round+1, name, time.Now().UnixNano())
	if rr.Probe, err = probe(ctx, client, s, st.clusters[0], id, o.probeTimeout); err != nil {
		errs = append(errs, err.Error())
	}
	hwm, err := benchproc.ProcStatusKB(s.PID(), "VmHWM")
	if err != nil {
		return rr, nil, err
	}
	rr.PeakRSSMiB = float64(hwm) / 1024
	rr.SteadyCores = math.NaN()
	if o.steady > 0 && time.Now().Add(o.steady).After(validUntil) {
		expiries = append(expiries, "the alerts' endsAt passed before the steady-state CPU could be measured (not measured)")
	} else if o.steady > 0 {
		c0, err := benchproc.TakeCPU(s.PID())
		if err != nil {
			return rr, nil, err
		}
		if err := benchproc.Sleep(ctx, o.steady); err != nil {
			return rr, nil, err
		}
		c1, err := benchproc.TakeCPU(s.PID())
		if err != nil {
			return rr, nil, err
		}
		rr.SteadyCores = (c1.Server - c0.Server) / c1.At.Sub(c0.At).Seconds()
	}

	// Everything posted must be held, once: every alert and the probe.
	want := st.total + 1
	if time.Now().After(validUntil) {
		expiries = append(expiries, "the alerts' endsAt passed before the check")
	}
	var held map[string]bool
	heldProbe := probeLabels(id)
	heldProbe["cluster"] = st.clusters[0]
	if rr.HeldDistinct, rr.HeldListed, held, err = heldAlerts(ctx, client, s); err != nil {
		return rr, nil, err
	}
	if len(expiries) > 0 {
		// A Prometheus would have posted them again meanwhile; what the target holds now depends
		// on how it treats expired alerts, so the count is reported, not checked.
		rr.Expired = fmt.Sprintf("%s (the round outlasted --ends-after=%s); holds %d distinct alerts (%d listed) of %d posted, not checked",
			strings.Join(expiries, "; "), o.endsAfter, rr.HeldDistinct, rr.HeldListed, want)
	} else if rr.HeldDistinct != want || rr.HeldListed != want {
		what := "alerts"
		if fw {
			what = "alerts in active incidents"
		}
		errs = append(errs, fmt.Sprintf("%s holds %d distinct %s (%d listed), want %d; %s", name, rr.HeldDistinct, what, rr.HeldListed, want, heldDiff(st, heldProbe, held)))
	}
	if fw {
		m, err := scrapeFleetwatch(ctx, client, s)
		if err != nil {
			return rr, nil, err
		}
		rr.Received = m.received - mStart.received
		if int(rr.Received) != 2*st.total+1 {
			errs = append(errs, fmt.Sprintf("%s counted %.0f alerts received, %d were posted", name, rr.Received, 2*st.total+1))
		}
	}
	return rr, errs, s.Alive()
}

// runPhase posts every alert once to the server and waits until it settled.
func runPhase(ctx context.Context, o options, client *http.Client, st *stream, s *server, phase string) (phaseResult, error) {
	fw := s.Name == nameFleetwatch
	endsAt := time.Now().Add(o.endsAfter)
	enc, err := st.encode(o.batch, !fw, endsAt)
	if err != nil {
		return phaseResult{}, err
	}
	runtime.GC() // the encoding's garbage is not the target's cost
	if other, err := benchproc.WaitQuiet(ctx, s.PID(), o.quietWait); err != nil {
		return phaseResult{}, err
	} else if other > 0.5 {
		fmt.Fprintf(o.out, "note: other processes keep using %.1f cores; wall-clock numbers of this phase are noisy\n", other)
	}
	var before fwMetrics
	if fw {
		if before, err = scrapeFleetwatch(ctx, client, s); err != nil {
			return phaseResult{}, err
		}
	}
	c0, err := benchproc.TakeCPU(s.PID())
	if err != nil {
		return phaseResult{}, err
	}
	pr, err := send(ctx, client, s, phase, enc, o.workers)
	if err != nil {
		return pr, err
	}
	pr.endsAt, pr.sendsEnded = endsAt, time.Now()
	var c1 benchproc.CPU
	if fw {
		after, err := waitCorrelated(ctx, client, s, before, pr.Alerts, o.settle)
		if err != nil {
			return pr, err
		}
		if c1, err = benchproc.TakeCPU(s.PID()); err != nil {
			return pr, err
		}
		pr.IncidentP50ms = 1000 * histogramQuantile(0.5, before, after)
		pr.IncidentP99ms = 1000 * histogramQuantile(0.99, before, after)
		pr.IncidentCount = after.count - before.count
		pr.IncidentTopMs = 1000 * latencyTop(after)
		pr.Evaluations = after.evals - before.evals
		pr.EvalMeanMs = 1000 * (after.evalSum - before.evalSum) / pr.Evaluations
	} else if c1, err = benchproc.WaitIdle(ctx, s.PID(), 10*time.Second); err != nil {
		return pr, err
	}
	pr.SettledSeconds = c1.At.Sub(c0.At).Seconds()
	pr.SettledCPUPer100k = (c1.Server - c0.Server) / float64(pr.Alerts) * 1e5
	return pr, nil
}

func printRound(w io.Writer, name string, rr roundResult, errs []string) {
	fmt.Fprintf(w, "round %d %-12s", rr.Round, name)
	for i, p := range rr.Phases {
		if i > 0 {
			fmt.Fprintf(w, "\n%21s", "")
		}
		fmt.Fprintf(w, " %-6s %7.0f alerts/s  CPU %.2f s/100k (settled %.2f after %.1fs)  req p50 %.0fms p99 %.0fms  bench %.2f cores, other %.2f",
			p.Phase, p.AlertsPerSec, p.CPUPer100k, p.SettledCPUPer100k, p.SettledSeconds, p.ReqP50ms, p.ReqP99ms, p.BenchCores, p.OtherCores)
		if !math.IsNaN(p.IncidentP99ms) {
			fmt.Fprintf(w, "  alert->incident p50 %.0fms p99 %.0fms  %.0f evaluations, mean %.0fms", p.IncidentP50ms, p.IncidentP99ms, p.Evaluations, p.EvalMeanMs)
		}
	}
	fmt.Fprintf(w, "\n%21s probe visible after %.0fms (%d polls, last %.0fms)  peak RSS %.0f MiB  holds %d",
		"", rr.Probe.VisibleMs, rr.Probe.Polls, rr.Probe.LastPollMs, rr.PeakRSSMiB, rr.HeldDistinct)
	if !math.IsNaN(rr.SteadyCores) {
		fmt.Fprintf(w, "  steady %.2f cores", rr.SteadyCores)
	}
	fmt.Fprintln(w)
	for _, e := range errs {
		fmt.Fprintln(w, "ERROR:", e)
	}
	if rr.Expired != "" {
		fmt.Fprintln(w, "WARNING:", rr.Expired)
	}
}

// perRound collects one statistic of a target over the rounds.
func perRound(tr *targetResult, f func(roundResult) float64) []float64 {
	out := make([]float64, 0, len(tr.Rounds))
	for _, r := range tr.Rounds {
		out = append(out, f(r))
	}
	return out
}

func phaseOf(r roundResult, name string) phaseResult {
	for _, p := range r.Phases {
		if p.Phase == name {
			return p
		}
	}
	return phaseResult{AlertsPerSec: math.NaN(), CPUPer100k: math.NaN(), SettledCPUPer100k: math.NaN(), SettledSeconds: math.NaN(), IncidentP50ms: math.NaN(), IncidentP99ms: math.NaN(), ReqP99ms: math.NaN(), Evaluations: math.NaN(), EvalMeanMs: math.NaN()}
}

func buildRows(rep *report) {
	fw, am := rep.Targets[nameFleetwatch], rep.Targets[nameAlertmanager]
	nan := func(roundResult) float64 { return math.NaN() }
	add := func(metric, better, note string, ffw, fam func(roundResult) float64) {
		a, b := perRound(fw, ffw), perRound(am, fam)
		ma, mb := stats.Median(a), stats.Median(b)
		var sp []string
		if s := stats.Spread(a); s != "" {
			sp = append(sp, "fw "+s)
		}
		if s := stats.Spread(b); s != "" {
			sp = append(sp, "am "+s)
		}
		if len(sp) > 0 {
			note = strings.TrimPrefix(note+"; spread "+strings.Join(sp, ", "), "; ")
		}
		rep.Rows = append(rep.Rows, row{Metric: metric, Fleetwatch: ma, Alertmanager: mb, Ratio: ma / mb, Better: better, Note: note})
	}
	both := func(metric, better, note string, f func(roundResult) float64) { add(metric, better, note, f, f) }
	ph := func(name string, f func(phaseResult) float64) func(roundResult) float64 {
		return func(r roundResult) float64 { return f(phaseOf(r, name)) }
	}
	both("new alerts/s", "higher", "", ph("new", func(p phaseResult) float64 { return p.AlertsPerSec }))
	both("resend alerts/s", "higher", "", ph("resend", func(p phaseResult) float64 { return p.AlertsPerSec }))
	both("CPU s per 100k alerts, new (sends)", "lower", "", ph("new", func(p phaseResult) float64 { return p.CPUPer100k }))
	both("CPU s per 100k alerts, new (until settled)", "lower", "fw: all in incidents; am: idle", ph("new", func(p phaseResult) float64 { return p.SettledCPUPer100k }))
	both("CPU s per 100k alerts, resend (sends)", "lower", "", ph("resend", func(p phaseResult) float64 { return p.CPUPer100k }))
	both("CPU s per 100k alerts, resend (until settled)", "lower", "", ph("resend", func(p phaseResult) float64 { return p.SettledCPUPer100k }))
	both("peak RSS MiB", "lower", "", func(r roundResult) float64 { return r.PeakRSSMiB })
	both("probe visible after ms", "lower", "fw: in an incident; am: in /api/v2/alerts", func(r roundResult) float64 { return r.Probe.VisibleMs })
	both("probe: the poll that saw it took ms", "lower", "the resolution of the row above", func(r roundResult) float64 { return r.Probe.LastPollMs })
	both("request p99 ms, new", "lower", "", ph("new", func(p phaseResult) float64 { return p.ReqP99ms }))
	add("all new alerts in incidents after s", "lower", "from the first request", ph("new", func(p phaseResult) float64 { return p.SettledSeconds }), nan)
	add("alert->incident p50 ms, new", "lower", "histogram", ph("new", func(p phaseResult) float64 { return p.IncidentP50ms }), nan)
	add("alert->incident p99 ms, new", "lower", topNote(fw, "new"), ph("new", func(p phaseResult) float64 { return p.IncidentP99ms }), nan)
	add("alert->incident p99 ms, resend", "lower", topNote(fw, "resend"), ph("resend", func(p phaseResult) float64 { return p.IncidentP99ms }), nan)
	add("evaluations until settled, new", "", "", ph("new", func(p phaseResult) float64 { return p.Evaluations }), nan)
	add("evaluation mean ms, new", "lower", "", ph("new", func(p phaseResult) float64 { return p.EvalMeanMs }), nan)
	both("CPU cores used holding the alerts, no input", "lower", "", func(r roundResult) float64 { return r.SteadyCores })
}

// topNote warns when a p99 reached the histogram's last finite bucket: the true value is higher.
func topNote(tr *targetResult, phase string) string {
	n := 0
	for _, r := range tr.Rounds {
		if p := phaseOf(r, phase); p.IncidentTopMs > 0 && p.IncidentP99ms >= p.IncidentTopMs {
			n++
		}
	}
	if n == 0 {
		return "histogram"
	}
	return fmt.Sprintf("histogram; AT LEAST this in %d round(s): beyond the last bucket", n)
}

func printReport(w io.Writer, rep *report, o options) {
	fmt.Fprintf(w, "\n%d clusters, %d active alerts, batches of <= %d, %d requests in flight; %d round(s), median shown, spread = half the range over the median\n",
		o.clusters, o.alerts, o.batch, o.workers, o.rounds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "metric\tfleetwatch\talertmanager\tratio fw/am\tbetter\tnote\t")
	for _, r := range rep.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Metric, stats.Num(r.Fleetwatch), stats.Num(r.Alertmanager), stats.Num(r.Ratio), r.Better, r.Note)
	}
	tw.Flush()
	if len(rep.Rows) >= 2 {
		fmt.Fprintf(w, "fleetwatch ingests new alerts at %.2fx and resends at %.2fx Alertmanager's rate (goal: 10x)\n", rep.Rows[0].Ratio, rep.Rows[1].Ratio)
		fmt.Fprintf(w, "keeping %d alerts active takes %.0f alerts/s sustained: Prometheus posts every active alert again every minute\n", o.alerts, float64(o.alerts)/60)
	}
	for _, e := range rep.Warnings {
		fmt.Fprintln(w, "WARNING:", e)
	}
	for _, e := range rep.Errors {
		fmt.Fprintln(w, "ERROR:", e)
	}
	if rep.Profile != "" {
		fmt.Fprintln(w, rep.Profile)
	}
	fmt.Fprintf(w, "total run time %.1fs\n", rep.Seconds)
}
