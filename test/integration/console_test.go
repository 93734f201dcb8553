package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v2"

	"github.com/fleetwatch/fleetwatch/hooks"
	"github.com/fleetwatch/fleetwatch/internal/browser"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/lab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
	"github.com/fleetwatch/fleetwatch/remediate"
)

// hookSink is a webhook receiver: it keeps every delivery whose signature verifies with its
// secret, and counts the others.
type hookSink struct {
	secret string
	mu     sync.Mutex
	events []hooks.Event
	bad    int
}

func (s *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := hooks.Verify([]string{s.secret}, r.Header.Get(hooks.HeaderTimestamp), r.Header.Get(hooks.HeaderSignature), body, hooks.DefaultTolerance, time.Now()); err != nil {
		s.bad++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var ev hooks.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.events = append(s.events, ev)
}

// find returns the first delivered event of type typ about remediation rem ("": any).
func (s *hookSink) find(typ, rem string) (hooks.Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range s.events {
		if ev.Type == typ && (rem == "" || (ev.Remediation != nil && ev.Remediation.ID == rem)) {
			return ev, true
		}
	}
	return hooks.Event{}, false
}

// pageMetrics are the browser's own Navigation and Resource Timing figures for a page.
type pageMetrics struct {
	TransferBytes int     `json:"transfer_bytes"`
	DecodedBytes  int     `json:"decoded_bytes"`
	Resources     int     `json:"resources"`
	InteractiveMS float64 `json:"interactive_ms"`
	DOMContentMS  float64 `json:"dom_content_loaded_ms"`
	LoadMS        float64 `json:"load_ms"`
}

const pageMetricsJS = `(() => {
	const n = performance.getEntriesByType('navigation')[0];
	const r = performance.getEntriesByType('resource');
	const sum = (k) => r.reduce((a, e) => a + e[k], n[k]);
	return {transfer_bytes: sum('transferSize'), decoded_bytes: sum('decodedBodySize'), resources: r.length,
		interactive_ms: n.domInteractive, dom_content_loaded_ms: n.domContentLoadedEventEnd, load_ms: n.loadEventEnd};
})()`

// TestConsoleOnTheLab is the on-call flow in a real headless Chromium against fleetwatch on the
// lab's real control planes: a bad image crash-loops in two clusters, the incident appears in
// the console, an operator approves the rollback the console proposes and watches it verify; a
// read-only identity sees no approve button and is refused when it posts anyway. Every event
// of the flow reaches a webhook receiver signed, with an approval link that works once.
// Screenshots of the main screens and the incident page's weight and timing are left in the
// artifacts directory (test/artifacts/console).
func TestConsoleOnTheLab(t *testing.T) {
	dir := t.TempDir()
	oncall := testenv.WriteFile(t, dir, "oncall.token", "oncall-secret\n")
	viewer := testenv.WriteFile(t, dir, "viewer.token", "viewer-secret\n")
	hookSecret := testenv.WriteFile(t, dir, "hook.secret", "hook-secret-0123456789\n")
	sink := &hookSink{secret: "hook-secret-0123456789"}
	receiver := httptest.NewServer(sink)
	defer receiver.Close()

	// The bad-rollout playbook as built in, but waiting for an operator.
	pb := remediate.Playbooks(nil)
	var rollout config.PlaybookConfig
	for _, p := range pb {
		if p.Name == remediate.PlaybookBadRollout {
			rollout = p
		}
	}
	rollout.Steps[0].Mode = config.ModeApprove
	playbooks, err := yaml.Marshal([]config.PlaybookConfig{rollout})
	require.NoError(t, err)
	l := lab.Start(t, lab.Options{
		Clusters: 3, ControlPlanes: true,
		Rules:     "  evaluation_interval: 1s\n  pack: {crash_loop_for: 5s, silent_after: 30s}\n",
		Correlate: "  evaluation_interval: 1s\n  resolve_after: 5s\n",
		FleetwatchConfig: "query:\n  lookback_delta: 25s\n" +
			"remediation:\n  enabled: true\n  evaluation_interval: 1s\n  playbooks:\n" + indent(string(playbooks), "    ") +
			"access:\n  anonymous_roles: [read]\n  identities:\n" +
			fmt.Sprintf("    - {name: oncall, roles: [read, operate], bearer_token_file: %s}\n", oncall) +
			fmt.Sprintf("    - {name: viewer, roles: [read], bearer_token_file: %s}\n", viewer) +
			"hooks:\n  receivers:\n" +
			fmt.Sprintf("    - {name: chatops, url: %s, secret_files: [%s], min_backoff: 200ms, max_backoff: 2s}\n", receiver.URL, hookSecret),
	})
	artifacts := browser.ArtifactsDir(t, "console")
	shots := map[string]string{}
	desktop := browser.Start(t, 1280, 900)
	op := browser.NewTab(t, desktop, "oncall-secret")
	ro := browser.NewTab(t, desktop, "viewer-secret")
	// A phone's viewport (Chromium's windows are never narrower than 500 pixels).
	phone := browser.NewTab(t, desktop, "oncall-secret")
	phone.Do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	base := l.FleetwatchURL

	// The fleet, every cluster with its health.
	testenv.Eventually(t, 2*time.Minute, func() error {
		op.Navigate(base + "/")
		if n := op.Count("table#fleet tr[data-cluster]"); n != len(l.Clusters) {
			return fmt.Errorf("%d clusters on the fleet page, want %d", n, len(l.Clusters))
		}
		if ready := browser.Eval[string](op, `document.querySelector('tr#cluster-`+l.Clusters[0]+` td[data-value]') ? 'yes' : ''`); ready == "" {
			return fmt.Errorf("no health figures yet")
		}
		return nil
	})
	shots["fleet"] = op.Screenshot(artifacts, "fleet")

	// A bad image in two clusters: pods crash-loop, one incident for the rollout.
	ns, deploy := "payments", "api"
	for _, c := range l.Clusters[:2] {
		l.Kubectl(c, "-n", ns, "set", "image", "deployment/"+deploy, deploy+"=registry.example/payments/api:v9.9.9-crashloop")
	}
	var incident string
	testenv.Eventually(t, 4*time.Minute, func() error {
		op.Navigate(base + "/incidents")
		incident = browser.Eval[string](op, `(() => {
			for (const tr of document.querySelectorAll('#incidents-active tr[data-incident]')) {
				if (tr.textContent.includes('likely bad rollout of payments/api')) return tr.getAttribute('data-incident');
			}
			return '';
		})()`)
		if incident == "" {
			return fmt.Errorf("no active incident for the rollout of payments/api yet")
		}
		return nil
	})
	shots["incidents"] = op.Screenshot(artifacts, "incidents")
	op.Navigate(base + "/incidents/" + incident)
	require.Equal(t, 1, op.Count("section#incident-"+incident))
	rootCause := browser.Eval[string](op, `document.querySelector('#root-cause').textContent`)
	require.Contains(t, rootCause, "likely bad rollout of payments/api", "the root cause names the workload")
	require.Positive(t, op.Count("#incident-alerts a[href^='/graph?g0.expr=']"), "every alert's signal links to its PromQL")
	shots["incident"] = op.Screenshot(artifacts, "incident")
	phone.Navigate(base + "/incidents/" + incident)
	m := browser.Eval[pageMetrics](phone, pageMetricsJS)
	shots["incident-phone"] = phone.Screenshot(artifacts, "incident-phone")
	require.Equal(t, 390, browser.Eval[int](phone, `window.innerWidth`))
	require.LessOrEqual(t, browser.Eval[int](phone, `document.documentElement.scrollWidth`), 390, "the incident page fits a phone's width (wide tables scroll inside it)")
	t.Logf("incident page on a phone-sized viewport: %d bytes transferred (%d decoded, %d resources), interactive after %.0f ms, loaded after %.0f ms",
		m.TransferBytes, m.DecodedBytes, m.Resources, m.InteractiveMS, m.LoadMS)
	raw, err := json.MarshalIndent(m, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(artifacts, "incident-page.json"), raw, 0o644))

	// The generator URL of an alert leads to the query page, with a table and a graph.
	graph := browser.Eval[string](op, `document.querySelector('#incident-alerts a[href^="/graph?g0.expr="]').getAttribute('href')`)
	op.Navigate(base + graph)
	require.Equal(t, 1, op.Count("section#result"), "the query page answers %s", graph)
	require.Equal(t, 0, op.Count("#query-error:not([hidden])"))
	shots["graph"] = op.Screenshot(artifacts, "graph")

	// The rollback waits for an operator; the console shows the approve button to the operator.
	var rem string
	approve := ""
	testenv.Eventually(t, 3*time.Minute, func() error {
		op.Navigate(base + "/remediations")
		rem = browser.Eval[string](op, `(() => {
			const b = document.querySelector('button[data-action="approve"]');
			return b ? b.getAttribute('data-remediation') : '';
		})()`)
		if rem == "" {
			return fmt.Errorf("no remediation waits for approval")
		}
		approve = `button[data-action="approve"][data-remediation="` + rem + `"]`
		return nil
	})
	shots["remediations-waiting"] = op.Screenshot(artifacts, "remediations-waiting")

	// The read-only identity sees the remediation, no button, and is refused if it posts anyway.
	ro.Navigate(base + "/remediations")
	require.Equal(t, 1, ro.Count("tr#remediation-row-"+rem))
	require.Zero(t, ro.Count("button[data-action]"), "no approve, deny or pause button for a reader")
	status := browser.Eval[int](ro, `fetch('/api/v1/remediations/`+rem+`/approve', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'}).then(r => r.status)`)
	require.Equal(t, http.StatusForbidden, status)
	shots["remediations-reader"] = ro.Screenshot(artifacts, "remediations-reader")

	// The webhook receiver got the request with its approval link: a reader is refused there too.
	var link hooks.Event
	testenv.Eventually(t, time.Minute, func() error {
		var ok bool
		if link, ok = sink.find("remediation.waiting_approval", rem); !ok {
			return fmt.Errorf("no remediation.waiting_approval delivered for %s", rem)
		}
		return nil
	})
	require.NotNil(t, link.Approval)
	require.Equal(t, incident, link.Incident.ID)
	status = browser.Eval[int](ro, `fetch('`+link.Approval.URL+`', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{"decision":"approve"}'}).then(r => r.status)`)
	require.Equal(t, http.StatusForbidden, status)

	// The operator approves in the console, and watches the rollback verify.
	op.Navigate(base + "/remediations")
	// The button posts, then the page reloads without it.
	op.Do(chromedp.WaitVisible(chromedp.CSS(approve)), chromedp.Click(chromedp.CSS(approve)), chromedp.WaitNotPresent(chromedp.CSS(approve)))
	require.Zero(t, op.Count("#action-error:not([hidden])"))
	testenv.Eventually(t, 4*time.Minute, func() error {
		op.Navigate(base + "/remediations/" + rem)
		state := browser.Eval[string](op, `document.querySelector('section#remediation-`+rem+`')?.getAttribute('data-state') ?? 'not on the page'`)
		if state != remediate.StateSucceeded {
			return fmt.Errorf("remediation %s is %s", rem, state)
		}
		return nil
	})
	require.Positive(t, op.Count(`#audit tr[data-event="approval"]`))
	require.Contains(t, browser.Eval[string](op, `document.querySelector('#audit').textContent`), "approved by oncall")
	shots["remediation-verified"] = op.Screenshot(artifacts, "remediation-verified")

	// The approval link was for that one request: used now, it is a conflict.
	status = browser.Eval[int](op, `fetch('`+link.Approval.URL+`', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{"decision":"deny"}'}).then(r => r.status)`)
	require.Equal(t, http.StatusConflict, status)
	testenv.Eventually(t, time.Minute, func() error {
		for _, typ := range []string{"remediation.planned", "remediation.approved", "remediation.executed", "remediation.verified", "remediation.succeeded"} {
			if _, ok := sink.find(typ, rem); !ok {
				return fmt.Errorf("no %s delivered for %s", typ, rem)
			}
		}
		if _, ok := sink.find("incident.opened", ""); !ok {
			return fmt.Errorf("no incident.opened delivered")
		}
		return nil
	})
	sink.mu.Lock()
	require.Zero(t, sink.bad, "every delivery's signature verified")
	sink.mu.Unlock()

	// What-if: the first cluster failed, where its workloads would go.
	op.Navigate(base + "/whatif?fail=" + l.Clusters[0])
	require.Equal(t, 1, op.Count("section#whatif"))
	shots["whatif"] = op.Screenshot(artifacts, "whatif")
	for name, p := range shots {
		t.Logf("screenshot %s: %s", name, p)
	}
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix) + "\n"
}
