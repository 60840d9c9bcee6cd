package routes

import (
	"bytes"
	"testing"
)

// FuzzDecodeRoutes: decoding any shard entry does not panic, and what
// decodes encodes to a fixed point: decode(encode(x)) encodes the same.
func FuzzDecodeRoutes(f *testing.F) {
	f.Add([]byte(`{"namespace":"palm","name":"a","uid":"u","generation":1,"url":"https://example.com/hook","timeout":"10s","retrySchedule":["1m","5m"],"maxInFlight":4,"headers":{"X-A":"b"},"subscriptions":[{"name":"s","eventTypes":["user.*"],"filter":"true"}]}`))
	f.Add([]byte(`[{"secret":"whsec_AAAA"},{"secret":"whsec_BBBB","expiresAt":"2026-11-25T10:00:00Z"}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if endpoint, err := DecodeEndpoint(data); err == nil {
			encoded, err := EncodeEndpoint(endpoint)
			if err != nil {
				t.Fatalf("a decoded endpoint does not encode: %v", err)
			}
			again, err := DecodeEndpoint(encoded)
			if err != nil {
				t.Fatalf("an encoded endpoint does not decode: %v", err)
			}
			if reencoded, _ := EncodeEndpoint(again); !bytes.Equal(reencoded, encoded) {
				t.Fatalf("endpoint round trip changed it:\n%s\n%s", encoded, reencoded)
			}
		}
		if keys, err := DecodeKeys(data); err == nil {
			encoded, err := EncodeKeys(keys)
			if err != nil {
				t.Fatalf("decoded keys do not encode: %v", err)
			}
			again, err := DecodeKeys(encoded)
			if err != nil {
				t.Fatalf("encoded keys do not decode: %v", err)
			}
			if reencoded, _ := EncodeKeys(again); !bytes.Equal(reencoded, encoded) {
				t.Fatalf("keys round trip changed them:\n%s\n%s", encoded, reencoded)
			}
		}
	})
}
