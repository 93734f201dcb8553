package input

import (
	"context"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestResolveTimeouts: an alert whose sender gives no end (API v2 without endsAt, a firing
// webhook alert) or one no Prometheus would give (more than MaxEndsAtAhead ahead) ends after
// the resolve timeout of its input, taken from the configuration; a believable endsAt is kept.
func TestResolveTimeouts(t *testing.T) {
	v2 := func(endsAt string) string {
		if endsAt != "" {
			endsAt = `,"endsAt":"` + endsAt + `"`
		}
		return `[{"labels":{"alertname":"A"},"startsAt":"2026-05-04T11:00:00Z"` + endsAt + `}]`
	}
	const webhook = `{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A"},"startsAt":"2026-05-04T11:00:00Z","endsAt":"0001-01-01T00:00:00Z"}]}`
	configured := config.CorrelateConfig{ResolveTimeout: model.Duration(2 * time.Minute), WebhookResolveTimeout: model.Duration(time.Hour)}
	for _, tc := range []struct {
		name      string
		correlate config.CorrelateConfig
		path      string
		body      string
		want      time.Time
	}{
		{"v2 without endsAt, default", config.CorrelateConfig{}, PathAlertsV2, v2(""), testNow.Add(DefaultResolveTimeout)},
		{"v2 without endsAt, configured", configured, PathAlertsV2, v2(""), testNow.Add(2 * time.Minute)},
		{"v2 endsAt years ahead", configured, PathAlertsV2, v2("2099-01-01T00:00:00Z"), testNow.Add(2 * time.Minute)},
		{"v2 endsAt just over a day ahead", configured, PathAlertsV2, v2("2026-05-05T12:00:01Z"), testNow.Add(2 * time.Minute)},
		{"v2 endsAt a day ahead is believed", configured, PathAlertsV2, v2("2026-05-05T12:00:00Z"), testNow.Add(MaxEndsAtAhead)},
		{"v2 endsAt as Prometheus sets it", configured, PathAlertsV2, v2("2026-05-04T12:04:00Z"), testNow.Add(4 * time.Minute)},
		{"webhook firing, default", config.CorrelateConfig{}, PathWebhook, webhook, testNow.Add(DefaultWebhookResolveTimeout)},
		{"webhook firing, configured", configured, PathWebhook, webhook, testNow.Add(time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &recordingSink{}
			h := newHandler(t, sink, nil)
			require.NoError(t, h.ApplyConfig(&config.Config{Clusters: testClusters, Correlate: tc.correlate}))
			r := do(h, http.MethodPost, tc.path, tc.body, eu1)
			require.Equal(t, http.StatusOK, r.code, r.body)
			got := sink.all()
			require.Len(t, got, 1)
			require.Equal(t, tc.want, got[0].EndsAt.UTC())
		})
	}
}

type clock struct {
	mtx sync.Mutex
	t   time.Time
}

func (c *clock) now() time.Time      { c.mtx.Lock(); defer c.mtx.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mtx.Lock(); c.t = c.t.Add(d); c.mtx.Unlock() }

// TestForgottenAlertsExpire: alerts that their senders never resolve (posted without endsAt;
// forwarded by a webhook whose resolved notification never comes) end after their input's
// resolve timeout, and their incidents resolve after the hysteresis, through the real engine.
func TestForgottenAlertsExpire(t *testing.T) {
	clk := &clock{t: testNow}
	st, err := correlate.OpenStore(filepath.Join(t.TempDir(), "c.db"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	const resolveAfter = time.Minute
	e, err := correlate.New(correlate.Options{Store: st, Rules: correlate.DefaultRules, ResolveAfter: resolveAfter, Now: clk.now})
	require.NoError(t, err)
	h, err := New(Options{Sink: e, Now: clk.now})
	require.NoError(t, err)
	cc := config.DefaultCorrelate
	cc.ResolveTimeout, cc.WebhookResolveTimeout = model.Duration(5*time.Minute), model.Duration(time.Hour)
	require.NoError(t, h.ApplyConfig(&config.Config{Clusters: testClusters, Correlate: cc}))

	r := do(h, http.MethodPost, PathAlertsV2, `[{"labels":{"alertname":"CertificateExpiring","severity":"warning"}}]`, eu1)
	require.Equal(t, http.StatusOK, r.code, r.body)
	r = do(h, http.MethodPost, PathWebhook, `{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"KubeJobFailed","namespace":"batch","job_name":"nightly"},"startsAt":"2026-05-04T11:59:00Z"}]}`, eu1)
	require.Equal(t, http.StatusOK, r.code, r.body)

	active := func() map[string]string {
		t.Helper()
		require.NoError(t, e.Evaluate(context.Background()))
		out := map[string]string{}
		for _, inc := range e.Active() {
			out[inc.Key] = inc.State
		}
		return out
	}
	require.Len(t, active(), 2)
	clk.add(5*time.Minute - time.Second)
	require.Len(t, active(), 2, "within the resolve timeout")
	clk.add(time.Second) // the API alert ends
	require.Len(t, active(), 2, "cleared, within the hysteresis")
	clk.add(resolveAfter)
	got := active()
	require.Len(t, got, 1, "the API alert's incident resolved: %v", got)
	for key := range got {
		require.Contains(t, key, "KubeJobFailed")
	}
	clk.add(time.Hour - 6*time.Minute) // the webhook alert ends
	require.NotEmpty(t, active())
	clk.add(resolveAfter)
	require.Empty(t, active(), "the webhook alert's incident resolved")

}
