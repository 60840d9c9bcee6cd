package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2"
	bolt "go.etcd.io/bbolt"
)

// BoltMigration says what MigrateBolt copied.
type BoltMigration struct {
	// From is the bbolt file copied, To the name it was renamed to.
	From, To                              string
	Events, Deliveries, Attempts, Healths int
}

// migrationBatch bounds the records one commit of the copy writes.
const migrationBatch = 4096

// MigrateBolt copies everything in the bbolt store file at path (events
// with their data, deliveries, attempts, health and the delivery sequence)
// into the pebble store, syncs it, and renames the file to
// "<path>.migrated", so that it is copied once. With no file at path it
// does nothing and returns nil. A copy cut short (the process died) is
// simply done again on the next start: the file is renamed last, and each
// record is written under the same key again.
func MigrateBolt(path string, to *Pebble) (*BoltMigration, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, nil //nolint:nilnil // nothing to migrate is not an error
	}
	if err := checkFile(path); err != nil {
		return nil, err
	}
	if err := to.enter(); err != nil {
		return nil, err
	}
	defer to.closing.RUnlock()
	if err := to.checkMigrationTarget(path); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, ReadOnly: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, corruptOr(path, fmt.Errorf("store: opening %s: %w", path, err))
	}
	report := &BoltMigration{From: path, To: path + ".migrated"}
	copyErr := db.View(func(tx *bolt.Tx) error { return to.copyBolt(tx, report) })
	if err := errors.Join(copyErr, db.Close()); err != nil {
		return nil, fmt.Errorf("store: migrating %s to %s: %w", path, to.dir, err)
	}
	if err := to.syncWAL(); err != nil {
		return nil, fmt.Errorf("store: migrating %s to %s: %w", path, to.dir, err)
	}
	if err := to.loadDisabled(); err != nil {
		return nil, fmt.Errorf("store: migrating %s to %s: %w", path, to.dir, err)
	}
	if err := os.Rename(path, report.To); err != nil {
		return nil, fmt.Errorf("store: migrated %s to %s, but: %w", path, to.dir, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("store: migrated %s to %s, but: %w", path, to.dir, err)
	}
	if err := to.db.Delete([]byte(keyMigrating), pebble.Sync); err != nil {
		return nil, fmt.Errorf("store: migrated %s to %s, but: %w", path, to.dir, err)
	}
	return report, nil
}

// keyMigrating → the bbolt file being copied, while a copy is under way.
const keyMigrating = "m"

// checkMigrationTarget refuses to copy into a pebble store that handed out
// delivery ids of its own (it served before the bbolt file came back):
// the two stores' ids would collide. A copy cut short may be repeated.
func (p *Pebble) checkMigrationTarget(path string) error {
	_, copying, err := getRecord(p.db, []byte(keyMigrating), func(b []byte) ([]byte, error) { return b, nil })
	if err != nil {
		return fmt.Errorf("store: reading %s: %w", p.dir, err)
	}
	if !copying && p.sequence.reserved > 0 {
		return fmt.Errorf("store: %s holds deliveries of its own, so %s cannot be copied into it: "+
			"move one of them aside, or run with --store=bolt", p.dir, path)
	}
	return nil
}

// syncDir makes a rename in the folder durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}

// boltCopy writes into pebble in batches of migrationBatch records.
type boltCopy struct {
	db    *pebble.DB
	batch *pebble.Batch
}

func (c *boltCopy) flushIfFull() error {
	if c.batch.Count() < migrationBatch {
		return nil
	}
	return c.flush()
}

func (c *boltCopy) flush() error {
	err := c.batch.Commit(pebble.NoSync)
	if closeErr := c.batch.Close(); err == nil {
		err = closeErr
	}
	c.batch = c.db.NewBatch()
	return err
}

// eachJSON decodes every value of a bbolt bucket as T and calls fn with it.
func eachJSON[T any](c *boltCopy, bucket *bolt.Bucket, fn func(key []byte, value T) error) error {
	return bucket.ForEach(func(key, data []byte) error {
		var value T
		if err := json.Unmarshal(data, &value); err != nil {
			return fmt.Errorf("record %q: %w", key, err)
		}
		if err := fn(key, value); err != nil {
			return err
		}
		return c.flushIfFull()
	})
}

func (p *Pebble) copyBolt(tx *bolt.Tx, report *BoltMigration) (err error) {
	c := &boltCopy{db: p.db, batch: p.db.NewBatch()}
	defer func() { err = errors.Join(err, c.batch.Close()) }()
	// Marks a copy under way, which a restart may repeat over its own
	// records; deleted once the file is renamed.
	if err := c.batch.Set([]byte(keyMigrating), []byte(report.From), nil); err != nil {
		return err
	}
	err = eachJSON(c, tx.Bucket(bucketHealth), func(_ []byte, health Health) error {
		report.Healths++
		return c.batch.Set(healthKey(health.Endpoint), encodeHealth(health), nil)
	})
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	deliveries := tx.Bucket(bucketDeliveries)
	err = eachJSON(c, deliveries, func(_ []byte, delivery Delivery) error {
		report.Deliveries++
		return writeDelivery(c.batch, delivery, nil)
	})
	if err != nil {
		return fmt.Errorf("deliveries: %w", err)
	}
	err = eachJSON(c, tx.Bucket(bucketAttempts), func(_ []byte, attempt Attempt) error {
		report.Attempts++
		return c.batch.Set(pebbleAttemptKey(attempt.DeliveryID, attempt.Number), encodeAttempt(attempt), nil)
	})
	if err != nil {
		return fmt.Errorf("attempts: %w", err)
	}
	err = eachJSON(c, tx.Bucket(bucketEvents), func(key []byte, event Event) error {
		report.Events++
		return p.copyBoltEvent(c.batch, tx, key, event)
	})
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	if err := p.continueSequence(c.batch, deliveries.Sequence()); err != nil {
		return err
	}
	return c.flush()
}

// copyBoltEvent writes an event with its data and the deliveries bbolt's
// by-event index names.
func (p *Pebble) copyBoltEvent(batch *pebble.Batch, tx *bolt.Tx, key []byte, event Event) error {
	event.Data = tx.Bucket(bucketEventData).Get(key) // copied by encodeEvent before the transaction ends
	var refs []deliveryRef
	prefix := append(append([]byte{}, key...), 0)
	err := eachWithPrefix(tx.Bucket(bucketByEvent), prefix, func(id, _ []byte) error {
		delivery, found, err := get[Delivery](tx.Bucket(bucketDeliveries), id)
		if err != nil || !found {
			return errors.Join(err, fmt.Errorf("delivery %s of event %q is indexed but not stored", id, key))
		}
		refs = append(refs, deliveryRef{ID: delivery.ID, Endpoint: delivery.Endpoint})
		return nil
	})
	if err != nil {
		return err
	}
	pebbleKey := pebbleEventKey(event.Namespace, event.ID)
	if err := batch.Set(pebbleKey, encodeEvent(eventRecord{Event: event, Refs: refs}), nil); err != nil {
		return err
	}
	if len(refs) == 0 {
		return batch.Set(sweepKey(event.AcceptedAt, sweepEvent, pebbleKey), nil, nil)
	}
	return nil
}

// continueSequence makes new delivery ids sort after the copied ones.
func (p *Pebble) continueSequence(batch *pebble.Batch, used uint64) error {
	s := &p.sequence
	s.Lock()
	defer s.Unlock()
	if used <= s.reserved {
		return nil
	}
	s.used, s.reserved = used, used
	return batch.Set([]byte(keySequence), binary.BigEndian.AppendUint64(nil, used), nil)
}
