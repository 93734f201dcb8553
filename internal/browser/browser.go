// Package browser drives a real headless Chromium (Debian's package, which `make peers`
// installs through hack/chromium.sh) from tests, with github.com/chromedp/chromedp: the web
// console is tested as its users see it. Each tab sends one identity's credentials on every
// request, as a browser with saved credentials does; screenshots go to the artifacts directory.
package browser

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// Chromium is the browser binary `make peers` linked into the peers' directory (Debian's
// chromium package, installed by hack/chromium.sh); without it the test fails (or, with -short,
// is skipped), as for every peer.
func Chromium(t testing.TB) string { t.Helper(); return testenv.Peer(t, "chromium") }

// ArtifactsDir is where tests leave screenshots and measurements for people to look at:
// $FLEETWATCH_ARTIFACTS_DIR, or test/artifacts in the repository (ignored by git).
func ArtifactsDir(t testing.TB, sub string) string {
	t.Helper()
	dir := os.Getenv("FLEETWATCH_ARTIFACTS_DIR")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0) // internal/browser/browser.go
		dir = filepath.Join(filepath.Dir(file), "..", "..", "test", "artifacts")
	}
	dir = filepath.Join(dir, sub)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Start launches a headless Chromium for the test, with a viewport of width x height, and
// returns its context; the browser is stopped when the test ends. The flags keep it off the
// network but for the pages it is sent to: no background fetches, no updates, no sync.
func Start(t testing.TB, width, height int) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Chromium(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	// The first Run starts the browser; it must not run under a timeout (that would stop it).
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("starting chromium: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	return ctx
}

// Tab is one browser tab that sends an identity's bearer token with every request.
type Tab struct {
	t   testing.TB
	ctx context.Context
}

// NewTab opens a tab of the browser; with a token, every request of the tab (pages, fetches)
// carries it as a bearer token.
func NewTab(t testing.TB, browser context.Context, token string) *Tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	// The tab's first Run opens it and lives as long as its context: no timeout here.
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil || token == "" {
			return err
		}
		_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"Authorization": "Bearer " + token},
		})
		return err
	}))
	if err != nil {
		t.Fatalf("browser: opening a tab: %v", err)
	}
	return &Tab{t: t, ctx: ctx}
}

// actionTimeout bounds one step of a test: a page that never shows what is awaited fails the
// test instead of hanging it.
const actionTimeout = 30 * time.Second

// Do runs steps in the tab, failing the test on an error.
func (b *Tab) Do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// Eval evaluates a JavaScript expression in the tab's page and returns its value.
func Eval[T any](b *Tab, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("browser: evaluating %s: %v", strings.TrimSpace(expr), err)
	}
	return v
}

// Navigate loads url in the tab and waits for its load event.
func (b *Tab) Navigate(url string) { b.t.Helper(); b.Do(chromedp.Navigate(url)) }

// Count is how many elements match the CSS selector now.
func (b *Tab) Count(selector string) int {
	b.t.Helper()
	return Eval[int](b, "document.querySelectorAll("+jsString(selector)+").length")
}

// Screenshot saves the whole page as a PNG under dir and returns its path.
func (b *Tab) Screenshot(dir, name string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return p
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`)
	return "'" + r.Replace(s) + "'"
}
