package main

import (
	"flag"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"
)

// defaultConcurrentReconciles lets the endpoint and subscription controllers
// overlap their round trips to the API server: each reconcile of a new
// endpoint waits on one write, and with 8 at once a bulk create of 10,000
// left the API server a third idle while 5,000 endpoints waited in the
// queue (make scale). The routes compiler has a single request, which
// never runs twice at once. (The API client is not rate-limited:
// controller-runtime leaves that to the API server's priority and
// fairness.)
const defaultConcurrentReconciles = 32

// limits are how many objects each controller reconciles at once.
type limits struct {
	concurrentReconciles int
}

func (l *limits) bind(flags *flag.FlagSet) {
	flags.IntVar(&l.concurrentReconciles, "max-concurrent-reconciles", defaultConcurrentReconciles,
		"Objects each controller reconciles at once.")
}

// apply sets the limits on the manager's options.
func (l *limits) apply(options *ctrl.Options) error {
	if l.concurrentReconciles < 1 {
		return fmt.Errorf("--max-concurrent-reconciles=%d: must be at least 1", l.concurrentReconciles)
	}
	options.Controller.MaxConcurrentReconciles = l.concurrentReconciles
	return nil
}
