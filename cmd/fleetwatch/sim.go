package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/oklog/run"

	"github.com/fleetwatch/fleetwatch/internal/sim"
)

type simCmd struct {
	cmd           *kingpin.CmdClause
	listen        string
	clusters      int
	nodes         int
	podsPerNode   int
	clusterNames  string
	scenarioFiles []string
	scenarioStart string
	seed          int64
	log           *logFlags
}

func newSimCmd(app *kingpin.Application) *simCmd {
	s := &simCmd{cmd: app.Command("sim", "Run the fleet lab: synthetic clusters exporting kube-state-metrics series, driven by scenarios.")}
	s.cmd.Flag("web.listen-address", "Address to serve the clusters' metrics and the scenario API on.").Default("127.0.0.1:9096").StringVar(&s.listen)
	s.cmd.Flag("clusters", "Number of clusters (named eu-1, eu-2, us-1, ...).").Default("3").IntVar(&s.clusters)
	s.cmd.Flag("nodes", "Nodes per cluster.").Default("50").IntVar(&s.nodes)
	s.cmd.Flag("pods-per-node", "Average pods per node.").Default("30").IntVar(&s.podsPerNode)
	s.cmd.Flag("cluster.names", "Comma-separated cluster names; overrides --clusters.").StringVar(&s.clusterNames)
	s.cmd.Flag("scenario.file", "Extra scenario YAML file to load (repeatable).").StringsVar(&s.scenarioFiles)
	s.cmd.Flag("scenario.start", "Name of a scenario to start at launch.").StringVar(&s.scenarioStart)
	s.cmd.Flag("seed", "Seed of the synthetic fleet: the same seed gives the same clusters.").Default("1").Int64Var(&s.seed)
	s.log = addLogFlags(s.cmd)
	return s
}

func (s *simCmd) run() error {
	logger := s.log.logger()
	names := sim.DefaultClusterNames(s.clusters)
	if s.clusterNames != "" {
		names = nil
		for _, n := range strings.Split(s.clusterNames, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, n)
			}
		}
	}
	lab, err := sim.New(sim.Options{
		Clusters: names, Nodes: s.nodes, PodsPerNode: s.podsPerNode, Seed: s.seed, Logger: logger,
	})
	if err != nil {
		return err
	}
	defer lab.Close()
	for _, f := range s.scenarioFiles {
		sc, err := sim.ParseScenarioFile(f)
		if err != nil {
			return err
		}
		if _, err := lab.AddScenario(sc, "file"); err != nil {
			return fmt.Errorf("scenario file %s: %w", f, err)
		}
	}
	if s.scenarioStart != "" {
		if _, err := lab.StartScenario(s.scenarioStart); err != nil {
			return err
		}
	}

	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.listen, err)
	}
	base := "http://" + ln.Addr().String()
	fmt.Printf("fleet lab: %d clusters x %d nodes x %d pods per node (seed %d)\n", len(names), s.nodes, s.podsPerNode, s.seed)
	for _, n := range names {
		fmt.Printf("  %-8s kube-state-metrics %s/clusters/%s/metrics   apiserver %s/clusters/%s/apiserver/metrics\n", n, base, n, base, n)
	}
	fmt.Printf("  truth      %s/clusters\n  scenarios  %s/scenarios  (POST /scenarios/{name}/start|stop|step)\n", base, base)
	if s.scenarioStart != "" {
		fmt.Printf("  started    %s\n", s.scenarioStart)
	}

	srv := &http.Server{Handler: lab.Handler(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var g run.Group
	g.Add(func() error {
		<-ctx.Done()
		return nil
	}, func(error) { stop() })
	g.Add(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve fleet lab: %w", err)
		}
		return nil
	}, func(error) {
		// Close the lab first: it releases scrapes held by silent clusters, which Shutdown
		// would otherwise wait for.
		lab.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	err = g.Run()
	logger.Info("Fleet lab stopped")
	return err
}
