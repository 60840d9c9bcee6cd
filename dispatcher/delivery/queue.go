package delivery

import (
	"slices"
	"sync"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
)

// task is a delivery ready for its next attempt; event is nil until loaded.
type task struct {
	delivery store.Delivery
	event    *store.Event
	// envelope is the event's default body when already built, shared by
	// the tasks of its deliveries and read only; nil builds it.
	envelope []byte
}

// workerLinger is how long a worker that found its line empty waits for the
// next task before it ends (Engine.linger). A busy endpoint's workers then
// live on from task to task: a worker started for every task was a new
// goroutine whose stack grew to the attempt's depth each time, a few
// percent of the dispatcher's CPU at full load; an idle endpoint still
// costs no goroutine a moment later.
const workerLinger = 200 * time.Millisecond

// queue is one endpoint's line of ready deliveries. Workers start on demand,
// at most maxInFlight at once, and end a moment (workerLinger) after the
// line is empty, so an idle endpoint costs no goroutine and a slow one holds
// only its own workers.
type queue struct {
	engine *Engine
	id     string

	mu          sync.Mutex
	ready       fifo
	workers     int
	maxInFlight int
	// waiting are the wake-ups of the workers waiting for a task
	// (workerLinger), the latest last: a push hands its task to the
	// latest rather than start a worker, so that the others end.
	waiting []chan struct{}
	// pacer holds attempts back after a 429 and to the rate limit.
	pacer    pacer
	stopped  bool
	stopping chan struct{}
	// running counts the workers, for a partition's release to wait for.
	running sync.WaitGroup
	// recording orders the endpoint's health changes with their records
	// and reports (Engine.attempt).
	recording sync.Mutex
	// room, when not nil, is closed at the next task taken from ready or
	// at stop: a release waiting for the line to shorten (waitRoom) looks
	// again.
	room chan struct{}

	// ordered is set for a Strict endpoint: see ordered.go.
	ordered
}

func newQueue(engine *Engine, id string) *queue {
	return &queue{engine: engine, id: id, maxInFlight: 1, stopping: make(chan struct{}),
		pacer: pacer{scheduler: engine.scheduler}, ordered: newOrdered()}
}

// configure applies the endpoint's concurrency cap, rate limit and
// ordering. It returns the tasks that were kept in line for a Strict
// endpoint that is no longer Strict, for the caller to schedule.
func (q *queue) configure(endpoint *routes.Route) []task {
	q.mu.Lock()
	defer q.mu.Unlock()
	moved := q.setStrict(endpoint.Strict())
	q.maxInFlight = max(int(endpoint.MaxInFlight), 1)
	q.pacer.setLimit(endpoint.RateLimit)
	if q.workers > q.maxInFlight || q.strict {
		// The waiting workers look again: those over the lower cap, or
		// unordered ones of a Strict endpoint, end now rather than at
		// their linger, and none over the cap is left for a push to wake.
		for len(q.waiting) > 0 {
			q.wakeLatest()
		}
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
	q.ready.push(t)
	if len(q.waiting) > 0 {
		q.wakeLatest()
		return
	}
	if q.workers < q.maxInFlight {
		q.workers++
		q.spawn(q.work)
	}
}

// wakeLatest wakes the worker that began waiting last and takes it off the
// waiting list: each waiting worker is woken once, with room for the
// signal. Call with mu held and a worker waiting.
func (q *queue) wakeLatest() {
	n := len(q.waiting)
	q.waiting[n-1] <- struct{}{}
	q.waiting[n-1] = nil
	q.waiting = q.waiting[:n-1]
}

// spawn runs a worker, counted for the engine's drain and the queue's
// release.
func (q *queue) spawn(work func()) {
	q.engine.inFlight.Add(1)
	q.running.Add(1)
	go func() {
		defer q.engine.inFlight.Done()
		defer q.running.Done()
		work()
	}()
}

func (q *queue) work() {
	var idle idleWait
	defer idle.stop()
	for {
		t, ok := q.take(&idle)
		if !ok {
			return
		}
		if !q.admit() {
			q.mu.Lock()
			q.workers--
			q.mu.Unlock()
			return // the delivery stays pending in the store
		}
		if next := q.engine.attempt(q, t); next != nil {
			q.engine.schedule(*next)
		}
	}
}

// take returns the next ready task. A worker over the endpoint's cap (it
// was lowered) ends first, tasks ready or not, so that no more attempts
// than the cap run once the workers busy at the change are done. With no
// task, the worker waits for one up to the engine's linger, unless the
// endpoint is Strict (its line has a worker of its own); ok is false when
// the worker is to end, the worker count already lowered.
func (q *queue) take(idle *idleWait) (t task, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		switch {
		case q.stopped, q.workers > q.maxInFlight:
			q.workers--
			return task{}, false
		case q.ready.len() > 0:
			t = q.ready.pop()
			q.signalRoom()
			idle.lingered = false
			return t, true
		case idle.lingered || q.strict:
			q.workers--
			return task{}, false
		}
		idle.wait(q)
	}
}

// idleWait is one worker's wait for a task: its wake-up, with room for one
// signal, and its timer, both made at its first wait.
type idleWait struct {
	wake     chan struct{}
	timer    *time.Timer
	lingered bool
}

// wait waits for a push, the linger or the queue's stop. Call with q.mu
// held; it is released during the wait.
func (w *idleWait) wait(q *queue) {
	if w.wake == nil {
		w.wake, w.timer = make(chan struct{}, 1), time.NewTimer(q.engine.linger)
	} else {
		w.timer.Reset(q.engine.linger)
	}
	q.waiting = append(q.waiting, w.wake)
	q.mu.Unlock()
	select {
	case <-w.wake:
	case <-w.timer.C:
		w.lingered = true
	case <-q.stopping:
	}
	w.timer.Stop()
	q.mu.Lock()
	if i := slices.Index(q.waiting, w.wake); i >= 0 {
		q.waiting = slices.Delete(q.waiting, i, i+1)
	} else {
		// A push picked this worker as its wait ended: its task is in
		// ready, and its signal is dropped here.
		select {
		case <-w.wake:
		default:
		}
	}
}

func (w *idleWait) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}

// admit waits for the endpoint's pause and rate limit and reports whether
// the attempt may start: not once the queue stops, however long it waited.
func (q *queue) admit() bool {
	if !q.pacer.wait(q.stopping) {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return !q.stopped
}

// stop drops the ready tasks (they stay pending in the store) and lets the
// workers finish their current attempt.
func (q *queue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.stopped {
		close(q.stopping)
	}
	q.stopped = true
	q.ready, q.line = fifo{}, nil
	q.signalRoom()
}

// signalRoom wakes a release waiting in waitRoom; call with mu held.
func (q *queue) signalRoom() {
	if q.room != nil {
		close(q.room)
		q.room = nil
	}
}

// waitRoom waits until fewer than n tasks wait in the ready line, so that
// a release of many held deliveries keeps only about a chunk of them in
// memory ahead of the workers, and reports false if the queue stopped
// first (its partition given up, or the engine stopping).
func (q *queue) waitRoom(n int) bool {
	for {
		q.mu.Lock()
		if q.stopped {
			q.mu.Unlock()
			return false
		}
		if q.ready.len() < n {
			q.mu.Unlock()
			return true
		}
		if q.room == nil {
			q.room = make(chan struct{})
		}
		room := q.room
		q.mu.Unlock()
		<-room
	}
}

// fifo is a first-in, first-out line of tasks that reuses its array, so
// that a busy queue does not allocate for every few tasks: it starts over
// at the front once empty, and moves its tasks to the front rather than
// growing while at least half of the array is free.
type fifo struct {
	tasks []task
	head  int
}

// keptCapacity is the largest array an empty fifo keeps, so that a burst
// does not pin its memory.
const keptCapacity = 1024

func (f *fifo) len() int { return len(f.tasks) - f.head }

func (f *fifo) push(t task) {
	if len(f.tasks) == cap(f.tasks) && f.head >= len(f.tasks)/2 && f.head > 0 {
		n := copy(f.tasks, f.tasks[f.head:])
		clear(f.tasks[n:])
		f.tasks, f.head = f.tasks[:n], 0
	}
	f.tasks = append(f.tasks, t)
}

// pop takes the first task; the fifo must not be empty.
func (f *fifo) pop() task {
	t := f.tasks[f.head]
	f.tasks[f.head] = task{} // lets go of its event
	f.head++
	if f.head == len(f.tasks) {
		f.tasks, f.head = f.tasks[:0], 0
		if cap(f.tasks) > keptCapacity {
			f.tasks = nil
		}
	}
	return t
}

// drain empties the fifo and returns its tasks in order.
func (f *fifo) drain() []task {
	tasks := f.tasks[f.head:]
	*f = fifo{}
	return tasks
}
