package dashboards

import (
	"testing"

	"go.uber.org/goleak"
)

// The tests start the fleet lab's simulator and local HTTP servers; none may outlive them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
