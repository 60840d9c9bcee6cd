package delivery

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the delivery engine.
type Metrics struct {
	Deliveries      *prometheus.CounterVec
	Attempts        *prometheus.CounterVec
	AttemptDuration prometheus.Histogram
	QueueDepth      prometheus.Gauge
	Held            prometheus.Gauge
	Events          *prometheus.CounterVec
	PartitionsOwned prometheus.Gauge
	PartitionOwned  *prometheus.GaugeVec
}

// NewMetrics registers the engine's metrics.
func NewMetrics(registerer prometheus.Registerer) *Metrics {
	m := &Metrics{
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookrelay_deliveries_total", Help: "Deliveries finished or held, by outcome (succeeded, failed, held).",
		}, []string{"outcome"}),
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookrelay_attempts_total", Help: "HTTP attempts, by outcome (success, failure, gone).",
		}, []string{"outcome"}),
		AttemptDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "hookrelay_attempt_duration_seconds", Help: "Duration of HTTP attempts.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
		QueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hookrelay_queue_depth", Help: "Deliveries ready for an attempt and waiting for a worker.",
		}),
		Held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hookrelay_held_deliveries", Help: "Deliveries held for a disabled or paused endpoint.",
		}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookrelay_events_total", Help: "Published events, by result (accepted, duplicate).",
		}, []string{"result"}),
		PartitionsOwned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hookrelay_partitions_owned", Help: "Partitions of the endpoints whose deliveries this replica attempts.",
		}),
		PartitionOwned: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hookrelay_partition_owned", Help: "1 while this replica owns the partition, 0 after.",
		}, []string{"partition"}),
	}
	registerer.MustRegister(m.Deliveries, m.Attempts, m.AttemptDuration, m.QueueDepth, m.Held, m.Events, m.PartitionsOwned, m.PartitionOwned)
	return m
}
