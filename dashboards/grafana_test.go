package dashboards

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

const testToken = "glsa_test-token"

// fakeGrafana answers the requests a push makes the way Grafana's HTTP API does, and fails the
// test on any request that does not have the shape Grafana expects: path, method, bearer
// token, JSON body with the fields Grafana reads.
type fakeGrafana struct {
	t  *testing.T
	mu sync.Mutex
	// folders by uid (title); dashboards by uid (model, folder uid, version).
	folders    map[string]string
	dashboards map[string]storedDashboard
	// requests are "METHOD path", in order.
	requests []string
	// status, when set, is the answer to every request.
	status int
	// failUID is a dashboard whose save is refused.
	failUID string
}

type storedDashboard struct {
	model   map[string]any
	folder  string
	version int
}

func newFakeGrafana(t *testing.T) (*fakeGrafana, *httptest.Server) {
	g := &fakeGrafana{t: t, folders: map[string]string{}, dashboards: map[string]storedDashboard{}}
	srv := httptest.NewServer(http.StripPrefix("/grafana", g))
	t.Cleanup(srv.Close)
	return g, srv
}

func (g *fakeGrafana) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.t
	g.requests = append(g.requests, r.Method+" "+r.URL.Path)
	if r.Header.Get("Authorization") != "Bearer "+testToken {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"message":"Unauthorized"}`)
		return
	}
	if g.status != 0 {
		w.WriteHeader(g.status)
		_, _ = io.WriteString(w, `{"message":"injected failure"}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	reply := func(code int, v any) {
		w.WriteHeader(code)
		require.NoError(t, json.NewEncoder(w).Encode(v))
	}
	readBody := func() map[string]any {
		require.Equal(t, "application/json", r.Header.Get("Content-Type"), "%s %s", r.Method, r.URL.Path)
		var body map[string]any
		require.NoError(t, json.NewDecoder(r.Body).Decode(&body))
		return body
	}
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/api/folders/"):
		uid := strings.TrimPrefix(r.URL.Path, "/api/folders/")
		title, ok := g.folders[uid]
		if !ok {
			reply(http.StatusNotFound, map[string]any{"message": "folder not found", "status": "not-found"})
			return
		}
		reply(http.StatusOK, map[string]any{"uid": uid, "title": title})
	case r.Method == http.MethodPost && r.URL.Path == "/api/folders":
		body := readBody()
		uid, _ := body["uid"].(string)
		title, _ := body["title"].(string)
		require.NotEmpty(t, uid, "folder uid")
		require.NotEmpty(t, title, "folder title")
		g.folders[uid] = title
		reply(http.StatusOK, map[string]any{"uid": uid, "title": title})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/api/dashboards/uid/"):
		uid := strings.TrimPrefix(r.URL.Path, "/api/dashboards/uid/")
		d, ok := g.dashboards[uid]
		if !ok {
			reply(http.StatusNotFound, map[string]any{"message": "Dashboard not found", "status": "not-found"})
			return
		}
		reply(http.StatusOK, map[string]any{"dashboard": d.model, "meta": map[string]any{
			"folderUid": d.folder, "version": d.version, "url": "/d/" + uid + "/x",
		}})
	case r.Method == http.MethodPost && r.URL.Path == "/api/dashboards/db":
		body := readBody()
		model, ok := body["dashboard"].(map[string]any)
		require.True(t, ok, "body.dashboard is an object")
		uid, _ := model["uid"].(string)
		require.NotEmpty(t, uid, "dashboard.uid")
		if uid == g.failUID {
			reply(http.StatusPreconditionFailed, map[string]any{"message": "The dashboard has been changed by someone else", "status": "version-mismatch"})
			return
		}
		require.NotEmpty(t, model["title"], "dashboard.title")
		require.NotEmpty(t, model["panels"], "dashboard.panels")
		require.NotContains(t, model, "id", "a new or overwritten dashboard is found by uid, not id")
		folder, _ := body["folderUid"].(string)
		_, ok = g.folders[folder]
		require.True(t, ok, "body.folderUid %q names an existing folder", folder)
		require.Equal(t, true, body["overwrite"])
		prev := g.dashboards[uid]
		model["id"], model["version"] = float64(len(g.dashboards)+1), float64(prev.version+1)
		g.dashboards[uid] = storedDashboard{model: model, folder: folder, version: prev.version + 1}
		reply(http.StatusOK, map[string]any{"id": 1, "uid": uid, "url": "/d/" + uid + "/x", "status": "success", "version": prev.version + 1})
	default:
		t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
		w.WriteHeader(http.StatusNotFound)
	}
}

func (g *fakeGrafana) takeRequests() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.requests
	g.requests = nil
	return r
}

func TestPush(t *testing.T) {
	ds := build(t)
	g, srv := newFakeGrafana(t)
	c := &Client{URL: srv.URL + "/grafana/", Token: testToken}
	ctx := context.Background()

	// First push: the folder and every dashboard are created.
	res, err := c.Push(ctx, "Fleet (prod)", ds)
	require.NoError(t, err)
	require.Len(t, res, len(ds))
	for i, r := range res {
		require.Equal(t, ds[i].UID, r.UID)
		require.Equal(t, ChangeCreated, r.Change)
		require.Equal(t, 1, r.Version)
		require.Equal(t, "/d/"+ds[i].UID+"/x", r.URL)
	}
	require.Equal(t, map[string]string{"fleet-prod": "Fleet (prod)"}, g.folders)
	reqs := g.takeRequests()
	require.Equal(t, []string{"GET /api/folders/fleet-prod", "POST /api/folders"}, reqs[:2])
	require.Equal(t, "GET /api/dashboards/uid/"+ds[0].UID, reqs[2])
	require.Equal(t, "POST /api/dashboards/db", reqs[3])
	require.Len(t, reqs, 2+2*len(ds))

	// Second push of the same dashboards: nothing is written.
	res, err = c.Push(ctx, "Fleet (prod)", ds)
	require.NoError(t, err)
	for _, r := range res {
		require.Equal(t, ChangeUnchanged, r.Change, r.UID)
		require.Empty(t, r.Details)
	}
	for _, r := range g.takeRequests() {
		require.True(t, strings.HasPrefix(r, "GET "), "an unchanged push wrote: %s", r)
	}

	// Someone edited a dashboard in Grafana: a panel changed, one added, one removed, the
	// refresh changed. The push puts the generated one back and says what it changed.
	d := g.dashboards[UIDOverview]
	panels := d.model["panels"].([]any)
	panels[1].(map[string]any)["description"] = "edited by hand"
	panels = append(panels[:len(panels)-1], map[string]any{"type": "text", "title": "My notes"})
	d.model["panels"] = panels
	d.model["refresh"] = "5s"
	g.dashboards[UIDOverview] = d
	res, err = c.Push(ctx, "Fleet (prod)", ds)
	require.NoError(t, err)
	require.Equal(t, ChangeUpdated, res[0].Change)
	require.Equal(t, 2, res[0].Version)
	title1 := *ds[0].Model.Panels[1].Panel.Title
	lastTitle := *ds[0].Model.Panels[len(ds[0].Model.Panels)-1].Panel.Title
	require.Equal(t, []string{
		`panel "` + title1 + `" changed`,
		`panel "` + lastTitle + `" added`,
		`panel "My notes" removed`,
		"refresh changed",
	}, res[0].Details)
	for _, r := range res[1:] {
		require.Equal(t, ChangeUnchanged, r.Change)
	}
	got, err := json.Marshal(g.dashboards[UIDOverview].model["panels"])
	require.NoError(t, err)
	want, err := json.Marshal(ds[0].Model.Panels)
	require.NoError(t, err)
	require.JSONEq(t, string(want), string(got))

	// A dashboard in another folder is moved.
	d = g.dashboards[UIDCluster]
	d.folder = "general"
	g.dashboards[UIDCluster] = d
	res, err = c.Push(ctx, "Fleet (prod)", ds)
	require.NoError(t, err)
	require.Equal(t, ChangeUpdated, res[1].Change)
	require.Equal(t, []string{`moved to folder "Fleet (prod)"`}, res[1].Details)
	require.Equal(t, "fleet-prod", g.dashboards[UIDCluster].folder)
}

func TestPushErrors(t *testing.T) {
	ds := build(t)
	g, srv := newFakeGrafana(t)
	ctx := context.Background()

	_, err := (&Client{URL: srv.URL + "/grafana", Token: "wrong"}).Push(ctx, "fleetwatch", ds)
	var apiErr *APIError
	require.True(t, errors.As(err, &apiErr), "%v", err)
	require.Equal(t, http.StatusUnauthorized, apiErr.Status)
	require.False(t, apiErr.Retryable())
	require.EqualError(t, err, "read folder fleetwatch: grafana GET /api/folders/fleetwatch: 401 Unauthorized: Unauthorized (is the token valid?)")

	g.status = http.StatusServiceUnavailable
	_, err = (&Client{URL: srv.URL + "/grafana", Token: testToken}).Push(ctx, "fleetwatch", ds)
	require.True(t, errors.As(err, &apiErr), "%v", err)
	require.True(t, apiErr.Retryable())

	// A failure half way returns what was pushed before it.
	g.status, g.failUID = 0, UIDCluster
	res, err := (&Client{URL: srv.URL + "/grafana", Token: testToken}).Push(ctx, "fleetwatch", ds)
	require.EqualError(t, err, "push dashboard "+UIDCluster+": save: grafana POST /api/dashboards/db: 412 Precondition Failed: The dashboard has been changed by someone else")
	require.Len(t, res, 1)
	require.Equal(t, ChangeCreated, res[0].Change)

	_, err = (&Client{}).Push(ctx, "fleetwatch", ds)
	require.EqualError(t, err, "grafana URL: must be set")
}

func TestFolderUID(t *testing.T) {
	require.Equal(t, "fleetwatch", FolderUID("fleetwatch"))
	require.Equal(t, "fleet-prod", FolderUID("Fleet (prod)"))
	require.Equal(t, "fleetwatch", FolderUID("!!!"))
	require.Len(t, FolderUID(strings.Repeat("abcdefghi ", 10)), 39)
}
