package routes

import (
	"reflect"
	"testing"
	"time"
)

// TestDecodeKeysReadsThePreviousFormat: a keys shard written by the previous
// version holds a bare JSON array of keys; it decodes as the entry's keys, so
// the dispatcher keeps every endpoint until the manager rewrites the shards.
func TestDecodeKeysReadsThePreviousFormat(t *testing.T) {
	expiresAt := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	want := KeysEntry{Keys: []Key{{Secret: "whsec_AAAA"}, {Secret: "whsec_BBBB", ExpiresAt: &expiresAt}}}
	for _, data := range []string{
		`[{"secret":"whsec_AAAA"},{"secret":"whsec_BBBB","expiresAt":"2026-11-25T10:00:00Z"}]`,
		" \n\t\r[{\"secret\":\"whsec_AAAA\"},{\"secret\":\"whsec_BBBB\",\"expiresAt\":\"2026-11-25T10:00:00Z\"}]",
		`{"keys":[{"secret":"whsec_AAAA"},{"secret":"whsec_BBBB","expiresAt":"2026-11-25T10:00:00Z"}]}`,
	} {
		got, err := DecodeKeys([]byte(data))
		if err != nil {
			t.Fatalf("DecodeKeys(%q): %v", data, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("DecodeKeys(%q) = %+v, want %+v", data, got, want)
		}
	}
	if _, err := DecodeKeys([]byte(`[{"secret":1}]`)); err == nil {
		t.Fatal("DecodeKeys accepted an array of keys with a number for a secret")
	}
}
