package correlate_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/access"
)

// TestAccessIdentity: the incident API with the access layer's own identities, read with
// access.FromContext as cmd/fleetwatch wires it: the actor recorded is the identity's name, a
// team identity does not see another team's incident, and without an identity nothing acts.
func TestAccessIdentity(t *testing.T) {
	st, err := correlate.OpenStore(filepath.Join(t.TempDir(), "c.db"))
	require.NoError(t, err)
	defer st.Close()
	now := time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)
	e, err := correlate.New(correlate.Options{
		Store: st, Rules: correlate.DefaultRules, Now: func() time.Time { return now },
		Identify: func(ctx context.Context) (correlate.Caller, bool) { return access.FromContext(ctx) },
	})
	require.NoError(t, err)
	alert := func(cluster string) correlate.Alert {
		return correlate.Alert{Labels: map[string]string{"alertname": "FleetClusterNodesNotReady", "cluster": cluster}, StartsAt: now, Source: "rules"}
	}
	require.NoError(t, e.Ingest(context.Background(), []correlate.Alert{alert("eu-1"), alert("us-1")}))
	require.NoError(t, e.Evaluate(context.Background()))
	byCluster := map[string]string{}
	for _, inc := range e.Active() {
		byCluster[inc.Clusters[0]] = inc.ID
	}

	serve := func(id *access.Identity, method, path string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(""))
		if id != nil {
			req = req.WithContext(access.WithIdentity(req.Context(), *id))
		}
		rec := httptest.NewRecorder()
		e.Handler().ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	alice := access.NewIdentity("alice", access.KindUser, []access.Role{access.RoleOperate}, nil)
	team := access.NewIdentity("payments-oncall", access.KindUser, []access.Role{access.RoleOperate}, []string{"eu-1"})

	code, body := serve(nil, http.MethodPost, "/api/v1/incidents/"+byCluster["eu-1"]+"/ack")
	require.Equal(t, http.StatusForbidden, code, body)
	code, body = serve(&team, http.MethodPost, "/api/v1/incidents/"+byCluster["us-1"]+"/ack")
	require.Equal(t, http.StatusNotFound, code, body)
	code, body = serve(&team, http.MethodGet, "/api/v1/incidents?state=active")
	require.Equal(t, http.StatusOK, code, body)
	var list struct{ Data []correlate.Incident }
	require.NoError(t, json.Unmarshal([]byte(body), &list))
	require.Len(t, list.Data, 1)
	require.Equal(t, byCluster["eu-1"], list.Data[0].ID)

	for id, inc := range map[*access.Identity]string{&alice: byCluster["us-1"], &team: byCluster["eu-1"]} {
		code, body = serve(id, http.MethodPost, "/api/v1/incidents/"+inc+"/ack")
		require.Equal(t, http.StatusOK, code, body)
		stored, err := st.Incident(inc)
		require.NoError(t, err)
		require.Equal(t, id.String(), stored.AckedBy)
	}
}
