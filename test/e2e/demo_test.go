package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/lab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestDemo runs the README's first command twice side by side: each serves the three simulated
// clusters through the query API, and Ctrl-C stops each cleanly, leaving no process, no port
// and no temporary directory behind.
func TestDemo(t *testing.T) {
	testenv.SkipIfShort(t)
	tmp := t.TempDir()
	type demo struct {
		p    *testenv.Process
		addr string
	}
	var demos []demo
	for i := range 2 {
		addr := testenv.FreePort(t)
		p := testenv.StartEnv(t, fmt.Sprintf("demo-%d", i), testenv.Fleetwatch(t), []string{"TMPDIR=" + tmp},
			"demo", "--web.listen-address="+addr, "--nodes=6", "--pods-per-node=4", "--scrape-interval=1s")
		p.WaitReady(t, "http://"+addr+"/-/ready", 30*time.Second)
		demos = append(demos, demo{p, addr})
	}
	for _, d := range demos {
		c, err := api.NewClient(api.Config{Address: "http://" + d.addr})
		require.NoError(t, err)
		papi := promv1.NewAPI(c)
		testenv.Eventually(t, 60*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			v, _, err := papi.Query(ctx, `sum by (cluster) (kube_node_info)`, time.Now())
			if err != nil {
				return err
			}
			got := lab.VectorByCluster(v)
			if len(got) != 3 || got["eu-1"] != 6 || got["eu-2"] != 6 || got["us-1"] != 6 {
				return fmt.Errorf("nodes per cluster: %v", got)
			}
			return nil
		})
		require.Contains(t, d.p.Log(), "Prometheus HTTP API    http://"+d.addr+"/api/v1/query")
		require.Contains(t, d.p.Log(), `sum by (cluster) (kube_pod_container_status_waiting_reason{reason="CrashLoopBackOff"})`)
		testenv.Eventually(t, 30*time.Second, func() error {
			if !strings.Contains(d.p.Log(), "placement of 12 x 500m/1Gi (POST /api/v1/placements): ") {
				return fmt.Errorf("no placement printed yet")
			}
			return nil
		})
		// fleetwatch's own log is in the file the banner names, not in the story.
		m := regexp.MustCompile(`fleetwatch's log +(\S+)`).FindStringSubmatch(d.p.Log())
		require.NotNil(t, m, "the banner names no log file")
		logged, err := os.ReadFile(m[1])
		require.NoError(t, err)
		require.Contains(t, string(logged), "level=INFO")
		require.NotContains(t, d.p.Log(), "level=INFO", "info-level log lines in the demo's output")
	}
	for _, d := range demos {
		require.NoError(t, d.p.Signal(os.Interrupt))
	}
	for _, d := range demos {
		require.NoError(t, d.p.Wait(30*time.Second), "demo did not exit cleanly on Ctrl-C")
		require.Contains(t, d.p.Log(), "stopping: agents, simulator, fleetwatch")
		ln, err := net.Listen("tcp", d.addr)
		require.NoError(t, err, "port still held after exit")
		ln.Close()
	}
	left, err := os.ReadDir(tmp)
	require.NoError(t, err)
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	require.Empty(t, names, "left behind in TMPDIR: %s", strings.Join(names, ", "))
}
