package integration

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestFederationPull: fleetwatch pulls a real Prometheus through /federate with the scrape
// manager. The query set gives exactly what the member gives; a member whose series are
// labelled as another cluster has every scrape rejected, with the reason on /api/v1/targets,
// and nothing of it is stored.
func TestFederationPull(t *testing.T) {
	testenv.SkipIfShort(t)
	dir := t.TempDir()
	memberAddr, forgerAddr := testenv.FreePort(t), testenv.FreePort(t)
	// fleetwatch first: it pulls every half second, twice per member scrape, so every sample
	// the member takes is federated from the first one on.
	_, fw := startFleetwatch(t, dir, fmt.Sprintf(`
clusters:
  - name: fed
    labels: {region: eu-central-1, provider: onprem}
    federate:
      url: http://%s/federate
      match: ['{job="prometheus"}']
      interval: 500ms
  - name: forger
    federate:
      url: http://%s/federate
      match: ['{job="prometheus"}']
      interval: 500ms
`, memberAddr, forgerAddr))
	// The member labels itself with its own cluster name (accepted); the forger claims another.
	_, member := startPrometheusOn(t, "prometheus-fed", memberAddr, "  external_labels: {cluster: fed}", "", "")
	startPrometheusOn(t, "prometheus-forger", forgerAddr, "  external_labels: {cluster: victim}", "", "")
	fleet := apiClient(t, fw)

	mapi := apiClient(t, member)
	testenv.Eventually(t, 60*time.Second, func() error {
		return checkParity(t, mapi, fleet, "fed", time.Now().Add(-3*time.Second))
	})

	// The federation targets, as Prometheus shows them.
	type target struct {
		ScrapePool string            `json:"scrapePool"`
		Labels     map[string]string `json:"labels"`
		Health     string            `json:"health"`
		LastError  string            `json:"lastError"`
		ScrapeURL  string            `json:"scrapeUrl"`
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		code, body := rawGet(t, fw, "/api/v1/targets", url.Values{"state": {"active"}})
		if code != 200 {
			return fmt.Errorf("targets: %d %s", code, body)
		}
		var data struct {
			ActiveTargets []target `json:"activeTargets"`
		}
		if err := json.Unmarshal(decodeAPI(t, body).Data, &data); err != nil {
			return err
		}
		byPool := map[string]target{}
		for _, tg := range data.ActiveTargets {
			byPool[tg.ScrapePool] = tg
		}
		fed, forger := byPool["federate/fed"], byPool["federate/forger"]
		if fed.Health != "up" || fed.Labels["cluster"] != "fed" || fed.Labels["job"] != "federate" ||
			!strings.Contains(fed.ScrapeURL, "/federate?match%5B%5D=") {
			return fmt.Errorf("federate/fed target: %+v", fed)
		}
		if forger.Health != "down" || !strings.Contains(forger.LastError, `cluster label of another cluster`) {
			return fmt.Errorf("federate/forger target: %+v", forger)
		}
		return nil
	})

	// Nothing the forger sent is stored, under either name; its up is 0.
	for _, q := range []string{`count({cluster="victim"})`, `count({cluster="forger", job="prometheus"})`} {
		v, _, err := fleet.Query(ctx(t), q, time.Now())
		require.NoError(t, err)
		require.Empty(t, normalize(v), q)
	}
	v, _, err := fleet.Query(ctx(t), `up{job="federate"}`, time.Now())
	require.NoError(t, err)
	require.Contains(t, normalizeKeepCluster(v), `cluster="forger", instance="`+forgerAddr+`", job="federate"} = 0`)
	require.Contains(t, normalizeKeepCluster(v), `cluster="fed", instance="`+memberAddr+`", job="federate"} = 1`)
	_, metrics := rawGet(t, fw, "/metrics", nil)
	require.Contains(t, metrics, `fleetwatch_federate_rejected_scrapes_total{cluster="forger",reason="forged_cluster"}`)
	require.Contains(t, metrics, `fleetwatch_cluster_last_ingest_timestamp_seconds{cluster="fed"}`)
	require.NotContains(t, metrics, `fleetwatch_cluster_last_ingest_timestamp_seconds{cluster="forger"}`)
}
