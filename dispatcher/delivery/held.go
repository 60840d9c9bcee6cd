package delivery

import (
	"strings"
	"sync"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
)

// heldCounts counts the held deliveries of the owned endpoints, by endpoint
// id, for their status: the store can count them only by reading them all,
// which it does when a partition is taken and on each re-read of a shared
// store.
type heldCounts struct {
	// mu is held while a count is reported too, so that reports of one
	// endpoint reach the status sink in the order of the counts.
	mu     sync.Mutex
	counts map[string]int64
}

// countHeld adds to the held counts of the endpoints ("<namespace>/<name>")
// that this engine owns, and reports the new counts. Those of other
// replicas' endpoints are left to their owners, which count them on their
// next re-read.
func (e *Engine) countHeld(changes map[string]int64) {
	if len(changes) == 0 {
		return
	}
	e.held.mu.Lock()
	defer e.held.mu.Unlock()
	table := e.table.Load()
	for id, change := range changes {
		if change == 0 || !e.ledger.owns(splitID(id)) {
			continue
		}
		e.held.counts[id] = max(e.held.counts[id]+change, 0)
		if endpoint := table.Endpoint(id); endpoint != nil {
			e.Status.HeldChanged(endpoint, e.held.counts[id])
		}
	}
}

// recountHeld sets the held counts of the partitions' endpoints to counts
// (countHeldIn of their active deliveries), and reports the count of every
// endpoint of the partitions in the table (a count left by an earlier
// ownership may differ).
func (e *Engine) recountHeld(partitions []int, counts map[string]int64) {
	e.held.mu.Lock()
	e.held.drop(partitionSet(partitions))
	for id, count := range counts {
		e.held.counts[id] += count
	}
	e.held.mu.Unlock()
	e.reportHeld(partitions)
}

// addHeld counts the held ones among active deliveries of partitions whose
// counts are being taken again (after forgetHeld, before reportHeld).
func (e *Engine) addHeld(active []store.Delivery) {
	e.held.mu.Lock()
	defer e.held.mu.Unlock()
	countHeldIn(e.held.counts, active)
}

// countHeldIn adds the held deliveries among active to counts, by endpoint.
func countHeldIn(counts map[string]int64, active []store.Delivery) {
	for _, delivery := range active {
		if delivery.State == store.Held {
			counts[routes.ID(delivery.Namespace, delivery.Endpoint)]++
		}
	}
}

// reportHeld reports the count of every endpoint of the partitions in the
// table.
func (e *Engine) reportHeld(partitions []int) {
	in := partitionSet(partitions)
	e.held.mu.Lock()
	defer e.held.mu.Unlock()
	for _, endpoint := range e.table.Load().Endpoints() {
		if in[partitionOf(endpoint.ID)] && e.ledger.owns(endpoint.Namespace, endpoint.Name) {
			e.Status.HeldChanged(endpoint, e.held.counts[endpoint.ID])
		}
	}
}

// forgetHeld drops the counts of partitions given up: their new owner
// counts and reports them.
func (e *Engine) forgetHeld(partitions []int) {
	e.held.mu.Lock()
	defer e.held.mu.Unlock()
	e.held.drop(partitionSet(partitions))
}

// drop forgets the counts of the endpoints of the partitions; call with mu
// held.
func (h *heldCounts) drop(partitions map[int]bool) {
	for id := range h.counts {
		if partitions[partitionOf(id)] {
			delete(h.counts, id)
		}
	}
}

func partitionSet(partitions []int) map[int]bool {
	in := make(map[int]bool, len(partitions))
	for _, partition := range partitions {
		in[partition] = true
	}
	return in
}

// splitID is the namespace and name of the endpoint "<namespace>/<name>".
func splitID(id string) (namespace, name string) {
	namespace, name, _ = strings.Cut(id, "/")
	return namespace, name
}

// Held is the count of held deliveries of an owned endpoint
// ("<namespace>/<name>"), as last counted.
func (e *Engine) Held(id string) int64 {
	e.held.mu.Lock()
	defer e.held.mu.Unlock()
	return e.held.counts[id]
}

// heldChanges counts deliveries by endpoint, each as change.
func heldChanges(deliveries []store.Delivery, change int64) map[string]int64 {
	changes := map[string]int64{}
	for _, delivery := range deliveries {
		changes[routes.ID(delivery.Namespace, delivery.Endpoint)] += change
	}
	return changes
}
