// Command dashboard draws the Grafana dashboard config/grafana/hookrelay.json
// into one PNG from the /metrics scrapes of a bench run (make bench
// METRICS_OUT=DIR): each panel where the dashboard places it, its queries
// evaluated by Prometheus's PromQL engine over the scraped samples, with
// the dashboard's titles and units. It reads the panel list from the JSON,
// so the picture cannot show other panels than the dashboard.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
)

func main() {
	dashboardFile := flag.String("dashboard", "config/grafana/hookrelay.json", "The Grafana dashboard's JSON.")
	samplesDir := flag.String("samples", "", "The folder of scrapes a bench run wrote (make bench METRICS_OUT=DIR).")
	out := flag.String("out", "docs/dashboard.png", "The PNG to write.")
	flag.Parse()
	if *samplesDir == "" {
		fmt.Fprintln(os.Stderr, "dashboard: --samples is required: the folder a bench run's --metrics-out wrote")
		os.Exit(2)
	}
	if err := run(*dashboardFile, *samplesDir, *out); err != nil {
		fmt.Fprintln(os.Stderr, "dashboard:", err)
		os.Exit(1)
	}
}

func run(dashboardFile, samplesDir, out string) error {
	d, err := loadDashboard(dashboardFile)
	if err != nil {
		return err
	}
	s, err := readSamples(samplesDir)
	if err != nil {
		return err
	}
	var png bytes.Buffer
	drawn, err := render(context.Background(), d, s, &png)
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, png.Bytes(), 0o644); err != nil {
		return err
	}
	var empty []string
	for _, p := range d.Panels {
		if drawn[p.ID] == 0 {
			empty = append(empty, fmt.Sprintf("%q", p.Title))
		}
	}
	fmt.Fprintf(os.Stderr, "dashboard: %d panels from %d series, %s to %s (scrapes every %s), in %s\n",
		len(d.Panels), len(s.series), s.start.UTC().Format("15:04:05"), s.end.UTC().Format("15:04:05"), s.scrapeInterval, out)
	if len(empty) > 0 {
		fmt.Fprintf(os.Stderr, "dashboard: no data for %d panels: %v\n", len(empty), empty)
	}
	return nil
}
