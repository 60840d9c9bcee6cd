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

// publication is the routes compiler's record of what it last published,
// shared in memory with the endpoint controller, which it wakes for every
// endpoint whose published route changed.
type publication struct {
	mu        sync.RWMutex
	published map[types.NamespacedName]publishedRoute
	changes   chan event.TypedGenericEvent[*hookrelayv1alpha1.WebhookEndpoint]
}

func newPublication() *publication {
	return &publication{
		published: map[types.NamespacedName]publishedRoute{},
		changes:   make(chan event.TypedGenericEvent[*hookrelayv1alpha1.WebhookEndpoint], 1024),
	}
}

func (p *publication) isPublished(endpoint types.NamespacedName, route publishedRoute) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	published, ok := p.published[endpoint]
	return ok && published == route
}

// record replaces what is published and wakes the endpoint controller for
// each endpoint that appeared, changed or went away.
func (p *publication) record(ctx context.Context, published map[types.NamespacedName]publishedRoute) error {
	p.mu.Lock()
	var changed []types.NamespacedName
	for endpoint, route := range published {
		if previous, ok := p.published[endpoint]; !ok || previous != route {
			changed = append(changed, endpoint)
		}
	}
	for endpoint := range p.published {
		if _, ok := published[endpoint]; !ok {
			changed = append(changed, endpoint)
		}
	}
	p.published = published
	p.mu.Unlock()

	for _, endpoint := range changed {
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
