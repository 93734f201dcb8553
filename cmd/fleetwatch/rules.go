package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/model"

	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/rules/backtest"
	"github.com/fleetwatch/fleetwatch/rules/export"
	"github.com/fleetwatch/fleetwatch/rules/lint"
	"github.com/fleetwatch/fleetwatch/rules/pack"
)

// Exit codes of `fleetwatch rules lint`.
const (
	exitClean    = 0
	exitFindings = 1
	exitError    = 2
)

// rulesCmd is `fleetwatch rules`: lint rule files, export the rule pack for the Prometheus
// Operator, and backtest rules over stored history.
type rulesCmd struct {
	lint, export, backtest *kingpin.CmdClause

	stdout, stderr io.Writer
	now            func() time.Time

	configFile    string
	configFileSet bool

	lintFiles []string
	lintPack  bool

	exportName, exportNamespace, exportOut string
	exportLabels                           map[string]string
	exportMember                           bool

	btFrom, btTo      string
	btTSDB, btSandbox string
	btInterval        model.Duration
	btIntervalSet     bool
	btFormat          string
	btNoPack          bool
	btFiles           []string
	log               *logFlags
}

func newRulesCmd(app *kingpin.Application) *rulesCmd {
	r := &rulesCmd{stdout: os.Stdout, stderr: os.Stderr, now: time.Now, exportLabels: map[string]string{}}
	cmd := app.Command("rules", "Lint rule files, export the built-in rule pack as a PrometheusRule, backtest rules over stored history.")
	configFlag := func(c *kingpin.CmdClause) {
		c.Flag("config.file", "fleetwatch configuration file: the rule pack's thresholds (rules.pack) and, for backtest, the user rule files and query settings. Without it, and without fleetwatch.yml in the working directory, the pack's default thresholds.").
			Default("fleetwatch.yml").IsSetByUser(&r.configFileSet).StringVar(&r.configFile)
	}

	r.lint = cmd.Command("lint", "Check Prometheus rule files for expressions that mix clusters or read every series. "+
		"Reports aggregations that drop the cluster label, joins (on/ignoring) that match series of different clusters, and selectors with neither a metric name nor a job matcher, as file:line: rule NAME: message. "+
		"A rule that compares clusters on purpose is marked with a comment containing "+lint.FleetWideMarker+" (above or inside the rule, or above its group's name for the whole group). "+
		"Exit code 0: clean; 1: problems found; 2: a file does not load.")
	r.lint.Arg("file", "Rule files to check.").StringsVar(&r.lintFiles)
	r.lint.Flag("pack", "Also check the built-in rule pack, rendered with the thresholds of --config.file; it is reported as pack/<file>, with the lines of the rendered file.").BoolVar(&r.lintPack)
	configFlag(r.lint)

	r.export = cmd.Command("export", "Write the built-in rule pack, rendered with the thresholds of --config.file, as a PrometheusRule manifest (monitoring.coreos.com/v1) for the Prometheus Operator.")
	r.export.Flag("name", "metadata.name of the PrometheusRule.").Default("fleetwatch-rules").StringVar(&r.exportName)
	r.export.Flag("namespace", "metadata.namespace of the PrometheusRule; empty leaves it to kubectl.").StringVar(&r.exportNamespace)
	r.export.Flag("label", "Label of the PrometheusRule, as key=value (repeatable), e.g. the one the operator's ruleSelector matches.").StringMapVar(&r.exportLabels)
	r.export.Flag("member", "For a member cluster's own Prometheus: leave out the rules that only make sense on fleetwatch's global view (fleetwatch's own series, comparisons between clusters); a comment at the top lists them.").BoolVar(&r.exportMember)
	r.export.Flag("output", "Write the manifest to this file instead of stdout.").Short('o').StringVar(&r.exportOut)
	configFlag(r.export)

	r.backtest = cmd.Command("backtest", "Replay the rule pack, the configuration's rule files and FILE... over the history stored in fleetwatch's TSDB, and report per alert and cluster how often it fired, for how long, and how often it went pending without firing. "+
		"The TSDB is opened read only; fleetwatch may keep running on it.")
	r.backtest.Arg("file", "More rule files to replay.").StringsVar(&r.btFiles)
	r.backtest.Flag("from", "Start of the replay: RFC 3339 (2025-01-02T15:04:05Z), Unix seconds, now, or a duration before now (--from=-24h, --from=-7d; a value starting with '-' needs the '=').").Required().StringVar(&r.btFrom)
	r.backtest.Flag("to", "End of the replay, in the same forms as --from.").Default("now").StringVar(&r.btTo)
	r.backtest.Flag("storage.tsdb.path", "fleetwatch's TSDB directory (as given to fleetwatch serve).").Default("data/").StringVar(&r.btTSDB)
	r.backtest.Flag("sandbox-dir-root", "Where the read-only TSDB links the head's chunk files while it replays the WAL; must be on the TSDB's filesystem. Default: the TSDB directory.").StringVar(&r.btSandbox)
	r.backtest.Flag("interval", "Evaluation step. Default: rules.evaluation_interval of the configuration (15s).").IsSetByUser(&r.btIntervalSet).SetValue(&r.btInterval)
	r.backtest.Flag("format", "Output format: text (a table) or json.").Default("text").EnumVar(&r.btFormat, "text", "json")
	r.backtest.Flag("no-pack", "Do not replay the built-in rule pack, only the rule files.").BoolVar(&r.btNoPack)
	configFlag(r.backtest)
	r.log = addLogFlags(r.backtest)
	return r
}

// run runs a rules command and returns the process's exit code.
func (r *rulesCmd) run(cmd string) int {
	switch cmd {
	case r.lint.FullCommand():
		return r.runLint()
	case r.export.FullCommand():
		return r.exitCode(r.runExport())
	case r.backtest.FullCommand():
		return r.exitCode(r.runBacktest())
	}
	return r.exitCode(fmt.Errorf("unknown command %q", cmd))
}

func (r *rulesCmd) exitCode(err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(r.stderr, "fleetwatch: %v\n", err)
	return 1
}

// loadConfig loads --config.file. The default file may be missing: then the pack's defaults
// apply and cfg is nil.
func (r *rulesCmd) loadConfig() (*config.Config, error) {
	if !r.configFileSet {
		if _, err := os.Stat(r.configFile); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
	}
	return config.LoadFile(r.configFile)
}

// packThresholds are the thresholds the pack is rendered with.
func packThresholds(cfg *config.Config) config.Thresholds {
	if cfg == nil {
		return config.DefaultThresholds
	}
	return cfg.Rules.Pack.Thresholds
}

// packEnabled says whether the configuration runs the pack on the view.
func packEnabled(cfg *config.Config) bool {
	return cfg == nil || cfg.Rules.Pack.Enabled
}

// packSource says where the pack's thresholds come from, for messages.
func (r *rulesCmd) packSource(cfg *config.Config) string {
	if cfg == nil {
		return "the built-in rule pack with its default thresholds"
	}
	return "the built-in rule pack with the thresholds of " + r.configFile
}

// renderPack renders the pack; its files are named pack/<file>, in name order.
func renderPack(t config.Thresholds) ([]string, map[string][]byte, error) {
	rendered, err := pack.Render(t)
	if err != nil {
		return nil, nil, fmt.Errorf("render the rule pack: %w", err)
	}
	names := make([]string, 0, len(rendered))
	out := make(map[string][]byte, len(rendered))
	for n, c := range rendered {
		names = append(names, "pack/"+n)
		out["pack/"+n] = c
	}
	sort.Strings(names)
	return names, out, nil
}

func (r *rulesCmd) runLint() int {
	type file struct {
		name    string
		content []byte
	}
	var files []file
	if r.lintPack {
		cfg, err := r.loadConfig()
		if err != nil {
			fmt.Fprintf(r.stderr, "fleetwatch: rules lint: %v\n", err)
			return exitError
		}
		names, rendered, err := renderPack(packThresholds(cfg))
		if err != nil {
			fmt.Fprintf(r.stderr, "fleetwatch: rules lint: %v\n", err)
			return exitError
		}
		for _, n := range names {
			files = append(files, file{n, rendered[n]})
		}
	}
	for _, path := range r.lintFiles {
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(r.stderr, "fleetwatch: rules lint: %v\n", err)
			return exitError
		}
		files = append(files, file{path, b})
	}
	if len(files) == 0 {
		fmt.Fprintln(r.stderr, "fleetwatch: rules lint: nothing to lint: give rule files, or --pack")
		return exitError
	}
	var findings int
	broken := false
	for _, f := range files {
		fs, err := lint.File(f.name, f.content)
		var pe *lint.ParseError
		switch {
		case errors.As(err, &pe):
			for _, p := range pe.Problems {
				fmt.Fprintln(r.stderr, p)
			}
			broken = true
			continue
		case err != nil:
			fmt.Fprintf(r.stderr, "%s: %v\n", f.name, err)
			broken = true
			continue
		}
		for _, x := range fs {
			fmt.Fprintln(r.stdout, x)
		}
		findings += len(fs)
	}
	switch {
	case broken:
		return exitError
	case findings > 0:
		fmt.Fprintf(r.stderr, "fleetwatch: rules lint: %d problem(s); mark a rule that compares clusters on purpose with a %q comment\n", findings, "# "+lint.FleetWideMarker)
		return exitFindings
	}
	return exitClean
}

func (r *rulesCmd) runExport() error {
	if err := export.ValidateName(r.exportName); err != nil {
		return fmt.Errorf("--name: %w", err)
	}
	if r.exportNamespace != "" {
		if err := export.ValidateNamespace(r.exportNamespace); err != nil {
			return fmt.Errorf("--namespace: %w", err)
		}
	}
	for k, v := range r.exportLabels {
		if err := export.ValidateLabel(k, v); err != nil {
			return fmt.Errorf("--label: %w", err)
		}
	}
	cfg, err := r.loadConfig()
	if err != nil {
		return err
	}
	names, rendered, err := renderPack(packThresholds(cfg))
	if err != nil {
		return err
	}
	files := make([]export.File, 0, len(names))
	for _, n := range names {
		files = append(files, export.File{Name: n, Content: rendered[n]})
	}
	out, dropped, err := export.Manifest(files, export.Options{
		Name: r.exportName, Namespace: r.exportNamespace, Labels: r.exportLabels, Member: r.exportMember,
		Source: r.packSource(cfg),
	})
	if err != nil {
		return err
	}
	if r.exportMember {
		fmt.Fprintf(r.stderr, "fleetwatch: rules export: left out %d rule(s) that only make sense on the global view; the manifest's first lines say which and why\n", len(dropped))
	}
	if r.exportOut == "" {
		_, err = r.stdout.Write(out)
		return err
	}
	if err := os.WriteFile(r.exportOut, out, 0o644); err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	return nil
}

func (r *rulesCmd) runBacktest() error {
	now := r.now()
	from, err := backtest.ParseTime(r.btFrom, now)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	to, err := backtest.ParseTime(r.btTo, now)
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	if to.Before(from) {
		return fmt.Errorf("--to (%s) is before --from (%s)", to.UTC().Format(time.RFC3339), from.UTC().Format(time.RFC3339))
	}
	cfg, err := r.loadConfig()
	if err != nil {
		return err
	}
	interval := time.Duration(config.DefaultRules.EvaluationInterval)
	if cfg != nil {
		interval = time.Duration(cfg.Rules.EvaluationInterval)
	}
	if r.btIntervalSet {
		if r.btInterval <= 0 {
			return fmt.Errorf("--interval: must be positive, got %s", r.btInterval)
		}
		interval = time.Duration(r.btInterval)
	}

	var files []backtest.RuleFile
	switch {
	case r.btNoPack:
	case !packEnabled(cfg):
		fmt.Fprintf(r.stderr, "fleetwatch: rules backtest: the rule pack is off in %s; replaying the rule files only\n", r.configFile)
	default:
		names, rendered, err := renderPack(packThresholds(cfg))
		if err != nil {
			return err
		}
		for _, n := range names {
			files = append(files, backtest.RuleFile{Name: n, Content: rendered[n]})
		}
	}
	var paths []string
	if cfg != nil {
		if paths, err = cfg.Rules.Files(); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, p := range append(paths, r.btFiles...) {
		// A file named both in the configuration and on the command line is replayed once.
		if abs, err := filepath.Abs(p); err == nil {
			if seen[abs] {
				continue
			}
			seen[abs] = true
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read rule file: %w", err)
		}
		files = append(files, backtest.RuleFile{Name: p, Content: b})
	}
	if len(files) == 0 {
		return errors.New("rules backtest: nothing to replay: the rule pack is off and no rule files are given")
	}

	// The query settings of the view, which the rules run on live.
	o := backtest.Options{
		Dir: r.btTSDB, SandboxDirRoot: r.btSandbox, Files: files,
		From: from, To: to, Interval: interval, Logger: r.log.logger(),
		Engine: config.DefaultQuery.Engine,
	}
	if cfg != nil {
		o.Engine = cfg.Query.Engine
		o.LookbackDelta = time.Duration(cfg.Query.LookbackDelta)
		o.QueryTimeout = time.Duration(cfg.Query.Timeout)
		o.MaxSamples = cfg.Query.MaxSamples
	}
	var bar *progressBar
	if f, ok := r.stderr.(*os.File); ok && isTerminal(f) {
		bar = &progressBar{w: f, start: time.Now()}
		o.Progress = bar.update
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := backtest.Run(ctx, o)
	if bar != nil {
		bar.finish()
	}
	if err != nil {
		return err
	}

	mode := "evaluated ahead with range queries"
	if rep.Stepwise {
		mode = "evaluated step by step: " + rep.StepwiseReason
	}
	fmt.Fprintf(r.stderr, "fleetwatch: rules backtest: %d rules in %d groups over %s .. %s, %d steps of %s, in %s (%s engine, %s)\n",
		rep.Rules, rep.Groups, rep.From.UTC().Format(time.RFC3339), rep.To.UTC().Format(time.RFC3339),
		rep.Steps, rep.Interval, rep.Elapsed.Round(time.Millisecond), o.Engine, mode)
	for _, f := range rep.Failures {
		fmt.Fprintf(r.stderr, "fleetwatch: rules backtest: warning: rule %s (%s, group %s) failed %d of %d evaluations; last error: %s\n",
			f.Rule, f.File, f.Group, f.Failed, f.Evaluations, f.LastError)
	}
	if rep.NoHistory {
		fmt.Fprintf(r.stderr, "fleetwatch: rules backtest: warning: %s holds no samples between --from and --to; check --storage.tsdb.path and the range\n", r.btTSDB)
	}
	if r.btFormat == "json" {
		return rep.WriteJSON(r.stdout)
	}
	return rep.WriteTable(r.stdout)
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressBar draws the backtest's progress on one terminal line.
type progressBar struct {
	w           io.Writer
	start, last time.Time
}

func (p *progressBar) update(done, total int, ts time.Time) {
	now := time.Now()
	if done < total && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	const width = 30
	filled := width * done / total
	eta := ""
	if done < total {
		left := time.Duration(float64(now.Sub(p.start)) * float64(total-done) / float64(done))
		eta = ", " + left.Round(time.Second).String() + " left"
	}
	fmt.Fprintf(p.w, "\r[%s%s] %3d%%  %s%s\x1b[K", strings.Repeat("=", filled), strings.Repeat(" ", width-filled),
		100*done/total, ts.UTC().Format(time.RFC3339), eta)
}

func (p *progressBar) finish() { fmt.Fprint(p.w, "\r\x1b[K") }
