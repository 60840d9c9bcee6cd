package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/store"
)

// testConcurrentWriters: writers accepting at once, each its own ids and
// all of them the same shared ids, get exactly one acceptance per id and
// one delivery per target, and every other answer is a duplicate.
func testConcurrentWriters(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	const writers, own, shared = 8, 20, 10
	answers := make([][]store.Accepted, writers)
	var wg sync.WaitGroup
	for writer := range writers {
		wg.Go(func() {
			for i := range own {
				sent := []string{fmt.Sprintf("evt_w%d_%d", writer, i)}
				if i < shared {
					// Each writer takes the shared ids in an order of its own.
					sent = append(sent, fmt.Sprintf("evt_shared_%d", (i+writer)%shared))
				}
				for _, id := range sent {
					accepted, err := s.Accept(ctx, event("shop", id, base), targets("a", "b"), base.Add(-time.Hour))
					if err != nil {
						t.Error(err)
						return
					}
					answers[writer] = append(answers[writer], accepted)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	firsts, duplicates := map[string]int{}, map[string]int{}
	var delivered []store.Delivery
	for _, answer := range slices.Concat(answers...) {
		id := answer.Event.ID
		if answer.Duplicate {
			duplicates[id]++
			if len(answer.Deliveries) != 0 || answer.Event.Deliveries != 2 {
				t.Errorf("duplicate answer for %s = %d deliveries, event of %d; want none, the first event's 2", id, len(answer.Deliveries), answer.Event.Deliveries)
			}
			continue
		}
		firsts[id]++
		if len(answer.Deliveries) != 2 {
			t.Errorf("event %s fanned out to %d deliveries, want 2", id, len(answer.Deliveries))
		}
		delivered = append(delivered, answer.Deliveries...)
	}
	if len(firsts) != writers*own+shared {
		t.Errorf("%d distinct ids accepted, want %d", len(firsts), writers*own+shared)
	}
	for id, count := range firsts {
		wantDuplicates := 0
		if strings.HasPrefix(id, "evt_shared_") {
			wantDuplicates = writers - 1
		}
		if count != 1 || duplicates[id] != wantDuplicates {
			t.Errorf("id %s: accepted %d times and %d duplicates, want once and %d", id, count, duplicates[id], wantDuplicates)
		}
	}
	active := read(Active(ctx, s, store.AllPartitions())).must(t)
	same(t, "active deliveries after concurrent accepts", ids(byID(delivered)), ids(byID(active)))
	if unique := slices.Compact(ids(byID(active))); len(unique) != len(active) {
		t.Errorf("%d active deliveries share %d ids", len(active), len(unique))
	}
	listed, _ := page(t, s, "shop", "b", store.DeliveryQuery{})
	if len(listed) != writers*own+shared {
		t.Errorf("endpoint b lists %d deliveries, want %d", len(listed), writers*own+shared)
	}
}

// testReopen: everything stored is there after Close and a new Open, the
// dedupe window included, and new delivery ids still sort after the old.
func testReopen(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	first := accept(t, s, event("shop", "evt_1", base), []store.Target{{Endpoint: "a"}, {Endpoint: "b", Held: true}})
	done := first.Deliveries[0]
	done.Attempts, done.State, done.NextAttemptAt, done.UpdatedAt = 1, store.Succeeded, time.Time{}, base.Add(time.Minute)
	attempt := store.Attempt{DeliveryID: done.ID, Number: 1, StartedAt: base, DurationMS: 41.5, StatusCode: 200, Response: `{"ok":true}`}
	health := store.Health{Endpoint: shopA, UID: uidA, LastSuccess: &attempt.StartedAt}
	recordAttempts(t, s, store.AttemptRecord{Delivery: done, Attempt: attempt, Health: &health})
	disabled := store.Health{Endpoint: "shop/b", UID: "uid-b", ConsecutiveFailures: 5, Disabled: true, DisabledAt: &base, ReenableToken: "t"}
	if err := s.PutHealth(ctx, disabled); err != nil {
		t.Fatal(err)
	}
	second := accept(t, s, event("shop", "evt_2", base.Add(time.Minute)), targets("a"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = start(t, open)
	same(t, "event after reopen", first.Event, read(s.Event(ctx, "shop", "evt_1")).must(t))
	same(t, "deliveries after reopen", byID([]store.Delivery{done, first.Deliveries[1]}), byID(read(s.DeliveriesOf(ctx, "shop", "evt_1")).must(t)))
	same(t, "attempts after reopen", []store.Attempt{attempt}, read(s.Attempts(ctx, done.ID)).must(t))
	healths := read(s.Healths(ctx)).must(t)
	slices.SortFunc(healths, func(a, b store.Health) int { return strings.Compare(a.Endpoint, b.Endpoint) })
	same(t, "healths after reopen", []store.Health{health, disabled}, healths)
	same(t, "active deliveries after reopen", []store.Delivery{first.Deliveries[1], second.Deliveries[0]}, read(Active(ctx, s, store.AllPartitions())).must(t))

	again, err := s.Accept(ctx, event("shop", "evt_1", base.Add(2*time.Minute)), targets("a"), base.Add(-time.Hour))
	if err != nil || !again.Duplicate {
		t.Fatalf("an id accepted before the reopen, sent again: duplicate %t, %v; want a duplicate", again.Duplicate, err)
	}
	third := accept(t, s, event("shop", "evt_3", base.Add(2*time.Minute)), targets("a", "b"))
	if held := third.Deliveries[1]; held.State != store.Held {
		t.Fatalf("delivery to b, disabled before the reopen, accepted after it = %s, want held", held.State)
	}
	listed, _ := page(t, s, "shop", "a", store.DeliveryQuery{})
	same(t, "ids of endpoint a, newest first, across the reopen", []string{third.Deliveries[0].ID, second.Deliveries[0].ID, done.ID}, ids(listed))
}

// testWritesRacingClose: writes under way when the store closes either
// land, and are there when it is opened again, or fail with ErrClosed.
func testWritesRacingClose(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	const writers, most = 8, 100_000
	landed := make([][]string, writers)
	var running, wg sync.WaitGroup
	running.Add(writers)
	for writer := range writers {
		wg.Go(func() {
			landedOne := sync.OnceFunc(running.Done)
			defer landedOne()
			for i := range most {
				id := fmt.Sprintf("evt_w%d_%d", writer, i)
				_, err := s.Accept(ctx, event("shop", id, base), targets("a"), base.Add(-time.Hour))
				if errors.Is(err, store.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("accepting %s while the store closes: %v, want success or ErrClosed", id, err)
					return
				}
				landed[writer] = append(landed[writer], id)
				landedOne()
			}
			t.Errorf("writer %d was still accepting after %d events", writer, most)
		})
	}
	// Close once every writer has landed a write, so that Close meets
	// writes in flight.
	running.Wait()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()

	s = start(t, open)
	all := slices.Concat(landed...)
	for _, id := range all {
		if _, err := s.Event(ctx, "shop", id); err != nil {
			t.Errorf("event %s was accepted before Close but is gone after reopen: %v", id, err)
		}
	}
	if active := read(Active(ctx, s, store.AllPartitions())).must(t); len(active) != len(all) {
		t.Errorf("%d active deliveries after reopen, want one per accepted event (%d)", len(active), len(all))
	}
}

// testClosed: every operation on a closed store fails with store.ErrClosed,
// a second Close included, so callers can tell shutdown from failure.
func testClosed(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	delivery := accept(t, s, event("shop", "evt_1", base), targets("a")).Deliveries[0]
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	finished := finish(delivery, store.Succeeded, 1, base)
	attempt := store.Attempt{DeliveryID: delivery.ID, Number: 1, StartedAt: base, StatusCode: 200}
	for _, operation := range []struct {
		name string
		call func() error
	}{
		{"Accept", func() error {
			_, err := s.Accept(ctx, event("shop", "evt_2", base), targets("a"), base.Add(-time.Hour))
			return err
		}},
		{"RecordAttempts", func() error {
			_, err := s.RecordAttempts(ctx, []store.AttemptRecord{{Delivery: finished, Attempt: attempt}})
			return err
		}},
		{"UpdateDeliveries", func() error { return s.UpdateDeliveries(ctx, []store.Delivery{finished}) }},
		{"ChangeDeliveries", func() error {
			_, err := s.ChangeDeliveries(ctx, []store.DeliveryChange{{State: store.Pending, To: finished}})
			return err
		}},
		{"PutHealth", func() error { return s.PutHealth(ctx, store.Health{Endpoint: shopA}) }},
		{"ActivePage", func() error { _, _, err := s.ActivePage(ctx, store.AllPartitions(), "", 10); return err }},
		{"Healths", func() error { _, err := s.Healths(ctx); return err }},
		{"Event", func() error { _, err := s.Event(ctx, "shop", "evt_1"); return err }},
		{"Attempts", func() error { _, err := s.Attempts(ctx, delivery.ID); return err }},
		{"DeliveriesOf", func() error { _, err := s.DeliveriesOf(ctx, "shop", "evt_1"); return err }},
		{"Delivery", func() error { _, err := s.Delivery(ctx, delivery.ID); return err }},
		{"EndpointDeliveries", func() error { _, _, err := s.EndpointDeliveries(ctx, "shop", "a", store.DeliveryQuery{}); return err }},
		{"Sweep", func() error { _, err := s.Sweep(ctx, base.Add(time.Hour)); return err }},
		{"Close", s.Close},
	} {
		if err := operation.call(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s on a closed store: %v, want store.ErrClosed", operation.name, err)
		}
	}
}
