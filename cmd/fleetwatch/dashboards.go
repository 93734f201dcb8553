package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	promconfig "github.com/prometheus/common/config"

	"github.com/fleetwatch/fleetwatch/dashboards"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

// dashboardsCmd is `fleetwatch dashboards generate`: it writes the Grafana dashboards and
// their provisioning files, and pushes the dashboards to a Grafana.
type dashboardsCmd struct {
	generate *kingpin.CmdClause

	stdout, stderr io.Writer

	configFile    string
	configFileSet bool
	out           string
	prov          dashboards.Provisioning
	grafanaURL    string
	tokenFile     string
	httpConfig    string
}

func newDashboardsCmd(app *kingpin.Application) *dashboardsCmd {
	d := &dashboardsCmd{stdout: os.Stdout, stderr: os.Stderr}
	cmd := app.Command("dashboards", "Grafana dashboards of the fleet and of fleetwatch, generated from the rule pack's names and thresholds.")
	d.generate = cmd.Command("generate", "Write the dashboards (JSON) and Grafana provisioning files (a data source for fleetwatch's query API, a dashboard provider) to --out, and/or push the dashboards to the Grafana at --grafana-url. "+
		"See dashboards/README.md.")
	g := d.generate
	g.Flag("config.file", "fleetwatch configuration file: the rule pack's thresholds (rules.pack) color the panels. Without it, and without fleetwatch.yml in the working directory, the pack's default thresholds.").
		Default("fleetwatch.yml").IsSetByUser(&d.configFileSet).StringVar(&d.configFile)
	g.Flag("out", "Directory to write dashboards/*.json and provisioning/{datasources,dashboards}/fleetwatch.yml to.").PlaceHolder("DIR").StringVar(&d.out)
	g.Flag("datasource-url", "fleetwatch's query API as Grafana reaches it, for the provisioned data source "+dashboards.DatasourceUID+".").
		Default(dashboards.DefaultProvisioning.DatasourceURL).StringVar(&d.prov.DatasourceURL)
	g.Flag("metrics-datasource-url", "A Prometheus that scrapes fleetwatch's /metrics (job "+dashboards.DefaultJob+"), provisioned as data source "+dashboards.MetricsDatasourceUID+" for the incidents and fleetwatch dashboards. Without it, choose that Prometheus in their data source variable.").
		PlaceHolder("URL").StringVar(&d.prov.MetricsDatasourceURL)
	g.Flag("dashboards-path", "Where Grafana finds the dashboard files: the directory --out's dashboards/ is mounted at (the dashboard provider's options.path).").
		Default(dashboards.DefaultProvisioning.DashboardsPath).StringVar(&d.prov.DashboardsPath)
	g.Flag("folder", "Grafana folder of the dashboards, for the dashboard provider and --grafana-url.").
		Default(dashboards.DefaultProvisioning.Folder).StringVar(&d.prov.Folder)
	g.Flag("grafana-url", "Push the dashboards to this Grafana through its HTTP API (created or overwritten in --folder, by UID), reporting what changed per dashboard.").
		PlaceHolder("URL").StringVar(&d.grafanaURL)
	g.Flag("grafana-token-file", "File holding a Grafana service account token (Editor role) for --grafana-url. The token is never taken on the command line, where other users of the machine can read it.").
		PlaceHolder("FILE").StringVar(&d.tokenFile)
	g.Flag("grafana-http-config-file", "Prometheus HTTP client settings for --grafana-url (tls_config, authorization, basic_auth, proxy_url, ...), as promtool's --http.config.file takes them; it can hold the credentials instead of --grafana-token-file.").
		PlaceHolder("FILE").StringVar(&d.httpConfig)
	return d
}

func (d *dashboardsCmd) run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return d.runContext(ctx)
}

func (d *dashboardsCmd) runContext(ctx context.Context) error {
	if d.out == "" && d.grafanaURL == "" {
		return errors.New("nothing to do: give --out, --grafana-url, or both")
	}
	if d.grafanaURL == "" && (d.tokenFile != "" || d.httpConfig != "") {
		return errors.New("--grafana-token-file and --grafana-http-config-file need --grafana-url")
	}
	if d.grafanaURL != "" && d.tokenFile == "" && d.httpConfig == "" {
		return errors.New("--grafana-url needs credentials: --grafana-token-file, or --grafana-http-config-file")
	}
	t, err := d.thresholds()
	if err != nil {
		return err
	}
	ds, err := dashboards.Build(t)
	if err != nil {
		return err
	}
	if d.out != "" {
		files, err := dashboards.Files(ds, d.prov)
		if err != nil {
			return err
		}
		written, err := dashboards.WriteFiles(d.out, files)
		if err != nil {
			return err
		}
		for _, p := range written {
			fmt.Fprintf(d.stdout, "wrote %s\n", p)
		}
	}
	if d.grafanaURL == "" {
		return nil
	}
	c := &dashboards.Client{URL: d.grafanaURL}
	if d.tokenFile != "" {
		token, err := os.ReadFile(d.tokenFile)
		if err != nil {
			return fmt.Errorf("--grafana-token-file: %w", err)
		}
		if c.Token = strings.TrimSpace(string(token)); c.Token == "" {
			return fmt.Errorf("--grafana-token-file: %s is empty", d.tokenFile)
		}
	}
	if d.httpConfig != "" {
		hc, _, err := promconfig.LoadHTTPConfigFile(d.httpConfig)
		if err != nil {
			return fmt.Errorf("--grafana-http-config-file: %w", err)
		}
		if c.HTTP, err = promconfig.NewClientFromConfig(*hc, "grafana"); err != nil {
			return fmt.Errorf("--grafana-http-config-file: %w", err)
		}
		c.HTTP.Timeout = 30 * time.Second
	}
	results, err := c.Push(ctx, d.prov.Folder, ds)
	for _, r := range results {
		line := fmt.Sprintf("%s %s (%s)", r.Change, r.Title, r.UID)
		if len(r.Details) > 0 {
			line += ": " + strings.Join(r.Details, "; ")
		}
		if r.URL != "" {
			line += " " + strings.TrimSuffix(d.grafanaURL, "/") + r.URL
		}
		fmt.Fprintln(d.stdout, line)
	}
	return err
}

// thresholds are the rule pack's thresholds of --config.file, or the defaults.
func (d *dashboardsCmd) thresholds() (config.Thresholds, error) {
	if !d.configFileSet {
		if _, err := os.Stat(d.configFile); errors.Is(err, fs.ErrNotExist) {
			return config.DefaultThresholds, nil
		}
	}
	cfg, err := config.LoadFile(d.configFile)
	if err != nil {
		return config.Thresholds{}, err
	}
	if !cfg.Rules.Pack.Enabled {
		fmt.Fprintf(d.stderr, "fleetwatch: warning: %s: rules.pack.enabled is false: the fleet dashboards read the pack's recorded series, which stay empty unless your own rules record them\n", d.configFile)
	}
	return cfg.Rules.Pack.Thresholds, nil
}
