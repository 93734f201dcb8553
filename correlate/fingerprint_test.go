package correlate

import (
	"context"
	"hash/fnv"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// referenceFingerprint is Fingerprint as it was first written, with hash/fnv: incident keys
// (alert/<alertname>/<hash>) are stored, so the hash must never change.
func referenceFingerprint(r Rules, ls map[string]string) uint64 {
	names := slices.Sorted(maps.Keys(ls))
	h := fnv.New64a()
	for _, n := range names {
		if has(r.ReplicaLabels, n) {
			continue
		}
		h.Write([]byte(n))
		h.Write([]byte{0xff})
		h.Write([]byte(ls[n]))
		h.Write([]byte{0xff})
	}
	return h.Sum64()
}

func TestFingerprints(t *testing.T) {
	for _, a := range append(benchAlerts(200, 5, t0),
		alert(0),
		alert(0, "alertname", "X", "cluster", "eu-1", "prometheus_replica", "a"),
		alert(0, "alertname", "X", "cluster", "eu-1", "replica", "b", "a", "1", "z", "2"),
	) {
		fp, local := DefaultRules.fingerprints(a)
		require.Equal(t, referenceFingerprint(DefaultRules, a.Labels), fp)
		require.Equal(t, DefaultRules.Fingerprint(a), fp)
		rest := maps.Clone(a.Labels)
		delete(rest, "cluster")
		require.Equal(t, referenceFingerprint(DefaultRules, rest), local)
	}
}

// TestEngineReplicaLabelsChange: the fingerprints the engine caches follow a reload that
// changes the replica labels.
func TestEngineReplicaLabelsChange(t *testing.T) {
	st, err := OpenStore(filepath.Join(t.TempDir(), "incidents.db"))
	require.NoError(t, err)
	defer st.Close()
	clk := &clock{t: t0}
	e, err := New(Options{Store: st, Rules: DefaultRules, ResolveAfter: 5 * time.Minute, Now: clk.now})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, e.Ingest(ctx, []Alert{
		alert(0, "alertname", "CertificateExpiring", "cluster", "eu-1", "secret", "tls", "pod", "a"),
		alert(0, "alertname", "CertificateExpiring", "cluster", "us-1", "secret", "tls", "pod", "b"),
	}))
	require.NoError(t, e.Evaluate(ctx))
	require.Len(t, e.tracker.Active(), 2, "different pods, different alerts")

	set := Settings{ReplicaLabels: []string{"pod"}}
	r := set.Rules()
	require.Equal(t, []string{"prometheus_replica", "replica", "pod"}, r.ReplicaLabels)
	require.NoError(t, e.ApplySettings(set))
	require.NoError(t, e.Evaluate(ctx))
	act := e.tracker.Active()
	require.Len(t, act, 1, "without the pod label, the same alert in two clusters")
	require.Equal(t, []string{"eu-1", "us-1"}, act[0].Clusters)
	for _, a := range act[0].Alerts {
		require.Equal(t, r.Fingerprint(a), a.fp)
	}
}
