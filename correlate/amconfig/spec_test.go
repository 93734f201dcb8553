package amconfig

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestLoadSpecGood(t *testing.T) {
	s, err := LoadSpecFile("testdata/teams.good.yml")
	require.NoError(t, err)

	require.Equal(t, "smtp.example.org:587", s.Global.Config.SMTPSmarthost.String())
	require.Len(t, s.FleetOncall.Receiver.PagerdutyConfigs, 1)
	require.Equal(t, "/etc/alertmanager/secrets/fleet-oncall-pagerduty", s.FleetOncall.Receiver.PagerdutyConfigs[0].RoutingKeyFile)

	var names, receivers []string
	for _, tm := range s.Teams {
		names = append(names, tm.Name)
		receivers = append(receivers, tm.Receiver.Name)
	}
	require.Equal(t, []string{"payments", "checkout", "search"}, names)
	require.Equal(t, []string{"team-payments", "team-checkout", "team-search"}, receivers)
	require.Equal(t, "fleet-oncall", s.DefaultReceiver)

	require.Equal(t, "/etc/alertmanager/secrets/oncall-automation-url", s.Webhook.Config.URLFile)
	require.True(t, s.Webhook.Config.SendResolved())
	require.Equal(t, 10*time.Second, s.Webhook.Config.Timeout)

	// Given values replace the defaults; omitted ones keep them.
	require.Equal(t, DefaultTiming.Critical, s.Timing.Critical)
	require.Equal(t, Intervals{
		GroupWait:      DefaultTiming.Warning.GroupWait,
		GroupInterval:  DefaultTiming.Warning.GroupInterval,
		RepeatInterval: model.Duration(8 * time.Hour),
	}, s.Timing.Warning)
	require.Equal(t, DefaultTiming.Info, s.Timing.Info)
	require.Equal(t, DefaultTiming.Automation, s.Timing.Automation)
	require.True(t, s.Inhibit)
}

func TestLoadSpecDefaults(t *testing.T) {
	for name, data := range map[string]string{
		"empty file":    "",
		"empty timing":  "timing:\n",
		"only comments": "# nothing yet\n",
	} {
		t.Run(name, func(t *testing.T) {
			s, err := LoadSpec([]byte(data), "teams.yml")
			require.NoError(t, err)
			require.Equal(t, DefaultTiming, s.Timing)
			require.True(t, s.Inhibit)
			require.Nil(t, s.Webhook)
			require.Empty(t, s.Teams)
		})
	}
	s, err := LoadSpec([]byte("inhibit: false\n"), "teams.yml")
	require.NoError(t, err)
	require.False(t, s.Inhibit)
}

// TestBadSpecs checks the exact error of each testdata/*.bad.yml: the file, the line of the
// key or team at fault, and what is wrong.
func TestBadSpecs(t *testing.T) {
	for file, want := range map[string]string{
		"unknown-field.bad.yml":      `testdata/unknown-field.bad.yml:3: unknown field "webhok_configs"`,
		"missing-url.bad.yml":        `testdata/missing-url.bad.yml:5: teams: team "checkout": one of url or url_file must be configured`,
		"slack-no-url.bad.yml":       `testdata/slack-no-url.bad.yml:1: fleet_oncall: no Slack API URL nor App token set either inline or in a file`,
		"email-no-smarthost.bad.yml": `testdata/email-no-smarthost.bad.yml:2: teams: team "checkout": no global SMTP smarthost set`,
		"duplicate-team.bad.yml":     `testdata/duplicate-team.bad.yml:4: teams: team "payments": name: defined more than once`,
		"team-without-name.bad.yml":  `testdata/team-without-name.bad.yml:1: teams: name: must be set to the value of the incidents' team label`,
		"default-receiver.bad.yml":   `testdata/default-receiver.bad.yml:3: default_receiver: "platform" is neither fleet-oncall nor a team of the teams file (one of: fleet-oncall, payments)`,
		"send-resolved.bad.yml":      `testdata/send-resolved.bad.yml:1: webhook: send_resolved: must be true; the automation must see incidents resolve`,
		"repeat-interval.bad.yml":    `testdata/repeat-interval.bad.yml:1: timing: warning.repeat_interval: 5m is shorter than group_interval 10m`,
		"duration.bad.yml":           `testdata/duration.bad.yml:1: timing: unknown unit "hour" in duration "1hour"`,
		"redacted.bad.yml":           `testdata/redacted.bad.yml:1: fleet_oncall: receivers[fleet-oncall].pagerduty_configs[0].routing_key: "<secret>" is a redacted value, not the secret; put the secret in a file and use the *_file field`,
		"fleet-oncall-name.bad.yml":  `testdata/fleet-oncall-name.bad.yml:1: fleet_oncall: name: must not be set; the receiver is fleet-oncall`,
		"syntax.bad.yml":             `testdata/syntax.bad.yml:2: did not find expected '-' indicator`,
	} {
		t.Run(file, func(t *testing.T) {
			_, err := LoadSpecFile(filepath.Join("testdata", file))
			require.EqualError(t, err, want)
		})
	}
	// Every bad file is in the table.
	files, err := filepath.Glob("testdata/*.bad.yml")
	require.NoError(t, err)
	require.Len(t, files, 13)
}

func TestSpecSetters(t *testing.T) {
	s, err := LoadSpec([]byte("teams:\n  - name: payments\n"), "teams.yml")
	require.NoError(t, err)

	require.NoError(t, s.SetDefaultReceiver("payments"))
	def, err := s.defaultReceiver(s.DefaultReceiver)
	require.NoError(t, err)
	require.Equal(t, "team-payments", def)
	require.NoError(t, s.SetDefaultReceiver("team-payments"))
	require.NoError(t, s.SetDefaultReceiver("fleet-oncall"))
	require.EqualError(t, s.SetDefaultReceiver("search"), `"search" is neither fleet-oncall nor a team of the teams file (one of: fleet-oncall, payments)`)

	require.EqualError(t, s.SetWebhookURL("ftp://example.org/hook"), `"ftp://example.org/hook" is not an http(s) URL with a host`)
	require.EqualError(t, s.SetWebhookURL("http:///hook"), `"http:///hook" is not an http(s) URL with a host`)
	require.EqualError(t, s.SetWebhookURLFile(" "), "must not be empty")
	require.EqualError(t, s.SetWebhookURLFile("secrets/hook-url"), `"secrets/hook-url" must be an absolute path: Alertmanager would read it relative to its working directory, not to alertmanager.yml`)

	// The last setter wins, in the settings and as written.
	require.NoError(t, s.SetWebhookURL("http://oncall-bot:8080/hook"))
	require.NoError(t, s.SetWebhookURLFile("/etc/alertmanager/secrets/hook-url"))
	require.Nil(t, s.Webhook.Config.URL)
	require.Equal(t, "/etc/alertmanager/secrets/hook-url", s.Webhook.Config.URLFile)
	require.Nil(t, lookup(s.Webhook.raw, "url"))
	require.Equal(t, "/etc/alertmanager/secrets/hook-url", lookup(s.Webhook.raw, "url_file"))
	require.NoError(t, s.SetWebhookURL("http://oncall-bot:8080/hook"))
	require.Equal(t, "http://oncall-bot:8080/hook", s.Webhook.Config.URL.String())
	require.Nil(t, lookup(s.Webhook.raw, "url_file"))
	require.NoError(t, s.Validate())
}

// FuzzLoadSpec checks that a spec LoadSpec accepts always generates a configuration that
// Alertmanager loads, and that LoadSpec never panics.
func FuzzLoadSpec(f *testing.F) {
	good, err := os.ReadFile("testdata/teams.good.yml")
	require.NoError(f, err)
	f.Add(good)
	files, err := filepath.Glob("testdata/*.bad.yml")
	require.NoError(f, err)
	for _, p := range files {
		b, err := os.ReadFile(p)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte("teams:\n  - name: \"we\\\"ird\\nteam\"\n    webhook_configs: [{url: 'http://x/'}]\ndefault_receiver: \"we\\\"ird\\nteam\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := LoadSpec(data, "fuzz.yml")
		if err != nil {
			return
		}
		if _, err := Generate(s); err != nil {
			t.Fatalf("spec loads but does not generate: %v\n%s", err, data)
		}
	})
}
