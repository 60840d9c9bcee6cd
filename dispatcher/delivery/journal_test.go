package delivery

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/store"
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
	if err := again.Reset(); err != nil {
		t.Fatal(err)
	}
	if got := openJournal(t, path).Previous(); len(got) != 0 {
		t.Fatalf("Previous after Reset = %v, want none", got)
	}
}

// TestJournalSkipsATornLine: a line the process died in the middle of
// has no newline yet, even where what it holds parses ("dlv_3 1" of
// "dlv_3 12"), and the unused rest of the file is zeros.
func TestJournalSkipsATornLine(t *testing.T) {
	for _, content := range []string{"dlv_1 1\ngarbage\ndlv_2 ", "dlv_1 1\ndlv_3 1", "dlv_1 1\ndlv_3 1\x00\x00\x00"} {
		path := filepath.Join(t.TempDir(), "inflight.journal")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, want := openJournal(t, path).Previous(), map[string]int{"dlv_1": 1}; !reflect.DeepEqual(got, want) {
			t.Fatalf("Previous of %q = %v, want %v", content, got, want)
		}
	}
}

func TestJournalIsRewrittenWithTheAttemptsInFlight(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inflight.journal")
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
