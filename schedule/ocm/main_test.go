package ocm

import (
	"testing"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestMain fails the package's tests when one leaves a goroutine behind. The hub test's
// client-go transports keep idle keep-alive connections, which are not leaks.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m, testenv.IdleConnections...) }
