package store

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// codec pairs an encoder with its decoder, for the checks every record
// type goes through.
type codec[T any] struct {
	encode func(T) []byte
	decode func([]byte) (T, error)
}

var (
	eventCodec    = codec[eventRecord]{encodeEvent, decodeEvent}
	deliveryCodec = codec[Delivery]{encodeDelivery, decodeDelivery}
	attemptCodec  = codec[Attempt]{encodeAttempt, decodeAttempt}
	healthCodec   = codec[Health]{encodeHealth, decodeHealth}
)

// roundTrip checks that value decodes back equal (times as instants), and
// that every cut-short prefix of its encoding, and the encoding with a byte
// more, are errors rather than a wrong value.
func (c codec[T]) roundTrip(t *testing.T, value T) {
	t.Helper()
	encoded := c.encode(value)
	decoded, err := c.decode(encoded)
	if err != nil {
		t.Fatalf("decoding %+v: %v", value, err)
	}
	if diff := cmp.Diff(value, decoded, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("round trip differs (-sent +decoded):\n%s", diff)
	}
	for n := range len(encoded) {
		if _, err := c.decode(encoded[:n]); err == nil {
			t.Fatalf("a record cut to %d of its %d bytes decoded without an error", n, len(encoded))
		}
	}
	if _, err := c.decode(append(encoded, 0)); err == nil {
		t.Fatal("a record with a byte too many decoded without an error")
	}
}

func TestCodecRoundTripsEdgeCases(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC)
	before1970 := time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC)
	eventCodec.roundTrip(t, eventRecord{})
	eventCodec.roundTrip(t, eventRecord{
		Event: Event{Namespace: "shop", ID: "évt\x00 1", Type: "order.paid", CreatedAt: before1970, AcceptedAt: at,
			Data: json.RawMessage(`{"order": 1}`), Sandbox: true, Deliveries: 2},
		Refs: []deliveryRef{{ID: "dlv_1", Endpoint: "a"}, {ID: "dlv_2", Endpoint: ""}},
	})
	deliveryCodec.roundTrip(t, Delivery{State: Pending})
	for _, state := range []State{Pending, Held, Succeeded, Failed} {
		deliveryCodec.roundTrip(t, Delivery{ID: "dlv_1", Namespace: "shop", EventID: "evt_1", Endpoint: "a", State: state,
			Attempts: 1 << 40, NextAttemptAt: at, CreatedAt: before1970, UpdatedAt: at, Interrupted: -1})
	}
	attemptCodec.roundTrip(t, Attempt{})
	attemptCodec.roundTrip(t, Attempt{DeliveryID: "dlv_1", Number: 3, StartedAt: at, DurationMS: 12.25, StatusCode: 503,
		Error: "connection refused", Response: strings.Repeat("x", 1024)})
	healthCodec.roundTrip(t, Health{})
	healthCodec.roundTrip(t, Health{Endpoint: "shop/a", UID: "uid", ConsecutiveFailures: 5, Disabled: true,
		DisabledAt: &at, LastSuccess: &before1970, LastFailure: &at, LastFailureReason: "503", ReenableToken: "t"})
}

// TestCodecRoundTripsRandomRecords: records of random content, a fixed
// seed so that a failure repeats, decode back as they were.
func TestCodecRoundTripsRandomRecords(t *testing.T) {
	random := rand.New(rand.NewPCG(1, 2))
	text := func() string {
		b := make([]byte, random.IntN(40))
		for i := range b {
			b[i] = byte(random.IntN(256))
		}
		return string(b)
	}
	instant := func() time.Time {
		if random.IntN(4) == 0 {
			return time.Time{}
		}
		return time.Unix(0, random.Int64N(1<<62)-1<<61).UTC()
	}
	pointer := func() *time.Time {
		if t := instant(); !t.IsZero() {
			return &t
		}
		return nil
	}
	number := func() int { return int(random.Int64()) >> random.IntN(64) }
	states := []State{Pending, Held, Succeeded, Failed}
	for range 2000 {
		record := eventRecord{Event: Event{Namespace: text(), ID: text(), Type: text(), CreatedAt: instant(), AcceptedAt: instant(),
			Data: []byte(text()), Sandbox: random.IntN(2) == 0, Deliveries: number()}}
		for range random.IntN(5) {
			record.Refs = append(record.Refs, deliveryRef{ID: text(), Endpoint: text()})
		}
		eventCodec.roundTrip(t, record)
		deliveryCodec.roundTrip(t, Delivery{ID: text(), Namespace: text(), EventID: text(), Endpoint: text(), State: states[random.IntN(4)],
			Attempts: number(), NextAttemptAt: instant(), CreatedAt: instant(), UpdatedAt: instant(), Interrupted: number()})
		attemptCodec.roundTrip(t, Attempt{DeliveryID: text(), Number: number(), StartedAt: instant(), DurationMS: random.NormFloat64() * 1000,
			StatusCode: number(), Error: text(), Response: text()})
		healthCodec.roundTrip(t, Health{Endpoint: text(), UID: text(), ConsecutiveFailures: number(), Disabled: random.IntN(2) == 0,
			DisabledAt: pointer(), LastSuccess: pointer(), LastFailure: pointer(), LastFailureReason: text(), ReenableToken: text()})
	}
}

func TestCodecRefusesOtherVersions(t *testing.T) {
	encoded := encodeDelivery(Delivery{ID: "dlv_1", State: Pending})
	encoded[0] = codecVersion + 1
	if _, err := decodeDelivery(encoded); err == nil || !strings.Contains(err.Error(), "unknown version") {
		t.Fatalf("a record of another version: %v, want an error naming the version", err)
	}
}

// The records of one delivered event, as the hot path stores them.
var (
	benchAt       = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	benchDelivery = Delivery{ID: "dlv_00000000000004d2", Namespace: "shop", EventID: "evt_2vQ8x7Kp", Endpoint: "orders",
		State: Succeeded, Attempts: 1, CreatedAt: benchAt, UpdatedAt: benchAt.Add(3 * time.Millisecond)}
	benchAttempt = Attempt{DeliveryID: benchDelivery.ID, Number: 1, StartedAt: benchAt, DurationMS: 1.75, StatusCode: 200, Response: `{"ok":true}`}
)

// BenchmarkRecordEncoding compares the binary records with the JSON that
// bbolt stores: encoding and decoding a delivery and its attempt.
func BenchmarkRecordEncoding(b *testing.B) {
	b.Run("binary", func(b *testing.B) {
		b.ReportAllocs()
		size := 0
		for b.Loop() {
			delivery, attempt := encodeDelivery(benchDelivery), encodeAttempt(benchAttempt)
			size = len(delivery) + len(attempt)
			if _, err := decodeDelivery(delivery); err != nil {
				b.Fatal(err)
			}
			if _, err := decodeAttempt(attempt); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(size), "stored-bytes/op")
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		size := 0
		for b.Loop() {
			delivery, err := json.Marshal(benchDelivery)
			if err != nil {
				b.Fatal(err)
			}
			attempt, err := json.Marshal(benchAttempt)
			if err != nil {
				b.Fatal(err)
			}
			size = len(delivery) + len(attempt)
			var d Delivery
			var a Attempt
			if err := json.Unmarshal(delivery, &d); err != nil {
				b.Fatal(err)
			}
			if err := json.Unmarshal(attempt, &a); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(size), "stored-bytes/op")
	})
}

// TestDeliveryIDs: a delivery id is "dlv_" and its sequence number in 16
// hex digits, so that ids sort as the numbers do (pages and releases go in
// id order, oldest first).
func TestDeliveryIDs(t *testing.T) {
	numbers := []uint64{0, 1, 15, 16, 255, 4096, 1 << 32, 0x0123456789abcdef, 1 << 63, ^uint64(0)}
	for i, n := range numbers {
		id := deliveryID(n)
		if want := fmt.Sprintf("dlv_%016x", n); id != want {
			t.Errorf("deliveryID(%d) = %q, want %q", n, id, want)
		}
		if i > 0 && deliveryID(numbers[i-1]) >= id {
			t.Errorf("deliveryID(%d) = %q sorts before deliveryID(%d) = %q", n, id, numbers[i-1], deliveryID(numbers[i-1]))
		}
	}
}
