package main

import (
	"fmt"
	"net/http"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
)

// registerProcessMetrics registers hookrelay_dispatcher_ready (from the
// same check /readyz answers with) and, for an embedded store, the disk
// gauges of its folder.
func registerProcessMetrics(registry prometheus.Registerer, readiness func() error, dataDir string, embedded bool) {
	registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "hookrelay_dispatcher_ready", Help: "1 while /readyz answers 200, else 0.",
	}, func() float64 {
		if readiness() != nil {
			return 0
		}
		return 1
	}))
	if embedded {
		registry.MustRegister(diskCollector{dir: dataDir})
	}
}

var (
	diskUsedDesc = prometheus.NewDesc("hookrelay_store_disk_used_bytes",
		"Bytes used on the filesystem of the embedded store's --data-dir.", nil, nil)
	diskCapacityDesc = prometheus.NewDesc("hookrelay_store_disk_capacity_bytes",
		"Size of the filesystem of the embedded store's --data-dir, in bytes.", nil, nil)
)

// diskCollector reads the filesystem of the store's folder (statfs) on
// each scrape.
type diskCollector struct{ dir string }

func (diskCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- diskUsedDesc
	ch <- diskCapacityDesc
}

func (c diskCollector) Collect(ch chan<- prometheus.Metric) {
	var stat syscall.Statfs_t
	if err := syscall.Statfs(c.dir, &stat); err != nil {
		err = fmt.Errorf("reading the filesystem of --data-dir %s: %w", c.dir, err)
		ch <- prometheus.NewInvalidMetric(diskUsedDesc, err)
		ch <- prometheus.NewInvalidMetric(diskCapacityDesc, err)
		return
	}
	blockSize := float64(stat.Bsize)
	ch <- prometheus.MustNewConstMetric(diskUsedDesc, prometheus.GaugeValue, float64(stat.Blocks-stat.Bfree)*blockSize)
	ch <- prometheus.MustNewConstMetric(diskCapacityDesc, prometheus.GaugeValue, float64(stat.Blocks)*blockSize)
}

// metricsHandler serves the registry; unless authz is nil, only to a
// bearer token that TokenReview accepts and a SubjectAccessReview allows
// to get the non-resource URL /metrics (the ClusterRole
// hookrelay-metrics-reader), as controller-runtime's manager does.
// A collector that fails is logged and the rest is served.
func metricsHandler(registry prometheus.Gatherer, log logr.Logger, authz *rest.Config) (http.Handler, error) {
	handler := promhttp.HandlerFor(registry, promhttp.HandlerOpts{ErrorLog: errorLog{log}, ErrorHandling: promhttp.ContinueOnError})
	if authz == nil {
		return handler, nil
	}
	httpClient, err := rest.HTTPClientFor(authz)
	if err != nil {
		return nil, fmt.Errorf("metrics authorization: %w", err)
	}
	filter, err := filters.WithAuthenticationAndAuthorization(authz, httpClient)
	if err != nil {
		return nil, fmt.Errorf("metrics authorization: %w", err)
	}
	return filter(log, handler)
}

// errorLog hands promhttp's errors to logr.
type errorLog struct{ log logr.Logger }

func (l errorLog) Println(v ...any) {
	l.log.Error(fmt.Errorf("%s", fmt.Sprint(v...)), "serving metrics")
}
