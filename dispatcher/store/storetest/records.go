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

// attempted returns the record of the delivery's next attempt, finished in
// the state (pending: due again a minute later), with a health record of
// its endpoint that names the attempt and who made it.
func attempted(delivery store.Delivery, state store.State, by string, at time.Time) store.AttemptRecord {
	next := finish(delivery, state, delivery.Attempts+1, at)
	if state == store.Pending {
		next.NextAttemptAt = at.Add(time.Minute)
	}
	failedAt := at
	return store.AttemptRecord{
		Delivery: next,
		Attempt:  store.Attempt{DeliveryID: delivery.ID, Number: next.Attempts, StartedAt: at, StatusCode: 503, Response: by},
		Health: &store.Health{Endpoint: delivery.Namespace + "/" + delivery.Endpoint, UID: "uid-" + delivery.Endpoint,
			ConsecutiveFailures: next.Attempts, LastFailure: &failedAt, LastFailureReason: by},
	}
}

// snapshot is everything a record could change: deliveries, their attempts,
// and health.
type snapshot struct {
	Deliveries []store.Delivery
	Attempts   map[string][]store.Attempt
	Healths    []store.Health
}

func takeSnapshot(t *testing.T, s store.Store, deliveries []store.Delivery) snapshot {
	t.Helper()
	out := snapshot{Attempts: map[string][]store.Attempt{}, Healths: read(s.Healths(t.Context())).must(t)}
	for _, delivery := range deliveries {
		out.Deliveries = append(out.Deliveries, read(s.Delivery(t.Context(), delivery.ID)).must(t))
		out.Attempts[delivery.ID] = read(s.Attempts(t.Context(), delivery.ID)).must(t)
	}
	slices.SortFunc(out.Healths, func(a, b store.Health) int { return strings.Compare(a.Endpoint, b.Endpoint) })
	return out
}

// testStaleRecordsAreSkipped: a record whose delivery is no longer pending
// at the attempt before it (attempts behind or ahead, the same attempt
// recorded twice, held, finished, or missing) is skipped, not an error,
// and leaves the delivery, its attempts and its endpoint's health as they
// were.
func testStaleRecordsAreSkipped(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	accepted := accept(t, s, event("shop", "evt_1", base),
		[]store.Target{{Endpoint: "twice"}, {Endpoint: "ahead"}, {Endpoint: "held", Held: true}, {Endpoint: "done"}})
	twice, ahead, held, done := accepted.Deliveries[0], accepted.Deliveries[1], accepted.Deliveries[2], accepted.Deliveries[3]

	first := attempted(twice, store.Pending, "first", base.Add(time.Minute))
	recordAttempts(t, s, first)
	aheadAt2 := finish(ahead, store.Pending, 2, base.Add(time.Minute))
	aheadAt2.NextAttemptAt = base.Add(2 * time.Minute)
	finished := finish(done, store.Succeeded, 1, base.Add(time.Minute))
	update(t, s, aheadAt2, finished)
	for _, delivery := range []store.Delivery{aheadAt2, held} {
		health := store.Health{Endpoint: "shop/" + delivery.Endpoint, UID: "uid-" + delivery.Endpoint, LastFailureReason: "before"}
		if err := s.PutHealth(ctx, health); err != nil {
			t.Fatal(err)
		}
	}
	deliveries := []store.Delivery{twice, ahead, held, done}
	before := takeSnapshot(t, s, deliveries)

	later := base.Add(time.Hour)
	behind := attempted(aheadAt2, store.Failed, "behind", later)
	behind.Delivery.Attempts, behind.Attempt.Number = 2, 2 // made after attempt 1, which the store is past
	beyond := attempted(aheadAt2, store.Pending, "beyond", later)
	beyond.Delivery.Attempts, beyond.Attempt.Number = 4, 4 // made after an attempt 3 the store never saw
	missing := attempted(store.Delivery{ID: "no-such-delivery", Namespace: twice.Namespace, EventID: twice.EventID, Endpoint: "gone", State: store.Pending},
		store.Succeeded, "missing", later)
	stale := []struct {
		name   string
		record store.AttemptRecord
	}{
		{"the same attempt a second time", attempted(twice, store.Succeeded, "second", later)},
		{"attempts behind the store", behind},
		{"attempts ahead of the store", beyond},
		{"a held delivery", attempted(held, store.Pending, "held", later)},
		{"a finished delivery", attempted(finished, store.Pending, "finished", later)},
		{"a missing delivery", missing},
	}
	for _, c := range stale {
		applied := read(s.RecordAttempts(ctx, []store.AttemptRecord{c.record})).must(t)
		same(t, "applied, of a record of "+c.name, []bool{false}, applied)
		same(t, "store after a record of "+c.name, before, takeSnapshot(t, s, deliveries))
	}
	if _, err := s.Delivery(ctx, "no-such-delivery"); !store.IsNotFound(err) {
		t.Fatalf("a record of a missing delivery stored it: %v", err)
	}
}

// testRecordBatchAppliesTheCurrentOnes: in a batch that mixes current and
// stale records, exactly the current ones apply, and successive attempts of
// one delivery in the same batch apply in order.
func testRecordBatchAppliesTheCurrentOnes(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	accepted := accept(t, s, event("shop", "evt_1", base), targets("a", "b", "c"))
	a, b, c := accepted.Deliveries[0], accepted.Deliveries[1], accepted.Deliveries[2]
	recordAttempts(t, s, attempted(c, store.Pending, "earlier", base))
	cBefore := read(s.Delivery(ctx, c.ID)).must(t)

	at := base.Add(time.Hour)
	aFirst := attempted(a, store.Pending, "a1", at)
	aSecond := attempted(aFirst.Delivery, store.Succeeded, "a2", at.Add(time.Second))
	bFirst := attempted(b, store.Failed, "b1", at)
	records := []store.AttemptRecord{
		attempted(c, store.Succeeded, "c1 again", at), // c is at attempt 1 already
		aFirst,
		bFirst,
		attempted(b, store.Succeeded, "b1 again", at), // the same attempt as bFirst
		aSecond,
	}
	same(t, "applied records", []bool{false, true, true, false, true}, read(s.RecordAttempts(ctx, records)).must(t))
	same(t, "delivery a after two attempts", aSecond.Delivery, read(s.Delivery(ctx, a.ID)).must(t))
	same(t, "attempts of a", []store.Attempt{aFirst.Attempt, aSecond.Attempt}, read(s.Attempts(ctx, a.ID)).must(t))
	same(t, "delivery b", bFirst.Delivery, read(s.Delivery(ctx, b.ID)).must(t))
	same(t, "attempts of b", []store.Attempt{bFirst.Attempt}, read(s.Attempts(ctx, b.ID)).must(t))
	same(t, "delivery c", cBefore, read(s.Delivery(ctx, c.ID)).must(t))
	if attempts := read(s.Attempts(ctx, c.ID)).must(t); len(attempts) != 1 || attempts[0].Response != "earlier" {
		t.Fatalf("attempts of c = %+v, want only the earlier one", attempts)
	}
	healths := takeSnapshot(t, s, nil).Healths
	same(t, "healths", []store.Health{*aSecond.Health, *bFirst.Health, *attempted(c, store.Pending, "earlier", base).Health}, healths)
}

// testRecordBatchStoresTheLastHealth: an endpoint's health changed by
// several records of one batch is stored as the last applied one left it,
// in the batch's order, whatever the rounds a store applies a batch in
// (the second attempt of one delivery cannot apply with the first), and
// a later record that does not apply leaves the earlier one's.
func testRecordBatchStoresTheLastHealth(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	a, b := accept(t, s, event("shop", "evt_1", base), targets("a")).Deliveries[0], accept(t, s, event("shop", "evt_2", base), targets("a")).Deliveries[0]
	c := accept(t, s, event("shop", "evt_3", base), targets("c")).Deliveries[0]
	at := base.Add(time.Hour)
	aFirst := attempted(a, store.Pending, "a1", at)
	aFirst.Health = nil
	aSecond := attempted(aFirst.Delivery, store.Failed, "a2", at.Add(time.Second))
	bFirst := attempted(b, store.Failed, "b1", at.Add(2*time.Second))
	bFirst.Health.Disabled, bFirst.Health.DisabledAt = true, bFirst.Health.LastFailure
	cFirst := attempted(c, store.Failed, "c1", at)
	cStale := attempted(c, store.Succeeded, "c1 again", at.Add(time.Second)) // the same attempt as cFirst
	records := []store.AttemptRecord{aFirst, aSecond, bFirst, cFirst, cStale}
	same(t, "applied records", []bool{true, true, true, true, false}, read(s.RecordAttempts(ctx, records)).must(t))
	same(t, "healths", []store.Health{*bFirst.Health, *cFirst.Health}, takeSnapshot(t, s, nil).Healths)
}

// testConcurrentRecordsApplyOnce: two writers recording the same attempt
// of the same deliveries at once (a replica that lost the partition and
// its new owner): exactly one record of each delivery applies, and the
// delivery, attempt and health stored are all that one's.
func testConcurrentRecordsApplyOnce(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	endpoints := make([]string, 10)
	for i := range endpoints {
		endpoints[i] = fmt.Sprintf("endpoint-%d", i)
	}
	accepted := accept(t, s, event("shop", "evt_1", base), targets(endpoints...))

	writers := []string{"old-owner", "new-owner"}
	won := make([][]bool, len(writers))
	var wg sync.WaitGroup
	for w, writer := range writers {
		wg.Go(func() {
			records := make([]store.AttemptRecord, len(accepted.Deliveries))
			for i, delivery := range accepted.Deliveries {
				state := store.Pending
				if w == 1 {
					state = store.Failed
				}
				records[i] = attempted(delivery, state, writer, base.Add(time.Duration(w+1)*time.Minute))
			}
			if w == 1 {
				// In an order of its own: a store that locks rows must not deadlock.
				slices.Reverse(records)
			}
			applied, err := s.RecordAttempts(ctx, records)
			if err != nil {
				t.Error(err)
				return
			}
			if w == 1 {
				slices.Reverse(applied)
			}
			won[w] = applied
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	healths := map[string]store.Health{}
	for _, health := range read(s.Healths(ctx)).must(t) {
		healths[health.Endpoint] = health
	}
	for i, delivery := range accepted.Deliveries {
		if won[0][i] == won[1][i] {
			t.Fatalf("delivery %s: applied by %s %t, by %s %t; want exactly one", delivery.ID, writers[0], won[0][i], writers[1], won[1][i])
		}
		winner := writers[0]
		if won[1][i] {
			winner = writers[1]
		}
		attempts := read(s.Attempts(ctx, delivery.ID)).must(t)
		stored := read(s.Delivery(ctx, delivery.ID)).must(t)
		health := healths["shop/"+delivery.Endpoint]
		if len(attempts) != 1 || attempts[0].Response != winner || stored.Attempts != 1 || health.LastFailureReason != winner ||
			(stored.State == store.Failed) != (winner == writers[1]) {
			t.Fatalf("delivery %s won by %s: stored %s at %d attempts, attempts %+v, health by %q; want all the winner's",
				delivery.ID, winner, stored.State, stored.Attempts, attempts, health.LastFailureReason)
		}
	}
}

// testAcceptHoldsDisabledEndpoints: Accept holds a delivery whose
// endpoint's stored health says disabled, whatever the target says, and
// stops once the health is enabled again; health is per namespace, and
// stored by PutHealth or with an attempt.
func testAcceptHoldsDisabledEndpoints(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	disabled := store.Health{Endpoint: shopA, UID: uidA, ConsecutiveFailures: 5, Disabled: true, DisabledAt: &base}
	if err := s.PutHealth(ctx, disabled); err != nil {
		t.Fatal(err)
	}
	accepted := accept(t, s, event("shop", "evt_1", base), targets("a", "b"))
	wantHeld := accepted.Deliveries[0]
	wantHeld.State, wantHeld.NextAttemptAt = store.Held, time.Time{}
	same(t, "accepted delivery to a disabled endpoint", wantHeld, accepted.Deliveries[0])
	same(t, "stored delivery to a disabled endpoint", wantHeld, read(s.Delivery(ctx, wantHeld.ID)).must(t))
	if other := accepted.Deliveries[1]; other.State != store.Pending {
		t.Fatalf("delivery to an endpoint with no health record = %s, want pending", other.State)
	}
	if other := accept(t, s, event("warehouse", "evt_1", base), targets("a")).Deliveries[0]; other.State != store.Pending {
		t.Fatalf("delivery to a of another namespace = %s, want pending", other.State)
	}

	enabled := disabled
	enabled.ConsecutiveFailures, enabled.Disabled, enabled.DisabledAt, enabled.ReenableToken = 0, false, nil, "token-1"
	if err := s.PutHealth(ctx, enabled); err != nil {
		t.Fatal(err)
	}
	later := base.Add(time.Minute)
	again := accept(t, s, event("shop", "evt_2", later), targets("a")).Deliveries[0]
	if again.State != store.Pending || !again.NextAttemptAt.Equal(later) {
		t.Fatalf("delivery to a re-enabled endpoint = %s due %s, want pending due %s", again.State, again.NextAttemptAt, later)
	}
	same(t, "stored delivery to a re-enabled endpoint", again, read(s.Delivery(ctx, again.ID)).must(t))

	// A failed attempt whose record disables the endpoint holds what follows.
	record := attempted(again, store.Failed, "last straw", later)
	record.Health.Disabled, record.Health.DisabledAt = true, &later
	recordAttempts(t, s, record)
	if held := accept(t, s, event("shop", "evt_3", later), targets("a")).Deliveries[0]; held.State != store.Held {
		t.Fatalf("delivery to an endpoint an attempt record disabled = %s, want held", held.State)
	}
}
