package store

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestPebbleCachesBlocks: a record read again comes from the block cache,
// not from the table's file, once memtables have been flushed (pebble
// reserves the memtables' size in the block cache, which a cache of that
// size alone leaves with no room for blocks).
func TestPebbleCachesBlocks(t *testing.T) {
	p, err := OpenPebble(filepath.Join(t.TempDir(), "pebble"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	value := make([]byte, 1024)
	// Two memtables' worth, flushed: tables on disk, and the memtables'
	// reservations as they are under a steady load.
	for i := range 2 * pebbleMemTableSize / len(value) {
		if err := p.db.Set(fmt.Appendf(nil, "k%08d", i), value, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.db.Flush(); err != nil {
		t.Fatal(err)
	}
	read := func() {
		t.Helper()
		_, closer, err := p.db.Get([]byte("k00000001"))
		if err != nil {
			t.Fatal(err)
		}
		if err := closer.Close(); err != nil {
			t.Fatal(err)
		}
	}
	read() // loads the table's blocks
	before := p.db.Metrics().BlockCache
	for range 100 {
		read()
	}
	after := p.db.Metrics().BlockCache
	if misses := after.Misses - before.Misses; misses > 0 {
		t.Fatalf("100 reads of one record missed the block cache %d times (hits %d); want every block cached after the first read",
			misses, after.Hits-before.Hits)
	}
}
