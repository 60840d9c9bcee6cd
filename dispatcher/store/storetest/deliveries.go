package storetest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/store"
)

// testHeldAndReleased: a delivery to a disabled or paused endpoint is stored
// held, with no due time, stays active, and moves held ⇄ pending as stored.
func testHeldAndReleased(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	accepted := accept(t, s, event("shop", "evt_1", base), []store.Target{{Endpoint: "open"}, {Endpoint: "paused", Held: true}})
	held := accepted.Deliveries[1]
	if held.State != store.Held || !held.NextAttemptAt.IsZero() {
		t.Fatalf("delivery to a paused endpoint = %+v, want held with no due time", held)
	}
	same(t, "stored held delivery", held, read(s.Delivery(ctx, held.ID)).must(t))
	same(t, "active deliveries with one held", accepted.Deliveries, read(Active(ctx, s, store.AllPartitions())).must(t))

	released := held
	released.State, released.NextAttemptAt, released.UpdatedAt, released.Interrupted = store.Pending, base.Add(time.Minute), base.Add(time.Minute), 1
	update(t, s, released)
	same(t, "released delivery", released, read(s.Delivery(ctx, held.ID)).must(t))
	same(t, "active deliveries after the release", []store.Delivery{accepted.Deliveries[0], released}, read(Active(ctx, s, store.AllPartitions())).must(t))

	heldAgain := released
	heldAgain.State, heldAgain.NextAttemptAt = store.Held, time.Time{}
	update(t, s, heldAgain)
	same(t, "delivery held again", heldAgain, read(s.Delivery(ctx, held.ID)).must(t))
	listed, _ := page(t, s, "shop", "paused", store.DeliveryQuery{State: store.Held})
	same(t, "held deliveries of the paused endpoint", []store.Delivery{heldAgain}, listed)
}

// testAttempts: attempts are stored as recorded, with their delivery's new
// state and their endpoint's health, and listed in attempt order; finished
// deliveries leave the active list.
func testAttempts(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	accepted := accept(t, s, event("shop", "evt_1", base), targets("flaky", "gone"))
	flaky, gone := accepted.Deliveries[0], accepted.Deliveries[1]

	// Eleven attempts, so that attempt 10 must sort after attempt 9.
	var attempts []store.Attempt
	var health store.Health
	for number := 1; number <= 11; number++ {
		at := base.Add(time.Duration(number) * time.Minute)
		flaky.Attempts, flaky.UpdatedAt, flaky.NextAttemptAt = number, at, at.Add(time.Minute)
		attempt := store.Attempt{DeliveryID: flaky.ID, Number: number, StartedAt: at, DurationMS: 12.25, StatusCode: 503, Response: "busy"}
		failedAt := at
		health = store.Health{Endpoint: "shop/flaky", UID: "uid-1", ConsecutiveFailures: number, LastFailure: &failedAt, LastFailureReason: "503"}
		if number == 11 {
			flaky = finish(flaky, store.Succeeded, number, at)
			attempt.StatusCode, attempt.Response = 200, "ok"
			health = store.Health{Endpoint: "shop/flaky", UID: "uid-1", LastSuccess: &failedAt, LastFailure: health.LastFailure, LastFailureReason: "503"}
		}
		attempts = append(attempts, attempt)
		recordAttempts(t, s, store.AttemptRecord{Delivery: flaky, Attempt: attempt, Health: &health})
	}
	same(t, "attempts in order", attempts, read(s.Attempts(ctx, flaky.ID)).must(t))
	same(t, "delivery after its attempts", flaky, read(s.Delivery(ctx, flaky.ID)).must(t))

	// Several deliveries in one call; no health given leaves health as it is.
	// A replayed delivery is pending again at its attempts so far.
	replayed := flaky
	replayed.State, replayed.NextAttemptAt = store.Pending, base.Add(time.Hour)
	update(t, s, replayed)
	gone = finish(gone, store.Failed, 1, base.Add(time.Hour))
	refused := store.Attempt{DeliveryID: gone.ID, Number: 1, StartedAt: base.Add(time.Hour), DurationMS: 0.5, Error: "connection refused"}
	retried := store.Attempt{DeliveryID: flaky.ID, Number: 12, StartedAt: base.Add(time.Hour), StatusCode: 204}
	retriedDelivery := finish(flaky, store.Succeeded, 12, base.Add(time.Hour))
	recordAttempts(t, s, store.AttemptRecord{Delivery: gone, Attempt: refused}, store.AttemptRecord{Delivery: retriedDelivery, Attempt: retried})
	same(t, "attempts of the failed delivery", []store.Attempt{refused}, read(s.Attempts(ctx, gone.ID)).must(t))
	same(t, "attempts after one more", append(attempts, retried), read(s.Attempts(ctx, flaky.ID)).must(t))
	same(t, "failed delivery", gone, read(s.Delivery(ctx, gone.ID)).must(t))
	same(t, "active deliveries once all finished", []store.Delivery(nil), read(Active(ctx, s, store.AllPartitions())).must(t))
	same(t, "healths", []store.Health{health}, read(s.Healths(ctx)).must(t))
}

// testHealth: PutHealth keeps one record per endpoint, the last one stored.
func testHealth(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	disabledAt := base.Add(time.Hour)
	first := store.Health{Endpoint: shopA, UID: uidA, ConsecutiveFailures: 4, LastFailure: &base, LastFailureReason: "timeout"}
	other := store.Health{Endpoint: "warehouse/a", UID: "uid-w", LastSuccess: &base}
	disabled := store.Health{Endpoint: shopA, UID: uidA, ConsecutiveFailures: 5, Disabled: true, DisabledAt: &disabledAt,
		LastFailure: &disabledAt, LastFailureReason: "503", ReenableToken: "token-1"}
	for _, health := range []store.Health{first, other, disabled} {
		if err := s.PutHealth(ctx, health); err != nil {
			t.Fatal(err)
		}
	}
	healths := read(s.Healths(ctx)).must(t)
	slices.SortFunc(healths, func(a, b store.Health) int { return strings.Compare(a.Endpoint, b.Endpoint) })
	same(t, "healths", []store.Health{disabled, other}, healths)
}

// testChangeIsCompareAndSet: a change applies only while the stored
// delivery has the expected state and attempts; a stale or missing one is
// skipped without failing the others.
func testChangeIsCompareAndSet(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	accepted := accept(t, s, event("shop", "evt_1", base), targets("a", "b", "c"))
	finished := make([]store.Delivery, 0, len(accepted.Deliveries))
	for _, delivery := range accepted.Deliveries {
		finished = append(finished, finish(delivery, store.Failed, 3, base.Add(time.Hour)))
	}
	update(t, s, finished...)
	requeue := func(delivery store.Delivery) store.Delivery {
		delivery.State, delivery.NextAttemptAt, delivery.UpdatedAt = store.Pending, base.Add(2*time.Hour), base.Add(2*time.Hour)
		return delivery
	}
	changes := []store.DeliveryChange{
		{State: store.Failed, Attempts: 3, To: requeue(finished[0])},
		{State: store.Succeeded, Attempts: 3, To: requeue(finished[1])},
		{State: store.Failed, Attempts: 2, To: requeue(finished[2])},
		{State: store.Failed, Attempts: 3, To: requeue(store.Delivery{ID: "no-such-delivery", Namespace: "shop", EventID: "evt_1", Endpoint: "a"})},
	}
	applied := read(s.ChangeDeliveries(ctx, changes)).must(t)
	same(t, "applied changes (current, stale state, stale attempts, missing)", []bool{true, false, false, false}, applied)
	same(t, "changed delivery", requeue(finished[0]), read(s.Delivery(ctx, finished[0].ID)).must(t))
	for _, unchanged := range finished[1:] {
		same(t, "delivery of a stale change", unchanged, read(s.Delivery(ctx, unchanged.ID)).must(t))
	}
	if _, err := s.Delivery(ctx, "no-such-delivery"); !store.IsNotFound(err) {
		t.Fatalf("a change of a missing delivery stored it: %v", err)
	}
	same(t, "active deliveries after the change", []store.Delivery{requeue(finished[0])}, read(Active(ctx, s, store.AllPartitions())).must(t))

	// The same change again read a state that has moved on.
	same(t, "applied changes, repeated", []bool{false}, read(s.ChangeDeliveries(ctx, changes[:1])).must(t))
}

// testConcurrentChanges: of changers acting at once on the same reading,
// exactly one moves each delivery, and what it stored stays.
func testConcurrentChanges(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	endpoints := make([]string, 10)
	for i := range endpoints {
		endpoints[i] = fmt.Sprintf("endpoint-%d", i)
	}
	accepted := accept(t, s, event("shop", "evt_1", base), targets(endpoints...))
	finished := make([]store.Delivery, 0, len(accepted.Deliveries))
	index := map[string]int{}
	for i, delivery := range accepted.Deliveries {
		finished = append(finished, finish(delivery, store.Succeeded, 1, base))
		index[delivery.ID] = i
	}
	update(t, s, finished...)

	// Each changer moves every delivery, in an order of its own (a store that
	// locks rows must not deadlock), and marks its changes with its due time.
	const changers = 6
	won := make([][]bool, changers)
	var wg sync.WaitGroup
	for changer := range changers {
		wg.Go(func() {
			order := slices.Clone(finished)
			if changer%2 == 1 {
				slices.Reverse(order)
			}
			changes := make([]store.DeliveryChange, len(order))
			for i, delivery := range order {
				delivery.State, delivery.NextAttemptAt = store.Pending, base.Add(time.Duration(changer+1)*time.Minute)
				changes[i] = store.DeliveryChange{State: store.Succeeded, Attempts: 1, To: delivery}
			}
			applied, err := s.ChangeDeliveries(ctx, changes)
			if err != nil {
				t.Error(err)
				return
			}
			won[changer] = make([]bool, len(applied))
			for i, ok := range applied {
				won[changer][index[order[i].ID]] = ok
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, delivery := range finished {
		winner := -1
		for changer := range changers {
			if won[changer][i] && winner >= 0 {
				t.Fatalf("delivery %s was moved by changers %d and %d from the same reading", delivery.ID, winner, changer)
			}
			if won[changer][i] {
				winner = changer
			}
		}
		if winner < 0 {
			t.Fatalf("no changer moved delivery %s", delivery.ID)
		}
		stored := read(s.Delivery(ctx, delivery.ID)).must(t)
		if want := base.Add(time.Duration(winner+1) * time.Minute); stored.State != store.Pending || !stored.NextAttemptAt.Equal(want) {
			t.Fatalf("delivery %s = %s due %s, want pending due %s as its winner (changer %d) stored it", delivery.ID, stored.State, stored.NextAttemptAt, want, winner)
		}
	}
}

// testChangeMany: one call of many changes, oldest first (as a release's
// chunk), applies each that reads its delivery as expected, the second
// change of one delivery reading what the first left, and skips a stale or
// missing one.
func testChangeMany(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	held := make([]store.Delivery, 0, 5*40)
	for i := range 5 {
		to := make([]store.Target, 40)
		for j := range to {
			to[j] = store.Target{Endpoint: fmt.Sprintf("endpoint-%d", j), Held: true}
		}
		held = append(held, accept(t, s, event("shop", fmt.Sprintf("evt_%d", i), base.Add(time.Duration(i)*time.Second)), to).Deliveries...)
	}
	release := func(delivery store.Delivery) store.Delivery {
		delivery.State, delivery.NextAttemptAt, delivery.UpdatedAt = store.Pending, base.Add(time.Hour), base.Add(time.Hour)
		return delivery
	}
	var changes []store.DeliveryChange
	var want []bool
	wantStored := map[string]store.Delivery{}
	for i, delivery := range held {
		wantStored[delivery.ID] = delivery
		switch {
		case i%7 == 0: // stale: expects it pending
			changes, want = append(changes, store.DeliveryChange{State: store.Pending, To: release(delivery)}), append(want, false)
		case i%11 == 0: // released, then attempted once in the same call
			attempted := release(delivery)
			attempted.Attempts = 1
			changes = append(changes, store.DeliveryChange{State: store.Held, To: release(delivery)},
				store.DeliveryChange{State: store.Pending, To: attempted})
			want, wantStored[delivery.ID] = append(want, true, true), attempted
		default:
			changes, want, wantStored[delivery.ID] = append(changes, store.DeliveryChange{State: store.Held, To: release(delivery)}), append(want, true), release(delivery)
		}
		if i == 100 {
			missing := release(delivery)
			missing.ID += "-missing"
			changes, want = append(changes, store.DeliveryChange{State: store.Held, To: missing}), append(want, false)
		}
	}
	same(t, "applied changes", want, read(s.ChangeDeliveries(ctx, changes)).must(t))
	for _, delivery := range held {
		same(t, "delivery "+delivery.ID, wantStored[delivery.ID], read(s.Delivery(ctx, delivery.ID)).must(t))
	}
}
