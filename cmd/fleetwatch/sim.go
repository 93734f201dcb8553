package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/oklog/run"

	"github.com/fleetwatch/fleetwatch/internal/kubelab"
	"github.com/fleetwatch/fleetwatch/internal/sim"
)

// startControlPlanes gives every cluster of lab a real control plane in dir.
func startControlPlanes(lab *sim.Sim, dir, binDir string, logger *slog.Logger) (*kubelab.Fleet, error) {
	if missing := kubelab.MissingBinaries(binDir); len(missing) > 0 {
		return nil, fmt.Errorf("control planes need %s in %s: run `make peers` (it builds them from the Go module proxy, about 15 minutes the first time)", strings.Join(missing, ", "), binDir)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fleet, err := kubelab.Attach(ctx, lab, dir, binDir, logger)
	if err != nil {
		return nil, fmt.Errorf("start control planes: %w", err)
	}
	logger.Info("Control planes ready", "clusters", len(lab.Clusters()), "dir", dir, "took", time.Since(start).Round(time.Millisecond))
	return fleet, nil
}

// printControlPlanes prints one kubectl command per cluster.
func printControlPlanes(w io.Writer, fleet *kubelab.Fleet) {
	for _, e := range fleet.Endpoints() {
		fmt.Fprintf(w, "  %-8s kubectl --kubeconfig %s get nodes,pods -A\n           API server %s   kube-state-metrics http://%s/metrics\n",
			e.Name, e.Kubeconfig, e.APIServer, e.KubeStateMetrics)
	}
}

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
	controlPlanes bool
	cpDir         string
	cpBinDir      string
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
	s.cmd.Flag("control-planes", "Give every cluster a real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-state-metrics: `make peers` builds them): scenarios then act through each cluster's API, and kube-state-metrics reads its objects.").BoolVar(&s.controlPlanes)
	s.cmd.Flag("control-planes.dir", "Directory for the control planes' certificates, data, logs and kubeconfigs (default: a temporary directory, removed on exit).").StringVar(&s.cpDir)
	s.cmd.Flag("control-planes.bin-dir", "Directory holding the control-plane binaries.").Default(kubelab.DefaultBinDir()).StringVar(&s.cpBinDir)
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

	var fleet *kubelab.Fleet
	if s.controlPlanes {
		dir := s.cpDir
		if dir == "" {
			tmp, err := os.MkdirTemp("", "fleetwatch-lab-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			dir = tmp
		}
		if fleet, err = startControlPlanes(lab, dir, s.cpBinDir, logger); err != nil {
			return err
		}
		defer fleet.Close()
	}

	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.listen, err)
	}
	base := "http://" + ln.Addr().String()
	fmt.Printf("fleet lab: %d clusters x %d nodes x %d pods per node (seed %d)\n", len(names), s.nodes, s.podsPerNode, s.seed)
	if fleet != nil {
		printControlPlanes(os.Stdout, fleet)
		fmt.Printf("  control planes and faults  %s/control-planes\n", base)
	} else {
		for _, n := range names {
			fmt.Printf("  %-8s kube-state-metrics %s/clusters/%s/metrics   apiserver %s/clusters/%s/apiserver/metrics\n", n, base, n, base, n)
		}
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
