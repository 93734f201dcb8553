package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alecthomas/kingpin/v2"
	amconfig "github.com/prometheus/alertmanager/config"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// runAlertmanagerConfig parses args as the command line of `fleetwatch alertmanager config`
// and runs it, returning what it printed.
func runAlertmanagerConfig(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	app := kingpin.New("fleetwatch", "")
	c := newAlertmanagerConfigCmd(app)
	cmd, err := app.Parse(append([]string{"alertmanager", "config"}, args...))
	require.NoError(t, err)
	require.Equal(t, "alertmanager config", cmd)
	require.Equal(t, c.cmd.FullCommand(), cmd)
	var out, errOut bytes.Buffer
	err = c.write(&out, &errOut)
	return out.String(), errOut.String(), err
}

const amTeamsFile = `fleet_oncall:
  pagerduty_configs:
    - routing_key_file: /etc/alertmanager/secrets/fleet-pd
teams:
  - name: payments
    webhook_configs:
      - url_file: /etc/alertmanager/secrets/payments-url
`

func TestAlertmanagerConfigCmd(t *testing.T) {
	dir := t.TempDir()
	teams := testenv.WriteFile(t, dir, "teams.yml", amTeamsFile)

	t.Run("no flags", func(t *testing.T) {
		out, errOut, err := runAlertmanagerConfig(t)
		require.NoError(t, err)
		cfg, err := amconfig.Load(out)
		require.NoError(t, err)
		require.Equal(t, "fleet-oncall", cfg.Route.Receiver)
		require.Len(t, cfg.InhibitRules, 2)
		require.Equal(t, "fleetwatch: warning: receiver fleet-oncall has no notifier: fleet-scoped incidents and cluster-scoped ones no team of the teams file owns reach nobody; add fleet_oncall to the teams file\n", errOut)
	})

	t.Run("teams file, webhook file, default receiver, no inhibition, output file", func(t *testing.T) {
		path := filepath.Join(dir, "alertmanager.yml")
		out, errOut, err := runAlertmanagerConfig(t, "--teams-file="+teams, "--webhook-url-file=/etc/alertmanager/secrets/automation-url",
			"--default-receiver=payments", "--no-inhibit", "-o", path)
		require.NoError(t, err)
		require.Empty(t, out)
		require.Empty(t, errOut)
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
		cfg, err := amconfig.LoadFile(path)
		require.NoError(t, err)
		require.Empty(t, cfg.InhibitRules)
		// Cluster-scoped incidents no team owns go to the default receiver, on the route of
		// all incidents.
		require.Equal(t, "team-payments", cfg.Route.Routes[1].Receiver)
		var names []string
		for _, r := range cfg.Receivers {
			names = append(names, r.Name)
		}
		require.Equal(t, []string{"fleet-oncall", "team-payments", "fleetwatch-automation", "fleetwatch-info"}, names)
		require.Equal(t, "/etc/alertmanager/secrets/automation-url", cfg.Receivers[2].WebhookConfigs[0].URLFile)
		// Nothing is left behind but the file.
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.Len(t, entries, 2)
	})

	t.Run("webhook URL in clear", func(t *testing.T) {
		path := filepath.Join(dir, "clear.yml")
		_, errOut, err := runAlertmanagerConfig(t, "--teams-file="+teams, "--webhook-url=http://oncall-bot.monitoring:8080/hook", "-o", path)
		require.NoError(t, err)
		require.Equal(t, "fleetwatch: warning: receivers[fleetwatch-automation].webhook_configs[0].url: secret written in clear; use its *_file field to keep it out of the configuration\n", errOut)
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		cfg, err := amconfig.LoadFile(path)
		require.NoError(t, err)
		require.Equal(t, "http://oncall-bot.monitoring:8080/hook", cfg.Receivers[2].WebhookConfigs[0].URL.String())
	})

	bad := testenv.WriteFile(t, dir, "bad.yml", "teams:\n  - name: payments\n  - name: checkout\n    slack_configs:\n      - channel: '#checkout'\n")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"webhook URL", []string{"--webhook-url=ftp://example.org/hook"}, `--webhook-url: "ftp://example.org/hook" is not an http(s) URL with a host`},
		{"both webhook flags", []string{"--webhook-url=http://bot/hook", "--webhook-url-file=/hook-url"}, `--webhook-url and --webhook-url-file are mutually exclusive`},
		{"relative webhook file", []string{"--webhook-url-file=hook-url"}, `--webhook-url-file: "hook-url" must be an absolute path: Alertmanager would read it relative to its working directory, not to alertmanager.yml`},
		{"default receiver", []string{"--teams-file=" + teams, "--default-receiver=search"}, `--default-receiver: "search" is neither fleet-oncall nor a team of the teams file (one of: fleet-oncall, payments)`},
		{"missing teams file", []string{"--teams-file=" + filepath.Join(dir, "nope.yml")}, "--teams-file: open " + filepath.Join(dir, "nope.yml") + ": no such file or directory"},
		{"bad teams file", []string{"--teams-file=" + bad}, "--teams-file: " + bad + `:3: teams: team "checkout": no Slack API URL nor App token set either inline or in a file`},
		{"output", []string{"-o", filepath.Join(dir, "nope", "alertmanager.yml")}, "--output: open " + filepath.Join(dir, "nope") + "/.alertmanager.yml."},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, _, err := runAlertmanagerConfig(t, c.args...)
			require.Error(t, err)
			require.Empty(t, out)
			if strings.HasSuffix(c.want, ".") {
				require.True(t, strings.HasPrefix(err.Error(), c.want), err.Error())
				return
			}
			require.EqualError(t, err, c.want)
		})
	}
}

// TestAlertmanagerConfigBinary runs the built fleetwatch and checks its output with the real
// amtool.
func TestAlertmanagerConfigBinary(t *testing.T) {
	testenv.SkipIfShort(t)
	amtool := testenv.Peer(t, "amtool")
	fw := testenv.Fleetwatch(t)
	dir := t.TempDir()
	teams := testenv.WriteFile(t, dir, "teams.yml", amTeamsFile)
	path := filepath.Join(dir, "alertmanager.yml")
	out, err := exec.Command(fw, "alertmanager", "config", "--teams-file="+teams,
		"--webhook-url-file=/etc/alertmanager/secrets/automation-url", "-o", path).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Empty(t, string(out))
	out, err = exec.Command(amtool, "check-config", path).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "SUCCESS")
	out, err = exec.Command(amtool, "config", "routes", "test", "--config.file="+path,
		"--verify.receivers=fleetwatch-automation,team-payments",
		"alertname=FleetwatchIncident", "incident_key=cluster/eu-1", "severity=critical", "scope=cluster", "cluster=eu-1", "team=payments").CombinedOutput()
	require.NoError(t, err, string(out))

	// A bad flag fails with status 1 and names the flag.
	out, err = exec.Command(fw, "alertmanager", "config", "--default-receiver=nope").CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 1, ee.ExitCode())
	require.Equal(t, `fleetwatch: --default-receiver: "nope" is neither fleet-oncall nor a team of the teams file (one of: fleet-oncall)`+"\n", string(out))
}
