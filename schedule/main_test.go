package schedule

import (
	"testing"

	"go.uber.org/goleak"
)

// The service's tests serve HTTP and the snapshot loop runs on timers: nothing may outlive a test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
