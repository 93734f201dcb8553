package browser

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m, testenv.IdleConnections...) }

// The tab sends its identity's token with the page and with the page's own fetches, runs the
// page's script, and saves a screenshot.
func TestTabSendsItsTokenAndScreenshots(t *testing.T) {
	testenv.SkipIfShort(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/whoami" {
			fmt.Fprint(w, r.Header.Get("Authorization"))
			return
		}
		fmt.Fprintf(w, `<!doctype html><title>t</title><p id="who">%s</p><button id="b" onclick="this.textContent='clicked'">click</button>`, r.Header.Get("Authorization"))
	}))
	defer srv.Close()
	tab := NewTab(t, Start(t, 390, 844), "s3cret")
	tab.Navigate(srv.URL)
	require.Equal(t, "Bearer s3cret", Eval[string](tab, `document.getElementById('who').textContent`))
	require.Equal(t, "Bearer s3cret", Eval[string](tab, `fetch('/whoami').then(r => r.text())`))
	require.Equal(t, 1, tab.Count("button#b"))
	require.Equal(t, "clicked", Eval[string](tab, `document.getElementById('b').click(), document.getElementById('b').textContent`))
	p := tab.Screenshot(t.TempDir(), "page")
	st, err := os.Stat(p)
	require.NoError(t, err)
	require.Positive(t, st.Size())
}
