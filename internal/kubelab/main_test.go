package kubelab_test

import (
	"testing"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestMain fails the package's tests when one leaves a goroutine behind.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m, testenv.IdleConnections...) }
