package delivery

import (
	"context"
	"fmt"
	"time"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
)

// interruptions finds, among the active deliveries, the pending ones whose
// attempt was in flight when the previous process died (started, per the
// journal, but not recorded) and counts one interruption on each. Those
// interrupted poisonAfter times (0: never) are failed instead, with an
// attempt record that says why; the rest are returned in order.
func interruptions(active []store.Delivery, started map[string]int, poisonAfter int, now time.Time) (kept, interrupted []store.Delivery, poisoned []store.AttemptRecord) {
	if len(started) == 0 {
		return active, nil, nil // no copy of what may be a million deliveries
	}
	for _, delivery := range active {
		attempt, ok := started[delivery.ID]
		if !ok || delivery.State != store.Pending || attempt <= delivery.Attempts {
			kept = append(kept, delivery)
			continue
		}
		delivery.Interrupted++
		if poisonAfter <= 0 || delivery.Interrupted < poisonAfter {
			interrupted = append(interrupted, delivery)
			kept = append(kept, delivery)
			continue
		}
		reason := fmt.Sprintf("%s: the dispatcher stopped while an attempt of this delivery was in flight, %d times (last: attempt %d); "+
			"it is not attempted again, so that it cannot stop the dispatcher again; replay it once the cause is fixed",
			hookrelayv1alpha1.ReasonPoisoned, delivery.Interrupted, attempt)
		// The store's next attempt, which is all RecordAttempts applies: the
		// journal's is ahead of it when an earlier record failed to store.
		delivery.Attempts, delivery.State, delivery.NextAttemptAt, delivery.UpdatedAt = delivery.Attempts+1, store.Failed, time.Time{}, now
		poisoned = append(poisoned, store.AttemptRecord{
			Delivery: delivery,
			Attempt:  store.Attempt{DeliveryID: delivery.ID, Number: delivery.Attempts, StartedAt: now, Error: reason},
		})
	}
	return kept, interrupted, poisoned
}

// countInterruptions stores what the journal says of the previous process:
// an interruption more on each delivery it was attempting, and poisoned
// deliveries failed (counting toward their endpoint's consecutive failures
// like any failed delivery). Then it empties the journal and returns the
// deliveries still active.
func (e *Engine) countInterruptions(ctx context.Context, active []store.Delivery) ([]store.Delivery, error) {
	if e.Journal == nil {
		return active, nil
	}
	now := e.Clock.Now().UTC()
	kept, interrupted, poisoned := interruptions(active, e.Journal.Previous(), e.PoisonAfter, now)
	if len(interrupted) > 0 {
		if err := e.Store.UpdateDeliveries(ctx, interrupted); err != nil {
			return nil, err
		}
		e.Log.Info("deliveries were in flight when the dispatcher stopped; attempting them again", "count", len(interrupted), "poisonAfter", e.PoisonAfter)
	}
	type change struct {
		record   int
		endpoint *routes.Route
		health   store.Health
		change   Change
	}
	var changes []change
	for i := range poisoned {
		record := &poisoned[i]
		delivery := record.Delivery
		id := routes.ID(delivery.Namespace, delivery.Endpoint)
		endpoint := e.table.Load().Endpoint(id)
		health, healthChange := e.health.failed(endpoint, id, now, fmt.Sprintf("%s (%d attempts)", record.Attempt.Error, delivery.Attempts), false)
		record.Health = &health
		if endpoint != nil {
			changes = append(changes, change{i, endpoint, health, healthChange})
		}
		e.Log.Info("delivery poisoned: failed without another attempt", "delivery", delivery.ID, "endpoint", id, "event", delivery.EventID,
			"interrupted", delivery.Interrupted, "attempts", delivery.Attempts)
	}
	if len(poisoned) > 0 {
		applied, err := e.Store.RecordAttempts(ctx, poisoned)
		if err != nil {
			return nil, err
		}
		if skipped := len(poisoned) - countTrue(applied); skipped > 0 {
			e.Log.Info("poisoned deliveries not failed: they had moved on in the store", "count", skipped)
		}
		for i, record := range poisoned {
			if applied[i] {
				e.Metrics.Deliveries.WithLabelValues(record.Delivery.Namespace, stateFailed).Inc()
			}
		}
		for _, c := range changes {
			if applied[c.record] {
				e.Status.HealthChanged(c.endpoint, c.health, c.change)
			}
		}
	}
	if err := e.Journal.Reset(); err != nil {
		return nil, err
	}
	return kept, nil
}

// countTrue counts the records a store applied.
func countTrue(applied []bool) int {
	n := 0
	for _, ok := range applied {
		if ok {
			n++
		}
	}
	return n
}
