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
			checkFixedPoint(t, "endpoint", endpoint, EncodeEndpoint, DecodeEndpoint)
		}
		if keys, err := DecodeKeys(data); err == nil {
			checkFixedPoint(t, "keys entry", keys, EncodeKeys, DecodeKeys)
		}
	})
}

// checkFixedPoint fails the test unless the decoded value encodes, decodes
// again, and encodes to the same bytes the second time.
func checkFixedPoint[T any](t *testing.T, what string, decoded T, encode func(T) ([]byte, error), decode func([]byte) (T, error)) {
	t.Helper()
	encoded, err := encode(decoded)
	if err != nil {
		t.Fatalf("a decoded %s does not encode: %v", what, err)
	}
	again, err := decode(encoded)
	if err != nil {
		t.Fatalf("an encoded %s does not decode: %v", what, err)
	}
	reencoded, err := encode(again)
	if err != nil {
		t.Fatalf("a %s decoded twice does not encode: %v", what, err)
	}
	if !bytes.Equal(reencoded, encoded) {
		t.Fatalf("%s round trip changed it:\n%s\n%s", what, encoded, reencoded)
	}
}
