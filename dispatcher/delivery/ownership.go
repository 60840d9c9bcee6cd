package delivery

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
)

// Ownership: endpoints hash to store.Partitions partitions, and an engine
// attempts only the deliveries of the partitions it owns. On bbolt it owns
// them all (Recover); replicas on PostgreSQL take and give them back as the
// lease holder (store.Leases) calls Acquire, Release and Lose. An owned
// endpoint's deliveries, health record, re-enable tokens and status are this
// engine's alone; any engine accepts, retries and replays, and hands what it
// stored for an endpoint it does not own to the owner through the Waker.

// Waker tells the owners of other partitions about pending deliveries this
// engine stored for them.
type Waker interface {
	Wake(ctx context.Context, deliveries []store.Delivery) error
}

// recentlyFinished is how long a finished delivery's id is remembered, so
// that a late wake-up or a re-read that saw it pending does not attempt it
// again (on a shared store only: alone, an engine has neither).
const recentlyFinished = 30 * time.Second

// ledger is what the engine holds of its partitions: which it owns, and the
// deliveries it has scheduled, queued or in flight (by partition), so that
// a wake-up, a re-read or a new owner's claim never queues one twice.
type ledger struct {
	mu    sync.Mutex
	owned [store.Partitions]bool
	// tracked are the deliveries in the engine, by id: what the gauges of
	// pending deliveries are read from, on each scrape.
	tracked map[string]trackedDelivery
	// finished, and previous before it, are ids recently written as no
	// longer pending; they swap every recentlyFinished.
	finished, previous map[string]bool
	swapped            time.Time
	// remember is set on a shared store, where finished ids are kept.
	remember bool
}

// trackedDelivery is what the ledger keeps of a delivery in the engine.
type trackedDelivery struct {
	partition int
	// endpoint is "<namespace>/<name>".
	endpoint  string
	createdAt time.Time
}

func newLedger(shared bool) *ledger {
	return &ledger{tracked: map[string]trackedDelivery{}, finished: map[string]bool{}, previous: map[string]bool{}, remember: shared}
}

// owns reports whether the engine owns the endpoint's partition.
func (l *ledger) owns(namespace, endpoint string) bool {
	partition := store.Partition(namespace, endpoint)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.owned[partition]
}

// track takes a delivery into the engine, unless it is there already, was
// finished lately, or is not owned; it reports whether it took it.
func (l *ledger) track(delivery store.Delivery) bool {
	partition := store.Partition(delivery.Namespace, delivery.Endpoint)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.tracked[delivery.ID]; ok || !l.owned[partition] || l.finished[delivery.ID] || l.previous[delivery.ID] {
		return false
	}
	l.tracked[delivery.ID] = trackedDelivery{partition: partition, endpoint: routes.ID(delivery.Namespace, delivery.Endpoint), createdAt: delivery.CreatedAt}
	return true
}

// eachPending calls f with the endpoint ("<namespace>/<name>") and creation
// time of each delivery in the engine, under the ledger's lock.
func (l *ledger) eachPending(f func(endpoint string, createdAt time.Time)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, tracked := range l.tracked {
		f(tracked.endpoint, tracked.createdAt)
	}
}

// done lets deliveries go once their new state is stored; finished ones are
// remembered for a while.
func (l *ledger) done(now time.Time, ids []string, finished bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swapped) > recentlyFinished {
		l.previous, l.finished, l.swapped = l.finished, map[string]bool{}, now
	}
	for _, id := range ids {
		delete(l.tracked, id)
		if finished && l.remember {
			l.finished[id] = true
		}
	}
}

// setOwned marks partitions owned or not, and returns the deliveries the
// engine held of those it gives up, which it forgets.
func (l *ledger) setOwned(partitions []int, owned bool) (dropped []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, partition := range partitions {
		l.owned[partition] = owned
	}
	if owned {
		return nil
	}
	for id, tracked := range l.tracked {
		if !l.owned[tracked.partition] {
			dropped = append(dropped, id)
			delete(l.tracked, id)
		}
	}
	return dropped
}

// inEngine counts the deliveries the engine holds.
func (l *ledger) inEngine() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.tracked)
}

// ownedPartitions lists the partitions owned now.
func (l *ledger) ownedPartitions() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int
	for partition, owned := range l.owned {
		if owned {
			out = append(out, partition)
		}
	}
	return out
}

// Acquire starts delivering the partitions: it loads their endpoints'
// health records from the store, acts on their re-enable tokens, and
// schedules their stored pending deliveries (releasing the held ones of
// endpoints deliverable now). It returns how many deliveries it queued and
// how many stay held.
func (e *Engine) Acquire(ctx context.Context, partitions []int) (pending, held int, err error) {
	e.releasing.Lock()
	defer e.releasing.Unlock()
	healths, err := e.Store.Healths(ctx)
	if err != nil {
		return 0, 0, err
	}
	in := map[int]bool{}
	for _, partition := range partitions {
		in[partition] = true
	}
	e.health.load(func(id string) bool {
		return in[partitionOf(id)]
	}, healths)
	e.ledger.setOwned(partitions, true)
	e.countOwned()
	for _, endpoint := range e.table.Load().Endpoints() {
		if in[store.Partition(endpoint.Namespace, endpoint.Name)] {
			if err := e.take(ctx, endpoint); err != nil {
				return 0, 0, err
			}
		}
	}
	// Read a page at a time: the held deliveries are only counted, and
	// there may be a million of them.
	e.forgetHeld(partitions)
	released := map[string]bool{}
	err = e.eachActive(ctx, partitions, nil, func(active []store.Delivery) (bool, error) {
		active, err := e.countInterruptions(ctx, active)
		if err != nil {
			return false, err
		}
		queued, releasable, stay, strictHeld := e.claim(active)
		pending, held = pending+queued, held+stay
		// Counted before the releasable ones are released, which uncounts them.
		e.addHeld(active)
		for _, id := range strictHeld {
			e.queueFor(id).block()
		}
		for _, delivery := range releasable {
			released[routes.ID(delivery.Namespace, delivery.Endpoint)] = true
		}
		moved, err := e.requeue(ctx, releasable)
		pending += moved
		return true, err
	})
	e.reportHeld(partitions)
	if err != nil {
		return pending, held, err
	}
	e.settleJournal(ctx)
	// A Strict line blocked by a delivery held before (a publish while the
	// endpoint was paused or disabled) moves again now that the held ones
	// are back in line.
	for id := range released {
		e.queueFor(id).unblock()
	}
	return pending, held, nil
}

// take makes an endpoint of a newly owned partition this engine's: its
// queue, its record's UID and re-enable token, and its status conditions.
func (e *Engine) take(ctx context.Context, endpoint *routes.Route) error {
	q := e.queueFor(endpoint.ID)
	if err := e.takeHealth(ctx, q, endpoint, true); err != nil {
		return err
	}
	for _, t := range q.configure(endpoint) {
		e.schedule(t)
	}
	return nil
}

// Release stops delivering the partitions, for another replica to take:
// no attempt starts for them from now, the ones in flight end, and their
// records are written before it returns. The deliveries stay pending in the
// store for the next owner.
func (e *Engine) Release(partitions []int) {
	e.releasing.Lock()
	defer e.releasing.Unlock()
	queues := e.giveUp(partitions)
	for _, q := range queues {
		q.running.Wait()
	}
	e.waitWritten(partitions)
}

// Lose stops delivering every partition at once, without waiting for the
// attempts in flight: the store is out of reach, so their records cannot be
// written, and another replica may take the partitions soon.
func (e *Engine) Lose() {
	e.releasing.Lock()
	defer e.releasing.Unlock()
	e.giveUp(e.ledger.ownedPartitions())
}

// giveUp marks partitions not owned, stops their endpoints' queues and
// timers, and returns the stopped queues.
func (e *Engine) giveUp(partitions []int) []*queue {
	in := map[int]bool{}
	for _, partition := range partitions {
		in[partition] = true
	}
	dropped := e.ledger.setOwned(partitions, false)
	e.countOwned()
	e.forgetHeld(partitions)
	e.scheduler.cancel(dropped...)
	e.mu.Lock()
	var stopped []*queue
	for id, q := range e.queues {
		if in[partitionOf(id)] {
			stopped = append(stopped, q)
			delete(e.queues, id)
		}
	}
	e.mu.Unlock()
	for _, q := range stopped {
		q.stop()
	}
	return stopped
}

// Wake schedules the pending deliveries another replica stored for
// endpoints this engine owns; the rest are not its own and are ignored.
func (e *Engine) Wake(deliveries []store.Delivery) {
	for _, delivery := range deliveries {
		if delivery.State == store.Pending && e.ledger.track(delivery) {
			e.schedule(task{delivery: delivery})
		}
	}
}

// Resync schedules the pending deliveries of the owned partitions that the
// engine does not hold (a wake-up lost with a replica that stopped between
// its commit and its NOTIFY), and releases held ones of endpoints that are
// deliverable.
func (e *Engine) Resync(ctx context.Context) error {
	owned := e.ledger.ownedPartitions()
	if len(owned) == 0 {
		return nil
	}
	// Each page under e.releasing, so that it reads no delivery a release
	// has stored as pending but not yet queued (it would queue it out of
	// order), while a release goes on between two pages. Held ones stored
	// by other replicas are counted here; released ones are uncounted as
	// they are released.
	found := 0
	endpoints := map[string]bool{}
	counts := map[string]int64{}
	err := e.eachActive(ctx, owned, &e.releasing, func(active []store.Delivery) (bool, error) {
		queued, releasable, _, _ := e.claim(active)
		found += queued
		countHeldIn(counts, active)
		// Held by a replica that read the endpoint's health just before a
		// re-enable committed.
		for _, delivery := range releasable {
			endpoints[routes.ID(delivery.Namespace, delivery.Endpoint)] = true
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	e.recountHeld(owned, counts)
	if found > 0 {
		e.Log.Info("found pending deliveries no replica had queued; queued them", "count", found)
	}
	if len(endpoints) == 0 {
		return nil
	}
	e.releasing.Lock()
	defer e.releasing.Unlock()
	return e.release(ctx, slices.Collect(maps.Keys(endpoints)))
}

// claim schedules the stored pending deliveries the engine does not hold
// yet and says how many; of the held ones, it returns those whose endpoint
// is deliverable now, and counts the others, naming the Strict endpoints
// among theirs. The held ones are not copied: they may be many.
func (e *Engine) claim(active []store.Delivery) (queued int, releasable []store.Delivery, held int, strictHeld []string) {
	table := e.table.Load()
	seen := map[string]bool{}
	for _, delivery := range active {
		endpoint := table.Endpoint(routes.ID(delivery.Namespace, delivery.Endpoint))
		switch {
		case delivery.State == store.Pending:
			if e.ledger.track(delivery) {
				queued++
				e.schedule(task{delivery: delivery})
			}
		case e.deliverable(endpoint):
			releasable = append(releasable, delivery)
		default:
			held++
			if endpoint != nil && endpoint.Strict() && !seen[endpoint.ID] {
				seen[endpoint.ID] = true
				strictHeld = append(strictHeld, endpoint.ID)
			}
		}
	}
	return queued, releasable, held, strictHeld
}

// countOwned publishes which partitions the engine owns.
func (e *Engine) countOwned() {
	owned := e.ledger.ownedPartitions()
	e.Metrics.PartitionsOwned.Set(float64(len(owned)))
	for partition := range store.Partitions {
		value := 0.0
		if slices.Contains(owned, partition) {
			value = 1
		}
		e.Metrics.PartitionOwned.WithLabelValues(strconv.Itoa(partition)).Set(value)
	}
}

// partitionOf is the partition of the endpoint "<namespace>/<name>"
// (routes.ID).
func partitionOf(id string) int {
	namespace, name, _ := strings.Cut(id, "/")
	return store.Partition(namespace, name)
}
