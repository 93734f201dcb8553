package correlate

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/tsdb/wlog"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

func fpOf(a Alert) uint64 { return Rules{}.fingerprint(a) }

// logAlert is alert i of cluster c, ending at end.
func logAlert(c string, i int, start, end time.Time) Alert {
	a := alert(0, "alertname", "KubePodCrashLooping", "cluster", c, "namespace", "payments", "pod", fmt.Sprintf("api-%d", i))
	a.Annotations = map[string]string{"summary": fmt.Sprintf("pod %d crash-loops", i)}
	a.StartsAt, a.EndsAt, a.Source = start, end, "prometheus"
	return a
}

// requireSameAlerts compares alert sets as stored (JSON: times to the nanosecond, no cached
// fingerprints).
func requireSameAlerts(t *testing.T, want, got map[uint64]Alert) {
	t.Helper()
	wj, err := json.Marshal(want)
	require.NoError(t, err)
	gj, err := json.Marshal(got)
	require.NoError(t, err)
	require.JSONEq(t, string(wj), string(gj))
}

// requireHolds opens the store at path and requires it to hold want; it returns the store,
// closed with the test.
func requireHolds(t *testing.T, path string, want map[uint64]Alert) *Store {
	t.Helper()
	st, err := OpenStore(path)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	got, err := st.Alerts()
	require.NoError(t, err)
	requireSameAlerts(t, want, got)
	return st
}

// copyDir copies the files of dir as they are now: what the disk holds when the process is
// killed (kill -9 loses nothing a write handed to the kernel).
func copyDir(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	require.NoError(t, os.CopyFS(dst, os.DirFS(dir)))
	return dst
}

// TestAlertLogKeepsWhatItAcknowledged: what PutAlerts returned is what a reopened store holds,
// merged as Alertmanager merges (an unresolved alert keeps its first start), deletions
// included; also when the store was not closed (killed), and across a compaction.
func TestAlertLogKeepsWhatItAcknowledged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.db")
	st, err := OpenStore(path)
	require.NoError(t, err)

	want := map[uint64]Alert{}
	put := func(now time.Time, alerts ...Alert) {
		t.Helper()
		stored, err := st.PutAlerts(alerts, fpOf, now)
		require.NoError(t, err)
		for fp, a := range stored {
			want[fp] = a
		}
	}
	a0 := logAlert("eu-1", 0, t0, t0.Add(4*time.Minute))
	put(t0, a0, logAlert("eu-1", 1, t0, t0.Add(4*time.Minute)))
	// Sent again with a later start (a Prometheus restarted): the first start stays.
	again := logAlert("eu-1", 0, t0.Add(time.Minute), t0.Add(5*time.Minute))
	put(t0.Add(time.Minute), again)
	require.Equal(t, t0, want[fpOf(a0)].StartsAt)
	// Resolved, then firing again later: the new start.
	put(t0.Add(2*time.Minute), logAlert("eu-1", 1, t0, t0.Add(2*time.Minute)))
	put(t0.Add(10*time.Minute), logAlert("eu-1", 1, t0.Add(10*time.Minute), t0.Add(14*time.Minute)))
	require.Equal(t, t0.Add(10*time.Minute), want[fpOf(logAlert("eu-1", 1, t0, t0))].StartsAt)
	put(t0.Add(10*time.Minute), logAlert("eu-2", 7, t0, t0.Add(14*time.Minute)))
	gone := fpOf(logAlert("eu-2", 7, t0, t0))
	require.NoError(t, st.DeleteAlerts([]uint64{gone}))
	delete(want, gone)

	got, err := st.Alerts()
	require.NoError(t, err)
	requireSameAlerts(t, want, got)

	// Killed: the files as they are, without Close.
	killed := copyDir(t, dir)
	require.NoError(t, requireHolds(t, filepath.Join(killed, "c.db"), want).Close())

	// Compacted: the segments before the checkpoint are gone, and appends go on after it.
	require.NoError(t, st.alerts.checkpoint())
	put(t0.Add(11*time.Minute), logAlert("eu-3", 3, t0, t0.Add(15*time.Minute)))
	first, _, err := wlog.Segments(AlertLogDir(path))
	require.NoError(t, err)
	cp, idx, err := wlog.LastCheckpoint(AlertLogDir(path))
	require.NoError(t, err, "a checkpoint")
	require.Equal(t, idx+1, first, "segments a checkpoint holds are deleted")
	require.DirExists(t, cp)
	require.NoError(t, st.Close())

	st = requireHolds(t, path, want)
	// The store appends after what it read.
	put(t0.Add(12*time.Minute), logAlert("eu-3", 4, t0, t0.Add(15*time.Minute)))
	require.NoError(t, st.Close())
	requireHolds(t, path, want)
}

// TestAlertLogDropsATornTail: a record cut short (the process killed in the middle of writing
// it, before its fsync returned, so before anyone was told it was kept) is dropped on open,
// with nothing after it; everything before it is kept, and the log takes appends again.
func TestAlertLogDropsATornTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.db")
	st, err := OpenStore(path)
	require.NoError(t, err)
	want := map[uint64]Alert{}
	for i := range 20 {
		stored, err := st.PutAlerts([]Alert{logAlert("eu-1", i, t0, t0.Add(time.Hour))}, fpOf, t0)
		require.NoError(t, err)
		for fp, a := range stored {
			want[fp] = a
		}
	}
	// The last request: large enough to span pages of the log, compressed or not.
	var big []Alert
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 1000 {
		a := logAlert("eu-9", i, t0, t0.Add(time.Hour))
		a.Annotations["description"] = fmt.Sprintf("%016x%016x%016x", rnd.Uint64(), rnd.Uint64(), rnd.Uint64())
		big = append(big, a)
	}
	_, err = st.PutAlerts(big, fpOf, t0)
	require.NoError(t, err)

	killed := copyDir(t, filepath.Dir(path))
	require.NoError(t, st.Close())
	logDir := AlertLogDir(filepath.Join(killed, "c.db"))
	_, last, err := wlog.Segments(logDir)
	require.NoError(t, err)
	// The segment the last record is in, cut in the middle of that record.
	var seg string
	for i := last; i >= 0; i-- {
		seg = wlog.SegmentName(logDir, i)
		if fi, err := os.Stat(seg); err == nil && fi.Size() > 0 {
			break
		}
	}
	fi, err := os.Stat(seg)
	require.NoError(t, err)
	require.Greater(t, fi.Size(), int64(40<<10), "the big record spans pages")
	require.NoError(t, os.Truncate(seg, fi.Size()-10<<10))

	st = requireHolds(t, filepath.Join(killed, "c.db"), want)
	extra := logAlert("eu-1", 99, t0, t0.Add(time.Hour))
	stored, err := st.PutAlerts([]Alert{extra}, fpOf, t0)
	require.NoError(t, err)
	want[fpOf(extra)] = stored[fpOf(extra)]
	require.NoError(t, st.Close())
	requireHolds(t, filepath.Join(killed, "c.db"), want)
}

// TestAlertLogRefusesARecordItCannotRead: a whole record (its CRC matches) that does not
// decode is not a torn tail: opening fails and says where, rather than dropping it and
// everything after it.
func TestAlertLogRefusesARecordItCannotRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.db")
	st, err := OpenStore(path)
	require.NoError(t, err)
	_, err = st.PutAlerts([]Alert{logAlert("eu-1", 0, t0, t0.Add(time.Hour))}, fpOf, t0)
	require.NoError(t, err)
	_, err = st.alerts.append([]byte{recAlertsPut, '{', 'x'}, func() {})
	require.NoError(t, err)
	_, err = st.PutAlerts([]Alert{logAlert("eu-1", 1, t0, t0.Add(time.Hour))}, fpOf, t0)
	require.NoError(t, err)
	require.NoError(t, st.Close())
	_, err = OpenStore(path)
	require.ErrorContains(t, err, "alert log")
	require.ErrorContains(t, err, "segment")
	require.ErrorContains(t, err, "invalid character")
}

// TestAlertLogSharesFsyncs: records appended before an fsync starts are all on disk after it:
// their callers wait for it, not one fsync each.
func TestAlertLogSharesFsyncs(t *testing.T) {
	st, _ := openTestStore(t)
	l := st.alerts
	var seqs []uint64
	for i := range 3 {
		seq, err := l.append([]byte{recAlertsDelete}, func() {})
		require.NoError(t, err, "record %d", i)
		seqs = append(seqs, seq)
	}
	require.NoError(t, l.sync(seqs[2]))
	require.NoError(t, l.sync(seqs[0]))
	require.NoError(t, l.sync(seqs[1]))
	require.Equal(t, 1, l.fsyncs, "one fsync for the three records")
	seq, err := l.append([]byte{recAlertsDelete}, func() {})
	require.NoError(t, err)
	require.NoError(t, l.sync(seq))
	require.Equal(t, 2, l.fsyncs, "a record appended after it needs another")
}

// TestAlertLogGroupCommit: concurrent requests all get their alerts kept, each all or none.
func TestAlertLogGroupCommit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.db")
	st, err := OpenStore(path)
	require.NoError(t, err)
	const senders, requests, perRequest = 8, 25, 16
	var mtx sync.Mutex
	want := map[uint64]Alert{}
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for r := range requests {
				var batch []Alert
				for i := range perRequest {
					batch = append(batch, logAlert(fmt.Sprintf("c-%d", s), r*perRequest+i, t0, t0.Add(time.Hour)))
				}
				stored, err := st.PutAlerts(batch, fpOf, t0)
				if !assertNoError(t, err) {
					return
				}
				mtx.Lock()
				for fp, a := range stored {
					want[fp] = a
				}
				mtx.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, want, senders*requests*perRequest)
	syncs := st.alerts.synced
	require.Equal(t, uint64(senders*requests), st.alerts.seq)
	require.NoError(t, st.Close())
	st, err = OpenStore(path)
	require.NoError(t, err)
	defer st.Close()
	got, err := st.Alerts()
	require.NoError(t, err)
	requireSameAlerts(t, want, got)
	t.Logf("%d records, the last fsync covered up to record %d", senders*requests, syncs)
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// TestAlertLogTakesOverTheBoltAlerts: a store written before the alert log kept its alerts in
// a bbolt bucket; opening it moves them to the log, once.
func TestAlertLogTakesOverTheBoltAlerts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.db")
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	want := map[uint64]Alert{}
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketAlerts)
		if err != nil {
			return err
		}
		for i := range 3 {
			a := logAlert("eu-1", i, t0, t0.Add(time.Hour))
			want[fpOf(a)] = a
			// As the bucket held them: the alert and when it was received.
			v, err := json.Marshal(struct {
				Alert
				ReceivedAt time.Time `json:"receivedAt"`
			}{a, t0})
			if err != nil {
				return err
			}
			if err := b.Put(binary.BigEndian.AppendUint64(nil, fpOf(a)), v); err != nil {
				return err
			}
		}
		return nil
	}))
	require.NoError(t, db.Close())

	for range 2 {
		st, err := OpenStore(path)
		require.NoError(t, err)
		got, err := st.Alerts()
		require.NoError(t, err)
		requireSameAlerts(t, want, got)
		require.NoError(t, st.db.View(func(tx *bolt.Tx) error {
			require.Nil(t, tx.Bucket(bucketAlerts), "the bucket is gone")
			return nil
		}))
		require.NoError(t, st.Close())
	}
}

// TestAlertLogCompactsWhenDue: the log is compacted once it grew by more than the last
// checkpoint (and a minimum), not before.
func TestAlertLogCompactsWhenDue(t *testing.T) {
	st, path := openTestStore(t)
	require.False(t, st.alerts.checkpointDue())
	require.NoError(t, st.CompactAlerts())
	_, _, err := wlog.LastCheckpoint(AlertLogDir(path))
	require.Error(t, err, "no checkpoint before it is due")
	st.alerts.mtx.Lock()
	st.alerts.logged = alertLogMinCheckpoint + 1
	st.alerts.mtx.Unlock()
	require.True(t, st.alerts.checkpointDue())
	require.NoError(t, st.CompactAlerts())
	_, _, err = wlog.LastCheckpoint(AlertLogDir(path))
	require.NoError(t, err)
	require.False(t, st.alerts.checkpointDue())
}
