package delivery

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/hookrelay/hookrelay/internal/routes"
)

// ordered is the part of a queue that serves a Strict endpoint: its
// deliveries wait in one line sorted by delivery id, which is acceptance
// order, and one worker attempts only the head. A head waiting for its
// retry stays at the head, so nothing behind it overtakes it; it leaves the
// line when it succeeds, fails for good or is held. Unordered endpoints
// never touch this state.
type ordered struct {
	strict bool
	// line holds the pending deliveries, due or waiting for a retry, by id.
	line       []task
	lineWorker bool
	// blocked is set once a delivery of the endpoint was held: deliveries
	// that arrive after the endpoint is deliverable again wait until the
	// held ones, which are older, are back in line.
	blocked bool
	// wake interrupts the worker's wait: a new head, an unblock.
	wake chan struct{}
}

func newOrdered() ordered {
	return ordered{wake: make(chan struct{}, 1)}
}

// setStrict switches the queue's ordering. Call with q.mu held. Tasks
// waiting in line when it stops being Strict are returned, to be scheduled
// as unordered ones.
func (q *queue) setStrict(strict bool) []task {
	switch {
	case strict && !q.strict:
		q.strict = true
		for _, t := range q.ready.drain() {
			q.insertInLine(t)
		}
		q.startLineWorker()
	case !strict && q.strict:
		moved := q.line
		q.strict, q.line, q.blocked = false, nil, false
		q.signal()
		return moved
	}
	return nil
}

// pushInLine puts a task in line by its delivery id. Call with q.mu held.
func (q *queue) pushInLine(t task) {
	q.insertInLine(t)
	q.signal()
	q.startLineWorker()
}

func (q *queue) insertInLine(t task) {
	i, found := slices.BinarySearchFunc(q.line, t.delivery.ID, func(queued task, id string) int {
		return strings.Compare(queued.delivery.ID, id)
	})
	if found {
		q.line[i] = t // the same delivery again (a retry, a replay): keep one
		return
	}
	q.line = slices.Insert(q.line, i, t)
}

func (q *queue) startLineWorker() {
	if q.lineWorker || len(q.line) == 0 || q.stopped {
		return
	}
	q.lineWorker = true
	q.spawn(q.workInLine)
}

// signal wakes the line worker if it waits. Call with q.mu held.
func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// block stops the line from moving while the endpoint is deliverable, until
// unblock: a delivery of this endpoint was held.
func (q *queue) block() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.strict {
		q.blocked = true
	}
}

// unblock lets the line move again, once the held deliveries are back in it.
func (q *queue) unblock() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.blocked {
		q.blocked = false
		q.signal()
	}
}

// workInLine attempts the head of the line, one at a time, when it is due.
func (q *queue) workInLine() {
	e := q.engine
	for {
		deliverable := e.deliverable(e.table.Load().Endpoint(q.id))
		q.mu.Lock()
		if q.stopped || !q.strict || len(q.line) == 0 {
			q.lineWorker = false
			q.mu.Unlock()
			return
		}
		head := q.line[0]
		// A blocked line of an endpoint that is not deliverable is held,
		// head first, so that its release keeps the order.
		holdHead := q.blocked && !deliverable
		wait := time.Duration(-1) // blocked: until woken
		if !q.blocked {
			due := head.delivery.NextAttemptAt
			if resumes := q.pacer.resumesAt(); resumes.After(due) {
				due = resumes
			}
			wait = due.Sub(e.Clock.Now())
		}
		if !holdHead && (q.blocked || wait > 0) {
			q.mu.Unlock()
			if !e.scheduler.sleep(wait, q.wake, q.stopping) {
				q.mu.Lock()
				q.lineWorker = false
				q.mu.Unlock()
				return // the line stays pending in the store
			}
			continue
		}
		q.line[0] = task{}
		q.line = q.line[1:]
		q.mu.Unlock()
		if holdHead {
			e.hold(context.Background(), head.delivery)
			continue
		}
		if !q.admit() {
			q.mu.Lock()
			q.lineWorker = false
			q.mu.Unlock()
			return // the line stays pending in the store
		}
		if next := e.attempt(q, head); next != nil {
			e.schedule(*next) // back in line, at the head, until it is due
		}
	}
}

// heldBehind is told that a delivery of the endpoint was stored as held. A
// Strict endpoint's line is blocked until the held deliveries are released;
// if the endpoint became deliverable meanwhile (the release already read
// the store), they are released now, so that none is left behind.
func (e *Engine) heldBehind(ctx context.Context, id string) {
	if endpoint := e.blockBehindHeld(id); endpoint != nil {
		e.releaseBehind(ctx, endpoint)
	}
}

// heldBehindLater is heldBehind for a worker, which must not wait for
// e.releasing: a partition's Release holds it while it waits for the
// workers. The release, if any, goes on in the background, counted for the
// engine's drain.
func (e *Engine) heldBehindLater(ctx context.Context, id string) {
	endpoint := e.blockBehindHeld(id)
	if endpoint == nil {
		return
	}
	e.inFlight.Go(func() { e.releaseBehind(ctx, endpoint) })
}

// blockBehindHeld blocks the line of the endpoint if it is Strict, and
// returns it if it is deliverable again, its held deliveries to release.
func (e *Engine) blockBehindHeld(id string) *routes.Route {
	endpoint := e.table.Load().Endpoint(id)
	if endpoint == nil || !endpoint.Strict() {
		return nil
	}
	e.queueFor(id).block()
	if !e.deliverable(endpoint) {
		return nil
	}
	return endpoint
}

// releaseBehind releases the held deliveries of a Strict endpoint that this
// engine owns (see heldBehind).
func (e *Engine) releaseBehind(ctx context.Context, endpoint *routes.Route) {
	id := endpoint.ID
	e.releasing.Lock()
	defer e.releasing.Unlock()
	if !e.ledger.owns(endpoint.Namespace, endpoint.Name) {
		return // its owner releases it, when it takes the partition
	}
	if err := e.release(ctx, []string{id}); err != nil {
		e.Log.Error(err, "releasing held deliveries of a Strict endpoint; they are released when it is next re-enabled or unpaused", "endpoint", id)
	}
}
