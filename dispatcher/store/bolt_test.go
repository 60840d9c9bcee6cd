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
