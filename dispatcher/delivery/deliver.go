package delivery

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/batch"
	"github.com/hookrelay/hookrelay/internal/routes"
)

// storeRetry is how soon a delivery is tried again when its event could not
// be read from the store.
const storeRetry = 5 * time.Second

// maxRecordBatch bounds the attempts written in one transaction.
const maxRecordBatch = 1024

// writeRecords writes the attempt records of one writer as they come,
// gathering all that are waiting into one transaction.
func (e *Engine) writeRecords(records <-chan store.AttemptRecord) {
	defer e.writers.Done()
	batch.Each(records, maxRecordBatch, func(records []store.AttemptRecord) {
		applied, err := e.Store.RecordAttempts(context.Background(), records)
		if err != nil {
			e.Log.Error(err, "recording attempts; their deliveries stay pending in the store and are attempted again", "count", len(records))
		}
		var ended, moved []string
		for i, record := range records {
			switch {
			case err == nil && !applied[i]:
				moved = append(moved, record.Delivery.ID)
			case record.Delivery.State != store.Pending:
				ended = append(ended, record.Delivery.ID)
			}
		}
		// A delivery whose end could not be stored is still pending there:
		// the ledger lets it go, for the owner's next re-read to find.
		e.ledger.done(e.Clock.Now(), ended, err == nil)
		if len(moved) > 0 {
			// Another replica took the endpoint and attempted the delivery
			// meanwhile: this engine's copy is stale, and the store's owner
			// goes on from what is stored.
			e.Log.Info("attempt records skipped: their deliveries had moved on in the store, as when another replica took their endpoints", "count", len(moved))
			e.scheduler.cancel(moved...)
			e.ledger.done(e.Clock.Now(), moved, false)
		}
		e.writtenMu.Lock()
		for _, record := range records {
			e.stored[store.Partition(record.Delivery.Namespace, record.Delivery.Endpoint)]++
		}
		e.written.Broadcast()
		e.writtenMu.Unlock()
	})
}

// record hands an attempt's record to the writer of its partition, which
// keeps an endpoint's records in order.
func (e *Engine) record(record store.AttemptRecord) {
	partition := store.Partition(record.Delivery.Namespace, record.Delivery.Endpoint)
	e.writtenMu.Lock()
	e.handed[partition]++
	e.writtenMu.Unlock()
	e.records[partition%len(e.records)] <- record
}

// waitWritten waits until the records of the partitions' attempts so far
// are written; records handed over meanwhile do not keep it waiting.
func (e *Engine) waitWritten(partitions []int) {
	e.writtenMu.Lock()
	defer e.writtenMu.Unlock()
	handed := make([]uint64, len(partitions))
	for i, partition := range partitions {
		handed[i] = e.handed[partition]
	}
	for i := 0; i < len(partitions); {
		if e.stored[partitions[i]] < handed[i] {
			e.written.Wait()
			continue
		}
		i++
	}
}

// attempt makes the next attempt of a delivery, from its endpoint's queue
// q, and records what came of it. It returns the delivery's next try, due
// at its NextAttemptAt, for the caller to schedule (its queue keeps a
// Strict endpoint's in line), or nil.
func (e *Engine) attempt(q *queue, t task) *task {
	ctx := e.attempts
	delivery := t.delivery
	id := q.id // the delivery's endpoint, "<namespace>/<name>"
	endpoint := e.table.Load().Endpoint(id)
	if !e.deliverable(endpoint) {
		e.hold(ctx, delivery)
		return nil
	}
	event := t.event
	if event == nil {
		loaded, err := e.Store.Event(ctx, delivery.Namespace, delivery.EventID)
		if err != nil {
			e.Log.Error(err, "loading the event of a delivery; trying again", "delivery", delivery.ID)
			delivery.NextAttemptAt = e.Clock.Now().Add(storeRetry)
			return &task{delivery: delivery}
		}
		event = &loaded
	}

	if e.Journal != nil {
		if err := e.Journal.Start(delivery.ID, delivery.Attempts+1); err != nil {
			e.Log.Error(err, "recording an attempt in flight; a crash during it will not count toward poisoning", "delivery", delivery.ID)
		}
		defer e.Journal.Done(delivery.ID)
	}
	now := e.Clock.Now()
	var out result
	body, err := t.envelope, error(nil)
	if body == nil || endpoint.Transform != nil {
		body, err = Body(endpoint, event)
	}
	if err != nil {
		out = result{err: err}
	} else {
		out = e.Attempt.do(ctx, endpoint, event, body, now)
	}
	if ctx.Err() != nil {
		// Cancelled by the drain: not the receiver's failure. The delivery
		// stays pending in the store and is attempted after the restart.
		return nil
	}
	delivery.Attempts++
	record := store.Attempt{
		DeliveryID: delivery.ID, Number: delivery.Attempts, StartedAt: now.UTC(), DurationMS: float64(out.duration.Microseconds()) / 1000,
		StatusCode: out.status, Response: out.response,
	}
	if out.err != nil {
		record.Error = out.err.Error()
	}
	outcome := classify(endpoint, out.status, out.err)
	e.Metrics.AttemptDuration.Observe(out.duration.Seconds())

	finished := e.Clock.Now()
	e.Metrics.observeAttempt(delivery.Namespace, delivery.Attempts == 1, delivery.CreatedAt, now, finished, out.status, out.err, outcome == OutcomeSuccess)
	delivery.UpdatedAt = finished.UTC()
	var health *store.Health
	var change Change
	healthChanged := func(h store.Health, c Change) { health, change = &h, c }
	// The endpoint's health changes, its record and its report go in one
	// piece per endpoint: the records reach the store, and the reports the
	// status, in the order the changes were made, so that an attempt that
	// ended a moment earlier cannot overwrite a later count (or a Disabled)
	// with its older one.
	q.recording.Lock()
	switch {
	case outcome == OutcomeSuccess:
		delivery.State = store.Succeeded
		healthChanged(e.health.succeeded(id, finished))
	case outcome == OutcomeGone && goneDisables(endpoint):
		delivery.State = store.Failed
		healthChanged(e.health.failed(e.table.Load().Endpoint(id), id, finished, "HTTP 410 Gone: the receiver removed the endpoint", true))
	case shouldRetry(endpoint, delivery.Attempts):
		delivery.State = store.Pending
		// Counted from the attempt's end, so a slow answer does not shorten the wait.
		delay := retryDelay(endpoint, delivery.Attempts, out.status, out.retryAfter, e.MaxRetryAfter, finished, rand.Int64N)
		delivery.NextAttemptAt = finished.Add(delay).UTC()
		if out.status == http.StatusTooManyRequests {
			q.pacer.pause(finished.Add(backOffAfter429(endpoint, out.retryAfter, e.MaxRetryAfter, finished)))
		}
	default:
		delivery.State = store.Failed
		healthChanged(e.health.failed(e.table.Load().Endpoint(id), id, finished, failureReason(out, delivery.Attempts), false))
	}

	// Recorded in the background, many attempts to a transaction. A crash
	// before the write leaves the delivery pending in the store, and it is
	// delivered again: at least once.
	e.record(store.AttemptRecord{Delivery: delivery, Attempt: record, Health: health})
	if health != nil {
		e.Status.HealthChanged(endpoint, *health, change)
	}
	q.recording.Unlock()
	var next *task
	switch delivery.State {
	case store.Succeeded:
		e.Metrics.Deliveries.WithLabelValues(delivery.Namespace, stateSucceeded).Inc()
	case store.Failed:
		e.Metrics.Deliveries.WithLabelValues(delivery.Namespace, stateFailed).Inc()
		e.Log.Info("delivery failed", "delivery", delivery.ID, "endpoint", id, "event", delivery.EventID,
			"attempts", delivery.Attempts, "error", record.Error, "status", record.StatusCode)
	case store.Pending:
		next = &task{delivery: delivery, event: event, envelope: t.envelope}
	}
	return next
}

// failureReason says how a delivery's last attempt failed, and after how many.
func failureReason(out result, attempts int) string {
	if out.err != nil {
		return fmt.Sprintf("%v (%d attempts)", out.err, attempts)
	}
	return fmt.Sprintf("HTTP %d (%d attempts)", out.status, attempts)
}

// hold stores a delivery as held until its endpoint is deliverable again.
// Workers call it (see heldBehindLater).
func (e *Engine) hold(ctx context.Context, delivery store.Delivery) {
	delivery.State, delivery.NextAttemptAt, delivery.UpdatedAt = store.Held, time.Time{}, e.Clock.Now().UTC()
	err := e.Store.UpdateDeliveries(ctx, []store.Delivery{delivery})
	// Held, it leaves the engine until released; if it stays pending in the
	// store, the next re-read finds it.
	e.ledger.done(e.Clock.Now(), []string{delivery.ID}, false)
	if err != nil {
		e.Log.Error(err, "holding a delivery; it stays pending", "delivery", delivery.ID)
		return
	}
	e.Metrics.Deliveries.WithLabelValues(delivery.Namespace, stateHeld).Inc()
	e.countHeld(heldChanges([]store.Delivery{delivery}, 1))
	e.heldBehindLater(ctx, routes.ID(delivery.Namespace, delivery.Endpoint))
}
