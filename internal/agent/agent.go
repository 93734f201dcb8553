// Package agent runs a Prometheus in agent mode inside the process: Prometheus's scrape
// manager appending to its agent WAL, and its remote-write queue shipping the WAL to a
// remote-write endpoint. It is what `fleetwatch demo` puts in front of each simulated
// cluster, so the demo's data takes the same path a member cluster's Prometheus would.
package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/agent"
)

// Agent is one in-process Prometheus agent.
type Agent struct {
	logger  *slog.Logger
	db      *agent.DB
	remote  *remote.Storage
	scrape  *scrape.Manager
	tsets   chan map[string][]*targetgroup.Group
	runDone chan error
	once    sync.Once
}

type readyScrapeManager struct{ m *scrape.Manager }

func (r readyScrapeManager) Get() (*scrape.Manager, error) {
	if r.m == nil {
		return nil, errors.New("scrape manager not ready")
	}
	return r.m, nil
}

// Start opens the agent WAL in dir, applies cfg (a Prometheus configuration file's text; only
// static_configs are supported for targets) and starts scraping and remote-writing.
func Start(cfgText, dir string, logger *slog.Logger) (*Agent, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := config.Load(cfgText, logger)
	if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	tsets := map[string][]*targetgroup.Group{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, sd := range sc.ServiceDiscoveryConfigs {
			static, ok := sd.(discovery.StaticConfig)
			if !ok {
				return nil, fmt.Errorf("agent config: job %q: only static_configs are supported", sc.JobName)
			}
			tsets[sc.JobName] = append(tsets[sc.JobName], static...)
		}
	}
	// Every agent has its own registry: several run in one process.
	reg := prometheus.NewRegistry()
	a := &Agent{logger: logger, tsets: make(chan map[string][]*targetgroup.Group, 1), runDone: make(chan error, 1)}
	var db *agent.DB
	startTime := func() (int64, error) {
		if db == nil {
			return math.MaxInt64, nil
		}
		return db.StartTime()
	}
	ready := &readyScrapeManager{}
	a.remote = remote.NewStorage(logger.With("component", "remote"), reg, startTime, dir, 5*time.Second, ready, false)
	db, err = agent.Open(logger, reg, a.remote, dir, agent.DefaultOptions())
	if err != nil {
		a.remote.Close()
		return nil, fmt.Errorf("agent WAL: %w", err)
	}
	a.db = db
	db.SetWriteNotified(a.remote) // ship each write at once, not on the watcher's 15s poll
	if err := a.remote.ApplyConfig(cfg); err != nil {
		a.close()
		return nil, fmt.Errorf("agent remote-write: %w", err)
	}
	a.scrape, err = scrape.NewManager(&scrape.Options{DiscoveryReloadInterval: model.Duration(time.Second)}, logger.With("component", "scrape"), nil,
		storage.NewFanout(logger, db, a.remote), reg)
	if err != nil {
		a.close()
		return nil, err
	}
	ready.m = a.scrape
	if err := a.scrape.ApplyConfig(cfg); err != nil {
		a.close()
		return nil, fmt.Errorf("agent scrape: %w", err)
	}
	a.tsets <- tsets
	go func() { a.runDone <- a.scrape.Run(a.tsets) }()
	return a, nil
}

// Stop stops scraping, flushes what remote-write can within its deadline, and closes the WAL.
func (a *Agent) Stop() error {
	var err error
	a.once.Do(func() {
		a.scrape.Stop()
		<-a.runDone
		err = a.close()
	})
	return err
}

func (a *Agent) close() error {
	return errors.Join(a.remote.Close(), a.db.Close())
}
