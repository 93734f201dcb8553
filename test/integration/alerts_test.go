package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// amAlert is an alert as Alertmanager's API v2 lists it.
type amAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	EndsAt      time.Time         `json:"endsAt"`
}

// fwAlert is an alert as /api/v1/alerts lists it.
type fwAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
}

// TestUserRuleResolvesLikePrometheus: a user rule whose result vanishes while its cluster keeps
// sending (here through `unless`, which no `bool` comparison can tell from missing data)
// resolves at the next evaluation with its own annotations, at /api/v1/alerts and at a real
// Alertmanager; the same rule on a cluster that went silent is held, marked stale. The
// Alertmanager requires basic auth (its own --web.config.file): rules and incidents reach it
// through Prometheus's HTTP client settings in fleetwatch.yml.
func TestUserRuleResolvesLikePrometheus(t *testing.T) {
	testenv.SkipIfShort(t)
	dir := t.TempDir()
	amAddr := testenv.FreePort(t)
	amCfg := testenv.WriteFile(t, dir, "alertmanager.yml", "route: {receiver: blackhole}\nreceivers: [{name: blackhole}]\n")
	hash, err := bcrypt.GenerateFromPassword([]byte("am-secret"), bcrypt.MinCost)
	require.NoError(t, err)
	amWeb := testenv.WriteFile(t, dir, "am-web.yml", "basic_auth_users:\n  fleetwatch: "+string(hash)+"\n")
	testenv.WriteFile(t, dir, "am.password", "am-secret")
	am := testenv.Start(t, "alertmanager", testenv.Peer(t, "alertmanager"), "--config.file="+amCfg, "--web.config.file="+amWeb,
		"--storage.path="+filepath.Join(dir, "am-data"), "--web.listen-address="+amAddr, "--cluster.listen-address=")
	amURL := "http://" + amAddr
	amDo := func(path string) (*http.Response, error) {
		req, err := http.NewRequest(http.MethodGet, amURL+path, nil)
		require.NoError(t, err)
		req.SetBasicAuth("fleetwatch", "am-secret")
		return http.DefaultClient.Do(req)
	}
	amGet := func(path string) *http.Response {
		resp, err := amDo(path)
		require.NoError(t, err)
		return resp
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		resp, err := amDo("/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("alertmanager ready: %d", resp.StatusCode)
		}
		return nil
	})
	_ = am

	testenv.WriteFile(t, dir, "a.token", "token-a")
	testenv.WriteFile(t, dir, "b.token", "token-b")
	testenv.WriteFile(t, dir, "user.rules.yml", `groups:
- name: user
  interval: 1s
  rules:
  - alert: QueueTooLong
    expr: queue_length > 10 unless on(cluster) queue_drained
    labels: {severity: warning}
    annotations: {summary: "queue {{ $labels.cluster }} is {{ $value }} long"}
`)
	// silent_after 20s stays above the 15s at which fleetwatch rewrites each cluster's
	// last-ingest series; lookback 30s lets a silent cluster's series vanish within the test.
	_, fw := startFleetwatch(t, dir, fmt.Sprintf(`clusters:
  - name: a
    remote_write: {bearer_token_file: a.token}
  - name: b
    remote_write: {bearer_token_file: b.token}
query: {lookback_delta: 30s}
rules:
  evaluation_interval: 1s
  rule_files: [user.rules.yml]
  alertmanagers:
    - url: %[1]s
      basic_auth: {username: fleetwatch, password_file: am.password}
  pack: {enabled: false, silent_after: 20s}
correlate:
  evaluation_interval: 1s
  alertmanagers:
    - url: %[1]s
      basic_auth: {username: fleetwatch, password_file: am.password}
`, amURL))

	// Both clusters send every 500ms; a's queue and b's can be changed, b can go silent.
	var queueA, queueB atomic.Int64
	var silentB, drainedA atomic.Bool
	queueA.Store(20)
	queueB.Store(20)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	t.Cleanup(func() { cancel(); <-stopped })
	var writeErrs atomic.Int64
	send := func(token string, ts int64, name string, v float64) {
		// Not writeV1: a failure here must not call t.FailNow off the test's goroutine.
		if code, err := postV1(fw, token, ts, name, v); err != nil || code != http.StatusNoContent {
			writeErrs.Add(1)
		}
	}
	go func() {
		defer close(stopped)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			now := time.Now().UnixMilli()
			send("token-a", now, "queue_length", float64(queueA.Load()))
			if drainedA.Load() {
				send("token-a", now, "queue_drained", 1)
			}
			if !silentB.Load() {
				send("token-b", now, "queue_length", float64(queueB.Load()))
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	fwAlerts := func() map[string]fwAlert {
		code, body := rawGet(t, fw, "/api/v1/alerts", nil)
		require.Equal(t, http.StatusOK, code, body)
		var r struct {
			Alerts []fwAlert `json:"alerts"`
		}
		require.NoError(t, json.Unmarshal(decodeAPI(t, body).Data, &r))
		out := map[string]fwAlert{}
		for _, a := range r.Alerts {
			out[a.Labels["cluster"]] = a
		}
		return out
	}
	amAll := func() []amAlert {
		resp := amGet("/api/v2/alerts")
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var as []amAlert
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&as))
		return as
	}
	amAlerts := func() map[string]amAlert {
		out := map[string]amAlert{}
		for _, a := range amAll() {
			if a.Labels["alertname"] == "QueueTooLong" {
				out[a.Labels["cluster"]] = a
			}
		}
		return out
	}
	testenv.Eventually(t, 60*time.Second, func() error {
		got := amAlerts()
		if len(got) != 2 {
			return fmt.Errorf("Alertmanager has %v", got)
		}
		return nil
	})
	for c, a := range amAlerts() {
		require.Equal(t, "queue "+c+" is 20 long", a.Annotations["summary"])
		require.NotContains(t, a.Annotations, "fleetwatch_data")
	}
	// The correlation engine's incidents reach the same Alertmanager with the same settings.
	testenv.Eventually(t, 30*time.Second, func() error {
		for _, a := range amAll() {
			if a.Labels["alertname"] == correlate.IncidentAlertName {
				return nil
			}
		}
		return fmt.Errorf("no incident at Alertmanager yet")
	})

	// a's result vanishes while a keeps sending: resolved at once, with the rule's own
	// annotations, at fleetwatch and at Alertmanager, far within silent_after.
	drainedA.Store(true)
	cleared := time.Now()
	testenv.Eventually(t, 15*time.Second, func() error {
		if a, ok := fwAlerts()["a"]; ok {
			return fmt.Errorf("a still listed: %+v", a)
		}
		if a, ok := amAlerts()["a"]; ok {
			return fmt.Errorf("Alertmanager still has a: %+v", a)
		}
		return nil
	})
	t.Logf("a resolved at fleetwatch and at Alertmanager %s after its condition cleared", time.Since(cleared).Round(100*time.Millisecond))
	require.Less(t, time.Since(cleared), 20*time.Second, "resolved only after silent_after: it was held")
	b, ok := fwAlerts()["b"]
	require.True(t, ok)
	require.Equal(t, "firing", b.State)
	require.NotContains(t, b.Annotations, "fleetwatch_data")

	// b goes silent: its series vanish from the rule's result once out of the lookback, and by
	// then its data has stopped for longer than silent_after, so the alert is held, stale.
	silentB.Store(true)
	testenv.Eventually(t, 90*time.Second, func() error {
		b, ok := fwAlerts()["b"]
		if !ok {
			return fmt.Errorf("b resolved: its alert should be held")
		}
		if b.Annotations["fleetwatch_data"] != "stale" {
			return fmt.Errorf("b not held yet: %+v", b)
		}
		return nil
	})
	// Alertmanager learns the new annotations with the next resend (Prometheus's resend delay,
	// one minute), as it would from Prometheus.
	testenv.Eventually(t, 2*time.Minute, func() error {
		b, ok := amAlerts()["b"]
		if !ok {
			return fmt.Errorf("Alertmanager lost b")
		}
		if b.Annotations["fleetwatch_data"] != "stale" {
			return fmt.Errorf("Alertmanager has b without the stale mark yet: %v", b.Annotations)
		}
		return nil
	})
	require.Zero(t, writeErrs.Load(), "remote-writes refused")
}
