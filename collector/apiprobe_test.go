package collector

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"

	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// API server behaviours of fakeAPIServer.
const (
	readyOK   = "ok"   // 200 "ok", what a ready kube-apiserver answers
	readyFail = "fail" // 500 with the failed checks, what an API server whose etcd is gone answers
	readyHang = "hang" // no answer until the client gives up
)

// fakeAPIServer is the /readyz of a kube-apiserver behind real TLS (httptest's certificate),
// answering as its mode says and recording who asked.
type fakeAPIServer struct {
	*httptest.Server
	mtx      sync.Mutex
	mode     string
	requests []string // "path bearer-token"
	release  chan struct{}
}

func newFakeAPIServer() *fakeAPIServer {
	s := &fakeAPIServer{mode: readyOK, release: make(chan struct{})}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mtx.Lock()
		mode := s.mode
		s.requests = append(s.requests, r.URL.Path+" "+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		s.mtx.Unlock()
		switch mode {
		case readyOK:
			fmt.Fprint(w, "ok")
		case readyFail:
			http.Error(w, "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed", http.StatusInternalServerError)
		case readyHang:
			select {
			case <-r.Context().Done():
			case <-s.release:
			}
		default:
			fmt.Fprint(w, mode) // 200 with another body
		}
	}))
	return s
}

func (s *fakeAPIServer) set(mode string) {
	s.mtx.Lock()
	defer s.mtx.Unlock()
	s.mode = mode
}

func (s *fakeAPIServer) seen() []string {
	s.mtx.Lock()
	defer s.mtx.Unlock()
	return slices.Clone(s.requests)
}

func (s *fakeAPIServer) Close() {
	close(s.release)
	s.Server.Close()
}

// kubeconfig writes a kubeconfig for the server (its CA inline, a bearer token) into dir.
func (s *fakeAPIServer) kubeconfig(t *testing.T, dir, name, token string) string {
	t.Helper()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	return testenv.WriteFile(t, dir, name+".kubeconfig", fmt.Sprintf(`apiVersion: v1
kind: Config
current-context: fleetwatch@%[1]s
clusters:
  - name: %[1]s
    cluster:
      server: %[2]s
      certificate-authority-data: %[3]s
users:
  - name: fleetwatch
    user:
      token: %[4]s
contexts:
  - name: fleetwatch@%[1]s
    context: {cluster: %[1]s, user: fleetwatch}
`, name, s.URL, base64.StdEncoding.EncodeToString(ca), token))
}

// loadProbeConfig loads a fleetwatch.yml with the clusters, each with a kubeconfig for its
// server (nil: none), the way serve does.
func loadProbeConfig(t *testing.T, probe string, servers map[string]*fakeAPIServer, order ...string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString(probe + "\nclusters:\n")
	for _, c := range order {
		testenv.WriteFile(t, dir, c+".token", "ingest-"+c)
		fmt.Fprintf(&b, "  - name: %s\n    remote_write: {bearer_token_file: %s.token}\n", c, c)
		if s := servers[c]; s != nil {
			fmt.Fprintf(&b, "    kubeconfig_file: %s\n", s.kubeconfig(t, dir, c, "probe-"+c))
		}
	}
	cfg, err := config.Load([]byte(b.String()), dir)
	require.NoError(t, err)
	return cfg
}

// TestAPIProbeAnswers: a probe over real TLS to a real listener uses the kubeconfig's server,
// CA and token, asks /readyz, and counts only 200 "ok" as up.
func TestAPIProbeAnswers(t *testing.T) {
	srv := newFakeAPIServer()
	srv.StartTLS()
	defer srv.Close()

	cfg := loadProbeConfig(t, "api_probe: {interval: 15s, timeout: 5s}", map[string]*fakeAPIServer{"eu-1": srv, "eu-2": srv}, "eu-1", "eu-2", "us-1")
	// eu-2's client does not trust the server's CA (the system roots do not have it).
	cfg.Cluster("eu-2").KubeConfig.CAData = nil
	targets, err := apiTargets(cfg)
	require.NoError(t, err)
	require.Len(t, targets, 2, "us-1 has no kubeconfig_file")
	defer func() {
		for _, tg := range targets {
			tg.http.CloseIdleConnections()
		}
	}()
	eu1 := targets["eu-1"]
	ctx := context.Background()

	require.NoError(t, eu1.probe(ctx))
	require.Equal(t, []string{"/readyz probe-eu-1"}, srv.seen())

	srv.set(readyFail)
	err = eu1.probe(ctx)
	require.ErrorContains(t, err, "GET /readyz: ")
	require.ErrorContains(t, err, "etcd failed")

	srv.set("not ready")
	require.EqualError(t, eu1.probe(ctx), `GET /readyz: 200 "not ready", want 200 "ok"`)

	srv.set(readyOK)
	require.NoError(t, eu1.probe(ctx))

	err = targets["eu-2"].probe(ctx)
	require.ErrorContains(t, err, "certificate signed by unknown authority")
	require.Len(t, srv.seen(), 4, "no request without a verified server")
}

// pipeListener is an in-memory listener: connections are net.Pipes, whose blocking is durable
// for testing/synctest, so a TLS API server and client-go's transport run in a bubble with its
// fake clock (a real socket would keep the clock from advancing). Dial is the client's side,
// a rest.Config's Dial.
type pipeListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener(port int) *pipeListener {
	return &pipeListener{
		addr:  &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port},
		conns: make(chan net.Conn),
		done:  make(chan struct{}),
	}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return l.addr }

func (l *pipeListener) Dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startPipeAPIServer starts a fake API server with real TLS on an in-memory listener.
func startPipeAPIServer(port int) (*fakeAPIServer, *pipeListener) {
	s := newFakeAPIServer()
	s.Listener.Close() // the loopback listener httptest opened
	l := newPipeListener(port)
	s.Listener = l
	s.StartTLS()
	return s, l
}

// memSample is a sample memView keeps.
type memSample struct {
	ts int64
	v  float64
}

// memView is an in-memory storage.Appendable that keeps committed samples by series, and,
// like the TSDB, refuses a sample not after the series' last one.
type memView struct {
	mtx    sync.Mutex
	series map[string][]memSample // "metric cluster"
}

func (m *memView) Appender(context.Context) storage.Appender { return &memAppender{view: m} }

func (m *memView) samples(metric, cluster string) []memSample {
	m.mtx.Lock()
	defer m.mtx.Unlock()
	return slices.Clone(m.series[metric+" "+cluster])
}

type memAppender struct {
	storage.Appender // only Append, Commit and Rollback are used
	view             *memView
	pending          map[string]memSample
}

func (a *memAppender) Append(_ storage.SeriesRef, ls labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	if a.pending == nil {
		a.pending = map[string]memSample{}
	}
	a.pending[ls.Get(labels.MetricName)+" "+ls.Get(config.ClusterLabel)] = memSample{t, v}
	return 0, nil
}

func (a *memAppender) Commit() error {
	a.view.mtx.Lock()
	defer a.view.mtx.Unlock()
	if a.view.series == nil {
		a.view.series = map[string][]memSample{}
	}
	for k, s := range a.pending {
		if old := a.view.series[k]; len(old) > 0 && old[len(old)-1].ts >= s.ts {
			return fmt.Errorf("%s: sample at %d not after %d", k, s.ts, old[len(old)-1].ts)
		}
	}
	for k, s := range a.pending {
		a.view.series[k] = append(a.view.series[k], s)
	}
	return nil
}

func (a *memAppender) Rollback() error { a.pending = nil; return nil }

// TestAPIProberRun probes two clusters on the fake clock: each every interval, concurrently
// (one API server hanging does not delay the other's samples), a probe never longer than the
// timeout, and ApplyConfig removing, keeping and changing clusters.
func TestAPIProberRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, la := startPipeAPIServer(6443)
		defer a.Close()
		b, lb := startPipeAPIServer(6444)
		defer b.Close()
		cfg := loadProbeConfig(t, "api_probe: {interval: 15s, timeout: 5s}", map[string]*fakeAPIServer{"eu-1": a, "eu-2": b}, "eu-1", "eu-2", "us-1")
		cfg.Cluster("eu-1").KubeConfig.Dial = la.Dial
		cfg.Cluster("eu-2").KubeConfig.Dial = lb.Dial

		view := &memView{}
		reg := prometheus.NewRegistry()
		p, err := NewAPIProber(Options{Appendable: view, Registerer: reg})
		require.NoError(t, err)
		require.NoError(t, p.ApplyConfig(cfg))
		start := time.Now()
		at := func(d time.Duration) int64 { return timestamp.FromTime(start.Add(d)) }
		// want checks a cluster's series in the view: (offset from start, up, probe seconds).
		want := func(cluster string, samples ...[3]float64) {
			t.Helper()
			var up, took []memSample
			for _, s := range samples {
				up = append(up, memSample{at(time.Duration(s[0] * float64(time.Second))), s[1]})
				took = append(took, memSample{at(time.Duration(s[0] * float64(time.Second))), s[2]})
			}
			require.Equal(t, up, view.samples(APIUpMetric, cluster), "%s of %s", APIUpMetric, cluster)
			require.Equal(t, took, view.samples(APIProbeDurationMetric, cluster), "%s of %s", APIProbeDurationMetric, cluster)
		}

		synctest.Wait()
		require.Empty(t, a.seen(), "nothing is probed before Run")

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()

		// Both are probed at once: up, in no time (the fake clock stands still during I/O).
		synctest.Wait()
		want("eu-1", [3]float64{0, 1, 0})
		want("eu-2", [3]float64{0, 1, 0})
		require.Empty(t, view.samples(APIUpMetric, "us-1"), "us-1 has no kubeconfig_file")
		require.Equal(t, 1.0, testutil.ToFloat64(p.up.WithLabelValues("eu-1")))

		// eu-2's API server stops answering. eu-1's next sample comes on time while eu-2's
		// probe waits; eu-2's probe gives up at the timeout: down, after exactly 5s.
		b.set(readyHang)
		time.Sleep(15 * time.Second)
		synctest.Wait()
		want("eu-1", [3]float64{0, 1, 0}, [3]float64{15, 1, 0})
		want("eu-2", [3]float64{0, 1, 0})
		time.Sleep(5 * time.Second)
		synctest.Wait()
		want("eu-2", [3]float64{0, 1, 0}, [3]float64{15, 0, 5})
		require.Equal(t, 0.0, testutil.ToFloat64(p.up.WithLabelValues("eu-2")))
		require.Equal(t, 5.0, testutil.ToFloat64(p.duration.WithLabelValues("eu-2")))

		// eu-2 answers 500, eu-1 200: down and up, in no time.
		b.set(readyFail)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		want("eu-1", [3]float64{0, 1, 0}, [3]float64{15, 1, 0}, [3]float64{30, 1, 0})
		want("eu-2", [3]float64{0, 1, 0}, [3]float64{15, 0, 5}, [3]float64{30, 0, 0})
		require.Equal(t, []string{"/readyz probe-eu-2", "/readyz probe-eu-2", "/readyz probe-eu-2"}, b.seen())

		// eu-2 leaves the configuration: no more probes, its series end with a staleness
		// marker, its gauges go. eu-1, unchanged, keeps its schedule.
		time.Sleep(time.Second)
		without := *cfg
		without.Clusters = []*config.ClusterConfig{cfg.Cluster("eu-1"), cfg.Cluster("us-1")}
		require.NoError(t, p.ApplyConfig(&without))
		synctest.Wait()
		last := view.samples(APIUpMetric, "eu-2")
		require.Len(t, last, 4)
		require.Equal(t, at(31*time.Second), last[3].ts)
		require.True(t, value.IsStaleNaN(last[3].v))
		took := view.samples(APIProbeDurationMetric, "eu-2")
		require.True(t, value.IsStaleNaN(took[len(took)-1].v))
		require.Equal(t, 1, testutil.CollectAndCount(p.up), "only eu-1's gauge is left")
		time.Sleep(14 * time.Second)
		synctest.Wait()
		want("eu-1", [3]float64{0, 1, 0}, [3]float64{15, 1, 0}, [3]float64{30, 1, 0}, [3]float64{45, 1, 0})
		require.Len(t, b.seen(), 3, "eu-2 is no longer probed")
		require.Len(t, view.samples(APIUpMetric, "eu-2"), 4)

		// eu-1's kubeconfig changes (a new token): probed at once with it, then every interval
		// from then on.
		time.Sleep(5 * time.Second)
		rotated := without
		eu1 := *cfg.Cluster("eu-1")
		eu1.KubeConfig = rest.CopyConfig(eu1.KubeConfig)
		eu1.KubeConfig.BearerToken = "rotated"
		rotated.Clusters = []*config.ClusterConfig{&eu1}
		require.NoError(t, p.ApplyConfig(&rotated))
		synctest.Wait()
		time.Sleep(15 * time.Second)
		synctest.Wait()
		want("eu-1", [3]float64{0, 1, 0}, [3]float64{15, 1, 0}, [3]float64{30, 1, 0}, [3]float64{45, 1, 0}, [3]float64{50, 1, 0}, [3]float64{65, 1, 0})
		seen := a.seen()
		require.Equal(t, []string{"/readyz rotated", "/readyz rotated"}, seen[len(seen)-2:])
		require.Equal(t, "/readyz probe-eu-1", seen[len(seen)-3])

		// Run returns once every probe stopped; nothing is probed after.
		cancel()
		require.NoError(t, <-done)
		n := len(a.seen())
		time.Sleep(time.Minute)
		synctest.Wait()
		require.Len(t, a.seen(), n)
	})
}

// TestAPIProberStopsAProbeInFlight: a probe cancelled by a reload or shutdown records nothing;
// an API server that never answers says nothing about the cluster fleetwatch stopped asking.
func TestAPIProberStopsAProbeInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, la := startPipeAPIServer(6443)
		defer a.Close()
		a.set(readyHang)
		cfg := loadProbeConfig(t, "api_probe: {interval: 15s, timeout: 10s}", map[string]*fakeAPIServer{"eu-1": a}, "eu-1")
		cfg.Cluster("eu-1").KubeConfig.Dial = la.Dial
		view := &memView{}
		p, err := NewAPIProber(Options{Appendable: view})
		require.NoError(t, err)
		require.NoError(t, p.ApplyConfig(cfg))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		require.Len(t, a.seen(), 1, "the probe is waiting for an answer")
		cancel()
		require.NoError(t, <-done)
		require.Empty(t, view.samples(APIUpMetric, "eu-1"))
	})
}

// TestAPIProberConfig: a client configuration client-go refuses fails ApplyConfig and
// CheckConfig naming the cluster and the field, and leaves the running set alone; probe
// settings out of range are refused too.
func TestAPIProberConfig(t *testing.T) {
	p, err := NewAPIProber(Options{Appendable: &memView{}, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	good := &config.Config{APIProbe: config.DefaultAPIProbe, Clusters: []*config.ClusterConfig{
		{Name: "eu-1", KubeConfig: &rest.Config{Host: "https://eu-1.example.com:6443", BearerToken: "t"}},
		{Name: "us-1"},
	}}
	require.NoError(t, p.CheckConfig(good))
	require.NoError(t, p.ApplyConfig(good))
	require.Len(t, p.targets, 1)

	bad := &config.Config{APIProbe: config.DefaultAPIProbe, Clusters: []*config.ClusterConfig{
		{Name: "eu-2", KubeConfig: &rest.Config{Host: "https://eu-2.example.com:6443", TLSClientConfig: rest.TLSClientConfig{CAFile: "testdata/missing-ca.pem"}}},
	}}
	want := `cluster "eu-2": kubeconfig_file: open testdata/missing-ca.pem: no such file or directory`
	require.EqualError(t, p.CheckConfig(bad), want)
	require.EqualError(t, p.ApplyConfig(bad), want)
	require.Contains(t, p.targets, "eu-1", "a refused configuration changes nothing")

	zero := &config.Config{Clusters: good.Clusters}
	require.EqualError(t, p.ApplyConfig(zero), "api_probe.interval: must be > 0, got 0s")
	require.NoError(t, p.ApplyConfig(&config.Config{Clusters: []*config.ClusterConfig{{Name: "us-1"}}}), "nothing to probe, nothing to check")

	_, err = NewAPIProber(Options{})
	require.EqualError(t, err, "collector: Options.Appendable is required")
}
