package journal

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// encode is an entry as Append stores it.
func encode(e *Entry) ([]byte, error) {
	b, _, _, err := appendEntry(nil, e, e.appendPayload)
	return b, err
}

// encode writes what json.Marshal writes, for payloads with what encoding/json escapes, and
// for entries with and without their optional fields.
func TestEncodeIsJSONMarshal(t *testing.T) {
	payloads := []any{
		nil,
		map[string]any{"id": "inc-1", "alerts": []map[string]string{{"alertname": "A<B>&C", "x": "\u2028 \"q\" \\ é \x01"}}},
		[]int{1, 2, 3},
		"just a string",
	}
	east := time.FixedZone("east", 5*3600+30*60)
	entries := []Entry{
		{Seq: 7, Time: time.Unix(1700000000, 123).UTC(), Kind: "opened", Subject: "inc-1", Incident: "inc-1", Clusters: []string{"eu-1"}},
		{Seq: 1 << 60, Time: time.Unix(1700000000, 0).In(east), Kind: "waiting_approval", Subject: "rem-<1>&", Clusters: []string{}},
		{Kind: "k\u2028\"", Subject: "\xff", Incident: "inc-2", Clusters: []string{"a", "b&c"}},
	}
	for _, p := range payloads {
		for _, e := range entries {
			if p != nil {
				raw, err := json.Marshal(p)
				require.NoError(t, err)
				e.Payload = raw
			}
			want, err := json.Marshal(&e)
			require.NoError(t, err)
			got, err := encode(&e)
			require.NoError(t, err)
			require.Equal(t, string(want), string(got))
		}
	}
	// What json.Marshal refuses, encode refuses.
	for _, e := range []Entry{{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, {Payload: json.RawMessage{}}} {
		_, err := json.Marshal(&e)
		require.Error(t, err)
		_, err = encode(&e)
		require.Error(t, err)
	}
}

func TestAppendRead(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "j.db"), 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	bucket := []byte("events")
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		return Append(tx, bucket,
			&Entry{Kind: "opened", Subject: "a", Payload: json.RawMessage(`{"id":"a","n":[1,2]}`)},
			&Entry{Kind: "resolved", Subject: "b"})
	}))
	es, err := Read(db, bucket, 0, 10)
	require.NoError(t, err)
	require.Len(t, es, 2)
	require.Equal(t, uint64(1), es[0].Seq)
	require.JSONEq(t, `{"id":"a","n":[1,2]}`, string(es[0].Payload))
	require.Equal(t, "b", es[1].Subject)
	require.Equal(t, "null", string(es[1].Payload))
}

// FuzzEncodeIsJSONMarshal: for any payload json.Marshal writes, encode writes json.Marshal's
// bytes.
func FuzzEncodeIsJSONMarshal(f *testing.F) {
	for _, s := range []string{"", "<a&b>", "\u2028\u2029", "\xff\xfe", `"\`, "é"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, kind, value string) {
		raw, err := json.Marshal(map[string]any{"v": value, "list": []string{value, kind}})
		require.NoError(t, err)
		e := &Entry{Seq: 1, Time: time.Unix(int64(len(value))*1e5, int64(len(kind))), Kind: kind, Subject: value, Incident: kind, Clusters: []string{kind}, Payload: raw}
		want, err := json.Marshal(e)
		require.NoError(t, err)
		got, err := encode(e)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	})
}

// TestAppendPayload: an entry whose payload the caller appends is stored as Append stores it
// with that payload, and the payload returned is the stored entry's, which a later entry
// encoded in the same scratch does not change.
func TestAppendPayload(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "j.db"), 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	payloads := []string{`{"id":"a","n":[1,2]}`, `"b<&>"`, `{"id":"c"}`}
	var got [][]byte
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		var scratch []byte
		for i, p := range payloads {
			v, err := AppendPayload(tx, []byte("events"), &Entry{Kind: "opened", Subject: fmt.Sprint("s", i), Clusters: []string{"eu-1"}}, &scratch,
				func(b []byte) ([]byte, error) { return append(b, p...), nil })
			if err != nil {
				return err
			}
			got = append(got, v)
		}
		for i, p := range payloads {
			require.Equal(t, p, string(got[i]), "payload %d as returned", i)
		}
		_, err := AppendPayload(tx, []byte("events"), &Entry{Kind: "opened"}, &scratch, func(b []byte) ([]byte, error) { return b, nil })
		require.ErrorContains(t, err, "empty payload")
		return nil
	}))
	es, err := Read(db, []byte("events"), 0, 10)
	require.NoError(t, err)
	require.Len(t, es, len(payloads))
	err = db.View(func(tx *bolt.Tx) error {
		for i, e := range es {
			want, err := encode(&Entry{Seq: e.Seq, Kind: "opened", Subject: fmt.Sprint("s", i), Clusters: []string{"eu-1"}, Payload: json.RawMessage(payloads[i])})
			require.NoError(t, err)
			require.Equal(t, string(want), string(tx.Bucket([]byte("events")).Get(key(e.Seq))))
		}
		return nil
	})
	require.NoError(t, err)
}
