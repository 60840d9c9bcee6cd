// Package testreceiver holds webhook receivers for tests, served on
// loopback by httptest, shared by the packages that check delivery order.
package testreceiver

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
)

// Ordered answers each event's first failures[id] attempts with 500 and
// records the events it accepted, in the order it accepted them. Events are
// told apart by their webhook-id header.
type Ordered struct {
	*httptest.Server

	mu        sync.Mutex
	failures  map[string]int
	attempts  map[string]int
	delivered []string

	// gate, when not nil, holds every request until Release closes it.
	gate    chan struct{}
	release sync.Once
}

// NewOrdered starts a receiver that answers every request at once. It
// stops when the test ends.
func NewOrdered(t testing.TB, failures map[string]int) *Ordered {
	return newOrdered(t, failures, nil)
}

// NewHeldOrdered starts a receiver that holds every request until Release,
// so that a test can have all its deliveries waiting before the first
// answer. It stops when the test ends.
func NewHeldOrdered(t testing.TB, failures map[string]int) *Ordered {
	return newOrdered(t, failures, make(chan struct{}))
}

func newOrdered(t testing.TB, failures map[string]int, gate chan struct{}) *Ordered {
	r := &Ordered{failures: failures, attempts: map[string]int{}, gate: gate}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.gate != nil {
			<-r.gate
		}
		id := req.Header.Get("webhook-id")
		r.mu.Lock()
		defer r.mu.Unlock()
		r.attempts[id]++
		if r.attempts[id] <= r.failures[id] {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		r.delivered = append(r.delivered, id)
	}))
	t.Cleanup(func() {
		// Close waits for the requests in flight: a held one must go first.
		r.Release()
		r.Close()
	})
	return r
}

// Release lets the held requests through, and every later one at once.
func (r *Ordered) Release() {
	if r.gate != nil {
		r.release.Do(func() { close(r.gate) })
	}
}

// Delivered returns the ids of the events accepted so far, in order.
func (r *Ordered) Delivered() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.delivered)
}

// Attempts returns how many requests carried the event id.
func (r *Ordered) Attempts(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts[id]
}
