package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"time"
)

// receiver is the loopback server every endpoint's URL points at. It notes
// the order in which the held endpoint's deliveries arrive and when each
// probe event arrives; every request gets 200.
type receiver struct {
	server *httptest.Server
	held   string // "/<namespace>/<name>" of the held endpoint
	probe  string
	ranks  map[string]int // held event id → acceptance rank

	mu sync.Mutex
	// arrived are the held deliveries' ranks in arrival order, first
	// arrivals only; seen marks them.
	arrived     []int
	seen        []bool
	duplicates  int
	first, last time.Time
	probes      map[string]time.Time
	heldDone    chan struct{}
}

func newReceiver(f fleet, ranks map[string]int) *receiver {
	r := &receiver{held: "/" + f.held().namespace + "/" + f.held().name, probe: "/" + f.probe().namespace + "/" + f.probe().name,
		ranks: ranks, seen: make([]bool, len(ranks)), probes: map[string]time.Time{}, heldDone: make(chan struct{})}
	r.server = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

func (r *receiver) url() string { return r.server.URL }
func (r *receiver) close()      { r.server.Close() }

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	_, _ = io.Copy(io.Discard, req.Body)
	now := time.Now()
	id := req.Header.Get("webhook-id")
	switch req.URL.Path {
	case r.held:
		rank, ok := r.ranks[id]
		if !ok {
			http.Error(w, "unknown held event "+id, http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		if r.seen[rank] {
			r.duplicates++
		} else {
			r.seen[rank] = true
			if len(r.arrived) == 0 {
				r.first = now
			}
			r.arrived = append(r.arrived, rank)
			r.last = now
			if len(r.arrived) == len(r.ranks) {
				close(r.heldDone)
			}
		}
		r.mu.Unlock()
	case r.probe:
		r.mu.Lock()
		if _, ok := r.probes[id]; !ok {
			r.probes[id] = now
		}
		r.mu.Unlock()
	}
	w.WriteHeader(http.StatusOK)
}

// releaseResult is what the receiver saw of the release.
type releaseResult struct {
	first, last time.Time
	order       string
	err         error
}

// waitHeld waits until every held delivery arrived, printing progress, and
// sums up their order.
func (r *receiver) waitHeld(ctx context.Context, since time.Time, timeout time.Duration) releaseResult {
	ticker := time.NewTicker(5 * time.Second)
	defer ticker.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case <-r.heldDone:
			r.mu.Lock()
			defer r.mu.Unlock()
			return releaseResult{first: r.first, last: r.last, order: orderSummary(r.arrived, r.duplicates)}
		case <-ticker.C:
			r.mu.Lock()
			n := len(r.arrived)
			r.mu.Unlock()
			fmt.Fprintf(os.Stderr, "scale: %d/%d held deliveries arrived after %s\n", n, len(r.ranks), time.Since(since).Round(time.Second))
		case <-deadline.C:
			r.mu.Lock()
			defer r.mu.Unlock()
			return releaseResult{err: fmt.Errorf("%d of %d held deliveries arrived within %s", len(r.arrived), len(r.ranks), timeout)}
		case <-ctx.Done():
			return releaseResult{err: ctx.Err()}
		}
	}
}

// orderSummary compares each arrival's place with its acceptance rank. The
// queue hands deliveries out oldest first, several attempts at once, so an
// arrival strays from its rank by about the attempts in flight, more when
// one of them is slow.
func orderSummary(arrived []int, duplicates int) string {
	late, youngest := 0, -1
	distances := make([]time.Duration, len(arrived)) // places, as a sortable integer
	for place, rank := range arrived {
		if rank < youngest {
			late++
		}
		youngest = max(youngest, rank)
		distances[place] = time.Duration(max(place-rank, rank-place))
	}
	slices.Sort(distances)
	return fmt.Sprintf("%d of %d arrived after a younger one; arrival place vs. acceptance rank: p50 %d, p99 %d, max %d places apart; %d delivered twice",
		late, len(arrived), percentile(distances, 50), percentile(distances, 99), distances[len(distances)-1], duplicates)
}

// prober publishes probe events to the dispatcher at a steady rate and
// measures publish→arrival at the receiver.
type prober struct {
	url      string
	receiver *receiver
	rate     int
	client   *http.Client
	next     int
}

func newProber(url string, r *receiver, rate int) *prober {
	return &prober{url: url, receiver: r, rate: rate, client: &http.Client{Timeout: 30 * time.Second}}
}

// run publishes while phase runs (phase's stop closes if ctx ends), then
// waits for the probes to arrive and sums up their latency.
func (p *prober) run(ctx context.Context, phase func(stop <-chan struct{})) (string, error) {
	phaseDone := make(chan struct{})
	go func() {
		defer close(phaseDone)
		phase(ctx.Done())
	}()
	sent := map[string]time.Time{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	ticker := time.NewTicker(time.Second / time.Duration(p.rate))
	defer ticker.Stop()
publishing:
	for {
		select {
		case <-phaseDone:
			break publishing
		case <-ctx.Done():
			wg.Wait()
			return "", ctx.Err()
		case <-ticker.C:
			id := fmt.Sprintf("probe-%07d", p.next)
			p.next++
			wg.Go(func() {
				mu.Lock()
				sent[id] = time.Now()
				mu.Unlock()
				if err := p.publish(ctx, id); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			})
		}
	}
	wg.Wait()
	select {
	case err := <-errs:
		return "", err
	default:
	}
	latencies, missing := p.collect(sent, 30*time.Second)
	slices.Sort(latencies)
	if len(latencies) == 0 {
		return fmt.Sprintf("%d published, none arrived", len(sent)), nil
	}
	return fmt.Sprintf("%d events, publish→arrival p50 %s, p99 %s, max %s; %d did not arrive within 30s", len(sent),
		percentile(latencies, 50).Round(100*time.Microsecond), percentile(latencies, 99).Round(100*time.Microsecond),
		latencies[len(latencies)-1].Round(100*time.Microsecond), missing), nil
}

func (p *prober) publish(ctx context.Context, id string) error {
	body := fmt.Sprintf(`{"id":%q,"type":%q,"data":{"probe":true}}`, id, eventProbe)
	request, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	request.Header.Set("Content-Type", "application/json")
	response, err := p.client.Do(request)
	if err != nil {
		return fmt.Errorf("publishing probe %s: %w", id, err)
	}
	defer response.Body.Close()
	_, _ = io.Copy(io.Discard, response.Body)
	if response.StatusCode != http.StatusAccepted {
		return fmt.Errorf("publishing probe %s: %s", id, response.Status)
	}
	return nil
}

// collect waits up to timeout for the sent probes to arrive and returns
// their latencies and how many never came.
func (p *prober) collect(sent map[string]time.Time, timeout time.Duration) ([]time.Duration, int) {
	deadline := time.Now().Add(timeout)
	for {
		p.receiver.mu.Lock()
		var latencies []time.Duration
		for id, at := range sent {
			if arrived, ok := p.receiver.probes[id]; ok {
				latencies = append(latencies, arrived.Sub(at))
			}
		}
		p.receiver.mu.Unlock()
		if len(latencies) == len(sent) || time.Now().After(deadline) {
			return latencies, len(sent) - len(latencies)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func percentile(sorted []time.Duration, p int) time.Duration {
	return sorted[min(len(sorted)-1, (len(sorted)*p)/100)]
}
