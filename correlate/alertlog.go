package correlate

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/prometheus/tsdb/fileutil"
	"github.com/prometheus/prometheus/tsdb/record"
	"github.com/prometheus/prometheus/tsdb/wlog"
	"github.com/prometheus/prometheus/util/compression"
)

// alertLog keeps the received alerts durably the way Prometheus's TSDB keeps samples: a
// write-ahead log (tsdb/wlog: records with a CRC in 32 KiB pages, in segment files; a torn
// tail is cut off on open), compacted now and then into a checkpoint of the alerts it holds,
// with the alerts themselves in memory. A request's alerts are one record, so they are kept
// all or none; a record is appended in order and fsynced before the caller is answered, and
// the records that concurrent callers append while one fsync runs share the next one (group
// commit). Appending is sequential: keeping an alert costs its own bytes, not the B+tree
// pages around it.
type alertLog struct {
	dir string

	// syncMtx is held while the log fsyncs or starts a segment; it is taken before mtx.
	syncMtx sync.Mutex
	synced  uint64 // records on disk; under syncMtx
	fsyncs  int    // fsyncs done by sync; under syncMtx

	mtx    sync.Mutex
	w      *wlog.WL
	alerts map[uint64]Alert // what the log holds, merged
	seq    uint64           // records appended
	// offset bounds the bytes appended to the current segment: a record must fit in it, so
	// that wlog never starts a segment by itself (it would fsync the previous one in the
	// background, after the caller was answered).
	offset int
	// logged is the bytes appended since the last checkpoint, checkpointed the size of that one.
	logged, checkpointed int
	// failed is the first write or fsync error: after it, nothing is known to be on disk, and
	// every append fails until a restart replays the log.
	failed error
}

const (
	alertLogSegmentSize = wlog.DefaultSegmentSize
	// alertLogMinCheckpoint is how much the log grows at least before it is compacted.
	alertLogMinCheckpoint = 16 << 20
	// checkpointBatch is how many alerts one checkpoint record holds.
	checkpointBatch = 1000
)

// Record types: the first byte of every record.
const (
	recAlertsPut    byte = 1 // logPut: alerts received, merged with what is held
	recAlertsDelete byte = 2 // fingerprints (8 bytes each) forgotten
	recAlertsSet    byte = 3 // logPut: alerts as held (a checkpoint's)
)

// logPut is the body of recAlertsPut and recAlertsSet records.
type logPut struct {
	Now    time.Time `json:"now"`
	FPs    []uint64  `json:"fps"`
	Alerts []Alert   `json:"alerts"`
}

// openAlertLog opens (creating) the log in dir and reads back what it holds, on top of base
// (alerts kept before there was a log; nil: none).
func openAlertLog(dir string, base map[uint64]Alert, logger *slog.Logger) (*alertLog, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	l := &alertLog{dir: dir, alerts: map[uint64]Alert{}}
	maps.Copy(l.alerts, base)
	first := 0
	cp, idx, err := wlog.LastCheckpoint(dir)
	switch {
	case errors.Is(err, record.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		r, err := wlog.NewSegmentsReader(cp)
		if err != nil {
			return nil, err
		}
		n, err := l.replay(wlog.NewReader(r))
		r.Close()
		if err != nil {
			// A checkpoint is complete before it gets its name.
			return nil, fmt.Errorf("read alert log checkpoint %s: %w", cp, err)
		}
		l.checkpointed, first = n, idx+1
	}
	// Whatever a crash left: unfinished checkpoints, segments a checkpoint holds.
	if tmps, err := filepath.Glob(filepath.Join(dir, wlog.CheckpointPrefix+"*.tmp")); err == nil {
		for _, t := range tmps {
			_ = os.RemoveAll(t)
		}
	}
	l.w, err = wlog.NewSize(logger, nil, dir, alertLogSegmentSize, compression.Snappy)
	if err != nil {
		return nil, err
	}
	if err := l.w.Truncate(first); err != nil {
		l.w.Close()
		return nil, err
	}
	r, err := wlog.NewSegmentsRangeReader(wlog.SegmentRange{Dir: dir, First: first, Last: -1})
	if err != nil {
		l.w.Close()
		return nil, err
	}
	n, err := l.replay(wlog.NewReader(r))
	r.Close()
	l.logged = n
	if _, bad := errors.AsType[*badRecordError](err); bad {
		l.w.Close()
		return nil, fmt.Errorf("read alert log %s: %w", dir, err)
	}
	if err != nil {
		// A record cut short by a crash, and whatever follows it, was never acknowledged: its
		// fsync had not returned. Cut it off as Prometheus does.
		logger.Warn("the alert log ends in a torn record; dropping it and what follows", "err", err)
		if rerr := l.w.Repair(err); rerr != nil {
			l.w.Close()
			return nil, fmt.Errorf("repair alert log: %w (after: %w)", rerr, err)
		}
	}
	return l, nil
}

// replay applies every record r reads and returns their bytes. A record that is whole (its
// CRC matches) but cannot be applied is an error of its own, not a torn tail to cut off.
func (l *alertLog) replay(r *wlog.Reader) (int, error) {
	n := 0
	for r.Next() {
		rec := r.Record()
		n += len(rec)
		if err := l.apply(rec); err != nil {
			return n, &badRecordError{segment: r.Segment(), offset: r.Offset(), err: err}
		}
	}
	return n, r.Err()
}

type badRecordError struct {
	segment int
	offset  int64
	err     error
}

func (e *badRecordError) Error() string {
	return fmt.Sprintf("record before segment %d offset %d: %v", e.segment, e.offset, e.err)
}

// apply changes the alerts held as rec says, and returns what it stored.
func (l *alertLog) apply(rec []byte) error {
	if len(rec) == 0 {
		return errors.New("empty record")
	}
	switch rec[0] {
	case recAlertsPut, recAlertsSet:
		var p logPut
		if err := json.Unmarshal(rec[1:], &p); err != nil {
			return err
		}
		if len(p.FPs) != len(p.Alerts) {
			return fmt.Errorf("%d fingerprints for %d alerts", len(p.FPs), len(p.Alerts))
		}
		l.merge(p, rec[0] == recAlertsSet, nil)
	case recAlertsDelete:
		if (len(rec)-1)%8 != 0 {
			return fmt.Errorf("deletion record of %d bytes", len(rec))
		}
		for b := rec[1:]; len(b) > 0; b = b[8:] {
			delete(l.alerts, binary.BigEndian.Uint64(b))
		}
	default:
		return fmt.Errorf("unknown record type %d", rec[0])
	}
	return nil
}

// merge takes p's alerts in as Alertmanager does (an unresolved alert keeps its earliest
// start; the end is the latest sender's), or as they are (set); stored gets them as held.
func (l *alertLog) merge(p logPut, set bool, stored map[uint64]Alert) {
	for i, a := range p.Alerts {
		fp := p.FPs[i]
		if prev, ok := l.alerts[fp]; ok && !set && !prev.StartsAt.IsZero() && prev.StartsAt.Before(a.StartsAt) && !prev.Resolved(p.Now) {
			a.StartsAt = prev.StartsAt
		}
		l.alerts[fp] = a
		if stored != nil {
			stored[fp] = a
		}
	}
}

// put appends the alerts and returns them as held, once they are on disk.
func (l *alertLog) put(alerts []Alert, fps []uint64, now time.Time) (map[uint64]Alert, error) {
	p := logPut{Now: now, FPs: fps, Alerts: alerts}
	buf := putRecords.Get().(*[]byte)
	rec, err := appendLogPut(append((*buf)[:0], recAlertsPut), &p)
	if err != nil {
		return nil, err
	}
	stored := make(map[uint64]Alert, len(alerts))
	seq, err := l.append(rec, func() { l.merge(p, false, stored) })
	// The log copied the record into its pages: its buffer serves the next put.
	if cap(rec) <= maxPooledRecord {
		*buf = rec[:0]
		putRecords.Put(buf)
	}
	if err != nil {
		return nil, err
	}
	return stored, l.sync(seq)
}

// putRecords are buffers of put records, reused: encoding a request's alerts into a new,
// growing buffer each time made as much garbage as the alerts took in.
var putRecords = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// maxPooledRecord: a buffer grown past it by an unusually large put is left to the collector.
const maxPooledRecord = 1 << 20

// delete forgets alerts.
func (l *alertLog) delete(fps []uint64) error {
	rec := make([]byte, 1, 1+8*len(fps))
	rec[0] = recAlertsDelete
	for _, fp := range fps {
		rec = binary.BigEndian.AppendUint64(rec, fp)
	}
	seq, err := l.append(rec, func() {
		for _, fp := range fps {
			delete(l.alerts, fp)
		}
	})
	if err != nil {
		return err
	}
	return l.sync(seq)
}

// recordSpace bounds what a record of n bytes takes in a segment: a header per page it
// spans, and the rest of a page it may leave.
func recordSpace(n int) int { return n + 7*(n/(32<<10)+2) + 32<<10 }

// append writes rec at the end of the log and, in the same order, applies it to memory. It
// returns the record's sequence number for sync.
func (l *alertLog) append(rec []byte, apply func()) (uint64, error) {
	space := recordSpace(len(rec))
	if space > alertLogSegmentSize/2 {
		return 0, fmt.Errorf("alert log: a record of %d bytes is larger than half a segment", len(rec))
	}
	l.mtx.Lock()
	defer l.mtx.Unlock()
	if l.offset+space > alertLogSegmentSize && l.failed == nil {
		// Start the next segment; that fsyncs this one, so it waits for a sync in progress.
		l.mtx.Unlock()
		l.syncMtx.Lock()
		l.mtx.Lock()
		if l.offset+space > alertLogSegmentSize && l.failed == nil {
			l.nextSegment()
		}
		l.syncMtx.Unlock()
	}
	if l.failed != nil {
		return 0, l.failed
	}
	if err := l.w.Log(rec); err != nil {
		l.failed = fmt.Errorf("alert log: write: %w", err)
		return 0, l.failed
	}
	l.offset += space
	l.logged += len(rec)
	apply()
	l.seq++
	return l.seq, nil
}

// nextSegment starts a segment and returns its index; the caller holds syncMtx and mtx.
func (l *alertLog) nextSegment() int {
	k, err := l.w.NextSegmentSync()
	if err != nil {
		l.failed = fmt.Errorf("alert log: next segment: %w", err)
		return 0
	}
	l.offset, l.synced = 0, l.seq
	return k
}

// sync returns once record seq is on disk: it fsyncs, unless a sync that began after seq was
// appended did already.
func (l *alertLog) sync(seq uint64) error {
	l.syncMtx.Lock()
	defer l.syncMtx.Unlock()
	if l.synced >= seq {
		return nil
	}
	l.mtx.Lock()
	upTo, failed := l.seq, l.failed
	l.mtx.Unlock()
	if failed != nil {
		return failed
	}
	// No segment starts meanwhile (that takes syncMtx): this fsyncs every record up to upTo.
	if err := l.w.Sync(); err != nil {
		l.mtx.Lock()
		if l.failed == nil {
			l.failed = fmt.Errorf("alert log: fsync: %w", err)
		}
		failed = l.failed
		l.mtx.Unlock()
		return failed
	}
	l.synced = upTo
	l.fsyncs++
	return nil
}

// get returns the alert held under fp.
func (l *alertLog) get(fp uint64) (Alert, bool) {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	a, ok := l.alerts[fp]
	return a, ok
}

// has reports whether the log holds an alert under fp.
func (l *alertLog) has(fp uint64) bool {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	_, ok := l.alerts[fp]
	return ok
}

// held returns a copy of the alerts held.
func (l *alertLog) held() map[uint64]Alert {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	return maps.Clone(l.alerts)
}

// checkpointDue reports whether the log grew since its last checkpoint by more than that
// checkpoint's size (and alertLogMinCheckpoint): compacting then at least halves it.
func (l *alertLog) checkpointDue() bool {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	return l.failed == nil && l.logged > max(alertLogMinCheckpoint, l.checkpointed)
}

// checkpoint compacts the log: the alerts held when it starts a segment go to a checkpoint,
// and the segments before it are deleted. Appends go on meanwhile, into the new segment.
func (l *alertLog) checkpoint() error {
	l.syncMtx.Lock()
	l.mtx.Lock()
	if l.failed != nil {
		l.mtx.Unlock()
		l.syncMtx.Unlock()
		return l.failed
	}
	last := l.nextSegment()
	err := l.failed
	held := maps.Clone(l.alerts)
	logged := l.logged
	l.logged = 0
	l.mtx.Unlock()
	l.syncMtx.Unlock()
	if err != nil {
		return err
	}
	// The checkpoint holds what segments up to last-1 did: last is the one appends go to.
	n, err := writeCheckpoint(l.dir, last-1, held)
	if err != nil {
		l.mtx.Lock()
		l.logged += logged
		l.mtx.Unlock()
		return err
	}
	l.mtx.Lock()
	l.checkpointed = n
	l.mtx.Unlock()
	if err := l.w.Truncate(last); err != nil {
		return err
	}
	return wlog.DeleteCheckpoints(l.dir, last-1)
}

// writeCheckpoint writes the alerts as the checkpoint of the segments up to idx, all at once:
// it is written under another name, fsynced, and renamed. It returns its bytes.
func writeCheckpoint(dir string, idx int, alerts map[uint64]Alert) (int, error) {
	name := filepath.Join(dir, fmt.Sprintf(wlog.CheckpointPrefix+"%08d", idx))
	tmp := name + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return 0, err
	}
	cw, err := wlog.New(nil, nil, tmp, compression.Snappy)
	if err != nil {
		return 0, err
	}
	fps := slices.Sorted(maps.Keys(alerts))
	n := 0
	var buf []byte
	for len(fps) > 0 {
		batch := fps[:min(checkpointBatch, len(fps))]
		fps = fps[len(batch):]
		p := logPut{FPs: batch, Alerts: make([]Alert, len(batch))}
		for i, fp := range batch {
			p.Alerts[i] = alerts[fp]
		}
		rec, err := appendLogPut(append(buf[:0], recAlertsSet), &p)
		if err == nil {
			buf = rec
			n += len(rec)
			err = cw.Log(rec)
		}
		if err != nil {
			cw.Close()
			return 0, fmt.Errorf("write alert log checkpoint: %w", err)
		}
	}
	if err := cw.Close(); err != nil { // fsyncs
		return 0, err
	}
	if err := fileutil.Replace(tmp, name); err != nil {
		return 0, err
	}
	return n, nil
}

// close flushes and closes the log.
func (l *alertLog) close() error {
	l.syncMtx.Lock()
	defer l.syncMtx.Unlock()
	l.mtx.Lock()
	defer l.mtx.Unlock()
	return l.w.Close()
}
