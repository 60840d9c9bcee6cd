// Package pgtest runs a throwaway PostgreSQL cluster for a test binary:
// initdb into a temporary folder, the server listening on a Unix socket in
// that folder only (no TCP port to collide on), one database per test.
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	dsn := pgtest.Database(t)
//
// The cluster itself is internal/pgcluster's, which programs other than
// tests use.
package pgtest

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hookrelay/hookrelay/internal/pgcluster"
)

var (
	startOnce sync.Once
	shared    *Cluster
	startErr  error
	databases atomic.Int64
)

// Main runs the tests, then stops the cluster if one of them started it,
// and exits. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if err := Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		code = max(code, 1)
	}
	os.Exit(code)
}

// Stop stops the cluster if a test started it, for a TestMain that does
// more than Main around m.Run.
func Stop() error {
	if shared == nil {
		return nil
	}
	return shared.Stop()
}

// Database creates an empty database in the test binary's cluster, which
// the first call starts, and returns its DSN. Missing server binaries fail
// the test: PostgreSQL is part of what `make test` sets up.
func Database(t testing.TB) string {
	t.Helper()
	startOnce.Do(func() { shared, startErr = StartCluster(Options{}) })
	if startErr != nil {
		t.Fatalf("pgtest: %v", startErr)
	}
	dsn, err := shared.CreateDatabase(fmt.Sprintf("test_%d", databases.Add(1)))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return dsn
}

// Options of StartCluster.
type Options = pgcluster.Options

// Cluster is a running server and the folder that holds it.
type Cluster = pgcluster.Cluster

// StartCluster initialises and starts a cluster in a new temporary folder
// (or in Options.Dir); Stop stops it and removes the temporary folder.
func StartCluster(options Options) (*Cluster, error) {
	return pgcluster.Start(options)
}

// TempDir is a temporary folder, removed when the test ends, that
// PostgreSQL's server can reach when the tests run as root (it then runs as
// the postgres user): t.TempDir's parent folder is closed to others.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hookrelay-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Error(err)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
