// Package ident makes the identifiers of what fleetwatch stores (incidents, remediations):
// time-ordered and unique.
package ident

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync"
	"time"
)

// IDs hands out identifiers: a prefix, a dash, then 8 bytes of time (Unix nanoseconds) and 4
// random bytes, in hex. The time part strictly increases over the identifiers one IDs hands
// out, even when many are asked for at the same instant: an evaluation opens all its new
// incidents at one time, and with 4 random bytes alone 50,000 of them collide with a
// probability of about a quarter. The random bytes tell apart the identifiers of two
// processes (two replicas) made at the same nanosecond. The zero value is ready to use.
type IDs struct {
	mtx  sync.Mutex
	last uint64
}

// New returns an identifier made at now: later than every other this IDs returned.
func (g *IDs) New(prefix string, now time.Time) string {
	t := uint64(now.UnixNano())
	g.mtx.Lock()
	if t <= g.last {
		t = g.last + 1
	}
	g.last = t
	g.mtx.Unlock()
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], t)
	_, _ = rand.Read(b[8:])
	out := make([]byte, 0, len(prefix)+1+2*len(b))
	out = append(append(out, prefix...), '-')
	return string(hex.AppendEncode(out, b[:]))
}
