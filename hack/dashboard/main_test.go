package main

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/prometheus/promql"
)

const dashboardFile = "../../config/grafana/hookrelay.json"

// TestEveryPanelHasQueryAndUnit: each panel has queries, a unit, a place
// on the grid, and a type and unit the renderer draws.
func TestEveryPanelHasQueryAndUnit(t *testing.T) {
	d, err := loadDashboard(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if err := p.check(); err != nil {
			t.Error(err)
		}
		if ids[p.ID] {
			t.Errorf("panel %q: id %d is used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
	}
}

// TestRenderCoversEveryPanel renders the dashboard from scrapes of every
// metric it names and fails for a panel that drew no line: a panel added
// with a type, unit or query the renderer cannot draw, or a metric the
// fixture below lacks.
func TestRenderCoversEveryPanel(t *testing.T) {
	d, err := loadDashboard(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	s, err := readSamples(writeFixture(t))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	drawn, err := render(context.Background(), d, s, &out)
	if err != nil {
		t.Fatal(err)
	}
	if file := os.Getenv("DASHBOARD_FIXTURE_PNG"); file != "" {
		// To look at the fixture's picture while changing the renderer.
		if err := os.WriteFile(file, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range d.Panels {
		if drawn[p.ID] == 0 {
			t.Errorf("panel %d %q drew no line from the fixture", p.ID, p.Title)
		}
	}
	img, err := png.Decode(&out)
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() != imageWidth {
		t.Errorf("the PNG is %d pixels wide, want %d", img.Bounds().Dx(), imageWidth)
	}
}

// TestEvaluate checks the in-memory storage against values worked out by
// hand: a counter going up 10 a second, a gauge, and a histogram whose
// observations all fall in one bucket.
func TestEvaluate(t *testing.T) {
	s, err := readSamples(writeFixture(t))
	if err != nil {
		t.Fatal(err)
	}
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	for _, tc := range []struct {
		expr string
		want float64
	}{
		{`sum(rate(hookrelay_events_total{result="accepted"}[10s]))`, 10},
		{`sum(hookrelay_endpoints_disabled)`, 1},
		{`histogram_quantile(0.5, sum by (le) (rate(hookrelay_routes_publish_seconds_bucket[10s])))`, 0.075},
		{`count(topk(2, hookrelay_queue_depth))`, 2},
	} {
		at := s.end.Add(-5 * time.Second)
		query, err := engine.NewInstantQuery(context.Background(), s, nil, tc.expr, at)
		if err != nil {
			t.Fatal(err)
		}
		result := query.Exec(context.Background())
		if result.Err != nil {
			t.Fatalf("%s: %v", tc.expr, result.Err)
		}
		vector, err := result.Vector()
		if err != nil || len(vector) != 1 {
			t.Fatalf("%s: %v, %v", tc.expr, vector, err)
		}
		if got := vector[0].F; math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s = %v, want %v", tc.expr, got, tc.want)
		}
		query.Close()
	}
}

func TestExpand(t *testing.T) {
	got, err := expand(`rate(x{namespace=~"$namespace"}[$__rate_interval]) + rate(y{namespace=~"${namespace}"}[1m])`, 2*time.Second, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := `rate(x{namespace=~".*"}[4000ms]) + rate(y{namespace=~".*"}[1m])`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if _, err := expand(`rate(x[$interval])`, time.Second, time.Second); err == nil || !strings.Contains(err.Error(), "$interval") {
		t.Errorf("an unknown variable: got %v, want an error naming it", err)
	}
}

// writeFixture writes two minutes of scrapes, one a second, of a
// dispatcher and a manager exporting the metric-name contract, encoded by
// the Prometheus client as /metrics answers. Counters go up steadily, so
// each rate is known.
func writeFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	dispatcher, manager := prometheus.NewRegistry(), prometheus.NewRegistry()
	byNamespace := []string{"namespace"}
	deliveries := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hookrelay_deliveries_total"}, []string{"namespace", "state"})
	attempts := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hookrelay_attempts_total"}, []string{"namespace", "class"})
	events := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hookrelay_events_total"}, []string{"namespace", "result"})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hookrelay_publishes_refused_total"}, []string{"code"})
	firstAttempt := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hookrelay_publish_to_first_attempt_seconds"}, byNamespace)
	success := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hookrelay_publish_to_success_seconds"}, byNamespace)
	held := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "hookrelay_held_deliveries"}, byNamespace)
	disabled := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "hookrelay_endpoints_disabled"}, byNamespace)
	depth := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "hookrelay_queue_depth"}, byNamespace)
	oldest := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "hookrelay_oldest_pending_age_seconds"}, byNamespace)
	dispatcher.MustRegister(deliveries, attempts, events, refused, firstAttempt, success, held, disabled, depth, oldest)
	reconcile := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "controller_runtime_reconcile_time_seconds"}, []string{"controller"})
	routes := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hookrelay_routes_publish_seconds"})
	manager.MustRegister(reconcile, routes)

	start := time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)
	for second := range 120 {
		for _, ns := range []string{"shop", "billing", "search"} {
			events.WithLabelValues(ns, "accepted").Add(10.0 / 3)
			deliveries.WithLabelValues(ns, "succeeded").Add(3)
			deliveries.WithLabelValues(ns, "failed").Add(0.5)
			attempts.WithLabelValues(ns, "2xx").Add(3)
			attempts.WithLabelValues(ns, "5xx").Add(1)
			firstAttempt.WithLabelValues(ns).Observe(0.002 * float64(1+second%5))
			success.WithLabelValues(ns).Observe(0.02 * float64(1+second%5))
			depth.WithLabelValues(ns).Set(float64(second % 40))
			oldest.WithLabelValues(ns).Set(float64(second % 30))
		}
		held.WithLabelValues("shop").Set(float64(second))
		disabled.WithLabelValues("shop").Set(1)
		refused.WithLabelValues("429").Add(2)
		reconcile.WithLabelValues("webhookendpoint").Observe(0.01)
		routes.Observe(0.06)
		at := start.Add(time.Duration(second) * time.Second)
		for name, registry := range map[string]*prometheus.Registry{"dispatcher": dispatcher, "manager": manager} {
			writeScrape(t, filepath.Join(dir, name), at, registry)
		}
	}
	return dir
}

func writeScrape(t *testing.T, dir string, at time.Time, registry *prometheus.Registry) {
	t.Helper()
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	encoder := expfmt.NewEncoder(&text, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, family := range families {
		if err := encoder.Encode(family); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, strconv.FormatInt(at.UnixMilli(), 10)+scrapeExtension)
	if err := os.WriteFile(file, text.Bytes(), 0o644); err != nil {
		t.Fatal(fmt.Errorf("writing a scrape: %w", err))
	}
}
