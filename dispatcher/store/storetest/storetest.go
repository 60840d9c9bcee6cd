// Package storetest is the contract of store.Store: one suite that every
// implementation runs against a real instance of itself, so that the
// dispatcher behaves the same on each. It uses the interface only.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/hookrelay/hookrelay/dispatcher/store"
)

// Open opens the store kept in one place (a file, a database). Every call
// opens the same data, so that a case can close the store and open it again.
type Open func(t *testing.T) store.Store

// Run runs the contract. fresh makes a new, empty place and says how to open
// it; it is called once per case, from parallel subtests.
func Run(t *testing.T, fresh func(t *testing.T) Open) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, fresh(t))
		})
	}
}

var cases = []struct {
	name string
	run  func(t *testing.T, open Open)
}{
	{"AcceptStoresTheEventAndFansOut", testAcceptFansOut},
	{"AcceptDedupesWithinTheWindow", testAcceptDedupes},
	{"DeliveryIDsSortInAcceptOrder", testDeliveryIDsSort},
	{"ActiveListsOnlyThePartitionsAskedFor", testActiveByPartition},
	{"ActivePagesListTheActiveDeliveries", testActivePages},
	{"EventsReadsTheEventsOfDeliveries", testEvents},
	{"HeldDeliveriesWaitUntilReleased", testHeldAndReleased},
	{"AcceptHoldsDisabledEndpoints", testAcceptHoldsDisabledEndpoints},
	{"AttemptsAreRecordedAndListedInOrder", testAttempts},
	{"StaleAttemptRecordsAreSkipped", testStaleRecordsAreSkipped},
	{"AttemptRecordBatchAppliesTheCurrentOnes", testRecordBatchAppliesTheCurrentOnes},
	{"AttemptRecordBatchStoresTheLastHealth", testRecordBatchStoresTheLastHealth},
	{"ConcurrentRecordsOfOneAttemptApplyOnce", testConcurrentRecordsApplyOnce},
	{"HealthIsKeptPerEndpoint", testHealth},
	{"ChangeDeliveriesIsCompareAndSet", testChangeIsCompareAndSet},
	{"ChangeDeliveriesAppliesManyAtOnce", testChangeMany},
	{"ConcurrentChangesOfOneReadingApplyOnce", testConcurrentChanges},
	{"EndpointDeliveriesPagesNewestFirst", testPagination},
	{"EndpointDeliveriesFilters", testFilters},
	{"PagesStayStableWhileDeliveriesArriveAndMove", testStablePages},
	{"SweepDeletesOnlyFinishedDeliveriesPastTheHorizon", testSweep},
	{"ConcurrentWritersCountExactly", testConcurrentWriters},
	{"EverythingSurvivesReopen", testReopen},
	{"WritesRacingCloseLandOrFailWithErrClosed", testWritesRacingClose},
	{"ClosedStoreRefusesEveryOperation", testClosed},
	{"MissingRecordsAreNotFound", testNotFound},
}

// base is the suite's "now": whole seconds, which every store keeps exactly.
var base = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

const (
	// eventType is the type of the events the suite sends.
	eventType = "order.paid"
	// shopA names endpoint a of namespace shop in its health record.
	shopA = "shop/a"
	uidA  = "uid-a"
)

// start opens a store that is closed when the test ends.
func start(t *testing.T, open Open) store.Store {
	t.Helper()
	s := open(t)
	t.Cleanup(func() {
		// Cases that close the store themselves leave it closed.
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("closing the store: %v", err)
		}
	})
	return s
}

// event is an event accepted at the given time. Its data has spaces that a
// store must keep: it is the producer's JSON, stored as is.
func event(namespace, id string, at time.Time) store.Event {
	return store.Event{
		Namespace: namespace, ID: id, Type: eventType, CreatedAt: at.Add(-time.Second),
		Data: json.RawMessage(`{"order": "` + id + `", "lines": [1, 2]}`), AcceptedAt: at,
	}
}

func targets(endpoints ...string) []store.Target {
	out := make([]store.Target, len(endpoints))
	for i, endpoint := range endpoints {
		out[i] = store.Target{Endpoint: endpoint}
	}
	return out
}

// accept accepts a new event, deduplicated over the day before it.
func accept(t *testing.T, s store.Store, e store.Event, to []store.Target) store.Accepted {
	t.Helper()
	accepted, err := s.Accept(t.Context(), e, to, e.AcceptedAt.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if accepted.Duplicate {
		t.Fatalf("event %s/%s was taken for a duplicate", e.Namespace, e.ID)
	}
	return accepted
}

// answer is a store's answer to a read.
type answer[T any] struct {
	value T
	err   error
}

func read[T any](value T, err error) answer[T] { return answer[T]{value, err} }

// must fails the test on an error and returns the value otherwise.
func (a answer[T]) must(t *testing.T) T {
	t.Helper()
	if a.err != nil {
		t.Fatal(a.err)
	}
	return a.value
}

// same reports a difference between what is wanted and what a store
// returned: times compare as instants, and an empty list as no list.
func same(t *testing.T, what string, want, got any) {
	t.Helper()
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", what, diff)
	}
}

// Active reads every pending and held delivery of the partitions, page
// after page, oldest (lowest id) first: what a test compares with the
// deliveries it expects active.
func Active(ctx context.Context, s store.Store, partitions []int) ([]store.Delivery, error) {
	var out []store.Delivery
	for after := ""; ; {
		page, next, err := s.ActivePage(ctx, partitions, after, 256)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if next == "" {
			return byID(out), nil
		}
		after = next
	}
}

// byID sorts deliveries by id, for lists whose order the contract leaves open.
func byID(deliveries []store.Delivery) []store.Delivery {
	out := slices.Clone(deliveries)
	slices.SortFunc(out, func(a, b store.Delivery) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func ids(deliveries []store.Delivery) []string {
	out := make([]string, len(deliveries))
	for i, delivery := range deliveries {
		out[i] = delivery.ID
	}
	return out
}

// finish returns the delivery as finished in the state, after attempts.
func finish(delivery store.Delivery, state store.State, attempts int, at time.Time) store.Delivery {
	delivery.State, delivery.Attempts, delivery.NextAttemptAt, delivery.UpdatedAt = state, attempts, time.Time{}, at
	return delivery
}

// update stores new states of deliveries.
func update(t *testing.T, s store.Store, deliveries ...store.Delivery) {
	t.Helper()
	if err := s.UpdateDeliveries(t.Context(), deliveries); err != nil {
		t.Fatal(err)
	}
}

// recordAttempts stores attempt records that must all apply.
func recordAttempts(t *testing.T, s store.Store, records ...store.AttemptRecord) {
	t.Helper()
	applied, err := s.RecordAttempts(t.Context(), records)
	if err != nil {
		t.Fatal(err)
	}
	for i, ok := range applied {
		if !ok {
			t.Fatalf("attempt record %d (delivery %s, attempt %d) was skipped", i, records[i].Delivery.ID, records[i].Delivery.Attempts)
		}
	}
}

// page reads one page of an endpoint's deliveries.
func page(t *testing.T, s store.Store, namespace, endpoint string, query store.DeliveryQuery) (deliveries []store.Delivery, next string) {
	t.Helper()
	deliveries, next, err := s.EndpointDeliveries(t.Context(), namespace, endpoint, query)
	if err != nil {
		t.Fatal(err)
	}
	return deliveries, next
}
