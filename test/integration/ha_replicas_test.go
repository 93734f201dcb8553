package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/correlate/amconfig"
	"github.com/fleetwatch/fleetwatch/internal/lab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// pager is a webhook receiver of Alertmanager's: it records each notification by path (one
// receiver each), incident key and status, with how many firing alerts it held.
type pager struct {
	mu    sync.Mutex
	notes []notification
}

type notification struct {
	path, key, status string
	firing            int
}

func (p *pager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var msg struct {
		Status      string            `json:"status"`
		GroupLabels map[string]string `json:"groupLabels"`
		Alerts      []struct {
			Status string `json:"status"`
		} `json:"alerts"`
	}
	if err := json.NewDecoder(r.Body).Decode(&msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n := notification{path: r.URL.Path, key: msg.GroupLabels[amconfig.LabelIncidentKey], status: msg.Status}
	for _, a := range msg.Alerts {
		if a.Status == "firing" {
			n.firing++
		}
	}
	p.mu.Lock()
	p.notes = append(p.notes, n)
	p.mu.Unlock()
}

// got lists the notifications path got for key with status.
func (p *pager) got(path, key, status string) []notification {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []notification
	for _, x := range p.notes {
		if x.path == path && x.key == key && x.status == status {
			out = append(out, x)
		}
	}
	return out
}

// TestHAIncidentsPageOnce: two fleetwatch replicas fed alike (every member remote-writes and
// sends its alerts to both, as the ha install is fed) each open the same incidents, and send
// them to one real Alertmanager configured by `fleetwatch alertmanager config`. It holds one
// alert per incident, not one per replica, and pages once for each: one firing notification
// of one alert, one resolved notification. Both replicas answer a query alike.
func TestHAIncidentsPageOnce(t *testing.T) {
	testenv.SkipIfShort(t)
	p := &pager{}
	srv := httptest.NewServer(p)
	defer srv.Close()
	dir := t.TempDir()
	pageURL := testenv.WriteFile(t, dir, "page-url", srv.URL+"/page\n")
	autoURL := testenv.WriteFile(t, dir, "automation-url", srv.URL+"/automation\n")
	teams := testenv.WriteFile(t, dir, "teams.yml", "fleet_oncall:\n  webhook_configs:\n    - url_file: "+pageURL+"\n")
	amConfig, err := exec.Command(testenv.Fleetwatch(t), "alertmanager", "config", "--teams-file="+teams, "--webhook-url-file="+autoURL).Output()
	require.NoError(t, err)

	l := lab.Start(t, lab.Options{
		Clusters:           4,
		Standby:            true,
		AlertmanagerConfig: string(amConfig),
		Rules:              "  evaluation_interval: 1s\n  pack: {crash_loop_for: 5s, silent_after: 20s}\n",
		Correlate:          "  evaluation_interval: 1s\n  resolve_after: 10s\n",
		MemberRules:        lab.MemberCrashLoopRules,
	})
	c := l.Clusters
	var ns, deploy string
	for w := range l.Truth()[c[2]].Images {
		ns, deploy, _ = strings.Cut(w, "/")
		break
	}
	// A silent cluster (one critical incident whose severity cannot change), and a bad rollout
	// to two clusters (a fleet incident gathering alerts from the rules and the members).
	l.UploadScenario(fmt.Sprintf(`name: e2e-ha
steps:
  - {after: 0s, action: silence, cluster: %[1]s}
  - {after: 0s, action: rollout, clusters: [%[2]s, %[3]s], namespace: %[4]s, deployment: %[5]s, image: registry.example/ha:v0-bad, crash: true, restarts_per_minute: 12}
`, c[1], c[2], c[3], ns, deploy))
	for range 2 {
		l.Step("e2e-ha")
	}
	silent := "cluster/" + c[1]
	keys := []string{silent, "rollout/" + ns + "/" + deploy}
	slices.Sort(keys)
	replicas := []string{l.FleetwatchURL, l.StandbyURL}

	// Both replicas hold both incidents (each with IDs of its own), and have delivered them.
	ids := map[string]map[string]string{} // key -> replica -> incident ID
	testenv.Eventually(t, 4*time.Minute, func() error {
		for _, r := range replicas {
			active := l.IncidentsAt(r, "state=active")
			if got := lab.IncidentKeys(active); !slices.Equal(got, keys) {
				return fmt.Errorf("%s has incidents %v, want %v", r, got, keys)
			}
			for _, inc := range active {
				if ids[inc.Key] == nil {
					ids[inc.Key] = map[string]string{}
				}
				ids[inc.Key][r] = inc.ID
			}
			if err := delivered(r); err != nil {
				return err
			}
		}
		return nil
	})
	for _, k := range keys {
		require.NotEqual(t, ids[k][l.FleetwatchURL], ids[k][l.StandbyURL], "each replica names incident %s its own way", k)
	}

	// Alertmanager holds one alert per incident, from whichever replica sent last, and pages
	// once for each: one notification, of one alert.
	testenv.Eventually(t, 2*time.Minute, func() error {
		byKey := map[string][]lab.AMAlert{}
		for _, a := range l.AlertmanagerAlerts() {
			if a.Labels[amconfig.LabelAlertName] == amconfig.AlertName && a.Status.State == "active" {
				byKey[a.Labels[amconfig.LabelIncidentKey]] = append(byKey[a.Labels[amconfig.LabelIncidentKey]], a)
			}
		}
		for _, k := range keys {
			if len(byKey[k]) != 1 {
				return fmt.Errorf("Alertmanager holds %d alerts for incident %s, want 1: %v", len(byKey[k]), k, byKey[k])
			}
			if id := byKey[k][0].Annotations[amconfig.AnnotationIncidentID]; id != ids[k][l.FleetwatchURL] && id != ids[k][l.StandbyURL] {
				return fmt.Errorf("incident %s in Alertmanager has incident_id %q, neither replica's", k, id)
			}
			if len(p.got("/page", k, "firing")) == 0 {
				return fmt.Errorf("incident %s not paged yet", k)
			}
		}
		if len(byKey) != len(keys) {
			return fmt.Errorf("Alertmanager holds incidents %v, want %v", byKey, keys)
		}
		return nil
	})

	// The same samples on both replicas: a query at a moment both have (two scrape intervals
	// ago) answers alike.
	at := time.Now().Add(-4 * time.Second)
	const q = `sum by (cluster) (kube_pod_container_status_restarts_total)`
	var answers []string
	for _, r := range replicas {
		v, _, err := apiClient(t, r).Query(context.Background(), q, at)
		require.NoError(t, err)
		require.NotEmpty(t, lab.VectorByCluster(v))
		answers = append(answers, v.String())
	}
	require.Equal(t, answers[0], answers[1], "both replicas answer %s at %s alike", q, at)

	// Recovery: both replicas resolve, and Alertmanager tells it once.
	l.StopScenario("e2e-ha")
	testenv.Eventually(t, 5*time.Minute, func() error {
		for _, r := range replicas {
			if a := l.IncidentsAt(r, "state=active"); len(a) > 0 {
				return fmt.Errorf("%s still has %v", r, lab.IncidentKeys(a))
			}
		}
		for _, k := range keys {
			if len(p.got("/page", k, "resolved")) == 0 {
				return fmt.Errorf("incident %s resolved, not told yet", k)
			}
		}
		return nil
	})
	// Every page held one firing alert per incident, never one per replica. The silent
	// cluster's incident, whose labels never change, paged exactly once and resolved once;
	// the rollout's may page again when its severity rises (a new label set, as with one
	// replica).
	for _, k := range keys {
		for _, path := range []string{"/page", "/automation"} {
			for _, n := range p.got(path, k, "firing") {
				require.Equal(t, 1, n.firing, "%s: a notification of incident %s", path, k)
			}
		}
	}
	for _, path := range []string{"/page", "/automation"} {
		require.Len(t, p.got(path, silent, "firing"), 1, "%s: firing notifications of %s", path, silent)
		require.Len(t, p.got(path, silent, "resolved"), 1, "%s: resolved notifications of %s", path, silent)
	}
}

// delivered: the fleetwatch at base has nothing waiting for Alertmanager and has posted to it.
func delivered(base string) error {
	outbox, ok, err := metricSum(base, correlate.MetricOutbox, nil)
	if err != nil {
		return err
	}
	sent, _, err := metricSum(base, correlate.MetricNotifications, map[string]string{"result": "success"})
	if err != nil {
		return err
	}
	if !ok || outbox != 0 || sent == 0 {
		return fmt.Errorf("%s: outbox %g, %g notifications delivered", base, outbox, sent)
	}
	return nil
}
