package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
	"github.com/fleetwatch/fleetwatch/remediate"
)

// TestMain fails the package's tests when one leaves a goroutine behind.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }

// fixture is a dispatcher over real incident and remediation stores.
type fixture struct {
	dir        string
	incidents  *correlate.Store
	remeds     *remediate.Store
	dispatcher *Dispatcher
	reg        *prometheus.Registry
}

func newFixture(t *testing.T, transport http.RoundTripper) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), reg: prometheus.NewRegistry()}
	var err error
	f.incidents, err = correlate.OpenStore(filepath.Join(f.dir, "incidents.db"))
	require.NoError(t, err)
	f.remeds, err = remediate.OpenStore(filepath.Join(f.dir, "remediations.db"))
	require.NoError(t, err)
	tokens, err := NewTokens("0123456789abcdef0123456789abcdef")
	require.NoError(t, err)
	f.dispatcher, err = New(Options{
		Path: filepath.Join(f.dir, "hooks.db"),
		Sources: []Source{
			{Name: SourceIncident, Events: f.incidents.Events, Head: f.incidents.EventsHead, Trim: f.incidents.TrimEvents},
			{Name: SourceRemediation, Events: f.remeds.Events, Head: f.remeds.EventsHead, Trim: f.remeds.TrimEvents},
		},
		Incident: f.incidents.Incident, Tokens: tokens, ExternalURL: "http://fleetwatch.test",
		PollInterval: 100 * time.Millisecond, Transport: transport, Registerer: f.reg,
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		f.dispatcher.Close()
		f.remeds.Close()
		f.incidents.Close()
	})
	return f
}

// receiver returns a receiver configuration with a secret file per secret.
func (f *fixture) receiver(t *testing.T, name, url string, secrets ...string) *config.HookReceiverConfig {
	t.Helper()
	rc := config.DefaultHookReceiver
	rc.Name, rc.URL, rc.Secrets = name, url, secrets
	rc.MaxBackoff = model.Duration(5 * time.Second)
	rc.HTTPClientConfig = promconfig.DefaultHTTPClientConfig
	for i, s := range secrets {
		p := filepath.Join(f.dir, fmt.Sprintf("%s-secret-%d", name, i))
		require.NoError(t, os.WriteFile(p, []byte(s+"\n"), 0o600))
		rc.SecretFiles = append(rc.SecretFiles, p)
	}
	return &rc
}

// run runs the dispatcher until the test ends.
func (f *fixture) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.dispatcher.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// incident stores a new revision of an incident (opened on its first).
func (f *fixture) incident(t *testing.T, id, cluster, severity string, mutate func(*correlate.Incident)) {
	t.Helper()
	inc, err := f.incidents.Incident(id)
	if errors.Is(err, correlate.ErrNotFound) {
		inc = &correlate.Incident{ID: id, State: correlate.StateOpen, OpenedAt: time.Now()}
		inc.Group.Key, inc.Group.Scope, inc.Group.Severity, inc.Group.Clusters = "k/"+id, "cluster", severity, []string{cluster}
	} else {
		require.NoError(t, err)
	}
	inc.Revision++
	inc.UpdatedAt = time.Now()
	if mutate != nil {
		mutate(inc)
	}
	require.NoError(t, f.incidents.SaveIncidents([]*correlate.Incident{inc}, nil))
}

// recorded is one delivery as a receiver got it.
type recorded struct {
	header http.Header
	body   []byte
	event  Event
}

// sink is a receiver: it records what it is sent while up, and answers 503 while down.
type sink struct {
	mu   sync.Mutex
	down bool
	got  []recorded
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.got = append(s.got, recorded{header: r.Header.Clone(), body: body, event: ev})
}

func (s *sink) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

func (s *sink) deliveries() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.got...)
}

// types are the event types of rs, in order.
func types(rs []recorded) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.event.Type+" "+r.event.ID)
	}
	return out
}

// handlerTransport takes requests to an in-process handler, so that a synctest bubble holds
// the whole exchange.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// A delivery is signed so that an independent implementation (openssl, through the shell
// example the README gives receivers) verifies it, refuses it with another body, and refuses
// it replayed after the tolerance.
func TestSignatureVerifiedByOpenSSLAndReplayRefused(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	s := &sink{}
	srv := httptest.NewServer(s)
	defer srv.Close()
	f := newFixture(t, nil)
	// Rotation: the new secret and the old one; receivers that know either verify.
	rc := f.receiver(t, "chatops", srv.URL, "new-secret-0123456789", "old-secret-9876543210")
	require.NoError(t, f.dispatcher.ApplyConfig(config.HooksConfig{Receivers: []*config.HookReceiverConfig{rc}}))
	f.run(t)
	testenv.Eventually(t, 30*time.Second, func() error {
		if _, ok, _ := f.dispatcher.st.cursor("chatops", SourceIncident); !ok {
			return errors.New("the receiver has no cursor yet")
		}
		return nil
	})
	f.incident(t, "inc-1", "eu-1", "critical", nil)
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := len(s.deliveries()); n != 1 {
			return fmt.Errorf("%d deliveries", n)
		}
		return nil
	})

	d := s.deliveries()[0]
	require.Equal(t, "incident.opened", d.header.Get(HeaderEvent))
	require.Equal(t, d.event.ID, d.header.Get(HeaderDelivery))
	require.Equal(t, PayloadVersion, d.event.Version)
	require.Equal(t, "inc-1", d.event.Incident.ID)
	ts, sig := d.header.Get(HeaderTimestamp), d.header.Get(HeaderSignature)
	require.Len(t, strings.Split(sig, ","), 2, "one signature per secret while rotating")
	body := filepath.Join(t.TempDir(), "body.json")
	require.NoError(t, os.WriteFile(body, d.body, 0o600))
	script, err := filepath.Abs("../examples/hooks/verify.sh")
	require.NoError(t, err)
	verify := func(secretFile, now, bodyFile string) (string, error) {
		cmd := exec.Command("sh", script, secretFile, ts, sig, bodyFile)
		cmd.Env = append(os.Environ(), "NOW="+now)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	require.NoError(t, err)
	at := func(d time.Duration) string { return strconv.FormatInt(sec+int64(d.Seconds()), 10) }
	for _, secretFile := range rc.SecretFiles {
		out, err := verify(secretFile, at(0), body)
		require.NoError(t, err, out)
		require.Contains(t, out, "signature ok")
	}
	wrong := filepath.Join(t.TempDir(), "wrong")
	require.NoError(t, os.WriteFile(wrong, []byte("not-the-secret"), 0o600))
	out, err := verify(wrong, at(0), body)
	require.Error(t, err, out)
	require.Contains(t, out, "none of the v1 signatures matches")
	tampered := filepath.Join(t.TempDir(), "tampered.json")
	require.NoError(t, os.WriteFile(tampered, []byte(strings.Replace(string(d.body), "critical", "info", 1)), 0o600))
	out, err = verify(rc.SecretFiles[0], at(0), tampered)
	require.Error(t, err, out)
	out, err = verify(rc.SecretFiles[0], at(DefaultTolerance+time.Second), body)
	require.Error(t, err, out)
	require.Contains(t, out, "a replay")

	// hooks.Verify agrees with openssl on every case.
	now := time.Unix(sec, 0)
	require.NoError(t, Verify([]string{"old-secret-9876543210"}, ts, sig, d.body, DefaultTolerance, now))
	require.ErrorIs(t, Verify([]string{"not-the-secret"}, ts, sig, d.body, DefaultTolerance, now), ErrNoSignature)
	require.ErrorIs(t, Verify([]string{"new-secret-0123456789"}, ts, sig, []byte(strings.Replace(string(d.body), "critical", "info", 1)), DefaultTolerance, now), ErrNoSignature)
	require.ErrorIs(t, Verify([]string{"new-secret-0123456789"}, ts, sig, d.body, DefaultTolerance, now.Add(DefaultTolerance+time.Second)), ErrTimestamp)
	require.ErrorIs(t, Verify([]string{"new-secret-0123456789"}, ts, sig, d.body, DefaultTolerance, now.Add(-DefaultTolerance-time.Second)), ErrTimestamp)
}

// A receiver that is down for a minute gets every event of that minute once it is back, in
// order, after its backoff, and the other receiver is not held up meanwhile.
func TestReceiverDownForAMinuteGetsEverythingAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		down, up := &sink{}, &sink{}
		mux := http.NewServeMux()
		mux.Handle("/down", down)
		mux.Handle("/up", up)
		f := newFixture(t, handlerTransport{mux})
		require.NoError(t, f.dispatcher.ApplyConfig(config.HooksConfig{Receivers: []*config.HookReceiverConfig{
			f.receiver(t, "pager", "http://receiver.test/down", "s3cret-s3cret-s3cret"),
			f.receiver(t, "audit", "http://receiver.test/up", "an0ther-s3cret"),
		}}))
		f.run(t)
		synctest.Wait()
		down.setDown(true)

		// A minute of changes while "pager" is down: an incident opens, changes, is
		// acknowledged; a remediation is planned and waits for approval.
		f.incident(t, "inc-1", "eu-1", "critical", nil)
		time.Sleep(20 * time.Second)
		f.incident(t, "inc-1", "eu-1", "critical", func(i *correlate.Incident) { i.Remediation = "planned" })
		time.Sleep(20 * time.Second)
		f.incident(t, "inc-1", "eu-1", "critical", func(i *correlate.Incident) { i.AckedBy, i.AckedAt = "alice", i.UpdatedAt })
		now := time.Now()
		rem := &remediate.Remediation{
			ID: "rem-1", IncidentID: "inc-1", Playbook: "nodes-not-ready", Clusters: []string{"eu-1"}, State: remediate.StateWaiting,
			UpdatedAt: now, Steps: []*remediate.StepRun{{State: remediate.StepWaiting, Approval: &remediate.Approval{RequestedAt: now, ExpiresAt: now.Add(time.Hour)}}},
		}
		require.NoError(t, f.remeds.Save(rem))
		time.Sleep(20 * time.Second)
		synctest.Wait()
		require.Len(t, up.deliveries(), 5, "the receiver that is up got every event as it happened")
		require.Empty(t, down.deliveries())
		st := f.dispatcher.Status()
		require.Equal(t, "pager", st[1].Name)
		require.Equal(t, uint64(5), st[1].Pending)
		require.Positive(t, st[1].Failed)
		require.Contains(t, st[1].LastError, "503 Service Unavailable: down for maintenance")
		require.Equal(t, float64(5), testutil.ToFloat64(f.dispatcher.pending.WithLabelValues("pager")))

		down.setDown(false)
		time.Sleep(5 * time.Second) // max_backoff
		synctest.Wait()
		got := down.deliveries()
		require.Equal(t, types(up.deliveries()), types(got), "everything, in the same order")
		require.Equal(t, []string{
			"incident.opened", "incident.changed", "incident.acknowledged", "remediation.planned", "remediation.waiting_approval",
		}, func() []string {
			var out []string
			for _, r := range got {
				out = append(out, r.event.Type)
			}
			return out
		}())
		// The approval request carries a link for that request, which the token names.
		ap := got[4].event.Approval
		require.NotNil(t, ap)
		require.Equal(t, "http://fleetwatch.test/api/v1/approvals/"+ap.Token, ap.URL)
		c, err := f.dispatcher.o.Tokens.Parse(ap.Token, now)
		require.NoError(t, err)
		require.Equal(t, Claim{Remediation: "rem-1", Step: 0, Requested: now.UnixNano(), Expires: now.Add(time.Hour).Unix()}, c)
		require.Equal(t, "inc-1", got[4].event.Incident.ID, "a remediation event carries its incident")
		require.Equal(t, "http://fleetwatch.test/remediations/rem-1", got[4].event.Links.Remediation)
		st = f.dispatcher.Status()
		require.Zero(t, st[1].Pending)
		require.Zero(t, st[1].ConsecutiveFailures)
		require.Equal(t, uint64(5), st[1].Delivered)

		// Every receiver took everything: the journals are trimmed.
		time.Sleep(trimEvery)
		synctest.Wait()
		left, err := f.incidents.Events(0, 10)
		require.NoError(t, err)
		require.Empty(t, left)
	})
}

// A receiver gets only the events its filters let through; a new receiver starts at the newest
// event; a kill -9 after a delivery and before the cursor moved sends that event again with the
// same idempotency key, and nothing else twice.
func TestFiltersNewReceiversAndRedelivery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &sink{}
		f := newFixture(t, handlerTransport{s})
		f.incident(t, "inc-old", "eu-1", "critical", nil)
		rc := f.receiver(t, "payments", "http://receiver.test/", "s3cret-s3cret-s3cret")
		rc.Events = []string{"incident.opened", "incident.resolved"}
		rc.Match = config.HookMatchConfig{Severity: []string{"critical"}, Cluster: []string{"eu-1", "eu-2"}}
		require.NoError(t, f.dispatcher.ApplyConfig(config.HooksConfig{Receivers: []*config.HookReceiverConfig{rc}}))
		f.run(t)
		synctest.Wait()

		f.incident(t, "inc-warn", "eu-1", "warning", nil) // severity filtered out
		f.incident(t, "inc-us", "us-1", "critical", nil)  // cluster filtered out
		f.incident(t, "inc-eu2", "eu-2", "critical", nil) // delivered
		f.incident(t, "inc-eu2", "eu-2", "critical", nil) // changed: event type filtered out
		f.incident(t, "inc-eu2", "eu-2", "critical", func(i *correlate.Incident) { i.State, i.ResolvedAt = correlate.StateResolved, i.UpdatedAt })
		// What the incident engine does after a change: wake the receivers; then wait until
		// they are idle again.
		f.dispatcher.Wake()
		synctest.Wait()
		require.Equal(t, []string{"incident.opened incident-4-inc-eu2", "incident.resolved incident-6-inc-eu2"}, types(s.deliveries()),
			"inc-old predates the receiver; the others are filtered")

		// As after a kill -9 between the answer and the cursor's move: the cursor is back
		// before the last delivery.
		require.NoError(t, f.dispatcher.st.setCursor("payments", SourceIncident, 5))
		f.dispatcher.Wake()
		synctest.Wait()
		require.Equal(t, []string{"incident.opened incident-4-inc-eu2", "incident.resolved incident-6-inc-eu2", "incident.resolved incident-6-inc-eu2"},
			types(s.deliveries()), "at least once: the same delivery, the same key")
	})
}

func TestCheckRefusesUnknownEventTypes(t *testing.T) {
	rc := config.DefaultHookReceiver
	rc.Name, rc.Events = "x", []string{"incident.opened", "incident.reopened"}
	err := Check(config.HooksConfig{Receivers: []*config.HookReceiverConfig{&rc}})
	require.ErrorContains(t, err, `hooks.receivers[0] ("x"): events: "incident.reopened" is not an event type`)
}

func TestApprovalTokens(t *testing.T) {
	tokens, err := NewTokens("0123456789abcdef0123456789abcdef")
	require.NoError(t, err)
	other, err := NewTokens("fedcba9876543210fedcba9876543210")
	require.NoError(t, err)
	now := time.Unix(1_800_000_000, 0)
	r := &remediate.Remediation{ID: "rem-1", State: remediate.StateWaiting, Steps: []*remediate.StepRun{
		{State: remediate.StepWaiting, Approval: &remediate.Approval{RequestedAt: now, ExpiresAt: now.Add(time.Hour)}},
	}}
	tok := tokens.Token(r)
	c, err := tokens.Parse(tok, now)
	require.NoError(t, err)
	require.Equal(t, "rem-1", c.Remediation)

	_, err = other.Parse(tok, now)
	require.ErrorIs(t, err, ErrBadToken, "signed with another key")
	i := strings.LastIndexByte(tok, '.')
	forged := strings.Replace(tok[:i], "fwa1.", "fwa1.x", 1) + tok[i:]
	_, err = tokens.Parse(forged, now)
	require.ErrorIs(t, err, ErrBadToken, "a changed claim")
	for _, bad := range []string{"", ".", "fwa1.", "fwa1..", "nope.abc", tok + "x"} {
		_, err = tokens.Parse(bad, now)
		require.ErrorIs(t, err, ErrBadToken, bad)
	}
	_, err = tokens.Parse(tok, now.Add(time.Hour))
	require.ErrorIs(t, err, ErrTokenExpired)

	r.State = remediate.StateRunning
	require.Empty(t, tokens.Token(r), "nothing waits: no token")

	key, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "k"))
	require.NoError(t, err)
	require.Len(t, key, 64)
}
