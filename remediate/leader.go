package remediate

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/fleetwatch/fleetwatch/internal/apiresp"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

// leadership is whether this process may act: always, without leader election; while it holds
// the Lease, with it. holder is the identity that holds it ("" when unknown).
type leadership struct {
	mu      sync.Mutex
	leading bool
	holder  string
}

func (e *Engine) setLeader(leading bool, holder string) {
	e.lead.mu.Lock()
	e.lead.leading, e.lead.holder = leading, holder
	e.lead.mu.Unlock()
	e.metrics.leader.Set(b2f(leading))
}

// Leading reports whether this process acts, and which process holds the Lease.
func (e *Engine) Leading() (bool, string) {
	e.lead.mu.Lock()
	defer e.lead.mu.Unlock()
	return e.lead.leading, e.lead.holder
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// RunElected campaigns for the Lease of cfg in the hub cluster (client), runs the engine while
// it holds it, and campaigns again when it loses it, until ctx ends. Until it holds the Lease
// the engine does not act, and the API refuses decisions (503, naming the leader). The Lease is
// released when ctx ends, so that another process takes over without waiting for it to
// expire. RunElected returns once the engine's last evaluation is over.
func (e *Engine) RunElected(ctx context.Context, client kubernetes.Interface, cfg config.LeaderElectionConfig, identity string) error {
	e.setLeader(false, "")
	e.mu.Lock()
	e.hub = newHandover(client, cfg.Namespace, cfg.LeaseName, identity)
	e.mu.Unlock()
	// Every replica keeps the Deployments a failover recreates, leading or not.
	var specs sync.WaitGroup
	defer specs.Wait()
	specsCtx, stopSpecs := context.WithCancel(ctx)
	defer stopSpecs()
	specs.Go(func() { e.keepSpecsEvery(specsCtx) })
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: cfg.Namespace, Name: cfg.LeaseName},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	var running sync.WaitGroup
	defer running.Wait()
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, Name: cfg.LeaseName, ReleaseOnCancel: true,
			LeaseDuration: time.Duration(cfg.LeaseDuration), RenewDeadline: time.Duration(cfg.RenewDeadline), RetryPeriod: time.Duration(cfg.RetryPeriod),
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					running.Add(1)
					defer running.Done()
					e.logger.Info("leading remediation", "identity", identity, "lease", cfg.Namespace+"/"+cfg.LeaseName)
					e.mu.Lock()
					e.hub.ready = false // the first evaluation reads what the last leader left
					e.mu.Unlock()
					e.setLeader(true, identity)
					e.evaluateEvery(ctx)
				},
				OnStoppedLeading: func() {
					e.logger.Info("no longer leading remediation", "identity", identity)
					e.setLeader(false, "")
				},
				OnNewLeader: func(holder string) {
					if holder != identity {
						e.setLeader(false, holder)
					}
				},
			},
		})
		if err != nil {
			return fmt.Errorf("remediation leader election: %w", err)
		}
		le.Run(ctx)
		// Leadership lost: the engine's evaluation ends (its context is cancelled) before
		// this process campaigns again.
		running.Wait()
	}
	return nil
}

// NotLeading answers a decision this process may not take (it does not hold the Lease): 503,
// naming the process that does.
func (e *Engine) NotLeading(w http.ResponseWriter) bool {
	leading, holder := e.Leading()
	if leading {
		return false
	}
	if holder == "" {
		holder = "no process yet"
	}
	apiresp.Error(w, http.StatusServiceUnavailable, "unavailable",
		fmt.Errorf("this fleetwatch process does not lead remediation (the Lease is held by %s): send decisions to the leader", holder))
	return true
}
