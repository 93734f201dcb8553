package amconfig

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/config"
	"github.com/prometheus/alertmanager/inhibit"
	"github.com/prometheus/alertmanager/pkg/labels"
	"github.com/prometheus/alertmanager/provider/mem"
	"github.com/prometheus/alertmanager/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// incident is the label set of one incident as fleetwatch sends it.
func incident(key, severity, scope, cluster, team string) model.LabelSet {
	ls := model.LabelSet{
		LabelAlertName:   AlertName,
		LabelIncidentKey: model.LabelValue(key),
		LabelSeverity:    model.LabelValue(severity),
		LabelScope:       model.LabelValue(scope),
	}
	if cluster != "" {
		ls[LabelCluster] = model.LabelValue(cluster)
	}
	if team != "" {
		ls[LabelTeam] = model.LabelValue(team)
	}
	return ls
}

// Sample incidents; teams.good.yml knows payments, checkout and search, not ml.
var (
	fleetCriticalPayments  = incident("inc-1", SeverityCritical, ScopeFleet, "", "payments")
	fleetCriticalNoTeam    = incident("inc-2", SeverityCritical, ScopeFleet, "", "")
	clusterWarningPayments = incident("inc-3", SeverityWarning, ScopeCluster, "eu-1", "payments")
	clusterCriticalUnknown = incident("inc-4", SeverityCritical, ScopeCluster, "us-1", "ml")
	clusterCriticalNoTeam  = incident("inc-5", SeverityCritical, ScopeCluster, "us-1", "")
	infoDrift              = incident("inc-6", SeverityInfo, ScopeCluster, "eu-2", "payments")
	fleetWarningSearch     = incident("inc-7", SeverityWarning, ScopeFleet, "", "search")
	notAnIncident          = model.LabelSet{LabelAlertName: "KubePodCrashLooping", LabelCluster: "eu-1", LabelTeam: "payments"}
)

type routeCase struct {
	name      string
	labels    model.LabelSet
	receivers []string
	// Timing and grouping of the last matching route, the one that pages.
	repeat  time.Duration
	groupBy []string
}

func routeCases(def string) []routeCase {
	return []routeCase{
		{"fleet critical, team payments", fleetCriticalPayments, []string{ReceiverAutomation, ReceiverFleetOncall, "team-payments"}, time.Hour, []string{LabelIncidentKey}},
		{"fleet critical, no team", fleetCriticalNoTeam, []string{ReceiverAutomation, ReceiverFleetOncall}, time.Hour, []string{LabelIncidentKey}},
		{"fleet warning, team search", fleetWarningSearch, []string{ReceiverAutomation, ReceiverFleetOncall, "team-search"}, 8 * time.Hour, []string{LabelIncidentKey}},
		{"cluster warning, team payments", clusterWarningPayments, []string{ReceiverAutomation, "team-payments"}, 8 * time.Hour, []string{LabelIncidentKey}},
		{"cluster critical, unknown team", clusterCriticalUnknown, []string{ReceiverAutomation, def}, time.Hour, []string{LabelIncidentKey}},
		{"cluster critical, no team", clusterCriticalNoTeam, []string{ReceiverAutomation, def}, time.Hour, []string{LabelIncidentKey}},
		{"info drift", infoDrift, []string{ReceiverAutomation, ReceiverInfo}, 24 * time.Hour, []string{LabelIncidentKey}},
		{"not an incident", notAnIncident, []string{def}, 4 * time.Hour, []string{LabelAlertName, LabelCluster}},
	}
}

// routed is where an alert ends in a routing tree, with what that route inherited.
type routed struct {
	receiver string
	groupBy  []string
	repeat   time.Duration
}

// match is Alertmanager's dispatch.NewRoute and Route.Match (dispatch/route.go, v0.30.0) for
// the fields the generated tree uses: the dispatch package cannot be imported without modules
// fleetwatch does not require. TestAmtool checks the same cases with the real code.
func match(r *config.Route, parent routed, lset model.LabelSet) []routed {
	opts := parent
	if r.Receiver != "" {
		opts.receiver = r.Receiver
	}
	if r.GroupBy != nil {
		opts.groupBy = nil
		for _, l := range r.GroupBy {
			opts.groupBy = append(opts.groupBy, string(l))
		}
	}
	if r.RepeatInterval != nil {
		opts.repeat = time.Duration(*r.RepeatInterval)
	}
	if !labels.Matchers(r.Matchers).Matches(lset) {
		return nil
	}
	var all []routed
	for _, c := range r.Routes {
		m := match(c, opts, lset)
		all = append(all, m...)
		if m != nil && !c.Continue {
			break
		}
	}
	if len(all) == 0 {
		all = append(all, opts)
	}
	return all
}

func generate(t *testing.T, s *Spec) *Result {
	t.Helper()
	res, err := Generate(s)
	require.NoError(t, err)
	// The file loads as Alertmanager loads it, not only the in-memory result.
	_, err = config.Load(string(res.YAML))
	require.NoError(t, err)
	return res
}

func goodSpec(t *testing.T) *Spec {
	t.Helper()
	s, err := LoadSpecFile("testdata/teams.good.yml")
	require.NoError(t, err)
	return s
}

func TestRouting(t *testing.T) {
	for _, def := range []string{ReceiverFleetOncall, "checkout"} {
		t.Run("default receiver "+def, func(t *testing.T) {
			s := goodSpec(t)
			require.NoError(t, s.SetDefaultReceiver(def))
			defReceiver, err := s.defaultReceiver(def)
			require.NoError(t, err)
			cfg := generate(t, s).Config
			for _, c := range routeCases(defReceiver) {
				t.Run(c.name, func(t *testing.T) {
					got := match(cfg.Route, routed{repeat: 4 * time.Hour}, c.labels)
					var receivers []string
					for _, r := range got {
						receivers = append(receivers, r.receiver)
					}
					require.Equal(t, c.receivers, receivers)
					last := got[len(got)-1]
					require.Equal(t, c.repeat, last.repeat)
					require.Equal(t, c.groupBy, last.groupBy)
					if got[0].receiver == ReceiverAutomation {
						require.Equal(t, time.Duration(s.Timing.Automation.RepeatInterval), got[0].repeat)
						require.Equal(t, []string{LabelIncidentKey}, got[0].groupBy)
					}
				})
			}
		})
	}
}

func TestGenerateDefaults(t *testing.T) {
	res := generate(t, nil)
	cfg := res.Config
	var names []string
	for _, r := range cfg.Receivers {
		names = append(names, r.Name)
	}
	require.Equal(t, []string{ReceiverFleetOncall, ReceiverInfo}, names)
	require.Len(t, cfg.InhibitRules, 2)
	require.Equal(t, []string{
		"receiver fleet-oncall has no notifier: fleet-scoped incidents and cluster-scoped ones no team of the teams file owns reach nobody; add fleet_oncall to the teams file",
	}, res.Warnings)
	require.False(t, res.SecretsInClear)

	// Without a webhook, the automation route is not there; the rest routes as with teams.
	for _, c := range routeCases(ReceiverFleetOncall) {
		got := match(cfg.Route, routed{}, c.labels)
		var receivers []string
		for _, r := range got {
			receivers = append(receivers, r.receiver)
		}
		want := []string{}
		for _, r := range c.receivers {
			if r != ReceiverAutomation && !strings.HasPrefix(r, "team-") {
				want = append(want, r)
			}
		}
		if len(want) == 0 {
			want = []string{ReceiverFleetOncall}
		}
		require.Equal(t, want, receivers, c.name)
	}

	s := DefaultSpec()
	s.Inhibit = false
	require.Empty(t, generate(t, s).Config.InhibitRules)
}

// TestInhibition runs the generated inhibition rules in Alertmanager's own inhibitor.
func TestInhibition(t *testing.T) {
	cfg := generate(t, goodSpec(t)).Config
	for _, c := range []struct {
		name   string
		source model.LabelSet
		target model.LabelSet
		muted  bool
	}{
		{"fleet incident mutes the team's cluster warnings", fleetCriticalPayments, clusterWarningPayments, true},
		{"fleet warning mutes the team's cluster warnings", incident("f", SeverityWarning, ScopeFleet, "", "payments"), clusterWarningPayments, true},
		{"... in every cluster, not only the affected ones", fleetCriticalPayments, incident("w", SeverityWarning, ScopeCluster, "ap-9", "payments"), true},
		{"fleet incident does not mute another team's warnings", fleetCriticalPayments, incident("w", SeverityWarning, ScopeCluster, "eu-1", "checkout"), false},
		{"fleet incident does not mute the team's cluster criticals", fleetCriticalPayments, incident("c", SeverityCritical, ScopeCluster, "eu-1", "payments"), false},
		{"fleet incident does not mute the team's info", fleetCriticalPayments, incident("i", SeverityInfo, ScopeCluster, "eu-1", "payments"), false},
		{"fleet incident without team mutes nothing", fleetCriticalNoTeam, incident("w", SeverityWarning, ScopeCluster, "eu-1", ""), false},
		{"fleet info mutes nothing", incident("f", SeverityInfo, ScopeFleet, "", "payments"), clusterWarningPayments, false},
		{"fleet incident does not mute fleet warnings", fleetCriticalPayments, fleetWarningSearch, false},
		{"cluster critical mutes warnings of its cluster and team", incident("c", SeverityCritical, ScopeCluster, "eu-1", "payments"), clusterWarningPayments, true},
		{"cluster critical without team mutes team-less warnings of its cluster", clusterCriticalNoTeam, incident("w", SeverityWarning, ScopeCluster, "us-1", ""), true},
		{"cluster critical does not mute other clusters", incident("c", SeverityCritical, ScopeCluster, "us-1", "payments"), clusterWarningPayments, false},
		{"cluster critical does not mute other teams", clusterCriticalNoTeam, incident("w", SeverityWarning, ScopeCluster, "us-1", "payments"), false},
		{"nothing mutes other alerts", fleetCriticalPayments, model.LabelSet{LabelAlertName: "Other", LabelSeverity: SeverityWarning, LabelScope: ScopeCluster, LabelTeam: "payments"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.muted, mutes(t, cfg.InhibitRules, c.source, c.target))
		})
	}
}

// mutes reports whether Alertmanager's inhibitor, given the rules and source as an active
// alert, mutes target.
func mutes(t *testing.T, rules []config.InhibitRule, source, target model.LabelSet) bool {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	marker := types.NewMarker(prometheus.NewRegistry())
	alerts, err := mem.NewAlerts(context.Background(), marker, time.Hour, nil, logger, nil)
	require.NoError(t, err)
	defer alerts.Close()
	now := time.Now()
	require.NoError(t, alerts.Put(context.Background(), &types.Alert{Alert: model.Alert{
		Labels: source, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour),
	}}))
	ih := inhibit.NewInhibitor(alerts, rules, marker, logger)
	done := make(chan struct{})
	go func() { ih.Run(); close(done) }()
	defer func() { ih.Stop(); <-done }()
	ih.WaitForLoading()
	return ih.Mutes(context.Background(), target)
}

func TestSecretsInClear(t *testing.T) {
	s, err := LoadSpec([]byte(`
global:
  slack_api_url: https://hooks.slack.example/services/T0/B0/XYZ
fleet_oncall:
  pagerduty_configs:
    - routing_key: 0123456789abcdef
teams:
  - name: payments
    slack_configs:
      - channel: '#payments'
`), "teams.yml")
	require.NoError(t, err)
	require.NoError(t, s.SetWebhookURL("http://oncall-bot.monitoring:8080/alertmanager?token=abc"))
	res := generate(t, s)
	require.True(t, res.SecretsInClear)
	require.ElementsMatch(t, []string{
		"global.slack_api_url: secret written in clear; use its *_file field to keep it out of the configuration",
		"receivers[fleet-oncall].pagerduty_configs[0].routing_key: secret written in clear; use its *_file field to keep it out of the configuration",
		"receivers[fleetwatch-automation].webhook_configs[0].url: secret written in clear; use its *_file field to keep it out of the configuration",
	}, res.Warnings)
	require.NotContains(t, string(res.YAML), redacted)
	require.Contains(t, string(res.YAML), "keep it readable by Alertmanager only")

	// What Alertmanager reads back is the secret, not its redaction.
	cfg := res.Config
	require.Equal(t, "https://hooks.slack.example/services/T0/B0/XYZ", cfg.Global.SlackAPIURL.String())
	for _, r := range cfg.Receivers {
		switch r.Name {
		case ReceiverFleetOncall:
			require.Equal(t, "0123456789abcdef", string(r.PagerdutyConfigs[0].RoutingKey))
		case "team-payments":
			require.Equal(t, "https://hooks.slack.example/services/T0/B0/XYZ", r.SlackConfigs[0].APIURL.String())
		case ReceiverAutomation:
			require.Equal(t, "http://oncall-bot.monitoring:8080/alertmanager?token=abc", r.WebhookConfigs[0].URL.String())
			require.True(t, r.WebhookConfigs[0].SendResolved())
		}
	}
}

func TestRelativeFiles(t *testing.T) {
	s, err := LoadSpec([]byte(`
global:
  smtp_smarthost: smtp.example.org:587
  smtp_from: alertmanager@example.org
  smtp_auth_password_file: secrets/smtp
teams:
  - name: payments
    webhook_configs:
      - url_file: secrets/payments-url
        http_config:
          authorization: {credentials_file: secrets/payments-token}
`), "teams.yml")
	require.NoError(t, err)
	// http_config's files are resolved against alertmanager.yml's directory: no warning.
	require.Equal(t, []string{
		`global.smtp_auth_password_file: relative path "secrets/smtp" is read from Alertmanager's working directory, not from the directory of alertmanager.yml`,
		`receivers[team-payments].webhook_configs[0].url_file: relative path "secrets/payments-url" is read from Alertmanager's working directory, not from the directory of alertmanager.yml`,
	}, generate(t, s).Warnings[1:])
}

func TestFilesKeepSecretsOut(t *testing.T) {
	res := generate(t, goodSpec(t))
	require.False(t, res.SecretsInClear)
	require.Empty(t, res.Warnings)
	require.NotContains(t, string(res.YAML), "holds secrets")
	for _, r := range res.Config.Receivers {
		if r.Name == ReceiverAutomation {
			require.Equal(t, "/etc/alertmanager/secrets/oncall-automation-url", r.WebhookConfigs[0].URLFile)
			require.True(t, r.WebhookConfigs[0].SendResolved())
			require.Equal(t, "/etc/alertmanager/secrets/oncall-automation-token", r.WebhookConfigs[0].HTTPConfig.Authorization.CredentialsFile)
		}
	}
}

// TestAmtool checks the generated files with the real amtool: check-config, and the routing
// of the sample incidents with `amtool config routes test`, which runs Alertmanager's dispatch
// code.
func TestAmtool(t *testing.T) {
	amtool := testenv.Peer(t, "amtool")
	dir := t.TempDir()
	withWebhook := DefaultSpec()
	require.NoError(t, withWebhook.SetWebhookURL("http://oncall-bot:8080/hook"))
	noInhibit := goodSpec(t)
	noInhibit.Inhibit = false
	toTeam := goodSpec(t)
	require.NoError(t, toTeam.SetDefaultReceiver("checkout"))
	for name, s := range map[string]*Spec{
		"defaults": DefaultSpec(), "webhook only": withWebhook, "teams": goodSpec(t),
		"no inhibition": noInhibit, "default receiver checkout": toTeam,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yml")
			require.NoError(t, os.WriteFile(path, generate(t, s).YAML, 0o600))
			out, err := runCmd(amtool, "check-config", path)
			require.NoError(t, err, out)
			require.Contains(t, out, "SUCCESS")
			if s.Webhook == nil || len(s.Teams) == 0 {
				return
			}
			def, err := s.defaultReceiver(s.DefaultReceiver)
			require.NoError(t, err)
			for _, c := range routeCases(def) {
				args := []string{"config", "routes", "test", "--config.file=" + path,
					"--verify.receivers=" + strings.Join(c.receivers, ",")}
				for k, v := range c.labels {
					args = append(args, fmt.Sprintf("%s=%s", k, v))
				}
				out, err := runCmd(amtool, args...)
				require.NoError(t, err, "%s: %s", c.name, out)
			}
		})
	}
}

func runCmd(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}
