package main

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestMain fails the package's tests when one leaves a goroutine behind.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }

func TestSetGOGC(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	require.Equal(t, defaultGOGC, setGOGC(func(string) string { return "" }))
	require.Equal(t, defaultGOGC, debug.SetGCPercent(defaultGOGC))
	// A GOGC in the environment is the runtime's already: left as it is.
	debug.SetGCPercent(150)
	require.Equal(t, 150, setGOGC(func(k string) string { return map[string]string{"GOGC": "150"}[k] }))
	require.Equal(t, 150, debug.SetGCPercent(150))
}
