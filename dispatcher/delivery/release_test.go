package delivery

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/testreceiver"
)

// changeRecorder notes the delivery ids of each ChangeDeliveries call and,
// as the engine's status sink, the held counts reported.
type changeRecorder struct {
	store.Store
	noStatus
	mu     sync.Mutex
	writes [][]string
	held   map[string]int64
}

func (s *changeRecorder) HeldChanged(endpoint *routes.Route, held int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held == nil {
		s.held = map[string]int64{}
	}
	s.held[endpoint.ID] = held
}

// heldReported is the held count last reported of the endpoint, and
// whether one was.
func (s *changeRecorder) heldReported(id string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	held, ok := s.held[id]
	return held, ok
}

func (s *changeRecorder) ChangeDeliveries(ctx context.Context, changes []store.DeliveryChange) ([]bool, error) {
	ids := make([]string, len(changes))
	for i, change := range changes {
		ids[i] = change.To.ID
	}
	s.mu.Lock()
	s.writes = append(s.writes, ids)
	s.mu.Unlock()
	return s.Store.ChangeDeliveries(ctx, changes)
}

func (s *changeRecorder) recorded() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.writes)
}

// disabledEngine runs an engine on a new store in which the route's
// endpoint is disabled, recovered, its store (wrapped by wrap, if not nil)
// recording ChangeDeliveries. With a waker, it runs as a replica on a
// shared store does (which alone re-reads the store with Resync).
func disabledEngine(t *testing.T, route routes.Endpoint, wrap func(store.Store) store.Store, waker Waker) (*Engine, *changeRecorder) {
	t.Helper()
	ctx := context.Background()
	db, err := store.OpenBolt(filepath.Join(t.TempDir(), "hookrelay.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	id := routes.ID(route.Namespace, route.Name)
	if err := db.PutHealth(ctx, store.Health{Endpoint: id, UID: route.UID, ConsecutiveFailures: 5, Disabled: true}); err != nil {
		t.Fatal(err)
	}
	recorder := &changeRecorder{Store: db}
	if wrap != nil {
		recorder.Store = wrap(db)
	}
	// Standing still: every release is due at once, and a shared store's
	// finished ids are remembered for the whole test.
	options := testOptions(recorder, recorder, clocktesting.NewFakeClock(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)))
	options.Waker = waker
	engine, err := New(ctx, options)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := engine.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	if err := engine.SetTable(ctx, tableOf(t, route)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := engine.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	return engine, recorder
}

// oneAtATime is the endpoint of the release tests at url: unordered, one
// attempt at a time, so that deliveries arrive in the order handed out.
func oneAtATime(url string) routes.Endpoint {
	return strictRoute(url, func(route *routes.Endpoint) { route.Ordering, route.MaxInFlight = "", 1 })
}

// releasingInChunks is disabledEngine moving held deliveries back in line
// 10 at a time.
func releasingInChunks(t *testing.T, route routes.Endpoint, wrap func(store.Store) store.Store, waker Waker) (*Engine, *changeRecorder) {
	t.Helper()
	engine, recorder := disabledEngine(t, route, wrap, waker)
	engine.releaseChunk = 10
	return engine, recorder
}

// TestReleaseGoesInChunksOldestFirst: held deliveries are moved back in line
// a chunk per store write, oldest first, and arrive in acceptance order at
// an endpoint that takes one at a time.
func TestReleaseGoesInChunksOldestFirst(t *testing.T) {
	g := NewWithT(t)
	receiver := testreceiver.NewOrdered(t, nil)
	route := oneAtATime(receiver.URL)
	engine, recorder := releasingInChunks(t, route, nil, nil)

	ids := publishEvents(t, engine, 0, 35)
	g.Expect(heldGauge(t, engine)).To(Equal(35.0))
	route.ReenableToken = "1"
	g.Expect(engine.SetTable(context.Background(), tableOf(t, route))).To(Succeed())

	g.Eventually(receiver.Delivered).WithTimeout(30 * time.Second).WithPolling(10 * time.Millisecond).Should(Equal(ids))
	writes := recorder.recorded()
	sizes := make([]int, len(writes))
	for i, write := range writes {
		sizes[i] = len(write)
	}
	g.Expect(sizes).To(Equal([]int{10, 10, 10, 5}))
	released := slices.Concat(writes...)
	g.Expect(slices.IsSorted(released)).To(BeTrue(), "released oldest first: %v", released)
	g.Expect(heldGauge(t, engine)).To(BeZero())
}

// TestStartCopiesNoHeldDeliveries: reading what the store holds at start
// does not copy its held deliveries (there may be a million of them): with
// no attempt in flight at the last stop, the active list is passed on as
// it is, and the held ones of a disabled endpoint are only counted.
func TestStartCopiesNoHeldDeliveries(t *testing.T) {
	route := strictRoute("http://127.0.0.1:1", func(route *routes.Endpoint) { route.Ordering = "" })
	engine, _ := disabledEngine(t, route, nil, nil)
	active := make([]store.Delivery, 10000)
	for i := range active {
		active[i] = store.Delivery{ID: fmt.Sprintf("dlv_%016x", i), Namespace: route.Namespace, Endpoint: route.Name, State: store.Held}
	}
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	if allocs := testing.AllocsPerRun(10, func() {
		if kept, _, _ := interruptions(active, map[string]int{}, 3, now); &kept[0] != &active[0] {
			t.Fatal("interruptions copied the active deliveries")
		}
	}); allocs != 0 {
		t.Errorf("interruptions with nothing in flight made %v allocations, want 0", allocs)
	}
	if allocs := testing.AllocsPerRun(10, func() {
		if _, _, held, _ := engine.claim(active); held != len(active) {
			t.Fatalf("claim counted %d held, want %d", held, len(active))
		}
	}); allocs > 2 {
		t.Errorf("claim of %d held deliveries made %v allocations, want them counted, not copied", len(active), allocs)
	}
}

// gatedChanges lets the first ChangeDeliveries through and holds the
// others until open is closed.
type gatedChanges struct {
	store.Store
	calls atomic.Int32
	open  chan struct{}
}

func (s *gatedChanges) ChangeDeliveries(ctx context.Context, changes []store.DeliveryChange) ([]bool, error) {
	if s.calls.Add(1) > 1 {
		<-s.open
	}
	return s.Store.ChangeDeliveries(ctx, changes)
}

// TestReleaseDoesNotHoldUpTheTable: the re-enable of an unordered endpoint
// returns once its release has begun, while later chunks are still to be
// written, so that a table swap (and the endpoints it adds or changes)
// never waits for a large release; the release then completes, oldest
// first.
func TestReleaseDoesNotHoldUpTheTable(t *testing.T) {
	g := NewWithT(t)
	receiver := testreceiver.NewOrdered(t, nil)
	route := oneAtATime(receiver.URL)
	gate := &gatedChanges{open: make(chan struct{})}
	engine, _ := releasingInChunks(t, route, func(db store.Store) store.Store {
		gate.Store = db
		return gate
	}, nil)
	var opened sync.Once
	open := func() { opened.Do(func() { close(gate.open) }) }
	t.Cleanup(open)

	ids := publishEvents(t, engine, 0, 35)
	route.ReenableToken = "1"
	swapped := make(chan error, 1)
	go func() { swapped <- engine.SetTable(context.Background(), tableOf(t, route)) }()
	g.Eventually(swapped).WithTimeout(10 * time.Second).Should(Receive(BeNil()))
	g.Eventually(receiver.Delivered).WithTimeout(10 * time.Second).Should(Equal(ids[:10]))
	g.Expect(gate.calls.Load()).To(BeNumerically("<=", 2), "the second chunk waits at the gate")

	open()
	g.Eventually(receiver.Delivered).WithTimeout(30 * time.Second).WithPolling(10 * time.Millisecond).Should(Equal(ids))
	g.Eventually(func() float64 { return heldGauge(t, engine) }).Should(BeZero())
}

// TestReleaseRequestsCoalesce: re-reads of the store that ask again for an
// endpoint whose release is under way (Resync finds its held deliveries
// every few seconds) add one more pass, not another release of the same
// deliveries.
func TestReleaseRequestsCoalesce(t *testing.T) {
	g := NewWithT(t)
	receiver := testreceiver.NewOrdered(t, nil)
	route := oneAtATime(receiver.URL)
	gate := &gatedChanges{open: make(chan struct{})}
	engine, recorder := releasingInChunks(t, route, func(db store.Store) store.Store {
		gate.Store = db
		return gate
	}, lostWake{})
	var opened sync.Once
	open := func() { opened.Do(func() { close(gate.open) }) }
	t.Cleanup(open)

	ids := publishEvents(t, engine, 0, 35)
	route.ReenableToken = "1"
	g.Expect(engine.SetTable(context.Background(), tableOf(t, route))).To(Succeed())
	g.Eventually(receiver.Delivered).WithTimeout(10 * time.Second).Should(Equal(ids[:10]))
	// Each waits for the chunk being written (behind the gate), then
	// reads the held ones left and asks for their release.
	resyncs := make(chan error, 3)
	for range 3 {
		go func() { resyncs <- engine.Resync(context.Background()) }()
	}
	open()
	for range 3 {
		g.Eventually(resyncs).WithTimeout(10 * time.Second).Should(Receive(BeNil()))
	}
	g.Eventually(receiver.Delivered).WithTimeout(30 * time.Second).WithPolling(10 * time.Millisecond).Should(Equal(ids))
	g.Eventually(func() int {
		engine.mu.Lock()
		defer engine.mu.Unlock()
		return len(engine.releasers)
	}).Should(BeZero())
	g.Expect(recorder.recorded()).To(HaveLen(4), "35 held deliveries, 10 to a chunk, each written once")
}

// TestHeldCountsFollowTheStore: an endpoint's held count, which its status
// shows, goes up with each delivery stored held, is counted again from the
// store when its partition is taken (deliveries held while another replica
// owned it included), and goes back to zero as the held ones are released.
func TestHeldCountsFollowTheStore(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	receiver := testreceiver.NewOrdered(t, nil)
	route := strictRoute(receiver.URL, func(route *routes.Endpoint) { route.Ordering = "" })
	id := routes.ID(route.Namespace, route.Name)
	engine, recorder := disabledEngine(t, route, nil, nil)
	engine.releaseChunk = 3
	reported := func() int64 {
		held, ok := recorder.heldReported(id)
		g.Expect(ok).To(BeTrue(), "a held count was reported")
		return held
	}
	g.Expect(reported()).To(BeZero(), "counted when the partition was taken")

	ids := publishEvents(t, engine, 0, 7)
	g.Expect(engine.Held(id)).To(Equal(int64(7)))
	g.Expect(reported()).To(Equal(int64(7)))

	// Given up, the count is the next owner's; deliveries stored held
	// meanwhile are counted when the partition is taken again.
	engine.Release(store.AllPartitions())
	g.Expect(engine.Held(id)).To(BeZero())
	ids = append(ids, publishEvents(t, engine, 7, 10)...)
	g.Expect(reported()).To(Equal(int64(7)), "not the owner: reports nothing")
	_, held, err := engine.Acquire(ctx, store.AllPartitions())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(held).To(Equal(10))
	g.Expect(engine.Held(id)).To(Equal(int64(10)))
	g.Expect(reported()).To(Equal(int64(10)))

	route.ReenableToken = "1"
	g.Expect(engine.SetTable(ctx, tableOf(t, route))).To(Succeed())
	g.Eventually(receiver.Delivered).WithTimeout(30 * time.Second).WithPolling(10 * time.Millisecond).Should(ConsistOf(ids))
	g.Expect(engine.Held(id)).To(BeZero())
	g.Expect(reported()).To(BeZero())
}

// TestReleaseWaitsForRoomInLine: a release moves the next chunk of held
// deliveries only once the endpoint's line has room for it, so that while
// the receiver is slow the dispatcher holds about two chunks in memory, not
// every held delivery (a disabled endpoint may have a million); once the
// receiver answers, the rest follow, oldest first.
func TestReleaseWaitsForRoomInLine(t *testing.T) {
	g := NewWithT(t)
	receiver := testreceiver.NewHeldOrdered(t, nil)
	route := oneAtATime(receiver.URL)
	engine, recorder := releasingInChunks(t, route, nil, nil)
	released := false
	t.Cleanup(func() {
		if !released {
			receiver.Release()
		}
	})

	ids := publishEvents(t, engine, 0, 45)
	route.ReenableToken = "1"
	g.Expect(engine.SetTable(context.Background(), tableOf(t, route))).To(Succeed())
	// The first attempt waits at the receiver, 19 wait in line, and the
	// release waits for room with the other 25 still held in the store
	// (nothing leaves the line until the receiver answers).
	queue := engine.queueFor(routes.ID(route.Namespace, route.Name))
	g.Eventually(func() bool {
		queue.mu.Lock()
		defer queue.mu.Unlock()
		return queue.room != nil && len(recorder.recorded()) == 2
	}).WithTimeout(10*time.Second).Should(BeTrue(), "the release waits for room in line after two chunks")
	g.Expect(engine.Held(routes.ID(route.Namespace, route.Name))).To(Equal(int64(25)))

	receiver.Release()
	released = true
	g.Eventually(receiver.Delivered).WithTimeout(30 * time.Second).WithPolling(10 * time.Millisecond).Should(Equal(ids))
	g.Expect(recorder.recorded()).To(HaveLen(5))
}

// pagedReads notes the longest page of active deliveries read.
type pagedReads struct {
	store.Store
	mu      sync.Mutex
	longest int
}

func (s *pagedReads) ActivePage(ctx context.Context, partitions []int, after string, limit int) ([]store.Delivery, string, error) {
	page, next, err := s.Store.ActivePage(ctx, partitions, after, limit)
	s.mu.Lock()
	s.longest = max(s.longest, len(page))
	s.mu.Unlock()
	return page, next, err
}

// TestStartReadsHeldDeliveriesInPages: taking partitions (at start) and a
// release read the store's held deliveries a page at a time, so that the
// dispatcher's memory at start does not grow with the number held; each is
// still counted, and released oldest first.
func TestStartReadsHeldDeliveriesInPages(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	receiver := testreceiver.NewOrdered(t, nil)
	route := oneAtATime(receiver.URL)
	id := routes.ID(route.Namespace, route.Name)
	reads := &pagedReads{}
	engine, _ := releasingInChunks(t, route, func(db store.Store) store.Store {
		reads.Store = db
		return reads
	}, nil)
	ids := publishEvents(t, engine, 0, 35)

	engine.Release(store.AllPartitions())
	_, held, err := engine.Acquire(ctx, store.AllPartitions())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(held).To(Equal(35))
	g.Expect(engine.Held(id)).To(Equal(int64(35)))

	route.ReenableToken = "1"
	g.Expect(engine.SetTable(ctx, tableOf(t, route))).To(Succeed())
	g.Eventually(receiver.Delivered).WithTimeout(30 * time.Second).WithPolling(10 * time.Millisecond).Should(Equal(ids))
	reads.mu.Lock()
	defer reads.mu.Unlock()
	g.Expect(reads.longest).To(Equal(10), "pages of releaseChunk")
}

// TestReleasesDoNotWaitForEachOther: each endpoint's release goes on its
// own, so that one whose receiver is slow (its release waiting for room in
// line) holds up no other endpoint's.
func TestReleasesDoNotWaitForEachOther(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	slow, other := testreceiver.NewHeldOrdered(t, nil), testreceiver.NewOrdered(t, nil)
	released := false
	t.Cleanup(func() {
		if !released {
			slow.Release()
		}
	})
	table, _ := twoEndpoints(t, slow.URL, other.URL)
	db, err := store.OpenBolt(filepath.Join(t.TempDir(), "hookrelay.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, endpoint := range table.Endpoints() {
		g.Expect(db.PutHealth(ctx, store.Health{Endpoint: endpoint.ID, UID: endpoint.UID, ConsecutiveFailures: 5, Disabled: true})).To(Succeed())
	}
	engine := replicaEngine(t, db, "Test", table, nil)
	if _, _, err := engine.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	engine.releaseChunk = 5
	ids := publishEvents(t, engine, 0, 30)
	g.Expect(heldGauge(t, engine)).To(Equal(60.0))

	reenabled, _ := twoEndpointsWith(t, slow.URL, other.URL, func(route *routes.Endpoint) { route.ReenableToken = "1" })
	g.Expect(engine.SetTable(ctx, reenabled)).To(Succeed())
	g.Eventually(other.Delivered).WithTimeout(30*time.Second).WithPolling(10*time.Millisecond).Should(ConsistOf(ids),
		"released while the slow endpoint's release waits")
	g.Expect(slow.Delivered()).To(BeEmpty())

	slow.Release()
	released = true
	g.Eventually(slow.Delivered).WithTimeout(30 * time.Second).WithPolling(10 * time.Millisecond).Should(ConsistOf(ids))
}
