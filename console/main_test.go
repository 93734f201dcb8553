package console_test

import (
	"testing"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestMain fails the package's tests when one leaves a goroutine behind (the view's TSDB, the
// stores).
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }
