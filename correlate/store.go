package correlate

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Store keeps the engine's state in a bbolt file in the data directory: the alerts received
// (so a restart correlates what was acknowledged to senders before it), every incident with
// its history, and the outbox of incident states still to deliver to each Alertmanager.
// Every write is one transaction, fsynced before it returns.
type Store struct {
	db *bolt.DB
}

var (
	bucketAlerts    = []byte("alerts")    // fingerprint (8 bytes) -> storedAlert
	bucketIncidents = []byte("incidents") // ID -> Incident
	bucketOutbox    = []byte("outbox")    // destination \x00 ID -> revision (8 bytes)
)

type storedAlert struct {
	Alert
	ReceivedAt time.Time `json:"receivedAt"`
}

// OpenStore opens (creating) the store at path. Another process holding it is an error after
// a second, not a hang.
func OpenStore(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open incident store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketAlerts, bucketIncidents, bucketOutbox} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open incident store %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

func fpKey(fp uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], fp)
	return b[:]
}

// PutAlerts stores alerts, merging each with what is stored under its fingerprint as
// Alertmanager does (the earliest start of an unresolved alert; the end the latest sender
// says), and returns them as stored, by fingerprint. Concurrent calls are committed together
// (bbolt's Batch), so many small requests cost one fsync, not one each.
func (s *Store) PutAlerts(alerts []Alert, fingerprint func(Alert) uint64, now time.Time) (map[uint64]Alert, error) {
	var stored map[uint64]Alert
	err := s.db.Batch(func(tx *bolt.Tx) error {
		stored = make(map[uint64]Alert, len(alerts))
		b := tx.Bucket(bucketAlerts)
		for _, a := range alerts {
			fp := fingerprint(a)
			k := fpKey(fp)
			prev, seen := stored[fp]
			if !seen {
				if old := b.Get(k); old != nil {
					// Only the times matter here: decoding the labels and annotations too
					// would cost most of a resend.
					var sa struct {
						StartsAt time.Time `json:"startsAt"`
						EndsAt   time.Time `json:"endsAt"`
					}
					if err := json.Unmarshal(old, &sa); err == nil {
						prev, seen = Alert{StartsAt: sa.StartsAt, EndsAt: sa.EndsAt}, true
					}
				}
			}
			if seen && !prev.StartsAt.IsZero() && prev.StartsAt.Before(a.StartsAt) && !prev.Resolved(now) {
				a.StartsAt = prev.StartsAt
			}
			v, err := json.Marshal(storedAlert{Alert: a, ReceivedAt: now})
			if err != nil {
				return err
			}
			if err := b.Put(k, v); err != nil {
				return err
			}
			stored[fp] = a
		}
		return nil
	})
	return stored, err
}

// Alerts returns every stored alert by fingerprint.
func (s *Store) Alerts() (map[uint64]Alert, error) {
	out := map[uint64]Alert{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAlerts).ForEach(func(k, v []byte) error {
			var a storedAlert
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("alert %x: %w", k, err)
			}
			out[binary.BigEndian.Uint64(k)] = a.Alert
			return nil
		})
	})
	return out, err
}

// DeleteAlerts forgets alerts.
func (s *Store) DeleteAlerts(fps []uint64) error {
	if len(fps) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAlerts)
		for _, fp := range fps {
			if err := b.Delete(fpKey(fp)); err != nil {
				return err
			}
		}
		return nil
	})
}

// SaveIncidents stores the incidents and queues their new state for every destination, in
// one transaction: an incident change is never stored without being queued, or queued
// without being stored.
func (s *Store) SaveIncidents(incs []*Incident, destinations []string) error {
	if len(incs) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, ob := tx.Bucket(bucketIncidents), tx.Bucket(bucketOutbox)
		for _, inc := range incs {
			v, err := json.Marshal(inc)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(inc.ID), v); err != nil {
				return err
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

// Enqueue queues the current state of incidents for destinations again (periodic resends).
func (s *Store) Enqueue(ids []string, destinations []string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, ob := tx.Bucket(bucketIncidents), tx.Bucket(bucketOutbox)
		for _, id := range ids {
			v := b.Get([]byte(id))
			if v == nil {
				continue
			}
			var inc Incident
			if err := json.Unmarshal(v, &inc); err != nil {
				return err
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

// Pending is one queued delivery.
type Pending struct {
	Destination string
	Incident    *Incident
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
			inc := &Incident{}
			if err := json.Unmarshal(raw, inc); err != nil {
				return fmt.Errorf("incident %s: %w", id, err)
			}
			out = append(out, Pending{Destination: dest, Incident: inc, Revision: int(binary.BigEndian.Uint64(v))})
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
		inc = &Incident{}
		return json.Unmarshal(v, inc)
	})
	return inc, err
}

// Filter selects incidents; empty fields match everything.
type Filter struct {
	State    string // open, acknowledged, resolved, or "active" for open and acknowledged
	Cluster  string
	Severity string
	Since    time.Time // updated at or after
}

func (f Filter) match(i *Incident) bool {
	switch {
	case f.State == "active" && !i.Active(),
		f.State != "" && f.State != "active" && i.State != f.State,
		f.Severity != "" && i.Severity != f.Severity,
		!f.Since.IsZero() && i.UpdatedAt.Before(f.Since):
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
		return tx.Bucket(bucketIncidents).ForEach(func(k, v []byte) error {
			inc := &Incident{}
			if err := json.Unmarshal(v, inc); err != nil {
				return fmt.Errorf("incident %s: %w", k, err)
			}
			if f.match(inc) {
				out = append(out, inc)
			}
			return nil
		})
	})
	sort.Slice(out, func(a, b int) bool { return out[a].ID > out[b].ID })
	return out, err
}
