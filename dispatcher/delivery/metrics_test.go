package delivery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/testreceiver"
)

// gauges reads the series of one gauge family from a gatherer, keyed by
// their label values in the order of the label names, joined with "/"
// (namespace, or endpoint/namespace).
func gauges(t testing.TB, gatherer prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	families, err := gatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, family := range families {
		if family.GetName() != name {
			continue
		}
		for _, metric := range family.GetMetric() {
			key := ""
			for i, label := range metric.GetLabel() {
				if i > 0 {
					key += "/"
				}
				key += label.GetValue()
			}
			out[key] = metric.GetGauge().GetValue()
		}
	}
	return out
}

// histogram reads the count and sum of a histogram family's one series.
func histogram(t testing.TB, gatherer prometheus.Gatherer, name string) [2]float64 {
	t.Helper()
	families, err := gatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, family := range families {
		if family.GetName() == name && len(family.GetMetric()) == 1 {
			h := family.GetMetric()[0].GetHistogram()
			return [2]float64{float64(h.GetSampleCount()), h.GetSampleSum()}
		}
	}
	return [2]float64{}
}

// heldGauge is the engine's hookrelay_held_deliveries, all namespaces.
func heldGauge(t testing.TB, engine *Engine) float64 {
	total := 0.0
	for _, value := range gauges(t, engine.Metrics.registerer.(prometheus.Gatherer), "hookrelay_held_deliveries") {
		total += value
	}
	return total
}

func TestAttemptClass(t *testing.T) {
	for _, c := range []struct {
		status int
		err    error
		want   string
	}{
		{200, nil, "2xx"},
		{302, nil, "3xx"},
		{410, nil, "4xx"},
		{503, nil, "5xx"},
		{500, errors.New("reading the response: unexpected EOF"), "5xx"},
		{0, attemptTimeout{after: time.Second}, classTimeout},
		{0, &net.OpError{Op: "dial", Err: fmt.Errorf("%w: 10.0.0.1 is a private address", errEgressRefused)}, classBlocked},
		{0, &net.OpError{Op: "dial", Err: errors.New("connection refused")}, classNetwork},
	} {
		if got := attemptClass(c.status, c.err); got != c.want {
			t.Errorf("attemptClass(%d, %v) = %q, want %q", c.status, c.err, got, c.want)
		}
	}
}

// TestPendingGauges: failing deliveries waiting for their retry count in
// the queue depth, and the oldest pending age follows the injected clock;
// a namespace with nothing left has no series.
func TestPendingGauges(t *testing.T) {
	g := NewWithT(t)
	receiver := testreceiver.NewOrdered(t, map[string]int{"evt_000": 1, "evt_001": 1})
	route := strictRoute(receiver.URL, func(route *routes.Endpoint) {
		route.Ordering = ""
		route.RetrySchedule = []metav1.Duration{{Duration: time.Minute}}
	})
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	fake := clocktesting.NewFakeClock(start)
	engine := startEngine(t, filepath.Join(t.TempDir(), "hookrelay.db"), route, fake)
	registry := engine.Metrics.registerer.(prometheus.Gatherer)

	publishEvents(t, engine, 0, 2)
	g.Eventually(func() float64 { return testutil.ToFloat64(engine.Metrics.Attempts.WithLabelValues("ns", "5xx")) }).
		WithTimeout(10 * time.Second).WithPolling(10 * time.Millisecond).Should(Equal(2.0))
	g.Expect(histogram(t, registry, "hookrelay_publish_to_first_attempt_seconds")).To(Equal([2]float64{2, 0}), "the clock did not move")
	fake.Step(30 * time.Second)
	g.Expect(gauges(t, registry, "hookrelay_queue_depth")).To(Equal(map[string]float64{"ns": 2}))
	g.Expect(gauges(t, registry, "hookrelay_oldest_pending_age_seconds")).To(Equal(map[string]float64{"ns": 30}))
	g.Expect(gauges(t, registry, "hookrelay_held_deliveries")).To(Equal(map[string]float64{"ns": 0}))

	fake.Step(2 * time.Minute) // past the retry and its jitter
	g.Eventually(receiver.Delivered).WithTimeout(10 * time.Second).WithPolling(10 * time.Millisecond).Should(ConsistOf("evt_000", "evt_001"))
	g.Eventually(func() map[string]float64 { return gauges(t, registry, "hookrelay_queue_depth") }).
		WithTimeout(10 * time.Second).WithPolling(10 * time.Millisecond).Should(BeEmpty())
	g.Expect(testutil.ToFloat64(engine.Metrics.Deliveries.WithLabelValues("ns", stateSucceeded))).To(Equal(2.0))
	g.Expect(testutil.ToFloat64(engine.Metrics.Attempts.WithLabelValues("ns", "2xx"))).To(Equal(2.0))
	g.Expect(histogram(t, registry, "hookrelay_publish_to_success_seconds")).To(Equal([2]float64{2, 300}), "each 150 s after its acceptance")
}

// TestHeldAndDisabledGaugesFollowOwnership: a replica counts the held
// deliveries and disabled endpoints of the partitions it owns only; given
// up, they leave its gauges, and taken again, they are counted from the
// store.
func TestHeldAndDisabledGaugesFollowOwnership(t *testing.T) {
	g := NewWithT(t)
	route := strictRoute("http://127.0.0.1:1", func(route *routes.Endpoint) { route.Ordering = "" })
	engine, _ := disabledEngine(t, route, nil, nil)
	registry := engine.Metrics.registerer.(prometheus.Gatherer)
	publishEvents(t, engine, 0, 5)

	g.Expect(gauges(t, registry, "hookrelay_held_deliveries")).To(Equal(map[string]float64{"ns": 5}))
	g.Expect(gauges(t, registry, "hookrelay_endpoints_disabled")).To(Equal(map[string]float64{"ns": 1}))
	g.Expect(gauges(t, registry, "hookrelay_queue_depth")).To(Equal(map[string]float64{"ns": 0}))
	g.Expect(testutil.ToFloat64(engine.Metrics.Deliveries.WithLabelValues("ns", stateHeld))).To(Equal(5.0))
	g.Expect(gauges(t, registry, "hookrelay_endpoint_held_deliveries")).To(BeEmpty(), "per-endpoint series only when asked for")

	perEndpoint := prometheus.NewRegistry()
	perEndpoint.MustRegister(stateCollector{engine: engine, perEndpoint: true})
	g.Expect(gauges(t, perEndpoint, "hookrelay_endpoint_held_deliveries")).To(Equal(map[string]float64{"ordered/ns": 5}))
	g.Expect(gauges(t, perEndpoint, "hookrelay_endpoint_disabled")).To(Equal(map[string]float64{"ordered/ns": 1}))

	engine.Release(store.AllPartitions())
	g.Expect(gauges(t, registry, "hookrelay_held_deliveries")).To(BeEmpty())
	g.Expect(gauges(t, registry, "hookrelay_endpoints_disabled")).To(BeEmpty())

	_, held, err := engine.Acquire(context.Background(), store.AllPartitions())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(held).To(Equal(5))
	g.Expect(gauges(t, registry, "hookrelay_held_deliveries")).To(Equal(map[string]float64{"ns": 5}))
	g.Expect(gauges(t, registry, "hookrelay_endpoints_disabled")).To(Equal(map[string]float64{"ns": 1}))
}
