// Package journal is the change feed of fleetwatch's bbolt stores: an append-only bucket of
// events written in the same transaction as the state change they describe, so that a change
// is never kept without its event or announced without being kept. The on-call hooks read
// each store's journal from a cursor of their own and trim what every receiver has taken:
// this is the transactional outbox pattern, and the reason a `kill -9` between a change and
// its webhook loses nothing.
package journal

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/fleetwatch/fleetwatch/internal/jsonenc"
)

// Entry is one event of a journal. Field names are the JSON the stores keep.
type Entry struct {
	// Seq is the entry's place in its journal: increasing, never reused (bbolt's bucket
	// sequence), also after a trim.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Kind is what happened ("opened", "waiting_approval", ...), in the store's own words.
	Kind string `json:"kind"`
	// Subject is the ID of what changed (an incident, a remediation), Incident the incident it
	// belongs to, Clusters the clusters it concerns: what receivers filter on.
	Subject  string   `json:"subject"`
	Incident string   `json:"incident,omitempty"`
	Clusters []string `json:"clusters,omitempty"`
	// Payload is the subject as it was stored by the change, in the store's JSON: the output of
	// json.Marshal, which Append writes as it is.
	Payload json.RawMessage `json:"payload"`
}

// FillAppendOnly is the bbolt fill percent for buckets written only at their end (keys that
// increase: a journal's sequence, time-ordered IDs): their split pages are filled whole
// instead of bbolt's default half, which halves the pages such a transaction writes.
const FillAppendOnly = 1.0

// Append adds entries to the journal bucket inside tx (the transaction of the change they
// describe), giving each its Seq.
func Append(tx *bolt.Tx, bucket []byte, entries ...*Entry) error {
	var scratch []byte
	for _, e := range entries {
		if _, err := AppendPayload(tx, bucket, e, &scratch, e.appendPayload); err != nil {
			return err
		}
	}
	return nil
}

// appendPayload appends e.Payload as it is: json.Marshal's output, compact and valid already;
// null when there is none.
func (e *Entry) appendPayload(b []byte) ([]byte, error) {
	if e.Payload == nil {
		return append(b, "null"...), nil
	}
	return append(b, e.Payload...), nil
}

// appendEntry appends e as json.Marshal writes it, written by hand: encoding/json's
// reflection, and its validating and compacting every json.RawMessage byte by byte, were most
// of the cost of journaling a storm's tens of thousands of new incidents. payload appends the
// payload's value; start and end are where it is in out.
func appendEntry(b []byte, e *Entry, payload func([]byte) ([]byte, error)) (out []byte, start, end int, err error) {
	b = strconv.AppendUint(append(b, `{"seq":`...), e.Seq, 10)
	if b, err = e.Time.AppendText(append(b, `,"time":"`...)); err != nil {
		return nil, 0, 0, fmt.Errorf("journal: entry %d: time: %w", e.Seq, err)
	}
	b = jsonenc.AppendString(append(b, `","kind":`...), e.Kind)
	b = jsonenc.AppendString(append(b, `,"subject":`...), e.Subject)
	if e.Incident != "" {
		b = jsonenc.AppendString(append(b, `,"incident":`...), e.Incident)
	}
	if len(e.Clusters) > 0 {
		b = jsonenc.AppendStrings(append(b, `,"clusters":`...), e.Clusters)
	}
	b = append(b, `,"payload":`...)
	start = len(b)
	if b, err = payload(b); err != nil {
		return nil, 0, 0, err
	}
	if end = len(b); end == start {
		return nil, 0, 0, fmt.Errorf("journal: entry %d: empty payload", e.Seq)
	}
	return append(b, '}'), start, end, nil
}

// AppendPayload is Append for one entry whose payload the caller encodes (e.Payload is not
// read): payload appends it, compact JSON as json.Marshal writes it, to the entry's bytes so
// far. The entry is encoded in scratch (kept for the next call) and stored as one allocation
// of its size; the payload's bytes within it are returned, for the caller to store under
// another key of the same transaction without a copy of its own (bbolt holds a value's bytes
// until the transaction commits, and never writes into them).
func AppendPayload(tx *bolt.Tx, bucket []byte, e *Entry, scratch *[]byte, payload func([]byte) ([]byte, error)) ([]byte, error) {
	b, err := tx.CreateBucketIfNotExists(bucket)
	if err != nil {
		return nil, err
	}
	b.FillPercent = FillAppendOnly
	if e.Seq, err = b.NextSequence(); err != nil {
		return nil, err
	}
	buf, start, end, err := appendEntry((*scratch)[:0], e, payload)
	if err != nil {
		return nil, err
	}
	*scratch = buf
	v := bytes.Clone(buf)
	if err := b.Put(key(e.Seq), v); err != nil {
		return nil, err
	}
	return v[start:end:end], nil
}

func key(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// Read returns up to limit entries after seq, in order.
func Read(db *bolt.DB, bucket []byte, after uint64, limit int) ([]Entry, error) {
	var out []Entry
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(key(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("journal %s entry %d: %w", bucket, binary.BigEndian.Uint64(k), err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Head is the Seq of the journal's last entry ever appended (0: none), trimmed or not.
func Head(db *bolt.DB, bucket []byte) (uint64, error) {
	var seq uint64
	err := db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucket); b != nil {
			seq = b.Sequence()
		}
		return nil
	})
	return seq, err
}

// Trim deletes the entries up to and including seq.
func Trim(db *bolt.DB, bucket []byte, upTo uint64) error {
	return db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return nil
		}
		// Deleting under a cursor and then moving it skips keys (bbolt), so the cursor goes
		// back to the first key after each delete.
		c := b.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= upTo; k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}
