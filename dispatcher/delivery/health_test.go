package delivery

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/utils/clock"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
)

// TestTrackerDisables: an endpoint is disabled by the failure that reaches
// its threshold, not one before; by a 410 Gone at once unless it keeps
// endpoints on Gone; never with a threshold of 0; and a success in between
// starts the count over.
func TestTrackerDisables(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	type outcome struct {
		success, gone bool
	}
	failure, gone, success := outcome{}, outcome{gone: true}, outcome{success: true}
	cases := []struct {
		name       string
		endpoint   routes.Route
		outcomes   []outcome
		changes    []Change
		failures   int
		disabled   bool
		noEndpoint bool
	}{
		{
			name: "threshold reached", endpoint: routes.Route{Endpoint: routes.Endpoint{AutoDisableAfter: 3}},
			outcomes: []outcome{failure, failure, failure, failure},
			changes:  []Change{ChangeFailed, ChangeFailed, ChangeDisabled, ChangeFailed}, failures: 4, disabled: true,
		},
		{
			name: "success starts over", endpoint: routes.Route{Endpoint: routes.Endpoint{AutoDisableAfter: 3}},
			outcomes: []outcome{failure, failure, success, failure, failure},
			changes:  []Change{ChangeFailed, ChangeFailed, ChangeDelivered, ChangeFailed, ChangeFailed}, failures: 2,
		},
		{
			name: "gone disables at once", endpoint: routes.Route{Endpoint: routes.Endpoint{AutoDisableAfter: 3}},
			outcomes: []outcome{gone}, changes: []Change{ChangeDisabled}, failures: 1, disabled: true,
		},
		{
			name: "gone kept", endpoint: routes.Route{Endpoint: routes.Endpoint{AutoDisableAfter: 3, KeepOnGone: true}},
			outcomes: []outcome{gone, gone, gone}, changes: []Change{ChangeFailed, ChangeFailed, ChangeDisabled}, failures: 3, disabled: true,
		},
		{
			name: "threshold 0 never disables", endpoint: routes.Route{},
			outcomes: []outcome{gone, failure, failure, failure}, changes: []Change{ChangeFailed, ChangeFailed, ChangeFailed, ChangeFailed}, failures: 4,
		},
		{
			name: "no longer routed never disables", noEndpoint: true,
			outcomes: []outcome{gone, failure}, changes: []Change{ChangeFailed, ChangeFailed}, failures: 2,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker(nil)
			endpoint := &tc.endpoint
			if tc.noEndpoint {
				endpoint = nil
			}
			var health store.Health
			for i, o := range tc.outcomes {
				var change Change
				if o.success {
					health, change = tr.succeeded("ns/a", at)
				} else {
					health, change = tr.failed(endpoint, "ns/a", at, "HTTP 500", o.gone)
				}
				if change != tc.changes[i] {
					t.Errorf("outcome %d: change %q, want %q", i+1, change, tc.changes[i])
				}
			}
			if health.ConsecutiveFailures != tc.failures || health.Disabled != tc.disabled || tr.disabled("ns/a") != tc.disabled {
				t.Errorf("%d failures, disabled %v (tracker: %v); want %d, %v", health.ConsecutiveFailures, health.Disabled, tr.disabled("ns/a"), tc.failures, tc.disabled)
			}
			if tc.disabled && (health.DisabledAt == nil || !health.DisabledAt.Equal(at)) {
				t.Errorf("disabledAt %v, want %v", health.DisabledAt, at)
			}
		})
	}
}

// TestTrackerReenables: a new re-enable token enables a disabled endpoint
// and starts its count over; the same token again changes nothing; a token
// on an enabled endpoint is stored without a Reenabled change.
func TestTrackerReenables(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	tr := newTracker([]store.Health{{Endpoint: "ns/a", UID: "uid-1", ConsecutiveFailures: 5, Disabled: true, DisabledAt: &at}})
	health, changed, change := tr.reenable("ns/a", "t1")
	if !changed || change != ChangeReenabled || health.Disabled || health.ConsecutiveFailures != 0 || health.DisabledAt != nil || tr.disabled("ns/a") {
		t.Fatalf("first token: changed %v, change %q, health %+v", changed, change, health)
	}
	if _, changed, _ := tr.reenable("ns/a", "t1"); changed {
		t.Fatal("the same token changed the record again")
	}
	if _, changed, change := tr.reenable("ns/a", "t2"); !changed || change != "" {
		t.Fatalf("a token on an enabled endpoint: changed %v, change %q", changed, change)
	}
}

// TestTrackerAdopts: a record left by an endpoint of the same name and
// another UID starts over; the first UID is adopted without a reset.
func TestTrackerAdopts(t *testing.T) {
	tr := newTracker([]store.Health{{Endpoint: "ns/a", ConsecutiveFailures: 2}})
	if health, stale := tr.adopt("ns/a", "uid-1"); stale || health.UID != "uid-1" || health.ConsecutiveFailures != 2 {
		t.Fatalf("first UID: stale %v, health %+v", stale, health)
	}
	if health, stale := tr.adopt("ns/a", "uid-2"); !stale || health.UID != "uid-2" || health.ConsecutiveFailures != 0 {
		t.Fatalf("new UID: stale %v, health %+v", stale, health)
	}
}

// orderedStatus notes the failure counts reported for an endpoint's
// failed deliveries, in the order they reach the status sink.
type orderedStatus struct {
	noStatus
	mu     sync.Mutex
	counts []int
}

func (s *orderedStatus) HealthChanged(_ *routes.Route, health store.Health, change Change) {
	if change != ChangeFailed {
		return // the endpoint's first sight
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts = append(s.counts, health.ConsecutiveFailures)
}

// TestConcurrentAttemptsReportHealthInOrder: an endpoint's attempts that
// fail at once, many in flight, reach the status sink and the store in the
// order their failures were counted, so that neither is left with an older
// count (or an older "not disabled") than the last attempt's.
func TestConcurrentAttemptsReportHealthInOrder(t *testing.T) {
	g := NewWithT(t)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(receiver.Close)
	route := strictRoute(receiver.URL, func(route *routes.Endpoint) {
		route.Ordering, route.MaxInFlight, route.RetrySchedule = "", 16, nil
	})
	status := &orderedStatus{}
	engine := startEngineWith(t, filepath.Join(t.TempDir(), "hookrelay.db"), route, clock.RealClock{}, status)
	const events = 300
	publishEvents(t, engine, 0, events)

	g.Eventually(func() int {
		status.mu.Lock()
		defer status.mu.Unlock()
		return len(status.counts)
	}).WithTimeout(30 * time.Second).Should(Equal(events))
	status.mu.Lock()
	reported := slices.Clone(status.counts)
	status.mu.Unlock()
	for i := 1; i < len(reported); i++ {
		if reported[i] <= reported[i-1] {
			t.Fatalf("failure count %d reported after %d (report %d of %d)", reported[i], reported[i-1], i+1, len(reported))
		}
	}
	g.Eventually(func() ([]store.Health, error) { return engine.Store.Healths(t.Context()) }).Should(ConsistOf(
		HaveField("ConsecutiveFailures", events)), "the stored health after the last failure")
}

// gate is a channel that a test closes once, and that is closed at the
// test's end in any case, so that nothing waits on it for ever.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{ch: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// slowRecords holds a store's attempt records back until open is opened:
// a writer's ordinary delay, made long.
type slowRecords struct {
	store.Store
	open *gate
}

func (s *slowRecords) RecordAttempts(ctx context.Context, records []store.AttemptRecord) ([]bool, error) {
	<-s.open.ch
	return s.Store.RecordAttempts(ctx, records)
}

// TestReenableIsStoredAfterEarlierRecords: an endpoint re-enabled while the
// record of the attempt that disabled it is still on its way to the store
// stays enabled there (the record does not overwrite the re-enable with its
// older Disabled), and the next event is delivered, not held.
func TestReenableIsStoredAfterEarlierRecords(t *testing.T) {
	g := NewWithT(t)
	var succeed atomic.Bool
	var received atomic.Int64
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		received.Add(1)
		if !succeed.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(receiver.Close)
	db, err := store.OpenBolt(filepath.Join(t.TempDir(), "hookrelay.db"))
	g.Expect(err).NotTo(HaveOccurred())
	slow := &slowRecords{Store: db, open: newGate(t)}
	route := strictRoute(receiver.URL, func(route *routes.Endpoint) {
		route.Ordering, route.RetrySchedule, route.AutoDisableAfter = "", nil, 1
	})
	engine := startEngineOn(t, slow, route, clock.RealClock{}, noStatus{})
	id := routes.ID("ns", "ordered")

	publishEvents(t, engine, 0, 1) // fails for good, which disables the endpoint
	g.Eventually(func() bool { return engine.health.disabled(id) }).WithTimeout(10 * time.Second).Should(BeTrue())
	reenabled := route
	reenabled.ReenableToken = "token-1"
	swapped := make(chan error, 1)
	go func() { swapped <- engine.SetTable(t.Context(), tableOf(t, reenabled)) }()
	g.Eventually(func() bool { return engine.health.disabled(id) }).Should(BeFalse())
	slow.open.open() // the disabling attempt's record reaches the store now
	g.Eventually(swapped).WithTimeout(10 * time.Second).Should(Receive(BeNil()))
	engine.waitWritten([]int{store.Partition("ns", "ordered")})

	healths, err := db.Healths(t.Context())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(healths).To(ConsistOf(And(
		HaveField("Endpoint", id), HaveField("Disabled", false), HaveField("ReenableToken", "token-1"),
	)), "the stored health after the re-enable")
	succeed.Store(true)
	accepted, err := engine.Publish(t.Context(), "ns", Incoming{ID: "evt_after", Type: "login.created", Data: []byte(`{}`)})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(accepted.Deliveries).To(ConsistOf(HaveField("State", store.Pending)), "a delivery published after the re-enable")
	g.Eventually(received.Load).WithTimeout(10 * time.Second).Should(Equal(int64(2)))
}
