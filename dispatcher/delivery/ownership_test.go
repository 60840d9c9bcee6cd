package delivery

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/hookrelay/hookrelay/dispatcher/signing"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/dispatcher/store/storetest"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

// byReplica is a receiver that records, per event id, which replica sent
// each request (the prefix of its signature header), and can hold requests.
// Events are told apart by their webhook-id header.
type byReplica struct {
	*httptest.Server
	mu      sync.Mutex
	sent    map[string][]string
	arrived int
	gate    chan struct{}
}

func newByReplica(t *testing.T, held bool) *byReplica {
	r := &byReplica{sent: map[string][]string{}}
	if held {
		r.gate = make(chan struct{})
	}
	r.Server = httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.arrived++
		gate := r.gate
		r.mu.Unlock()
		if gate != nil {
			<-gate
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, replica := range []string{"A", "B"} {
			if req.Header.Get(replica+"-Signature") != "" {
				id := req.Header.Get("webhook-id")
				r.sent[id] = append(r.sent[id], replica)
			}
		}
	}))
	t.Cleanup(func() {
		r.open()
		r.Close()
	})
	return r
}

func (r *byReplica) open() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gate != nil {
		close(r.gate)
		r.gate = nil
	}
}

func (r *byReplica) waiting() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.arrived
}

func (r *byReplica) senders() map[string][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]string{}
	for id, replicas := range r.sent {
		out[id] = slices.Clone(replicas)
	}
	return out
}

// wakeTo hands wake-ups to the other replica, as NOTIFY does.
type wakeTo struct{ engine **Engine }

func (w wakeTo) Wake(_ context.Context, deliveries []store.Delivery) error {
	(*w.engine).Wake(deliveries)
	return nil
}

// twoEndpoints routes every event to endpoints "first" and "second" in
// namespace ns, whose names are picked to fall in different partitions.
func twoEndpoints(t *testing.T, first, second string) (*routes.Table, [2]int) {
	t.Helper()
	return twoEndpointsWith(t, first, second, nil)
}

// twoEndpointsWith is twoEndpoints with a change to both routes.
func twoEndpointsWith(t *testing.T, first, second string, change func(*routes.Endpoint)) (*routes.Table, [2]int) {
	t.Helper()
	names := [2]string{"first", "second"}
	for i := 0; store.Partition("ns", names[0]) == store.Partition("ns", names[1]); i++ {
		names[1] = fmt.Sprintf("second-%d", i)
	}
	routeEntries, keyEntries := map[string][]byte{}, map[string][]byte{}
	for i, url := range []string{first, second} {
		route := strictRoute(url, func(route *routes.Endpoint) {
			route.Name, route.UID, route.Ordering, route.MaxInFlight = names[i], "uid-"+names[i], "", 4
			if change != nil {
				change(route)
			}
		})
		data, err := routes.EncodeEndpoint(route)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := routes.EncodeKeys(routes.KeysEntry{Keys: []routes.Key{{Secret: whsec.Encode(make([]byte, 33))}}})
		if err != nil {
			t.Fatal(err)
		}
		routeEntries[routes.EntryKey("ns", names[i])], keyEntries[routes.EntryKey("ns", names[i])] = data, keys
	}
	table, problems := routes.Build(routeEntries, keyEntries)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	return table, [2]int{store.Partition("ns", names[0]), store.Partition("ns", names[1])}
}

// replicaEngine is an engine on a shared store, signing with its own
// header prefix so that receivers can tell which replica sent a request.
func replicaEngine(t *testing.T, db store.Store, prefix string, table *routes.Table, waker Waker) *Engine {
	t.Helper()
	engine, err := New(t.Context(), Options{
		Store: db, Status: noStatus{}, Metrics: NewMetrics(prometheus.NewRegistry()), Log: logr.Discard(), Clock: clock.RealClock{},
		Attempt: &Attempter{Client: NewHTTPClient(nil), Signer: signing.Signer{Prefix: prefix}}, MaxRetryAfter: time.Minute, Waker: waker, RecordWriters: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.SetTable(t.Context(), table); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := engine.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return engine
}

func openShared(t *testing.T) store.Store {
	t.Helper()
	db, err := store.OpenBolt(filepath.Join(t.TempDir(), "shared.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	return db
}

func publishTo(t *testing.T, engines []*Engine, events int) []string {
	t.Helper()
	var ids []string
	for i := range events {
		id := fmt.Sprintf("evt_%03d", i)
		if _, err := engines[i%len(engines)].Publish(t.Context(), "ns", Incoming{ID: id, Type: "login.created", Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// onceBy is what a receiver should have got: each event once, from one
// replica.
func onceBy(ids []string, replica string) map[string][]string {
	out := map[string][]string{}
	for _, id := range ids {
		out[id] = []string{replica}
	}
	return out
}

// replicas are two engines, A and B, on one store, waking each other, with
// receivers for the endpoints "first" and "second".
type replicas struct {
	first, second *byReplica
	a, b          *Engine
	db            store.Store
	partitions    [2]int
}

// startReplicas starts two replicas owning nothing yet; heldFirst holds the
// first endpoint's requests until its receiver opens.
func startReplicas(t *testing.T, heldFirst bool) replicas {
	r := replicas{first: newByReplica(t, heldFirst), second: newByReplica(t, false), db: openShared(t)}
	var table *routes.Table
	table, r.partitions = twoEndpoints(t, r.first.URL, r.second.URL)
	r.a = replicaEngine(t, r.db, "A", table, wakeTo{&r.b})
	r.b = replicaEngine(t, r.db, "B", table, wakeTo{&r.a})
	return r
}

// TestOnlyTheOwnerAttempts: two replicas on one store, each owning one
// endpoint's partition. Events published to either are delivered once per
// endpoint, each endpoint's by its owner alone: the other hands what it
// stored over with a wake-up.
func TestOnlyTheOwnerAttempts(t *testing.T) {
	g := NewWithT(t)
	r := startReplicas(t, false)
	first, second, a, b, partitions := r.first, r.second, r.a, r.b, r.partitions
	others := slices.DeleteFunc(store.AllPartitions(), func(p int) bool { return p == partitions[0] })
	_, _, err := a.Acquire(t.Context(), []int{partitions[0]})
	g.Expect(err).NotTo(HaveOccurred())
	_, _, err = b.Acquire(t.Context(), others)
	g.Expect(err).NotTo(HaveOccurred())

	ids := publishTo(t, []*Engine{a, b}, 40)
	g.Eventually(first.senders).WithTimeout(10 * time.Second).Should(Equal(onceBy(ids, "A")))
	g.Eventually(second.senders).WithTimeout(10 * time.Second).Should(Equal(onceBy(ids, "B")))
}

// TestReleaseHandsOverInFlightAttemptsOnce: a replica giving a partition up
// lets the attempts in flight end and stores them before Release returns;
// the next owner takes the rest from the store and sends nothing twice. A
// repeated wake-up of a delivery already sent is ignored.
func TestReleaseHandsOverInFlightAttemptsOnce(t *testing.T) {
	g := NewWithT(t)
	r := startReplicas(t, true)
	first, second, a, b, db, partitions := r.first, r.second, r.a, r.b, r.db, r.partitions
	_, _, err := a.Recover(t.Context())
	g.Expect(err).NotTo(HaveOccurred())

	ids := publishTo(t, []*Engine{a}, 12)
	// Four attempts (the endpoint's maxInFlight) wait at the receiver.
	g.Eventually(first.waiting).WithTimeout(10 * time.Second).Should(Equal(4))
	released := make(chan struct{})
	go func() {
		a.Release([]int{partitions[0]})
		close(released)
	}()
	// The attempts held at the receiver end once Release has begun.
	g.Eventually(func() bool { return a.ledger.owns("ns", "first") }).WithTimeout(10 * time.Second).Should(BeFalse())
	first.open()
	<-released
	stored, err := storetest.Active(t.Context(), db, []int{partitions[0]})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(stored).To(HaveLen(len(ids)-4), "the attempts in flight are stored as succeeded when Release returns")
	_, _, err = b.Acquire(t.Context(), []int{partitions[0]})
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(first.senders).WithTimeout(10 * time.Second).Should(HaveLen(len(ids)))
	for id, replicas := range first.senders() {
		g.Expect(replicas).To(HaveLen(1), "event %s sent by %v", id, replicas)
	}
	g.Eventually(second.senders).WithTimeout(10 * time.Second).Should(Equal(onceBy(ids, "A")))

	// A late wake-up of a delivery the owner already sent does nothing.
	sent, err := db.DeliveriesOf(t.Context(), "ns", ids[len(ids)-1])
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(b.ledger.inEngine).WithTimeout(10 * time.Second).Should(BeZero())
	for _, delivery := range sent {
		delivery.State = store.Pending
		b.Wake([]store.Delivery{delivery})
	}
	g.Expect(b.ledger.inEngine()).To(BeZero())
}

// lostWake is a wake-up that never arrives.
type lostWake struct{}

func (lostWake) Wake(context.Context, []store.Delivery) error { return nil }

// TestResyncFindsWhatNoWakeUpAnnounced: a delivery stored by a replica
// whose wake-up was lost, and one held although its endpoint is
// deliverable (the accepting replica read the health just before a
// re-enable), are delivered by the owner's next re-read.
func TestResyncFindsWhatNoWakeUpAnnounced(t *testing.T) {
	g := NewWithT(t)
	first, second := newByReplica(t, false), newByReplica(t, false)
	table, partitions := twoEndpoints(t, first.URL, second.URL)
	db := openShared(t)
	a := replicaEngine(t, db, "A", table, lostWake{})
	b := replicaEngine(t, db, "B", table, lostWake{})
	_, _, err := b.Acquire(t.Context(), partitions[:])
	g.Expect(err).NotTo(HaveOccurred())
	_, err = db.Accept(t.Context(), store.Event{Namespace: "ns", ID: "evt_held", Type: "login.created", Data: []byte(`{}`), AcceptedAt: time.Now().UTC()},
		[]store.Target{{Endpoint: "first", Held: true}}, time.Now().Add(-time.Hour))
	g.Expect(err).NotTo(HaveOccurred())
	ids := publishTo(t, []*Engine{a}, 3)
	g.Expect(first.senders()).To(BeEmpty())

	g.Expect(b.Resync(t.Context())).To(Succeed())
	g.Eventually(first.senders).WithTimeout(10 * time.Second).Should(Equal(onceBy(append(ids, "evt_held"), "B")))
	g.Eventually(second.senders).WithTimeout(10 * time.Second).Should(Equal(onceBy(ids, "B")))
}
