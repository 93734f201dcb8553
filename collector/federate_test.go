package collector

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	promcfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// fakeFederate serves a fixed exposition at /federate behind basic auth and records what the
// scraper asked for.
type fakeFederate struct {
	mtx     sync.Mutex
	body    string
	matches []string
	authed  bool
}

func (f *fakeFederate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	u, p, ok := r.BasicAuth()
	f.authed = ok && u == "fleet" && p == "s3cret"
	if !f.authed {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if r.URL.Path != "/prom/federate" {
		http.NotFound(w, r)
		return
	}
	f.matches = r.URL.Query()["match[]"]
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprint(w, f.body)
}

func (f *fakeFederate) set(body string) {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	f.body = body
}

func federateCluster(name, url string) *config.ClusterConfig {
	return &config.ClusterConfig{Name: name, Federate: &config.FederateConfig{
		URL:      url + "/prom/federate",
		Match:    []string{`{job="node"}`, `up`},
		Interval: model.Duration(100 * time.Millisecond),
		Timeout:  model.Duration(100 * time.Millisecond),
		HTTPClientConfig: promcfg.HTTPClientConfig{
			BasicAuth:       &promcfg.BasicAuth{Username: "fleet", Password: "s3cret"},
			FollowRedirects: true, EnableHTTP2: true,
		},
	}}
}

func TestFederatorStampsClusterAndRejectsForgedScrapes(t *testing.T) {
	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	reg := prometheus.NewRegistry()
	fed, err := NewFederator(Options{Appendable: db, Registerer: reg})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- fed.Run() }()
	t.Cleanup(func() { fed.Stop(); require.NoError(t, <-done) })

	src := &fakeFederate{}
	srv := httptest.NewServer(src)
	t.Cleanup(srv.Close)
	ts := time.Now().Add(-time.Second).UnixMilli()
	src.set(fmt.Sprintf("# TYPE node_load1 untyped\nnode_load1{job=\"node\",instance=\"a\"} 1.5 %d\nnode_load1{job=\"node\",instance=\"b\",cluster=\"east\"} 2 %d\n", ts, ts))
	require.NoError(t, fed.ApplyConfig(&config.Config{Clusters: []*config.ClusterConfig{
		{Name: "pusher", RemoteWrite: &config.RemoteWriteConfig{BearerToken: "x"}},
		federateCluster("east", srv.URL),
	}}))

	f := &fixture{t: t, db: db}
	host := strings.TrimPrefix(srv.URL, "http://")
	require.Eventually(t, func() bool {
		s := f.stored()
		return s[`{__name__="node_load1", cluster="east", instance="a", job="node"}`] == 1 &&
			s[`{__name__="node_load1", cluster="east", instance="b", job="node"}`] == 1 &&
			s[`{__name__="up", cluster="east", instance="`+host+`", job="federate"}`] >= 1
	}, 20*time.Second, 50*time.Millisecond, "stored: %v", f.stored())
	src.mtx.Lock()
	require.True(t, src.authed)
	require.Equal(t, []string{`{job="node"}`, `up`}, src.matches)
	src.mtx.Unlock()
	pools := fed.Targets().TargetsActive()
	require.Len(t, pools["federate/east"], 1)
	require.Equal(t, scrape.HealthGood, pools["federate/east"][0].Health())
	require.Greater(t, testutil.ToFloat64(fed.metrics.lastIngest.WithLabelValues("east")), 0.0)

	// A series labelled as another cluster fails the whole scrape: nothing of it is stored.
	ts2 := time.Now().UnixMilli()
	src.set(fmt.Sprintf("node_load1{job=\"node\",instance=\"a\"} 7 %d\nnode_load1{job=\"node\",instance=\"c\",cluster=\"west\"} 3 %d\n", ts2, ts2))
	require.Eventually(t, func() bool {
		tg := fed.Targets().TargetsActive()["federate/east"][0]
		return tg.Health() == scrape.HealthBad && tg.LastError() != nil && strings.Contains(tg.LastError().Error(), "cluster label of another cluster")
	}, 20*time.Second, 50*time.Millisecond)
	require.GreaterOrEqual(t, testutil.ToFloat64(fed.metrics.rejected.WithLabelValues("east", "forged_cluster")), 1.0)
	for s := range f.stored() {
		require.NotContains(t, s, "west", "a forged series was stored")
		require.NotContains(t, s, `instance="c"`, "part of a rejected scrape was stored")
	}
	require.Equal(t, 1, f.stored()[`{__name__="node_load1", cluster="east", instance="a", job="node"}`]-countStale(t, db, "a"),
		"the sample at ts2 from the rejected scrape was stored")

	// Reloading without the cluster stops pulling it.
	require.NoError(t, fed.ApplyConfig(&config.Config{}))
	require.Eventually(t, func() bool { return len(fed.Targets().TargetsActive()["federate/east"]) == 0 }, 20*time.Second, 50*time.Millisecond)
}

// countStale counts the staleness markers of node_load1{instance=...}.
func countStale(t *testing.T, db *tsdb.DB, instance string) int {
	t.Helper()
	q, err := db.Querier(0, time.Now().Add(time.Hour).UnixMilli())
	require.NoError(t, err)
	defer q.Close()
	set := q.Select(t.Context(), false, nil,
		labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "node_load1"),
		labels.MustNewMatcher(labels.MatchEqual, "instance", instance))
	n := 0
	for set.Next() {
		it := set.At().Iterator(nil)
		for it.Next() != 0 {
			_, v := it.At()
			if value.IsStaleNaN(v) {
				n++
			}
		}
	}
	require.NoError(t, set.Err())
	return n
}

func TestFederatorConfigErrorsNameTheCluster(t *testing.T) {
	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	fed, err := NewFederator(Options{Appendable: db})
	require.NoError(t, err)
	c := federateCluster("east", "http://127.0.0.1:1")
	c.Federate.Timeout = model.Duration(time.Minute)
	err = fed.ApplyConfig(&config.Config{Clusters: []*config.ClusterConfig{c}})
	require.ErrorContains(t, err, `cluster "east": federate: scrape timeout greater than scrape interval`)
}
