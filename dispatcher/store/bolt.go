package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/hookrelay/hookrelay/internal/batch"
)

var (
	bucketEvents     = []byte("events")      // namespace \x00 id → Event
	bucketEventData  = []byte("event-data")  // namespace \x00 id → the event's data, raw JSON
	bucketDeliveries = []byte("deliveries")  // delivery id → Delivery
	bucketActive     = []byte("active")      // delivery id → nothing: pending and held deliveries
	bucketAttempts   = []byte("attempts")    // delivery id / number → Attempt
	bucketHealth     = []byte("health")      // namespace/name → Health
	bucketByEvent    = []byte("by-event")    // namespace \x00 event id \x00 delivery id → nothing
	bucketByEndpoint = []byte("by-endpoint") // namespace \x00 endpoint \x00 delivery id → nothing
)

func byEndpointKey(d Delivery) []byte {
	return []byte(d.Namespace + "\x00" + d.Endpoint + "\x00" + d.ID)
}

// Bolt is the embedded store: one bbolt file on the dispatcher's volume.
//
// Writes go through one writer goroutine that commits everything waiting in
// one transaction (group commit): while one commit and its fsync run, the
// next writes gather, so concurrent callers share fsyncs without waiting for
// a timer.
type Bolt struct {
	db     *bolt.DB
	writes chan *write
	done   chan struct{}

	// closing guards writes against Close: a drain that timed out can leave
	// attempts that record their results after the store was closed.
	closing sync.RWMutex
	closed  bool

	// sweepScan and sweepBatch are the defaults (smaller in tests);
	// sweepBatchDone, when set (by tests), hears of each batch a sweep
	// deleted, once it is committed.
	sweepScan, sweepBatch int
	sweepBatchDone        func(deleted int)
}

// write is one caller's part of a group commit.
type write struct {
	apply  func(*bolt.Tx) error
	result chan error
}

// maxGroup bounds the writes committed together.
const maxGroup = 4096

// ErrCorrupt is returned for a store file that cannot be read.
var ErrCorrupt = errors.New("store file is corrupt")

// OpenBolt opens (or creates) the store file. A damaged file is refused
// with ErrCorrupt naming it.
func OpenBolt(path string) (*Bolt, error) {
	if err := checkFile(path); err != nil {
		return nil, err
	}
	// As etcd runs it: the freelist is rebuilt on open rather than written
	// with every commit.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, corruptOr(path, fmt.Errorf("store: opening %s: %w", path, err))
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketEvents, bucketEventData, bucketDeliveries, bucketActive, bucketAttempts, bucketHealth, bucketByEvent, bucketByEndpoint} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: creating buckets in %s: %w", path, err)
	}
	b := &Bolt{db: db, writes: make(chan *write, maxGroup), done: make(chan struct{}), sweepScan: defaultSweepScan, sweepBatch: defaultSweepBatch}
	go b.writer()
	return b, nil
}

// checkFile reads every page of an existing store file once, read-only.
// bbolt trusts its pages: opening a damaged file rebuilds the freelist in a
// goroutine of its own, whose panic no caller can recover, and Tx.Check
// does the same; a walk of every bucket here meets the damage first, in
// this goroutine, where it is recovered.
func checkFile(path string) (err error) {
	if _, statErr := os.Stat(path); errors.Is(statErr, os.ErrNotExist) {
		return nil
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, ReadOnly: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return corruptOr(path, fmt.Errorf("store: opening %s: %w", path, err))
	}
	defer db.Close()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, path, r)
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, bucket *bolt.Bucket) error { return walk(bucket) })
	})
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	return nil
}

// walk visits every key of a bucket and of its nested buckets.
func walk(bucket *bolt.Bucket) error {
	cursor := bucket.Cursor()
	for key, value := cursor.First(); key != nil; key, value = cursor.Next() {
		if value == nil {
			if nested := bucket.Bucket(key); nested != nil {
				if err := walk(nested); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// corruptOr names the file as corrupt when bbolt found its header invalid.
func corruptOr(path string, err error) error {
	if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	return err
}

// Close finishes the writes under way and closes the file.
func (b *Bolt) Close() error {
	b.closing.Lock()
	if b.closed {
		b.closing.Unlock()
		return ErrClosed
	}
	b.closed = true
	close(b.writes)
	b.closing.Unlock()
	<-b.done
	return b.db.Close()
}

// update runs apply in a transaction shared with the other writes waiting,
// and returns once that transaction is on disk.
func (b *Bolt) update(apply func(*bolt.Tx) error) error {
	w := &write{apply: apply, result: make(chan error, 1)}
	b.closing.RLock()
	if b.closed {
		b.closing.RUnlock()
		return ErrClosed
	}
	b.writes <- w
	b.closing.RUnlock()
	return <-w.result
}

// view runs a read-only transaction. A closed store answers ErrClosed, as
// for writes, rather than bbolt's own error, so that callers can tell a
// shutdown from a failure.
func (b *Bolt) view(read func(*bolt.Tx) error) error {
	b.closing.RLock()
	closed := b.closed
	b.closing.RUnlock()
	if closed {
		return ErrClosed
	}
	err := b.db.View(read)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed // closed after the check above
	}
	return err
}

func (b *Bolt) writer() {
	defer close(b.done)
	batch.Each(b.writes, maxGroup, func(group []*write) {
		err := b.db.Update(func(tx *bolt.Tx) error {
			for _, w := range group {
				if err := w.apply(tx); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil || len(group) == 1 {
			for _, w := range group {
				w.result <- err
			}
			return
		}
		// One write failed the group: commit each alone, so the others
		// still land and only the failing one hears of it.
		for _, w := range group {
			w.result <- b.db.Update(w.apply)
		}
	})
}

func eventKey(namespace, id string) []byte { return []byte(namespace + "\x00" + id) }

func attemptKey(deliveryID string, number int) []byte {
	return fmt.Appendf(nil, "%s/%06d", deliveryID, number)
}

func put(bucket *bolt.Bucket, key []byte, value any) error {
	data, err := json.Marshal(value)
	if err != nil {
		return err
	}
	return bucket.Put(key, data)
}

// get decodes the value that put stored under key; found is false when
// there is none.
func get[T any](bucket *bolt.Bucket, key []byte) (value T, found bool, err error) {
	data := bucket.Get(key)
	if data == nil {
		return value, false, nil
	}
	err = json.Unmarshal(data, &value)
	return value, err == nil, err
}

// appendDecoded decodes a value that put stored and appends it to list.
func appendDecoded[T any](list *[]T, data []byte) error {
	var value T
	if err := json.Unmarshal(data, &value); err != nil {
		return err
	}
	*list = append(*list, value)
	return nil
}

// eachWithPrefix calls fn, in key order, with each key of bucket that starts
// with prefix, the prefix cut off, and its value.
func eachWithPrefix(bucket *bolt.Bucket, prefix []byte, fn func(rest, value []byte) error) error {
	cursor := bucket.Cursor()
	for key, value := cursor.Seek(prefix); key != nil && bytes.HasPrefix(key, prefix); key, value = cursor.Next() {
		if err := fn(key[len(prefix):], value); err != nil {
			return err
		}
	}
	return nil
}

// disabledIn reports whether an endpoint's stored health says disabled.
func disabledIn(tx *bolt.Tx, endpoint string) (bool, error) {
	health, _, err := get[Health](tx.Bucket(bucketHealth), []byte(endpoint))
	if err != nil {
		return false, fmt.Errorf("health of %s: %w", endpoint, err)
	}
	return health.Disabled, nil
}

// Accept implements Store.
func (b *Bolt) Accept(_ context.Context, event Event, targets []Target, dedupeSince time.Time) (Accepted, error) {
	var out Accepted
	err := b.update(func(tx *bolt.Tx) error {
		out = Accepted{}
		events := tx.Bucket(bucketEvents)
		if existing := events.Get(eventKey(event.Namespace, event.ID)); existing != nil {
			var first Event
			if err := json.Unmarshal(existing, &first); err != nil {
				return err
			}
			if first.AcceptedAt.After(dedupeSince) {
				out = Accepted{Event: first, Duplicate: true}
				return nil
			}
		}
		event.Deliveries = len(targets)
		if err := put(events, eventKey(event.Namespace, event.ID), event); err != nil {
			return err
		}
		if err := tx.Bucket(bucketEventData).Put(eventKey(event.Namespace, event.ID), event.Data); err != nil {
			return err
		}
		deliveries, active, byEvent := tx.Bucket(bucketDeliveries), tx.Bucket(bucketActive), tx.Bucket(bucketByEvent)
		for _, target := range targets {
			disabled, err := disabledIn(tx, endpointKey(event.Namespace, target.Endpoint))
			if err != nil {
				return err
			}
			sequence, err := deliveries.NextSequence()
			if err != nil {
				return err
			}
			delivery := Delivery{
				ID: fmt.Sprintf("dlv_%016x", sequence), Namespace: event.Namespace, EventID: event.ID, Endpoint: target.Endpoint,
				State: Pending, NextAttemptAt: event.AcceptedAt, CreatedAt: event.AcceptedAt, UpdatedAt: event.AcceptedAt,
			}
			if target.Held || disabled {
				delivery.State, delivery.NextAttemptAt = Held, time.Time{}
			}
			if err := put(deliveries, []byte(delivery.ID), delivery); err != nil {
				return err
			}
			if err := active.Put([]byte(delivery.ID), nil); err != nil {
				return err
			}
			if err := byEvent.Put([]byte(event.Namespace+"\x00"+event.ID+"\x00"+delivery.ID), nil); err != nil {
				return err
			}
			if err := tx.Bucket(bucketByEndpoint).Put(byEndpointKey(delivery), nil); err != nil {
				return err
			}
			out.Deliveries = append(out.Deliveries, delivery)
		}
		out.Event = event
		return nil
	})
	if err != nil {
		return Accepted{}, fmt.Errorf("store: accepting event %s/%s: %w", event.Namespace, event.ID, err)
	}
	return out, nil
}

// putDelivery stores a delivery and keeps the active index in step.
func putDelivery(tx *bolt.Tx, delivery Delivery) error {
	if err := put(tx.Bucket(bucketDeliveries), []byte(delivery.ID), delivery); err != nil {
		return err
	}
	if delivery.State == Pending || delivery.State == Held {
		return tx.Bucket(bucketActive).Put([]byte(delivery.ID), nil)
	}
	return tx.Bucket(bucketActive).Delete([]byte(delivery.ID))
}

// storedDelivery reads a delivery in a transaction; found is false when it
// is not stored.
func storedDelivery(tx *bolt.Tx, id string) (Delivery, bool, error) {
	delivery, found, err := get[Delivery](tx.Bucket(bucketDeliveries), []byte(id))
	if err != nil {
		return Delivery{}, false, fmt.Errorf("delivery %s: %w", id, err)
	}
	return delivery, found, nil
}

// RecordAttempts implements Store.
func (b *Bolt) RecordAttempts(_ context.Context, records []AttemptRecord) ([]bool, error) {
	var applied []bool
	err := b.update(func(tx *bolt.Tx) error {
		// A group commit may run apply twice (alone after a failed group).
		applied = make([]bool, len(records))
		for i, record := range records {
			stored, found, err := storedDelivery(tx, record.Delivery.ID)
			if err != nil {
				return err
			}
			if !found || stored.State != Pending || stored.Attempts != record.Delivery.Attempts-1 {
				continue
			}
			if err := putDelivery(tx, record.Delivery); err != nil {
				return err
			}
			if err := put(tx.Bucket(bucketAttempts), attemptKey(record.Attempt.DeliveryID, record.Attempt.Number), record.Attempt); err != nil {
				return err
			}
			if record.Health != nil {
				if err := put(tx.Bucket(bucketHealth), []byte(record.Health.Endpoint), record.Health); err != nil {
					return err
				}
			}
			applied[i] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: recording %d attempts: %w", len(records), err)
	}
	return applied, nil
}

// UpdateDeliveries implements Store.
func (b *Bolt) UpdateDeliveries(_ context.Context, deliveries []Delivery) error {
	err := b.update(func(tx *bolt.Tx) error {
		for _, delivery := range deliveries {
			if err := putDelivery(tx, delivery); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: updating %d deliveries: %w", len(deliveries), err)
	}
	return nil
}

// ChangeDeliveries implements Store.
func (b *Bolt) ChangeDeliveries(_ context.Context, changes []DeliveryChange) ([]bool, error) {
	var applied []bool
	err := b.update(func(tx *bolt.Tx) error {
		// A group commit may run apply twice (alone after a failed group).
		applied = make([]bool, len(changes))
		for i, change := range changes {
			stored, found, err := storedDelivery(tx, change.To.ID)
			if err != nil {
				return err
			}
			if !found || stored.State != change.State || stored.Attempts != change.Attempts {
				continue
			}
			if err := putDelivery(tx, change.To); err != nil {
				return err
			}
			applied[i] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: changing %d deliveries: %w", len(changes), err)
	}
	return applied, nil
}

// PutHealth implements Store.
func (b *Bolt) PutHealth(_ context.Context, health Health) error {
	err := b.update(func(tx *bolt.Tx) error {
		return put(tx.Bucket(bucketHealth), []byte(health.Endpoint), health)
	})
	if err != nil {
		return fmt.Errorf("store: storing health of %s: %w", health.Endpoint, err)
	}
	return nil
}

// ActivePage implements Store: in id order across the partitions, which is
// each partition's oldest first; next is the page's last id.
func (b *Bolt) ActivePage(_ context.Context, partitions []int, after string, limit int) ([]Delivery, string, error) {
	var wanted [Partitions]bool
	for _, partition := range partitions {
		wanted[partition] = true
	}
	var page []Delivery
	next := ""
	err := b.view(func(tx *bolt.Tx) error {
		deliveries := tx.Bucket(bucketDeliveries)
		cursor := tx.Bucket(bucketActive).Cursor()
		id, _ := cursor.Seek([]byte(after))
		if id != nil && string(id) == after {
			id, _ = cursor.Next()
		}
		for ; id != nil && limit > 0; id, _ = cursor.Next() {
			var delivery Delivery
			if err := json.Unmarshal(deliveries.Get(id), &delivery); err != nil {
				return fmt.Errorf("delivery %s: %w", id, err)
			}
			if !wanted[Partition(delivery.Namespace, delivery.Endpoint)] {
				continue
			}
			if len(page) == limit {
				next = page[len(page)-1].ID
				return nil
			}
			page = append(page, delivery)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("store: listing active deliveries: %w", err)
	}
	return page, next, nil
}

// Healths implements Store.
func (b *Bolt) Healths(context.Context) ([]Health, error) {
	var out []Health
	err := b.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHealth).ForEach(func(_, value []byte) error {
			return appendDecoded(&out, value)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: listing health: %w", err)
	}
	return out, nil
}

// Event implements Store.
func (b *Bolt) Event(_ context.Context, namespace, id string) (Event, error) {
	var event Event
	err := b.view(func(tx *bolt.Tx) error {
		var err error
		event, err = readEvent(tx, namespace, id)
		return err
	})
	if err != nil {
		return Event{}, fmt.Errorf("store: event %s/%s: %w", namespace, id, err)
	}
	return event, nil
}

// readEvent reads an event in tx, ErrNotFound when it is not stored.
func readEvent(tx *bolt.Tx, namespace, id string) (Event, error) {
	var event Event
	data := tx.Bucket(bucketEvents).Get(eventKey(namespace, id))
	if data == nil {
		return event, ErrNotFound
	}
	if err := json.Unmarshal(data, &event); err != nil {
		return event, err
	}
	event.Data = bytes.Clone(tx.Bucket(bucketEventData).Get(eventKey(namespace, id)))
	return event, nil
}

// Events implements Store, in one read transaction.
func (b *Bolt) Events(_ context.Context, deliveries []Delivery) ([]Event, error) {
	events := make([]Event, len(deliveries))
	err := b.view(func(tx *bolt.Tx) error {
		for i, delivery := range deliveries {
			event, err := readEvent(tx, delivery.Namespace, delivery.EventID)
			switch {
			case err == nil:
				events[i] = event
			case !errors.Is(err, ErrNotFound):
				return fmt.Errorf("event %s/%s: %w", delivery.Namespace, delivery.EventID, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: reading %d events: %w", len(deliveries), err)
	}
	return events, nil
}

// DeliveriesOf implements Store.
func (b *Bolt) DeliveriesOf(_ context.Context, namespace, eventID string) ([]Delivery, error) {
	var out []Delivery
	err := b.view(func(tx *bolt.Tx) error {
		deliveries := tx.Bucket(bucketDeliveries)
		prefix := []byte(namespace + "\x00" + eventID + "\x00")
		return eachWithPrefix(tx.Bucket(bucketByEvent), prefix, func(id, _ []byte) error {
			return appendDecoded(&out, deliveries.Get(id))
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: deliveries of %s/%s: %w", namespace, eventID, err)
	}
	return out, nil
}

// Delivery implements Store.
func (b *Bolt) Delivery(_ context.Context, id string) (Delivery, error) {
	var delivery Delivery
	err := b.view(func(tx *bolt.Tx) error {
		var found bool
		var err error
		if delivery, found, err = get[Delivery](tx.Bucket(bucketDeliveries), []byte(id)); err == nil && !found {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return Delivery{}, fmt.Errorf("store: delivery %s: %w", id, err)
	}
	return delivery, nil
}

// EndpointDeliveries implements Store.
func (b *Bolt) EndpointDeliveries(_ context.Context, namespace, endpoint string, query DeliveryQuery) ([]Delivery, string, error) {
	var page []Delivery
	next := ""
	err := b.view(func(tx *bolt.Tx) error {
		deliveries := tx.Bucket(bucketDeliveries)
		prefix := []byte(namespace + "\x00" + endpoint + "\x00")
		cursor := tx.Bucket(bucketByEndpoint).Cursor()
		// Newest first: start after the page's start and walk backwards.
		start := append(append([]byte{}, prefix...), 0xff)
		if query.After != "" {
			start = append(append([]byte{}, prefix...), query.After...)
		}
		key, _ := cursor.Seek(start)
		if key == nil {
			key, _ = cursor.Last()
		} else {
			key, _ = cursor.Prev()
		}
		for ; key != nil && bytes.HasPrefix(key, prefix); key, _ = cursor.Prev() {
			var delivery Delivery
			if err := json.Unmarshal(deliveries.Get(key[len(prefix):]), &delivery); err != nil {
				return err
			}
			var stop bool
			if page, next, stop = query.step(page, delivery); stop {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("store: deliveries of endpoint %s/%s: %w", namespace, endpoint, err)
	}
	return page, next, nil
}

// Attempts implements Store.
func (b *Bolt) Attempts(_ context.Context, deliveryID string) ([]Attempt, error) {
	var out []Attempt
	err := b.view(func(tx *bolt.Tx) error {
		return eachWithPrefix(tx.Bucket(bucketAttempts), []byte(deliveryID+"/"), func(_, value []byte) error {
			return appendDecoded(&out, value)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: attempts of %s: %w", deliveryID, err)
	}
	return out, nil
}

// defaultSweepScan bounds the keys one read transaction of a sweep visits,
// and defaultSweepBatch what one of its write transactions deletes. The sweep reads
// in read-only transactions, which writes do not wait for (a long one would
// hold up only a commit that grows the file), and deletes a batch at a time
// through the group commit: accepting and recording go on while it walks a
// million finished deliveries.
const (
	defaultSweepScan  = 10000
	defaultSweepBatch = 1000
)

// Sweep implements Store.
func (b *Bolt) Sweep(ctx context.Context, before time.Time) (int, error) {
	finished := func(delivery Delivery) bool {
		return (delivery.State == Succeeded || delivery.State == Failed) && delivery.UpdatedAt.Before(before)
	}
	swept, err := b.sweepBucket(ctx, bucketDeliveries, func(tx *bolt.Tx, _, value []byte) (bool, error) {
		// Only the two fields the cut needs: the walk decodes every
		// delivery stored, and allocates none of the others.
		var delivery struct {
			State     State     `json:"state"`
			UpdatedAt time.Time `json:"updated_at"`
		}
		if err := json.Unmarshal(value, &delivery); err != nil {
			return false, err
		}
		return finished(Delivery{State: delivery.State, UpdatedAt: delivery.UpdatedAt}), nil
	}, func(tx *bolt.Tx, key []byte) (bool, error) {
		// Read again in the write: a retry may have moved it meanwhile.
		delivery, found, err := storedDelivery(tx, string(key))
		if err != nil || !found || !finished(delivery) {
			return false, err
		}
		return true, deleteDelivery(tx, delivery)
	})
	if err == nil {
		// Events with no delivery left, accepted before the cut-off.
		stale := func(tx *bolt.Tx, key, value []byte) (bool, error) {
			var event Event
			if err := json.Unmarshal(value, &event); err != nil {
				return false, err
			}
			prefix := append(append([]byte{}, key...), 0)
			k, _ := tx.Bucket(bucketByEvent).Cursor().Seek(prefix)
			return event.AcceptedAt.Before(before) && (k == nil || !bytes.HasPrefix(k, prefix)), nil
		}
		_, err = b.sweepBucket(ctx, bucketEvents, stale, func(tx *bolt.Tx, key []byte) (bool, error) {
			value := tx.Bucket(bucketEvents).Get(key)
			if value == nil {
				return false, nil
			}
			if gone, err := stale(tx, key, value); err != nil || !gone {
				return false, err
			}
			return true, errors.Join(tx.Bucket(bucketEvents).Delete(key), tx.Bucket(bucketEventData).Delete(key))
		})
	}
	if err != nil {
		return swept, fmt.Errorf("store: sweeping before %s: %w", before.Format(time.RFC3339), err)
	}
	return swept, nil
}

// sweepBucket walks a bucket in read transactions of sweepScan keys, and
// deletes the keys that match, sweepBatch at a time, each batch in a write
// transaction that checks them again (remove says whether it deleted one).
// It returns how many went.
func (b *Bolt) sweepBucket(ctx context.Context, bucket []byte, match func(tx *bolt.Tx, key, value []byte) (bool, error),
	remove func(tx *bolt.Tx, key []byte) (bool, error)) (int, error) {
	removed := 0
	var keys [][]byte
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		n := 0
		err := b.update(func(tx *bolt.Tx) error {
			n = 0 // a group commit may run apply twice (alone after a failed group)
			for _, key := range keys {
				gone, err := remove(tx, key)
				if err != nil {
					return err
				}
				if gone {
					n++
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		removed += n
		keys = keys[:0]
		if b.sweepBatchDone != nil {
			b.sweepBatchDone(n)
		}
		return nil
	}
	var from []byte // the next key to visit; nil at the start
	for done := false; !done; {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		err := b.view(func(tx *bolt.Tx) error {
			cursor := tx.Bucket(bucket).Cursor()
			key, value := cursor.First()
			if from != nil {
				key, value = cursor.Seek(from)
			}
			for visited := 0; key != nil && visited < b.sweepScan && len(keys) < b.sweepBatch; key, value = cursor.Next() {
				visited++
				matched, err := match(tx, key, value)
				if err != nil {
					return fmt.Errorf("%s %s: %w", bucket, key, err)
				}
				if matched {
					keys = append(keys, bytes.Clone(key))
				}
			}
			from, done = bytes.Clone(key), key == nil
			return nil
		})
		if err != nil {
			return removed, err
		}
		if len(keys) >= b.sweepBatch || done {
			if err := flush(); err != nil {
				return removed, err
			}
		}
	}
	return removed, nil
}

// deleteDelivery deletes a delivery, its index entries and its attempts.
func deleteDelivery(tx *bolt.Tx, delivery Delivery) error {
	if err := tx.Bucket(bucketDeliveries).Delete([]byte(delivery.ID)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketActive).Delete([]byte(delivery.ID)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketByEvent).Delete([]byte(delivery.Namespace + "\x00" + delivery.EventID + "\x00" + delivery.ID)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketByEndpoint).Delete(byEndpointKey(delivery)); err != nil {
		return err
	}
	attempts := tx.Bucket(bucketAttempts)
	prefix := []byte(delivery.ID + "/")
	cursor := attempts.Cursor()
	for key, _ := cursor.Seek(prefix); key != nil && bytes.HasPrefix(key, prefix); key, _ = cursor.Seek(prefix) {
		if err := attempts.Delete(key); err != nil {
			return err
		}
	}
	return nil
}

var _ Store = (*Bolt)(nil)

// IsNotFound reports whether err is ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
