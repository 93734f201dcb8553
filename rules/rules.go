// Package rules evaluates rule files on the global view with Prometheus's rules manager.
// Queries go through a rules.QueryFunc, so the same evaluator can later run against Thanos
// Query; recording-rule results and ALERTS / ALERTS_FOR_STATE go back into the view, which is
// what lets a pending or firing alert keep its active-since time across a restart.
//
// Two things are added to Prometheus's behaviour. The built-in rule pack (rules/pack) is loaded
// from memory next to the user's rule files. And a firing alert whose series vanish because
// their cluster stopped sending data (not because the condition cleared) is held, marked
// stale, instead of resolved; see hold.go.
package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/notifier"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// PackPrefix starts the name of every built-in rule file, as /api/v1/rules shows it
// ("fleetwatch-pack:nodes.yml"), so it cannot be mistaken for a file on disk.
const PackPrefix = "fleetwatch-pack:"

// Options configure an Evaluator.
type Options struct {
	// QueryFunc answers the rules' PromQL (rules.EngineQueryFunc over the view).
	QueryFunc rules.QueryFunc
	// Appendable receives recording-rule results and ALERTS/ALERTS_FOR_STATE; Queryable is read
	// to restore alert state at start.
	Appendable storage.Appendable
	Queryable  storage.Queryable
	// ExternalURL is fleetwatch's URL, for alerts' generator URLs.
	ExternalURL string
	// Notify is where alerts leave the rules stage, after stale marking: every evaluation of
	// every alerting rule calls it with the alerts due to be (re)sent (the correlation stage
	// takes them here). Independently, alerts also go to the configured Alertmanagers, if any,
	// through Prometheus's notifier (queue, batching, retries).
	Notify rules.NotifyFunc
	// ResendDelay is how often an active alert is sent again; 0 means Prometheus's 1m.
	ResendDelay time.Duration
	// StateFile keeps, across restarts, which series back firing alerts, so an alert held for
	// a silent cluster is still held after a restart; empty: kept in memory only.
	StateFile  string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Config is what a configuration reload changes: fleetwatch.yml's rules section as
// internal/config loaded it (its defaults and validation are config's), and what follows from
// the file without being one of its settings.
type Config struct {
	// Rules is the rules section. The evaluator reads evaluation_interval (the interval of
	// groups that set none), alertmanagers (base URLs, http(s)://host:port[/prefix]; alerts go
	// to every one) and pack.silent_after: how old a cluster's last ingest must be for its
	// missing data to count as gone (see hold.go). rule_files and the rest of pack are read
	// through Files and Pack.
	Rules config.RulesConfig
	// Files are the user's rule files, what rule_files matched; Pack the built-in ones by file
	// name, rendered with rules.pack (nil: none).
	Files []string
	Pack  map[string][]byte
	// Clusters are the names of the configured clusters: alerts held for a cluster that is no
	// longer one are let go.
	Clusters []string
}

// interval is the evaluation interval of groups that set none.
func (c Config) interval() time.Duration { return time.Duration(c.Rules.EvaluationInterval) }

// Evaluator runs rule groups and hands their alerts on.
type Evaluator struct {
	logger   *slog.Logger
	manager  *rules.Manager
	notifier *notifier.Manager
	loader   *loader
	hold     *holder

	notify      rules.NotifyFunc
	targets     chan map[string][]*targetgroup.Group
	notifierRun sync.WaitGroup
	runOnce     sync.Once
	stopOnce    sync.Once
	hasAMs      bool
	mtx         sync.Mutex
}

// New returns an Evaluator; call ApplyConfig, then Run.
func New(o Options) (*Evaluator, error) {
	if o.QueryFunc == nil || o.Appendable == nil || o.Queryable == nil {
		return nil, errors.New("rules: QueryFunc, Appendable and Queryable are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ResendDelay == 0 {
		o.ResendDelay = time.Minute
	}
	e := &Evaluator{
		logger:  o.Logger,
		loader:  &loader{},
		targets: make(chan map[string][]*targetgroup.Group, 1),
	}
	e.notifier = notifier.NewManager(&notifier.Options{
		QueueCapacity: 10000,
		Registerer:    o.Registerer,
	}, model.UTF8Validation, o.Logger.With("component", "notifier"))
	send := rules.SendAlerts(e.notifier, o.ExternalURL)
	e.notify = func(ctx context.Context, expr string, alerts ...*rules.Alert) {
		if o.Notify != nil {
			o.Notify(ctx, expr, alerts...)
		}
		e.mtx.Lock()
		has := e.hasAMs
		e.mtx.Unlock()
		if has {
			send(ctx, expr, alerts...)
		}
	}
	e.hold = newHolder(o.QueryFunc, o.Logger.With("component", "rules-hold"), o.Registerer)
	e.hold.statePath = o.StateFile
	if err := e.hold.loadState(); err != nil {
		return nil, err
	}
	e.manager = rules.NewManager(&rules.ManagerOptions{
		QueryFunc: e.hold.query,
		NotifyFunc: func(ctx context.Context, expr string, alerts ...*rules.Alert) {
			for _, a := range alerts {
				e.hold.mark(a, false)
			}
			e.notify(ctx, expr, alerts...)
		},
		Context:     context.Background(),
		Appendable:  o.Appendable,
		Queryable:   o.Queryable,
		GroupLoader: e.loader,
		Logger:      o.Logger.With("component", "rules"),
		Registerer:  o.Registerer,
		// As Prometheus's defaults: alert state older than an hour's outage is not restored.
		OutageTolerance: time.Hour,
		// Prometheus restores only alerts whose `for` is at least the grace period (10m by
		// default); 0 restores every pending and firing alert (see TestRestart in test/e2e).
		ForGracePeriod: 0,
		ResendDelay:    o.ResendDelay,
	})
	return e, nil
}

// Manager is the rules manager, for /api/v1/rules and /api/v1/alerts.
func (e *Evaluator) Manager() *rules.Manager { return e.manager }

// ApplyConfig loads the rule files and the pack (a bad file keeps the previous rules and says
// which file and line) and sets where alerts go.
func (e *Evaluator) ApplyConfig(c Config) error {
	amcs, tgs, err := alertmanagerConfigs(c.Rules.Alertmanagers)
	if err != nil {
		return err
	}
	files := append([]string(nil), c.Files...)
	for name := range c.Pack {
		files = append(files, PackPrefix+name)
	}
	sort.Strings(files[len(c.Files):])
	e.loader.set(c.Pack)
	// The manager only says that loading failed; load first to say which file and line.
	if _, errs := e.manager.LoadGroups(c.interval(), labels.EmptyLabels(), "", nil, false, files...); len(errs) > 0 {
		return fmt.Errorf("rules: %w", errors.Join(errs...))
	}
	if err := e.manager.Update(c.interval(), files, labels.EmptyLabels(), "", e.evalIteration); err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	if err := e.notifier.ApplyConfig(&promconfig.Config{AlertingConfig: promconfig.AlertingConfig{AlertmanagerConfigs: amcs}}); err != nil {
		return fmt.Errorf("rules: alertmanagers: %w", err)
	}
	// The notifier learns its Alertmanagers' addresses as discovered targets; static URLs are
	// one target each. Only the latest set matters, so a pending one is replaced.
	select {
	case <-e.targets:
	default:
	}
	e.targets <- tgs
	e.configureHold(c, e.manager.AlertingRules())
	e.mtx.Lock()
	e.hasAMs = len(amcs) > 0
	e.mtx.Unlock()
	return nil
}

// configureHold gives the holder the configured clusters and silent_after, and makes it
// forget the rules that are no longer loaded.
func (e *Evaluator) configureHold(c Config, loaded []*rules.AlertingRule) {
	e.hold.configure(c.Clusters, time.Duration(c.Rules.Pack.Thresholds.SilentAfter))
	live := make(map[string]bool, len(loaded))
	for _, r := range loaded {
		live[ruleKey(r.Name(), r.Query().String(), r.Labels())] = true
	}
	e.hold.forget(live)
}

// evalIteration evaluates a group as Prometheus does and then marks the alerts it holds, so
// /api/v1/alerts shows them as stale too.
func (e *Evaluator) evalIteration(ctx context.Context, g *rules.Group, ts time.Time) {
	rules.DefaultEvalIterationFunc(ctx, g, ts)
	for _, r := range g.AlertingRules() {
		e.hold.observe(r)
		r.ForEachActiveAlert(func(a *rules.Alert) { e.hold.mark(a, true) })
	}
	if err := e.hold.saveState(); err != nil {
		e.logger.Error("saving which series back firing alerts", "err", err)
	}
}

// alertmanagerConfigs turns base URLs into the notifier's configuration: one
// AlertmanagerConfig (scheme, path prefix, API v2) and one static target each, keyed as
// promconfig.AlertmanagerConfigs.ToMap keys them.
func alertmanagerConfigs(ams []*config.AlertmanagerConfig) (promconfig.AlertmanagerConfigs, map[string][]*targetgroup.Group, error) {
	amcs := make(promconfig.AlertmanagerConfigs, 0, len(ams))
	tgs := make(map[string][]*targetgroup.Group, len(ams))
	for i, am := range ams {
		a := am.URL
		u, err := url.Parse(a)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, nil, fmt.Errorf("rules: alertmanager %q: not an http(s) URL", a)
		}
		amc := promconfig.DefaultAlertmanagerConfig
		// Prometheus's notifier takes the HTTP client settings (TLS, authorization, ...) as is.
		amc.HTTPClientConfig = am.HTTPClientConfig
		amc.Scheme = u.Scheme
		amc.PathPrefix = strings.TrimSuffix(u.Path, "/")
		amc.APIVersion = promconfig.AlertmanagerAPIVersionV2
		amc.Timeout = model.Duration(10 * time.Second)
		amc.ServiceDiscoveryConfigs = discovery.Configs{discovery.StaticConfig{{
			Targets: []model.LabelSet{{model.AddressLabel: model.LabelValue(u.Host)}},
		}}}
		amcs = append(amcs, &amc)
		tgs[fmt.Sprintf("config-%d", i)] = []*targetgroup.Group{{
			Targets: []model.LabelSet{{model.AddressLabel: model.LabelValue(u.Host)}},
			Source:  a,
		}}
	}
	return amcs, tgs, nil
}

// Run evaluates and sends until Stop. Alert state is restored from the view on the first
// evaluation.
func (e *Evaluator) Run() {
	e.runOnce.Do(func() {
		e.notifierRun.Add(1)
		go func() { defer e.notifierRun.Done(); e.notifier.Run(e.targets) }()
		e.manager.Run()
	})
}

// Stop stops evaluation, then the notifier (alerts still queued are dropped and counted in
// prometheus_notifications_dropped_total; they are sent again after a restart, as the
// restored alerts are re-sent).
func (e *Evaluator) Stop() {
	e.stopOnce.Do(func() {
		e.manager.Stop()
		e.notifier.Stop()
		e.notifierRun.Wait()
	})
}

// Alertmanagers are the Alertmanagers alerts are being sent to.
func (e *Evaluator) Alertmanagers() []*url.URL { return e.notifier.Alertmanagers() }

// loader is the rules manager's GroupLoader: rule files from disk, and the pack from memory.
type loader struct {
	mtx  sync.RWMutex
	pack map[string][]byte
}

func (l *loader) set(pack map[string][]byte) {
	l.mtx.Lock()
	l.pack = pack
	l.mtx.Unlock()
}

func (l *loader) Load(id string, ignoreUnknownFields bool, scheme model.ValidationScheme) (*rulefmt.RuleGroups, []error) {
	name, ok := strings.CutPrefix(id, PackPrefix)
	if !ok {
		return rulefmt.ParseFile(id, ignoreUnknownFields, scheme)
	}
	l.mtx.RLock()
	content, ok := l.pack[name]
	l.mtx.RUnlock()
	if !ok {
		return nil, []error{fmt.Errorf("%s: no such built-in rule file", id)}
	}
	rgs, errs := rulefmt.Parse(content, ignoreUnknownFields, scheme)
	for i, err := range errs {
		errs[i] = fmt.Errorf("%s: %w", id, err)
	}
	return rgs, errs
}

func (*loader) Parse(query string) (parser.Expr, error) { return parser.ParseExpr(query) }
