package store_test

import (
	"context"
	"os"
	"slices"
	"sync"
	"testing"

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
