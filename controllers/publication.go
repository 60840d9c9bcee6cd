package controllers

import (
	"context"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

// publishedRoute is what the endpoint controller needs to know about a
// published route to call the endpoint Ready: which spec and which keys.
type publishedRoute struct {
	generation  int64
	keysVersion string
}

// rejectedRoute is an endpoint the routes compiler left out because its
// route did not fit a shard: which spec, and why.
type rejectedRoute struct {
	generation int64
	message    string
}

// publication is the routes compiler's record of what it last published and
// left out, shared in memory with the endpoint controller, which it wakes for
// every endpoint whose published route or rejection changed.
type publication struct {
	mu        sync.RWMutex
	published map[types.NamespacedName]publishedRoute
	rejected  map[types.NamespacedName]rejectedRoute
	// recorded: the routes compiler has recorded a compile since the start.
	recorded bool
	changes  chan event.TypedGenericEvent[*hookrelayv1alpha1.WebhookEndpoint]
}

func newPublication() *publication {
	return &publication{
		published: map[types.NamespacedName]publishedRoute{},
		rejected:  map[types.NamespacedName]rejectedRoute{},
		changes:   make(chan event.TypedGenericEvent[*hookrelayv1alpha1.WebhookEndpoint], 1024),
	}
}

// tooLarge returns why the last compile left out generation of endpoint, if it did.
func (p *publication) tooLarge(endpoint types.NamespacedName, generation int64) (string, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	rejected, ok := p.rejected[endpoint]
	return rejected.message, ok && rejected.generation == generation
}

// known says whether what is published is known: not before the first
// compile since the start, which wakes every endpoint it publishes.
func (p *publication) known() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.recorded
}

func (p *publication) isPublished(endpoint types.NamespacedName, route publishedRoute) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	published, ok := p.published[endpoint]
	return ok && published == route
}

// record replaces what is published and left out, and wakes the endpoint
// controller for each endpoint whose entry appeared, changed or went away.
func (p *publication) record(ctx context.Context, published map[types.NamespacedName]publishedRoute, rejected map[types.NamespacedName]rejectedRoute) error {
	p.mu.Lock()
	changed := changedKeys(p.published, published)
	for endpoint := range changedKeys(p.rejected, rejected) {
		changed[endpoint] = struct{}{}
	}
	p.published, p.rejected, p.recorded = published, rejected, true
	p.mu.Unlock()

	for endpoint := range changed {
		wake := event.TypedGenericEvent[*hookrelayv1alpha1.WebhookEndpoint]{Object: &hookrelayv1alpha1.WebhookEndpoint{
			ObjectMeta: metav1.ObjectMeta{Namespace: endpoint.Namespace, Name: endpoint.Name},
		}}
		select {
		case p.changes <- wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// changedKeys lists the keys whose values differ between two maps, or that
// only one of them has.
func changedKeys[V comparable](before, after map[types.NamespacedName]V) map[types.NamespacedName]struct{} {
	changed := map[types.NamespacedName]struct{}{}
	for key, value := range after {
		if previous, ok := before[key]; !ok || previous != value {
			changed[key] = struct{}{}
		}
	}
	for key := range before {
		if _, ok := after[key]; !ok {
			changed[key] = struct{}{}
		}
	}
	return changed
}
