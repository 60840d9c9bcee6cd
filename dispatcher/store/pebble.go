package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Key layout of the pebble store: one leading byte names the kind of
// record, so that each kind is a key range of its own.
const (
	// prefixEvent + namespace \x00 id → eventRecord: the event, its data and
	// its deliveries' ids, so that no by-event index is written.
	prefixEvent byte = 'e'
	// prefixDelivery + delivery id → Delivery.
	prefixDelivery byte = 'd'
	// prefixAttempt + delivery id \x00 number (4 bytes big-endian) → Attempt:
	// appended, never rewritten.
	prefixAttempt byte = 'a'
	// prefixHealth + "<namespace>/<name>" → Health.
	prefixHealth byte = 'h'
	// prefixActive + partition (1 byte) + delivery id → nothing: the pending
	// and held deliveries, a range per partition for ActivePage.
	prefixActive byte = 'p'
	// prefixByEndpoint + namespace \x00 endpoint \x00 delivery id → nothing.
	prefixByEndpoint byte = 'n'
	// prefixSweep + time (8 bytes, order-preserving) + kind + key → nothing:
	// what Sweep may delete once the time is past its horizon (finished
	// deliveries at their last update, kind 'd'; events left with no
	// delivery at their acceptance, kind 'e'), so that Sweep reads only
	// those. An entry is a hint, checked against the record before deleting.
	prefixSweep byte = 'f'
	// keySequence → the highest delivery sequence number handed out or
	// reserved (8 bytes big-endian).
	keySequence = "s"
)

const (
	// pebbleBlockCache bounds the cached blocks, pebbleMemTableSize each of
	// at most pebbleMemTables memtables: with the store's other memory they
	// keep the dispatcher's RSS bounded whatever the number of stored
	// deliveries. Pebble reserves the memtables' size in the block cache, so
	// the cache is made that much larger (pebbleCacheSize): a cache of the
	// memtables' size alone holds no block, and every read of a table's
	// filter, index or data goes to the file.
	pebbleBlockCache   = 16 << 20
	pebbleMemTableSize = 8 << 20
	pebbleMemTables    = 2
	pebbleCacheSize    = pebbleBlockCache + pebbleMemTables*pebbleMemTableSize
	// sequenceBlock is how many delivery sequence numbers one synced write
	// reserves, so that Accept does not write a shared counter each time.
	sequenceBlock = 4096
	// sweepChunk bounds the records one Sweep commit deletes.
	sweepChunk = 1024
)

// Pebble is the embedded store on a pebble LSM in one folder.
//
// Durability: Accept, PutHealth, UpdateDeliveries and ChangeDeliveries
// return once their write is synced to the write-ahead log; pebble syncs
// the commits waiting at once together (group commit), so concurrent
// callers share fsyncs. RecordAttempts and Sweep commit without waiting
// for a sync: their writes are in the WAL in the page cache, so a killed
// process loses nothing, and a power loss can at worst lose the last
// attempt records, whose deliveries are then attempted again (delivery is
// at least once in any case).
//
// Pebble has no read-modify-write transactions, so the compare-and-sets
// (Accept's dedupe, RecordAttempts, ChangeDeliveries) read and commit
// under in-process locks, striped by event or delivery id. The locks are
// held over the read and the commit only; the wait for the sync comes
// after they are released (commitThenSync, syncWAL), so that callers on
// one stripe do not queue behind each other's fsyncs. A reader may see such a write before it is
// synced; the writer still answers only after. Only this process writes:
// pebble's lock on the folder refuses a second one.
type Pebble struct {
	db   *pebble.DB
	lock *pebble.Lock
	dir  string

	events, deliveries stripes

	// disabled are the endpoints ("<namespace>/<name>") whose stored health
	// says Disabled, kept in step with every health write after its commit:
	// Accept consults it for each target instead of a read of the store
	// (only this process writes the folder). healthWrites orders the
	// writes that store healths with their notes in the set, so that the
	// set follows the order of the commits.
	disabled struct {
		sync.RWMutex
		set map[string]bool
	}
	healthWrites sync.Mutex

	sequence struct {
		sync.Mutex
		used, reserved uint64
	}

	// closing guards every operation against Close, which waits for those
	// under way: pebble must not be closed under an open iterator.
	closing sync.RWMutex
	closed  bool
}

// ErrLocked is returned when another process has the store's folder open.
var ErrLocked = errors.New("store folder is in use by another process")

// OpenPebble opens (or creates) the store in the folder dir.
func OpenPebble(dir string) (*Pebble, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: creating %s: %w", dir, err)
	}
	lock, err := pebble.LockDirectory(dir, vfs.Default)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrLocked, dir, err)
	}
	cache := pebble.NewCache(pebbleCacheSize)
	defer cache.Unref() // the DB holds its own reference
	options := &pebble.Options{
		Cache:                       cache,
		MemTableSize:                pebbleMemTableSize,
		MemTableStopWritesThreshold: pebbleMemTables,
		FormatMajorVersion:          pebble.FormatNewest,
		Lock:                        lock,
		Logger:                      quietLogger{},
	}
	// Every Accept looks up an event id that is almost never there: bloom
	// filters (on every level; later levels inherit L0's) answer that from
	// memory instead of a seek in each table.
	options.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(dir, options)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("store: opening %s: %w", dir, err), lock.Close())
	}
	p := &Pebble{db: db, lock: lock, dir: dir, events: newStripes(), deliveries: newStripes()}
	value, found, err := getRecord(db, []byte(keySequence), decodeUint64)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("store: reading the delivery sequence in %s: %w", dir, err), db.Close(), lock.Close())
	}
	if found {
		// Numbers reserved before a restart may have been handed out.
		p.sequence.used, p.sequence.reserved = value, value
	}
	if err := p.loadDisabled(); err != nil {
		return nil, errors.Join(fmt.Errorf("store: reading endpoint health in %s: %w", dir, err), db.Close(), lock.Close())
	}
	return p, nil
}

// loadDisabled reads the disabled endpoints from the stored healths.
func (p *Pebble) loadDisabled() error {
	var healths []Health
	if err := eachRecord(p, []byte{prefixHealth}, decodeHealth, &healths); err != nil {
		return err
	}
	set := map[string]bool{}
	for _, health := range healths {
		if health.Disabled {
			set[health.Endpoint] = true
		}
	}
	p.disabled.Lock()
	p.disabled.set = set
	p.disabled.Unlock()
	return nil
}

// healthStored notes healths just committed.
func (p *Pebble) healthStored(healths ...Health) {
	p.disabled.Lock()
	defer p.disabled.Unlock()
	for _, health := range healths {
		if health.Disabled {
			p.disabled.set[health.Endpoint] = true
		} else {
			delete(p.disabled.set, health.Endpoint)
		}
	}
}

func (p *Pebble) isDisabled(endpoint string) bool {
	p.disabled.RLock()
	defer p.disabled.RUnlock()
	return p.disabled.set[endpoint]
}

// quietLogger drops pebble's informational messages, which say nothing an
// operator acts on, and keeps its errors.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}

func (quietLogger) Errorf(format string, args ...any) { pebble.DefaultLogger.Errorf(format, args...) }

func (quietLogger) Fatalf(format string, args ...any) { pebble.DefaultLogger.Fatalf(format, args...) }

// stripes are the locks of compare-and-sets, one per hash of the key.
type stripes struct {
	seed  maphash.Seed
	locks *[256]sync.Mutex
}

func newStripes() stripes { return stripes{seed: maphash.MakeSeed(), locks: new([256]sync.Mutex)} }

// lock takes the stripes of the keys, in stripe order so that callers
// locking overlapping sets cannot deadlock, and returns their release.
func (s stripes) lock(keys ...string) (unlock func()) {
	held := make([]int, 0, len(keys))
	for _, key := range keys {
		held = append(held, int(maphash.String(s.seed, key)%uint64(len(s.locks))))
	}
	slices.Sort(held)
	held = slices.Compact(held)
	for _, i := range held {
		s.locks[i].Lock()
	}
	return func() {
		for _, i := range held {
			s.locks[i].Unlock()
		}
	}
}

// enter starts an operation; the caller calls p.closing.RUnlock when done.
func (p *Pebble) enter() error {
	p.closing.RLock()
	if p.closed {
		p.closing.RUnlock()
		return ErrClosed
	}
	return nil
}

// Close waits for the operations under way and closes the store.
func (p *Pebble) Close() error {
	p.closing.Lock()
	defer p.closing.Unlock()
	if p.closed {
		return ErrClosed
	}
	p.closed = true
	return errors.Join(p.db.Close(), p.lock.Close())
}

// syncWAL returns once every write committed before it is synced.
func (p *Pebble) syncWAL() error { return p.db.LogData(nil, pebble.Sync) }

// commitThenSync commits the batch, releases the locks, then waits for
// its sync: see Pebble on why the locks are not held over the sync. The
// caller closes the batch only after this returns.
//
// ApplyNoSyncWait and SyncWait are marked experimental in pebble; they
// queue one entry in the commit pipeline where a commit and a separate
// sync (LogData) queue two, which the bench measured faster.
func (p *Pebble) commitThenSync(batch *pebble.Batch, unlock func()) error {
	err := p.db.ApplyNoSyncWait(batch, pebble.Sync)
	unlock()
	if err != nil {
		// Refused before it was queued: there is no sync to wait for.
		return err
	}
	return batch.SyncWait()
}

func makeKey(prefix byte, parts ...string) []byte {
	size := 1
	for _, part := range parts {
		size += len(part) + 1
	}
	b := append(make([]byte, 0, size), prefix)
	for i, part := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, part...)
	}
	return b
}

func pebbleEventKey(namespace, id string) []byte { return makeKey(prefixEvent, namespace, id) }

func deliveryKey(id string) []byte { return makeKey(prefixDelivery, id) }

// attemptsPrefix ends in \x00 so that one id's range holds no other id's.
func attemptsPrefix(deliveryID string) []byte { return makeKey(prefixAttempt, deliveryID, "") }

func pebbleAttemptKey(deliveryID string, number int) []byte {
	return binary.BigEndian.AppendUint32(attemptsPrefix(deliveryID), uint32(number)) //nolint:gosec // attempt numbers are small and positive
}

func healthKey(endpoint string) []byte { return makeKey(prefixHealth, endpoint) }

func activeKey(d Delivery) []byte {
	return append([]byte{prefixActive, byte(Partition(d.Namespace, d.Endpoint))}, d.ID...)
}

func endpointPrefix(namespace, endpoint string) []byte {
	return makeKey(prefixByEndpoint, namespace, endpoint, "")
}

func endpointIndexKey(d Delivery) []byte {
	return append(endpointPrefix(d.Namespace, d.Endpoint), d.ID...)
}

// sweepKey orders by time: Unix nanoseconds with the sign bit flipped sort
// as unsigned big-endian bytes.
func sweepKey(at time.Time, kind byte, rest []byte) []byte {
	b := binary.BigEndian.AppendUint64([]byte{prefixSweep}, uint64(at.UnixNano())^(1<<63)) //nolint:gosec // the flip is the point
	return append(append(b, kind), rest...)
}

const (
	sweepDelivery byte = 'd'
	sweepEvent    byte = 'e'
)

// prefixEnd is the first key after every key that starts with prefix.
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // no end: up to the last key
}

func decodeUint64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, errShortRecord
	}
	return binary.BigEndian.Uint64(b), nil
}

// get reads and decodes one record; found is false when there is none.
func getRecord[T any](db *pebble.DB, key []byte, decode func([]byte) (T, error)) (value T, found bool, err error) {
	data, closer, err := db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return value, false, nil
	}
	if err != nil {
		return value, false, err
	}
	value, err = decode(data)
	if closeErr := closer.Close(); err == nil {
		err = closeErr
	}
	return value, err == nil, err
}

// each calls fn with every key in [lower, upper) and its value, which are
// valid only during the call.
func (p *Pebble) each(lower, upper []byte, fn func(key, value []byte) error) error {
	iter, err := p.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	for iter.First(); iter.Valid(); iter.Next() {
		if err = fn(iter.Key(), iter.Value()); err != nil {
			break
		}
	}
	return errors.Join(err, iter.Error(), iter.Close())
}

// allocate hands out n delivery sequence numbers and returns the first.
func (p *Pebble) allocate(n int) (uint64, error) {
	s := &p.sequence
	s.Lock()
	defer s.Unlock()
	if s.used+uint64(n) > s.reserved {
		reserved := s.used + uint64(n) + sequenceBlock
		if err := p.db.Set([]byte(keySequence), binary.BigEndian.AppendUint64(nil, reserved), pebble.Sync); err != nil {
			return 0, fmt.Errorf("reserving delivery ids: %w", err)
		}
		s.reserved = reserved
	}
	first := s.used + 1
	s.used += uint64(n)
	return first, nil
}

// deliveryID is "dlv_" and the sequence number in 16 hex digits.
func deliveryID(sequence uint64) string {
	var b [4 + 16]byte
	copy(b[:], "dlv_")
	hex := strconv.AppendUint(b[4:4], sequence, 16)
	// Right-aligned, zero-padded to 16 digits.
	n := copy(b[4+16-len(hex):], hex)
	for i := 4; i < 4+16-n; i++ {
		b[i] = '0'
	}
	return string(b[:])
}

func isActive(state State) bool { return state == Pending || state == Held }

// writeDelivery stores a delivery in the batch and keeps the indexes in step
// with the stored one it replaces (nil for a new delivery).
func writeDelivery(batch *pebble.Batch, delivery Delivery, stored *Delivery) error {
	if err := batch.Set(deliveryKey(delivery.ID), encodeDelivery(delivery), nil); err != nil {
		return err
	}
	var err error
	switch {
	case isActive(delivery.State):
		err = batch.Set(activeKey(delivery), nil, nil)
	case stored != nil && isActive(stored.State):
		err = batch.Delete(activeKey(*stored), nil)
	}
	if err != nil {
		return err
	}
	if stored == nil {
		if err := batch.Set(endpointIndexKey(delivery), nil, nil); err != nil {
			return err
		}
	} else if !isActive(stored.State) && (isActive(delivery.State) || !stored.UpdatedAt.Equal(delivery.UpdatedAt)) {
		if err := batch.Delete(sweepKey(stored.UpdatedAt, sweepDelivery, []byte(stored.ID)), nil); err != nil {
			return err
		}
	}
	if !isActive(delivery.State) {
		return batch.Set(sweepKey(delivery.UpdatedAt, sweepDelivery, []byte(delivery.ID)), nil, nil)
	}
	return nil
}

// Accept implements Store.
func (p *Pebble) Accept(_ context.Context, event Event, targets []Target, dedupeSince time.Time) (Accepted, error) {
	out, err := p.accept(event, targets, dedupeSince)
	if err != nil {
		return Accepted{}, fmt.Errorf("store: accepting event %s/%s: %w", event.Namespace, event.ID, err)
	}
	return out, nil
}

func (p *Pebble) accept(event Event, targets []Target, dedupeSince time.Time) (Accepted, error) {
	if err := p.enter(); err != nil {
		return Accepted{}, err
	}
	defer p.closing.RUnlock()
	key := pebbleEventKey(event.Namespace, event.ID)
	unlock := p.events.lock(string(key))
	first, found, err := getRecord(p.db, key, decodeEvent)
	if err != nil {
		unlock()
		return Accepted{}, err
	}
	if found && first.Event.AcceptedAt.After(dedupeSince) {
		unlock()
		// The first acceptance may still be syncing in another call.
		first.Event.Data = nil
		return Accepted{Event: first.Event, Duplicate: true}, p.syncWAL()
	}
	batch := p.db.NewBatch()
	defer batch.Close()
	out, err := p.fanOut(batch, event, first.Refs, targets)
	if err != nil {
		unlock()
		return Accepted{}, err
	}
	return out, p.commitThenSync(batch, unlock)
}

// fanOut writes the event, after the deliveries of an earlier acceptance
// of its id (refs), and one delivery per target into the batch.
func (p *Pebble) fanOut(batch *pebble.Batch, event Event, refs []deliveryRef, targets []Target) (Accepted, error) {
	out := Accepted{Deliveries: make([]Delivery, 0, len(targets))}
	sequence, err := p.allocate(len(targets))
	if err != nil {
		return out, err
	}
	for i, target := range targets {
		delivery := Delivery{
			ID: deliveryID(sequence + uint64(i)), Namespace: event.Namespace, EventID: event.ID, Endpoint: target.Endpoint, //nolint:gosec // i ≥ 0
			State: Pending, NextAttemptAt: event.AcceptedAt, CreatedAt: event.AcceptedAt, UpdatedAt: event.AcceptedAt,
		}
		if target.Held || p.isDisabled(endpointKey(event.Namespace, target.Endpoint)) {
			delivery.State, delivery.NextAttemptAt = Held, time.Time{}
		}
		if err := writeDelivery(batch, delivery, nil); err != nil {
			return out, err
		}
		refs = append(refs, deliveryRef{ID: delivery.ID, Endpoint: delivery.Endpoint})
		out.Deliveries = append(out.Deliveries, delivery)
	}
	event.Deliveries = len(targets)
	key := pebbleEventKey(event.Namespace, event.ID)
	if err := batch.Set(key, encodeEvent(eventRecord{Event: event, Refs: refs}), nil); err != nil {
		return out, err
	}
	if len(refs) == 0 {
		if err := batch.Set(sweepKey(event.AcceptedAt, sweepEvent, key), nil, nil); err != nil {
			return out, err
		}
	}
	out.Event = event
	return out, nil
}

// deliveryIDs are the ids of what a call changes, to lock.
func deliveryIDs[T any](items []T, id func(T) string) []string {
	out := make([]string, len(items))
	for i, item := range items {
		out[i] = id(item)
	}
	return out
}

// compareAndSet applies changes under the locks of their deliveries: for
// each, read the stored delivery (or the one an earlier change of the same
// call left), and write when current says so. It commits unsynced and
// releases the locks; the caller syncs if it must.
func (p *Pebble) compareAndSet(ids []string, current func(i int, stored Delivery) bool, write func(batch *pebble.Batch, i int, stored Delivery) (Delivery, error)) ([]bool, error) {
	unlock := p.deliveries.lock(ids...)
	batch := p.db.NewBatch()
	defer batch.Close()
	records, err := p.newDeliveryReader(ids)
	if err != nil {
		unlock()
		return nil, err
	}
	applied := make([]bool, len(ids))
	written := map[string]Delivery{}
	for i, id := range ids {
		stored, found := written[id]
		if !found {
			var err error
			if stored, found, err = records.read(id); err != nil {
				unlock()
				return nil, errors.Join(fmt.Errorf("delivery %s: %w", id, err), records.close())
			}
		}
		if !found || !current(i, stored) {
			continue
		}
		next, err := write(batch, i, stored)
		if err != nil {
			unlock()
			return nil, errors.Join(err, records.close())
		}
		written[id], applied[i] = next, true
	}
	err = errors.Join(records.close(), batch.Commit(pebble.NoSync))
	unlock()
	return applied, err
}

// seekThreshold is the number of deliveries, ids ascending, from which
// compareAndSet reads them with one iterator rather than a Get each.
const seekThreshold = 64

// deliveryReader reads the delivery records of a compareAndSet: for many
// with ids ascending (a release's chunk), one iterator that seeks on from
// where the last read left it instead of from the top of every level of
// the LSM, which the scale run measured at less than half the CPU of a
// Get each; a Get each otherwise (attempt records, in the order their
// attempts ended). Created under the locks, it reads what they keep from
// changing.
type deliveryReader struct {
	db   *pebble.DB
	iter *pebble.Iterator
}

func (p *Pebble) newDeliveryReader(ids []string) (*deliveryReader, error) {
	if len(ids) < seekThreshold || !slices.IsSorted(ids) {
		return &deliveryReader{db: p.db}, nil
	}
	iter, err := p.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixDelivery}, UpperBound: []byte{prefixDelivery + 1}})
	if err != nil {
		return nil, err
	}
	return &deliveryReader{db: p.db, iter: iter}, nil
}

func (r *deliveryReader) read(id string) (Delivery, bool, error) {
	key := deliveryKey(id)
	if r.iter == nil {
		return getRecord(r.db, key, decodeDelivery)
	}
	return seekGet(r.iter, key, decodeDelivery)
}

func (r *deliveryReader) close() error {
	if r.iter == nil {
		return nil
	}
	return r.iter.Close()
}

// RecordAttempts implements Store. It does not wait for a sync: see Pebble.
func (p *Pebble) RecordAttempts(_ context.Context, records []AttemptRecord) ([]bool, error) {
	applied, err := p.recordAttempts(records)
	if err != nil {
		return nil, fmt.Errorf("store: recording %d attempts: %w", len(records), err)
	}
	return applied, nil
}

func (p *Pebble) recordAttempts(records []AttemptRecord) ([]bool, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.closing.RUnlock()
	ids := deliveryIDs(records, func(r AttemptRecord) string { return r.Delivery.ID })
	if slices.ContainsFunc(records, func(r AttemptRecord) bool { return r.Health != nil }) {
		p.healthWrites.Lock()
		defer p.healthWrites.Unlock()
	}
	applied, err := p.compareAndSet(ids,
		func(i int, stored Delivery) bool {
			return stored.State == Pending && stored.Attempts == records[i].Delivery.Attempts-1
		},
		func(batch *pebble.Batch, i int, stored Delivery) (Delivery, error) {
			record := records[i]
			if err := writeDelivery(batch, record.Delivery, &stored); err != nil {
				return Delivery{}, err
			}
			if err := batch.Set(pebbleAttemptKey(record.Attempt.DeliveryID, record.Attempt.Number), encodeAttempt(record.Attempt), nil); err != nil {
				return Delivery{}, err
			}
			if record.Health != nil {
				if err := batch.Set(healthKey(record.Health.Endpoint), encodeHealth(*record.Health), nil); err != nil {
					return Delivery{}, err
				}
			}
			return record.Delivery, nil
		})
	if err != nil {
		return nil, err
	}
	// Only the healths of applied records were stored.
	var healths []Health
	for i, record := range records {
		if applied[i] && record.Health != nil {
			healths = append(healths, *record.Health)
		}
	}
	p.healthStored(healths...)
	return applied, nil
}

// UpdateDeliveries implements Store.
func (p *Pebble) UpdateDeliveries(_ context.Context, deliveries []Delivery) error {
	ids := deliveryIDs(deliveries, func(d Delivery) string { return d.ID })
	if _, err := p.changeDeliveries(ids, func(int, Delivery) bool { return true }, deliveries); err != nil {
		return fmt.Errorf("store: updating %d deliveries: %w", len(deliveries), err)
	}
	return nil
}

// changeDeliveries stores to[i] where current says so, and syncs.
func (p *Pebble) changeDeliveries(ids []string, current func(i int, stored Delivery) bool, to []Delivery) ([]bool, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.closing.RUnlock()
	applied, err := p.compareAndSet(ids, current, func(batch *pebble.Batch, i int, stored Delivery) (Delivery, error) {
		return to[i], writeDelivery(batch, to[i], &stored)
	})
	if err != nil {
		return nil, err
	}
	return applied, p.syncWAL()
}

// ChangeDeliveries implements Store.
func (p *Pebble) ChangeDeliveries(_ context.Context, changes []DeliveryChange) ([]bool, error) {
	ids := deliveryIDs(changes, func(c DeliveryChange) string { return c.To.ID })
	to := make([]Delivery, len(changes))
	for i, change := range changes {
		to[i] = change.To
	}
	applied, err := p.changeDeliveries(ids, func(i int, stored Delivery) bool {
		return stored.State == changes[i].State && stored.Attempts == changes[i].Attempts
	}, to)
	if err != nil {
		return nil, fmt.Errorf("store: changing %d deliveries: %w", len(changes), err)
	}
	return applied, nil
}

// PutHealth implements Store.
func (p *Pebble) PutHealth(_ context.Context, health Health) error {
	err := p.enter()
	if err == nil {
		p.healthWrites.Lock()
		err = p.db.Set(healthKey(health.Endpoint), encodeHealth(health), pebble.Sync)
		if err == nil {
			p.healthStored(health)
		}
		p.healthWrites.Unlock()
		p.closing.RUnlock()
	}
	if err != nil {
		return fmt.Errorf("store: storing health of %s: %w", health.Endpoint, err)
	}
	return nil
}

// view runs a read, or answers ErrClosed.
func (p *Pebble) view(read func() error) error {
	if err := p.enter(); err != nil {
		return err
	}
	defer p.closing.RUnlock()
	return read()
}

// ActivePage implements Store. It walks the active index, which is ordered
// by partition then id; next is the index key of the page's last delivery
// after its leading byte.
func (p *Pebble) ActivePage(_ context.Context, partitions []int, after string, limit int) ([]Delivery, string, error) {
	var page []Delivery
	next := ""
	err := p.view(func() error {
		wanted := slices.Sorted(slices.Values(partitions))
		if len(wanted) == 0 || limit < 1 {
			return nil
		}
		lower := []byte{prefixActive, byte(wanted[0])}
		iter, err := p.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte{prefixActive, byte(wanted[len(wanted)-1] + 1)}})
		if err != nil {
			return err
		}
		// The deliveries are read with a second iterator, not a Get each:
		// a partition's ids ascend, so each seek starts from the last one's
		// blocks rather than from the top of every level.
		records, err := p.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixDelivery}, UpperBound: []byte{prefixDelivery + 1}})
		if err != nil {
			return errors.Join(err, iter.Close())
		}
		valid := iter.First()
		if after != "" {
			// Past the key named by after, which may be gone by now.
			valid = iter.SeekGE(append([]byte{prefixActive}, after...))
			if valid && string(iter.Key()[1:]) == after {
				valid = iter.Next()
			}
		}
		for valid && err == nil {
			key := iter.Key()
			if partition := int(key[1]); !slices.Contains(wanted, partition) {
				// On to the next partition asked for, if any.
				i, _ := slices.BinarySearch(wanted, partition)
				if i == len(wanted) {
					break
				}
				valid = iter.SeekGE([]byte{prefixActive, byte(wanted[i])})
				continue
			}
			if len(page) == limit {
				next = string(activeKey(page[len(page)-1])[1:])
				break
			}
			var delivery Delivery
			if delivery, err = seekRecord(records, deliveryKey(string(key[2:])), decodeDelivery); err == nil {
				page = append(page, delivery)
				valid = iter.Next()
			}
		}
		return errors.Join(err, iter.Error(), iter.Close(), records.Close())
	})
	if err != nil {
		return nil, "", fmt.Errorf("store: listing active deliveries: %w", err)
	}
	return page, next, nil
}

// seekRecord reads the record of an index entry, which must be stored,
// with an iterator over the records' range.
func seekRecord[T any](records *pebble.Iterator, key []byte, decode func([]byte) (T, error)) (T, error) {
	value, found, err := seekGet(records, key, decode)
	if err == nil && !found {
		err = fmt.Errorf("%q is indexed but not stored", key)
	}
	return value, err
}

// seekGet is getRecord with an iterator over the records' range: it seeks
// on from where the iterator is, so that reads of keys in ascending order
// share blocks; found is false when there is no record.
func seekGet[T any](records *pebble.Iterator, key []byte, decode func([]byte) (T, error)) (value T, found bool, err error) {
	if !records.SeekGE(key) || !bytes.Equal(records.Key(), key) {
		return value, false, records.Error()
	}
	data, err := records.ValueAndErr()
	if err != nil {
		return value, false, err
	}
	value, err = decode(data)
	return value, err == nil, err
}

// indexed reads a delivery that an index names, which must be stored.
func (p *Pebble) indexed(id []byte) (Delivery, error) {
	delivery, found, err := getRecord(p.db, deliveryKey(string(id)), decodeDelivery)
	if err == nil && !found {
		err = fmt.Errorf("delivery %s is indexed but not stored", id)
	}
	return delivery, err
}

// eachRecord decodes every record under prefix and appends it to list.
func eachRecord[T any](p *Pebble, prefix []byte, decode func([]byte) (T, error), list *[]T) error {
	return p.each(prefix, prefixEnd(prefix), func(key, value []byte) error {
		record, err := decode(value)
		if err != nil {
			return fmt.Errorf("record %q: %w", key, err)
		}
		*list = append(*list, record)
		return nil
	})
}

// Healths implements Store.
func (p *Pebble) Healths(context.Context) ([]Health, error) {
	var out []Health
	if err := p.view(func() error { return eachRecord(p, []byte{prefixHealth}, decodeHealth, &out) }); err != nil {
		return nil, fmt.Errorf("store: listing health: %w", err)
	}
	return out, nil
}

// Attempts implements Store.
func (p *Pebble) Attempts(_ context.Context, deliveryID string) ([]Attempt, error) {
	var out []Attempt
	if err := p.view(func() error { return eachRecord(p, attemptsPrefix(deliveryID), decodeAttempt, &out) }); err != nil {
		return nil, fmt.Errorf("store: attempts of %s: %w", deliveryID, err)
	}
	return out, nil
}

// readOne reads one record, ErrNotFound when there is none.
func readOne[T any](p *Pebble, key []byte, decode func([]byte) (T, error)) (T, error) {
	var value T
	err := p.view(func() error {
		var found bool
		var err error
		if value, found, err = getRecord(p.db, key, decode); err == nil && !found {
			err = ErrNotFound
		}
		return err
	})
	return value, err
}

// Event implements Store.
func (p *Pebble) Event(_ context.Context, namespace, id string) (Event, error) {
	record, err := readOne(p, pebbleEventKey(namespace, id), decodeEvent)
	if err != nil {
		return Event{}, fmt.Errorf("store: event %s/%s: %w", namespace, id, err)
	}
	return record.Event, nil
}

// Events implements Store. It seeks one iterator to the events in key
// order, so that events stored side by side are read from the same blocks.
func (p *Pebble) Events(_ context.Context, deliveries []Delivery) ([]Event, error) {
	events := make([]Event, len(deliveries))
	keys := make([][]byte, len(deliveries))
	order := make([]int, len(deliveries))
	for i, delivery := range deliveries {
		keys[i], order[i] = pebbleEventKey(delivery.Namespace, delivery.EventID), i
	}
	slices.SortFunc(order, func(a, b int) int { return bytes.Compare(keys[a], keys[b]) })
	err := p.view(func() error {
		iter, err := p.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixEvent}, UpperBound: []byte{prefixEvent + 1}})
		if err != nil {
			return err
		}
		for _, i := range order {
			var record eventRecord
			if record, _, err = seekGet(iter, keys[i], decodeEvent); err != nil {
				err = fmt.Errorf("event %q: %w", keys[i], err)
				break
			}
			events[i] = record.Event
		}
		return errors.Join(err, iter.Error(), iter.Close())
	})
	if err != nil {
		return nil, fmt.Errorf("store: reading %d events: %w", len(deliveries), err)
	}
	return events, nil
}

// Delivery implements Store.
func (p *Pebble) Delivery(_ context.Context, id string) (Delivery, error) {
	delivery, err := readOne(p, deliveryKey(id), decodeDelivery)
	if err != nil {
		return Delivery{}, fmt.Errorf("store: delivery %s: %w", id, err)
	}
	return delivery, nil
}

// DeliveriesOf implements Store.
func (p *Pebble) DeliveriesOf(_ context.Context, namespace, eventID string) ([]Delivery, error) {
	var out []Delivery
	err := p.view(func() error {
		record, found, err := getRecord(p.db, pebbleEventKey(namespace, eventID), decodeEvent)
		if err != nil || !found {
			return err
		}
		out, err = p.liveDeliveries(record.Refs)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: deliveries of %s/%s: %w", namespace, eventID, err)
	}
	return out, nil
}

// liveDeliveries reads the deliveries of refs still stored.
func (p *Pebble) liveDeliveries(refs []deliveryRef) ([]Delivery, error) {
	var out []Delivery
	for _, ref := range refs {
		delivery, found, err := getRecord(p.db, deliveryKey(ref.ID), decodeDelivery)
		if err != nil {
			return nil, fmt.Errorf("delivery %s: %w", ref.ID, err)
		}
		if found {
			out = append(out, delivery)
		}
	}
	return out, nil
}

// EndpointDeliveries implements Store.
func (p *Pebble) EndpointDeliveries(_ context.Context, namespace, endpoint string, query DeliveryQuery) ([]Delivery, string, error) {
	var page []Delivery
	next := ""
	err := p.view(func() error {
		prefix := endpointPrefix(namespace, endpoint)
		upper := prefixEnd(prefix)
		if query.After != "" {
			upper = append(bytes.Clone(prefix), query.After...) // exclusive: the page starts after it
		}
		iter, err := p.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
		if err != nil {
			return err
		}
		// Newest first: ids sort in acceptance order, so walk backwards.
		for iter.Last(); iter.Valid(); iter.Prev() {
			var delivery Delivery
			if delivery, err = p.indexed(iter.Key()[len(prefix):]); err != nil {
				break
			}
			var stop bool
			if page, next, stop = query.step(page, delivery); stop {
				break
			}
		}
		return errors.Join(err, iter.Error(), iter.Close())
	})
	if err != nil {
		return nil, "", fmt.Errorf("store: deliveries of endpoint %s/%s: %w", namespace, endpoint, err)
	}
	return page, next, nil
}

// Sweep implements Store. Its deletions are not synced: after a power
// loss, what they deleted is swept again.
func (p *Pebble) Sweep(_ context.Context, before time.Time) (int, error) {
	swept := 0
	err := p.view(func() error {
		lower, upper := []byte{prefixSweep}, sweepKey(before, 0, nil)
		for {
			var hints [][]byte
			err := p.each(lower, upper, func(key, _ []byte) error {
				hints = append(hints, bytes.Clone(key))
				if len(hints) == sweepChunk {
					return errStopIteration
				}
				return nil
			})
			if err != nil && !errors.Is(err, errStopIteration) {
				return err
			}
			if len(hints) == 0 {
				return nil
			}
			n, err := p.sweepChunk(hints, before)
			swept += n
			if err != nil {
				return err
			}
		}
	})
	if err != nil {
		return swept, fmt.Errorf("store: sweeping before %s: %w", before.Format(time.RFC3339), err)
	}
	return swept, nil
}

var errStopIteration = errors.New("enough")

// hintSubject is the kind and key a sweep hint names.
func hintSubject(hint []byte) (kind byte, rest []byte) { return hint[9], hint[10:] }

// sweepChunk deletes the finished deliveries the hints name, with their
// attempts and index entries, then the events left with none, and the
// hints themselves.
func (p *Pebble) sweepChunk(hints [][]byte, before time.Time) (int, error) {
	var ids []string
	events := map[string]bool{}
	for _, hint := range hints {
		switch kind, rest := hintSubject(hint); kind {
		case sweepDelivery:
			ids = append(ids, string(rest))
		case sweepEvent:
			events[string(rest)] = true
		}
	}
	swept := 0
	unlock := p.deliveries.lock(ids...)
	batch := p.db.NewBatch()
	defer batch.Close()
	for _, hint := range hints {
		if err := batch.Delete(hint, nil); err != nil {
			unlock()
			return 0, err
		}
	}
	for _, id := range ids {
		delivery, found, err := getRecord(p.db, deliveryKey(id), decodeDelivery)
		if err != nil {
			unlock()
			return 0, fmt.Errorf("delivery %s: %w", id, err)
		}
		// A hint whose delivery moved on is dropped; the delivery's own is kept.
		if !found || isActive(delivery.State) || !delivery.UpdatedAt.Before(before) {
			if found && !isActive(delivery.State) {
				err = batch.Set(sweepKey(delivery.UpdatedAt, sweepDelivery, []byte(id)), nil, nil)
			}
			if err != nil {
				unlock()
				return 0, err
			}
			continue
		}
		if err := p.deleteDelivery(batch, delivery); err != nil {
			unlock()
			return 0, err
		}
		events[string(pebbleEventKey(delivery.Namespace, delivery.EventID))] = true
		swept++
	}
	err := batch.Commit(pebble.NoSync)
	unlock()
	if err != nil {
		return 0, err
	}
	for event := range events {
		if err := p.sweepEvent([]byte(event), before); err != nil {
			return swept, err
		}
	}
	return swept, nil
}

// deleteDelivery deletes a finished delivery, its attempts and its index
// entries into the batch.
func (p *Pebble) deleteDelivery(batch *pebble.Batch, delivery Delivery) error {
	for _, key := range [][]byte{deliveryKey(delivery.ID), endpointIndexKey(delivery)} {
		if err := batch.Delete(key, nil); err != nil {
			return err
		}
	}
	prefix := attemptsPrefix(delivery.ID)
	return p.each(prefix, prefixEnd(prefix), func(key, _ []byte) error { return batch.Delete(key, nil) })
}

// sweepEvent deletes an event that has no delivery left and was accepted
// before the horizon; one accepted later gets a hint at its acceptance.
func (p *Pebble) sweepEvent(key []byte, before time.Time) error {
	unlock := p.events.lock(string(key))
	defer unlock()
	record, found, err := getRecord(p.db, key, decodeEvent)
	if err != nil || !found {
		return err
	}
	live, err := p.liveDeliveries(record.Refs)
	if err != nil || len(live) > 0 {
		return err
	}
	if !record.Event.AcceptedAt.Before(before) {
		return p.db.Set(sweepKey(record.Event.AcceptedAt, sweepEvent, key), nil, pebble.NoSync)
	}
	return p.db.Delete(key, pebble.NoSync)
}

var _ Store = (*Pebble)(nil)
