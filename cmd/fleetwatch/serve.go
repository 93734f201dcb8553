package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/rules"
	v1 "github.com/prometheus/prometheus/web/api/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/correlate/input"
	"github.com/fleetwatch/fleetwatch/hooks"
	"github.com/fleetwatch/fleetwatch/internal/access"
	"github.com/fleetwatch/fleetwatch/internal/clusterauth"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/query"
	"github.com/fleetwatch/fleetwatch/remediate"
	fwrules "github.com/fleetwatch/fleetwatch/rules"
	"github.com/fleetwatch/fleetwatch/rules/pack"
	"github.com/fleetwatch/fleetwatch/schedule"
	"github.com/fleetwatch/fleetwatch/schedule/ocm"
)

// lastIngestInterval is how often each cluster's last ingest time is written into the view.
const lastIngestInterval = 5 * time.Second

type serveCmd struct {
	cmd        *kingpin.CmdClause
	configFile string
	listen     string
	webConfig  string
	lifecycle  bool
	grafanaURL string
	tsdbPath   string
	retention  model.Duration
	log        *logFlags
}

func newServeCmd(app *kingpin.Application) *serveCmd {
	s := &serveCmd{cmd: app.Command("serve", "Run fleetwatch: receive the fleet's metrics and serve the Prometheus HTTP API over them.")}
	s.cmd.Flag("config.file", "fleetwatch configuration file path.").Default("fleetwatch.yml").StringVar(&s.configFile)
	s.cmd.Flag("web.listen-address", "Address to listen on for the API, remote-write and telemetry.").Default("0.0.0.0:9095").StringVar(&s.listen)
	s.cmd.Flag("web.config.file", "Path to a configuration file that can enable TLS, client certificates and basic auth users (Prometheus's exporter-toolkit format).").Default("").StringVar(&s.webConfig)
	s.cmd.Flag("web.enable-lifecycle", "Enable shutdown and reload via HTTP request (admin role).").Default("false").BoolVar(&s.lifecycle)
	s.cmd.Flag("web.grafana-url", "The Grafana that has fleetwatch's dashboards (`fleetwatch dashboards generate`): the console links each cluster and incident to them. Empty: no links.").Default("").StringVar(&s.grafanaURL)
	s.cmd.Flag("storage.tsdb.path", "Base path for metrics storage.").Default("data/").StringVar(&s.tsdbPath)
	s.cmd.Flag("storage.tsdb.retention.time", "How long to retain samples in storage.").Default("15d").SetValue(&s.retention)
	s.log = addLogFlags(s.cmd)
	return s
}

func (s *serveCmd) run() error {
	logger := s.log.logger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.listen, err)
	}
	srv, err := newServer(serverOptions{
		ConfigFile:      s.configFile,
		WebConfigFile:   s.webConfig,
		EnableLifecycle: s.lifecycle,
		GrafanaURL:      s.grafanaURL,
		TSDBPath:        s.tsdbPath,
		Retention:       time.Duration(s.retention),
		Listener:        ln,
		Logger:          logger,
		Flags: map[string]string{
			"config.file": s.configFile, "web.listen-address": s.listen, "web.config.file": s.webConfig,
			"web.enable-lifecycle": fmt.Sprint(s.lifecycle), "web.grafana-url": s.grafanaURL,
			"storage.tsdb.path": s.tsdbPath, "storage.tsdb.retention.time": s.retention.String(),
		},
	})
	if err != nil {
		ln.Close()
		return err
	}
	return srv.Run(ctx)
}

// serverOptions configure a server: everything `fleetwatch serve` runs.
type serverOptions struct {
	ConfigFile string
	// WebConfigFile is --web.config.file (TLS, client certificates, basic auth users).
	WebConfigFile string
	// EnableLifecycle is --web.enable-lifecycle: /-/reload and /-/quit over HTTP.
	EnableLifecycle bool
	// GrafanaURL is --web.grafana-url: where the console's dashboard links lead.
	GrafanaURL string
	TSDBPath   string
	Retention  time.Duration
	Listener   net.Listener
	Logger     *slog.Logger
	Flags      map[string]string
}

// server wires the components into one process.
type server struct {
	opts     serverOptions
	logger   *slog.Logger
	reg      *prometheus.Registry
	view     *query.View
	receiver *collector.Receiver
	fed      *collector.Federator
	ingest   *collector.IngestRecorder
	// apiProbe probes each cluster's API server with its kubeconfig_file.
	apiProbe *collector.APIProber
	rules    *fwrules.Evaluator
	// incidents is the correlation engine; correlating says whether the rules feed it.
	incidents   *correlate.Engine
	alertsIn    *input.Handler
	store       *correlate.Store
	correlating atomic.Bool
	// schedule is placement and what-if; scheduling says whether it is enabled, ocm where
	// its scores go (nil: nowhere).
	schedule   *schedule.Service
	scheduling atomic.Bool
	ocm        atomic.Pointer[ocm.Publisher]
	// remediate acts on incidents through the clusters' API servers (remediation.enabled);
	// kube holds a client per cluster with a kubeconfig_file, rebuilt on reload.
	remediate  *remediate.Engine
	remedStore *remediate.Store
	// election is remediation.leader_election as the process started with (nil: none), and
	// identity this process's name in the Lease and in remediation's user agent.
	election *config.LeaderElectionConfig
	identity string
	// forward is ingest.forward as the process started with (nil: the embedded TSDB).
	forward *config.ForwardConfig
	hub     *rest.Config // the hub cluster's client configuration
	kube    atomic.Pointer[map[string]kubernetes.Interface]
	http    *http.Server
	ready   atomic.Bool
	// cfg is the configuration in force (apply stores it), for the web console.
	cfg atomic.Pointer[config.Config]
	// hooks delivers incident and remediation events to webhook receivers; approvals serves
	// the approval links their events carry.
	hooks     *hooks.Dispatcher
	approvals *hooks.Approvals
	// guard is the access layer in front of every handler; tls is the listener's TLS
	// configuration from --web.config.file (nil: plain HTTP).
	guard *access.Guard
	tls   *tls.Config
	// quit is closed by /-/quit.
	quit     chan struct{}
	quitOnce sync.Once

	reloadMu       sync.Mutex
	reloadCh       chan chan error
	reloadSuccess  prometheus.Gauge
	reloadLastTime prometheus.Gauge
}

func newServer(o serverOptions) (*server, error) {
	cfg, err := config.LoadFile(o.ConfigFile)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &server{
		opts: o, logger: o.Logger, reg: reg, reloadCh: make(chan chan error), quit: make(chan struct{}),
		reloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: config.MetricLastReloadSuccessful, Help: "Whether the last configuration reload attempt was successful.",
		}),
		reloadLastTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetwatch_config_last_reload_success_timestamp_seconds", Help: "Timestamp of the last successful configuration reload.",
		}),
	}
	reg.MustRegister(s.reloadSuccess, s.reloadLastTime)

	s.view, err = query.Open(query.Options{Dir: o.TSDBPath, Retention: o.Retention, Logger: o.Logger, Registerer: reg})
	if err != nil {
		return nil, err
	}
	// The members' samples: into the embedded TSDB, or on to Thanos Receive (ingest.forward).
	// fleetwatch's own series (last ingest, API probes, rule state) stay in the TSDB either way.
	members := s.view.Appendable()
	if f := cfg.Ingest.Forward; f != nil {
		s.forward = f
		client, err := commoncfg.NewClientFromConfig(f.HTTPClientConfig, "fleetwatch-forward")
		if err != nil {
			s.view.Close()
			return nil, fmt.Errorf("ingest.forward: %w", err)
		}
		client.Timeout = time.Duration(f.Timeout)
		fw, err := collector.NewForwarder(collector.ForwardOptions{URL: f.URL, Client: client, TenantHeader: f.TenantHeader, Registerer: reg})
		if err != nil {
			s.view.Close()
			return nil, err
		}
		members = s.view.AppendableOver(fw)
	}
	s.receiver, err = collector.New(collector.Options{Appendable: members, Metadata: s.view, Logger: o.Logger, Registerer: reg})
	if err != nil {
		s.view.Close()
		return nil, err
	}
	s.fed, err = collector.NewFederator(collector.Options{Appendable: members, Metadata: s.view, Logger: o.Logger, Registerer: reg})
	if err != nil {
		s.view.Close()
		return nil, err
	}
	s.ingest = collector.NewIngestRecorder(collector.Options{Appendable: s.view.Appendable(), Logger: o.Logger, Registerer: reg})
	if err := s.ingest.Restore(context.Background(), s.view); err != nil {
		s.view.Close()
		return nil, err
	}
	s.apiProbe, err = collector.NewAPIProber(collector.Options{Appendable: s.view.Appendable(), Logger: o.Logger, Registerer: reg})
	if err != nil {
		s.view.Close()
		return nil, err
	}
	externalURL := "http://" + o.Listener.Addr().String()
	s.store, err = correlate.OpenStoreWithLogger(filepath.Join(o.TSDBPath, "fleetwatch-incidents.db"), o.Logger)
	if err != nil {
		s.view.Close()
		return nil, err
	}
	s.remedStore, err = remediate.OpenStore(filepath.Join(o.TSDBPath, "fleetwatch-remediations.db"))
	if err != nil {
		s.store.Close()
		s.view.Close()
		return nil, err
	}
	closeAll := func() {
		if s.hooks != nil {
			s.hooks.Close()
		}
		s.remedStore.Close()
		s.store.Close()
		s.view.Close()
	}
	var approvalKey string
	if approvalKey = cfg.Hooks.ApprovalSecret; approvalKey == "" {
		// Without a configured key, one of this data directory's own: its links are good
		// only on this process (and its restarts).
		if approvalKey, err = hooks.LoadOrCreateKey(filepath.Join(o.TSDBPath, "fleetwatch-approval.key")); err != nil {
			closeAll()
			return nil, fmt.Errorf("approval key: %w", err)
		}
	}
	tokens, err := hooks.NewTokens(approvalKey)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("hooks.approval_secret_file: %w", err)
	}
	s.hooks, err = hooks.New(hooks.Options{
		Path: filepath.Join(o.TSDBPath, "fleetwatch-hooks.db"),
		Sources: []hooks.Source{
			{Name: hooks.SourceIncident, Events: s.store.Events, Head: s.store.EventsHead, Trim: s.store.TrimEvents},
			{Name: hooks.SourceRemediation, Events: s.remedStore.Events, Head: s.remedStore.EventsHead, Trim: s.remedStore.TrimEvents},
		},
		Incident: s.store.Incident, Tokens: tokens, ExternalURL: externalURL,
		UserAgent: "fleetwatch-hooks/" + version,
		Logger:    o.Logger.With("component", "hooks"), Registerer: reg,
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	s.incidents, err = correlate.New(correlate.Options{
		// Alerts remediation's own actions cause join the incident they remediate.
		Actions: func() []correlate.Action {
			if s.remediate == nil {
				return nil
			}
			return s.remediate.Actions()
		},
		Store: s.store, Query: correlate.QueryFunc(rules.EngineQueryFunc(s.view, s.view)),
		Rules: correlate.DefaultRules, ExternalURL: externalURL, Logger: o.Logger.With("component", "correlate"), Registerer: reg,
		// The incident API records the authenticated identity as the actor and shows a team
		// only its clusters' incidents.
		Identify: func(ctx context.Context) (correlate.Caller, bool) { return access.FromContext(ctx) },
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	s.alertsIn, err = input.New(input.Options{Sink: s.incidents, Logger: o.Logger.With("component", "alerts-in"), Registerer: reg})
	if err != nil {
		closeAll()
		return nil, err
	}
	toIncidents := rules.SendAlerts(correlate.Sender{Sink: s.incidents, OnError: func(err error) {
		s.logger.Error("handing alerts to the correlation engine", "err", err)
	}}, externalURL)
	s.rules, err = fwrules.New(fwrules.Options{
		QueryFunc:  rules.EngineQueryFunc(s.view, s.view),
		Appendable: s.view.Appendable(), Queryable: s.view,
		ExternalURL: externalURL,
		// Which series back firing alerts, so that one held for a silent cluster stays held
		// across a restart.
		StateFile: filepath.Join(o.TSDBPath, "fleetwatch-alert-holds.json"),
		Notify: func(ctx context.Context, expr string, alerts ...*rules.Alert) {
			if s.correlating.Load() {
				toIncidents(ctx, expr, alerts...)
			}
		},
		Logger: o.Logger, Registerer: reg,
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	s.schedule, err = schedule.New(schedule.Options{
		Source: schedule.Source{
			Query: schedule.QueryFunc(rules.EngineQueryFunc(s.view, s.view)),
			Incidents: func(yield func(*correlate.Incident) bool) {
				if s.correlating.Load() {
					s.incidents.EachActive(yield)
				}
			},
		},
		Settings: scheduleSettings(cfg), Publish: s.publishScores,
		Logger: o.Logger.With("component", "schedule"), Registerer: reg,
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	s.remediate, err = remediate.New(remediate.Options{
		Store: s.remedStore, Query: remediate.QueryFunc(rules.EngineQueryFunc(s.view, s.view)),
		Incidents: func() []*correlate.Incident {
			if !s.correlating.Load() {
				return nil
			}
			return s.incidents.ActiveWithAlerts()
		},
		Clients: s.kubeClient,
		WhatIf:  s.schedule.WhatIfNow,
		// The incident says what remediation did about it.
		Remediated: s.incidents.Remediated,
		// A freeze or a remediation storm is an incident like any other.
		Alerts:   s.incidents,
		Settings: cfg.Remediation,
		Identify: func(ctx context.Context) (correlate.Caller, bool) { return access.FromContext(ctx) },
		Logger:   o.Logger.With("component", "remediate"), Registerer: reg,
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	s.approvals = &hooks.Approvals{
		Tokens: tokens, Engine: s.remediate, Store: s.remedStore, Now: time.Now,
		Identify: func(ctx context.Context) (correlate.Caller, bool) { return access.FromContext(ctx) },
	}
	// The listener's TLS is set once; a reload may renew certificates and users, not turn TLS
	// on or off.
	wc, err := access.LoadWebConfig(o.WebConfigFile)
	if err != nil {
		closeAll()
		return nil, err
	}
	s.tls = wc.TLS
	s.guard, err = access.NewGuard(access.GuardOptions{
		Endpoints: endpoints, Logger: o.Logger.With("component", "access"), Registerer: reg,
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	if le := cfg.Remediation.LeaderElection; le != nil {
		s.election = le
		if le.Cluster != "" {
			s.hub = cfg.Cluster(le.Cluster).KubeConfig
		} else if s.hub, err = rest.InClusterConfig(); err != nil {
			closeAll()
			return nil, fmt.Errorf("remediation.leader_election: no cluster is named, so the Lease is in the cluster fleetwatch runs in, but it does not run in a pod: %w", err)
		}
		if s.identity = le.Identity; s.identity == "" {
			host, _ := os.Hostname()
			var b [4]byte
			_, _ = rand.Read(b[:])
			s.identity = fmt.Sprintf("%s_%x", host, b)
		}
	}
	if err := s.apply(cfg); err != nil {
		closeAll()
		return nil, err
	}

	mux := http.NewServeMux()
	for _, p := range []string{"/api/v1/placements", "/api/v1/placements/", "/api/v1/whatif"} {
		mux.Handle(p, s.scheduleHandler())
	}
	mux.Handle("/api/v1/write", s.receiver)
	mux.Handle(input.PathAlertsV2, s.alertsIn)
	mux.Handle(input.PathWebhook, s.alertsIn)
	mux.Handle("/api/v1/incidents", s.incidents.Handler())
	mux.Handle("/api/v1/incidents/", s.incidents.Handler())
	mux.Handle("/api/v1/remediations", s.remediate.Handler())
	mux.Handle("/api/v1/remediations/", s.remediate.Handler())
	mux.Handle("/api/v1/approvals/", s.approvals.Handler())
	mux.Handle("/api/v1/hooks", s.hooks.Handler())
	mux.Handle("/api/v1/", s.view.Handler(query.APIOptions{
		Ready:         s.ready.Load,
		BuildInfo:     &v1.PrometheusVersion{Version: version, Revision: revision, GoVersion: runtime.Version()},
		Flags:         o.Flags,
		ListenAddress: o.Listener.Addr().String(),
		Gatherer:      reg,
		Targets:       func(context.Context) v1.TargetRetriever { return s.fed.Targets() },
		Rules:         func(context.Context) v1.RulesRetriever { return s.rules.Manager() },
	}))
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "fleetwatch is Healthy.") })
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "fleetwatch is not ready.", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "fleetwatch is Ready.")
	})
	mux.HandleFunc("/-/reload", s.serveReload)
	mux.HandleFunc("/-/quit", s.serveQuit)
	mux.Handle("/federate", s.view.FederateHandler())
	// The web console serves every path no route here takes (unknown ones get a 404 page).
	con, err := s.newConsole()
	if err != nil {
		closeAll()
		return nil, err
	}
	mux.Handle("/", con.Handler())
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.http = &http.Server{Handler: s.guard.Handler(mux), ReadHeaderTimeout: 30 * time.Second}
	return s, nil
}

// endpoints is fleetwatch's HTTP surface as the access layer sees it: what each route needs,
// and how a team-scoped identity is held to its clusters there. A route missing here needs
// the read role and is refused to team identities.
var endpoints = []access.Endpoint{
	{Pattern: "/-/healthy", Name: "healthy"},
	{Pattern: "/-/ready", Name: "ready"},
	{Pattern: "/api/v1/write", Name: access.EndpointWrite, Need: access.RoleIngest},
	{Pattern: input.PathAlertsV2, Name: "alerts_in", Need: access.RoleIngest},
	{Pattern: input.PathWebhook, Name: "alerts_webhook", Need: access.RoleIngest},
	{Pattern: "/-/reload", Name: "reload", Need: access.RoleAdmin, Lifecycle: true},
	{Pattern: "/-/quit", Name: "quit", Need: access.RoleAdmin, Lifecycle: true},
	{Pattern: "/debug/pprof/", Name: "pprof", Need: access.RoleAdmin},
	{Pattern: "POST /api/v1/incidents/{id}/ack", Name: "incident_ack", Need: access.RoleOperate, Scope: access.ScopeHandler},
	{Pattern: "POST /api/v1/incidents/{id}/resolve", Name: "incident_resolve", Need: access.RoleOperate, Scope: access.ScopeHandler},
	{Pattern: "/api/v1/incidents", Name: "incidents", Need: access.RoleRead, Scope: access.ScopeHandler},
	{Pattern: "/api/v1/incidents/", Name: "incidents", Need: access.RoleRead, Scope: access.ScopeHandler},
	{Pattern: "POST /api/v1/remediations/{id}/approve", Name: "remediation_approve", Need: access.RoleOperate, Scope: access.ScopeHandler},
	{Pattern: "POST /api/v1/remediations/{id}/deny", Name: "remediation_deny", Need: access.RoleOperate, Scope: access.ScopeHandler},
	{Pattern: "POST /api/v1/remediations/pause", Name: "remediation_pause", Need: access.RoleOperate, Scope: access.ScopeHandler},
	{Pattern: "POST /api/v1/remediations/resume", Name: "remediation_resume", Need: access.RoleOperate, Scope: access.ScopeHandler},
	{Pattern: "POST /api/v1/remediations/plan", Name: "remediation_plan", Need: access.RoleRead, Scope: access.ScopeHandler},
	{Pattern: "/api/v1/remediations", Name: "remediations", Need: access.RoleRead, Scope: access.ScopeHandler},
	{Pattern: "/api/v1/remediations/", Name: "remediations", Need: access.RoleRead, Scope: access.ScopeHandler},
	{Pattern: "GET /api/v1/approvals/{token}", Name: "approval", Need: access.RoleRead, Scope: access.ScopeHandler},
	{Pattern: "POST /api/v1/approvals/{token}", Name: "approval_decide", Need: access.RoleOperate, Scope: access.ScopeHandler},
	{Pattern: "/api/v1/hooks", Name: "hooks", Need: access.RoleRead},
	{Pattern: "/api/v1/placements", Name: "placements", Need: access.RoleRead},
	{Pattern: "/api/v1/placements/", Name: "placements", Need: access.RoleRead},
	{Pattern: "/api/v1/whatif", Name: "whatif", Need: access.RoleRead},
	{Pattern: "/metrics", Name: "metrics", Need: access.RoleRead},
	// The web console (console.Routes): its pages show a team only its clusters themselves.
	{Pattern: "GET /{$}", Name: "console_fleet", Need: access.RoleRead, Scope: access.ScopeHandler},
	{Pattern: "GET /static/", Name: "console_static", Need: access.RoleRead, Scope: access.ScopeNone},
	{Pattern: "GET /graph", Name: "console_graph", Need: access.RoleRead, Scope: access.ScopeHandler},
	{Pattern: "GET /clusters/{name}", Name: "console_cluster", Need: access.RoleRead, Scope: access.ScopeHandler},
	{Pattern: "GET /incidents", Name: "console_incidents", Need: access.RoleRead, Scope: access.ScopeHandler},
	{Pattern: "GET /incidents/{id}", Name: "console_incident", Need: access.RoleRead, Scope: access.ScopeHandler},
	{Pattern: "GET /remediations", Name: "console_remediations", Need: access.RoleRead, Scope: access.ScopeHandler},
	{Pattern: "GET /remediations/{id}", Name: "console_remediation", Need: access.RoleRead, Scope: access.ScopeHandler},
	{Pattern: "GET /whatif", Name: "console_whatif", Need: access.RoleRead, Scope: access.ScopeHandler},
	{Pattern: "/federate", Name: "federate", Need: access.RoleRead, Scope: access.ScopeFederate},
	{Pattern: "/api/v1/query", Name: "query", Need: access.RoleRead, Scope: access.ScopeQuery},
	{Pattern: "/api/v1/query_range", Name: "query_range", Need: access.RoleRead, Scope: access.ScopeQuery},
	{Pattern: "/api/v1/query_exemplars", Name: "query_exemplars", Need: access.RoleRead, Scope: access.ScopeQuery},
	{Pattern: "/api/v1/series", Name: "series", Need: access.RoleRead, Scope: access.ScopeMatch},
	{Pattern: "/api/v1/labels", Name: "labels", Need: access.RoleRead, Scope: access.ScopeMatch},
	{Pattern: "/api/v1/label/{name}/values", Name: "label_values", Need: access.RoleRead, Scope: access.ScopeMatch},
	{Pattern: "/api/v1/rules", Name: "rules", Need: access.RoleRead, Scope: access.ScopeRules},
	{Pattern: "/api/v1/alerts", Name: "alerts", Need: access.RoleRead, Scope: access.ScopeAlerts},
	{Pattern: "/api/v1/metadata", Name: "metadata", Need: access.RoleRead, Scope: access.ScopeNone},
	{Pattern: "/api/v1/status/buildinfo", Name: "buildinfo", Need: access.RoleRead, Scope: access.ScopeNone},
	{Pattern: "/api/v1/format_query", Name: "format_query", Need: access.RoleRead, Scope: access.ScopeNone},
	{Pattern: "/api/v1/parse_query", Name: "parse_query", Need: access.RoleRead, Scope: access.ScopeNone},
	{Pattern: "/api/v1/", Name: "api_other", Need: access.RoleRead},
}

// apply hands a loaded configuration to every component, all or nothing: everything that can
// be refused (rule files, federation scrape configs, API server clients, remote sources, OCM
// hub, placement settings, identities and the web config) is checked first, so a bad file
// leaves the whole running configuration in force; only then does each component switch.
func (s *server) apply(cfg *config.Config) error {
	rc, err := rulesConfig(cfg)
	if err != nil {
		return err
	}
	if err := s.rules.CheckConfig(rc); err != nil {
		return fmt.Errorf("apply rules config: %w", err)
	}
	if err := s.fed.CheckConfig(cfg); err != nil {
		return fmt.Errorf("apply federation config: %w", err)
	}
	if err := s.apiProbe.CheckConfig(cfg); err != nil {
		return fmt.Errorf("apply API probe config: %w", err)
	}
	if err := s.view.CheckConfig(cfg.Query); err != nil {
		return fmt.Errorf("apply query config: %w", err)
	}
	var ocmPub *ocm.Publisher
	if o := cfg.Schedule.OCM; o != nil {
		if ocmPub, err = newOCMPublisher(o, s.logger); err != nil {
			return fmt.Errorf("apply schedule config: %w", err)
		}
	}
	sched := scheduleSettings(cfg)
	if err := sched.Check(); err != nil {
		return fmt.Errorf("apply schedule config: %w", err)
	}
	acc, err := s.accessSettings(cfg)
	if err != nil {
		return err
	}
	if err := access.Check(acc); err != nil {
		return err
	}
	cs := correlateSettings(cfg)
	if err := hooks.Check(cfg.Hooks); err != nil {
		return err
	}
	if err := cfg.Remediation.Validate(); err != nil {
		return err
	}
	if le := cfg.Remediation.LeaderElection; !reflect.DeepEqual(le, s.election) {
		return errors.New("remediation.leader_election: a change needs a restart")
	}
	if f := cfg.Ingest.Forward; !reflect.DeepEqual(f, s.forward) {
		return errors.New("ingest.forward: a change needs a restart")
	}
	kube := map[string]kubernetes.Interface{}
	for _, c := range cfg.Clusters {
		if c.KubeConfig == nil {
			continue
		}
		rc := rest.CopyConfig(c.KubeConfig)
		rc.Timeout = remediationAPITimeout
		// Its own user agent, so the clusters' audit logs tell remediation's requests apart
		// (and, with leader election, which process made them).
		rc.UserAgent = remediate.UserAgent
		if s.identity != "" {
			rc.UserAgent += "/" + s.identity
		}
		if kube[c.Name], err = kubernetes.NewForConfig(rc); err != nil {
			return fmt.Errorf("cluster %q: kubeconfig_file: %w", c.Name, err)
		}
	}

	// Everything was checked: switch. The steps below only fail on what the checks above
	// cover, so in practice they do not; they still report it.
	if err := s.guard.Apply(acc); err != nil {
		return fmt.Errorf("apply access config: %w", err)
	}
	if err := s.view.ApplyConfig(cfg.Query); err != nil {
		return fmt.Errorf("apply query config: %w", err)
	}
	if err := s.receiver.ApplyConfig(cfg); err != nil {
		return fmt.Errorf("apply collector config: %w", err)
	}
	if err := s.fed.ApplyConfig(cfg); err != nil {
		return fmt.Errorf("apply federation config: %w", err)
	}
	s.ingest.ApplyConfig(cfg)
	if err := s.apiProbe.ApplyConfig(cfg); err != nil {
		return fmt.Errorf("apply API probe config: %w", err)
	}
	if err := s.alertsIn.ApplyConfig(cfg); err != nil {
		return fmt.Errorf("apply alert input config: %w", err)
	}
	if err := s.rules.ApplyConfig(rc); err != nil {
		return fmt.Errorf("apply rules config: %w", err)
	}
	if err := s.incidents.ApplySettings(cs); err != nil {
		return fmt.Errorf("apply correlate config: %w", err)
	}
	s.correlating.Store(cfg.Correlate.Enabled)
	s.ocm.Store(ocmPub)
	s.scheduling.Store(cfg.Schedule.Enabled)
	s.cfg.Store(cfg)
	if err := s.schedule.ApplySettings(sched); err != nil {
		return fmt.Errorf("apply schedule config: %w", err)
	}
	s.kube.Store(&kube)
	if err := s.remediate.ApplySettings(cfg.Remediation); err != nil {
		return fmt.Errorf("apply remediation config: %w", err)
	}
	if err := s.hooks.ApplyConfig(cfg.Hooks); err != nil {
		return fmt.Errorf("apply hooks config: %w", err)
	}
	return nil
}

// remediationAPITimeout bounds each request remediation makes to a cluster's API server: an
// unreachable one holds an evaluation for no longer.
const remediationAPITimeout = 10 * time.Second

// kubeClient is the client of a cluster's API server, from its kubeconfig_file.
// hubClient is the client of the cluster that holds remediation's Lease, with a timeout
// shorter than the renew deadline.
func (s *server) hubClient() (kubernetes.Interface, error) {
	rc := rest.CopyConfig(s.hub)
	rc.Timeout = time.Duration(s.election.RenewDeadline) / 2
	rc.UserAgent = remediate.UserAgent + "/" + s.identity
	return kubernetes.NewForConfig(rc)
}

func (s *server) kubeClient(cluster string) (kubernetes.Interface, error) {
	if m := s.kube.Load(); m != nil {
		if c, ok := (*m)[cluster]; ok {
			return c, nil
		}
	}
	return nil, fmt.Errorf("cluster %q has no kubeconfig_file: fleetwatch cannot act on it", cluster)
}

// correlateSettings is the correlation stage's part of the configuration: its section, and
// the view's replica labels, which deduplicating alerts drops too.
func correlateSettings(cfg *config.Config) correlate.Settings {
	return correlate.Settings{Correlate: cfg.Correlate, ReplicaLabels: cfg.Query.ReplicaLabels}
}

// accessSettings are the access layer's settings: the identities of fleetwatch.yml with their
// scopes resolved against the clusters' labels, the clusters' remote-write credentials and the
// users and TLS of --web.config.file (read again on every reload).
func (s *server) accessSettings(cfg *config.Config) (access.Settings, error) {
	wc, err := access.LoadWebConfig(s.opts.WebConfigFile)
	if err != nil {
		return access.Settings{}, err
	}
	if (wc.TLS == nil) != (s.tls == nil) {
		return access.Settings{}, fmt.Errorf("web config %s: turning TLS on or off needs a restart", s.opts.WebConfigFile)
	}
	st := access.Settings{Clusters: clusterauth.New(cfg.Clusters), Web: wc, Lifecycle: s.opts.EnableLifecycle}
	for _, r := range cfg.Access.AnonymousRoles {
		st.AnonymousRoles = append(st.AnonymousRoles, access.Role(r))
	}
	for _, id := range cfg.Access.Identities {
		u := access.User{Name: id.Name, BearerToken: id.BearerToken, Scope: id.ScopeOf(cfg.Clusters)}
		for _, r := range id.Roles {
			u.Roles = append(u.Roles, access.Role(r))
		}
		st.Users = append(st.Users, u)
	}
	return st, nil
}

// scheduleSettings is placement's part of the configuration: its section, the clusters'
// static description, and the thresholds it shares with the rule pack (the saturation
// ceiling, the Ready ratio, the silent-cluster window), so they are never configured twice.
func scheduleSettings(cfg *config.Config) schedule.Settings {
	return schedule.Settings{Schedule: cfg.Schedule, Pack: cfg.Rules.Pack.Thresholds, Clusters: cfg.Clusters}
}

// scheduleHandler serves placement and what-if while schedule.enabled is true.
func (s *server) scheduleHandler() http.Handler {
	h := s.schedule.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.scheduling.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, `{"status":"error","errorType":"unavailable","error":"placement is disabled (schedule.enabled: false)"}`)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// publishScores writes the refreshed scores as OCM AddOnPlacementScore objects when
// schedule.ocm is configured.
func (s *server) publishScores(ctx context.Context, snap *schedule.Snapshot, scores []schedule.ClusterScore) error {
	p := s.ocm.Load()
	if p == nil {
		return nil
	}
	out := make([]ocm.Score, 0, len(scores))
	for _, sc := range scores {
		out = append(out, ocm.Score{Cluster: sc.Cluster, Score: sc.Score, FreeCPUCores: sc.FreeCPU, FreeMemoryBytes: sc.FreeMemory, Schedulable: sc.Schedulable})
	}
	return p.Publish(ctx, out, snap.At)
}

// newOCMPublisher connects to the OCM hub of the kubeconfig (in-cluster config without one).
func newOCMPublisher(o *config.OCMConfig, logger *slog.Logger) (*ocm.Publisher, error) {
	var (
		rc  *rest.Config
		err error
	)
	if o.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("schedule.ocm: %w", err)
	}
	dc, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("schedule.ocm: %w", err)
	}
	return ocm.NewPublisher(dc, ocm.Options{Name: o.Name, Logger: logger.With("component", "ocm")}), nil
}

// rulesConfig is the rules stage's part of the configuration: the user's rule files, the
// built-in pack rendered with the configured thresholds, and the clusters.
func rulesConfig(cfg *config.Config) (fwrules.Config, error) {
	files, err := cfg.Rules.Files()
	if err != nil {
		return fwrules.Config{}, err
	}
	rc := fwrules.Config{Rules: cfg.Rules, Files: files, Clusters: make([]string, 0, len(cfg.Clusters))}
	for _, c := range cfg.Clusters {
		rc.Clusters = append(rc.Clusters, c.Name)
	}
	if cfg.Rules.Pack.Enabled {
		t := cfg.Rules.Pack.Thresholds
		// The pack's groups run at rules.evaluation_interval like every other group.
		t.EvaluationInterval = 0
		if rc.Pack, err = pack.Render(t); err != nil {
			return fwrules.Config{}, err
		}
	}
	return rc, nil
}

func (s *server) reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cfg, err := config.LoadFile(s.opts.ConfigFile)
	if err == nil {
		err = s.apply(cfg)
	}
	if err != nil {
		s.reloadSuccess.Set(0)
		s.logger.Error("configuration reload failed; the previous configuration stays in force", "file", s.opts.ConfigFile, "err", err)
		return err
	}
	s.reloadSuccess.Set(1)
	s.reloadLastTime.SetToCurrentTime()
	s.logger.Info("configuration reloaded", "file", s.opts.ConfigFile, "clusters", len(cfg.Clusters))
	return nil
}

// serveQuit shuts fleetwatch down gracefully, as Prometheus's /-/quit does.
func (s *server) serveQuit(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		w.Header().Set("Allow", "POST, PUT")
		http.Error(w, "use POST or PUT to shut fleetwatch down", http.StatusMethodNotAllowed)
		return
	}
	id, _ := access.FromContext(r.Context())
	s.logger.Info("shutdown requested over HTTP", "by", id.String())
	fmt.Fprintln(w, "Requesting termination... Goodbye!")
	s.quitOnce.Do(func() { close(s.quit) })
}

func (s *server) serveReload(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		w.Header().Set("Allow", "POST, PUT")
		http.Error(w, "use POST or PUT to reload the configuration", http.StatusMethodNotAllowed)
		return
	}
	if err := s.reload(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprintln(w, "configuration reloaded")
}

// Run serves until ctx ends, then shuts down and closes the TSDB.
func (s *server) Run(ctx context.Context) error {
	defer func() {
		if err := s.hooks.Close(); err != nil {
			s.logger.Error("closing the hooks store", "err", err)
		}
		if err := s.remedStore.Close(); err != nil {
			s.logger.Error("closing the remediation store", "err", err)
		}
		if err := s.store.Close(); err != nil {
			s.logger.Error("closing the incident store", "err", err)
		}
		if err := s.view.Close(); err != nil {
			s.logger.Error("closing TSDB", "err", err)
		}
	}()
	var g run.Group
	{
		// Termination: the parent context (signals) or an actor failing ends the group.
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			select {
			case <-ctx.Done():
			case <-s.quit:
			}
			return nil
		}, func(error) { cancel() })
	}
	{
		// SIGHUP reloads, like Prometheus.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		done := make(chan struct{})
		g.Add(func() error {
			for {
				select {
				case <-hup:
					_ = s.reload()
				case <-done:
					return nil
				}
			}
		}, func(error) { signal.Stop(hup); close(done) })
	}
	{
		// Each cluster's last ingest time, written into the view for the silent-cluster rule.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return s.ingest.Run(ctx, lastIngestInterval) }, func(error) { cancel() })
	}
	{
		// Each cluster's API server probed, the results written into the view; Run returns
		// once every probe in flight stopped, before the TSDB closes.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return s.apiProbe.Run(ctx) }, func(error) { cancel() })
	}
	{
		// Rule evaluation, which writes recording rules and alert state into the view.
		done := make(chan struct{})
		g.Add(func() error { s.rules.Run(); <-done; return nil }, func(error) { s.rules.Stop(); close(done) })
	}
	{
		// Correlation of alerts into incidents, and their delivery to Alertmanager.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		g.Add(func() error { s.incidents.Run(ctx); close(done); return nil }, func(error) { cancel(); <-done })
	}
	{
		// The placement snapshot and the per-cluster scores, read from the view.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			return s.schedule.Run(ctx, func() bool { return s.scheduling.Load() })
		}, func(error) { cancel() })
	}
	{
		// Remediation: incidents matched to playbooks, actions on the clusters' API servers,
		// verified in the view; it stops before the stores close.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		g.Add(func() error {
			defer close(done)
			if le := s.election; le != nil {
				// Only the process that holds the Lease in the hub cluster acts.
				hub, err := s.hubClient()
				if err != nil {
					return err
				}
				return s.remediate.RunElected(ctx, hub, *le, s.identity)
			}
			s.remediate.Run(ctx)
			return nil
		}, func(error) { cancel(); <-done })
	}
	{
		// Webhook deliveries, woken by every incident change (remediation's are polled); they
		// stop before the stores close.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		g.Add(func() error {
			defer close(done)
			changes, unsubscribe := s.incidents.Subscribe()
			defer unsubscribe()
			var wg sync.WaitGroup
			defer wg.Wait()
			wg.Go(func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-changes:
						s.hooks.Wake()
					}
				}
			})
			s.hooks.Run(ctx)
			return nil
		}, func(error) { cancel(); <-done })
	}
	{
		// Federation scrapes stop before the TSDB closes.
		g.Add(s.fed.Run, func(error) { s.fed.Stop() })
	}
	{
		// HTTP: stops accepting, then lets in-flight writes finish, before the TSDB closes
		// (deferred above), so an acknowledged write is in the WAL.
		g.Add(func() error {
			s.ready.Store(true)
			s.logger.Info("fleetwatch listening", "address", s.opts.Listener.Addr().String())
			var err error
			if s.tls != nil {
				if !slices.Contains(s.tls.NextProtos, "h2") {
					s.http.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
				}
				s.http.TLSConfig = s.tls
				err = s.http.ServeTLS(s.opts.Listener, "", "")
			} else {
				err = s.http.Serve(s.opts.Listener)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve HTTP: %w", err)
			}
			return nil
		}, func(error) {
			s.ready.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = s.http.Shutdown(ctx)
		})
	}
	err := g.Run()
	s.logger.Info("fleetwatch stopped")
	return err
}
