package delivery

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/utils/clock"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
)

func openJournal(t *testing.T, path string) *Journal {
	t.Helper()
	journal, err := OpenJournal(path)
	if err != nil {
		t.Fatalf("OpenJournal: %v", err)
	}
	t.Cleanup(func() { journal.Close() })
	return journal
}

// writtenJournal is the path of a journal file holding content, as a
// previous process left it.
func writtenJournal(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "inflight.journal")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestJournalRemembersAttemptsInFlightAcrossACrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inflight.journal")
	journal := openJournal(t, path)
	if got := journal.Previous(); len(got) != 0 {
		t.Fatalf("Previous of a new journal = %v, want none", got)
	}
	for _, start := range []struct {
		id      string
		attempt int
	}{{"dlv_a", 1}, {"dlv_b", 1}, {"dlv_a", 2}, {"dlv_c", 4}} {
		if err := journal.Start(start.id, start.attempt); err != nil {
			t.Fatal(err)
		}
	}
	journal.Done("dlv_b") // Done only matters to a rewrite: the line stays.

	// A killed process closes nothing: what it wrote is what the next reads.
	again := openJournal(t, path)
	want := map[string]int{"dlv_a": 2, "dlv_b": 1, "dlv_c": 4}
	if got := again.Previous(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Previous = %v, want %v", got, want)
	}
	// What is accounted for is gone for good; the rest stays, through the
	// rewrite and the next crash.
	if err := again.Accounted([]string{"dlv_a", "dlv_b"}); err != nil {
		t.Fatal(err)
	}
	if got, want := again.Previous(), map[string]int{"dlv_c": 4}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Previous after Accounted = %v, want %v", got, want)
	}
	if got, want := openJournal(t, path).Previous(), map[string]int{"dlv_c": 4}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Previous of the next process after Accounted = %v, want %v", got, want)
	}
}

// TestJournalSkipsATornLine: a line the process died in the middle of
// has no newline yet, even where what it holds parses ("dlv_3 1" of
// "dlv_3 12"), and the unused rest of the file is zeros.
func TestJournalSkipsATornLine(t *testing.T) {
	for _, content := range []string{"dlv_1 1\ngarbage\ndlv_2 ", "dlv_1 1\ndlv_3 1", "dlv_1 1\ndlv_3 1\x00\x00\x00"} {
		if got, want := openJournal(t, writtenJournal(t, content)).Previous(), map[string]int{"dlv_1": 1}; !reflect.DeepEqual(got, want) {
			t.Fatalf("Previous of %q = %v, want %v", content, got, want)
		}
	}
}

// TestJournalAccountedLinesEndEarlierOnes: a delivery's "-" line drops its
// lines before it, not the ones after (an attempt started once its
// interruption was stored).
func TestJournalAccountedLinesEndEarlierOnes(t *testing.T) {
	content := "dlv_1 1\ndlv_2 1\ndlv_1 -\ndlv_3 2\ndlv_3 -\ndlv_3 3\n"
	if got, want := openJournal(t, writtenJournal(t, content)).Previous(), map[string]int{"dlv_2": 1, "dlv_3": 3}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Previous of %q = %v, want %v", content, got, want)
	}
}

// TestJournalAccountedKeepsTheAttemptInFlight: accounting for the previous
// process's lines of a delivery whose next attempt this process has
// started (a retry during the take) keeps that attempt for the next start.
func TestJournalAccountedKeepsTheAttemptInFlight(t *testing.T) {
	path := writtenJournal(t, "dlv_1 3\n")
	journal := openJournal(t, path)
	if err := journal.Start("dlv_1", 4); err != nil {
		t.Fatal(err)
	}
	if err := journal.Accounted([]string{"dlv_1"}); err != nil {
		t.Fatal(err)
	}
	// Killed now: the next process reads what is in the file.
	if got, want := openJournal(t, path).Previous(), map[string]int{"dlv_1": 4}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Previous after a crash during attempt 4 = %v, want %v", got, want)
	}
}

func TestJournalIsRewrittenWithTheAttemptsInFlight(t *testing.T) {
	// The previous process's attempt, not accounted for yet.
	path := writtenJournal(t, "dlv_previous 2\n")
	journal := openJournal(t, path)
	if err := journal.Start("dlv_slow", 1); err != nil {
		t.Fatal(err)
	}
	for i := range journalSize/16 + 10 {
		id := fmt.Sprintf("dlv_%012d", i)
		if err := journal.Start(id, 1); err != nil {
			t.Fatal(err)
		}
		journal.Done(id)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() > journalSize {
		t.Fatalf("journal is %d bytes, want it rewritten under %d", info.Size(), journalSize)
	}
	previous := openJournal(t, path).Previous()
	if previous["dlv_slow"] != 1 {
		t.Fatalf("the attempt still in flight was lost in the rewrite: %v entries, dlv_slow=%d", len(previous), previous["dlv_slow"])
	}
	if previous["dlv_previous"] != 2 {
		t.Fatalf("the previous process's attempt was lost in the rewrite before it was accounted for: dlv_previous=%d", previous["dlv_previous"])
	}
}

func TestInterruptionsCountAndPoison(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	active := []store.Delivery{
		{ID: "dlv_first_crash", State: store.Pending, Attempts: 0},
		{ID: "dlv_third_crash", State: store.Pending, Attempts: 1, Interrupted: 2, NextAttemptAt: now},
		{ID: "dlv_recorded", State: store.Pending, Attempts: 2},      // attempt 2 finished and was stored
		{ID: "dlv_held", State: store.Held, Attempts: 1},             // not pending: not attempted since
		{ID: "dlv_not_in_flight", State: store.Pending, Attempts: 1}, // no journal line
	}
	started := map[string]int{"dlv_first_crash": 1, "dlv_third_crash": 2, "dlv_recorded": 2, "dlv_held": 2}

	kept, interrupted, poisoned := interruptions(active, started, 3, now)
	ids := func(deliveries []store.Delivery) []string {
		var out []string
		for _, d := range deliveries {
			out = append(out, d.ID)
		}
		return out
	}
	if got, want := ids(kept), []string{"dlv_first_crash", "dlv_recorded", "dlv_held", "dlv_not_in_flight"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("kept = %v, want %v", got, want)
	}
	if len(interrupted) != 1 || interrupted[0].ID != "dlv_first_crash" || interrupted[0].Interrupted != 1 || kept[0].Interrupted != 1 {
		t.Fatalf("interrupted = %+v, want dlv_first_crash once", interrupted)
	}
	if len(poisoned) != 1 {
		t.Fatalf("poisoned = %+v, want dlv_third_crash", poisoned)
	}
	record := poisoned[0]
	if d := record.Delivery; d.ID != "dlv_third_crash" || d.State != store.Failed || d.Attempts != 2 || d.Interrupted != 3 || !d.NextAttemptAt.IsZero() || !d.UpdatedAt.Equal(now) {
		t.Fatalf("poisoned delivery = %+v", d)
	}
	if a := record.Attempt; a.Number != 2 || !strings.HasPrefix(a.Error, "Poisoned: ") || !strings.Contains(a.Error, "3 times") {
		t.Fatalf("poisoned attempt = %+v", a)
	}

	// 0 never poisons.
	if _, interrupted, poisoned := interruptions(active, started, 0, now); len(poisoned) != 0 || len(interrupted) != 2 {
		t.Fatalf("poisonAfter 0: interrupted %d, poisoned %d; want 2 and 0", len(interrupted), len(poisoned))
	}
}

// TestPoisonIsTheStoresNextAttempt: when the journal is ahead of the store
// (a record of an earlier attempt failed to store), the delivery is still
// poisoned, as the store's next attempt, which RecordAttempts applies.
func TestPoisonIsTheStoresNextAttempt(t *testing.T) {
	ctx := t.Context()
	db, err := store.OpenBolt(filepath.Join(t.TempDir(), "hookrelay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	accepted, err := db.Accept(ctx, store.Event{Namespace: "ns", ID: "evt_1", Type: "t", Data: []byte(`{}`), AcceptedAt: now},
		[]store.Target{{Endpoint: "a"}}, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	delivery := accepted.Deliveries[0]
	delivery.Interrupted = 2
	_, _, poisoned := interruptions([]store.Delivery{delivery}, map[string]int{delivery.ID: 3}, 3, now)
	applied, err := db.RecordAttempts(ctx, poisoned)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := db.Delivery(ctx, delivery.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(applied, []bool{true}) || stored.State != store.Failed || stored.Attempts != 1 {
		t.Fatalf("poison record applied %v, stored %s at %d attempts; want applied, failed at 1", applied, stored.State, stored.Attempts)
	}
}

// crashedJournal leaves a journal at path as a process killed while
// attempting the deliveries would: their lines, and no end.
func crashedJournal(t *testing.T, path string, deliveryIDs ...string) {
	t.Helper()
	journal, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range deliveryIDs {
		if err := journal.Start(id, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := journal.Close(); err != nil {
		t.Fatal(err)
	}
}

// acceptEvents stores n events of one delivery each to the endpoint
// ns/ordered and returns their deliveries, oldest first.
func acceptEvents(t *testing.T, db store.Store, n int) []store.Delivery {
	t.Helper()
	now := time.Now().UTC()
	var out []store.Delivery
	for i := range n {
		accepted, err := db.Accept(t.Context(), store.Event{Namespace: "ns", ID: fmt.Sprintf("evt_%d", i), Type: "t", Data: []byte(`{}`), AcceptedAt: now},
			[]store.Target{{Endpoint: "ordered"}}, now.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, accepted.Deliveries...)
	}
	return out
}

// recoverEngine starts an engine on db with the journal at path, to read
// the stored deliveries back a page of releaseChunk at a time.
func recoverEngine(t *testing.T, db store.Store, path string, route routes.Endpoint, poisonAfter, releaseChunk int) *Engine {
	t.Helper()
	options := testOptions(db, noStatus{}, clock.RealClock{})
	options.Journal, options.PoisonAfter = openJournal(t, path), poisonAfter
	engine, err := New(t.Context(), options)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if engine.isStopped() {
			return // stopped by the test
		}
		if err := engine.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	engine.releaseChunk = releaseChunk
	if err := engine.SetTable(t.Context(), tableOf(t, route)); err != nil {
		t.Fatal(err)
	}
	return engine
}

// crashedWhileAttempting stores n deliveries to ns/ordered, the last
// interrupted once before, and leaves the journal (at path) of a process
// killed while attempting them all: the last is poisoned at the next start
// with a poison-after of 2.
func crashedWhileAttempting(t *testing.T, n int) (db store.Store, deliveries []store.Delivery, path string) {
	t.Helper()
	db, err := store.OpenBolt(filepath.Join(t.TempDir(), "hookrelay.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	deliveries = acceptEvents(t, db, n)
	last := deliveries[n-1]
	last.Interrupted = 1
	if err := db.UpdateDeliveries(t.Context(), []store.Delivery{last}); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "inflight.journal")
	ids := make([]string, n)
	for i, delivery := range deliveries {
		ids[i] = delivery.ID
	}
	crashedJournal(t, path, ids...)
	return db, deliveries, path
}

// TestInterruptionsOnEveryPageAreCounted: the deliveries a killed process
// was attempting are counted as interrupted, and poisoned, wherever they
// are among the stored ones, not only on the first page read back; the
// journal forgets them once stored.
func TestInterruptionsOnEveryPageAreCounted(t *testing.T) {
	db, deliveries, path := crashedWhileAttempting(t, 3)

	paused := strictRoute("http://127.0.0.1:1", func(route *routes.Endpoint) { route.Paused = true })
	engine := recoverEngine(t, db, path, paused, 2, 1)
	if _, _, err := engine.Recover(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i, delivery := range deliveries {
		stored, err := db.Delivery(t.Context(), delivery.ID)
		if err != nil {
			t.Fatal(err)
		}
		// The endpoint is paused: the others stay, pending or held.
		poisoned, wantInterrupted := stored.State == store.Failed, 1
		if i == 2 {
			wantInterrupted = 2
		}
		if poisoned != (i == 2) || stored.Interrupted != wantInterrupted {
			t.Errorf("delivery %d of 3 stored %s, interrupted %d times; want %d interruptions, and failed only if the last", i+1, stored.State, stored.Interrupted, wantInterrupted)
		}
	}
	if left := engine.Journal.Previous(); len(left) != 0 {
		t.Errorf("the journal still names %v after they were stored", left)
	}
}

// firstRecordsHeld holds the store's first batch of attempt records back
// until open is opened, and the reads of the stored deliveries after the
// first page until that batch is held.
type firstRecordsHeld struct {
	store.Store
	open    *gate
	arrived *gate
	calls   atomic.Int64
}

func (s *firstRecordsHeld) RecordAttempts(ctx context.Context, records []store.AttemptRecord) ([]bool, error) {
	if s.calls.Add(1) == 1 {
		s.arrived.open()
		<-s.open.ch
	}
	return s.Store.RecordAttempts(ctx, records)
}

func (s *firstRecordsHeld) ActivePage(ctx context.Context, partitions []int, after string, limit int) ([]store.Delivery, string, error) {
	if after != "" {
		<-s.arrived.ch
	}
	return s.Store.ActivePage(ctx, partitions, after, limit)
}

// TestPoisonIsStoredAfterEarlierRecords: a delivery poisoned while the
// record of its endpoint's earlier failed attempt is still on its way to
// the store is stored after it, so that the endpoint's stored health is
// the later one: here, disabled by the poisoned delivery, its second
// failure in a row.
func TestPoisonIsStoredAfterEarlierRecords(t *testing.T) {
	g := NewWithT(t)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(receiver.Close)
	db, err := store.OpenBolt(filepath.Join(t.TempDir(), "hookrelay.db"))
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { db.Close() })
	deliveries := acceptEvents(t, db, 2)
	path := filepath.Join(t.TempDir(), "inflight.journal")
	// Only the second was in flight: the first is attempted (and fails)
	// once the first page is read back.
	crashedJournal(t, path, deliveries[1].ID)

	held := &firstRecordsHeld{Store: db, open: newGate(t), arrived: newGate(t)}
	route := strictRoute(receiver.URL, func(route *routes.Endpoint) {
		route.Ordering, route.RetrySchedule, route.AutoDisableAfter = "", nil, 2
	})
	engine := recoverEngine(t, held, path, route, 1, 1)
	recovered := make(chan error, 1)
	go func() {
		_, _, err := engine.Recover(t.Context())
		recovered <- err
	}()
	partition := store.Partition("ns", "ordered")
	// The poisoned delivery's record is stored or on its way.
	g.Eventually(func() bool {
		engine.writtenMu.Lock()
		defer engine.writtenMu.Unlock()
		return held.calls.Load() > 1 || engine.handed[partition] > 1
	}).WithTimeout(10 * time.Second).Should(BeTrue())
	held.open.open()
	g.Eventually(recovered).WithTimeout(10 * time.Second).Should(Receive(BeNil()))
	engine.waitWritten([]int{partition})

	healths, err := db.Healths(t.Context())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(healths).To(ConsistOf(And(HaveField("Endpoint", "ns/ordered"), HaveField("ConsecutiveFailures", 2), HaveField("Disabled", true),
		HaveField("LastFailureReason", HavePrefix("Poisoned: ")))))
	stored, err := db.Delivery(t.Context(), deliveries[1].ID)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(stored.State).To(Equal(store.Failed))
}

// TestATakeStoppedMidwayCountsNoInterruptionTwice: a partition take that
// the engine's stop cuts short, after it stored an interruption and before
// it could record a poisoned delivery, leaves the journal with the
// poisoned one only, so that the next start counts the first no more.
func TestATakeStoppedMidwayCountsNoInterruptionTwice(t *testing.T) {
	db, deliveries, path := crashedWhileAttempting(t, 2)
	paused := strictRoute("http://127.0.0.1:1", func(route *routes.Endpoint) { route.Paused = true })

	stopping := recoverEngine(t, db, path, paused, 2, 10)
	if err := stopping.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := stopping.Recover(t.Context()); !errors.Is(err, errStopping) {
		t.Fatalf("Recover of a stopped engine = %v, want %v", err, errStopping)
	}
	if got, want := stopping.Journal.Previous(), map[string]int{deliveries[1].ID: 1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("journal after the cut-short take = %v, want %v (the stored interruption forgotten, the poisoning kept)", got, want)
	}

	next := recoverEngine(t, db, path, paused, 2, 10)
	if _, _, err := next.Recover(t.Context()); err != nil {
		t.Fatal(err)
	}
	first, err := db.Delivery(t.Context(), deliveries[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	second, err := db.Delivery(t.Context(), deliveries[1].ID)
	if err != nil {
		t.Fatal(err)
	}
	if first.Interrupted != 1 || second.State != store.Failed {
		t.Fatalf("after the next start: first delivery interrupted %d times (want 1), second %s (want failed)", first.Interrupted, second.State)
	}
}
