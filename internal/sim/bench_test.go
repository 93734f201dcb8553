package sim

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkScrape is one full scrape of one cluster at the demo's size (3 clusters x 50 nodes
// x 30 pods per node) in the text format, without compression:
//   - step: the first scrape after a scenario step changed the cluster (nothing reused);
//   - tick: a crash loop's restart counters moved (static series reused, response rebuilt);
//   - unchanged: nothing changed since the previous scrape (response replayed).
func BenchmarkScrape(b *testing.B) {
	clk := newFakeClock()
	s, err := New(Options{Seed: 1, Now: clk.Now})
	require.NoError(b, err)
	defer s.Close()
	// Some scenario state, so the crash-loop paths are in the profile too.
	require.NoError(b, s.Apply(Step{Action: ActionCrashloop, Cluster: "eu-1", Namespace: "payments", Deployment: "api"}))
	h := s.Handler()
	c := s.byName["eu-1"]
	for _, bc := range []struct {
		name       string
		invalidate bool
		advance    time.Duration
	}{{"step", true, 0}, {"tick", false, 10 * time.Second}, {"unchanged", false, 0}} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "/clusters/eu-1/metrics", nil)
			var body *bytes.Buffer
			b.ReportAllocs()
			for b.Loop() {
				if bc.invalidate {
					s.mu.Lock()
					c.gen++
					s.mu.Unlock()
				}
				clk.Advance(bc.advance)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
				body = rec.Body
			}
			series := 0
			for _, line := range bytes.Split(body.Bytes(), []byte("\n")) {
				if len(line) > 0 && line[0] != '#' {
					series++
				}
			}
			b.ReportMetric(float64(series), "series")
			b.ReportMetric(float64(body.Len()), "bytes/scrape")
		})
	}
}
