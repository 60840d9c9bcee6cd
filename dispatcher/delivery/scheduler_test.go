package delivery

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hookrelay/hookrelay/dispatcher/signing"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/dispatcher/store/storetest"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

// The tests below move a fake clock and poll for the effect. A step that
// does not reach a timer's time leaves the timer waiting on the clock (the
// fake clock fires due timers within Step), which is how "not before" is
// checked without waiting.

var clockStart = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// hitTimes is a loopback receiver that answers with answer and records the
// fake clock's time of each request.
type hitTimes struct {
	mu    sync.Mutex
	times []time.Time
}

func (h *hitTimes) serve(t *testing.T, fake *clocktesting.FakeClock, answer func(n int, w http.ResponseWriter)) string {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.mu.Lock()
		h.times = append(h.times, fake.Now())
		n := len(h.times)
		h.mu.Unlock()
		answer(n, w)
	}))
	t.Cleanup(server.Close)
	return server.URL
}

func (h *hitTimes) all() []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.times...)
}

func (h *hitTimes) count() int { return len(h.all()) }

// stepBelow moves the clock to just before a wait ends, checks that the
// waiters are still waiting, and then moves it the rest of the way.
func stepBelow(t *testing.T, fake *clocktesting.FakeClock, wait time.Duration, waiters int) {
	t.Helper()
	NewWithT(t).Eventually(fake.Waiters).WithTimeout(10*time.Second).WithPolling(time.Millisecond).Should(Equal(waiters), "waiting on the clock")
	fake.Step(wait - time.Millisecond)
	if got := fake.Waiters(); got != waiters {
		t.Fatalf("%d of %d waits ended a millisecond before their time", waiters-got, waiters)
	}
	fake.Step(time.Millisecond)
}

// TestAttemptSpacingFollowsTheSchedule: each retry starts exactly its step
// of the schedule after the previous attempt ended, not a millisecond
// before, for unordered and Strict endpoints.
func TestAttemptSpacingFollowsTheSchedule(t *testing.T) {
	for _, ordering := range []string{"", routes.OrderingStrict} {
		t.Run(ordering+"ordering", func(t *testing.T) {
			g := NewWithT(t)
			fake := clocktesting.NewFakeClock(clockStart)
			var hits hitTimes
			url := hits.serve(t, fake, func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusInternalServerError) })
			noJitter := int32(0)
			route := strictRoute(url, func(route *routes.Endpoint) {
				route.Ordering, route.JitterPercent = ordering, &noJitter
				route.RetrySchedule = []metav1.Duration{{Duration: 10 * time.Second}, {Duration: time.Minute}}
			})
			engine := startEngine(t, filepath.Join(t.TempDir(), "hookrelay.db"), route, fake)
			publishEvents(t, engine, 0, 1)
			g.Eventually(hits.count).WithTimeout(10 * time.Second).WithPolling(time.Millisecond).Should(Equal(1))
			stepBelow(t, fake, 10*time.Second, 1)
			g.Eventually(hits.count).WithTimeout(10 * time.Second).WithPolling(time.Millisecond).Should(Equal(2))
			stepBelow(t, fake, time.Minute, 1)
			g.Eventually(hits.count).WithTimeout(10 * time.Second).WithPolling(time.Millisecond).Should(Equal(3))
			g.Expect(hits.all()).To(Equal([]time.Time{clockStart, clockStart.Add(10 * time.Second), clockStart.Add(70 * time.Second)}))
		})
	}
}

// TestTooManyRequestsPausesTheEndpoint: a 429 with Retry-After holds every
// delivery of the endpoint, not only the one that got it, until that time.
func TestTooManyRequestsPausesTheEndpoint(t *testing.T) {
	g := NewWithT(t)
	fake := clocktesting.NewFakeClock(clockStart)
	var hits hitTimes
	url := hits.serve(t, fake, func(n int, w http.ResponseWriter) {
		if n == 1 {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	route := strictRoute(url, func(route *routes.Endpoint) {
		route.Ordering, route.MaxInFlight = "", 1
		route.RetrySchedule = []metav1.Duration{{Duration: time.Second}}
	})
	engine := startEngine(t, filepath.Join(t.TempDir(), "hookrelay.db"), route, fake)
	publishEvents(t, engine, 0, 1)
	g.Eventually(hits.count).WithTimeout(10 * time.Second).WithPolling(time.Millisecond).Should(Equal(1))
	// The second event waits for the pause; the first one's retry waits
	// for its Retry-After, longer than its step.
	publishEvents(t, engine, 1, 2)
	stepBelow(t, fake, 30*time.Second, 2)
	g.Eventually(hits.count).WithTimeout(10 * time.Second).WithPolling(time.Millisecond).Should(Equal(3))
	resumed := clockStart.Add(30 * time.Second)
	g.Expect(hits.all()).To(Equal([]time.Time{clockStart, resumed, resumed}))
}

// TestRateLimitAdmitsItsBurst: a rate limit admits its burst at once, and
// the next attempt exactly when the bucket has a token again.
func TestRateLimitAdmitsItsBurst(t *testing.T) {
	g := NewWithT(t)
	fake := clocktesting.NewFakeClock(clockStart)
	p := &pacer{scheduler: newScheduler(fake)}
	p.setLimit(&routes.RateLimit{PerSecond: 2, Burst: 3})
	stopping := make(chan struct{})
	for i := range 3 {
		if !p.wait(stopping) {
			t.Fatalf("attempt %d of the burst refused", i+1)
		}
	}
	g.Expect(fake.HasWaiters()).To(BeFalse(), "an attempt of the burst waited")
	admitted := make(chan bool, 1)
	go func() { admitted <- p.wait(stopping) }()
	stepBelow(t, fake, 500*time.Millisecond, 1)
	g.Eventually(admitted).WithTimeout(10 * time.Second).Should(Receive(BeTrue()))

	// A wait cut short by the stop gives its token back.
	go func() { admitted <- p.wait(stopping) }()
	g.Eventually(fake.HasWaiters).WithTimeout(10 * time.Second).WithPolling(time.Millisecond).Should(BeTrue())
	close(stopping)
	g.Eventually(admitted).WithTimeout(10 * time.Second).Should(Receive(BeFalse()))
}

// TestPauseHoldsUntilItsTime: a paused endpoint's attempts wait until the
// pause ends, and a longer pause taken meanwhile is waited for too.
func TestPauseHoldsUntilItsTime(t *testing.T) {
	g := NewWithT(t)
	fake := clocktesting.NewFakeClock(clockStart)
	p := &pacer{scheduler: newScheduler(fake)}
	p.pause(clockStart.Add(10 * time.Second))
	admitted := make(chan bool, 1)
	go func() { admitted <- p.wait(make(chan struct{})) }()
	g.Eventually(fake.HasWaiters).WithTimeout(10 * time.Second).WithPolling(time.Millisecond).Should(BeTrue())
	p.pause(clockStart.Add(20 * time.Second))
	p.pause(clockStart.Add(15 * time.Second)) // a shorter one does not shorten it
	stepBelow(t, fake, 10*time.Second, 1)
	stepBelow(t, fake, 10*time.Second, 1)
	g.Eventually(admitted).WithTimeout(10 * time.Second).Should(Receive(BeTrue()))
}

// TestStopCancelsAttemptsInFlight: a drain that runs out of time cancels
// the attempts in flight; their deliveries stay pending, with no attempt
// counted against the receiver, for the next start.
func TestStopCancelsAttemptsInFlight(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	arrived, cancelled := make(chan struct{}, 1), make(chan struct{})
	server := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		// Read to the end, so that the server sees the client go away.
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			t.Error(err)
		}
		arrived <- struct{}{}
		<-r.Context().Done()
		close(cancelled)
	}))
	t.Cleanup(server.Close)
	db, err := store.OpenBolt(filepath.Join(t.TempDir(), "hookrelay.db"))
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { g.Expect(db.Close()).To(Succeed()) })
	engine, err := New(ctx, testOptions(db, noStatus{}, clocktesting.NewFakeClock(clockStart)))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(engine.SetTable(ctx, tableOf(t, strictRoute(server.URL, func(route *routes.Endpoint) { route.Ordering = "" })))).To(Succeed())
	_, _, err = engine.Recover(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	publishEvents(t, engine, 0, 1)
	g.Eventually(arrived).WithTimeout(10 * time.Second).Should(Receive())

	drain, cancel := context.WithCancel(ctx)
	cancel() // the drain's time is up at once
	g.Expect(engine.Stop(drain)).To(MatchError(context.Canceled))
	g.Eventually(cancelled).WithTimeout(10 * time.Second).Should(BeClosed())
	active, err := storetest.Active(ctx, db, store.AllPartitions())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(active).To(HaveLen(1))
	g.Expect(active[0].State).To(Equal(store.Pending))
	g.Expect(active[0].Attempts).To(Equal(0))
}

// TestRotationGraceEndsOnTheClock: during a rotation's grace period a
// delivery verifies with the previous key and the new one; from the grace
// period's end on the engine's clock, only with the new one.
func TestRotationGraceEndsOnTheClock(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	fake := clocktesting.NewFakeClock(clockStart)
	type signed struct {
		header http.Header
		body   []byte
	}
	received := make(chan signed, 2)
	server := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		received <- signed{r.Header.Clone(), body}
	}))
	t.Cleanup(server.Close)
	oldKey, newKey := whsec.Encode([]byte("previous key of 24 bytes")), whsec.Encode([]byte("the new key of 24 bytes."))
	graceEnds := clockStart.Add(10 * time.Second)
	engine := startEngine(t, filepath.Join(t.TempDir(), "hookrelay.db"), strictRoute(server.URL, nil), fake)
	g.Expect(engine.SetTable(ctx, tableWithKeys(t, strictRoute(server.URL, nil),
		routes.Key{Secret: newKey}, routes.Key{Secret: oldKey, ExpiresAt: &graceEnds}))).To(Succeed())

	verifies := func(delivery signed, key string) error {
		return signing.VerifyPrefixed(delivery.header, "Test", key, delivery.body, fake.Now())
	}
	publishEvents(t, engine, 0, 1)
	var during signed
	g.Eventually(received).WithTimeout(10 * time.Second).Should(Receive(&during))
	g.Expect(verifies(during, oldKey)).To(Succeed())
	g.Expect(verifies(during, newKey)).To(Succeed())

	fake.SetTime(graceEnds)
	publishEvents(t, engine, 1, 2)
	var after signed
	g.Eventually(received).WithTimeout(10 * time.Second).Should(Receive(&after))
	g.Expect(verifies(after, oldKey)).NotTo(Succeed())
	g.Expect(verifies(after, newKey)).To(Succeed())
}

// TestSchedulerKeyHasOneTimer: a new time for a key replaces its timer,
// so a delivery rescheduled is attempted once, at its new time; a
// cancelled key fires never.
func TestSchedulerKeyHasOneTimer(t *testing.T) {
	g := NewWithT(t)
	fake := clocktesting.NewFakeClock(clockStart)
	s := newScheduler(fake)
	fired := make(chan string, 10)
	s.at("dlv_1", clockStart.Add(time.Minute), func() { fired <- "first" })
	s.at("dlv_1", clockStart.Add(2*time.Minute), func() { fired <- "second" })
	s.at("dlv_2", clockStart.Add(time.Minute), func() { fired <- "cancelled" })
	s.cancel("dlv_2")
	g.Expect(fake.Waiters()).To(Equal(1), "timers on the clock")
	fake.Step(3 * time.Minute)
	g.Eventually(fired).WithTimeout(10 * time.Second).Should(Receive(Equal("second")))
}
