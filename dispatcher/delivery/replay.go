package delivery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/routing"
	"github.com/hookrelay/hookrelay/dispatcher/store"
)

// ErrNotRetriable is returned for a delivery that cannot be retried now.
var ErrNotRetriable = errors.New("delivery cannot be retried")

// Retry makes one more attempt of a finished delivery, now.
func (e *Engine) Retry(ctx context.Context, namespace, id string) (store.Delivery, error) {
	delivery, err := e.Store.Delivery(ctx, id)
	if err != nil {
		return store.Delivery{}, err
	}
	if delivery.Namespace != namespace {
		return store.Delivery{}, fmt.Errorf("delivery %s: %w", id, store.ErrNotFound)
	}
	switch delivery.State {
	case store.Pending:
		return store.Delivery{}, fmt.Errorf("%w: %s is already waiting for its next attempt", ErrNotRetriable, id)
	case store.Held:
		return store.Delivery{}, fmt.Errorf("%w: %s is held until endpoint %s is re-enabled or unpaused", ErrNotRetriable, id, delivery.Endpoint)
	}
	released, err := e.requeue(ctx, []store.Delivery{delivery})
	if err != nil {
		return store.Delivery{}, err
	}
	return released[0], nil
}

// Replay makes one more attempt, now, of every failed delivery to an
// endpoint created since the given time, oldest first.
func (e *Engine) Replay(ctx context.Context, namespace, endpoint string, since time.Time) (int, error) {
	if e.table.Load().Endpoint(routing.ID(namespace, endpoint)) == nil {
		return 0, fmt.Errorf("endpoint %s/%s: %w", namespace, endpoint, store.ErrNotFound)
	}
	var failed []store.Delivery
	query := store.DeliveryQuery{State: store.Failed, Since: since, Limit: 1000}
	for {
		page, next, err := e.Store.EndpointDeliveries(ctx, namespace, endpoint, query)
		if err != nil {
			return 0, err
		}
		failed = append(failed, page...)
		if next == "" {
			break
		}
		query.After = next
	}
	// Pages come newest first; send the oldest first.
	for i, j := 0, len(failed)-1; i < j; i, j = i+1, j-1 {
		failed[i], failed[j] = failed[j], failed[i]
	}
	if _, err := e.requeue(ctx, failed); err != nil {
		return 0, err
	}
	return len(failed), nil
}

// requeue stores deliveries as pending, due now, and queues them in order.
func (e *Engine) requeue(ctx context.Context, deliveries []store.Delivery) ([]store.Delivery, error) {
	if len(deliveries) == 0 {
		return nil, nil
	}
	now := e.Now().UTC()
	for i := range deliveries {
		if deliveries[i].State == store.Failed {
			deliveries[i].Interrupted = 0 // a retry or replay starts the poison count over
		}
		deliveries[i].State, deliveries[i].NextAttemptAt, deliveries[i].UpdatedAt = store.Pending, now, now
	}
	if err := e.Store.UpdateDeliveries(ctx, deliveries); err != nil {
		return nil, err
	}
	for _, delivery := range deliveries {
		e.enqueue(task{delivery: delivery})
	}
	return deliveries, nil
}
