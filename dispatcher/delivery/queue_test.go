package delivery

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/utils/clock"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
)

// TestFIFOKeepsOrder: pushes and pops in any interleaving come out in
// order, as from a plain slice, through the fifo's reuse and compaction of
// its array.
func TestFIFOKeepsOrder(t *testing.T) {
	random := rand.New(rand.NewPCG(1, 2))
	var f fifo
	var model []string
	next := 0
	for step := range 20_000 {
		if len(model) > 0 && random.IntN(100) < 48 {
			got, want := f.pop().delivery.ID, model[0]
			model = model[1:]
			if got != want {
				t.Fatalf("step %d: popped %s, want %s", step, got, want)
			}
		} else {
			id := strconv.Itoa(next)
			next++
			f.push(task{delivery: store.Delivery{ID: id}})
			model = append(model, id)
		}
		if f.len() != len(model) {
			t.Fatalf("step %d: len %d, want %d", step, f.len(), len(model))
		}
	}
	drained := f.drain()
	if len(drained) != len(model) || f.len() != 0 {
		t.Fatalf("drained %d tasks, %d left; want %d, 0", len(drained), f.len(), len(model))
	}
	for i, task := range drained {
		if task.delivery.ID != model[i] {
			t.Fatalf("drained %s at %d, want %s", task.delivery.ID, i, model[i])
		}
	}
}

// TestWorkerWaitsForTheNextTaskBeforeEnding: an endpoint's worker that
// finds its line empty waits a while for the next delivery and takes it,
// instead of ending and a new one starting; once the wait is over with
// nothing to do, it ends, and the idle endpoint has no worker left.
func TestWorkerWaitsForTheNextTaskBeforeEnding(t *testing.T) {
	for _, test := range []struct {
		name   string
		linger time.Duration
		// after each delivery, the workers left and how many of them wait:
		// with an hour's wait, one worker took all three deliveries (one
		// started for a later one would still be there, waiting too)
		workers, idle int
	}{
		{name: "waiting", linger: time.Hour, workers: 1, idle: 1},
		{name: "ended", linger: time.Millisecond, workers: 0, idle: 0},
	} {
		t.Run(test.name, func(t *testing.T) {
			g := NewWithT(t)
			var received atomic.Int64
			receiver := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { received.Add(1) }))
			t.Cleanup(receiver.Close)
			engine := startEngine(t, filepath.Join(t.TempDir(), "hookrelay.db"), strictRoute(receiver.URL, func(route *routes.Endpoint) {
				route.Ordering = ""
			}), clock.RealClock{})
			engine.linger = test.linger
			q := engine.queueFor(routes.ID("ns", "ordered"))
			for i := range 3 {
				publishEvents(t, engine, i, i+1)
				g.Eventually(received.Load).Should(Equal(int64(i + 1)))
				g.Eventually(func(g Gomega) {
					q.mu.Lock()
					defer q.mu.Unlock()
					g.Expect(q.workers).To(Equal(test.workers), "workers after delivery %d", i+1)
					g.Expect(q.waiting).To(HaveLen(test.idle), "waiting workers after delivery %d", i+1)
				}).Should(Succeed())
			}
		})
	}
}

// TestWaitingWorkersTakeTasksAtOnce: tasks pushed while several workers
// wait each wake a worker of their own, so they are attempted at once, not
// one after the other; and once the endpoint allows fewer workers, those
// over its maxInFlight end instead of waiting.
func TestWaitingWorkersTakeTasksAtOnce(t *testing.T) {
	g := NewWithT(t)
	// The receiver answers only once two requests are in at the same time.
	var inFlight, received atomic.Int64
	both := make(chan struct{})
	var once sync.Once
	receiver := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		if inFlight.Add(1) == 2 {
			once.Do(func() { close(both) })
		}
		<-both
		inFlight.Add(-1)
		received.Add(1)
	}))
	t.Cleanup(receiver.Close)
	t.Cleanup(func() { once.Do(func() { close(both) }) })
	route := strictRoute(receiver.URL, func(route *routes.Endpoint) { route.Ordering, route.MaxInFlight = "", 2 })
	engine := startEngine(t, filepath.Join(t.TempDir(), "hookrelay.db"), route, clock.RealClock{})
	engine.linger = time.Hour
	q := engine.queueFor(routes.ID("ns", "ordered"))
	state := func() (workers, waiting int) {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.workers, len(q.waiting)
	}

	publishEvents(t, engine, 0, 2)
	g.Eventually(received.Load).WithTimeout(10 * time.Second).Should(Equal(int64(2)))
	g.Eventually(func(g Gomega) {
		workers, waiting := state()
		g.Expect(workers).To(Equal(2))
		g.Expect(waiting).To(Equal(2))
	}).Should(Succeed())

	// Two more, pushed back to back to the two waiting workers: the
	// receiver answers only if both are attempted at once.
	both = make(chan struct{})
	once = sync.Once{}
	var tasks []task
	for _, id := range []string{"evt_002", "evt_003"} {
		event := store.Event{Namespace: "ns", ID: id, Type: "login.created", Data: []byte(`{}`), AcceptedAt: time.Now()}
		accepted, err := engine.Store.Accept(t.Context(), event, []store.Target{{Endpoint: "ordered"}}, time.Now().Add(-DedupeWindow))
		g.Expect(err).NotTo(HaveOccurred())
		tasks = append(tasks, task{delivery: accepted.Deliveries[0], event: &accepted.Event})
	}
	for _, task := range tasks {
		q.push(task)
	}
	g.Eventually(received.Load).WithTimeout(10*time.Second).Should(Equal(int64(4)), "two tasks for two waiting workers attempted one after the other")

	// maxInFlight 1: one of the two waiting workers ends at once.
	lower := route
	lower.MaxInFlight = 1
	g.Expect(engine.SetTable(t.Context(), tableOf(t, lower))).To(Succeed())
	once.Do(func() { close(both) }) // answer single requests from now on
	publishEvents(t, engine, 4, 5)
	g.Eventually(received.Load).Should(Equal(int64(5)))
	g.Eventually(func() int { workers, _ := state(); return workers }).Should(Equal(1), "workers once maxInFlight is 1")
}

// TestLoweredMaxInFlightHoldsAtOnce: once an endpoint's maxInFlight is
// lowered, no more attempts than the new cap run, whether its workers were
// busy at the change (they end as their attempts do, leaving the backlog
// to the cap) or waiting idle (they end at once, and a push wakes none of
// them beyond the cap). The transport holds as many connections as the cap
// allows: an attempt over it would wait for one while its timeout runs.
func TestLoweredMaxInFlightHoldsAtOnce(t *testing.T) {
	g := NewWithT(t)
	var inFlight, received atomic.Int64
	release, done := make(chan struct{}), make(chan struct{})
	receiver := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		defer received.Add(1)
		select {
		case <-release:
		case <-done:
		}
	}))
	t.Cleanup(receiver.Close)
	t.Cleanup(func() { close(done) })
	route := strictRoute(receiver.URL, func(route *routes.Endpoint) { route.Ordering, route.MaxInFlight = "", 3 })
	engine := startEngine(t, filepath.Join(t.TempDir(), "hookrelay.db"), route, clock.RealClock{})
	engine.linger = time.Hour
	q := engine.queueFor(routes.ID("ns", "ordered"))
	type state struct{ inFlight, ready, workers, waiting int }
	now := func() state {
		q.mu.Lock()
		defer q.mu.Unlock()
		return state{int(inFlight.Load()), q.ready.len(), q.workers, len(q.waiting)}
	}
	setCap := func(maxInFlight int32) {
		changed := route
		changed.MaxInFlight = maxInFlight
		g.Expect(engine.SetTable(t.Context(), tableOf(t, changed))).To(Succeed())
	}
	answer := func(n int) {
		for range n {
			release <- struct{}{}
		}
	}

	// Busy: three attempts held by the receiver and three tasks ready when
	// the cap goes down to one.
	publishEvents(t, engine, 0, 6)
	g.Eventually(now).WithTimeout(10 * time.Second).Should(Equal(state{inFlight: 3, ready: 3, workers: 3}))
	setCap(1)
	answer(3)
	g.Eventually(now).WithTimeout(10*time.Second).Should(Equal(state{inFlight: 1, ready: 2, workers: 1}), "busy workers over the lowered cap")
	answer(3)
	g.Eventually(received.Load).WithTimeout(10 * time.Second).Should(Equal(int64(6)))

	// Idle: three workers waiting when the cap goes down to one.
	setCap(3)
	publishEvents(t, engine, 6, 9)
	g.Eventually(now).WithTimeout(10 * time.Second).Should(Equal(state{inFlight: 3, workers: 3}))
	answer(3)
	g.Eventually(now).WithTimeout(10 * time.Second).Should(Equal(state{workers: 3, waiting: 3}))
	setCap(1)
	g.Eventually(now).Should(Equal(state{workers: 1, waiting: 1}), "idle workers over the lowered cap")
	publishEvents(t, engine, 9, 12)
	g.Eventually(now).WithTimeout(10*time.Second).Should(Equal(state{inFlight: 1, ready: 2, workers: 1}), "pushes after the cap was lowered")
	answer(3)
	g.Eventually(received.Load).WithTimeout(10 * time.Second).Should(Equal(int64(12)))
}
