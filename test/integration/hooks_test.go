package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/hooks"
	"github.com/fleetwatch/fleetwatch/hooks/hookstest"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestHooksSurviveKill9: incidents open while the webhook receiver is down; fleetwatch is killed
// with SIGKILL before it could deliver any of them, restarted, and once the receiver is back it
// gets an incident.opened for every incident, signed, each idempotency key for one event.
func TestHooksSurviveKill9(t *testing.T) {
	testenv.SkipIfShort(t)
	dir := t.TempDir()
	testenv.WriteFile(t, dir, "a.token", "token-a")
	testenv.WriteFile(t, dir, "hook.secret", "hook-secret-0123456789")
	sink := &hookstest.Sink{Secret: "hook-secret-0123456789"}
	sink.SetDown(true)
	receiver := httptest.NewServer(sink)
	defer receiver.Close()
	cfg := "clusters:\n  - name: a\n    remote_write: {bearer_token_file: a.token}\n" +
		"rules: {pack: {enabled: false}}\n" +
		"correlate: {evaluation_interval: 1s}\n" +
		"access: {anonymous_roles: [read]}\n" +
		"hooks:\n  receivers:\n    - {name: pager, url: " + receiver.URL + ", secret_files: [hook.secret], min_backoff: 100ms, max_backoff: 1s}\n"
	p, fw := startFleetwatch(t, dir, cfg)

	// Five alerts that nothing correlates: five incidents.
	const n = 5
	var alerts []map[string]any
	for i := range n {
		alerts = append(alerts, map[string]any{
			"labels":   map[string]string{"alertname": fmt.Sprintf("Hook%d", i), "severity": "critical"},
			"startsAt": time.Now().Add(-time.Minute).Format(time.RFC3339),
		})
	}
	body, err := json.Marshal(alerts)
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, fw+"/api/v2/alerts", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer token-a")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	// Every incident is journaled and waits for the receiver (GET /api/v1/hooks says so).
	var ids []string
	testenv.Eventually(t, time.Minute, func() error {
		var incs []struct {
			ID string `json:"id"`
		}
		getData(t, fw+"/api/v1/incidents?state=active", &incs)
		var st []hooks.ReceiverStatus
		getData(t, fw+"/api/v1/hooks", &st)
		if len(incs) != n || len(st) != 1 || st[0].Pending < n || st[0].Failed == 0 {
			return fmt.Errorf("%d incidents, receivers %+v", len(incs), st)
		}
		ids = ids[:0]
		for _, i := range incs {
			ids = append(ids, i.ID)
		}
		return nil
	})
	require.NoError(t, p.Signal(syscall.SIGKILL))
	p.Kill()
	require.Empty(t, sink.Events(), "nothing was delivered before the kill")
	sink.SetDown(false)

	_, fw = startFleetwatch(t, dir, cfg)
	testenv.Eventually(t, time.Minute, func() error {
		for _, id := range ids {
			if _, ok := sink.Find("incident.opened", "", id); !ok {
				return fmt.Errorf("no incident.opened for %s after the restart", id)
			}
		}
		return nil
	})
	require.Zero(t, sink.Refused())
	seen := map[string]string{}
	for _, ev := range sink.Events() {
		key := ev.Type + " " + ev.Incident.ID
		if prev, ok := seen[ev.ID]; ok {
			require.Equal(t, prev, key, "one idempotency key, one event")
		}
		seen[ev.ID] = key
	}
	var st []hooks.ReceiverStatus
	getData(t, fw+"/api/v1/hooks", &st)
	require.Equal(t, "pager", st[0].Name)
}

// getData GETs a Prometheus-style API answer and decodes its data.
func getData(t *testing.T, url string, into any) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
	require.Equal(t, "success", env.Status, url)
	require.NoError(t, json.Unmarshal(env.Data, into))
}
