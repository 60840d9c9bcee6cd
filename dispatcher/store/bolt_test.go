package store_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/dispatcher/store/storetest"
)

// TestBoltContract runs the store contract against bbolt files.
func TestBoltContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Open {
		path := filepath.Join(t.TempDir(), "hookrelay.db")
		return func(t *testing.T) store.Store { return openTestStore(t, path) }
	})
}

func openTestStore(t *testing.T, path string) *store.Bolt {
	t.Helper()
	db, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// TestCorruptFileIsAnError: a store file with garbage over its pages is
// refused with an error naming it, not a bbolt panic.
func TestCorruptFileIsAnError(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "hookrelay.db")
	db := openTestStore(t, path)
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i := range 50 {
		if _, err := db.Accept(ctx, store.Event{Namespace: "ns", ID: fmt.Sprintf("evt_%d", i), Type: "t", Data: []byte(`{}`), AcceptedAt: now},
			[]store.Target{{Endpoint: "a"}}, now.Add(-time.Hour)); err != nil {
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
		_, err := store.OpenBolt(path)
		if err == nil || !strings.Contains(err.Error(), "store file is corrupt: "+path) {
			t.Fatalf("%s: opening a corrupt file: %v, want an error saying the store file is corrupt", damage.name, err)
		}
	}
}

// TestSweepDeletesInBatches: a sweep deletes a batch per write transaction
// and the store takes other writes between two batches, so that a sweep of
// many finished deliveries does not hold up accepting events.
func TestSweepDeletesInBatches(t *testing.T) {
	ctx := t.Context()
	db := openTestStore(t, filepath.Join(t.TempDir(), "hookrelay.db"))
	defer db.Close()
	base := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var records []store.AttemptRecord
	for i := range 7 {
		accepted, err := db.Accept(ctx, store.Event{Namespace: "shop", ID: fmt.Sprintf("evt_%d", i), Type: "order.created", Data: []byte(`{}`),
			AcceptedAt: base}, []store.Target{{Endpoint: "a"}}, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		delivery := accepted.Deliveries[0]
		delivery.State, delivery.Attempts, delivery.UpdatedAt = store.Succeeded, 1, base.Add(time.Minute)
		records = append(records, store.AttemptRecord{Delivery: delivery, Attempt: store.Attempt{DeliveryID: delivery.ID, Number: 1, StartedAt: base, StatusCode: 200}})
	}
	if _, err := db.RecordAttempts(ctx, records); err != nil {
		t.Fatal(err)
	}
	var batches []int
	store.SetSweepSizes(db, 2, 3, func(deleted int) {
		batches = append(batches, deleted)
		// The next batch is not deleted yet, and a write goes through.
		if err := db.PutHealth(ctx, store.Health{Endpoint: fmt.Sprintf("shop/between-%d", len(batches))}); err != nil {
			t.Error(err)
		}
	})
	swept, err := db.Sweep(ctx, base.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// The deliveries, then their events.
	if swept != 7 || fmt.Sprint(batches) != "[3 3 1 3 3 1]" {
		t.Errorf("Sweep = %d in batches %v, want 7 in batches [3 3 1], then their 7 events in [3 3 1]", swept, batches)
	}
	for _, record := range records {
		if _, err := db.Delivery(ctx, record.Delivery.ID); !store.IsNotFound(err) {
			t.Errorf("swept delivery %s: %v, want ErrNotFound", record.Delivery.ID, err)
		}
		if _, err := db.Event(ctx, "shop", record.Delivery.EventID); !store.IsNotFound(err) {
			t.Errorf("event %s of a swept delivery: %v, want ErrNotFound", record.Delivery.EventID, err)
		}
	}
}
