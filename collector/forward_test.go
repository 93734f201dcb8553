package collector

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// TestForwarderRequest: one transaction is one remote-write 1.0 request, its samples grouped
// by series, with the cluster as the tenant; nothing is sent before the commit, nor after a
// rollback. Receive's answer decides: 2xx kept, 4xx the sender's fault, else ours.
func TestForwarderRequest(t *testing.T) {
	var mu sync.Mutex
	var got []prompb.WriteRequest
	var tenants []string
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		require.NoError(t, err)
		raw, err := snappy.Decode(nil, body)
		require.NoError(t, err)
		var wr prompb.WriteRequest
		require.NoError(t, wr.Unmarshal(raw))
		mu.Lock()
		got = append(got, wr)
		tenants = append(tenants, r.Header.Get(config.DefaultTenantHeader))
		code := status
		mu.Unlock()
		w.WriteHeader(code)
	}))
	defer srv.Close()
	f, err := NewForwarder(ForwardOptions{URL: srv.URL, Client: srv.Client()})
	require.NoError(t, err)

	up := labels.FromStrings("__name__", "up", "cluster", "eu-1", "job", "ksm")
	other := labels.FromStrings("__name__", "up", "cluster", "eu-1", "job", "node")
	app := f.Appender(context.Background())
	ref, err := app.Append(0, up, 1000, 1)
	require.NoError(t, err)
	ref2, err := app.Append(0, other, 1000, 0)
	require.NoError(t, err)
	require.NotEqual(t, ref, ref2)
	again, err := app.Append(0, up, 2000, 1) // found by its labels
	require.NoError(t, err)
	require.Equal(t, ref, again)
	_, err = app.Append(ref2, other, 2000, 1) // found by its reference
	require.NoError(t, err)
	require.Empty(t, got, "nothing is sent before the commit")
	require.NoError(t, app.Commit())
	require.Len(t, got, 1)
	require.Equal(t, []string{"eu-1"}, tenants)
	require.Len(t, got[0].Timeseries, 2)
	require.Equal(t, []prompb.Sample{{Timestamp: 1000, Value: 1}, {Timestamp: 2000, Value: 1}}, got[0].Timeseries[0].Samples)
	require.Equal(t, up, labels.New(toLabels(got[0].Timeseries[0].Labels)...))
	require.Equal(t, []prompb.Sample{{Timestamp: 1000, Value: 0}, {Timestamp: 2000, Value: 1}}, got[0].Timeseries[1].Samples)

	// A reference from an earlier transaction (a scrape loop keeps them) names whatever is at
	// that position now only if the labels match: here other comes first.
	app = f.Appender(context.Background())
	ref3, err := app.Append(0, other, 2500, 2)
	require.NoError(t, err)
	require.Equal(t, ref, ref3, "up's reference of the last transaction is other's position now")
	_, err = app.Append(ref, up, 2500, 3)
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	require.Len(t, got, 2)
	require.Len(t, got[1].Timeseries, 2, "up is a series of its own, not a sample of other")
	require.Equal(t, []prompb.Sample{{Timestamp: 2500, Value: 2}}, got[1].Timeseries[0].Samples)
	require.Equal(t, []prompb.Sample{{Timestamp: 2500, Value: 3}}, got[1].Timeseries[1].Samples)
	require.Equal(t, up, labels.New(toLabels(got[1].Timeseries[1].Labels)...))

	app = f.Appender(context.Background())
	_, err = app.Append(0, up, 3000, 1)
	require.NoError(t, err)
	require.NoError(t, app.Rollback())
	require.NoError(t, app.Commit())
	require.Len(t, got, 2, "a rolled back transaction sends nothing")

	for _, tc := range []struct {
		code int
		bad  bool
	}{{http.StatusConflict, true}, {http.StatusBadRequest, true}, {http.StatusRequestEntityTooLarge, true},
		{http.StatusTooManyRequests, false}, {http.StatusServiceUnavailable, false},
		{http.StatusUnauthorized, false}, {http.StatusForbidden, false}, {http.StatusNotFound, false}} {
		mu.Lock()
		status = tc.code
		mu.Unlock()
		app = f.Appender(context.Background())
		_, err = app.Append(0, up, 4000, 1)
		require.NoError(t, err)
		err = app.Commit()
		require.Error(t, err, "%d", tc.code)
		_, bad := errors.AsType[*badRequest](err)
		require.Equal(t, tc.bad, bad, "%d: %v", tc.code, err)
	}

	srv.Close()
	app = f.Appender(context.Background())
	_, err = app.Append(0, up, 5000, 1)
	require.NoError(t, err)
	err = app.Commit()
	require.Error(t, err, "Receive unreachable")
	_, bad := errors.AsType[*badRequest](err)
	require.False(t, bad, "an unreachable Receive is not the sender's fault")
}

func toLabels(pl []prompb.Label) []labels.Label {
	out := make([]labels.Label, 0, len(pl))
	for _, l := range pl {
		out = append(out, labels.Label{Name: l.Name, Value: l.Value})
	}
	return out
}
