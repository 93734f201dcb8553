package remediate

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/fleetwatch/fleetwatch/internal/journal"
)

// Store keeps remediations and the audit in a bbolt file in the data directory. Every write is
// one transaction, fsynced before it returns: an audit entry for an API call is on disk before
// the call goes out, and a remediation's new state with it, so a kill -9 loses nothing that
// happened and a restart knows which calls may have gone out.
type Store struct {
	db *bolt.DB
}

var (
	bucketRemediations = []byte("remediations") // ID -> Remediation
	bucketAudit        = []byte("audit")        // seq (8 bytes) -> AuditEntry
	bucketByIncident   = []byte("by_incident")  // incident ID \x00 remediation ID -> nothing
	bucketPaused       = []byte("paused")       // "cluster/<name>" ("cluster/": the fleet) -> who paused it
	bucketSpecs        = []byte("specs")        // cluster \x00 namespace/name -> KeptSpec
	// bucketEvents is the journal of remediation events (internal/journal) the on-call hooks
	// deliver: written with the change, trimmed once every receiver took it.
	bucketEvents = []byte("events") // seq (8 bytes) -> journal.Entry
)

// ErrNotFound is returned for an unknown remediation.
var ErrNotFound = errors.New("remediation not found")

// OpenStore opens (creating) the store at path. Another process holding it is an error after
// a second, not a hang.
func OpenStore(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open remediation store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRemediations, bucketAudit, bucketByIncident, bucketPaused, bucketSpecs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open remediation store %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// Save stores a remediation and appends audit entries, in one transaction: the state and the
// record of why it changed are kept together or not at all. The entries get their sequence
// numbers here.
func (s *Store) Save(r *Remediation, entries ...*AuditEntry) error {
	return s.SaveAll([]*Remediation{r}, entries...)
}

// SaveAll stores remediations that change together (a failover and the failback planned
// for it) with their audit entries, in one transaction.
func (s *Store) SaveAll(rs []*Remediation, entries ...*AuditEntry) error {
	data := make([][]byte, len(rs))
	for i, r := range rs {
		var err error
		if data[i], err = json.Marshal(r); err != nil {
			return err
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for i, r := range rs {
			var prev *Remediation
			if old := tx.Bucket(bucketRemediations).Get([]byte(r.ID)); old != nil {
				prev = &Remediation{}
				if err := json.Unmarshal(old, prev); err != nil {
					return fmt.Errorf("remediation %s: %w", r.ID, err)
				}
			}
			for _, kind := range eventsOf(prev, r) {
				err := journal.Append(tx, bucketEvents, &journal.Entry{
					Time: r.UpdatedAt, Kind: kind, Subject: r.ID, Incident: r.IncidentID, Clusters: r.Clusters, Payload: data[i],
				})
				if err != nil {
					return err
				}
			}
			if err := tx.Bucket(bucketRemediations).Put([]byte(r.ID), data[i]); err != nil {
				return err
			}
			if err := tx.Bucket(bucketByIncident).Put([]byte(r.IncidentID+"\x00"+r.ID), nil); err != nil {
				return err
			}
		}
		return appendAudit(tx, entries)
	})
}

// Events returns up to limit journaled remediation events after seq, in order.
func (s *Store) Events(after uint64, limit int) ([]journal.Entry, error) {
	return journal.Read(s.db, bucketEvents, after, limit)
}

// EventsHead is the sequence number of the last journaled event (0: none yet).
func (s *Store) EventsHead() (uint64, error) { return journal.Head(s.db, bucketEvents) }

// TrimEvents deletes the journaled events up to seq: every reader has them.
func (s *Store) TrimEvents(upTo uint64) error { return journal.Trim(s.db, bucketEvents, upTo) }

// Audit appends entries on their own (a plan that was not kept, a refused approval).
func (s *Store) Audit(entries ...*AuditEntry) error {
	return s.db.Update(func(tx *bolt.Tx) error { return appendAudit(tx, entries) })
}

func appendAudit(tx *bolt.Tx, entries []*AuditEntry) error {
	b := tx.Bucket(bucketAudit)
	for _, e := range entries {
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		e.Seq = seq
		data, err := json.Marshal(e)
		if err != nil {
			return err
		}
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], seq)
		if err := b.Put(k[:], data); err != nil {
			return err
		}
	}
	return nil
}

// Get returns one remediation.
func (s *Store) Get(id string) (*Remediation, error) {
	var r *Remediation
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRemediations).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		r = new(Remediation)
		return json.Unmarshal(v, r)
	})
	return r, err
}

// List returns every remediation, oldest first (IDs are time-ordered).
func (s *Store) List() ([]*Remediation, error) {
	var out []*Remediation
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRemediations).ForEach(func(k, v []byte) error {
			r := new(Remediation)
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("remediation %s: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// ForIncident lists the IDs of an incident's remediations.
func (s *Store) ForIncident(incident string) ([]string, error) {
	var ids []string
	prefix := []byte(incident + "\x00")
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketByIncident).Cursor()
		for k, _ := c.Seek(prefix); k != nil && len(k) > len(prefix) && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
			ids = append(ids, string(k[len(prefix):]))
		}
		return nil
	})
	return ids, err
}

// AuditLog returns the audit entries after seq (0: from the start), of one remediation when id
// is set, at most limit of them (0: all).
func (s *Store) AuditLog(after uint64, id string, limit int) ([]AuditEntry, error) {
	var out []AuditEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], after+1)
		for key, v := c.Seek(k[:]); key != nil; key, v = c.Next() {
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("audit entry %d: %w", binary.BigEndian.Uint64(key), err)
			}
			if id != "" && e.RemediationID != id {
				continue
			}
			out = append(out, e)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	return out, err
}

func pauseKey(cluster string) []byte {
	return []byte("cluster/" + cluster) // bbolt keys are never empty: the fleet is "cluster/"
}

// SetPaused pauses (who != "") or resumes (who == "") the fleet (cluster "") or a cluster, with
// its audit entry, in one transaction.
func (s *Store) SetPaused(cluster, who string, entry *AuditEntry) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPaused)
		var err error
		if who == "" {
			err = b.Delete(pauseKey(cluster))
		} else {
			err = b.Put(pauseKey(cluster), []byte(who))
		}
		if err != nil {
			return err
		}
		return appendAudit(tx, []*AuditEntry{entry})
	})
}

// Paused returns what is paused: "" for the fleet, or cluster names, with who paused them.
func (s *Store) Paused() (map[string]string, error) {
	out := map[string]string{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPaused).ForEach(func(k, v []byte) error {
			out[strings.TrimPrefix(string(k), "cluster/")] = string(v)
			return nil
		})
	})
	return out, err
}

// KeptSpec is a Deployment as fleetwatch last read it from its cluster's API server: the
// manifest a failover recreates elsewhere.
type KeptSpec struct {
	Cluster    string             `json:"cluster"`
	KeptAt     time.Time          `json:"kept_at"`
	Deployment *appsv1.Deployment `json:"deployment"`
}

func specPrefix(cluster string) []byte { return []byte(cluster + "\x00") }

// ReplaceSpecs replaces the specs kept for a cluster with specs, in one transaction: a
// Deployment deleted from the cluster is dropped, a cluster that could not be read keeps what
// it had.
func (s *Store) ReplaceSpecs(cluster string, specs []KeptSpec) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSpecs)
		c := b.Cursor()
		prefix := specPrefix(cluster)
		var stale [][]byte
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			stale = append(stale, bytes.Clone(k))
		}
		for _, k := range stale {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		for _, sp := range specs {
			data, err := json.Marshal(sp)
			if err != nil {
				return err
			}
			k := append(specPrefix(cluster), sp.Deployment.Namespace+"/"+sp.Deployment.Name...)
			if err := b.Put(k, data); err != nil {
				return err
			}
		}
		return nil
	})
}

// Specs returns the specs kept for a cluster, by namespace and name.
func (s *Store) Specs(cluster string) ([]KeptSpec, error) {
	var out []KeptSpec
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSpecs).Cursor()
		prefix := specPrefix(cluster)
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var sp KeptSpec
			if err := json.Unmarshal(v, &sp); err != nil {
				return fmt.Errorf("spec %q: %w", k, err)
			}
			out = append(out, sp)
		}
		return nil
	})
	return out, err
}

// Spec returns one kept spec, or ErrNotFound.
func (s *Store) Spec(cluster, namespace, name string) (*KeptSpec, error) {
	var sp *KeptSpec
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSpecs).Get(append(specPrefix(cluster), namespace+"/"+name...))
		if v == nil {
			return fmt.Errorf("%w: no spec kept for Deployment %s/%s of %s", ErrNotFound, namespace, name, cluster)
		}
		sp = &KeptSpec{}
		return json.Unmarshal(v, sp)
	})
	return sp, err
}
