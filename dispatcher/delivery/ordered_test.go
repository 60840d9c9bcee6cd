package delivery

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hookrelay/hookrelay/dispatcher/signing"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/dispatcher/store/storetest"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/testreceiver"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

type noStatus struct{}

func (noStatus) HealthChanged(*routes.Route, store.Health, Change) {}
func (noStatus) HeldChanged(*routes.Route, int64)                  {}

// jumpingClock moves an hour on every reading, so that every retry is due
// the next time it is looked at: the order then comes from the queue alone,
// never from timers.
type jumpingClock struct {
	clock.RealClock
	ticks atomic.Int64
}

func (c *jumpingClock) Now() time.Time {
	return time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC).Add(time.Duration(c.ticks.Add(1)) * time.Hour)
}

func strictRoute(url string, change func(*routes.Endpoint)) routes.Endpoint {
	route := routes.Endpoint{
		Namespace: "ns", Name: "ordered", UID: "uid-1", URL: url,
		Timeout:          metav1.Duration{Duration: 10 * time.Second},
		RetrySchedule:    []metav1.Duration{{Duration: time.Minute}, {Duration: time.Minute}, {Duration: time.Minute}},
		AutoDisableAfter: 0, MaxInFlight: 10, Ordering: routes.OrderingStrict,
		Subscriptions: []routes.Subscription{{Name: "all", EventTypes: []string{"*"}}},
	}
	if change != nil {
		change(&route)
	}
	return route
}

func tableOf(t *testing.T, route routes.Endpoint) *routes.Table {
	t.Helper()
	return tableWithKeys(t, route, routes.Key{Secret: whsec.Encode(make([]byte, 33))})
}

func tableWithKeys(t *testing.T, route routes.Endpoint, signingKeys ...routes.Key) *routes.Table {
	t.Helper()
	data, err := routes.EncodeEndpoint(route)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := routes.EncodeKeys(routes.KeysEntry{Keys: signingKeys})
	if err != nil {
		t.Fatal(err)
	}
	entry := routes.EntryKey(route.Namespace, route.Name)
	table, problems := routes.Build(map[string][]byte{entry: data}, map[string][]byte{entry: keys})
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	return table
}

// startEngine runs an engine on the store at path with the route, recovered.
func startEngine(t *testing.T, path string, route routes.Endpoint, engineClock clock.WithDelayedExecution) *Engine {
	t.Helper()
	return startEngineWith(t, path, route, engineClock, noStatus{})
}

// startEngineWith is startEngine with a status sink of the test's.
func startEngineWith(t *testing.T, path string, route routes.Endpoint, engineClock clock.WithDelayedExecution, status StatusSink) *Engine {
	t.Helper()
	db, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	return startEngineOn(t, db, route, engineClock, status)
}

// testOptions are the engine's options of the package's tests: metrics of
// their own, no logs, a signing attempter, retries after at most a minute.
func testOptions(db store.Store, status StatusSink, engineClock clock.WithDelayedExecution) Options {
	return Options{
		Store: db, Status: status, Metrics: NewMetrics(prometheus.NewRegistry()), Log: logr.Discard(), Clock: engineClock,
		Attempt: &Attempter{Client: NewHTTPClient(nil), Signer: signing.Signer{Prefix: "Test"}}, MaxRetryAfter: time.Minute,
	}
}

// startEngineOn is startEngineWith on a store of the test's, which it
// closes at the end.
func startEngineOn(t *testing.T, db store.Store, route routes.Endpoint, engineClock clock.WithDelayedExecution, status StatusSink) *Engine {
	t.Helper()
	ctx := context.Background()
	engine, err := New(ctx, testOptions(db, status, engineClock))
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.SetTable(ctx, tableOf(t, route)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := engine.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if err := engine.Stop(ctx); err != nil {
				t.Error(err)
			}
			if err := db.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return engine
}

func publishEvents(t *testing.T, engine *Engine, from, to int) []string {
	t.Helper()
	var ids []string
	for i := from; i < to; i++ {
		id := fmt.Sprintf("evt_%03d", i)
		if _, err := engine.Publish(context.Background(), "ns", Incoming{ID: id, Type: "login.created", Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// TestStrictRetryBlocksLaterDeliveries: a Strict endpoint's failing delivery,
// waiting for its retries, keeps every later one behind it; one that fails
// for good lets the next proceed.
func TestStrictRetryBlocksLaterDeliveries(t *testing.T) {
	g := NewWithT(t)
	receiver := testreceiver.NewHeldOrdered(t, map[string]int{"evt_004": 2, "evt_016": 2, "evt_020": 4})
	engine := startEngine(t, filepath.Join(t.TempDir(), "hookrelay.db"), strictRoute(receiver.URL, nil), &jumpingClock{})

	// All are waiting before the first answer, so that a retry that went
	// to the back of the queue would come after them.
	ids := publishEvents(t, engine, 0, 40)
	receiver.Release()
	want := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == "evt_020" }) // fails all 4 attempts
	g.Eventually(receiver.Delivered).WithTimeout(30 * time.Second).WithPolling(10 * time.Millisecond).Should(HaveLen(len(want)))
	g.Expect(receiver.Delivered()).To(Equal(want))
	g.Expect(receiver.Attempts("evt_004")).To(Equal(3))
	g.Expect(receiver.Attempts("evt_020")).To(Equal(4))
}

// TestStrictHeldDeliveriesReleasedInOrder: deliveries held while a Strict
// endpoint is auto-disabled, with the ones already in line behind the
// failure that disabled it, are released in acceptance order on re-enable,
// ahead of events published after it.
func TestStrictHeldDeliveriesReleasedInOrder(t *testing.T) {
	g := NewWithT(t)
	receiver := testreceiver.NewOrdered(t, map[string]int{"evt_003": 4})
	route := strictRoute(receiver.URL, func(route *routes.Endpoint) { route.AutoDisableAfter = 1 })
	engine := startEngine(t, filepath.Join(t.TempDir(), "hookrelay.db"), route, &jumpingClock{})

	ids := publishEvents(t, engine, 0, 30)
	g.Eventually(func() float64 { return heldGauge(t, engine) }).WithTimeout(30 * time.Second).
		WithPolling(10 * time.Millisecond).Should(BeNumerically(">=", 1))
	ids = append(ids, publishEvents(t, engine, 30, 60)...)
	g.Eventually(func() float64 { return heldGauge(t, engine) }).WithTimeout(30 * time.Second).
		WithPolling(10 * time.Millisecond).Should(Equal(56.0))
	g.Expect(receiver.Delivered()).To(Equal(ids[:3]))

	route.ReenableToken = "1"
	g.Expect(engine.SetTable(context.Background(), tableOf(t, route))).To(Succeed())
	ids = append(ids, publishEvents(t, engine, 60, 80)...)
	want := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == "evt_003" })
	g.Eventually(receiver.Delivered).WithTimeout(30 * time.Second).WithPolling(10 * time.Millisecond).Should(HaveLen(len(want)))
	g.Expect(receiver.Delivered()).To(Equal(want))
}

// TestStrictPausedThenUnpaused: events published to a paused Strict
// endpoint are released in order when it is unpaused.
func TestStrictPausedThenUnpaused(t *testing.T) {
	g := NewWithT(t)
	receiver := testreceiver.NewOrdered(t, nil)
	route := strictRoute(receiver.URL, func(route *routes.Endpoint) { route.Paused = true })
	engine := startEngine(t, filepath.Join(t.TempDir(), "hookrelay.db"), route, &jumpingClock{})

	ids := publishEvents(t, engine, 0, 50)
	route.Paused = false
	g.Expect(engine.SetTable(context.Background(), tableOf(t, route))).To(Succeed())
	ids = append(ids, publishEvents(t, engine, 50, 70)...)
	g.Eventually(receiver.Delivered).WithTimeout(30 * time.Second).WithPolling(10 * time.Millisecond).Should(HaveLen(len(ids)))
	g.Expect(receiver.Delivered()).To(Equal(ids))
}

// TestStrictOrderSurvivesARestart: after a restart, a recovered delivery
// that waits for its retry still comes before the later pending ones.
func TestStrictOrderSurvivesARestart(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hookrelay.db")
	receiver := testreceiver.NewOrdered(t, nil)
	route := strictRoute(receiver.URL, nil)
	db, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	// What a stopped dispatcher left: the first delivery failed once and
	// waits for its retry, the others were never attempted.
	now := time.Now()
	var ids []string
	for i := range 20 {
		id := fmt.Sprintf("evt_%03d", i)
		accepted, err := db.Accept(ctx, store.Event{Namespace: "ns", ID: id, Type: "login.created", Data: []byte(`{}`), AcceptedAt: now},
			[]store.Target{{Endpoint: route.Name}}, now.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first := accepted.Deliveries[0]
			first.Attempts, first.NextAttemptAt = 1, now.Add(200*time.Millisecond)
			if err := db.UpdateDeliveries(ctx, []store.Delivery{first}); err != nil {
				t.Fatal(err)
			}
		}
		ids = append(ids, id)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	startEngine(t, path, route, clock.RealClock{})
	g.Eventually(receiver.Delivered).WithTimeout(30 * time.Second).WithPolling(10 * time.Millisecond).Should(HaveLen(len(ids)))
	g.Expect(receiver.Delivered()).To(Equal(ids))
}

// TestStrictHeldBeforeRecoverReleasedByRecover: events published to a
// paused Strict endpoint before Recover, which is unpaused before Recover
// too, are delivered once Recover releases them: the line they blocked
// moves again.
func TestStrictHeldBeforeRecoverReleasedByRecover(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	receiver := testreceiver.NewOrdered(t, nil)
	route := strictRoute(receiver.URL, func(route *routes.Endpoint) { route.Paused = true })
	db, err := store.OpenBolt(filepath.Join(t.TempDir(), "hookrelay.db"))
	if err != nil {
		t.Fatal(err)
	}
	engine, err := New(ctx, testOptions(db, noStatus{}, &jumpingClock{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := engine.Stop(ctx); err != nil {
			t.Error(err)
		}
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	g.Expect(engine.SetTable(ctx, tableOf(t, route))).To(Succeed())

	ids := publishEvents(t, engine, 0, 5)
	route.Paused = false
	g.Expect(engine.SetTable(ctx, tableOf(t, route))).To(Succeed())
	_, _, err = engine.Recover(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(receiver.Delivered).WithTimeout(10 * time.Second).WithPolling(10 * time.Millisecond).Should(Equal(ids))
}

// TestRateLimitedAttemptNotStartedAfterStop: a delivery waiting for its
// endpoint's rate limit when Stop begins is not attempted; it stays
// pending in the store for the next start.
func TestRateLimitedAttemptNotStartedAfterStop(t *testing.T) {
	for _, ordering := range []string{routes.OrderingStrict, ""} {
		t.Run(ordering+"ordering", func(t *testing.T) {
			g := NewWithT(t)
			ctx := context.Background()
			var hits atomic.Int64
			receiver := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
			t.Cleanup(receiver.Close)
			route := strictRoute(receiver.URL, func(route *routes.Endpoint) {
				route.Ordering, route.MaxInFlight, route.RateLimit = ordering, 1, &routes.RateLimit{PerSecond: 1, Burst: 1}
			})
			db, err := store.OpenBolt(filepath.Join(t.TempDir(), "hookrelay.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := db.Close(); err != nil {
					t.Error(err)
				}
			})
			// The clock stands still: the second delivery waits for the
			// limit until Stop, however slow the machine.
			fake := clocktesting.NewFakeClock(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC))
			engine, err := New(ctx, testOptions(db, noStatus{}, fake))
			if err != nil {
				t.Fatal(err)
			}
			g.Expect(engine.SetTable(ctx, tableOf(t, route))).To(Succeed())
			_, _, err = engine.Recover(ctx)
			g.Expect(err).NotTo(HaveOccurred())

			publishEvents(t, engine, 0, 2)
			g.Eventually(hits.Load).WithTimeout(10 * time.Second).WithPolling(time.Millisecond).Should(Equal(int64(1)))
			// The second delivery waits for the limit on the clock.
			g.Eventually(fake.HasWaiters).WithTimeout(10 * time.Second).WithPolling(time.Millisecond).Should(BeTrue())
			g.Expect(engine.Stop(ctx)).To(Succeed())
			g.Expect(hits.Load()).To(Equal(int64(1)), "an attempt started after Stop")
			active, err := storetest.Active(ctx, db, store.AllPartitions())
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(active).To(HaveLen(1))
			g.Expect(active[0].State).To(Equal(store.Pending))
		})
	}
}

// slowHold holds back the next delivery update once armed (a worker's hold
// of a delivery), until open is opened, and says when it is entered.
type slowHold struct {
	store.Store
	armed   atomic.Bool
	entered chan struct{}
	open    *gate
}

func (s *slowHold) UpdateDeliveries(ctx context.Context, deliveries []store.Delivery) error {
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		<-s.open.ch
	}
	return s.Store.UpdateDeliveries(ctx, deliveries)
}

// TestReleaseDuringAStrictHoldEnds: a worker that holds a delivery of a
// paused Strict endpoint, which is unpaused meanwhile, releases what it held
// without waiting for a partition's Release under way, which waits for the
// workers: both end, and the delivery is attempted once the partition is
// taken again.
func TestReleaseDuringAStrictHoldEnds(t *testing.T) {
	g := NewWithT(t)
	receiver := testreceiver.NewHeldOrdered(t, nil)
	db, err := store.OpenBolt(filepath.Join(t.TempDir(), "hookrelay.db"))
	g.Expect(err).NotTo(HaveOccurred())
	slow := &slowHold{Store: db, entered: make(chan struct{}), open: newGate(t)}
	route := strictRoute(receiver.URL, nil)
	engine := startEngineOn(t, slow, route, clock.RealClock{}, noStatus{})

	ids := publishEvents(t, engine, 0, 2) // the first waits at the receiver, the second in line
	slow.armed.Store(true)
	paused := route
	paused.Paused = true
	g.Expect(engine.SetTable(t.Context(), tableOf(t, paused))).To(Succeed())
	receiver.Release()
	g.Eventually(slow.entered).WithTimeout(10*time.Second).Should(BeClosed(), "a worker holding a delivery of the paused endpoint")
	g.Expect(engine.SetTable(t.Context(), tableOf(t, route))).To(Succeed()) // unpaused before the hold is stored

	released := make(chan struct{})
	go func() {
		engine.Release(store.AllPartitions())
		close(released)
	}()
	g.Eventually(func() bool { return engine.ledger.owns(route.Namespace, route.Name) }).Should(BeFalse())
	slow.open.open()
	g.Eventually(released).WithTimeout(10*time.Second).Should(BeClosed(), "Release, waiting for the worker that held a delivery")

	_, _, err = engine.Acquire(t.Context(), store.AllPartitions())
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(receiver.Delivered).WithTimeout(10 * time.Second).Should(Equal(ids))
}
