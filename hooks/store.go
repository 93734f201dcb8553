package hooks

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// store keeps each receiver's cursor in each source's journal: how far it has taken the
// events. A cursor moves only after a delivery was answered 2xx (or the event did not match
// the receiver), in its own fsynced transaction: a kill -9 between the answer and the move
// sends that one event again, with the same idempotency key, and loses none.
type store struct{ db *bolt.DB }

var bucketCursors = []byte("cursors") // receiver \x00 source -> seq (8 bytes)

func openStore(path string) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open hooks store %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketCursors)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open hooks store %s: %w", path, err)
	}
	return &store{db: db}, nil
}

func cursorKey(receiver, source string) []byte { return []byte(receiver + "\x00" + source) }

// cursor returns the receiver's cursor in source, and whether it has one.
func (s *store) cursor(receiver, source string) (uint64, bool, error) {
	var (
		seq uint64
		ok  bool
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketCursors).Get(cursorKey(receiver, source)); len(v) == 8 {
			seq, ok = binary.BigEndian.Uint64(v), true
		}
		return nil
	})
	return seq, ok, err
}

func (s *store) setCursor(receiver, source string, seq uint64) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], seq)
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCursors).Put(cursorKey(receiver, source), v[:])
	})
}

// cursors returns every cursor, by receiver and source.
func (s *store) cursors() (map[string]map[string]uint64, error) {
	out := map[string]map[string]uint64{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCursors).ForEach(func(k, v []byte) error {
			for i, c := range k {
				if c == 0 && len(v) == 8 {
					r := string(k[:i])
					if out[r] == nil {
						out[r] = map[string]uint64{}
					}
					out[r][string(k[i+1:])] = binary.BigEndian.Uint64(v)
					break
				}
			}
			return nil
		})
	})
	return out, err
}

// forget deletes the cursors of receivers not in keep.
func (s *store) forget(keep map[string]bool) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCursors)
		var gone [][]byte
		_ = b.ForEach(func(k, _ []byte) error {
			for i, c := range k {
				if c == 0 {
					if !keep[string(k[:i])] {
						gone = append(gone, bytes.Clone(k))
					}
					break
				}
			}
			return nil
		})
		for _, k := range gone {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}
