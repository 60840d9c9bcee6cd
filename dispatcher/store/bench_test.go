package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/store"
)

// BenchmarkPebbleEventLifecycle accepts an event with one delivery and
// records its successful attempt, as the dispatcher does for each event at
// fan-out 1, from 32 goroutines (so that syncs are shared as under load).
// Besides time per event it reports the process's CPU per event, which the
// machine's other load disturbs less.
func BenchmarkPebbleEventLifecycle(b *testing.B) {
	db, err := store.OpenPebble(filepath.Join(b.TempDir(), "pebble"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	data := []byte(`{"n":1,"user_id":"d1c9b98b-3190-479e-99db-04060ff3997f"}`)
	var next atomic.Int64
	b.SetParallelism(16) // 32 goroutines on 2 cores
	b.ReportAllocs()
	started := cpuTime(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := next.Add(1)
			now := time.Now()
			event := store.Event{Namespace: "team-a", ID: fmt.Sprintf("evt_%08d", n), Type: "order.created", CreatedAt: now, AcceptedAt: now, Data: data}
			accepted, err := db.Accept(ctx, event, []store.Target{{Endpoint: "orders"}}, now.Add(-24*time.Hour))
			if err != nil {
				b.Error(err)
				return
			}
			delivery := accepted.Deliveries[0]
			delivery.Attempts, delivery.State, delivery.UpdatedAt = 1, store.Succeeded, now
			attempt := store.Attempt{DeliveryID: delivery.ID, Number: 1, StartedAt: now, DurationMS: 1.5, StatusCode: 200, Response: "ok"}
			health := store.Health{Endpoint: "team-a/orders", UID: "uid-orders", LastSuccess: &now}
			if _, err := db.RecordAttempts(ctx, []store.AttemptRecord{{Delivery: delivery, Attempt: attempt, Health: &health}}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((cpuTime(b)-started).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

func cpuTime(b *testing.B) time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		b.Fatal(err)
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}
