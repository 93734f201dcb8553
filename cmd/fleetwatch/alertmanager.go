package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/alecthomas/kingpin/v2"

	"github.com/fleetwatch/fleetwatch/correlate/amconfig"
)

// alertmanagerConfigCmd is `fleetwatch alertmanager config`: it prints the Alertmanager
// configuration that routes fleetwatch's incidents.
type alertmanagerConfigCmd struct {
	cmd             *kingpin.CmdClause
	output          string
	teamsFile       string
	webhookURL      string
	webhookURLFile  string
	defaultReceiver string
	inhibit         bool
	inhibitSet      bool
}

func newAlertmanagerConfigCmd(app *kingpin.Application) *alertmanagerConfigCmd {
	am := app.Command("alertmanager", "Alertmanager integration for fleetwatch's incidents.")
	c := &alertmanagerConfigCmd{cmd: am.Command("config", "Print an Alertmanager configuration (alertmanager.yml) that routes fleetwatch's incidents by severity, scope and team, with inhibition rules and an on-call automation webhook. It is checked with Alertmanager's own config loader before it is written.")}
	c.cmd.Flag("output", "Write the configuration to this file instead of standard output.").Short('o').PlaceHolder("FILE").StringVar(&c.output)
	c.cmd.Flag("teams-file", "YAML file with the receivers: fleet_oncall, teams (name = the incidents' team label, plus Alertmanager receiver settings), and optionally global, webhook, default_receiver, timing, inhibit (see correlate/amconfig/README.md).").PlaceHolder("FILE").StringVar(&c.teamsFile)
	c.cmd.Flag("webhook-url", "URL of the on-call automation webhook, sent every incident, firing and resolved. Written in clear; use --webhook-url-file if the URL carries a token.").PlaceHolder("URL").StringVar(&c.webhookURL)
	c.cmd.Flag("webhook-url-file", "Absolute path of the file from which Alertmanager reads the on-call automation webhook's URL; keeps a token in the URL out of the configuration.").PlaceHolder("PATH").StringVar(&c.webhookURLFile)
	c.cmd.Flag("default-receiver", "Receiver of cluster-scoped incidents no team of the teams file owns: fleet-oncall (the default) or a team's name.").PlaceHolder("NAME").StringVar(&c.defaultReceiver)
	c.cmd.Flag("inhibit", "Add the inhibition rules: a fleet incident of a team mutes the team's cluster-scoped warnings, a cluster-scoped critical incident mutes warnings of the same cluster and team. Inhibited incidents do not reach the automation webhook either.").Default("true").IsSetByUser(&c.inhibitSet).BoolVar(&c.inhibit)
	return c
}

func (c *alertmanagerConfigCmd) run() error { return c.write(os.Stdout, os.Stderr) }

// write generates the configuration and writes it to stdout or --output, and its warnings to
// stderr.
func (c *alertmanagerConfigCmd) write(stdout, stderr io.Writer) error {
	spec, err := c.spec()
	if err != nil {
		return err
	}
	res, err := amconfig.Generate(spec)
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(stderr, "fleetwatch: warning: %s\n", w)
	}
	if c.output == "" {
		_, err := stdout.Write(res.YAML)
		return err
	}
	perm := os.FileMode(0o644)
	if res.SecretsInClear {
		perm = 0o600
	}
	if err := writeConfigAtomic(c.output, res.YAML, perm); err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	return nil
}

// spec is the teams file, or the default spec, with the flags applied on top.
func (c *alertmanagerConfigCmd) spec() (*amconfig.Spec, error) {
	spec := amconfig.DefaultSpec()
	if c.teamsFile != "" {
		s, err := amconfig.LoadSpecFile(c.teamsFile)
		if err != nil {
			return nil, fmt.Errorf("--teams-file: %w", err)
		}
		spec = s
	}
	if c.webhookURL != "" && c.webhookURLFile != "" {
		return nil, errors.New("--webhook-url and --webhook-url-file are mutually exclusive")
	}
	if c.webhookURL != "" {
		if err := spec.SetWebhookURL(c.webhookURL); err != nil {
			return nil, fmt.Errorf("--webhook-url: %w", err)
		}
	}
	if c.webhookURLFile != "" {
		if err := spec.SetWebhookURLFile(c.webhookURLFile); err != nil {
			return nil, fmt.Errorf("--webhook-url-file: %w", err)
		}
	}
	if c.defaultReceiver != "" {
		if err := spec.SetDefaultReceiver(c.defaultReceiver); err != nil {
			return nil, fmt.Errorf("--default-receiver: %w", err)
		}
	}
	if c.inhibitSet {
		spec.Inhibit = c.inhibit
	}
	return spec, nil
}

// writeConfigAtomic writes data to a temporary file next to path and renames it, so Alertmanager
// reloading meanwhile never reads half a configuration.
func writeConfigAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename, there is nothing left to remove
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
