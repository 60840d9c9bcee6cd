package store_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/dispatcher/store/storetest"
)

// TestPebbleContract runs the store contract against pebble folders.
func TestPebbleContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Open {
		dir := filepath.Join(t.TempDir(), "pebble")
		return func(t *testing.T) store.Store { return openPebble(t, dir) }
	})
}

func openPebble(t *testing.T, dir string) *store.Pebble {
	t.Helper()
	db, err := store.OpenPebble(dir)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// TestPebbleFolderOpensOnce: a second open of a folder in use is refused
// with an error naming it, and succeeds once the first is closed.
func TestPebbleFolderOpensOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pebble")
	first := openPebble(t, dir)
	_, err := store.OpenPebble(dir)
	if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("opening a folder in use: %v, want ErrLocked naming %s", err, dir)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := openPebble(t, dir).Close(); err != nil {
		t.Fatal(err)
	}
}
