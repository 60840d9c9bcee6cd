package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func openTestStore(t *testing.T, path string) *Bolt {
	t.Helper()
	db, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestAcceptDedupesWithinTheWindow(t *testing.T) {
	ctx := context.Background()
	db := openTestStore(t, filepath.Join(t.TempDir(), "hookrelay.db"))
	defer db.Close()
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	event := Event{Namespace: "palm", ID: "evt_1", Type: "user.created", CreatedAt: now, Data: []byte(`{"a":1}`), AcceptedAt: now}

	first, err := db.Accept(ctx, event, []Target{{Endpoint: "a"}, {Endpoint: "b", Held: true}}, now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || len(first.Deliveries) != 2 || first.Deliveries[1].State != Held || first.Deliveries[0].State != Pending {
		t.Fatalf("first accept = %+v", first)
	}
	again, err := db.Accept(ctx, event, []Target{{Endpoint: "a"}}, now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Event.Deliveries != 2 || len(again.Deliveries) != 0 {
		t.Fatalf("a repeated id was fanned out again: %+v", again)
	}
	// Past the window the id is new again.
	later := event
	later.AcceptedAt = now.Add(25 * time.Hour)
	third, err := db.Accept(ctx, later, []Target{{Endpoint: "a"}}, later.AcceptedAt.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if third.Duplicate {
		t.Fatal("an id older than the dedupe window was refused")
	}
}

func TestStateSurvivesReopenAndSweep(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hookrelay.db")
	db := openTestStore(t, path)
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	accepted, err := db.Accept(ctx, Event{Namespace: "ns", ID: "evt_1", Type: "t", Data: []byte(`{"x":[1, 2]}`), AcceptedAt: now},
		[]Target{{Endpoint: "done"}, {Endpoint: "waiting"}}, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	finished := accepted.Deliveries[0]
	finished.State, finished.Attempts, finished.UpdatedAt = Succeeded, 1, now
	health := Health{Endpoint: "ns/done", LastSuccess: &now}
	err = db.RecordAttempts(ctx, []AttemptRecord{{Delivery: finished,
		Attempt: Attempt{DeliveryID: finished.ID, Number: 1, StartedAt: now, DurationMS: 1.5, StatusCode: 200, Response: "ok"}, Health: &health}})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	db = openTestStore(t, path)
	defer db.Close()
	active, err := db.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 1 || active[0].Endpoint != "waiting" {
		t.Fatalf("active after reopen = %+v, want the waiting delivery", active)
	}
	event, err := db.Event(ctx, "ns", "evt_1")
	if err != nil || string(event.Data) != `{"x":[1, 2]}` {
		t.Fatalf("event after reopen = %+v, %v", event, err)
	}
	attempts, err := db.Attempts(ctx, finished.ID)
	if err != nil || len(attempts) != 1 || attempts[0].StatusCode != 200 || attempts[0].Response != "ok" {
		t.Fatalf("attempts = %+v, %v", attempts, err)
	}
	healths, err := db.Healths(ctx)
	if err != nil || len(healths) != 1 || healths[0].LastSuccess == nil {
		t.Fatalf("health = %+v, %v", healths, err)
	}

	swept, err := db.Sweep(ctx, now.Add(time.Hour))
	if err != nil || swept != 1 {
		t.Fatalf("Sweep = %d, %v; want the one finished delivery", swept, err)
	}
	if attempts, _ := db.Attempts(ctx, finished.ID); len(attempts) != 0 {
		t.Fatalf("attempts of a swept delivery remain: %+v", attempts)
	}
	deliveries, err := db.DeliveriesOf(ctx, "ns", "evt_1")
	if err != nil || len(deliveries) != 1 || deliveries[0].Endpoint != "waiting" {
		t.Fatalf("deliveries after sweep = %+v, %v", deliveries, err)
	}
	if _, err := db.Event(ctx, "ns", "evt_1"); err != nil {
		t.Fatalf("an event with a pending delivery was swept: %v", err)
	}
}

func TestEndpointDeliveriesPagesNewestFirst(t *testing.T) {
	ctx := context.Background()
	db := openTestStore(t, filepath.Join(t.TempDir(), "hookrelay.db"))
	defer db.Close()
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var ids []string
	for i := range 7 {
		at := start.Add(time.Duration(i) * time.Minute)
		targets := []Target{{Endpoint: "palm"}, {Endpoint: "other"}}
		accepted, err := db.Accept(ctx, Event{Namespace: "ns", ID: fmt.Sprintf("evt_%d", i), Type: "t", AcceptedAt: at}, targets, at.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		palm := accepted.Deliveries[0]
		if i%2 == 0 {
			palm.State = Failed
			if err := db.UpdateDeliveries(ctx, []Delivery{palm}); err != nil {
				t.Fatal(err)
			}
		}
		ids = append(ids, palm.ID)
	}
	eventIDs := func(page []Delivery) []string {
		var out []string
		for _, d := range page {
			out = append(out, d.EventID)
		}
		return out
	}

	page, next, err := db.EndpointDeliveries(ctx, "ns", "palm", DeliveryQuery{Limit: 3})
	if err != nil || fmt.Sprint(eventIDs(page)) != "[evt_6 evt_5 evt_4]" || next != ids[4] {
		t.Fatalf("first page = %v, next %q, %v", eventIDs(page), next, err)
	}
	page, next, err = db.EndpointDeliveries(ctx, "ns", "palm", DeliveryQuery{Limit: 3, After: next})
	if err != nil || fmt.Sprint(eventIDs(page)) != "[evt_3 evt_2 evt_1]" {
		t.Fatalf("second page = %v, %v", eventIDs(page), err)
	}
	page, next, err = db.EndpointDeliveries(ctx, "ns", "palm", DeliveryQuery{Limit: 3, After: next})
	if err != nil || fmt.Sprint(eventIDs(page)) != "[evt_0]" || next != "" {
		t.Fatalf("last page = %v, next %q, %v", eventIDs(page), next, err)
	}
	page, _, err = db.EndpointDeliveries(ctx, "ns", "palm", DeliveryQuery{State: Failed, Since: start.Add(2 * time.Minute), Until: start.Add(6 * time.Minute)})
	if err != nil || fmt.Sprint(eventIDs(page)) != "[evt_4 evt_2]" {
		t.Fatalf("failed between 10:02 and 10:06 = %v, %v", eventIDs(page), err)
	}
}

// TestChangeDeliveriesIsCompareAndSet: of four concurrent retries of one
// finished delivery, read at the same moment, exactly one moves it.
func TestChangeDeliveriesIsCompareAndSet(t *testing.T) {
	ctx := context.Background()
	db := openTestStore(t, filepath.Join(t.TempDir(), "hookrelay.db"))
	defer db.Close()
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	accepted, err := db.Accept(ctx, Event{Namespace: "ns", ID: "evt_1", Type: "t", Data: []byte(`{}`), AcceptedAt: now}, []Target{{Endpoint: "a"}}, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	finished := accepted.Deliveries[0]
	finished.State, finished.Attempts = Succeeded, 1
	if err := db.UpdateDeliveries(ctx, []Delivery{finished}); err != nil {
		t.Fatal(err)
	}

	const retries = 4
	results := make(chan bool, retries)
	for range retries {
		go func() {
			requeued := finished
			requeued.State = Pending
			applied, err := db.ChangeDeliveries(ctx, []DeliveryChange{{State: Succeeded, Attempts: 1, To: requeued}})
			if err != nil {
				t.Error(err)
			}
			results <- len(applied) == 1 && applied[0]
		}()
	}
	won := 0
	for range retries {
		if <-results {
			won++
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent changes from the same state were applied, want exactly 1", won, retries)
	}
	stored, err := db.Delivery(ctx, finished.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.State != Pending {
		t.Fatalf("stored state %s, want pending", stored.State)
	}
	// Same state, other attempt count: a later reading, not applied.
	applied, err := db.ChangeDeliveries(ctx, []DeliveryChange{{State: Pending, Attempts: 2, To: finished}, {State: Pending, To: Delivery{ID: "dlv_missing"}}})
	if err != nil {
		t.Fatal(err)
	}
	if applied[0] || applied[1] {
		t.Fatalf("applied %v, want none: the attempt count differs and the other delivery is not stored", applied)
	}
}

// TestCorruptFileIsAnError: a store file with garbage over its pages is
// refused with an error naming it, not a bbolt panic.
func TestCorruptFileIsAnError(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hookrelay.db")
	db := openTestStore(t, path)
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i := range 50 {
		if _, err := db.Accept(ctx, Event{Namespace: "ns", ID: fmt.Sprintf("evt_%d", i), Type: "t", Data: []byte(`{}`), AcceptedAt: now},
			[]Target{{Endpoint: "a"}}, now.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	pristine, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := os.Getpagesize()
	for _, damage := range []struct {
		name     string
		from, to int
	}{
		{"data pages", 2 * pageSize, len(pristine)},
		{"meta pages", 0, 2 * pageSize},
	} {
		data := bytes.Clone(pristine)
		for i := damage.from; i < damage.to; i++ {
			data[i] = byte(i*7 + 13)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := OpenBolt(path)
		if err == nil || !strings.Contains(err.Error(), "store file is corrupt: "+path) {
			t.Fatalf("%s: opening a corrupt file: %v, want an error saying the store file is corrupt", damage.name, err)
		}
	}
}

// TestWritesAfterCloseAreRefused: a drain that timed out can leave attempts
// that record their results while the dispatcher closes the store; they get
// an error, not a panic or a race.
func TestWritesAfterCloseAreRefused(t *testing.T) {
	ctx := context.Background()
	db := openTestStore(t, filepath.Join(t.TempDir(), "hookrelay.db"))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	err := db.RecordAttempts(ctx, []AttemptRecord{{Delivery: Delivery{ID: "d1", Namespace: "ns", Endpoint: "e"}, Attempt: Attempt{DeliveryID: "d1", Number: 1}}})
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("RecordAttempts after Close: %v, want ErrClosed", err)
	}
	if err := db.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("a second Close: %v, want ErrClosed", err)
	}
}
