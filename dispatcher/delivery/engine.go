// Package delivery fans events out to endpoints and delivers them: per-endpoint
// queues with a concurrency cap and a rate limit, signed HTTP attempts, the
// retry schedule, and the health record that auto-disables an endpoint.
package delivery

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/hookrelay/hookrelay/dispatcher/signing"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
)

// DedupeWindow is how long an event id is remembered.
const DedupeWindow = 24 * time.Hour

// StatusSink hears about endpoint health changes (the status reporter).
type StatusSink interface {
	HealthChanged(endpoint *routes.Route, health store.Health, change Change)
	// HeldChanged hears the count of an owned endpoint's held deliveries,
	// in order; a count reported again unchanged is possible.
	HeldChanged(endpoint *routes.Route, held int64)
}

// Change says what happened to an endpoint's health.
type Change string

const (
	ChangeDelivered Change = "Delivered"
	ChangeFailed    Change = "Failed"
	ChangeDisabled  Change = "AutoDisabled"
	ChangeReenabled Change = "Reenabled"
	ChangeObserved  Change = "Observed"
)

// Options configure an Engine.
type Options struct {
	Store   store.Store
	Signer  signing.Signer
	Attempt *Attempter
	Status  StatusSink
	Metrics *Metrics
	Log     logr.Logger
	// MaxRetryAfter caps how long a receiver's Retry-After may delay a retry.
	MaxRetryAfter time.Duration
	// Clock tells the time and runs the retry timers, 429 pauses and rate
	// limits; the real clock when nil.
	Clock clock.WithDelayedExecution
	// Journal records the attempts in flight; nil records none.
	Journal *Journal
	// Waker hands deliveries stored for endpoints of partitions another
	// replica owns to that replica; nil when this engine owns them all.
	Waker Waker
	// RecordWriters is how many transactions write attempt records at once
	// (1 when zero): a store that commits concurrent transactions together
	// (PostgreSQL) takes more, an embedded one (bbolt) gains nothing.
	RecordWriters int
	// PoisonAfter is how many times a delivery may be in flight when the
	// process dies before it is failed as Poisoned; 0 never fails one so.
	PoisonAfter int
}

// Engine wires the routing table, the store and the per-endpoint queues to
// the health tracker (health.go), which decides when an endpoint is
// disabled, and the scheduler (scheduler.go), which runs what falls due on
// the injected clock.
type Engine struct {
	Options
	table atomic.Pointer[routes.Table]

	mu        sync.Mutex
	queues    map[string]*queue
	ledger    *ledger
	health    *tracker
	scheduler *scheduler
	stopped   bool

	// inFlight counts the queues' workers, the releases their holds start
	// (heldBehindLater) and the poisonings of a partition take (poison),
	// for a graceful drain.
	inFlight sync.WaitGroup
	// attempts is the context of every attempt; a drain that runs out of
	// time cancels it.
	attempts       context.Context
	cancelAttempts context.CancelFunc
	// releasing orders the release of held deliveries between Acquire,
	// Release and table swaps.
	releasing sync.Mutex
	// records carries attempt records to the writers (writeRecords), by
	// partition, so that a partition's are written in the order they were
	// handed over. handed and stored count them per partition (stored
	// once written, which written signals): waitWritten waits for those
	// handed over before it, not for later ones.
	records        []chan store.AttemptRecord
	writers        sync.WaitGroup
	writtenMu      sync.Mutex
	written        *sync.Cond
	handed, stored [store.Partitions]uint64
	// releaseChunk is the most deliveries requeue moves in one store write
	// (the constant; tests make it smaller).
	releaseChunk int
	// linger is how long an idle worker waits for a task (workerLinger;
	// tests change it). It is real time, not the Clock's: no retry, pause
	// or rate waits on it.
	linger time.Duration
	// releasers are the unordered endpoints whose held deliveries are
	// being released in the background, one goroutine each, true when
	// asked again meanwhile (one more pass follows); under mu.
	releasers map[string]bool
	// held counts the owned endpoints' held deliveries (held.go).
	held heldCounts
}

// New returns an engine with the stored health loaded. Call SetTable, then
// Recover, before publishing.
func New(ctx context.Context, opts Options) (*Engine, error) {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	e := &Engine{
		Options: opts, queues: map[string]*queue{}, scheduler: newScheduler(opts.Clock), ledger: newLedger(opts.Waker != nil),
		records: make([]chan store.AttemptRecord, max(opts.RecordWriters, 1)), releaseChunk: releaseChunk, linger: workerLinger, releasers: map[string]bool{},
		held: heldCounts{counts: map[string]int64{}},
	}
	e.written = sync.NewCond(&e.writtenMu)

	e.attempts, e.cancelAttempts = context.WithCancel(context.Background())
	e.table.Store(&routes.Table{})
	healths, err := opts.Store.Healths(ctx)
	if err != nil {
		return nil, err
	}
	e.health = newTracker(healths)
	if err := opts.Metrics.registerState(e); err != nil {
		return nil, fmt.Errorf("registering the engine's gauges: %w", err)
	}
	for i := range e.records {
		e.records[i] = make(chan store.AttemptRecord, maxRecordBatch)
		e.writers.Add(1)
		go e.writeRecords(e.records[i])
	}
	return e, nil
}

// Table is the routing table in use.
func (e *Engine) Table() *routes.Table { return e.table.Load() }

// Incoming is an event as a producer publishes it.
type Incoming struct {
	ID        string
	Type      string
	Data      []byte
	Sandbox   bool
	CreatedAt time.Time
}

// Publish fans an event out and stores it with its deliveries; it returns
// once they are on disk, and queues the pending ones. An event that matches
// no endpoint, in a namespace that has none yet too, is stored with no
// deliveries: its id dedupes and the delivery log shows it.
func (e *Engine) Publish(ctx context.Context, namespace string, in Incoming) (store.Accepted, error) {
	table := e.table.Load()
	var eventMap map[string]any
	matched := table.Match(namespace, in.Type, in.Sandbox, func() map[string]any {
		if eventMap == nil {
			// Data is valid JSON (ingest checked it); a filter on an event
			// that cannot be read does not match.
			eventMap, _ = EventMap(in.ID, in.Type, in.CreatedAt, in.Data, in.Sandbox)
		}
		return eventMap
	})
	targets := make([]store.Target, len(matched))
	for i, endpoint := range matched {
		targets[i] = store.Target{Endpoint: endpoint.Name, Held: !e.deliverable(endpoint)}
	}
	now := e.Clock.Now().UTC()
	event := store.Event{Namespace: namespace, ID: in.ID, Type: in.Type, CreatedAt: in.CreatedAt, Data: in.Data, Sandbox: in.Sandbox, AcceptedAt: now}
	accepted, err := e.Store.Accept(ctx, event, targets, now.Add(-DedupeWindow))
	if err != nil {
		return store.Accepted{}, err
	}
	if accepted.Duplicate {
		e.Metrics.Events.WithLabelValues(namespace, "duplicate").Inc()
		return accepted, nil
	}
	e.Metrics.Events.WithLabelValues(namespace, "accepted").Inc()
	var theirs []store.Delivery
	// The default body, built once for all the event's deliveries.
	var body []byte
	var held map[string]int64 // made for the first held delivery
	defer func() { e.countHeld(held) }()
	for _, delivery := range accepted.Deliveries {
		if delivery.State == store.Held {
			if held == nil {
				held = map[string]int64{}
			}
			held[routes.ID(namespace, delivery.Endpoint)]++
			e.Metrics.Deliveries.WithLabelValues(namespace, stateHeld).Inc()
			e.heldBehind(ctx, routes.ID(namespace, delivery.Endpoint))
			continue
		}
		if e.ledger.track(delivery) {
			if body == nil {
				body = envelope(&accepted.Event)
			}
			e.enqueue(task{delivery: delivery, event: &accepted.Event, envelope: body})
		} else {
			theirs = append(theirs, delivery)
		}
	}
	e.wake(ctx, theirs)
	return accepted, nil
}

// wake hands pending deliveries of endpoints another replica owns to it.
// The event is stored either way: a wake-up that fails is found by the
// owner's next re-read.
func (e *Engine) wake(ctx context.Context, deliveries []store.Delivery) {
	if len(deliveries) == 0 || e.Waker == nil {
		return
	}
	if err := e.Waker.Wake(ctx, deliveries); err != nil {
		e.Log.Error(err, "waking the owner of stored deliveries; its next re-read of the store finds them", "count", len(deliveries))
	}
}

// deliverable reports whether an endpoint takes attempts now.
func (e *Engine) deliverable(endpoint *routes.Route) bool {
	if endpoint == nil || endpoint.Paused {
		return false
	}
	return !e.health.disabled(endpoint.ID)
}

// SetTable swaps the routing table, re-enables endpoints whose re-enable
// token changed, and releases held deliveries of endpoints that became
// deliverable.
func (e *Engine) SetTable(ctx context.Context, table *routes.Table) error {
	previous := e.table.Swap(table)
	if e.Attempt != nil {
		e.Attempt.forget(func(id string) bool { return table.Endpoint(id) != nil })
	}
	var release []string
	for _, endpoint := range table.Endpoints() {
		if !e.ledger.owns(endpoint.Namespace, endpoint.Name) {
			continue // its owner acts on it
		}
		before := previous.Endpoint(endpoint.ID)
		wasDeliverable := e.deliverable(before)
		q := e.queueFor(endpoint.ID)
		// First sight, or a new spec: its Disabled and Delivering
		// conditions are published from the record as adopt and reenable
		// left it, so that their observedGeneration follows the spec
		// without waiting for a delivery.
		if err := e.takeHealth(ctx, q, endpoint, before == nil || before.Generation != endpoint.Generation); err != nil {
			return err
		}
		if !wasDeliverable && e.deliverable(endpoint) {
			release = append(release, endpoint.ID)
		}
		for _, t := range q.configure(endpoint) {
			e.schedule(t)
		}
	}
	if len(release) == 0 {
		return nil
	}
	// A swap during Acquire waits for it, which releases what is held of
	// the partitions it takes.
	e.releasing.Lock()
	defer e.releasing.Unlock()
	return e.release(ctx, release)
}

// takeHealth applies the endpoint's UID and re-enable token to its health
// record (adopt, reenable) and, if observe, reports the record. It does so
// in one piece with the endpoint's attempts (its queue q's recording), and
// stores a changed record once the records of the attempts before it are
// written: an older health on its way to the store with an attempt record
// (a Disabled, say) cannot overwrite the new one there, or be reported
// after it.
func (e *Engine) takeHealth(ctx context.Context, q *queue, endpoint *routes.Route, observe bool) error {
	q.recording.Lock()
	defer q.recording.Unlock()
	if err := e.adopt(ctx, endpoint); err != nil {
		return err
	}
	if endpoint.ReenableToken != "" {
		if err := e.reenable(ctx, endpoint); err != nil {
			return err
		}
	}
	if observe {
		e.Status.HealthChanged(endpoint, e.health.snapshot(endpoint.ID), ChangeObserved)
	}
	return nil
}

// putHealth stores an endpoint's health record after the records of its
// attempts so far (see takeHealth).
func (e *Engine) putHealth(ctx context.Context, endpoint *routes.Route, health store.Health) error {
	e.waitWritten([]int{store.Partition(endpoint.Namespace, endpoint.Name)})
	return e.Store.PutHealth(ctx, health)
}

// adopt ties the endpoint's health record to its UID: a record left by a
// deleted endpoint of the same name starts over. Call from takeHealth.
func (e *Engine) adopt(ctx context.Context, endpoint *routes.Route) error {
	snapshot, stale := e.health.adopt(endpoint.ID, endpoint.UID)
	if !stale {
		return nil // stored with the next change of its health
	}
	e.Log.Info("new endpoint of an earlier one's name: its delivery record starts over", "endpoint", endpoint.ID)
	return e.putHealth(ctx, endpoint, snapshot)
}

// reenable acts on a new re-enable token: the failure count starts over and
// the endpoint is enabled. Call from takeHealth.
func (e *Engine) reenable(ctx context.Context, endpoint *routes.Route) error {
	snapshot, changed, change := e.health.reenable(endpoint.ID, endpoint.ReenableToken)
	if !changed {
		return nil
	}
	if err := e.putHealth(ctx, endpoint, snapshot); err != nil {
		return err
	}
	if change == ChangeReenabled {
		e.Log.Info("endpoint re-enabled", "endpoint", endpoint.ID, "token", endpoint.ReenableToken)
		e.Status.HealthChanged(endpoint, snapshot, change)
	}
	return nil
}

// release turns the held deliveries of the given endpoints into pending
// ones and queues them, oldest first, releaseChunk per store write. Those
// of Strict endpoints are back in line when it returns, so that their
// lines move in order. Those of unordered endpoints, which may be a hundred
// thousand behind one endpoint, go in the background (releaseLater): a
// table swap, a partition's hand-over and other endpoints' deliveries do
// not wait for them. Call with e.releasing held.
func (e *Engine) release(ctx context.Context, endpointIDs []string) error {
	table := e.table.Load()
	var strict, unordered []string
	for _, id := range endpointIDs {
		if endpoint := table.Endpoint(id); endpoint != nil && endpoint.Strict() {
			strict = append(strict, id)
		} else {
			unordered = append(unordered, id)
		}
	}
	e.releaseLater(unordered)
	if len(strict) == 0 {
		return nil
	}
	released := 0
	err := e.eachHeld(ctx, strict, func(chunk []store.Delivery) (bool, error) {
		moved, err := e.requeue(ctx, chunk)
		released += moved
		return true, err
	})
	if err != nil {
		return err
	}
	// The held deliveries are in line again, ahead of any that arrived
	// since: Strict lines may move.
	for _, id := range strict {
		e.queueFor(id).unblock()
	}
	if released > 0 {
		e.Log.Info("released held deliveries", "count", released, "endpoints", strict)
	}
	return nil
}

// eachHeld reads the held deliveries of the endpoints from the store, oldest
// first, and calls f with them releaseChunk at a time (the last chunk may
// be shorter), until f says to stop. f must not keep the chunk: only one
// chunk and one page of the store are in memory at once, however many are
// held.
func (e *Engine) eachHeld(ctx context.Context, endpointIDs []string, f func(chunk []store.Delivery) (bool, error)) error {
	wanted := map[string]bool{}
	partitions := make([]int, 0, len(endpointIDs))
	for _, id := range endpointIDs {
		wanted[id] = true
		partitions = append(partitions, partitionOf(id))
	}
	chunk := make([]store.Delivery, 0, e.releaseChunk)
	goOn := true
	err := e.eachActive(ctx, partitions, nil, func(page []store.Delivery) (bool, error) {
		for _, delivery := range page {
			if delivery.State != store.Held || !wanted[routes.ID(delivery.Namespace, delivery.Endpoint)] {
				continue
			}
			chunk = append(chunk, delivery)
			if len(chunk) == e.releaseChunk {
				var err error
				if goOn, err = f(chunk); err != nil || !goOn {
					return false, err
				}
				chunk = chunk[:0]
			}
		}
		return true, nil
	})
	if err != nil || !goOn || len(chunk) == 0 {
		return err
	}
	_, err = f(chunk)
	return err
}

// eachActive reads the pending and held deliveries of the partitions from
// the store a page of releaseChunk at a time, each partition's oldest
// first, and calls f with each page (which it must not keep) until f says
// to stop. With under, each page is read and handled holding it.
func (e *Engine) eachActive(ctx context.Context, partitions []int, under sync.Locker, f func(page []store.Delivery) (bool, error)) error {
	after := ""
	for {
		next, goOn, err := e.activePage(ctx, partitions, after, under, f)
		if err != nil || !goOn || next == "" {
			return err
		}
		after = next
	}
}

// activePage reads and handles one page for eachActive.
func (e *Engine) activePage(ctx context.Context, partitions []int, after string, under sync.Locker, f func(page []store.Delivery) (bool, error)) (
	next string, goOn bool, err error) {
	if under != nil {
		under.Lock()
		defer under.Unlock()
	}
	page, next, err := e.Store.ActivePage(ctx, partitions, after, e.releaseChunk)
	if err != nil || len(page) == 0 {
		return next, true, err
	}
	goOn, err = f(page)
	return next, goOn, err
}

// releaseLater has a background releaser of its own release each
// endpoint's held deliveries (one goroutine per endpoint being released),
// so that a slow endpoint's release holds up no other's. A request for an
// endpoint whose release is under way (a re-read of the store every few
// seconds asks again) is coalesced into one more pass.
func (e *Engine) releaseLater(endpointIDs []string) {
	if len(endpointIDs) == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return // held in the store; the next start releases them
	}
	for _, id := range endpointIDs {
		if _, running := e.releasers[id]; running {
			e.releasers[id] = true
			continue
		}
		e.releasers[id] = false
		e.inFlight.Go(func() { e.releaseInBackground(id) }) // Stop waits for the chunk being written
	}
}

// releaseInBackground releases the endpoint's held deliveries, a pass at a
// time, until no other pass is asked for or the engine stops. It moves a
// chunk only once the endpoint's line has room for it, so that a release
// keeps about two chunks in memory, not every held delivery.
func (e *Engine) releaseInBackground(id string) {
	for {
		released := 0
		err := e.eachHeld(e.attempts, []string{id}, func(chunk []store.Delivery) (bool, error) {
			if !e.queueFor(id).waitRoom(e.releaseChunk) {
				return false, nil // given up or stopping: the rest stays held
			}
			// Read together, in key order: far cheaper than a read by each
			// attempt.
			events, err := e.Store.Events(e.attempts, chunk)
			if err != nil {
				return false, err
			}
			moved, goOn, err := e.releaseChunkNow(id, chunk, events)
			released += moved
			return goOn, err
		})
		if err != nil {
			e.Log.Error(err, "releasing held deliveries; the rest stay held until the endpoint is next re-enabled or unpaused, or the dispatcher restarts",
				"endpoint", id)
		}
		if released > 0 {
			e.Log.Info("released held deliveries", "count", released, "endpoint", id)
		}
		e.mu.Lock()
		again := e.releasers[id] && !e.stopped
		if !again {
			delete(e.releasers, id)
			e.mu.Unlock()
			return
		}
		e.releasers[id] = false
		e.mu.Unlock()
	}
}

// releaseChunkNow requeues a chunk of the endpoint's held deliveries while
// it is still owned and deliverable, and says how many moved and whether
// the release goes on. It holds e.releasing for one store write: a
// partition given up, or the endpoint disabled or paused again, ends the
// release of what is left, which stays held in the store.
func (e *Engine) releaseChunkNow(id string, chunk []store.Delivery, events []store.Event) (moved int, goOn bool, err error) {
	e.releasing.Lock()
	defer e.releasing.Unlock()
	if e.isStopped() || !e.ledger.owns(splitID(id)) || !e.deliverable(e.table.Load().Endpoint(id)) {
		return 0, false, nil
	}
	requeued, err := e.requeueChunk(e.attempts, chunk, events)
	return len(requeued), true, err
}

// Recover takes every partition (an engine that is the only replica):
// it schedules every stored pending delivery again, those that were in
// flight when the dispatcher stopped and those waiting for a retry, and
// releases held deliveries whose endpoint is deliverable now (unpaused or
// re-enabled while the dispatcher was down). Call it after the first
// SetTable.
func (e *Engine) Recover(ctx context.Context) (pending, held int, err error) {
	return e.Acquire(ctx, store.AllPartitions())
}

// schedule queues a task at its delivery's NextAttemptAt.
func (e *Engine) schedule(t task) {
	if endpoint := e.table.Load().Endpoint(routes.ID(t.delivery.Namespace, t.delivery.Endpoint)); endpoint != nil && endpoint.Strict() {
		// In line at once, so that it blocks the later deliveries while it
		// waits; its queue attempts it when it is due.
		if !e.isStopped() {
			e.enqueue(t)
		}
		return
	}
	e.scheduler.at(t.delivery.ID, t.delivery.NextAttemptAt, func() { e.enqueue(t) })
}

// enqueue hands a task to its endpoint's queue, unless the endpoint's
// partition went to another replica meanwhile (which attempts it).
func (e *Engine) enqueue(t task) {
	if !e.ledger.owns(t.delivery.Namespace, t.delivery.Endpoint) {
		return
	}
	e.queueFor(routes.ID(t.delivery.Namespace, t.delivery.Endpoint)).push(t)
}

func (e *Engine) queueFor(id string) *queue {
	e.mu.Lock()
	defer e.mu.Unlock()
	q := e.queues[id]
	if q == nil {
		q = newQueue(e, id)
		if endpoint := e.table.Load().Endpoint(id); endpoint != nil {
			q.configure(endpoint) // a new queue has nothing to hand back
		}
		e.queues[id] = q
	}
	return q
}

// Stop stops starting attempts and waits, until ctx ends, for the ones in
// flight; when ctx ends first, it cancels them and waits for them to end.
// Pending deliveries, and those whose attempt was cancelled, stay stored
// and resume at the next start.
func (e *Engine) Stop(ctx context.Context) error {
	e.mu.Lock()
	e.stopped = true
	queues := make([]*queue, 0, len(e.queues))
	for _, q := range e.queues {
		queues = append(queues, q)
	}
	e.mu.Unlock()
	e.scheduler.stop()
	for _, q := range queues {
		q.stop()
	}
	done := make(chan struct{})
	go func() {
		e.inFlight.Wait()
		for _, records := range e.records {
			close(records)
		}
		e.writers.Wait()
		close(done)
	}()
	select {
	case <-done:
		e.cancelAttempts()
		return nil
	case <-ctx.Done():
		e.cancelAttempts()
		<-done
		return fmt.Errorf("delivery: attempts still in flight at shutdown were cancelled; their deliveries stay pending: %w", ctx.Err())
	}
}

func (e *Engine) isStopped() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stopped
}
