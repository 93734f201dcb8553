package schedule

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

func testService(t *testing.T, now *time.Time, publish func(context.Context, *Snapshot, []ClusterScore) error) (*Service, *prometheus.Registry, *httptest.Server) {
	reg := prometheus.NewRegistry()
	svc, err := New(Options{
		Source: testSource(t),
		Settings: testSettings(
			&config.ClusterConfig{Name: "eu-1", Labels: map[string]string{"region": "eu"}, Compliance: []string{"pci"}},
			&config.ClusterConfig{Name: "us-1", Labels: map[string]string{"region": "us"}},
		),
		Publish: publish, Registerer: reg, Now: func() time.Time { return *now },
	})
	require.NoError(t, err)
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return svc, reg, srv
}

func post(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(b, &out), string(b))
	return resp.StatusCode, out
}

func TestServiceHTTP(t *testing.T) {
	now := time.Unix(9*60, 0)
	var published []ClusterScore
	svc, reg, srv := testService(t, &now, func(_ context.Context, _ *Snapshot, sc []ClusterScore) error { published = sc; return nil })

	// No snapshot yet: 503, not a guess.
	code, out := post(t, srv.URL+"/api/v1/placements", `{"replicas": 1, "cpu": "500m"}`)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "unavailable", out["errorType"])

	require.NoError(t, svc.Refresh(t.Context()))
	require.Len(t, published, 2)
	require.True(t, published[0].Schedulable)
	require.Equal(t, "eu-1", published[0].Cluster)
	require.False(t, published[1].Schedulable)

	// Metrics: eu-1 has 40 x 0.85 - 10 = 24 cores free; us-1 is filtered, score 0.
	require.InDelta(t, 24, testutil.ToFloat64(svc.freeCPU.WithLabelValues("eu-1")), 1e-9)
	require.Greater(t, testutil.ToFloat64(svc.score.WithLabelValues("eu-1")), 0.0)
	require.Zero(t, testutil.ToFloat64(svc.score.WithLabelValues("us-1")))
	require.Zero(t, testutil.ToFloat64(svc.schedulable.WithLabelValues("us-1")))
	require.Equal(t, 1.0, testutil.ToFloat64(svc.schedulable.WithLabelValues("eu-1")))
	n, err := testutil.GatherAndCount(reg, "fleetwatch_cluster_placement_score", "fleetwatch_cluster_free_cpu_cores", "fleetwatch_cluster_free_memory_bytes")
	require.NoError(t, err)
	require.Equal(t, 6, n)

	// A placement, with quantities as Kubernetes writes them and one weight overridden.
	code, out = post(t, srv.URL+"/api/v1/placements", `{"workload": "shop/api", "replicas": 3, "cpu": "500m", "memory": "1Gi", "constraints": {"compliance": ["pci"]}, "weights": {"cost": 2}}`)
	require.Equal(t, http.StatusOK, code, out)
	data := out["data"].(map[string]any)
	require.Equal(t, true, data["feasible"])
	require.Equal(t, []any{map[string]any{"cluster": "eu-1", "replicas": 3.0, "score": data["placements"].([]any)[0].(map[string]any)["score"]}}, data["placements"])
	clusters := data["clusters"].([]any)
	require.Len(t, clusters, 2)
	require.Contains(t, clusters[0].(map[string]any)["why"], "gets 3")
	require.Contains(t, clusters[1].(map[string]any)["why"], "filtered: stale: last data 4m0s ago")
	require.Contains(t, clusters[1].(map[string]any)["filtered"], `lacks compliance tag "pci"`)

	// Valid but unsatisfiable: 422 with the decision and a reason per cluster.
	code, out = post(t, srv.URL+"/api/v1/placements", `{"replicas": 100, "cpu": 1}`)
	require.Equal(t, http.StatusUnprocessableEntity, code)
	require.Equal(t, "unsatisfiable", out["errorType"])
	require.Equal(t, "only 24 of 100 replicas fit within the 85% ceiling on the 1 cluster(s) that pass every constraint", out["error"])
	require.NotNil(t, out["data"])

	// Bad requests: 400 saying what is wrong.
	for body, want := range map[string]string{
		``:                                       "empty body: want a JSON object",
		`{"replicas": -1, "cpu": 1}`:             "replicas: must be >= 1, got -1",
		`{"replicas": 1, "cpu": "lots"}`:         `"lots" is not a quantity`,
		`{"replicas": 1, "cpu": 1, "colour": 1}`: `unknown field "colour"`,
		`{"replicas": "two", "cpu": 1}`:          "replicas: want int, got a JSON string",
		`{"replicas": 1, "cpu": 1, "constraints": {"compliance": ["hipaa"]}}`: `constraints.compliance: "hipaa" is not known; known: pci`,
		`{"replicas": 1, "cpu": 1} {}`:                                        "body: more than one JSON value",
		`{"replicas": 1,`:                                                     "body: ",
	} {
		code, out := post(t, srv.URL+"/api/v1/placements", body)
		require.Equal(t, http.StatusBadRequest, code, body)
		require.Equal(t, "bad_data", out["errorType"], body)
		require.Contains(t, out["error"], want, body)
	}

	// What-if: eu-1 fails; us-1 is stale, so nothing can take its pods.
	code, out = post(t, srv.URL+"/api/v1/whatif", `{"fail": ["eu-1"]}`)
	require.Equal(t, http.StatusOK, code, out)
	data = out["data"].(map[string]any)
	require.Equal(t, false, data["absorbed"])
	require.Equal(t, 3.0, data["moved"].(map[string]any)["pods"])
	code, out = post(t, srv.URL+"/api/v1/whatif", `{"fail": ["nope"]}`)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, out["error"], `fail: cluster "nope" is not known`)

	resp, err := http.Get(srv.URL + "/api/v1/placements/snapshot")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	require.Equal(t, 1.0, testutil.ToFloat64(svc.decisions.WithLabelValues("placement", "placed")))
	require.Equal(t, 1.0, testutil.ToFloat64(svc.decisions.WithLabelValues("placement", "unsatisfiable")))
	require.Equal(t, 8.0, testutil.ToFloat64(svc.decisions.WithLabelValues("placement", "bad_request")))

	// The snapshot grows old (refreshes failing): placement says so instead of deciding.
	now = now.Add(5 * time.Minute)
	code, out = post(t, srv.URL+"/api/v1/placements", `{"replicas": 1, "cpu": 1}`)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, out["error"], "the fleet snapshot is 5m0s old")
}

func TestNewValidates(t *testing.T) {
	_, err := New(Options{})
	require.ErrorContains(t, err, "Options.Source.Query is required")
	query := func(context.Context, string, time.Time) (promql.Vector, error) { return nil, nil }
	st := testSettings()
	st.Schedule.Headroom = 1
	_, err = New(Options{Source: Source{Query: query}, Settings: st})
	require.ErrorContains(t, err, "schedule.headroom: must be in [0, 1), got 1")
	st = testSettings()
	st.Pack.SaturationRatio = 0
	_, err = New(Options{Source: Source{Query: query}, Settings: st})
	require.ErrorContains(t, err, "rules.pack.saturation_ratio: must be in (0, 1], got 0")
}

func TestReasonJSONRoundTrip(t *testing.T) {
	r := Reasons{{kind: reasonNotReady, f1: 0.5, f2: 0.9}, {kind: reasonCompliance, s: "pci"}}
	b, err := json.Marshal(r)
	require.NoError(t, err)
	require.JSONEq(t, `["unhealthy: 50% of nodes Ready (minimum 90%)", "lacks compliance tag \"pci\""]`, string(b))
	var back Reasons
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, r.Strings(), back.Strings())
}

// TestServiceRun runs the refresh loop on synctest's fake clock: a snapshot at once, then one
// every interval, one at once after ApplySettings, none while disabled, and Run returns when
// its context ends. (time.Sleep in the bubble moves the fake clock; nothing waits in real time.)
func TestServiceRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var refreshes atomic.Int32
		enabled := atomic.Bool{}
		enabled.Store(true)
		st := testSettings()
		svc, err := New(Options{
			Source: Source{Query: func(context.Context, string, time.Time) (promql.Vector, error) {
				return promql.Vector{{Metric: labels.FromStrings("cluster", "eu-1"), F: 1}}, nil
			}},
			Settings: st,
			Publish:  func(context.Context, *Snapshot, []ClusterScore) error { refreshes.Add(1); return nil },
		})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- svc.Run(ctx, enabled.Load) }()

		synctest.Wait()
		require.EqualValues(t, 1, refreshes.Load(), "a snapshot at once")
		time.Sleep(st.interval() - time.Nanosecond)
		synctest.Wait()
		require.EqualValues(t, 1, refreshes.Load(), "not before the interval")
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		require.EqualValues(t, 2, refreshes.Load(), "one every interval")

		st.Schedule.RefreshInterval = model.Duration(time.Minute)
		require.NoError(t, svc.ApplySettings(st))
		synctest.Wait()
		require.EqualValues(t, 3, refreshes.Load(), "at once after new settings")
		time.Sleep(15 * time.Second)
		synctest.Wait()
		require.EqualValues(t, 3, refreshes.Load(), "the new interval applies")

		enabled.Store(false)
		time.Sleep(3 * time.Minute)
		synctest.Wait()
		require.EqualValues(t, 3, refreshes.Load(), "no refresh while disabled")

		cancel()
		require.NoError(t, <-done)
	})
}
