package routes

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
	"testing"
)

// TestOneChangeRewritesOneShard: among 10,000 endpoints, adding, changing or
// removing one rewrites at most one routes shard and one keys shard, and the
// same entries pack into the same shards.
func TestOneChangeRewritesOneShard(t *testing.T) {
	const limit = 512 << 10
	routeEntries, keyEntries := tenThousandEndpoints(t)
	const changed, removed = "tenant-0500.endpoint-5000", "tenant-0042.endpoint-420"
	added := EntryKey("tenant-0000", "a-new-endpoint")
	edits := map[string]func(map[string][]byte){
		"add":    func(entries map[string][]byte) { entries[added] = entries[changed] },
		"change": func(entries map[string][]byte) { entries[changed] = append(bytes.Clone(entries[changed]), ' ') },
		"remove": func(entries map[string][]byte) { delete(entries, removed) },
	}
	for _, kind := range []struct {
		name    string
		entries map[string][]byte
		size    func(string, []byte) int
	}{
		{"routes", routeEntries, ConfigMapEntrySize},
		{"keys", keyEntries, SecretEntrySize},
	} {
		before, err := Pack(kind.entries, limit, 0, kind.size)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Pack(maps.Clone(kind.entries), limit, len(before), kind.size)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(again, before) {
			t.Fatalf("%s: the same entries packed into different shards", kind.name)
		}
		for editName, edit := range edits {
			entries := maps.Clone(kind.entries)
			edit(entries)
			after, err := Pack(entries, limit, len(before), kind.size)
			if err != nil {
				t.Fatal(err)
			}
			if rewritten := rewrittenShards(before, after); rewritten != 1 {
				t.Errorf("%s, %s one entry of %d: %d of %d shards rewritten, want 1",
					kind.name, editName, len(kind.entries), rewritten, len(before))
			}
		}
		t.Logf("%s: %d shards", kind.name, len(before))
	}
}

// rewrittenShards counts the shards, by index, whose content differs.
func rewrittenShards(before, after []map[string][]byte) int {
	rewritten := 0
	for i := range max(len(before), len(after)) {
		if i >= len(before) || i >= len(after) || !maps.EqualFunc(before[i], after[i], bytes.Equal) {
			rewritten++
		}
	}
	return rewritten
}

// TestShardCountGrowsBySplittingAndShrinksWithMargin: an overflowing shard
// doubles the count; the count in use is kept until every merged pair would
// fill at most half a shard.
func TestShardCountGrowsBySplittingAndShrinksWithMargin(t *testing.T) {
	const limit = 16 << 10
	budget := EntryBudget(limit)
	entriesOf := func(total int) map[string][]byte {
		entries := map[string][]byte{}
		for i := 0; i*1024 < total; i++ {
			entries[fmt.Sprintf("ns.endpoint-%d", i)] = bytes.Repeat([]byte("x"), 1024-ConfigMapEntrySize(fmt.Sprintf("ns.endpoint-%d", i), nil))
		}
		return entries
	}
	for _, tc := range []struct {
		name       string
		total      int
		inUse      int
		wantShards int
		// atLeast: how far past the minimum a split goes depends on the hash.
		atLeast bool
	}{
		{"one shard from none", budget * 6 / 10, 0, 1, false},
		{"kept when merging would fill over half", budget * 6 / 10, 2, 2, false},
		{"merged when well under half", budget * 4 / 10, 2, 1, false},
		{"several halvings at once", budget * 4 / 10, 8, 1, false},
		{"a count not a power of two rounds up", budget * 4 / 10 * 3, 3, 4, false},
		{"split when a shard overflows", budget * 3, 1, 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries := entriesOf(tc.total)
			shards, err := Pack(entries, limit, tc.inUse, ConfigMapEntrySize)
			if err != nil {
				t.Fatal(err)
			}
			if len(shards) != tc.wantShards && !(tc.atLeast && len(shards) > tc.wantShards && len(shards)&(len(shards)-1) == 0) {
				t.Fatalf("%d shards, want %d", len(shards), tc.wantShards)
			}
			held := 0
			for i, shard := range shards {
				used := 0
				for k, v := range shard {
					if ShardIndex(k, len(shards)) != i {
						t.Fatalf("%s in shard %d, want %d", k, i, ShardIndex(k, len(shards)))
					}
					used += ConfigMapEntrySize(k, v)
				}
				if used > budget {
					t.Fatalf("shard %d holds %d bytes, over the budget of %d", i, used, budget)
				}
				held += len(shard)
			}
			if held != len(entries) {
				t.Fatalf("shards hold %d entries, want %d", held, len(entries))
			}
		})
	}
}
