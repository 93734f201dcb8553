package controlplanes

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/browser"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
	"github.com/fleetwatch/fleetwatch/remediate"
)

// console is an on-call session in a real headless Chromium against fleetwatch's web console:
// an operator's tab, a reader's tab, and an operator's tab with a phone's viewport. Screenshots
// of the screens it visits are left in the artifacts directory (test/artifacts/console).
type console struct {
	t             *testing.T
	base          string
	op, ro, phone *browser.Tab
	artifacts     string
	shots         []string
}

func openConsole(t *testing.T, base, operator, reader string) *console {
	desktop := browser.Start(t, 1280, 900)
	c := &console{
		t: t, base: base, artifacts: browser.ArtifactsDir(t, "console"),
		op: browser.NewTab(t, desktop, operator), ro: browser.NewTab(t, desktop, reader), phone: browser.NewTab(t, desktop, operator),
	}
	// A phone's viewport (Chromium's windows are never narrower than 500 pixels).
	c.phone.Do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	t.Cleanup(func() {
		sort.Strings(c.shots)
		for _, s := range c.shots {
			t.Logf("screenshot: %s", s)
		}
	})
	return c
}

func (c *console) shot(tab *browser.Tab, name string) {
	c.shots = append(c.shots, tab.Screenshot(c.artifacts, name))
}

// fleet waits for the fleet page to list every cluster with its health.
func (c *console) fleet(clusters []string) {
	testenv.Eventually(c.t, 2*time.Minute, func() error {
		c.op.Navigate(c.base + "/")
		if n := c.op.Count("table#fleet tr[data-cluster]"); n != len(clusters) {
			return fmt.Errorf("%d clusters on the fleet page, want %d", n, len(clusters))
		}
		if c.op.Count("tr#cluster-"+clusters[0]+" td[data-value]") == 0 {
			return fmt.Errorf("no health figures yet")
		}
		return nil
	})
	c.shot(c.op, "fleet")
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

// incident waits for an active incident whose row says rootCause, opens it (also on the
// phone, measuring the page) and follows an alert's generator URL to the query page. It
// returns the incident's ID.
func (c *console) incident(rootCause string) string {
	t := c.t
	var id string
	testenv.Eventually(t, 4*time.Minute, func() error {
		c.op.Navigate(c.base + "/incidents")
		id = browser.Eval[string](c.op, `(() => {
			for (const tr of document.querySelectorAll('#incidents-active tr[data-incident]')) {
				if (tr.textContent.includes(`+"`"+rootCause+"`"+`)) return tr.getAttribute('data-incident');
			}
			return '';
		})()`)
		if id == "" {
			return fmt.Errorf("no active incident says %q yet", rootCause)
		}
		return nil
	})
	c.shot(c.op, "incidents")
	c.op.Navigate(c.base + "/incidents/" + id)
	require.Equal(t, 1, c.op.Count("section#incident-"+id))
	require.Contains(t, browser.Eval[string](c.op, `document.querySelector('#root-cause').textContent`), rootCause)
	require.Positive(t, c.op.Count(`#incident-alerts a[href^="/graph?g0.expr="]`), "every alert's signal links to its PromQL")
	c.shot(c.op, "incident")

	c.phone.Navigate(c.base + "/incidents/" + id)
	m := browser.Eval[pageMetrics](c.phone, pageMetricsJS)
	require.Equal(t, 390, browser.Eval[int](c.phone, `window.innerWidth`))
	require.LessOrEqual(t, browser.Eval[int](c.phone, `document.documentElement.scrollWidth`), 390, "the incident page fits a phone's width (wide tables scroll inside it)")
	c.shot(c.phone, "incident-phone")
	t.Logf("incident page on a phone-sized viewport: %d bytes transferred (%d decoded, %d resources), interactive after %.0f ms, loaded after %.0f ms",
		m.TransferBytes, m.DecodedBytes, m.Resources, m.InteractiveMS, m.LoadMS)
	raw, err := json.MarshalIndent(m, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(c.artifacts, "incident-page.json"), raw, 0o644))

	// An alert's generator URL leads to the query page, with a table and a graph.
	graph := browser.Eval[string](c.op, `document.querySelector('#incident-alerts a[href^="/graph?g0.expr="]').getAttribute('href')`)
	c.op.Navigate(c.base + graph)
	require.Equal(t, 1, c.op.Count("section#result"), "the query page answers %s", graph)
	require.Zero(t, c.op.Count("#query-error:not([hidden])"))
	c.shot(c.op, "graph")
	return id
}

// waitingApproval waits for the console to offer the operator an approve button for a
// remediation of playbook, and returns the remediation's ID.
func (c *console) waitingApproval(playbook string) string {
	var rem string
	testenv.Eventually(c.t, 3*time.Minute, func() error {
		c.op.Navigate(c.base + "/remediations")
		rem = browser.Eval[string](c.op, `(() => {
			for (const tr of document.querySelectorAll('#remediations-waiting tr[data-state]')) {
				const b = tr.querySelector('button[data-action="approve"]');
				if (b && tr.textContent.includes('`+playbook+`')) return b.getAttribute('data-remediation');
			}
			return '';
		})()`)
		if rem == "" {
			return fmt.Errorf("no %s remediation waits for approval", playbook)
		}
		return nil
	})
	c.shot(c.op, "remediations-waiting")
	return rem
}

// readerRefused: the reader sees the remediation and no button, and is refused (403) when it
// posts anyway, to the remediation API and to the approval link.
func (c *console) readerRefused(rem, approvalURL string) {
	t := c.t
	c.ro.Navigate(c.base + "/remediations")
	require.Equal(t, 1, c.ro.Count("tr#remediation-row-"+rem))
	require.Zero(t, c.ro.Count("button[data-action]"), "no approve, deny or pause button for a reader")
	post := func(url, body string) int {
		return browser.Eval[int](c.ro, `fetch('`+url+`', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '`+body+`'}).then(r => r.status)`)
	}
	require.Equal(t, http.StatusForbidden, post("/api/v1/remediations/"+rem+"/approve", "{}"))
	require.Equal(t, http.StatusForbidden, post(approvalURL, `{"decision":"approve"}`))
	c.shot(c.ro, "remediations-reader")
}

// approve clicks the remediation's approve button; the page reloads without it.
func (c *console) approve(rem string) {
	sel := chromedp.CSS(`button[data-action="approve"][data-remediation="` + rem + `"]`)
	c.op.Navigate(c.base + "/remediations")
	c.op.Do(chromedp.WaitVisible(sel), chromedp.Click(sel), chromedp.WaitNotPresent(sel))
	require.Zero(c.t, c.op.Count("#action-error:not([hidden])"))
}

// verified waits for the remediation's page to say it succeeded, approved by approver.
func (c *console) verified(rem, approver string) {
	testenv.Eventually(c.t, 2*time.Minute, func() error {
		c.op.Navigate(c.base + "/remediations/" + rem)
		state := browser.Eval[string](c.op, `document.querySelector('section#remediation-`+rem+`')?.getAttribute('data-state') ?? 'not on the page'`)
		if state != remediate.StateSucceeded {
			return fmt.Errorf("remediation %s is %s", rem, state)
		}
		return nil
	})
	require.Positive(c.t, c.op.Count(`#audit tr[data-event="approval"]`))
	require.Contains(c.t, browser.Eval[string](c.op, `document.querySelector('#audit').textContent`), "approved by "+approver)
	c.shot(c.op, "remediation-verified")
}

// whatif shows where cluster's workloads would go.
func (c *console) whatif(cluster string) {
	c.op.Navigate(c.base + "/whatif?fail=" + cluster)
	require.Equal(c.t, 1, c.op.Count("section#whatif"))
	c.shot(c.op, "whatif")
}
