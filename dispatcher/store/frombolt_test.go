package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/dispatcher/store/storetest"
)

// contents is everything a store answers about the events and endpoints
// given, through the Store interface.
type contents struct {
	Events     []store.Event
	Deliveries map[string][]store.Delivery // by event id
	Attempts   map[string][]store.Attempt  // by delivery id
	ByEndpoint map[string][]store.Delivery // by endpoint
	Active     []store.Delivery
	Healths    []store.Health
}

func readContents(t *testing.T, s store.Store, eventIDs, endpoints []string) contents {
	t.Helper()
	ctx := t.Context()
	out := contents{Deliveries: map[string][]store.Delivery{}, Attempts: map[string][]store.Attempt{}, ByEndpoint: map[string][]store.Delivery{}}
	for _, id := range eventIDs {
		event, err := s.Event(ctx, "shop", id)
		if err != nil {
			t.Fatal(err)
		}
		out.Events = append(out.Events, event)
		deliveries, err := s.DeliveriesOf(ctx, "shop", id)
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(deliveries, func(a, b store.Delivery) int { return strings.Compare(a.ID, b.ID) })
		out.Deliveries[id] = deliveries
		for _, delivery := range deliveries {
			if out.Attempts[delivery.ID], err = s.Attempts(ctx, delivery.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, endpoint := range endpoints {
		page, _, err := s.EndpointDeliveries(ctx, "shop", endpoint, store.DeliveryQuery{})
		if err != nil {
			t.Fatal(err)
		}
		out.ByEndpoint[endpoint] = page
	}
	var err error
	if out.Active, err = storetest.Active(ctx, s, store.AllPartitions()); err != nil {
		t.Fatal(err)
	}
	if out.Healths, err = s.Healths(ctx); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(out.Healths, func(a, b store.Health) int { return strings.Compare(a.Endpoint, b.Endpoint) })
	return out
}

// TestBoltMigratesToPebble: a bbolt store's events (with their data),
// deliveries in every state, attempts and health read back the same from
// pebble after MigrateBolt, which renames the file; new delivery ids sort
// after the copied ones, finished deliveries are swept as before, and a
// second start copies nothing.
func TestBoltMigratesToPebble(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	boltPath := filepath.Join(dir, "hookrelay.db")
	from := openTestStore(t, boltPath)
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	disabledAt := at.Add(time.Minute)
	if err := from.PutHealth(ctx, store.Health{Endpoint: "shop/down", UID: "uid-down", ConsecutiveFailures: 5, Disabled: true,
		DisabledAt: &disabledAt, LastFailure: &disabledAt, LastFailureReason: "503", ReenableToken: "token"}); err != nil {
		t.Fatal(err)
	}
	eventIDs := []string{"evt_1", "evt_2", "evt_3", "evt_empty"}
	var all []store.Delivery
	for i, id := range eventIDs {
		to := []store.Target{{Endpoint: "orders"}, {Endpoint: "down"}, {Endpoint: "paused", Held: true}}
		if id == "evt_empty" {
			to = nil
		}
		accepted, err := from.Accept(ctx, store.Event{Namespace: "shop", ID: id, Type: "order.paid", CreatedAt: at, AcceptedAt: at.Add(time.Duration(i) * time.Second),
			Data: []byte(`{"order": "` + id + `"}`), Sandbox: i == 2}, to, at.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, accepted.Deliveries...)
	}
	// The first event's delivery to orders succeeds after a failure; the
	// second's fails for good.
	record := func(delivery store.Delivery, state store.State, status int) store.Delivery {
		next := delivery
		next.State, next.Attempts, next.UpdatedAt = state, delivery.Attempts+1, at.Add(time.Duration(delivery.Attempts+1)*time.Minute)
		if state != store.Pending {
			next.NextAttemptAt = time.Time{}
		}
		failedAt := next.UpdatedAt
		applied, err := from.RecordAttempts(ctx, []store.AttemptRecord{{Delivery: next,
			Attempt: store.Attempt{DeliveryID: delivery.ID, Number: next.Attempts, StartedAt: next.UpdatedAt, DurationMS: 2.5, StatusCode: status, Response: "body"},
			Health:  &store.Health{Endpoint: "shop/orders", UID: "uid-orders", LastFailure: &failedAt, ConsecutiveFailures: next.Attempts}}})
		if err != nil || !applied[0] {
			t.Fatalf("recording an attempt: %v, applied %v", err, applied)
		}
		return next
	}
	record(record(all[0], store.Pending, 503), store.Succeeded, 200)
	record(all[3], store.Failed, 500)
	endpoints := []string{"orders", "down", "paused"}
	want := readContents(t, from, eventIDs, endpoints)
	if err := from.Close(); err != nil {
		t.Fatal(err)
	}

	to := openPebble(t, filepath.Join(dir, "pebble"))
	defer func() {
		if err := to.Close(); err != nil {
			t.Error(err)
		}
	}()
	report, err := store.MigrateBolt(boltPath, to)
	if err != nil {
		t.Fatal(err)
	}
	wantReport := store.BoltMigration{From: boltPath, To: boltPath + ".migrated", Events: 4, Deliveries: 9, Attempts: 3, Healths: 2}
	if report == nil || *report != wantReport {
		t.Fatalf("migration report %+v, want %+v", report, wantReport)
	}
	got := readContents(t, to, eventIDs, endpoints)
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("pebble after the migration differs from bbolt (-bbolt +pebble):\n%s", diff)
	}
	if _, err := os.Stat(boltPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the bbolt file is still at %s after the migration: %v", boltPath, err)
	}
	if _, err := os.Stat(boltPath + ".migrated"); err != nil {
		t.Fatalf("the bbolt file was not renamed: %v", err)
	}
	if again, err := store.MigrateBolt(boltPath, to); again != nil || err != nil {
		t.Fatalf("a second migration = %+v, %v; want nothing to do", again, err)
	}

	newer, err := to.Accept(ctx, store.Event{Namespace: "shop", ID: "evt_new", Type: "order.paid", AcceptedAt: at, Data: []byte(`{}`)},
		[]store.Target{{Endpoint: "orders"}}, at.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if last := all[len(all)-1].ID; newer.Deliveries[0].ID <= last {
		t.Fatalf("a delivery accepted after the migration has id %s, not after the copied %s", newer.Deliveries[0].ID, last)
	}
	// The two finished deliveries are swept, and so is the event left with none.
	if swept, err := to.Sweep(ctx, at.Add(time.Hour)); err != nil || swept != 2 {
		t.Fatalf("sweep after the migration = %d, %v; want the 2 finished deliveries", swept, err)
	}
	if _, err := to.Event(ctx, "shop", "evt_empty"); !store.IsNotFound(err) {
		t.Fatalf("an event with no delivery, older than the horizon, after the sweep: %v, want ErrNotFound", err)
	}
}

// TestMigrationRefusesAPebbleStoreInUse: a bbolt file that reappears beside
// a pebble store that has handed out delivery ids is not copied into it
// (the ids would collide); the error names both.
func TestMigrationRefusesAPebbleStoreInUse(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	boltPath, pebbleDir := filepath.Join(dir, "hookrelay.db"), filepath.Join(dir, "pebble")
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for _, s := range []store.Store{openTestStore(t, boltPath), openPebble(t, pebbleDir)} {
		if _, err := s.Accept(ctx, store.Event{Namespace: "shop", ID: "evt_1", AcceptedAt: at, Data: []byte(`{}`)},
			[]store.Target{{Endpoint: "orders"}}, at.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	to := openPebble(t, pebbleDir)
	defer func() {
		if err := to.Close(); err != nil {
			t.Error(err)
		}
	}()
	_, err := store.MigrateBolt(boltPath, to)
	if err == nil || !strings.Contains(err.Error(), pebbleDir+" holds deliveries of its own, so "+boltPath+" cannot be copied") {
		t.Fatalf("migrating into a pebble store in use: %v, want a refusal naming both", err)
	}
	if _, err := os.Stat(boltPath); err != nil {
		t.Fatalf("the refused bbolt file moved: %v", err)
	}
}
