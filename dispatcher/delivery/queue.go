package delivery

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
)

// task is a delivery ready for its next attempt; event is nil until loaded.
type task struct {
	delivery store.Delivery
	event    *store.Event
}

// queue is one endpoint's line of ready deliveries. Workers start on demand,
// at most maxInFlight at once, so an idle endpoint costs no goroutine and a
// slow one holds only its own workers.
type queue struct {
	engine *Engine
	id     string

	mu          sync.Mutex
	ready       []task
	workers     int
	maxInFlight int
	limiter     *rate.Limiter
	// pausedUntil holds the endpoint's attempts after a 429 Too Many Requests.
	pausedUntil time.Time
	stopped     bool
	stopping    chan struct{}
	// stopCtx ends when stopping closes: a wait for the rate limit ends
	// with it.
	stopCtx    context.Context
	cancelStop context.CancelFunc

	// ordered is set for a Strict endpoint: see ordered.go.
	ordered
}

func newQueue(engine *Engine, id string) *queue {
	stopCtx, cancelStop := context.WithCancel(context.Background())
	return &queue{engine: engine, id: id, maxInFlight: 1, stopping: make(chan struct{}), stopCtx: stopCtx, cancelStop: cancelStop,
		ordered: newOrdered()}
}

// configure applies the endpoint's concurrency cap, rate limit and
// ordering. It returns the tasks that were kept in line for a Strict
// endpoint that is no longer Strict, for the caller to schedule.
func (q *queue) configure(endpoint *routes.Route) []task {
	q.mu.Lock()
	defer q.mu.Unlock()
	moved := q.setStrict(endpoint.Strict())
	q.maxInFlight = max(int(endpoint.MaxInFlight), 1)
	switch limit := endpoint.RateLimit; {
	case limit == nil:
		q.limiter = nil
	case q.limiter == nil || q.limiter.Limit() != rate.Limit(limit.PerSecond) || q.limiter.Burst() != int(limit.Burst):
		q.limiter = rate.NewLimiter(rate.Limit(limit.PerSecond), max(int(limit.Burst), 1))
	}
	return moved
}

func (q *queue) push(t task) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return
	}
	if q.strict {
		q.pushInLine(t)
		return
	}
	q.ready = append(q.ready, t)
	q.engine.Metrics.QueueDepth.Inc()
	if q.workers < q.maxInFlight {
		q.workers++
		q.engine.inFlight.Add(1)
		go q.work()
	}
}

func (q *queue) work() {
	defer q.engine.inFlight.Done()
	for {
		q.mu.Lock()
		if len(q.ready) == 0 || q.stopped {
			q.workers--
			q.mu.Unlock()
			return
		}
		t := q.ready[0]
		q.ready[0] = task{}
		q.ready = q.ready[1:]
		limiter, pausedFor := q.limiter, time.Until(q.pausedUntil)
		q.mu.Unlock()
		q.engine.Metrics.QueueDepth.Dec()
		if pausedFor > 0 {
			select {
			case <-time.After(pausedFor):
			case <-q.stopping:
				q.mu.Lock()
				q.workers--
				q.mu.Unlock()
				return // the delivery stays pending in the store
			}
		}
		if !q.admit(limiter) {
			q.mu.Lock()
			q.workers--
			q.mu.Unlock()
			return // the delivery stays pending in the store
		}
		if next := q.engine.attempt(t); next != nil {
			q.engine.schedule(*next)
		}
	}
}

// admit waits for the endpoint's rate limit, if any, and reports whether
// the attempt may start: not once the queue stops, however long it waited.
func (q *queue) admit(limiter *rate.Limiter) bool {
	if limiter != nil {
		// Its only error that matters is the stop, which the check below
		// sees; on any other it goes ahead, as without a wait.
		_ = limiter.Wait(q.stopCtx)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return !q.stopped
}

// pause holds the endpoint's next attempts until the given time: the
// receiver asked for less traffic (429), so all of its deliveries wait, and
// no other endpoint's.
func (q *queue) pause(until time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if until.After(q.pausedUntil) {
		q.pausedUntil = until
	}
}

// stop drops the ready tasks (they stay pending in the store) and lets the
// workers finish their current attempt.
func (q *queue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.stopped {
		close(q.stopping)
		q.cancelStop()
	}
	q.stopped = true
	q.engine.Metrics.QueueDepth.Sub(float64(len(q.ready) + len(q.line)))
	q.ready, q.line = nil, nil
}
