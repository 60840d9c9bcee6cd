// Package testreceiver holds webhook receivers that tests of more than one
// package share: real HTTP servers on 127.0.0.1.
package testreceiver

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
)

// Ordered fails each event's first failures[id] attempts (id: the
// webhook-id header) with 503 and records the events it accepted, in the
// order it accepted them.
type Ordered struct {
	*httptest.Server
	mu        sync.Mutex
	failures  map[string]int
	attempts  map[string]int
	delivered []string
	// gate, when set, holds every request until it is closed.
	gate chan struct{}
}

// NewOrdered starts an Ordered receiver, closed when the test ends.
func NewOrdered(t testing.TB, failures map[string]int) *Ordered {
	r := &Ordered{failures: failures, attempts: map[string]int{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *Ordered) serve(w http.ResponseWriter, req *http.Request) {
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	gate := r.gate
	r.mu.Unlock()
	if gate != nil {
		<-gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts[id]++
	if r.attempts[id] <= r.failures[id] {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	r.delivered = append(r.delivered, id)
}

// Hold makes requests wait until release is called, so that a queue can
// build up first.
func (r *Ordered) Hold() (release func()) {
	gate := make(chan struct{})
	r.mu.Lock()
	r.gate = gate
	r.mu.Unlock()
	return func() { close(gate) }
}

// Delivered is the ids of the events accepted so far, in order.
func (r *Ordered) Delivered() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.delivered)
}

// Attempts is how many requests event id has made so far.
func (r *Ordered) Attempts(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts[id]
}
