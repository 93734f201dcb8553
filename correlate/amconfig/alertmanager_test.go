package amconfig

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// notifications records what Alertmanager's webhooks deliver, by receiver path.
type notifications struct {
	mu  sync.Mutex
	got map[string][]string // path -> "incident_id status", in order
}

func (n *notifications) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var msg struct {
		Alerts []struct {
			Status string            `json:"status"`
			Labels map[string]string `json:"labels"`
		} `json:"alerts"`
	}
	if err := json.NewDecoder(r.Body).Decode(&msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range msg.Alerts {
		n.got[r.URL.Path] = append(n.got[r.URL.Path], a.Labels[LabelIncidentKey]+" "+a.Status)
	}
}

func (n *notifications) has(path string, want ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, w := range want {
		if !slices.Contains(n.got[path], w) {
			return fmt.Errorf("%s has not received %q; it has %q", path, w, n.got[path])
		}
	}
	return nil
}

// received returns the paths that received anything about the incident.
func (n *notifications) received(id string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var paths []string
	for p, got := range n.got {
		for _, g := range got {
			if strings.HasPrefix(g, id+" ") {
				paths = append(paths, p)
				break
			}
		}
	}
	slices.Sort(paths)
	return paths
}

// TestAlertmanager runs the real Alertmanager on a generated configuration: it starts and is
// ready, routes incidents to the receivers the tree says, inhibits as the rules say, tells the
// automation webhook of every incident that is not inhibited and of its resolution, and lets
// an inhibited incident through once what inhibited it has resolved.
func TestAlertmanager(t *testing.T) {
	testenv.SkipIfShort(t)
	bin := testenv.Peer(t, "alertmanager")
	dir := t.TempDir()
	n := &notifications{got: map[string][]string{}}
	hooks := httptest.NewServer(n)
	t.Cleanup(hooks.Close)
	t.Cleanup(http.DefaultClient.CloseIdleConnections)

	checkoutURL := testenv.WriteFile(t, dir, "secrets/checkout-url", hooks.URL+"/checkout\n")
	automationURL := testenv.WriteFile(t, dir, "secrets/automation-url", hooks.URL+"/automation\n")
	fast := "{group_wait: 0s, group_interval: 1s, repeat_interval: 1h}"
	s, err := LoadSpec([]byte(fmt.Sprintf(`
fleet_oncall:
  webhook_configs: [{url: %[1]s/fleet}]
teams:
  - name: payments
    webhook_configs: [{url: %[1]s/payments}]
  - name: checkout
    webhook_configs: [{url_file: %[3]s}]
timing: {critical: %[2]s, warning: %[2]s, info: %[2]s, automation: %[2]s}
`, hooks.URL, fast, checkoutURL)), "teams.yml")
	require.NoError(t, err)
	require.NoError(t, s.SetWebhookURLFile(automationURL))
	cfgPath := testenv.WriteFile(t, dir, "alertmanager.yml", string(generate(t, s).YAML))

	addr := testenv.FreePort(t)
	am := testenv.Start(t, "alertmanager", bin, "--config.file="+cfgPath,
		"--storage.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr,
		"--cluster.listen-address=")
	base := "http://" + addr
	am.WaitReady(t, base+"/-/ready", 30*time.Second)

	var (
		fleet    = incident("fleet-payments", SeverityCritical, ScopeFleet, "", "payments")
		critical = incident("critical-checkout-eu-1", SeverityCritical, ScopeCluster, "eu-1", "checkout")
		// Inhibited by fleet (same team) and by critical (same cluster and team).
		warnPayments = incident("warning-payments-eu-2", SeverityWarning, ScopeCluster, "eu-2", "payments")
		warnEU1      = incident("warning-checkout-eu-1", SeverityWarning, ScopeCluster, "eu-1", "checkout")
		// Not inhibited: another cluster than the critical one, a team no fleet incident has.
		warnUS1 = incident("warning-checkout-us-1", SeverityWarning, ScopeCluster, "us-1", "checkout")
		drift   = incident("info-drift", SeverityInfo, ScopeCluster, "eu-2", "payments")
	)

	post(t, base, time.Time{}, fleet, critical)
	testenv.Eventually(t, 30*time.Second, func() error {
		for path, want := range map[string][]string{
			"/automation": {"fleet-payments firing", "critical-checkout-eu-1 firing"},
			"/fleet":      {"fleet-payments firing"},
			"/payments":   {"fleet-payments firing"},
			"/checkout":   {"critical-checkout-eu-1 firing"},
		} {
			if err := n.has(path, want...); err != nil {
				return err
			}
		}
		return nil
	})

	post(t, base, time.Time{}, warnPayments, warnEU1, warnUS1, drift)
	testenv.Eventually(t, 30*time.Second, func() error {
		if err := n.has("/checkout", "warning-checkout-us-1 firing"); err != nil {
			return err
		}
		if err := n.has("/automation", "warning-checkout-us-1 firing", "info-drift firing"); err != nil {
			return err
		}
		for id, by := range map[string]string{"warning-payments-eu-2": "fleet-payments", "warning-checkout-eu-1": "critical-checkout-eu-1"} {
			if err := inhibitedBy(base, id, by); err != nil {
				return err
			}
		}
		return nil
	})
	// The inhibited incidents were muted when their groups were flushed, the next flush is a
	// group_interval away, and no route sends info incidents to anyone but the automation.
	require.Empty(t, n.received("warning-payments-eu-2"))
	require.Empty(t, n.received("warning-checkout-eu-1"))
	require.Equal(t, []string{"/automation"}, n.received("info-drift"))
	require.Equal(t, []string{"/automation", "/fleet", "/payments"}, n.received("fleet-payments"))

	// The fleet incident resolves: the automation is told, and the team's warning it
	// inhibited is let through.
	post(t, base, time.Now(), fleet)
	testenv.Eventually(t, 30*time.Second, func() error {
		if err := n.has("/automation", "fleet-payments resolved", "warning-payments-eu-2 firing"); err != nil {
			return err
		}
		return n.has("/payments", "warning-payments-eu-2 firing")
	})
	require.Empty(t, n.received("warning-checkout-eu-1"))
}

// post sends incidents to Alertmanager's API v2; a zero endsAt leaves them firing.
func post(t *testing.T, base string, endsAt time.Time, incidents ...model.LabelSet) {
	t.Helper()
	type alert struct {
		Labels      model.LabelSet    `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		StartsAt    time.Time         `json:"startsAt"`
		EndsAt      time.Time         `json:"endsAt,omitzero"`
	}
	var alerts []alert
	for _, ls := range incidents {
		alerts = append(alerts, alert{Labels: ls, StartsAt: time.Now().Add(-time.Minute), EndsAt: endsAt,
			Annotations: map[string]string{"summary": "test incident " + string(ls[LabelIncidentKey]), "clusters": string(ls[LabelCluster])}})
	}
	body, err := json.Marshal(alerts)
	require.NoError(t, err)
	resp, err := http.Post(base+"/api/v2/alerts", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// inhibitedBy checks, through Alertmanager's API v2, that the incident id is suppressed by the
// incident by.
func inhibitedBy(base, id, by string) error {
	resp, err := http.Get(base + "/api/v2/alerts")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var alerts []struct {
		Fingerprint string            `json:"fingerprint"`
		Labels      map[string]string `json:"labels"`
		Status      struct {
			State       string   `json:"state"`
			InhibitedBy []string `json:"inhibitedBy"`
		} `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&alerts); err != nil {
		return err
	}
	fps := map[string]string{}
	for _, a := range alerts {
		fps[a.Labels[LabelIncidentKey]] = a.Fingerprint
	}
	for _, a := range alerts {
		if a.Labels[LabelIncidentKey] != id {
			continue
		}
		if a.Status.State != "suppressed" || !slices.Contains(a.Status.InhibitedBy, fps[by]) {
			return fmt.Errorf("%s is %s, inhibited by %q, not by %s (%s)", id, a.Status.State, a.Status.InhibitedBy, by, fps[by])
		}
		return nil
	}
	return fmt.Errorf("%s is not in Alertmanager", id)
}
