package main

import (
	"testing"
	"time"
)

// TestCombineWeighsRoundsByTheirTime: a run's rounds combine into the events
// over the time they took together (not a mean of each round's rate), the
// percentiles of all their latencies, and the CPU per event of all events.
func TestCombineWeighsRoundsByTheirTime(t *testing.T) {
	latencies := func(d ...time.Duration) []time.Duration { return d }
	fast := result{events: 100, deliveries: 400, elapsed: time.Second, cpuPerEvent: 100 * time.Microsecond,
		latencies: latencies(1*time.Millisecond, 2*time.Millisecond)}
	slow := result{events: 100, deliveries: 400, elapsed: 3 * time.Second, cpuPerEvent: 300 * time.Microsecond,
		latencies: latencies(9*time.Millisecond, 3*time.Millisecond)}
	got := combine("run", fast, slow)
	if got.name != "run" || got.events != 200 || got.deliveries != 800 || got.elapsed != 4*time.Second {
		t.Fatalf("combined %+v, want 200 events and 800 deliveries in 4s", got)
	}
	if got.eventsPerSecond != 50 || got.deliveriesPerSec != 200 {
		t.Errorf("rates %.1f events/s and %.1f deliveries/s, want 50 and 200", got.eventsPerSecond, got.deliveriesPerSec)
	}
	if got.p50 != 3*time.Millisecond || got.p99 != 9*time.Millisecond {
		t.Errorf("p50 %s and p99 %s, want 3ms and 9ms (of all four latencies)", got.p50, got.p99)
	}
	if got.cpuPerEvent != 200*time.Microsecond {
		t.Errorf("CPU per event %s, want 200µs", got.cpuPerEvent)
	}
}
