package correlate

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/cespare/xxhash/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/fleetwatch/fleetwatch/internal/journal"
)

// Store keeps the engine's state in the data directory: the alerts received (so a restart
// correlates what was acknowledged to senders before it) in a write-ahead log (alertLog) in
// the directory AlertLogDir names, and in a bbolt file every incident with its history, and
// the outbox of incident states still to deliver to each Alertmanager. Every write is one
// record or one transaction, fsynced before it returns.
type Store struct {
	db     *bolt.DB
	alerts *alertLog
}

var (
	// bucketAlerts held the alerts before they were kept in the alert log; a store opened
	// with it moves them there.
	bucketAlerts    = []byte("alerts")    // fingerprint (8 bytes) -> Alert JSON
	bucketIncidents = []byte("incidents") // ID -> Incident
	bucketOutbox    = []byte("outbox")    // destination \x00 ID -> revision (8 bytes)
	// bucketResolved indexes the resolved incidents by when they resolved, oldest first, so
	// that the history is listed and pruned without decoding the whole store. A store that
	// predates it gets it filled from the incidents when it is first opened.
	bucketResolved = []byte("resolved") // resolution time (8 bytes, Unix ns) + ID -> nothing
	// bucketEvents is the journal of incident changes (internal/journal) the on-call hooks
	// deliver: written with the change, trimmed once every receiver took it.
	bucketEvents = []byte("events") // seq (8 bytes) -> journal.Entry
	// bucketIncidentAlerts holds the incidents' alerts, apart from the incidents (see
	// storedIncident): an incident that gains an alert writes that alert, not all of them
	// again. The stamp (alertStamp) tells whether a stored alert is the current one.
	bucketIncidentAlerts = []byte("incident_alerts") // ID \x00 fingerprint (8 bytes) -> stamp (8 bytes) + Alert
)

// storedIncident is an incident as the incidents bucket keeps it: without its alerts, which
// are in bucketIncidentAlerts (AlertsApart), and with how many of them each alertname has,
// which is all its delivery to Alertmanager says of them. Incidents stored before the alerts
// were kept apart have them inline, and are read as they are.
type storedIncident struct {
	*Incident
	AlertsApart bool           `json:"alerts_apart,omitempty"`
	AlertNames  map[string]int `json:"alert_names,omitempty"`
}

// Incident events, as the journal and the on-call hooks name them.
const (
	EventOpened       = "opened"
	EventChanged      = "changed"
	EventAcknowledged = "acknowledged"
	EventResolved     = "resolved"
)

// eventOf names the change that made inc. The tracker stamps every change with UpdatedAt and
// the acknowledgement or resolution it is with the same instant, so the incident itself says
// which it was, without reading the stored one on the alert-intake path.
func eventOf(inc *Incident) string {
	switch {
	case !inc.Active() && inc.ResolvedAt.Equal(inc.UpdatedAt):
		return EventResolved
	case inc.Revision == 1:
		return EventOpened
	case inc.AckedBy != "" && inc.AckedAt.Equal(inc.UpdatedAt):
		return EventAcknowledged
	}
	return EventChanged
}

// AlertLogDir is the directory of the alert log of the store at path.
func AlertLogDir(path string) string { return path + ".alerts" }

// OpenStore opens (creating) the store at path, and its alert log in AlertLogDir(path).
// Another process holding it is an error after a second, not a hang.
func OpenStore(path string) (*Store, error) {
	return OpenStoreWithLogger(path, nil)
}

// OpenStoreWithLogger is OpenStore, with a logger for what opening repairs (nil: none).
func OpenStoreWithLogger(path string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// The map is reserved at 1 GiB (address space, not memory: only the pages read count), so
	// that a storm of new incidents growing the file does not remap it again and again (each
	// remap copies every node the transaction touched).
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, InitialMmapSize: 1 << 30})
	if err != nil {
		return nil, fmt.Errorf("open incident store %s: %w", path, err)
	}
	var legacy map[uint64]Alert
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketIncidents, bucketOutbox, bucketIncidentAlerts} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if b := tx.Bucket(bucketAlerts); b != nil {
			legacy = map[uint64]Alert{}
			err := b.ForEach(func(k, v []byte) error {
				var a Alert
				if err := json.Unmarshal(v, &a); err != nil {
					return fmt.Errorf("alert %x: %w", k, err)
				}
				legacy[binary.BigEndian.Uint64(k)] = a
				return nil
			})
			if err != nil {
				return err
			}
		}
		if tx.Bucket(bucketResolved) == nil {
			return indexResolved(tx)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open incident store %s: %w", path, err)
	}
	log, err := openAlertLog(AlertLogDir(path), legacy, logger)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open incident store %s: alert log: %w", path, err)
	}
	if legacy != nil {
		// The alerts of a store written before the log: into a checkpoint, then out of bbolt.
		// A crash in between reads them from both, the log last.
		err := log.checkpoint()
		if err == nil {
			err = db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketAlerts) })
		}
		if err != nil {
			log.close()
			db.Close()
			return nil, fmt.Errorf("open incident store %s: move alerts to the alert log: %w", path, err)
		}
	}
	return &Store{db: db, alerts: log}, nil
}

// Close closes the store.
func (s *Store) Close() error { return errors.Join(s.alerts.close(), s.db.Close()) }

// indexResolved creates the resolved index of a store that has none (written before it
// existed) from its incidents.
func indexResolved(tx *bolt.Tx) error {
	idx, err := tx.CreateBucket(bucketResolved)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketIncidents).ForEach(func(k, v []byte) error {
		var h incidentHead
		if err := json.Unmarshal(v, &h); err != nil {
			return fmt.Errorf("index incident %s: %w", k, err)
		}
		if h.State != StateResolved {
			return nil
		}
		return idx.Put(resolvedKey(h.ResolvedAt, string(k)), nil)
	})
}

// incidentHead is what listing and pruning read of a stored incident to decide whether to
// decode all of it (its alerts are most of it).
type incidentHead struct {
	State      string    `json:"state"`
	Severity   string    `json:"severity"`
	Clusters   []string  `json:"clusters"`
	UpdatedAt  time.Time `json:"updated_at"`
	ResolvedAt time.Time `json:"resolved_at"`
}

func (h *incidentHead) incident() *Incident {
	return &Incident{State: h.State, Group: Group{Severity: h.Severity, Clusters: h.Clusters}, UpdatedAt: h.UpdatedAt, ResolvedAt: h.ResolvedAt}
}

func resolvedKey(at time.Time, id string) []byte {
	k := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(at.UnixNano()))
	return append(k, id...)
}

// PutAlerts stores alerts, merging each with what is stored under its fingerprint as
// Alertmanager does (the earliest start of an unresolved alert; the end the latest sender
// says), and returns them as stored, by fingerprint, once they are on disk. Concurrent calls
// share an fsync (see alertLog).
func (s *Store) PutAlerts(alerts []Alert, fingerprint func(Alert) uint64, now time.Time) (map[uint64]Alert, error) {
	fps := make([]uint64, len(alerts))
	for i, a := range alerts {
		fps[i] = fingerprint(a)
	}
	return s.alerts.put(alerts, fps, now)
}

// Alerts returns every stored alert by fingerprint.
func (s *Store) Alerts() (map[uint64]Alert, error) { return s.alerts.held(), nil }

// DeleteAlerts forgets alerts.
func (s *Store) DeleteAlerts(fps []uint64) error {
	if len(fps) == 0 {
		return nil
	}
	return s.alerts.delete(fps)
}

// CompactAlerts compacts the alert log when it has grown past what the alerts held take
// (see alertLog.checkpoint); otherwise it does nothing.
func (s *Store) CompactAlerts() error {
	if !s.alerts.checkpointDue() {
		return nil
	}
	return s.alerts.checkpoint()
}

// SaveIncidents stores the incidents, queues their new state for every destination and
// journals the change for the on-call hooks, in one transaction: an incident change is never
// stored without being queued and journaled, or announced without being stored. An incident
// is stored without its alerts, and of those only the ones that changed since the last save
// are written (putIncident).
func (s *Store) SaveIncidents(incs []*Incident, destinations []string) error {
	if len(incs) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, ob, idx := tx.Bucket(bucketIncidents), tx.Bucket(bucketOutbox), tx.Bucket(bucketResolved)
		ab := tx.Bucket(bucketIncidentAlerts)
		// Incident IDs are time-ordered (ident.IDs), and so are the keys of these buckets
		// (the outbox's within each destination): a storm's new incidents are written at their
		// end.
		for _, bk := range []*bolt.Bucket{b, ob, idx, ab} {
			bk.FillPercent = journal.FillAppendOnly
		}
		var scratch []byte
		for _, inc := range incs {
			fresh := inc.Revision == 1
			if fresh && b.Get([]byte(inc.ID)) != nil {
				// A new incident under an ID already stored would overwrite another.
				return fmt.Errorf("incident %s: new, but an incident with its ID is stored", inc.ID)
			}
			// The journal keeps the stored head (Events puts the alerts back for the hooks),
			// and the incidents bucket the same bytes.
			v, err := journal.AppendPayload(tx, bucketEvents, &journal.Entry{
				Time: inc.UpdatedAt, Kind: eventOf(inc), Subject: inc.ID, Incident: inc.ID, Clusters: inc.Clusters,
			}, &scratch, func(buf []byte) ([]byte, error) { return appendStoredHead(buf, inc, alertNames(inc.Alerts)) })
			if err != nil {
				return err
			}
			if err := s.putIncident(b, ab, inc, fresh, v); err != nil {
				return err
			}
			if !inc.Active() {
				if err := idx.Put(resolvedKey(inc.ResolvedAt, inc.ID), nil); err != nil {
					return err
				}
			}
			for _, d := range destinations {
				if err := ob.Put(outboxKey(d, inc.ID), revision(inc.Revision)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// putIncident stores head, inc encoded without its alerts (storedIncident), and brings its
// alerts in bucketIncidentAlerts up to date: a new or changed alert is written, a gone one
// deleted, the others are left as they are.
//
// An active incident's alert that the alert log holds (by fingerprint) is written as a
// reference, 8 bytes, and read back from the log: as the log holds it then, which is never
// older than the incident's copy (alerts reach the log first), and has the latest end a resend
// gave it. The log keeps an alert at least an hour after it ended, and an active incident
// holds only alerts that have not ended, or ended at most ResolveAfter ago (while it clears);
// once the incident resolves, its alerts are written whole (the log's, where it still holds
// them), as it keeps them for its history. A fresh incident (no head stored under its ID) has
// no alerts stored either: they are written and deleted with the head, in one transaction.
func (s *Store) putIncident(b, ab *bolt.Bucket, inc *Incident, fresh bool, head []byte) error {
	if err := b.Put([]byte(inc.ID), head); err != nil {
		return err
	}

	// The alerts as they are now, and as they are stored, both by fingerprint.
	type current struct {
		fp    uint64
		alert *Alert
	}
	cur := make([]current, 0, len(inc.Alerts))
	for i := range inc.Alerts {
		cur = append(cur, current{Rules{}.fingerprint(inc.Alerts[i]), &inc.Alerts[i]})
	}
	slices.SortStableFunc(cur, func(x, y current) int { return cmp.Compare(x.fp, y.fp) })
	type stored struct {
		fp, stamp uint64
		ref       bool
	}
	var have []stored
	var stale [][]byte // keys that are no fingerprint of this incident
	prefix := incidentAlertsPrefix(inc.ID)
	if !fresh {
		c := ab.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(k) != len(prefix)+8 || len(v) < 8 {
				stale = append(stale, bytes.Clone(k))
				continue
			}
			have = append(have, stored{binary.BigEndian.Uint64(k[len(prefix):]), binary.BigEndian.Uint64(v), len(v) == 8})
		}
	}

	// Merge the two sorted lists; write after reading (a bbolt cursor must not see the
	// bucket change under it).
	type put struct{ k, v []byte }
	var puts []put
	active := inc.Active()
	write := func(x current) error {
		k := incidentAlertKey(prefix, x.fp)
		held, ok := s.alerts.get(x.fp)
		if active && ok {
			puts = append(puts, put{k, reference})
			return nil
		}
		if ok {
			// What a reference read until now: the log's alert is never older.
			x.alert = &held
		}
		v, err := appendAlert(binary.BigEndian.AppendUint64(make([]byte, 0, 1024), alertStamp(x.alert)), x.alert)
		if err != nil {
			return err
		}
		puts = append(puts, put{k, v})
		return nil
	}
	for i, j := 0, 0; i < len(cur) || j < len(have); {
		switch {
		case i < len(cur) && i+1 < len(cur) && cur[i].fp == cur[i+1].fp:
			i++ // the same fingerprint twice: the later alert is the one kept
		case j == len(have) || i < len(cur) && cur[i].fp < have[j].fp:
			if err := write(cur[i]); err != nil {
				return err
			}
			i++
		case i == len(cur) || have[j].fp < cur[i].fp:
			stale = append(stale, incidentAlertKey(prefix, have[j].fp))
			j++
		default:
			switch {
			case have[j].ref && active && s.alerts.has(cur[i].fp):
				// A reference reads the log's alert, whatever changed.
			case have[j].ref || alertStamp(cur[i].alert) != have[j].stamp:
				// Kept by reference and to be kept whole from now on, or changed.
				if err := write(cur[i]); err != nil {
					return err
				}
			}
			i, j = i+1, j+1
		}
	}
	for _, k := range stale {
		if err := ab.Delete(k); err != nil {
			return err
		}
	}
	for _, p := range puts {
		if err := ab.Put(p.k, p.v); err != nil {
			return err
		}
	}
	return nil
}

func incidentAlertsPrefix(id string) []byte { return append([]byte(id), 0) }

// reference is the value of an alert of incident_alerts kept by reference: 8 bytes, whose
// content is not read (stores written before hold the alert's stamp there).
var reference = make([]byte, 8)

func incidentAlertKey(prefix []byte, fp uint64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, len(prefix)+8), prefix...), fp)
}

// alertStamp hashes everything of an alert that is stored, so that an alert whose stamp did not
// change is not written again. Labels and annotations are summed pair by pair, which needs no
// sorting.
func alertStamp(a *Alert) uint64 {
	var d xxhash.Digest
	pairs := func(m map[string]string, seed string) uint64 {
		var sum uint64
		for k, v := range m {
			d.Reset()
			_, _ = d.WriteString(seed)
			_, _ = d.WriteString(k)
			_, _ = d.WriteString("\xff")
			_, _ = d.WriteString(v)
			sum += d.Sum64()
		}
		return sum
	}
	var buf [40]byte
	binary.BigEndian.PutUint64(buf[0:], pairs(a.Labels, "l\xff"))
	binary.BigEndian.PutUint64(buf[8:], pairs(a.Annotations, "a\xff"))
	binary.BigEndian.PutUint64(buf[16:], uint64(a.StartsAt.UnixNano()))
	binary.BigEndian.PutUint64(buf[24:], uint64(a.EndsAt.UnixNano()))
	if a.StartsAt.IsZero() {
		buf[32] = 1
	}
	if a.EndsAt.IsZero() {
		buf[33] = 1
	}
	d.Reset()
	_, _ = d.Write(buf[:])
	_, _ = d.WriteString(a.GeneratorURL)
	_, _ = d.WriteString("\xff")
	_, _ = d.WriteString(a.Source)
	_, _ = d.WriteString("\xff")
	_, _ = d.WriteString(a.StartsAt.Location().String())
	_, _ = d.WriteString("\xff")
	_, _ = d.WriteString(a.EndsAt.Location().String())
	return d.Sum64()
}

// readIncident decodes a stored incident; with alerts, its alerts kept apart are read back
// too (readAlerts). names are its alerts' counts by alertname; apart is whether its alerts
// are kept apart.
func (s *Store) readIncident(ab *bolt.Bucket, id, v []byte, alerts bool) (inc *Incident, names map[string]int, apart bool, err error) {
	si := storedIncident{Incident: &Incident{}}
	if err := json.Unmarshal(v, &si); err != nil {
		return nil, nil, false, fmt.Errorf("incident %s: %w", id, err)
	}
	inc = si.Incident
	if !si.AlertsApart {
		return inc, alertNames(inc.Alerts), false, nil
	}
	if alerts {
		if err := s.readAlerts(ab, inc); err != nil {
			return nil, nil, true, err
		}
	}
	return inc, si.AlertNames, true, nil
}

// readAlerts reads back the alerts of an incident stored apart from it, in fingerprint order
// (the order the grouping sorts them in). An alert kept by reference is the alert log's as it
// is now (a resend moved its end on); one the log no longer holds is left out.
func (s *Store) readAlerts(ab *bolt.Bucket, inc *Incident) error {
	prefix := incidentAlertsPrefix(inc.ID)
	c := ab.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != len(prefix)+8 || len(v) < 8 {
			continue
		}
		if len(v) == 8 {
			if a, ok := s.alerts.get(binary.BigEndian.Uint64(k[len(prefix):])); ok {
				a.fp, a.localFP = 0, 0 // as read from JSON
				inc.Alerts = append(inc.Alerts, a)
			}
			continue
		}
		var a Alert
		if err := json.Unmarshal(v[8:], &a); err != nil {
			return fmt.Errorf("incident %s alert %x: %w", inc.ID, k[len(prefix):], err)
		}
		inc.Alerts = append(inc.Alerts, a)
	}
	return nil
}

// alertNames counts alerts by alertname.
func alertNames(alerts []Alert) map[string]int {
	names := make(map[string]int)
	for _, a := range alerts {
		names[a.Labels["alertname"]]++
	}
	return names
}

// Events returns up to limit journaled incident changes after seq, in order. An entry's
// payload is the incident as the change stored it, with its alerts as they are stored now
// (they are kept apart from the incident, and read back here).
func (s *Store) Events(after uint64, limit int) ([]journal.Entry, error) {
	es, err := journal.Read(s.db, bucketEvents, after, limit)
	if err != nil || len(es) == 0 {
		return es, err
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		ab := tx.Bucket(bucketIncidentAlerts)
		for i := range es {
			if !bytes.Contains(es[i].Payload, []byte(`"alerts_apart":true`)) {
				continue
			}
			inc, _, _, err := s.readIncident(ab, []byte(es[i].Subject), es[i].Payload, true)
			if err != nil {
				return fmt.Errorf("journal entry %d: %w", es[i].Seq, err)
			}
			if es[i].Payload, err = json.Marshal(inc); err != nil {
				return err
			}
		}
		return nil
	})
	return es, err
}

// EventsHead is the sequence number of the last journaled change (0: none yet).
func (s *Store) EventsHead() (uint64, error) { return journal.Head(s.db, bucketEvents) }

// TrimEvents deletes the journaled changes up to seq: every reader has them.
func (s *Store) TrimEvents(upTo uint64) error { return journal.Trim(s.db, bucketEvents, upTo) }

// Enqueue queues the current state of incidents for destinations again (periodic resends).
func (s *Store) Enqueue(ids []string, destinations []string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, ob := tx.Bucket(bucketIncidents), tx.Bucket(bucketOutbox)
		for _, id := range ids {
			v := b.Get([]byte(id))
			if v == nil {
				continue
			}
			var inc struct {
				Revision int `json:"revision"`
			}
			if err := json.Unmarshal(v, &inc); err != nil {
				return fmt.Errorf("incident %s: %w", id, err)
			}
			for _, d := range destinations {
				if err := ob.Put(outboxKey(d, id), revision(inc.Revision)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func outboxKey(dest, id string) []byte { return []byte(dest + "\x00" + id) }

func revision(r int) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(r))
	return b[:]
}

// Pending is one queued delivery: the incident without its alerts, and their counts by
// alertname.
type Pending struct {
	Destination string
	Incident    *Incident
	AlertNames  map[string]int
	Revision    int
}

// Outbox lists what is queued for dest, oldest incident first.
func (s *Store) Outbox(dest string) ([]Pending, error) {
	var out []Pending
	err := s.db.View(func(tx *bolt.Tx) error {
		b, c := tx.Bucket(bucketIncidents), tx.Bucket(bucketOutbox).Cursor()
		prefix := []byte(dest + "\x00")
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			id := string(k[len(prefix):])
			raw := b.Get([]byte(id))
			if raw == nil {
				continue
			}
			inc, names, _, err := s.readIncident(nil, []byte(id), raw, false)
			if err != nil {
				return err
			}
			out = append(out, Pending{Destination: dest, Incident: inc, AlertNames: names, Revision: int(binary.BigEndian.Uint64(v))})
		}
		return nil
	})
	return out, err
}

// Delivered removes a queued delivery, unless a newer revision was queued meanwhile.
func (s *Store) Delivered(p Pending) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		ob := tx.Bucket(bucketOutbox)
		k := outboxKey(p.Destination, p.Incident.ID)
		if v := ob.Get(k); v != nil && int(binary.BigEndian.Uint64(v)) <= p.Revision {
			return ob.Delete(k)
		}
		return nil
	})
}

// ErrNotFound is returned for an unknown incident.
var ErrNotFound = errors.New("not found")

// Incident returns one incident.
func (s *Store) Incident(id string) (*Incident, error) {
	var inc *Incident
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketIncidents).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("incident %s: %w", id, ErrNotFound)
		}
		var err error
		inc, _, _, err = s.readIncident(tx.Bucket(bucketIncidentAlerts), []byte(id), v, true)
		return err
	})
	return inc, err
}

// Filter selects incidents; empty fields match everything.
type Filter struct {
	State    string // open, acknowledged, resolved, or "active" for open and acknowledged
	Cluster  string
	Severity string
	Since    time.Time // updated at or after
	// Allow, when set, keeps only the incidents it allows by their clusters (a team-scoped
	// identity's access.Identity.AllowsAny).
	Allow func(clusters []string) bool
}

func (f Filter) match(i *Incident) bool {
	switch {
	case f.State == "active" && !i.Active(),
		f.State != "" && f.State != "active" && i.State != f.State,
		f.Severity != "" && i.Severity != f.Severity,
		!f.Since.IsZero() && i.UpdatedAt.Before(f.Since),
		f.Allow != nil && !f.Allow(i.Clusters):
		return false
	}
	if f.Cluster != "" {
		for _, c := range i.Clusters {
			if c == f.Cluster {
				return true
			}
		}
		return false
	}
	return true
}

// Incidents lists the incidents that match f, newest first.
func (s *Store) Incidents(f Filter) ([]*Incident, error) {
	var out []*Incident
	err := s.db.View(func(tx *bolt.Tx) error {
		ab := tx.Bucket(bucketIncidentAlerts)
		return tx.Bucket(bucketIncidents).ForEach(func(k, v []byte) error {
			inc, _, apart, err := s.readIncident(ab, k, v, false)
			if err != nil {
				return err
			}
			if !f.match(inc) {
				return nil
			}
			if apart {
				if err := s.readAlerts(ab, inc); err != nil {
					return err
				}
			}
			out = append(out, inc)
			return nil
		})
	})
	sort.Slice(out, func(a, b int) bool { return out[a].ID > out[b].ID })
	return out, err
}

// ErrBadPageToken is returned for a page token that no listing of the store handed out.
var ErrBadPageToken = errors.New("not a page token of this listing")

// maxScan bounds the incidents one page request reads: with a filter that matches few, the
// page ends early, with a token to go on from there.
const maxScan = 10000

// Page token kinds: which bucket a token's key is of.
const (
	tokenIncidents = 'i' // the incidents bucket, by ID
	tokenResolved  = 'r' // the resolved index, by resolution time
)

// IncidentsPage lists up to limit incidents that match f, newest first, continuing after
// token ("" for the first page), and returns the token of the next page ("" at the end). It
// reads the store with a cursor and stops after limit matches (or maxScan incidents), so a
// page costs the same however long the history is. Resolved incidents are listed by the
// time they resolved, through the resolved index; any other listing by opening time (ID).
// A page may hold fewer than limit incidents and still have a next one.
func (s *Store) IncidentsPage(f Filter, limit int, token string) ([]*Incident, string, error) {
	if limit <= 0 {
		return nil, "", fmt.Errorf("list incidents: limit %d is not positive", limit)
	}
	kind := byte(tokenIncidents)
	if f.State == StateResolved {
		kind = tokenResolved
	}
	var after []byte
	if token != "" {
		raw, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil || len(raw) < 2 || raw[0] != kind || (kind == tokenResolved && len(raw) < 10) {
			return nil, "", fmt.Errorf("page token %q: %w", token, ErrBadPageToken)
		}
		after = raw[1:]
	}
	var out []*Incident
	var last []byte // the key of the last incident read
	more := false   // whether the listing goes on after last
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIncidents)
		c := b.Cursor()
		if kind == tokenResolved {
			c = tx.Bucket(bucketResolved).Cursor()
		}
		var k []byte
		if after == nil {
			k, _ = c.Last()
		} else if k, _ = c.Seek(after); k == nil {
			// Newest first: the page goes on with the key before the token's, whether or
			// not that one is still there.
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		for scanned := 0; k != nil; k, _ = c.Prev() {
			if len(out) == limit || scanned == maxScan {
				more = true
				return nil
			}
			scanned++
			last = bytes.Clone(k)
			id := k
			var at uint64
			if kind == tokenResolved {
				if len(k) < 9 {
					continue
				}
				at, id = binary.BigEndian.Uint64(k[:8]), k[8:]
				// Resolved incidents do not change, so UpdatedAt is ResolvedAt: nothing
				// older can match since.
				if !f.Since.IsZero() && at < uint64(f.Since.UnixNano()) {
					return nil
				}
			}
			h, ok, err := readHead(b, id)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if kind == tokenResolved && (h.State != StateResolved || uint64(h.ResolvedAt.UnixNano()) != at) {
				continue // a stale index entry
			}
			if !f.match(h.incident()) {
				continue
			}
			inc, _, _, err := s.readIncident(tx.Bucket(bucketIncidentAlerts), id, b.Get(id), true)
			if err != nil {
				return err
			}
			out = append(out, inc)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list incidents: %w", err)
	}
	if !more {
		return out, "", nil
	}
	return out, base64.RawURLEncoding.EncodeToString(append([]byte{kind}, last...)), nil
}

// pruneBatch is how many resolved incidents one transaction of DeleteResolvedBefore deletes.
const pruneBatch = 1000

// DeleteResolvedBefore deletes the incidents that resolved before cutoff, with whatever is
// still queued for them, and returns how many it deleted. It reads only the resolved index
// and the incidents it deletes, in transactions of at most pruneBatch incidents.
func (s *Store) DeleteResolvedBefore(cutoff time.Time) (int, error) {
	total := 0
	for {
		n, err := s.deleteResolvedBatch(uint64(cutoff.UnixNano()))
		total += n
		if err != nil {
			return total, fmt.Errorf("delete resolved incidents: %w", err)
		}
		if n < pruneBatch {
			return total, nil
		}
	}
}

// deleteResolvedBatch deletes up to pruneBatch index entries older than cutoff (Unix ns), and
// their incidents, and returns how many entries it removed.
func (s *Store) deleteResolvedBatch(cutoff uint64) (int, error) {
	var n int
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, ob, idx := tx.Bucket(bucketIncidents), tx.Bucket(bucketOutbox), tx.Bucket(bucketResolved)
		// Keys first, deletes after: a bbolt cursor may skip keys after a delete.
		var keys [][]byte
		c := idx.Cursor()
		for k, _ := c.First(); k != nil && len(keys) < pruneBatch; k, _ = c.Next() {
			if len(k) >= 8 && binary.BigEndian.Uint64(k[:8]) >= cutoff {
				break
			}
			keys = append(keys, bytes.Clone(k))
		}
		gone := map[string]bool{}
		for _, k := range keys {
			if err := idx.Delete(k); err != nil {
				return err
			}
			if len(k) < 9 {
				continue
			}
			id := k[8:]
			h, ok, err := readHead(b, id)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if h.State != StateResolved || uint64(h.ResolvedAt.UnixNano()) != binary.BigEndian.Uint64(k[:8]) {
				continue // a stale index entry: the incident is not the one indexed
			}
			if err := b.Delete(id); err != nil {
				return err
			}
			if err := deleteIncidentAlerts(tx.Bucket(bucketIncidentAlerts), string(id)); err != nil {
				return err
			}
			gone[string(id)] = true
		}
		n = len(keys)
		if len(gone) == 0 {
			return nil
		}
		var queued [][]byte
		oc := ob.Cursor()
		for k, _ := oc.First(); k != nil; k, _ = oc.Next() {
			if i := bytes.IndexByte(k, 0); i >= 0 && gone[string(k[i+1:])] {
				queued = append(queued, bytes.Clone(k))
			}
		}
		for _, k := range queued {
			if err := ob.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// deleteIncidentAlerts deletes the alerts kept apart for an incident.
func deleteIncidentAlerts(ab *bolt.Bucket, id string) error {
	prefix := incidentAlertsPrefix(id)
	var keys [][]byte
	c := ab.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := ab.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// readHead decodes the head of the incident stored under id; ok is false when there is none.
func readHead(b *bolt.Bucket, id []byte) (h incidentHead, ok bool, err error) {
	v := b.Get(id)
	if v == nil {
		return h, false, nil
	}
	if err := json.Unmarshal(v, &h); err != nil {
		return h, false, fmt.Errorf("incident %s: %w", id, err)
	}
	return h, true, nil
}
