package ident

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestIDsIncreaseAtOneInstant(t *testing.T) {
	var g IDs
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	prev := g.New("inc", now)
	require.Regexp(t, `^inc-[0-9a-f]{24}$`, prev)
	require.Equal(t, fmt.Sprintf("inc-%016x", now.UnixNano()), prev[:20], "the time part is the time asked for")
	for range 10000 {
		id := g.New("inc", now)
		require.Greater(t, id, prev, "identifiers made at one instant must still increase")
		prev = id
	}
	// A clock that steps back does not make an identifier that sorts before the last one.
	require.Greater(t, g.New("inc", now.Add(-time.Hour)), prev)
}

// TestIDsConcurrent: identifiers made at one instant by concurrent callers differ in their time
// part too, not only by chance in their random bytes.
func TestIDsConcurrent(t *testing.T) {
	var g IDs
	now := time.Now()
	var mtx sync.Mutex
	seen, times := map[string]bool{}, map[string]bool{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 20000 {
				id := g.New("rem", now)
				mtx.Lock()
				assert.False(t, seen[id], "identifier %s made twice", id)
				seen[id] = true
				times[id[:len("rem-")+16]] = true
				mtx.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, seen, 80000)
	require.Len(t, times, 80000, "two concurrent callers were given one time")
}
