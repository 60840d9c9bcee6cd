package pgcluster_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/hookrelay/hookrelay/internal/pgcluster"
	"github.com/hookrelay/hookrelay/internal/pgtest"
)

// A kept cluster (`make dev STORE=postgres`) keeps its databases between
// runs, and a second Start finds it running when a run was killed before
// it could stop it.
func TestStartKeepsTheClusterInItsFolder(t *testing.T) {
	dir := filepath.Join(pgtest.TempDir(t), "postgres")
	ctx := context.Background()
	exec := func(dsn, sql string) {
		t.Helper()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}

	first, err := pgcluster.Start(pgcluster.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	dsn, err := first.EnsureDatabase("kept")
	if err != nil {
		t.Fatal(err)
	}
	exec(dsn, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)")

	// The first run was killed: its server still runs.
	running, err := pgcluster.Start(pgcluster.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := running.Stop(); err != nil {
		t.Fatal(err)
	}

	again, err := pgcluster.Start(pgcluster.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := again.Stop(); err != nil {
			t.Error(err)
		}
	})
	dsn, err = again.EnsureDatabase("kept")
	if err != nil {
		t.Fatal(err)
	}
	exec(dsn, "DO $$ BEGIN IF (SELECT count(*) FROM kept) <> 1 THEN RAISE 'the row is gone'; END IF; END $$")
}
