package delivery

import (
	"context"
	"errors"
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

// countInterruptions stores what the journal says of the previous process
// about a page of active deliveries: an interruption more on each delivery
// it was attempting, and poisoned deliveries failed (counting toward their
// endpoint's consecutive failures like any failed delivery). The journal
// then forgets the page's deliveries, and the deliveries still active are
// returned.
func (e *Engine) countInterruptions(ctx context.Context, active []store.Delivery) ([]store.Delivery, error) {
	if e.Journal == nil {
		return active, nil
	}
	ids := make([]string, len(active))
	for i, delivery := range active {
		ids[i] = delivery.ID
	}
	started := e.Journal.PreviousOf(ids)
	if len(started) == 0 {
		return active, nil
	}
	now := e.Clock.Now().UTC()
	kept, interrupted, poisoned := interruptions(active, started, e.PoisonAfter, now)
	if len(interrupted) > 0 {
		if err := e.Store.UpdateDeliveries(ctx, interrupted); err != nil {
			return nil, err
		}
		e.Log.Info("deliveries were in flight when the dispatcher stopped; attempting them again", "count", len(interrupted), "poisonAfter", e.PoisonAfter)
	}
	// The journal forgets each delivery once what it says of it is stored:
	// the page's others now, the poisoned ones once their records are
	// written (so that a stop in between counts none of them twice).
	poisonedIDs := map[string]bool{}
	for _, record := range poisoned {
		poisonedIDs[record.Delivery.ID] = true
	}
	var accounted []string
	for id := range started {
		if !poisonedIDs[id] {
			accounted = append(accounted, id)
		}
	}
	if err := e.Journal.Accounted(accounted); err != nil {
		return nil, err
	}
	var partitions []int
	accounted = accounted[:0]
	for _, record := range poisoned {
		partition, err := e.poison(record, now)
		if err != nil {
			return nil, err
		}
		partitions = append(partitions, partition)
		accounted = append(accounted, record.Delivery.ID)
	}
	// A record that fails to store leaves its delivery pending there, as
	// an attempt's does; a crash in its next attempt counts again, from
	// the stored count.
	e.waitWritten(partitions)
	return kept, e.Journal.Accounted(accounted)
}

// poison fails a delivery without another attempt, as its endpoint's
// attempts are recorded: the health change, its record and its report in
// one piece, so that the record is written after those of the endpoint's
// earlier attempts (a release's, already under way) and before later ones.
// It returns the delivery's partition, or an error once the engine is
// stopping, when no record is written any more (the delivery stays
// pending in the store, and the journal keeps it for the next start).
func (e *Engine) poison(record store.AttemptRecord, now time.Time) (int, error) {
	// Counted for the drain like an attempt, so that the writers stay
	// until its record is handed over.
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return 0, errStopping
	}
	e.inFlight.Add(1)
	e.mu.Unlock()
	defer e.inFlight.Done()
	delivery := record.Delivery
	id := routes.ID(delivery.Namespace, delivery.Endpoint)
	q := e.queueFor(id)
	q.recording.Lock()
	endpoint := e.table.Load().Endpoint(id)
	health, change := e.health.failed(endpoint, id, now, fmt.Sprintf("%s (%d attempts)", record.Attempt.Error, delivery.Attempts), false)
	record.Health = &health
	e.record(record)
	if endpoint != nil {
		e.Status.HealthChanged(endpoint, health, change)
	}
	q.recording.Unlock()
	e.Metrics.Deliveries.WithLabelValues(delivery.Namespace, stateFailed).Inc()
	e.Log.Info("delivery poisoned: failed without another attempt", "delivery", delivery.ID, "endpoint", id, "event", delivery.EventID,
		"interrupted", delivery.Interrupted, "attempts", delivery.Attempts)
	return store.Partition(delivery.Namespace, delivery.Endpoint), nil
}

// errStopping is why a partition take that would write attempt records
// fails once the engine is stopping.
var errStopping = errors.New("the delivery engine is stopping")

// settleJournal drops the previous process's journal entries that no
// longer name an interrupted attempt once a partition take has accounted
// for its own: deliveries gone, finished or attempted since (by another
// replica). Those left are pending in partitions other replicas own now,
// which this one may take later. It only tidies: an error is logged, and
// the entries it could not settle stay for the next take.
func (e *Engine) settleJournal(ctx context.Context) {
	if e.Journal == nil {
		return
	}
	var settled []string
	for id, attempt := range e.Journal.Previous() {
		delivery, err := e.Store.Delivery(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			e.Log.Error(err, "reading a delivery the in-flight journal names; the entry stays for the next partition take", "delivery", id)
			continue
		case delivery.State == store.Pending && delivery.Attempts < attempt && !e.ledger.owns(delivery.Namespace, delivery.Endpoint):
			continue
		}
		settled = append(settled, id)
	}
	if err := e.Journal.Accounted(settled); err != nil {
		e.Log.Error(err, "noting settled entries in the in-flight journal; they stay for the next partition take", "count", len(settled))
	}
}
