package routes

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
)

// shardOverhead is reserved in every shard for the object's metadata, so that
// the whole object, not just its data, stays under the limit.
const shardOverhead = 2048

// EntryBudget is the most bytes one entry may take in a shard of limit
// bytes, as measured by ConfigMapEntrySize or SecretEntrySize. An entry over
// it must be left out before calling Pack.
func EntryBudget(limit int) int { return limit - shardOverhead }

// Pack splits entries into shards whose encoded size stays under limit bytes,
// filling them in key order. The same entries always give the same shards,
// byte for byte, so an unchanged configuration rewrites nothing.
// size gives an entry's encoded share of the object (ConfigMapEntrySize or
// SecretEntrySize).
func Pack(entries map[string][]byte, limit int, size func(key string, value []byte) int) ([]map[string][]byte, error) {
	budget := EntryBudget(limit)
	if budget <= 0 {
		return nil, fmt.Errorf("routes: shard size limit %d bytes is too small (minimum %d)", limit, shardOverhead+1)
	}
	keys := make([]string, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	slices.Sort(keys)

	var shards []map[string][]byte
	current, used := map[string][]byte{}, 0
	for _, k := range keys {
		n := size(k, entries[k])
		if n > budget {
			return nil, fmt.Errorf("routes: entry %q is %d bytes, over the shard size limit of %d bytes", k, n, limit)
		}
		if used+n > budget {
			shards = append(shards, current)
			current, used = map[string][]byte{}, 0
		}
		current[k] = entries[k]
		used += n
	}
	if len(current) > 0 {
		shards = append(shards, current)
	}
	return shards, nil
}

// ConfigMapEntrySize is an entry's size in a stored ConfigMap: the key and the
// value as an escaped JSON string, and the key again in managedFields.
func ConfigMapEntrySize(key string, value []byte) int {
	quoted, err := json.Marshal(string(value))
	if err != nil { // a string always marshals
		panic(err)
	}
	return 2*len(key) + len(quoted) + 16
}

// SecretEntrySize is an entry's size in a stored Secret: the key and the
// base64 of the value, and the key again in managedFields.
func SecretEntrySize(key string, value []byte) int {
	return 2*len(key) + base64.StdEncoding.EncodedLen(len(value)) + 18
}

// ShardName names shard index of a kind: prefix + zero-padded index.
func ShardName(prefix string, index int) string {
	return fmt.Sprintf("%s%03d", prefix, index)
}
