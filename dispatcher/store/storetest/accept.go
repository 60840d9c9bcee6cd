package storetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/store"
)

// testAcceptFansOut: an event is stored with its data as sent, and one
// pending delivery per target, due at acceptance, in the targets' order.
func testAcceptFansOut(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	sent := event("shop", "evt_1", base)
	accepted := accept(t, s, sent, targets("a", "b", "c"))

	stored := sent
	stored.Deliveries = 3
	same(t, "accepted event", stored, accepted.Event)
	same(t, "stored event", stored, read(s.Event(ctx, "shop", "evt_1")).must(t))
	if len(accepted.Deliveries) != 3 {
		t.Fatalf("accepted %d deliveries, want one per target (3)", len(accepted.Deliveries))
	}
	seen := map[string]bool{}
	for i, delivery := range accepted.Deliveries {
		if delivery.ID == "" || seen[delivery.ID] {
			t.Fatalf("delivery %d has id %q, empty or not unique", i, delivery.ID)
		}
		seen[delivery.ID] = true
		want := store.Delivery{
			ID: delivery.ID, Namespace: "shop", EventID: "evt_1", Endpoint: []string{"a", "b", "c"}[i],
			State: store.Pending, NextAttemptAt: base, CreatedAt: base, UpdatedAt: base,
		}
		same(t, "accepted delivery", want, delivery)
		same(t, "stored delivery", want, read(s.Delivery(ctx, delivery.ID)).must(t))
	}
	same(t, "deliveries of the event", byID(accepted.Deliveries), byID(read(s.DeliveriesOf(ctx, "shop", "evt_1")).must(t)))
	same(t, "active deliveries", accepted.Deliveries, read(Active(ctx, s, store.AllPartitions())).must(t))

	// An event no subscription matches is still stored, with no delivery.
	none := accept(t, s, event("shop", "evt_2", base), nil)
	if none.Event.Deliveries != 0 || len(none.Deliveries) != 0 {
		t.Fatalf("an event with no target fanned out: %+v", none)
	}
	if stored := read(s.Event(ctx, "shop", "evt_2")).must(t); stored.Deliveries != 0 {
		t.Fatalf("stored event with no target says %d deliveries", stored.Deliveries)
	}
	same(t, "deliveries of an event with no target", []store.Delivery(nil), read(s.DeliveriesOf(ctx, "shop", "evt_2")).must(t))
}

// testAcceptDedupes: an id accepted again within the window is answered as
// a duplicate with the first event and fans out nothing; in another
// namespace, or past the window, it is a new event.
func testAcceptDedupes(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	first := accept(t, s, event("shop", "evt_1", base), targets("a", "b"))

	resent := event("shop", "evt_1", base.Add(time.Hour))
	resent.Type = "order.refunded"
	again, err := s.Accept(ctx, resent, targets("a", "b", "c"), base.Add(-23*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || len(again.Deliveries) != 0 {
		t.Fatalf("a repeated id was accepted again: duplicate %t, %d deliveries", again.Duplicate, len(again.Deliveries))
	}
	if again.Event.Type != eventType || !again.Event.AcceptedAt.Equal(base) || again.Event.Deliveries != 2 {
		t.Fatalf("a duplicate's answer = %+v, want the first event (order.paid, accepted %s, 2 deliveries)", again.Event, base)
	}
	same(t, "deliveries of a resent event", byID(first.Deliveries), byID(read(s.DeliveriesOf(ctx, "shop", "evt_1")).must(t)))
	same(t, "active deliveries after a duplicate", first.Deliveries, read(Active(ctx, s, store.AllPartitions())).must(t))
	if stored := read(s.Event(ctx, "shop", "evt_1")).must(t); stored.Type != eventType {
		t.Fatalf("a duplicate replaced the stored event: %+v", stored)
	}

	accept(t, s, event("warehouse", "evt_1", base.Add(time.Hour)), targets("a"))

	// Past the window the id is new again, and the event read is the new one.
	later := event("shop", "evt_1", base.Add(25*time.Hour))
	renewed, err := s.Accept(ctx, later, targets("c"), base.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if renewed.Duplicate || len(renewed.Deliveries) != 1 {
		t.Fatalf("an id older than the dedupe window: duplicate %t, %d deliveries; want a new event with 1", renewed.Duplicate, len(renewed.Deliveries))
	}
	if stored := read(s.Event(ctx, "shop", "evt_1")).must(t); !stored.AcceptedAt.Equal(later.AcceptedAt) || stored.Deliveries != 1 {
		t.Fatalf("event after it was accepted anew = %+v, want the new acceptance", stored)
	}
}

// testDeliveryIDsSort: delivery ids sort as strings in the order the
// deliveries were accepted, which the active pages keep (oldest first) and
// continue from.
func testDeliveryIDsSort(t *testing.T, open Open) {
	s := start(t, open)
	var all []store.Delivery
	for i := range 20 {
		accepted := accept(t, s, event("shop", fmt.Sprintf("evt_%d", i), base.Add(time.Duration(i)*time.Second)), targets("a", "b"))
		all = append(all, accepted.Deliveries...)
	}
	for i := 1; i < len(all); i++ {
		if strings.Compare(all[i-1].ID, all[i].ID) >= 0 {
			t.Fatalf("delivery %d has id %q, not after %q of the one accepted before it", i, all[i].ID, all[i-1].ID)
		}
	}
	same(t, "active deliveries, oldest first", all, read(Active(t.Context(), s, store.AllPartitions())).must(t))
}

// testNotFound: a missing event or delivery is store.ErrNotFound; lists of
// something missing are empty.
func testNotFound(t *testing.T, open Open) {
	ctx := t.Context()
	s := start(t, open)
	accept(t, s, event("shop", "evt_1", base), targets("a"))
	if _, err := s.Event(ctx, "shop", "evt_404"); !store.IsNotFound(err) {
		t.Errorf("Event of a missing id: %v, want ErrNotFound", err)
	}
	if _, err := s.Event(ctx, "warehouse", "evt_1"); !store.IsNotFound(err) {
		t.Errorf("Event of an id in another namespace: %v, want ErrNotFound", err)
	}
	if _, err := s.Delivery(ctx, "no-such-delivery"); !store.IsNotFound(err) {
		t.Errorf("Delivery of a missing id: %v, want ErrNotFound", err)
	}
	same(t, "attempts of a missing delivery", []store.Attempt(nil), read(s.Attempts(ctx, "no-such-delivery")).must(t))
	same(t, "deliveries of a missing event", []store.Delivery(nil), read(s.DeliveriesOf(ctx, "shop", "evt_404")).must(t))
	page, next, err := s.EndpointDeliveries(ctx, "shop", "no-such-endpoint", store.DeliveryQuery{Limit: 10})
	if err != nil || len(page) != 0 || next != "" {
		t.Errorf("deliveries of a missing endpoint = %d, next %q, %v; want none", len(page), next, err)
	}
	same(t, "healths of a new store", []store.Health(nil), read(s.Healths(ctx)).must(t))
}

// testActiveByPartition: ActivePage lists only the deliveries of the
// partitions asked for, which is how a replica claims the endpoints it owns.
func testActiveByPartition(t *testing.T, open Open) {
	s := start(t, open)
	byPartition := map[int][]store.Delivery{}
	for i := range 40 {
		accepted := accept(t, s, event("shop", fmt.Sprintf("evt_%d", i), base.Add(time.Duration(i)*time.Second)), targets(fmt.Sprintf("endpoint-%d", i)))
		delivery := accepted.Deliveries[0]
		partition := store.Partition(delivery.Namespace, delivery.Endpoint)
		byPartition[partition] = append(byPartition[partition], delivery)
	}
	if len(byPartition) < 2 {
		t.Fatalf("40 endpoints fell in %d partition(s); the hash does not spread them", len(byPartition))
	}
	for partition, deliveries := range byPartition {
		same(t, fmt.Sprintf("active deliveries of partition %d", partition), deliveries, read(Active(t.Context(), s, []int{partition})).must(t))
	}
	same(t, "active deliveries of no partition", []store.Delivery(nil), read(Active(t.Context(), s, nil)).must(t))
}

// testActivePages: ActivePage, page after page, lists the active
// deliveries of the partitions asked for, each partition's oldest first, none twice, a page at most limit
// long, for all partitions and for some; one finished between two pages is
// not listed and does not break the listing.
func testActivePages(t *testing.T, open Open) {
	s := start(t, open)
	ctx := t.Context()
	var all []store.Delivery
	for i := range 30 {
		accepted := accept(t, s, event("shop", fmt.Sprintf("evt_%d", i), base.Add(time.Duration(i)*time.Second)), targets(fmt.Sprintf("endpoint-%d", i%7)))
		all = append(all, accepted.Deliveries...)
	}
	some := []int{store.Partition("shop", "endpoint-1"), store.Partition("shop", "endpoint-4")}
	for _, partitions := range [][]int{store.AllPartitions(), some, nil} {
		want := slices.DeleteFunc(slices.Clone(all), func(d store.Delivery) bool {
			return !slices.Contains(partitions, store.Partition(d.Namespace, d.Endpoint))
		})
		var got []store.Delivery
		after := ""
		for pages := 0; ; pages++ {
			if pages > len(all) {
				t.Fatalf("ActivePage of %v does not end", partitions)
			}
			page, next, err := s.ActivePage(ctx, partitions, after, 4)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > 4 {
				t.Fatalf("a page of %d deliveries, limit 4", len(page))
			}
			got = append(got, page...)
			if next == "" {
				break
			}
			after = next
		}
		byID := func(a, b store.Delivery) int { return strings.Compare(a.ID, b.ID) }
		for partition := range store.Partitions {
			elsewhere := func(d store.Delivery) bool { return store.Partition(d.Namespace, d.Endpoint) != partition }
			listed := slices.DeleteFunc(slices.Clone(got), elsewhere)
			if !slices.IsSortedFunc(listed, byID) {
				t.Errorf("partition %d listed out of order: %v", partition, listed)
			}
		}
		slices.SortFunc(got, byID)
		same(t, fmt.Sprintf("active deliveries of %v, paged", partitions), want, got)
	}

	first, next, err := s.ActivePage(ctx, store.AllPartitions(), "", 3)
	if err != nil || next == "" {
		t.Fatalf("first page: next %q, %v", next, err)
	}
	finished := first[2]
	finished.State, finished.Attempts, finished.NextAttemptAt = store.Succeeded, 1, time.Time{}
	record := store.AttemptRecord{Delivery: finished, Attempt: store.Attempt{DeliveryID: finished.ID, Number: 1, StartedAt: base}}
	if applied, err := s.RecordAttempts(ctx, []store.AttemptRecord{record}); err != nil || !applied[0] {
		t.Fatalf("finishing %s: applied %v, %v", finished.ID, applied, err)
	}
	rest, _, err := s.ActivePage(ctx, store.AllPartitions(), next, len(all))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(first)+len(rest), len(all); got != want {
		t.Errorf("after a finished delivery, the pages list %d deliveries, want %d", got, want)
	}
	if slices.ContainsFunc(rest, func(d store.Delivery) bool { return d.ID == finished.ID || d.ID == first[0].ID }) {
		t.Errorf("the page after lists a delivery of the first page again: %v", rest)
	}
}

// testEvents: Events reads the event of each delivery, as Event does, in
// the deliveries' order whatever the events' (two deliveries of one event
// get it twice), and leaves the event of an unknown delivery zero.
func testEvents(t *testing.T, open Open) {
	s := start(t, open)
	ctx := t.Context()
	var deliveries []store.Delivery
	for i, namespace := range []string{"orders", "billing", "orders"} {
		accepted := accept(t, s, event(namespace, fmt.Sprintf("evt_%d", 3-i), base.Add(time.Duration(i)*time.Second)), targets("hooks", "audit"))
		deliveries = append(deliveries, accepted.Deliveries...)
	}
	slices.Reverse(deliveries)
	deliveries = append(deliveries, store.Delivery{ID: "dlv_unknown", Namespace: "billing", EventID: "evt_0", Endpoint: "hooks"})
	want := make([]store.Event, len(deliveries))
	for i, delivery := range deliveries[:len(deliveries)-1] {
		want[i] = read(s.Event(ctx, delivery.Namespace, delivery.EventID)).must(t)
	}
	same(t, "events of the deliveries", want, read(s.Events(ctx, deliveries)).must(t))
	same(t, "events of no delivery", []store.Event{}, read(s.Events(ctx, nil)).must(t))
}
