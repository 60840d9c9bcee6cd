package delivery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
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
	requeued, err := e.requeueChunk(ctx, []store.Delivery{delivery}, nil)
	if err != nil {
		return store.Delivery{}, err
	}
	if len(requeued) == 0 {
		return store.Delivery{}, fmt.Errorf("%w: %s was retried or attempted by another request meanwhile", ErrNotRetriable, id)
	}
	return requeued[0], nil
}

// Replay makes one more attempt, now, of every failed delivery to an
// endpoint created since the given time, oldest first.
func (e *Engine) Replay(ctx context.Context, namespace, endpoint string, since time.Time) (int, error) {
	if e.table.Load().Endpoint(routes.ID(namespace, endpoint)) == nil {
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
	return e.requeue(ctx, failed)
}

// releaseChunk is the most deliveries requeue moves in one store write. A
// release of many held deliveries goes chunk by chunk, oldest first: the
// first chunk's attempts start while the next is written, and other
// endpoints' events and attempts are stored between two chunks rather than
// after one long transaction.
const releaseChunk = 1000

// requeue stores deliveries as pending, due now, and queues them in order,
// releaseChunk at a time. Each moves only if the store still holds it as it
// was read: of two requests acting on the same reading, one wins, so a
// delivery is never queued twice and its attempt numbers never collide. It
// returns how many moved; on an error, those of the chunks written before
// stay queued.
func (e *Engine) requeue(ctx context.Context, deliveries []store.Delivery) (int, error) {
	moved := 0
	for chunk := range slices.Chunk(deliveries, e.releaseChunk) {
		requeued, err := e.requeueChunk(ctx, chunk, nil)
		moved += len(requeued)
		if err != nil {
			return moved, err
		}
	}
	return moved, nil
}

// requeueChunk moves deliveries back in line in one store write and returns
// those that moved, as stored. events, when not nil, are the deliveries'
// events (events[i] is deliveries[i]'s, zero if not read), which their
// attempts then need not read one by one.
func (e *Engine) requeueChunk(ctx context.Context, deliveries []store.Delivery, events []store.Event) ([]store.Delivery, error) {
	now := e.Clock.Now().UTC()
	changes := make([]store.DeliveryChange, len(deliveries))
	for i, delivery := range deliveries {
		changes[i] = store.DeliveryChange{State: delivery.State, Attempts: delivery.Attempts, To: delivery}
		if delivery.State == store.Failed {
			changes[i].To.Interrupted = 0 // a retry or replay starts the poison count over
		}
		changes[i].To.State, changes[i].To.NextAttemptAt, changes[i].To.UpdatedAt = store.Pending, now, now
	}
	applied, err := e.Store.ChangeDeliveries(ctx, changes)
	if err != nil {
		return nil, err
	}
	var requeued, theirs, released []store.Delivery
	for i, change := range changes {
		if !applied[i] {
			continue
		}
		requeued = append(requeued, change.To)
		if change.State == store.Held {
			released = append(released, change.To)
		}
		if e.ledger.track(change.To) {
			t := task{delivery: change.To}
			if events != nil && events[i].ID != "" {
				t.event = &events[i]
			}
			e.enqueue(t)
		} else {
			theirs = append(theirs, change.To)
		}
	}
	e.countHeld(heldChanges(released, -1))
	e.wake(ctx, theirs)
	return requeued, nil
}
