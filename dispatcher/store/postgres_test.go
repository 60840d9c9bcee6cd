package store_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/dispatcher/store/storetest"
	"github.com/hookrelay/hookrelay/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestPostgresContract runs the store contract against a real PostgreSQL,
// one new database per case.
func TestPostgresContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Open {
		dsn := pgtest.Database(t)
		return func(t *testing.T) store.Store {
			t.Helper()
			db, err := store.OpenPostgres(t.Context(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			return db
		}
	})
}

// TestPostgresMigratesOnce: replicas opening a new database at once all
// start, and each migration is applied once, in order.
func TestPostgresMigratesOnce(t *testing.T) {
	dsn := pgtest.Database(t)
	const replicas = 4
	var wg sync.WaitGroup
	for range replicas {
		wg.Go(func() {
			db, err := store.OpenPostgres(t.Context(), dsn)
			if err != nil {
				t.Error(err)
				return
			}
			if err := db.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	files, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, file := range files {
		want = append(want, file.Name())
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(t.Context()))
	rows, err := conn.Query(t.Context(), "SELECT name FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(applied, want) {
		t.Fatalf("migrations applied: %q, want each of %q once", applied, want)
	}
}

// TestPostgresPartitionMatchesGo: the partition PostgreSQL computes for a
// stored delivery is store.Partition's, or a replica would claim the wrong
// endpoints' deliveries.
func TestPostgresPartitionMatchesGo(t *testing.T) {
	dsn := pgtest.Database(t)
	db, err := store.OpenPostgres(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	}()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(t.Context()))
	// Names with multibyte runes and the extremes of the hash's range.
	endpoints := []string{"a", "orders", "é-webhook", "endpoint-with-a-long-name-0123456789"}
	for i := range 300 {
		endpoints = append(endpoints, fmt.Sprintf("endpoint-%d", i))
	}
	targets := make([]store.Target, len(endpoints))
	for i, endpoint := range endpoints {
		targets[i] = store.Target{Endpoint: endpoint}
	}
	now := time.Now().UTC()
	if _, err := db.Accept(t.Context(), store.Event{Namespace: "tenant-ü", ID: "evt_1", Type: "t", Data: []byte("{}"), AcceptedAt: now}, targets, now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(t.Context(), "SELECT namespace, endpoint, partition FROM deliveries")
	if err != nil {
		t.Fatal(err)
	}
	type stored struct {
		Namespace, Endpoint string
		Partition           int
	}
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[stored])
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(endpoints) {
		t.Fatalf("%d deliveries stored, want %d", len(all), len(endpoints))
	}
	for _, row := range all {
		if want := store.Partition(row.Namespace, row.Endpoint); row.Partition != want {
			t.Errorf("partition of %s/%s: PostgreSQL %d, Go %d", row.Namespace, row.Endpoint, row.Partition, want)
		}
	}
}
