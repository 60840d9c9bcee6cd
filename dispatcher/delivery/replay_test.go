package delivery

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hookrelay/hookrelay/dispatcher/store"
)

// readTogether lets no Delivery read return until n have been made, so that
// concurrent retries all act on the same reading.
type readTogether struct {
	store.Store
	all sync.WaitGroup
}

func (s *readTogether) Delivery(ctx context.Context, id string) (store.Delivery, error) {
	delivery, err := s.Store.Delivery(ctx, id)
	s.all.Done()
	s.all.Wait()
	return delivery, err
}

// TestConcurrentRetriesOneWins: four retries that read the same finished
// delivery: one is accepted, three are refused as not retriable.
func TestConcurrentRetriesOneWins(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenBolt(filepath.Join(t.TempDir(), "hookrelay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	accepted, err := db.Accept(ctx, store.Event{Namespace: "ns", ID: "evt_1", Type: "t", Data: []byte(`{}`), AcceptedAt: now}, []store.Target{{Endpoint: "a"}}, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	finished := accepted.Deliveries[0]
	finished.State, finished.Attempts = store.Succeeded, 1
	if err := db.UpdateDeliveries(ctx, []store.Delivery{finished}); err != nil {
		t.Fatal(err)
	}
	const retries = 4
	shared := &readTogether{Store: db}
	shared.all.Add(retries)
	engine, err := New(ctx, Options{Store: shared, Metrics: NewMetrics(prometheus.NewRegistry()), Log: logr.Discard(), Clock: clocktesting.NewFakeClock(now)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = engine.Stop(ctx) }()

	errs := make(chan error, retries)
	for range retries {
		go func() {
			_, err := engine.Retry(ctx, "ns", finished.ID)
			errs <- err
		}()
	}
	won, refused := 0, 0
	for range retries {
		switch err := <-errs; {
		case err == nil:
			won++
		case errors.Is(err, ErrNotRetriable):
			refused++
		default:
			t.Fatal(err)
		}
	}
	if won != 1 || refused != retries-1 {
		t.Fatalf("%d retries accepted and %d refused, want 1 and %d", won, refused, retries-1)
	}
}
