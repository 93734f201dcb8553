package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/internal/lab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestThanosMode: fleetwatch in front of a real Thanos (the thanos install). Every member
// remote-writes to fleetwatch, which checks the cluster's identity and forwards to Thanos
// Receive with the cluster as the tenant; the view reads the members' data back through
// Thanos Query (a StoreAPI source), where the rule pack finds NotReady nodes and the
// correlation opens an incident. Thanos Receive is then killed for 30 s: fleetwatch answers
// the members 5xx meanwhile, they retry, and once Receive is back Thanos holds every sample
// each member's own Prometheus has for the outage.
func TestThanosMode(t *testing.T) {
	testenv.SkipIfShort(t)
	thanos := testenv.Peer(t, "thanos")
	dir := t.TempDir()
	objstore := testenv.WriteFile(t, dir, "objstore.yml", "type: FILESYSTEM\nconfig:\n  directory: "+filepath.Join(dir, "bucket")+"\n")

	recvGRPC, recvHTTP, recvWrite := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	recvArgs := []string{"receive", "--tsdb.path=" + filepath.Join(dir, "receive"), "--objstore.config-file=" + objstore,
		"--grpc-address=" + recvGRPC, "--http-address=" + recvHTTP, "--remote-write.address=" + recvWrite,
		`--label=receive_replica="0"`, "--receive.tenant-label-name=tenant_id"}
	receive := testenv.Start(t, "thanos-receive", thanos, recvArgs...)
	receive.WaitReady(t, "http://"+recvHTTP+"/-/ready", 60*time.Second)

	queryGRPC, queryHTTP := testenv.FreePort(t), testenv.FreePort(t)
	tq := testenv.Start(t, "thanos-query", thanos, "query", "--endpoint="+recvGRPC,
		"--query.replica-label=receive_replica", "--grpc-address="+queryGRPC, "--http-address="+queryHTTP)
	tq.WaitReady(t, "http://"+queryHTTP+"/-/ready", 60*time.Second)

	started := time.Now()
	l := lab.Start(t, lab.Options{
		Clusters:  3,
		Rules:     "  evaluation_interval: 1s\n  pack: {node_ready_for: 5s}\n",
		Correlate: "  evaluation_interval: 1s\n",
		FleetwatchConfig: fmt.Sprintf(`ingest:
  forward: {url: "http://%s/api/v1/receive", timeout: 5s}
query:
  replica_labels: [receive_replica]
  stores:
    - {name: thanos, address: "%s", timeout: 10s}
`, recvWrite, queryGRPC),
	})
	c := l.Clusters

	// The members' series are in Thanos, each cluster its own tenant, stamped by fleetwatch.
	thanosAPI := apiClient(t, "http://"+queryHTTP)
	v, _, err := thanosAPI.Query(context.Background(), `count by (cluster, tenant_id) (up{job="kube-state-metrics"})`, time.Now())
	require.NoError(t, err)
	tenants := map[string]string{}
	for _, s := range v.(model.Vector) {
		tenants[string(s.Metric["cluster"])] = string(s.Metric["tenant_id"])
	}
	for _, cl := range c {
		require.Equal(t, cl, tenants[cl], "cluster %s's series are in Thanos under tenant %s", cl, cl)
	}

	// The rule pack reads them back through Thanos Query: NotReady nodes open an incident.
	l.UploadScenario(fmt.Sprintf("name: e2e-thanos\nsteps:\n  - {after: 0s, action: nodes_not_ready, cluster: %s, count: 5}\n", c[1]))
	l.Step("e2e-thanos")
	testenv.Eventually(t, 3*time.Minute, func() error {
		for _, inc := range l.Incidents("state=active") {
			if inc.Key == "nodes/"+c[1] {
				return nil
			}
		}
		return fmt.Errorf("no incident nodes/%s yet (active: %v)", c[1], lab.IncidentKeys(l.Incidents("state=active")))
	})

	// Receive is killed for 30 s, then comes back on the same data.
	receive.Kill()
	killed := time.Now()
	testenv.Eventually(t, time.Minute, func() error {
		if n := forwarded(t, l.FleetwatchURL, "error"); n == 0 {
			return fmt.Errorf("no forward has failed yet")
		}
		return nil
	})
	errorsBefore := forwarded(t, l.FleetwatchURL, "error")
	// The outage lasts 30 s: Eventually polls until then (members keep retrying meanwhile).
	testenv.Eventually(t, time.Minute, func() error {
		if d := time.Since(killed); d < 30*time.Second {
			return fmt.Errorf("Receive down for %s of 30s", d.Round(time.Second))
		}
		return nil
	})
	require.Greater(t, forwarded(t, l.FleetwatchURL, "error"), errorsBefore, "the members kept retrying while Receive was down")
	receive = testenv.Start(t, "thanos-receive-again", thanos, recvArgs...)
	receive.WaitReady(t, "http://"+recvHTTP+"/-/ready", 60*time.Second)
	back := time.Now()

	// Every sample each member scraped from a minute before the kill to a minute after Receive
	// came back is in Thanos: the members' queues drained through fleetwatch.
	from, to := killed.Add(-time.Minute), back.Add(time.Minute)
	testenv.Eventually(t, 3*time.Minute, func() error {
		if time.Now().Before(to.Add(10 * time.Second)) {
			return fmt.Errorf("waiting for the window to end")
		}
		for _, cl := range c {
			q := fmt.Sprintf(`count_over_time(up{job="kube-state-metrics", cluster=%q}[%ds])`, cl, int(to.Sub(from).Seconds()))
			member := countAt(t, apiClient(t, l.Members[cl].URL), strings.Replace(q, fmt.Sprintf(`, cluster=%q`, cl), "", 1), to)
			got := countAt(t, thanosAPI, q, to)
			if member == 0 || got != member {
				return fmt.Errorf("cluster %s: Thanos holds %g samples of up from %s to %s, its Prometheus %g", cl, got, from.Format(time.TimeOnly), to.Format(time.TimeOnly), member)
			}
		}
		return nil
	})
	// fleetwatch reads the same from Thanos Query as Thanos Query answers itself, over every
	// series of a cluster and several chunks of each (many gRPC messages: each one's chunks
	// must survive the next one's arrival).
	fleet := apiClient(t, l.FleetwatchURL)
	for _, cl := range c {
		q := fmt.Sprintf(`sum(count_over_time(kube_pod_status_phase{cluster=%q}[%ds]))`, cl, int(to.Sub(started).Seconds()))
		want := countAt(t, thanosAPI, q, to)
		require.Positive(t, want)
		require.Equal(t, want, countAt(t, fleet, q, to), "cluster %s: %s through fleetwatch and on Thanos Query", cl, q)
	}
	t.Logf("Receive down %s; %g forwards failed and were retried by the members; nothing lost",
		back.Sub(killed).Round(time.Second), forwarded(t, l.FleetwatchURL, "error"))
}

// countAt is the single value of q at ts (0 when empty).
func countAt(t *testing.T, a promv1.API, q string, ts time.Time) float64 {
	t.Helper()
	v, _, err := a.Query(context.Background(), q, ts)
	require.NoError(t, err)
	vec := v.(model.Vector)
	if len(vec) == 0 {
		return 0
	}
	require.Len(t, vec, 1, "%s", q)
	return float64(vec[0].Value)
}

// forwarded sums the fleetwatch's forwarded requests with result.
func forwarded(t *testing.T, base, result string) float64 {
	t.Helper()
	n, _, err := metricSum(base, collector.MetricForwarded, map[string]string{"result": result})
	require.NoError(t, err)
	return n
}
