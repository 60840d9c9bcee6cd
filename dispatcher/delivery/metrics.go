package delivery

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the delivery engine. Counters and histograms are observed as
// things happen; the gauges of what the engine holds (queue depth, oldest
// pending, held, disabled) are read from its state on each scrape
// (stateCollector), so that restarts, partition moves and deleted endpoints
// never leave them drifting.
type Metrics struct {
	Deliveries      *prometheus.CounterVec
	Attempts        *prometheus.CounterVec
	AttemptDuration prometheus.Histogram
	// FirstAttempt and Success measure from the event's acceptance.
	FirstAttempt    *prometheus.HistogramVec
	Success         *prometheus.HistogramVec
	Events          *prometheus.CounterVec
	PartitionsOwned prometheus.Gauge
	PartitionOwned  *prometheus.GaugeVec

	// PerEndpoint adds the hookrelay_endpoint_* families, labelled by
	// endpoint: one series per endpoint, so off by default. Set it before
	// New.
	PerEndpoint bool

	registerer prometheus.Registerer
}

// The labels of the metrics: never an event's or a URL's, which are
// unbounded.
const (
	labelNamespace = "namespace"
	labelEndpoint  = "endpoint"
)

// The states of hookrelay_deliveries_total.
const (
	stateSucceeded = "succeeded"
	stateFailed    = "failed"
	stateHeld      = "held"
)

// The classes of hookrelay_attempts_total that are not a status code's.
const (
	classTimeout = "timeout"
	classNetwork = "network"
	classBlocked = "blocked"
)

// latencyBuckets span a receiver answering at once to a delivery that
// waited out a day of retries.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600}

// NewMetrics registers the engine's metrics; New registers the gauges of
// its state.
func NewMetrics(registerer prometheus.Registerer) *Metrics {
	m := &Metrics{
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookrelay_deliveries_total", Help: "Deliveries finished or held, by namespace and state (succeeded, failed, held).",
		}, []string{labelNamespace, "state"}),
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookrelay_attempts_total",
			Help: "HTTP attempts, by namespace and class (2xx, 3xx, 4xx, 5xx, timeout, network, blocked by the egress policy).",
		}, []string{labelNamespace, "class"}),
		AttemptDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "hookrelay_attempt_duration_seconds", Help: "Duration of HTTP attempts.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
		FirstAttempt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hookrelay_publish_to_first_attempt_seconds", Help: "Time from an event's acceptance to the start of its delivery's first attempt.",
			Buckets: latencyBuckets,
		}, []string{labelNamespace}),
		Success: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hookrelay_publish_to_success_seconds", Help: "Time from an event's acceptance to the answer of its delivery's successful attempt.",
			Buckets: latencyBuckets,
		}, []string{labelNamespace}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookrelay_events_total", Help: "Published events, by namespace and result (accepted, duplicate).",
		}, []string{labelNamespace, "result"}),
		PartitionsOwned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hookrelay_partitions_owned", Help: "Partitions of the endpoints whose deliveries this replica attempts.",
		}),
		PartitionOwned: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hookrelay_partition_owned", Help: "1 while this replica owns the partition, 0 after.",
		}, []string{"partition"}),
		registerer: registerer,
	}
	registerer.MustRegister(m.Deliveries, m.Attempts, m.AttemptDuration, m.FirstAttempt, m.Success, m.Events, m.PartitionsOwned, m.PartitionOwned)
	return m
}

// statusClasses are the classes of answered attempts, 2xx to 5xx.
var statusClasses = [...]string{"2xx", "3xx", "4xx", "5xx"}

// attemptClass is the class of an attempt for hookrelay_attempts_total: its
// status code's hundreds when it was answered, else what stopped it.
func attemptClass(status int, err error) string {
	switch {
	case status >= 200 && status < 600:
		return statusClasses[status/100-2]
	case errors.Is(err, errEgressRefused):
		return classBlocked
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, http.ErrHandlerTimeout):
		return classTimeout
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return classTimeout
	}
	return classNetwork
}

// state descriptors, read from the engine on each scrape.
var (
	queueDepthDesc = prometheus.NewDesc("hookrelay_queue_depth",
		"Deliveries pending in this replica's partitions (not finished, not held), those waiting for a retry included.", []string{labelNamespace}, nil)
	oldestPendingDesc = prometheus.NewDesc("hookrelay_oldest_pending_age_seconds",
		"Age of the oldest pending delivery in this replica's partitions, from its event's acceptance.", []string{labelNamespace}, nil)
	heldDesc = prometheus.NewDesc("hookrelay_held_deliveries",
		"Deliveries held for a disabled or paused endpoint of this replica's partitions.", []string{labelNamespace}, nil)
	disabledDesc = prometheus.NewDesc("hookrelay_endpoints_disabled",
		"Auto-disabled endpoints of this replica's partitions.", []string{labelNamespace}, nil)
	endpointQueueDepthDesc = prometheus.NewDesc("hookrelay_endpoint_queue_depth",
		"Deliveries pending for the endpoint (--metrics-per-endpoint).", []string{labelNamespace, labelEndpoint}, nil)
	endpointOldestPendingDesc = prometheus.NewDesc("hookrelay_endpoint_oldest_pending_age_seconds",
		"Age of the endpoint's oldest pending delivery (--metrics-per-endpoint).", []string{labelNamespace, labelEndpoint}, nil)
	endpointHeldDesc = prometheus.NewDesc("hookrelay_endpoint_held_deliveries",
		"Deliveries held for the endpoint (--metrics-per-endpoint).", []string{labelNamespace, labelEndpoint}, nil)
	endpointDisabledDesc = prometheus.NewDesc("hookrelay_endpoint_disabled",
		"1 while the endpoint is auto-disabled (--metrics-per-endpoint).", []string{labelNamespace, labelEndpoint}, nil)
)

// stateCollector reports the gauges of what an engine holds now. A
// namespace with nothing pending, held or disabled has no series.
type stateCollector struct {
	engine      *Engine
	perEndpoint bool
}

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, desc := range []*prometheus.Desc{queueDepthDesc, oldestPendingDesc, heldDesc, disabledDesc} {
		ch <- desc
	}
	if c.perEndpoint {
		for _, desc := range []*prometheus.Desc{endpointQueueDepthDesc, endpointOldestPendingDesc, endpointHeldDesc, endpointDisabledDesc} {
			ch <- desc
		}
	}
}

// endpointState is what one endpoint has in the engine.
type endpointState struct {
	pending  int
	oldest   time.Time
	held     int64
	disabled bool
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	e := c.engine
	now := e.Clock.Now()
	endpoints := map[string]*endpointState{}
	stateOf := func(id string) *endpointState {
		state := endpoints[id]
		if state == nil {
			state = &endpointState{}
			endpoints[id] = state
		}
		return state
	}
	e.ledger.eachPending(func(id string, createdAt time.Time) {
		state := stateOf(id)
		state.pending++
		if state.oldest.IsZero() || createdAt.Before(state.oldest) {
			state.oldest = createdAt
		}
	})
	e.held.mu.Lock()
	for id, held := range e.held.counts {
		if held > 0 {
			stateOf(id).held = held
		}
	}
	e.held.mu.Unlock()
	for _, endpoint := range e.table.Load().Endpoints() {
		if e.ledger.owns(endpoint.Namespace, endpoint.Name) && e.health.disabled(endpoint.ID) {
			stateOf(endpoint.ID).disabled = true
		}
	}
	namespaces := map[string]*endpointState{}
	for id, state := range endpoints {
		namespace, name := splitID(id)
		total := namespaces[namespace]
		if total == nil {
			total = &endpointState{}
			namespaces[namespace] = total
		}
		total.pending += state.pending
		total.held += state.held
		if !state.oldest.IsZero() && (total.oldest.IsZero() || state.oldest.Before(total.oldest)) {
			total.oldest = state.oldest
		}
		if state.disabled {
			total.disabled = true
		}
		if c.perEndpoint {
			c.report(ch, [4]*prometheus.Desc{endpointQueueDepthDesc, endpointOldestPendingDesc, endpointHeldDesc, endpointDisabledDesc},
				state, boolCount(state.disabled), now, namespace, name)
		}
	}
	disabled := map[string]int{}
	for id, state := range endpoints {
		if state.disabled {
			namespace, _ := splitID(id)
			disabled[namespace]++
		}
	}
	for namespace, total := range namespaces {
		c.report(ch, [4]*prometheus.Desc{queueDepthDesc, oldestPendingDesc, heldDesc, disabledDesc}, total, disabled[namespace], now, namespace)
	}
}

// report sends the four gauges of one namespace or endpoint.
func (stateCollector) report(ch chan<- prometheus.Metric, descs [4]*prometheus.Desc, state *endpointState, disabled int, now time.Time, labels ...string) {
	age := 0.0
	if !state.oldest.IsZero() {
		age = max(now.Sub(state.oldest).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(descs[0], prometheus.GaugeValue, float64(state.pending), labels...)
	ch <- prometheus.MustNewConstMetric(descs[1], prometheus.GaugeValue, age, labels...)
	ch <- prometheus.MustNewConstMetric(descs[2], prometheus.GaugeValue, float64(state.held), labels...)
	ch <- prometheus.MustNewConstMetric(descs[3], prometheus.GaugeValue, float64(disabled), labels...)
}

func boolCount(b bool) int {
	if b {
		return 1
	}
	return 0
}

// observeAttempt counts an attempt that was made, and its latencies from
// the event's acceptance.
func (m *Metrics) observeAttempt(namespace string, firstAttempt bool, accepted, started, finished time.Time, status int, err error, succeeded bool) {
	m.Attempts.WithLabelValues(namespace, attemptClass(status, err)).Inc()
	if accepted.IsZero() {
		return // a delivery stored without its time: nothing to measure from
	}
	if firstAttempt {
		m.FirstAttempt.WithLabelValues(namespace).Observe(max(started.Sub(accepted).Seconds(), 0))
	}
	if succeeded {
		m.Success.WithLabelValues(namespace).Observe(max(finished.Sub(accepted).Seconds(), 0))
	}
}

// registerState registers the gauges of the engine's state.
func (m *Metrics) registerState(e *Engine) error {
	return m.registerer.Register(stateCollector{engine: e, perEndpoint: m.PerEndpoint})
}
