package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"k8s.io/cli-runtime/pkg/printers"

	"github.com/hookrelay/hookrelay/pkg/client"
	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// replayProgressEvery is how often replay --wait looks at the replayed
// deliveries, and says how far they got.
var replayProgressEvery = 2 * time.Second

// replayProgressQuietBelow: a replay of fewer deliveries says how far it got
// only when stderr is a terminal, so that a script's small replay stays
// quiet and a long one shows it is alive.
const replayProgressQuietBelow = 100

// listPage is the dispatcher's largest page of deliveries.
const listPage = 500

// deliveryIDs lists the ids of an endpoint's deliveries in a state created
// since a time, page by page, each call bounded by the request timeout.
func (s *session) deliveryIDs(endpoint string, state dispatcherapi.State, since time.Time) (map[string]bool, error) {
	ids := map[string]bool{}
	query := client.DeliveryQuery{State: state, Since: since, Limit: listPage}
	for {
		ctx, cancel := s.context()
		page, err := s.client.Deliveries(ctx, s.namespace, endpoint, query)
		cancel()
		if err != nil {
			return nil, s.explain(err)
		}
		for _, d := range page.Deliveries {
			ids[d.ID] = true
		}
		if page.Continue == "" {
			return ids, nil
		}
		query.Continue = page.Continue
	}
}

// waitReplayed waits until none of the replayed deliveries (the failed ones
// listed before the replay) is pending any more, saying on progress how
// many of the replayed were attempted, every replayProgressEvery: always
// for replayProgressQuietBelow deliveries or more, else when progress is a
// terminal.
func (s *session) waitReplayed(ctx context.Context, endpoint string, since time.Time, replayed map[string]bool, total int, progress io.Writer) error {
	loud := total >= replayProgressQuietBelow || printers.IsTerminal(progress)
	ticker := time.NewTicker(replayProgressEvery)
	defer ticker.Stop()
	for {
		pending, err := s.deliveryIDs(endpoint, dispatcherapi.Pending, since)
		if err != nil {
			return err
		}
		waiting := 0
		for id := range pending {
			if replayed[id] {
				waiting++
			}
		}
		if waiting == 0 {
			return nil
		}
		if loud {
			// total is what the dispatcher queued; the listing before the
			// replay may differ by deliveries failing meanwhile.
			fmt.Fprintf(progress, "replay: %d of %d deliveries to %s attempted\n", max(0, total-waiting), total, endpoint)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}
