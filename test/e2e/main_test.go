package e2e

import (
	"testing"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestMain fails the package's tests when one leaves a goroutine behind (idle keep-alive connections of the shared HTTP client are not leaks).
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m, testenv.IdleConnections...) }
