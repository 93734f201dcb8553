package clusterauth

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

func TestAuthenticate(t *testing.T) {
	tab := New([]*config.ClusterConfig{
		{Name: "eu-1", RemoteWrite: &config.RemoteWriteConfig{BearerToken: "token-eu-1"}},
		{Name: "us-3", RemoteWrite: &config.RemoteWriteConfig{BasicAuth: &config.BasicAuthConfig{Username: "us-3", Password: "pw-us-3"}}},
		{Name: "federated", Federate: &config.FederateConfig{URL: "http://example.invalid"}},
	})
	for _, tc := range []struct {
		name    string
		set     func(*http.Request)
		cluster string
		ok      bool
	}{
		{name: "bearer", set: func(r *http.Request) { r.Header.Set("Authorization", "Bearer token-eu-1") }, cluster: "eu-1", ok: true},
		{name: "basic", set: func(r *http.Request) { r.SetBasicAuth("us-3", "pw-us-3") }, cluster: "us-3", ok: true},
		{name: "no credentials", set: func(*http.Request) {}},
		{name: "unknown token", set: func(r *http.Request) { r.Header.Set("Authorization", "Bearer token-eu-2") }},
		{name: "empty token", set: func(r *http.Request) { r.Header.Set("Authorization", "Bearer ") }},
		{name: "lower-case scheme", set: func(r *http.Request) { r.Header.Set("Authorization", "bearer token-eu-1") }},
		{name: "wrong password", set: func(r *http.Request) { r.SetBasicAuth("us-3", "pw-eu-1") }},
		{name: "unknown user", set: func(r *http.Request) { r.SetBasicAuth("eu-1", "") }},
		// Basic auth decides alone: a valid bearer token does not rescue bad basic credentials.
		{name: "bad basic beats good bearer", set: func(r *http.Request) {
			r.SetBasicAuth("us-3", "nope")
			r.Header.Add("Authorization", "Bearer token-eu-1")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/", nil)
			tc.set(req)
			cluster, ok := tab.Authenticate(req)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.cluster, cluster)
		})
	}
}

func TestEmptyTables(t *testing.T) {
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	req.Header.Set("Authorization", "Bearer x")
	for name, tab := range map[string]*Table{"nil": nil, "zero": {}, "no clusters": New(nil)} {
		_, ok := tab.Authenticate(req)
		require.False(t, ok, name)
	}
	req = httptest.NewRequest(http.MethodPost, "/", nil)
	req.SetBasicAuth("", "")
	_, ok := New(nil).Authenticate(req)
	require.False(t, ok)
}
