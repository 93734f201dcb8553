package correlate

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// testIncident is an open incident of clusters whose ID sorts by i (IDs are time-ordered).
func testIncident(i int, clusters ...string) *Incident {
	at := t0.Add(time.Duration(i) * time.Second)
	inc := &Incident{
		ID:       fmt.Sprintf("inc-%08d", i),
		Group:    Group{Key: fmt.Sprintf("test/%d", i), Scope: "cluster", Clusters: clusters, Severity: "warning", RootCause: "test", Alerts: []Alert{alert(0, "alertname", "Test", "i", fmt.Sprint(i))}},
		State:    StateOpen,
		OpenedAt: at, UpdatedAt: at, Revision: 1,
	}
	inc.relabel()
	return inc
}

func openTestStore(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.db")
	st, err := OpenStore(path)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st, path
}

// putRaw writes a value under key in bucket directly, as a damaged or foreign entry.
func putRaw(t *testing.T, st *Store, bucket, key, value []byte) {
	t.Helper()
	require.NoError(t, st.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, value) }))
}

func ids(incs []*Incident) []string {
	out := []string{}
	for _, i := range incs {
		out = append(out, i.ID)
	}
	return out
}

// TestIncidentsPageReadsOnlyThePage: a page reads the store from its newest end and stops
// after limit matches. The oldest entries are undecodable: a listing that decoded the whole
// store would fail on them; the first pages do not get there.
func TestIncidentsPageReadsOnlyThePage(t *testing.T) {
	st, _ := openTestStore(t)
	var incs []*Incident
	for i := 1; i <= 50; i++ {
		inc := testIncident(i, "eu-1")
		if i%2 == 0 {
			resolve(inc, t0.Add(time.Duration(i)*time.Minute))
		}
		incs = append(incs, inc)
	}
	require.NoError(t, st.SaveIncidents(incs, nil))
	// Oldest by ID, and oldest in the resolved index.
	putRaw(t, st, bucketIncidents, []byte("inc-00000000"), []byte("{not json"))
	putRaw(t, st, bucketResolved, resolvedKey(t0, "inc-00000000"), nil)

	for _, tc := range []struct {
		state string
		want  []string
	}{
		{"", []string{"inc-00000050", "inc-00000049", "inc-00000048", "inc-00000047", "inc-00000046"}},
		{StateResolved, []string{"inc-00000050", "inc-00000048", "inc-00000046", "inc-00000044", "inc-00000042"}},
	} {
		t.Run(tc.state, func(t *testing.T) {
			got, next, err := st.IncidentsPage(Filter{State: tc.state}, 5, "")
			require.NoError(t, err)
			require.Equal(t, tc.want, ids(got))
			require.NotEmpty(t, next)
			// Paging on reaches the undecodable entry at last.
			for err == nil && next != "" {
				_, next, err = st.IncidentsPage(Filter{State: tc.state}, 5, next)
			}
			require.ErrorContains(t, err, "incident inc-00000000")
		})
	}
}

// TestIncidentsPageFilters: filters apply before the limit; since ends the resolved listing
// early; Allow scopes; a scan that finds few matches ends its page at maxScan with a token.
func TestIncidentsPageFilters(t *testing.T) {
	st, _ := openTestStore(t)
	var incs []*Incident
	for i := 1; i <= 40; i++ {
		c := []string{"eu-1", "us-1"}[i%2]
		inc := testIncident(i, c)
		if i > 10 {
			resolve(inc, t0.Add(time.Duration(i)*time.Minute))
		}
		incs = append(incs, inc)
	}
	require.NoError(t, st.SaveIncidents(incs, nil))
	all := func(f Filter, limit int) ([]string, int) {
		t.Helper()
		var out []string
		pages, token := 0, ""
		for {
			got, next, err := st.IncidentsPage(f, limit, token)
			require.NoError(t, err)
			out = append(out, ids(got)...)
			pages++
			if next == "" {
				return out, pages
			}
			token = next
		}
	}
	got, _ := all(Filter{State: StateResolved, Cluster: "eu-1"}, 4)
	require.Len(t, got, 15)
	got, _ = all(Filter{State: StateResolved, Since: t0.Add(35 * time.Minute)}, 4)
	require.Equal(t, []string{"inc-00000040", "inc-00000039", "inc-00000038", "inc-00000037", "inc-00000036", "inc-00000035"}, got)
	got, _ = all(Filter{Allow: func(c []string) bool { return slices.Contains(c, "us-1") }}, 7)
	require.Len(t, got, 20)
	got, _ = all(Filter{State: StateOpen}, 100)
	require.Len(t, got, 10)
}

// TestIncidentsPageScanBound: a page whose filter matches little stops after maxScan
// incidents, with a token that goes on from there.
func TestIncidentsPageScanBound(t *testing.T) {
	st, _ := openTestStore(t)
	var incs []*Incident
	for i := 1; i <= maxScan+5; i++ {
		incs = append(incs, testIncident(i, "eu-1"))
	}
	incs[0].Clusters = []string{"us-1"} // the oldest: the only match
	require.NoError(t, st.SaveIncidents(incs, nil))
	got, next, err := st.IncidentsPage(Filter{Cluster: "us-1"}, 10, "")
	require.NoError(t, err)
	require.Empty(t, got)
	require.NotEmpty(t, next)
	got, next, err = st.IncidentsPage(Filter{Cluster: "us-1"}, 10, next)
	require.NoError(t, err)
	require.Equal(t, []string{"inc-00000001"}, ids(got))
	require.Empty(t, next)
}

// TestDeleteResolvedBefore: the incidents resolved before the cutoff go, with their index
// entries and anything queued for them, in batches; active and later ones stay.
func TestDeleteResolvedBefore(t *testing.T) {
	st, _ := openTestStore(t)
	const old = 2*pruneBatch + 17
	var incs []*Incident
	for i := 1; i <= old+10; i++ {
		inc := testIncident(i, "eu-1")
		if i <= old+5 {
			resolve(inc, t0.Add(time.Duration(i)*time.Second))
		}
		incs = append(incs, inc)
	}
	require.NoError(t, st.SaveIncidents(incs, []string{"http://am:9093"}))
	n, err := st.DeleteResolvedBefore(t0.Add(old*time.Second + 1))
	require.NoError(t, err)
	require.Equal(t, old, n)
	rest, err := st.Incidents(Filter{})
	require.NoError(t, err)
	require.Len(t, rest, 10)
	for _, inc := range rest {
		require.Greater(t, inc.ID, fmt.Sprintf("inc-%08d", old))
	}
	q, err := st.Outbox("http://am:9093")
	require.NoError(t, err)
	require.Len(t, q, 10)
	var indexed, queued, alerts int
	require.NoError(t, st.db.View(func(tx *bolt.Tx) error {
		indexed = tx.Bucket(bucketResolved).Stats().KeyN
		queued = tx.Bucket(bucketOutbox).Stats().KeyN
		alerts = tx.Bucket(bucketIncidentAlerts).Stats().KeyN
		return nil
	}))
	require.Equal(t, 5, indexed)
	require.Equal(t, 10, queued)
	require.Equal(t, 10, alerts, "the pruned incidents' alerts are gone with them")
	_, err = st.Incident(fmt.Sprintf("inc-%08d", old))
	require.True(t, errors.Is(err, ErrNotFound))
	n, err = st.DeleteResolvedBefore(t0.Add(old*time.Second + 1))
	require.NoError(t, err)
	require.Zero(t, n)
}

// TestStoreIndexesOldStores: a store written before the resolved index existed gets it when
// opened, so that its history is listed and pruned like any other.
func TestStoreIndexesOldStores(t *testing.T) {
	st, path := openTestStore(t)
	var incs []*Incident
	for i := 1; i <= 6; i++ {
		inc := testIncident(i, "eu-1")
		if i%2 == 1 {
			resolve(inc, t0.Add(time.Duration(i)*time.Hour))
		}
		incs = append(incs, inc)
	}
	require.NoError(t, st.SaveIncidents(incs, nil))
	require.NoError(t, st.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketResolved) }))
	require.NoError(t, st.Close())

	st, err := OpenStore(path)
	require.NoError(t, err)
	defer st.Close()
	got, next, err := st.IncidentsPage(Filter{State: StateResolved}, 10, "")
	require.NoError(t, err)
	require.Empty(t, next)
	require.Equal(t, []string{"inc-00000005", "inc-00000003", "inc-00000001"}, ids(got))
	n, err := st.DeleteResolvedBefore(t0.Add(4 * time.Hour))
	require.NoError(t, err)
	require.Equal(t, 2, n)
}

// TestEnginePrunesResolved: evaluations delete resolved incidents past the retention, at
// most once a minute; the active ones and the recent history stay.
func TestEnginePrunesResolved(t *testing.T) {
	st, _ := openTestStore(t)
	clk := &clock{t: t0}
	e, err := New(Options{Store: st, Rules: DefaultRules, ResolvedRetention: time.Hour, Now: clk.now})
	require.NoError(t, err)
	require.Equal(t, DefaultResolvedRetention, mustNew(t, Options{Store: st}).o.ResolvedRetention)
	_, err = New(Options{Store: st, ResolvedRetention: -time.Second})
	require.EqualError(t, err, "correlate: resolved retention -1s is negative")

	open := func(cluster string) string {
		t.Helper()
		require.NoError(t, e.Ingest(context.Background(), []Alert{alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", cluster)}))
		require.NoError(t, e.Evaluate(context.Background()))
		for _, inc := range e.Active() {
			if inc.Clusters[0] == cluster {
				return inc.ID
			}
		}
		t.Fatalf("no incident of %s", cluster)
		return ""
	}
	exists := func(id string) bool {
		t.Helper()
		_, err := st.Incident(id)
		if errors.Is(err, ErrNotFound) {
			return false
		}
		require.NoError(t, err)
		return true
	}
	a := open("eu-1") // pruned at t0 + 0: nothing to delete yet
	_, err = e.Resolve(a)
	require.NoError(t, err)
	clk.add(30 * time.Second)
	b := open("us-1")
	_, err = e.Resolve(b)
	require.NoError(t, err)
	active := open("ap-1")

	clk.add(time.Hour - 30*time.Second + time.Second) // a is past the retention, b not yet
	require.NoError(t, e.Evaluate(context.Background()))
	require.False(t, exists(a))
	require.True(t, exists(b))
	clk.add(30 * time.Second) // b is past it too, but the last pruning was 30s ago
	require.NoError(t, e.Evaluate(context.Background()))
	require.True(t, exists(b))
	clk.add(30 * time.Second)
	require.NoError(t, e.Evaluate(context.Background()))
	require.False(t, exists(b))
	require.True(t, exists(active))
}

func mustNew(t *testing.T, o Options) *Engine {
	t.Helper()
	e, err := New(o)
	require.NoError(t, err)
	return e
}

// TestIncidentAlertsKeptApart: an incident is stored without its alerts, and a save writes only
// the alerts that changed; every read path gives the incident back with its alerts, in the
// order the grouping sorts them (by fingerprint).
func TestIncidentAlertsKeptApart(t *testing.T) {
	st, _ := openTestStore(t)
	mk := func(name, pod string) Alert {
		a := alert(0, "alertname", name, "cluster", "eu-1", "pod", pod)
		a.Annotations = map[string]string{"summary": "pod " + pod}
		a.fp = Rules{}.Fingerprint(a)
		return a
	}
	sorted := func(as ...Alert) []Alert {
		slices.SortFunc(as, func(a, b Alert) int { return cmp.Compare(a.fp, b.fp) })
		return as
	}
	inc := testIncident(1, "eu-1")
	a, b, c := mk("KubePodCrashLooping", "a"), mk("KubePodCrashLooping", "b"), mk("KubePodNotReady", "c")
	inc.Alerts = sorted(a, b, c)
	require.NoError(t, st.SaveIncidents([]*Incident{inc}, []string{"http://am:9093"}))

	stripped := func(as []Alert) []Alert { // the cached fingerprints are not stored
		out := slices.Clone(as)
		for i := range out {
			out[i].fp, out[i].localFP = 0, 0
		}
		return out
	}
	requireAlerts := func(want []Alert) {
		t.Helper()
		got, err := st.Incident(inc.ID)
		require.NoError(t, err)
		require.Equal(t, stripped(want), got.Alerts)
		all, err := st.Incidents(Filter{})
		require.NoError(t, err)
		require.Equal(t, stripped(want), all[0].Alerts)
		page, _, err := st.IncidentsPage(Filter{}, 10, "")
		require.NoError(t, err)
		require.Equal(t, stripped(want), page[0].Alerts)
	}
	requireAlerts(inc.Alerts)
	var head []byte
	require.NoError(t, st.db.View(func(tx *bolt.Tx) error {
		head = bytes.Clone(tx.Bucket(bucketIncidents).Get([]byte(inc.ID)))
		return nil
	}))
	require.Contains(t, string(head), `"alerts":null`)
	require.Contains(t, string(head), `"alert_names":{"KubePodCrashLooping":2,"KubePodNotReady":1}`)

	// Mark what is stored of a and b: a save that leaves them as they are does not write them.
	mark := func(x Alert) {
		require.NoError(t, st.db.Update(func(tx *bolt.Tx) error {
			ab := tx.Bucket(bucketIncidentAlerts)
			k := incidentAlertKey(incidentAlertsPrefix(inc.ID), x.fp)
			v := bytes.Clone(ab.Get(k))
			require.NotNil(t, v)
			return ab.Put(k, bytes.Replace(v, []byte(`"summary":"pod `), []byte(`"summary":"marked pod `), 1))
		}))
	}
	mark(a)
	mark(b)
	b2 := b
	b2.EndsAt = t0.Add(time.Minute) // b resolves: written again
	d := mk("KubePodNotReady", "d") // d is new, c went away
	next := *inc
	next.Alerts = sorted(a, b2, d)
	next.Revision++
	require.NoError(t, st.SaveIncidents([]*Incident{&next}, []string{"http://am:9093"}))
	aMarked := a
	aMarked.Annotations = map[string]string{"summary": "marked pod a"}
	requireAlerts(sorted(aMarked, b2, d))

	// An alert whose annotations (only) changed is written again, and so is one whose labels
	// changed under the same fingerprint (another replica of it).
	// So is one that ends at another time.
	mark(d)
	d2 := d
	d2.Annotations = map[string]string{"summary": "pod d, again"}
	mark(b)
	b3 := b2
	b3.EndsAt = t0.Add(2 * time.Minute)
	a2 := a
	a2.Labels = maps.Clone(a.Labels)
	a2.Labels["prometheus_replica"] = "b"
	third := next
	third.Alerts = sorted(a2, b3, d2)
	require.NoError(t, st.SaveIncidents([]*Incident{&third}, nil))
	requireAlerts(sorted(a2, b3, d2))

	// Delivery reads no alert, only their counts.
	q, err := st.Outbox("http://am:9093")
	require.NoError(t, err)
	require.Len(t, q, 1)
	require.Empty(t, q[0].Incident.Alerts)
	require.Equal(t, map[string]int{"KubePodCrashLooping": 2, "KubePodNotReady": 1}, q[0].AlertNames)
	require.Equal(t, 2, q[0].Revision, "the third save queued nothing")

	// The hooks' journal gives each change with the alerts as stored now.
	es, err := st.Events(0, 10)
	require.NoError(t, err)
	require.Len(t, es, 3)
	for _, e := range es {
		var got Incident
		require.NoError(t, json.Unmarshal(e.Payload, &got))
		require.Equal(t, stripped(sorted(a2, b3, d2)), got.Alerts)
		require.NotContains(t, string(e.Payload), "alerts_apart")
	}
}

// TestIncidentsStoredInline: an incident stored with its alerts inline (before they were kept
// apart) reads as it was, is delivered with their counts, and moves its alerts apart when
// saved again.
func TestIncidentsStoredInline(t *testing.T) {
	st, _ := openTestStore(t)
	inc := testIncident(1, "eu-1")
	inc.Alerts = []Alert{alert(0, "alertname", "A"), alert(0, "alertname", "A", "x", "1")}
	old, err := json.Marshal(inc)
	require.NoError(t, err)
	putRaw(t, st, bucketIncidents, []byte(inc.ID), old)
	putRaw(t, st, bucketOutbox, outboxKey("http://am:9093", inc.ID), revision(1))
	got, err := st.Incident(inc.ID)
	require.NoError(t, err)
	require.Equal(t, inc.Alerts, got.Alerts)
	q, err := st.Outbox("http://am:9093")
	require.NoError(t, err)
	require.Equal(t, map[string]int{"A": 2}, q[0].AlertNames)

	got.Revision++
	require.NoError(t, st.SaveIncidents([]*Incident{got}, nil))
	again, err := st.Incident(inc.ID)
	require.NoError(t, err)
	require.ElementsMatch(t, inc.Alerts, again.Alerts)
	var apart int
	require.NoError(t, st.db.View(func(tx *bolt.Tx) error {
		apart = tx.Bucket(bucketIncidentAlerts).Stats().KeyN
		return nil
	}))
	require.Equal(t, 2, apart)
}

// TestIncidentAlertsByReference: an active incident's alerts that the alert log holds are stored
// as references and read back from the log as it holds them (a later end a resend gave one),
// also after a restart; one the log does not hold is kept whole; a resolved incident keeps its
// alerts whole, and still has them once the log has forgotten them.
func TestIncidentAlertsByReference(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.db")
	st, err := OpenStore(path)
	require.NoError(t, err)
	var in []Alert
	for i := range 3 {
		in = append(in, logAlert("eu-1", i, t0, t0.Add(time.Hour)))
	}
	stored, err := st.PutAlerts(in[:2], fpOf, t0)
	require.NoError(t, err)
	stored[fpOf(in[2])] = in[2] // one the log does not hold
	inc := testIncident(1, "eu-1")
	inc.Alerts = nil
	for _, a := range in {
		a := stored[fpOf(a)]
		a.fp = fpOf(a)
		inc.Alerts = append(inc.Alerts, a)
	}
	slices.SortFunc(inc.Alerts, func(a, b Alert) int { return cmp.Compare(a.fp, b.fp) })
	// Resent since the incident's copy was made: the log holds a later end.
	later := in[0]
	later.EndsAt = t0.Add(2 * time.Hour)
	_, err = st.PutAlerts([]Alert{later}, fpOf, t0.Add(time.Minute))
	require.NoError(t, err)
	require.NoError(t, st.SaveIncidents([]*Incident{inc}, nil))
	sizes := func(st *Store, id string) []int {
		t.Helper()
		var out []int
		require.NoError(t, st.db.View(func(tx *bolt.Tx) error {
			prefix := incidentAlertsPrefix(id)
			c := tx.Bucket(bucketIncidentAlerts).Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				out = append(out, len(v))
			}
			return nil
		}))
		return out
	}
	got := map[uint64]int{}
	for i, n := range sizes(st, inc.ID) {
		got[inc.Alerts[i].fp] = n
	}
	require.Equal(t, map[uint64]int{fpOf(in[0]): 8, fpOf(in[1]): 8}, map[uint64]int{fpOf(in[0]): got[fpOf(in[0])], fpOf(in[1]): got[fpOf(in[1])]}, "references")
	require.Greater(t, got[fpOf(in[2])], 8, "whole")
	want := make([]Alert, len(inc.Alerts))
	for i, a := range inc.Alerts {
		a.fp, a.localFP = 0, 0
		if fpOf(a) == fpOf(in[0]) {
			a.EndsAt = later.EndsAt
		}
		want[i] = a
	}
	read := func(st *Store) []Alert {
		t.Helper()
		got, err := st.Incident(inc.ID)
		require.NoError(t, err)
		return got.Alerts
	}
	require.Equal(t, want, read(st))

	// Restarted: read back from the log as it was replayed.
	require.NoError(t, st.Close())
	st, err = OpenStore(path)
	require.NoError(t, err)
	defer func() { st.Close() }()
	require.Equal(t, want, read(st))
	active, err := st.Incidents(Filter{State: "active"})
	require.NoError(t, err)
	require.Len(t, active, 1)
	require.Equal(t, want, active[0].Alerts)

	// Resolved: written whole, and kept so once the log forgets the alerts.
	res := *inc
	res.State, res.ResolvedAt, res.UpdatedAt, res.Revision = StateResolved, t0.Add(time.Hour), t0.Add(time.Hour), 2
	require.NoError(t, st.SaveIncidents([]*Incident{&res}, nil))
	for _, n := range sizes(st, inc.ID) {
		require.Greater(t, n, 8)
	}
	require.NoError(t, st.DeleteAlerts(slices.Collect(maps.Keys(stored))))
	require.Equal(t, want, read(st))
}

// A new incident under the ID of a stored one is refused, in a transaction that stores
// nothing: it would overwrite the other incident and mix their alerts.
func TestSaveIncidentsRefusesATakenID(t *testing.T) {
	st, _ := openTestStore(t)
	first := testIncident(1, "eu-1")
	require.NoError(t, st.SaveIncidents([]*Incident{first}, nil))
	other, again := testIncident(2, "us-1"), testIncident(3, "us-1")
	again.ID = first.ID
	err := st.SaveIncidents([]*Incident{other, again}, []string{"http://am:9093"})
	require.ErrorContains(t, err, "incident "+first.ID+": new, but an incident with its ID is stored")
	got, err := st.Incident(first.ID)
	require.NoError(t, err)
	require.Equal(t, []string{"eu-1"}, got.Clusters)
	require.Len(t, got.Alerts, 1)
	_, err = st.Incident(other.ID)
	require.ErrorIs(t, err, ErrNotFound, "all or nothing")
	// Its next revision is an update, not a new incident.
	up := *first
	up.Revision = 2
	require.NoError(t, st.SaveIncidents([]*Incident{&up}, nil))
}
