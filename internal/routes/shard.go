package routes

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// shardOverhead is reserved in every shard for the object's metadata, so that
// the whole object, not just its data, stays under the limit.
const shardOverhead = 2048

// maxShards bounds the shard count: past it, entries that still do not fit
// share a hash prefix that no split separates.
const maxShards = 1 << 14

// EntryBudget is the most bytes one entry may take in a shard of limit
// bytes, as measured by ConfigMapEntrySize or SecretEntrySize. An entry over
// it must be left out before calling Pack.
func EntryBudget(limit int) int { return limit - shardOverhead }

// Pack assigns entries to shards whose encoded size stays under limit bytes.
// size gives an entry's encoded share of the object (ConfigMapEntrySize or
// SecretEntrySize); inUse is how many shards of this kind exist now.
//
// An entry's shard is ShardIndex of its key among a power-of-two count of
// shards, so adding, changing or removing an entry rewrites only its own
// shard, and the same entries always give the same shards, byte for byte.
// The count is the smallest power of two at least inUse under which every
// shard fits; when one overflows, the count doubles, which splits each shard
// in two. It halves only when every merged pair would fill at most half a
// shard, so that entries coming and going around a boundary do not make it
// split and merge in turn. Shards may be empty; none is returned for no
// entries.
func Pack(entries map[string][]byte, limit, inUse int, size func(key string, value []byte) int) ([]map[string][]byte, error) {
	budget := EntryBudget(limit)
	if budget <= 0 {
		return nil, fmt.Errorf("routes: shard size limit %d bytes is too small (minimum %d)", limit, shardOverhead+1)
	}
	if len(entries) == 0 {
		return nil, nil
	}
	hashes, sizes := make(map[string]uint64, len(entries)), make(map[string]int, len(entries))
	for k, v := range entries {
		n := size(k, v)
		if n > budget {
			return nil, fmt.Errorf("routes: entry %q is %d bytes, over the shard size limit of %d bytes", k, n, limit)
		}
		hashes[k], sizes[k] = keyHash(k), n
	}
	fitsIn := func(count, budget int) bool {
		loads := make([]int, count)
		for k, h := range hashes {
			i := int(h & uint64(count-1))
			if loads[i] += sizes[k]; loads[i] > budget {
				return false
			}
		}
		return true
	}
	count := 1
	for count < inUse {
		count <<= 1
	}
	for !fitsIn(count, budget) {
		if count >= maxShards {
			return nil, fmt.Errorf("routes: %d entries do not fit in %d shards of %d bytes", len(entries), count, limit)
		}
		count <<= 1
	}
	for count > 1 && fitsIn(count/2, budget/2) {
		count >>= 1
	}
	shards := make([]map[string][]byte, count)
	for i := range shards {
		shards[i] = map[string][]byte{}
	}
	for k, h := range hashes {
		shards[h&uint64(count-1)][k] = entries[k]
	}
	return shards, nil
}

// ShardIndex is the shard of an entry key among count shards, a power of
// two. The low bits of the hash pick it, so that after a split an entry is in
// the same shard or in that shard's index plus the old count, and an
// endpoint's keys shard index is its routes shard index modulo the (smaller
// or equal) keys shard count.
func ShardIndex(key string, count int) int { return int(keyHash(key) & uint64(count-1)) }

// keyHash is stable across versions and processes: shard contents depend on
// it, and a different hash would move every entry.
func keyHash(key string) uint64 {
	sum := sha256.Sum256([]byte(key))
	return binary.LittleEndian.Uint64(sum[:8])
}

// ConfigMapEntrySize is an entry's size in a stored ConfigMap: the key and the
// value as an escaped JSON string, and the key again in managedFields.
func ConfigMapEntrySize(key string, value []byte) int {
	return 2*len(key) + jsonStringLen(value) + 16
}

// jsonStringLen is len(json.Marshal(string(value))) without building it:
// a compile sizes every route, 10,000 of them at a time. It follows
// encoding/json's escaping: quotes, \" \\ \b \f \n \r \t as two bytes, other
// control characters and the HTML-sensitive <, >, & as \u00XX, U+2028 and
// U+2029 as \u20XX, and each byte of invalid UTF-8 as \ufffd.
func jsonStringLen(value []byte) int {
	n := 2
	for i := 0; i < len(value); {
		if c := value[i]; c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(value[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 6
		case r == '\u2028' || r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
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
