package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// The embedded store's record encoding: a leading version byte, then the
// fields in a fixed order as varints, length-prefixed strings and times as
// Unix nanoseconds. Smaller and several times faster than JSON, which the
// profile showed in the commit path; a new field means a new version, and
// decoders keep reading the old ones.
const codecVersion byte = 1

// errShortRecord is returned for a record cut short or of an unknown version.
var errShortRecord = errors.New("record is truncated")

// eventRecord is what the pebble store keeps per event: the event with its
// data, and the deliveries it fanned out to, so that no by-event index is
// needed.
type eventRecord struct {
	Event Event
	Refs  []deliveryRef
}

// deliveryRef names one delivery of an event.
type deliveryRef struct {
	ID       string
	Endpoint string
}

// States as one byte each.
var stateCodes = map[State]byte{Pending: 1, Held: 2, Succeeded: 3, Failed: 4}

var statesByCode = func() map[byte]State {
	out := map[byte]State{}
	for state, code := range stateCodes {
		out[code] = state
	}
	return out
}()

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendBytes(b, s []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// appendTime writes 0 for the zero time, else 1 and the Unix nanoseconds,
// which cover the years 1678 to 2262.
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	return binary.AppendVarint(append(b, 1), t.UnixNano())
}

func appendTimePointer(b []byte, t *time.Time) []byte {
	if t == nil {
		return append(b, 0)
	}
	return binary.AppendVarint(append(b, 1), t.UnixNano())
}

func encodeEvent(record eventRecord) []byte {
	event := record.Event
	b := make([]byte, 0, 64+len(event.Namespace)+len(event.ID)+len(event.Type)+len(event.Data)+len(record.Refs)*32)
	b = append(b, codecVersion)
	b = appendString(b, event.Namespace)
	b = appendString(b, event.ID)
	b = appendString(b, event.Type)
	b = appendTime(b, event.CreatedAt)
	b = appendTime(b, event.AcceptedAt)
	b = appendBool(b, event.Sandbox)
	b = binary.AppendVarint(b, int64(event.Deliveries))
	b = appendBytes(b, event.Data)
	b = binary.AppendUvarint(b, uint64(len(record.Refs)))
	for _, ref := range record.Refs {
		b = appendString(b, ref.ID)
		b = appendString(b, ref.Endpoint)
	}
	return b
}

func encodeDelivery(d Delivery) []byte {
	b := make([]byte, 0, 48+len(d.ID)+len(d.Namespace)+len(d.EventID)+len(d.Endpoint))
	b = append(b, codecVersion)
	b = appendString(b, d.ID)
	b = appendString(b, d.Namespace)
	b = appendString(b, d.EventID)
	b = appendString(b, d.Endpoint)
	b = append(b, stateCodes[d.State])
	b = binary.AppendVarint(b, int64(d.Attempts))
	b = appendTime(b, d.NextAttemptAt)
	b = appendTime(b, d.CreatedAt)
	b = appendTime(b, d.UpdatedAt)
	return binary.AppendVarint(b, int64(d.Interrupted))
}

func encodeAttempt(a Attempt) []byte {
	b := make([]byte, 0, 40+len(a.DeliveryID)+len(a.Error)+len(a.Response))
	b = append(b, codecVersion)
	b = appendString(b, a.DeliveryID)
	b = binary.AppendVarint(b, int64(a.Number))
	b = appendTime(b, a.StartedAt)
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(a.DurationMS))
	b = binary.AppendVarint(b, int64(a.StatusCode))
	b = appendString(b, a.Error)
	return appendString(b, a.Response)
}

func encodeHealth(h Health) []byte {
	b := make([]byte, 0, 64+len(h.Endpoint)+len(h.UID)+len(h.LastFailureReason)+len(h.ReenableToken))
	b = append(b, codecVersion)
	b = appendString(b, h.Endpoint)
	b = appendString(b, h.UID)
	b = binary.AppendVarint(b, int64(h.ConsecutiveFailures))
	b = appendBool(b, h.Disabled)
	b = appendTimePointer(b, h.DisabledAt)
	b = appendTimePointer(b, h.LastSuccess)
	b = appendTimePointer(b, h.LastFailure)
	b = appendString(b, h.LastFailureReason)
	return appendString(b, h.ReenableToken)
}

// reader decodes a record field by field; the first error sticks, so that
// a decoder checks once at the end.
type reader struct {
	b   []byte
	err error
}

// newReader checks the version byte.
func newReader(b []byte) *reader {
	r := &reader{b: b}
	if len(b) == 0 || b[0] != codecVersion {
		r.err = errShortRecord
		if len(b) > 0 {
			r.err = fmt.Errorf("record of unknown version %d", b[0])
		}
		return r
	}
	r.b = b[1:]
	return r
}

// fail marks the record as cut short, unless it failed already.
func (r *reader) fail() {
	if r.err == nil {
		r.err = errShortRecord
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.fail()
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) int() int { return int(r.varint()) }

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes returns a length-prefixed field, still in the record's memory.
func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// string copies: the record's memory belongs to the engine.
func (r *reader) string() string { return string(r.bytes()) }

func (r *reader) bool() bool { return r.byte() == 1 }

func (r *reader) time() time.Time {
	if r.byte() == 0 {
		return time.Time{}
	}
	nanos := r.varint()
	if r.err != nil {
		return time.Time{}
	}
	return time.Unix(0, nanos).UTC()
}

func (r *reader) timePointer() *time.Time {
	if r.byte() == 0 {
		return nil
	}
	nanos := r.varint()
	if r.err != nil {
		return nil
	}
	t := time.Unix(0, nanos).UTC()
	return &t
}

func (r *reader) state() State {
	code := r.byte()
	state, ok := statesByCode[code]
	if !ok && r.err == nil {
		r.err = fmt.Errorf("unknown delivery state %d", code)
	}
	return state
}

// done is the decoder's result: an error for a short record or for bytes
// left over.
func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d bytes after the record", len(r.b))
	}
	return r.err
}

func decodeEvent(b []byte) (eventRecord, error) {
	r := newReader(b)
	var record eventRecord
	e := &record.Event
	e.Namespace, e.ID, e.Type = r.string(), r.string(), r.string()
	e.CreatedAt, e.AcceptedAt = r.time(), r.time()
	e.Sandbox, e.Deliveries = r.bool(), r.int()
	if data := r.bytes(); data != nil {
		e.Data = append([]byte(nil), data...)
	}
	refs := r.uvarint()
	if r.err == nil && refs > uint64(len(r.b)) { // each ref takes two bytes at least
		r.fail()
	}
	for i := uint64(0); r.err == nil && i < refs; i++ {
		record.Refs = append(record.Refs, deliveryRef{ID: r.string(), Endpoint: r.string()})
	}
	return record, r.done()
}

func decodeDelivery(b []byte) (Delivery, error) {
	r := newReader(b)
	d := Delivery{ID: r.string(), Namespace: r.string(), EventID: r.string(), Endpoint: r.string()}
	d.State, d.Attempts = r.state(), r.int()
	d.NextAttemptAt, d.CreatedAt, d.UpdatedAt = r.time(), r.time(), r.time()
	d.Interrupted = r.int()
	return d, r.done()
}

func decodeAttempt(b []byte) (Attempt, error) {
	r := newReader(b)
	a := Attempt{DeliveryID: r.string(), Number: r.int(), StartedAt: r.time()}
	if duration := r.bytes8(); r.err == nil {
		a.DurationMS = math.Float64frombits(duration)
	}
	a.StatusCode, a.Error, a.Response = r.int(), r.string(), r.string()
	return a, r.done()
}

func (r *reader) bytes8() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func decodeHealth(b []byte) (Health, error) {
	r := newReader(b)
	h := Health{Endpoint: r.string(), UID: r.string(), ConsecutiveFailures: r.int(), Disabled: r.bool()}
	h.DisabledAt, h.LastSuccess, h.LastFailure = r.timePointer(), r.timePointer(), r.timePointer()
	h.LastFailureReason, h.ReenableToken = r.string(), r.string()
	return h, r.done()
}
