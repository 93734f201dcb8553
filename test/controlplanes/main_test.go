// Package controlplanes runs fleetwatch in the fleet lab on real control planes: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and kube-state-metrics per cluster,
// a real Prometheus per cluster remote-writing into fleetwatch, and a real Alertmanager. It is
// a package of its own so that `go test ./...` runs it beside test/e2e: both mostly wait.
package controlplanes

import (
	"testing"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// TestMain fails the package's tests when one leaves a goroutine behind (idle keep-alive
// connections of the shared HTTP client are not leaks).
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m, testenv.IdleConnections...) }
