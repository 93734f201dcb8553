package remediate

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// Two engines campaign for one Lease (client-go's leader election on a fake hub clientset):
// exactly one leads; the other refuses decisions naming the leader; when the leader stops,
// it releases the Lease and the other takes over.
func TestLeaderElectionOneActs(t *testing.T) {
	// Registered first, so it runs after the worlds' cleanups closed their TSDBs.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	hub := fake.NewClientset()
	le := config.DefaultLeaderElection
	le.LeaseDuration, le.RenewDeadline, le.RetryPeriod = config.DefaultLeaderElection.LeaseDuration/5, config.DefaultLeaderElection.RenewDeadline/5, config.DefaultLeaderElection.RetryPeriod/5
	type proc struct {
		w      *world
		cancel context.CancelFunc
		done   chan error
	}
	start := func(name string) *proc {
		w := newWorld(t, nil)
		w.tick(0) // the clusters' API probes in the view: their Deployments are kept
		ctx, cancel := context.WithCancel(context.Background())
		p := &proc{w: w, cancel: cancel, done: make(chan error, 1)}
		go func() { p.done <- w.engine.RunElected(ctx, hub, le, name) }()
		return p
	}
	a, b := start("fleetwatch-a"), start("fleetwatch-b")
	defer func() {
		for _, p := range []*proc{a, b} {
			p.cancel()
			<-p.done
		}
	}()
	var leader, follower *proc
	testenv.Eventually(t, 30*time.Second, func() error {
		la, _ := a.w.engine.Leading()
		lb, holder := b.w.engine.Leading()
		switch {
		case la && !lb && holder == "fleetwatch-a":
			leader, follower = a, b
		case lb && !la:
			if _, h := a.w.engine.Leading(); h == "fleetwatch-b" {
				leader, follower = b, a
			}
		}
		if leader == nil {
			return fmt.Errorf("a leads %v, b leads %v (holder %q)", la, lb, holder)
		}
		return nil
	})

	// The follower refuses a decision: 503, naming the leader.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/api/v1/remediations/rem-x/approve", nil)
	follower.w.engine.o.Identify = func(context.Context) (correlate.Caller, bool) { return testCaller{}, true }
	follower.w.engine.Handler().ServeHTTP(rec, req)
	require.Equal(t, http.StatusServiceUnavailable, rec.Code, rec.Body.String())
	_, holder := follower.w.engine.Leading()
	require.Contains(t, rec.Body.String(), "the Lease is held by "+holder)

	// Both keep the Deployments a failover recreates: the follower may be the next leader.
	for _, p := range []*proc{leader, follower} {
		testenv.Eventually(t, 30*time.Second, func() error {
			specs, err := p.w.store.Specs("c1")
			if err != nil || len(specs) != 1 {
				return fmt.Errorf("c1's kept Deployments: %d, %v", len(specs), err)
			}
			return nil
		})
	}

	// The leader stops (its Lease released): the follower takes over.
	leader.cancel()
	require.NoError(t, <-leader.done)
	leader.done <- nil // for the deferred cleanup
	testenv.Eventually(t, 30*time.Second, func() error {
		if l, _ := follower.w.engine.Leading(); !l {
			return fmt.Errorf("the follower does not lead yet")
		}
		return nil
	})
}

// testCaller is an operator of every cluster.
type testCaller struct{}

func (testCaller) String() string                   { return "alice" }
func (testCaller) AllowsAny(clusters []string) bool { return true }

// Without leader election, Run keeps the Deployments a failover recreates beside its
// evaluations, and stops both when its context ends.
func TestRunKeepsSpecs(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	w := newWorld(t, nil)
	w.tick(0) // the clusters' API probes in the view
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.engine.Run(ctx) }()
	testenv.Eventually(t, 30*time.Second, func() error {
		specs, err := w.store.Specs("c1")
		if err != nil || len(specs) != 1 {
			return fmt.Errorf("c1's kept Deployments: %d, %v", len(specs), err)
		}
		return nil
	})
	cancel()
	<-done
}
