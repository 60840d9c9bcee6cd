package storetest

import (
	"testing"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/store"
)

// record stores one attempt that finished the delivery in the state.
func record(t *testing.T, s store.Store, delivery store.Delivery, state store.State, at time.Time) store.Delivery {
	t.Helper()
	finished := finish(delivery, state, delivery.Attempts+1, at)
	attempt := store.Attempt{DeliveryID: delivery.ID, Number: finished.Attempts, StartedAt: at, DurationMS: 3, StatusCode: 500}
	if state == store.Succeeded {
		attempt.StatusCode = 200
	}
	recordAttempts(t, s, store.AttemptRecord{Delivery: finished, Attempt: attempt})
	return finished
}

// testSweep: finished deliveries last updated before the horizon go with
// their attempts, and so do events left with no delivery that were
// accepted before it; active deliveries stay however old, and so does
// everything newer.
func testSweep(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	horizon := base.Add(time.Hour)
	done := accept(t, s, event("shop", "evt_done", base), targets("a", "b")).Deliveries
	half := accept(t, s, event("shop", "evt_half", base), targets("a", "b")).Deliveries
	held := accept(t, s, event("shop", "evt_held", base), []store.Target{{Endpoint: "a", Held: true}}).Deliveries
	recent := accept(t, s, event("shop", "evt_recent", base), targets("a")).Deliveries
	accept(t, s, event("shop", "evt_empty", base), nil)
	accept(t, s, event("shop", "evt_late", horizon.Add(time.Hour)), nil)

	gone := []store.Delivery{
		record(t, s, done[0], store.Succeeded, base.Add(10*time.Minute)),
		record(t, s, done[1], store.Failed, base.Add(20*time.Minute)),
		record(t, s, half[0], store.Succeeded, base.Add(30*time.Minute)),
	}
	kept := record(t, s, recent[0], store.Succeeded, horizon.Add(time.Minute))

	swept, err := s.Sweep(ctx, horizon)
	if err != nil {
		t.Fatal(err)
	}
	if swept != len(gone) {
		t.Errorf("Sweep = %d, want the %d finished deliveries older than the horizon", swept, len(gone))
	}
	for _, delivery := range gone {
		if _, err := s.Delivery(ctx, delivery.ID); !store.IsNotFound(err) {
			t.Errorf("swept delivery %s: %v, want ErrNotFound", delivery.ID, err)
		}
		same(t, "attempts of a swept delivery", []store.Attempt(nil), read(s.Attempts(ctx, delivery.ID)).must(t))
	}
	if attempts := read(s.Attempts(ctx, kept.ID)).must(t); len(attempts) != 1 {
		t.Errorf("a delivery finished after the horizon has %d attempts left, want 1", len(attempts))
	}
	for _, id := range []string{"evt_done", "evt_empty"} {
		if _, err := s.Event(ctx, "shop", id); !store.IsNotFound(err) {
			t.Errorf("event %s, accepted before the horizon with no delivery left: %v, want ErrNotFound", id, err)
		}
	}
	for _, id := range []string{"evt_half", "evt_held", "evt_recent", "evt_late"} {
		if _, err := s.Event(ctx, "shop", id); err != nil {
			t.Errorf("event %s should have stayed: %v", id, err)
		}
	}
	same(t, "deliveries of a half-finished event", []store.Delivery{half[1]}, read(s.DeliveriesOf(ctx, "shop", "evt_half")).must(t))
	listed, _ := page(t, s, "shop", "a", store.DeliveryQuery{})
	same(t, "deliveries of endpoint a after the sweep", []store.Delivery{kept, held[0]}, listed)
	same(t, "active deliveries after the sweep", []store.Delivery{half[1], held[0]}, read(Active(ctx, s, store.AllPartitions())).must(t))
	if again := read(s.Sweep(ctx, horizon)).must(t); again != 0 {
		t.Errorf("a second sweep found %d more", again)
	}
}
