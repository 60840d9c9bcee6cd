package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/store"
)

// collect reads every page of an endpoint's deliveries from the query on,
// failing on a page over the limit or an empty page that is not the only
// one, and says how many pages it read.
func collect(t *testing.T, s store.Store, namespace, endpoint string, query store.DeliveryQuery) (deliveries []store.Delivery, pages int) {
	t.Helper()
	for {
		got, next := page(t, s, namespace, endpoint, query)
		pages++
		if query.Limit > 0 && len(got) > query.Limit {
			t.Fatalf("page %d has %d deliveries, over the limit of %d", pages, len(got), query.Limit)
		}
		if len(got) == 0 && (next != "" || pages > 1) {
			t.Fatalf("page %d is empty but not the only page (next %q)", pages, next)
		}
		deliveries = append(deliveries, got...)
		if next == "" {
			return deliveries, pages
		}
		if pages > 1000 {
			t.Fatalf("paging does not end: after %d pages, next is %q", pages, next)
		}
		query.After = next
	}
}

// acceptSeries accepts count events a minute apart from base, each to the
// endpoints, and returns the deliveries to the first endpoint, oldest first.
func acceptSeries(t *testing.T, s store.Store, namespace string, count int, endpoints ...string) []store.Delivery {
	t.Helper()
	out := make([]store.Delivery, 0, count)
	for i := range count {
		accepted := accept(t, s, event(namespace, fmt.Sprintf("evt_%d", i), base.Add(time.Duration(i)*time.Minute)), targets(endpoints...))
		out = append(out, accepted.Deliveries[0])
	}
	return out
}

func newestFirst(deliveries []store.Delivery) []store.Delivery {
	out := slices.Clone(deliveries)
	slices.Reverse(out)
	return out
}

// testPagination: an endpoint's deliveries come newest first, only its own,
// and paging at any limit yields each exactly once, in the same order, with
// no empty page at the end.
func testPagination(t *testing.T, open Open) {
	s := start(t, open)
	const count = 14
	want := newestFirst(acceptSeries(t, s, "shop", count, "orders", "audit"))
	acceptSeries(t, s, "warehouse", 3, "orders")

	all, next := page(t, s, "shop", "orders", store.DeliveryQuery{})
	same(t, "deliveries without a limit", want, all)
	if next != "" {
		t.Fatalf("a listing without a limit has a next page %q", next)
	}
	for _, limit := range []int{1, 3, 5, 7, count, 20} {
		got, pages := collect(t, s, "shop", "orders", store.DeliveryQuery{Limit: limit})
		same(t, fmt.Sprintf("deliveries paged by %d", limit), want, got)
		if wantPages := (count + limit - 1) / limit; pages != wantPages {
			t.Errorf("paging %d deliveries by %d took %d pages, want %d", count, limit, pages, wantPages)
		}
	}
}

// testFilters: state and creation-time bounds (Since inclusive, Until
// exclusive) select deliveries, alone and combined, paged or not.
func testFilters(t *testing.T, open Open) {
	s := start(t, open)
	deliveries := acceptSeries(t, s, "shop", 10, "orders")
	// By index: 0, 3, 6, 9 failed; 1, 4, 7 succeeded; the rest pending.
	for i, delivery := range deliveries {
		switch i % 3 {
		case 0:
			deliveries[i] = finish(delivery, store.Failed, 2, delivery.CreatedAt.Add(time.Hour))
		case 1:
			deliveries[i] = finish(delivery, store.Succeeded, 1, delivery.CreatedAt.Add(time.Second))
		}
	}
	update(t, s, deliveries...)
	minute := func(i int) time.Time { return base.Add(time.Duration(i) * time.Minute) }
	for _, filter := range []struct {
		name  string
		query store.DeliveryQuery
		keep  func(i int) bool
	}{
		{"failed", store.DeliveryQuery{State: store.Failed}, func(i int) bool { return i%3 == 0 }},
		{"created from minute 2 until minute 7", store.DeliveryQuery{Since: minute(2), Until: minute(7)}, func(i int) bool { return i >= 2 && i < 7 }},
		{"pending since minute 5", store.DeliveryQuery{State: store.Pending, Since: minute(5)}, func(i int) bool { return i >= 5 && i%3 == 2 }},
		{"succeeded until minute 4", store.DeliveryQuery{State: store.Succeeded, Until: minute(4)}, func(i int) bool { return i < 4 && i%3 == 1 }},
		{"failed from minute 1 until minute 9", store.DeliveryQuery{State: store.Failed, Since: minute(1), Until: minute(9)}, func(i int) bool { return i == 3 || i == 6 }},
	} {
		var want []store.Delivery
		for i, delivery := range deliveries {
			if filter.keep(i) {
				want = append(want, delivery)
			}
		}
		want = newestFirst(want)
		for _, limit := range []int{0, 1, 2} {
			query := filter.query
			query.Limit = limit
			got, _ := collect(t, s, "shop", "orders", query)
			same(t, fmt.Sprintf("%s, paged by %d", filter.name, limit), want, got)
		}
	}
}

// testStablePages: deliveries accepted, or finished, while a listing is
// paged neither repeat nor hide the ones it had still to show.
func testStablePages(t *testing.T, open Open) {
	s := start(t, open)
	deliveries := acceptSeries(t, s, "shop", 7, "orders")
	first, next := page(t, s, "shop", "orders", store.DeliveryQuery{Limit: 3})

	for i := 7; i < 10; i++ {
		accept(t, s, event("shop", fmt.Sprintf("evt_%d", i), base.Add(time.Duration(i)*time.Minute)), targets("orders"))
	}
	update(t, s, finish(deliveries[2], store.Failed, 5, base.Add(time.Hour)))
	succeeded := finish(deliveries[1], store.Succeeded, 1, base.Add(time.Hour))
	attempt := store.Attempt{DeliveryID: succeeded.ID, Number: 1, StartedAt: base.Add(time.Hour), StatusCode: 200}
	recordAttempts(t, s, store.AttemptRecord{Delivery: succeeded, Attempt: attempt})

	rest, _ := collect(t, s, "shop", "orders", store.DeliveryQuery{Limit: 3, After: next})
	same(t, "ids listed across pages while deliveries arrived and moved", ids(newestFirst(deliveries)), ids(append(first, rest...)))
}
