package store_test

import (
	"testing"

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
