package delivery

import (
	"sync"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
)

// tracker keeps each endpoint's health record and decides what a finished
// delivery, a new endpoint UID or a re-enable token does to it: when the
// endpoint is disabled and when it is enabled again. It does no I/O; the
// records it returns are copies for the caller to store and report. Its
// lock only guards the records against the queues' concurrent workers.
type tracker struct {
	mu      sync.Mutex
	records map[string]*store.Health
}

// newTracker starts from the stored health records.
func newTracker(healths []store.Health) *tracker {
	t := &tracker{records: make(map[string]*store.Health, len(healths))}
	for i := range healths {
		t.records[healths[i].Endpoint] = &healths[i]
	}
	return t
}

// disabled reports whether the endpoint is disabled.
func (t *tracker) disabled(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	health := t.records[id]
	return health != nil && health.Disabled
}

// snapshot is a copy of the endpoint's record (an empty one if it has none).
func (t *tracker) snapshot(id string) store.Health {
	return t.update(id, nil)
}

// adopt ties the endpoint's record to its UID. A record left by a deleted
// endpoint of the same name starts over: stale says so, and that the
// returned record is to be stored.
func (t *tracker) adopt(id, uid string) (health store.Health, stale bool) {
	health = t.update(id, func(health *store.Health) {
		if health.UID == uid {
			return
		}
		stale = health.UID != ""
		if stale {
			*health = store.Health{Endpoint: id}
		}
		health.UID = uid
	})
	return health, stale
}

// reenable acts on the endpoint's re-enable token: a token not seen before
// starts the failure count over and enables the endpoint. changed says the
// returned record is to be stored; the change is ChangeReenabled when the
// endpoint was disabled, and empty otherwise.
func (t *tracker) reenable(id, token string) (health store.Health, changed bool, change Change) {
	health = t.update(id, func(health *store.Health) {
		if health.ReenableToken == token {
			return
		}
		changed = true
		if health.Disabled {
			change = ChangeReenabled
		}
		health.ReenableToken = token
		health.ConsecutiveFailures, health.Disabled, health.DisabledAt = 0, false, nil
	})
	return health, changed, change
}

// succeeded records a delivery that succeeded at the given time: the
// failure count starts over.
func (t *tracker) succeeded(id string, at time.Time) (store.Health, Change) {
	at = at.UTC()
	return t.update(id, func(health *store.Health) {
		health.ConsecutiveFailures = 0
		health.LastSuccess = &at
	}), ChangeDelivered
}

// failed records a delivery that failed for good at the given time, for the
// given reason; gone says its last attempt was a 410 Gone. The endpoint (nil
// when it is no longer routed, which never disables) is disabled once its
// policy says so.
func (t *tracker) failed(endpoint *routes.Route, id string, at time.Time, reason string, gone bool) (store.Health, Change) {
	at = at.UTC()
	change := ChangeFailed
	health := t.update(id, func(health *store.Health) {
		health.ConsecutiveFailures++
		health.LastFailure, health.LastFailureReason = &at, reason
		if !health.Disabled && shouldDisable(endpoint, health.ConsecutiveFailures, gone) {
			health.Disabled, health.DisabledAt = true, &at
			change = ChangeDisabled
		}
	})
	return health, change
}

// update runs change, if not nil, on the endpoint's record (created if there
// is none) and returns a copy of the record as change left it.
func (t *tracker) update(id string, change func(health *store.Health)) store.Health {
	t.mu.Lock()
	defer t.mu.Unlock()
	health := t.records[id]
	if health == nil {
		health = &store.Health{Endpoint: id}
		t.records[id] = health
	}
	if change != nil {
		change(health)
	}
	return *health
}

// load replaces the records of the endpoints for which mine is true with
// the stored ones: a replica taking a partition starts from what its
// previous owner stored, not from what it knew when it last owned it.
func (t *tracker) load(mine func(id string) bool, healths []store.Health) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id := range t.records {
		if mine(id) {
			delete(t.records, id)
		}
	}
	for i := range healths {
		if mine(healths[i].Endpoint) {
			t.records[healths[i].Endpoint] = &healths[i]
		}
	}
}
