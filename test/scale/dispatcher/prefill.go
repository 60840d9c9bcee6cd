package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/store"
)

// prefillMarker is written into a prefilled store's folder with the sizes it
// was filled to, so that --prefilled reuses only a store of the same shape.
const prefillMarker = "scale-prefill.json"

// shape is what a prefilled store holds.
type shape struct {
	Store      string `json:"store"`
	Endpoints  int    `json:"endpoints"`
	Namespaces int    `json:"namespaces"`
	Deliveries int    `json:"deliveries"`
	Held       int    `json:"held"`
	FanOut     int    `json:"fanOut"`
}

// openStore opens the embedded engine --store names in dir, where the
// dispatcher's --data-dir puts it. An engine the dispatcher gains gets a
// case here; the prefill itself uses only the store.Store interface.
func openStore(kind, dir string) (store.Store, error) {
	switch kind {
	case "pebble":
		db, err := store.OpenPebble(filepath.Join(dir, "pebble"))
		if err != nil {
			return nil, err
		}
		return db, nil
	case "bolt":
		db, err := store.OpenBolt(filepath.Join(dir, "hookrelay.db"))
		if err != nil {
			return nil, err
		}
		return db, nil
	default:
		return nil, fmt.Errorf("--store=%s: this test fills only the embedded stores (pebble, bolt)", kind)
	}
}

// prepareStore leaves a store of the given shape in runDir: a copy of the
// one in prefilled when that holds the same shape (filled there first when
// it holds nothing), else filled in runDir itself.
func prepareStore(ctx context.Context, want shape, f fleet, prefilled, runDir string) error {
	if prefilled == "" {
		return prefill(ctx, want, f, runDir)
	}
	data, err := os.ReadFile(filepath.Join(prefilled, prefillMarker))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(prefilled, 0o700); err != nil {
			return err
		}
		if err := prefill(ctx, want, f, prefilled); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		var have shape
		if err := json.Unmarshal(data, &have); err != nil {
			return fmt.Errorf("--prefilled %s: %s: %w", prefilled, prefillMarker, err)
		}
		if have != want {
			return fmt.Errorf("--prefilled %s holds %+v, not the %+v asked for: remove the folder or pass the same sizes", prefilled, have, want)
		}
		fmt.Fprintf(os.Stderr, "scale: reusing the store prefilled in %s\n", prefilled)
	}
	started := time.Now()
	if err := copyTree(prefilled, runDir); err != nil {
		return fmt.Errorf("copying the prefilled store: %w", err)
	}
	fmt.Fprintf(os.Stderr, "scale: copied the prefilled store in %s\n", time.Since(started).Round(time.Millisecond))
	return nil
}

// prefill stores want.Deliveries deliveries through the Store interface:
// want.Held for the held endpoint, whose stored health says disabled, one
// event each, and the rest to the other endpoints, want.FanOut to an event,
// finished with one successful attempt each. The held events are spread
// among the others, as if they had piled up while the rest was delivered.
func prefill(ctx context.Context, want shape, f fleet, dir string) error {
	db, err := openStore(want.Store, dir)
	if err != nil {
		return err
	}
	defer db.Close()
	disabledAt := time.Now().UTC()
	if err := db.PutHealth(ctx, store.Health{Endpoint: f.held().id(), UID: f.held().uid(), ConsecutiveFailures: 20, Disabled: true,
		DisabledAt: &disabledAt, LastFailure: &disabledAt, LastFailureReason: "HTTP 503 (scale test)"}); err != nil {
		return err
	}
	finishedEvents := (want.Deliveries - want.Held + want.FanOut - 1) / want.FanOut
	plan := plan{held: want.Held, total: want.Held + finishedEvents, fanOut: want.FanOut, finished: want.Deliveries - want.Held, fleet: f}
	progress := &progress{total: want.Deliveries, started: time.Now()}
	stop := progress.report(5 * time.Second)
	var next atomic.Int64
	errs := make(chan error, prefillWorkers)
	var wg sync.WaitGroup
	for range prefillWorkers {
		wg.Go(func() {
			w := prefillWorker{db: db, plan: plan, progress: progress}
			for job := int(next.Add(1)) - 1; job < plan.total; job = int(next.Add(1)) - 1 {
				if err := w.do(ctx, job); err != nil {
					errs <- err
					return
				}
			}
			if err := w.flush(ctx); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	stop()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "scale: prefilled %d deliveries (%d held) in %s (%.0f deliveries/s)\n", progress.done.Load(), want.Held,
		time.Since(progress.started).Round(time.Second), float64(progress.done.Load())/time.Since(progress.started).Seconds())
	if err := db.Close(); err != nil {
		return err
	}
	marker, err := json.Marshal(want)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, prefillMarker), marker, 0o600)
}

// prefillWorkers is how many goroutines fill the store at once: an engine
// that commits concurrent writes together (bbolt's group commit, a WAL) gets
// large batches out of them.
const prefillWorkers = 64

// recordBatch is how many attempt records one RecordAttempts call stores.
const recordBatch = 1000

// plan says what each prefill job stores: job j is one event, held when the
// held events spread evenly over all jobs give it one.
type plan struct {
	held, total, fanOut, finished int
	fleet                         fleet
}

func (p plan) isHeld(job int) bool { return (job+1)*p.held/p.total != job*p.held/p.total }

// heldBefore is how many held events come before job.
func (p plan) heldBefore(job int) int { return job * p.held / p.total }

type prefillWorker struct {
	db       store.Store
	plan     plan
	progress *progress
	records  []store.AttemptRecord
}

func (w *prefillWorker) do(ctx context.Context, job int) error {
	f := w.plan.fleet
	number := job - w.plan.heldBefore(job)
	event := store.Event{ID: fmt.Sprintf("filled-%07d", number), Type: eventFilled, CreatedAt: time.Now().UTC(), AcceptedAt: time.Now().UTC(),
		Data: fmt.Appendf(nil, `{"order":"ord_%08d","amount":%d,"currency":"EUR","customer":"cus_%06d"}`, job, 100+job%9000, job%100000)}
	var targets []store.Target
	if w.plan.isHeld(job) {
		held := f.held()
		event.Namespace, event.ID = held.namespace, heldEventID(w.plan.heldBefore(job))
		targets = []store.Target{{Endpoint: held.name, Held: true}}
	} else {
		// Fan-out within one namespace, as an event reaches only its own
		// namespace's endpoints; the last event takes what is left.
		event.Namespace = f.namespace(number % f.namespaces)
		first := (number / f.namespaces) * w.plan.fanOut
		for i := range min(w.plan.fanOut, w.plan.finished-number*w.plan.fanOut) {
			targets = append(targets, store.Target{Endpoint: f.finishedEndpoint(number%f.namespaces, first+i).name})
		}
	}
	accepted, err := w.db.Accept(ctx, event, targets, time.Time{})
	if err != nil {
		return err
	}
	if accepted.Duplicate {
		return fmt.Errorf("prefill: event %s/%s accepted twice: is the store empty?", event.Namespace, event.ID)
	}
	for _, delivery := range accepted.Deliveries {
		if delivery.State == store.Held {
			continue
		}
		finished := time.Now().UTC()
		delivery.State, delivery.Attempts, delivery.NextAttemptAt, delivery.UpdatedAt = store.Succeeded, 1, time.Time{}, finished
		w.records = append(w.records, store.AttemptRecord{Delivery: delivery, Attempt: store.Attempt{
			DeliveryID: delivery.ID, Number: 1, StartedAt: finished, DurationMS: 3.2, StatusCode: 200, Response: `{"ok":true}`}})
	}
	w.progress.done.Add(int64(len(accepted.Deliveries)))
	if len(w.records) >= recordBatch {
		return w.flush(ctx)
	}
	return nil
}

// flush stores the attempts gathered so far.
func (w *prefillWorker) flush(ctx context.Context) error {
	if len(w.records) == 0 {
		return nil
	}
	applied, err := w.db.RecordAttempts(ctx, w.records)
	if err != nil {
		return err
	}
	if i := slices.Index(applied, false); i >= 0 {
		return fmt.Errorf("prefill: the attempt of delivery %s was not applied", w.records[i].Delivery.ID)
	}
	w.records = w.records[:0]
	return nil
}

// progress counts stored deliveries and prints the count now and then.
type progress struct {
	total   int
	started time.Time
	done    atomic.Int64
}

// report prints the progress every interval until the returned stop.
func (p *progress) report(interval time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case <-ticker.C:
				n := p.done.Load()
				elapsed := time.Since(p.started)
				fmt.Fprintf(os.Stderr, "scale: prefill %d/%d deliveries, %.0f/s, %s\n", n, p.total, float64(n)/elapsed.Seconds(), elapsed.Round(time.Second))
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// heldOrder reads the held endpoint's deliveries from the store and returns
// each held event's rank in acceptance order (delivery ids sort in the order
// deliveries were accepted).
func heldOrder(ctx context.Context, kind, dir string, held endpoint) (map[string]int, error) {
	db, err := openStore(kind, dir)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var deliveries []store.Delivery
	query := store.DeliveryQuery{State: store.Held, Limit: 1000}
	for {
		page, next, err := db.EndpointDeliveries(ctx, held.namespace, held.name, query)
		if err != nil {
			return nil, err
		}
		deliveries = append(deliveries, page...)
		if next == "" {
			break
		}
		query.After = next
	}
	slices.SortFunc(deliveries, func(a, b store.Delivery) int { return strings.Compare(a.ID, b.ID) })
	ranks := make(map[string]int, len(deliveries))
	for i, delivery := range deliveries {
		ranks[delivery.EventID] = i
	}
	return ranks, db.Close()
}

func heldEventID(n int) string { return fmt.Sprintf("held-%07d", n) }

// copyTree copies the regular files under from into to, keeping the layout.
func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		relative, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		target := filepath.Join(to, relative)
		if entry.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		return copyFile(path, target)
	})
}

func copyFile(from, to string) error {
	source, err := os.Open(from)
	if err != nil {
		return err
	}
	defer source.Close()
	target, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(target, source); err != nil {
		target.Close()
		return err
	}
	return target.Close()
}
