package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// dashboard is the part of a Grafana dashboard's JSON that the renderer
// reads: its panels, their place on the 24-column grid, unit and queries.
type dashboard struct {
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		X int `json:"x"`
		Y int `json:"y"`
		W int `json:"w"`
		H int `json:"h"`
	} `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []target `json:"targets"`
}

type target struct {
	RefID        string `json:"refId"`
	Expr         string `json:"expr"`
	LegendFormat string `json:"legendFormat"`
}

// gridColumns is the width of Grafana's dashboard grid.
const gridColumns = 24

func loadDashboard(path string) (dashboard, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return dashboard{}, err
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		return dashboard{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(d.Panels) == 0 {
		return dashboard{}, fmt.Errorf("%s: no panels", path)
	}
	return d, nil
}

// check says what of a panel the renderer cannot show as Grafana would.
func (p panel) check() error {
	if !supportedPanelTypes[p.Type] {
		return fmt.Errorf("panel %d %q: type %q is not rendered (only %s)", p.ID, p.Title, p.Type, keys(supportedPanelTypes))
	}
	if _, ok := units[p.FieldConfig.Defaults.Unit]; !ok {
		return fmt.Errorf("panel %d %q: unit %q is not rendered (only %s)", p.ID, p.Title, p.FieldConfig.Defaults.Unit, keys(units))
	}
	if len(p.Targets) == 0 {
		return fmt.Errorf("panel %d %q: no targets", p.ID, p.Title)
	}
	for _, t := range p.Targets {
		if strings.TrimSpace(t.Expr) == "" {
			return fmt.Errorf("panel %d %q: target %s has no expr", p.ID, p.Title, t.RefID)
		}
	}
	if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.Y < 0 || p.GridPos.X+p.GridPos.W > gridColumns {
		return fmt.Errorf("panel %d %q: gridPos %+v is outside the %d-column grid", p.ID, p.Title, p.GridPos, gridColumns)
	}
	return nil
}

// supportedPanelTypes are the panel types drawn.
var supportedPanelTypes = map[string]bool{"timeseries": true}

// variablePattern matches Grafana's $name and ${name} forms.
// keys lists a set's keys, sorted, for a message.
func keys[V any](set map[string]V) string {
	return strings.Join(slices.Sorted(maps.Keys(set)), ", ")
}

var variablePattern = regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`)

// expand replaces the dashboard's variables in a query as Grafana does with
// the namespace variable on All: $namespace is its allValue (.*), and
// $__rate_interval is max(step + scrape interval, 4 × scrape interval).
func expand(expr string, step, scrapeInterval time.Duration) (string, error) {
	values := map[string]string{
		"namespace":       ".*",
		"__rate_interval": model(max(step+scrapeInterval, 4*scrapeInterval)),
	}
	var unknown []string
	out := variablePattern.ReplaceAllStringFunc(expr, func(match string) string {
		name := strings.Trim(match, "${}")
		value, ok := values[name]
		if !ok {
			unknown = append(unknown, match)
			return match
		}
		return value
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("query %q: variables %s have no value here", expr, strings.Join(unknown, ", "))
	}
	return out, nil
}

// model writes a duration as PromQL does: whole milliseconds.
func model(d time.Duration) string {
	return fmt.Sprintf("%dms", d.Milliseconds())
}

// legend fills a legendFormat's {{label}} from a series' labels, or names
// the series by all its labels when the format is empty or __auto.
func legend(format string, labelValues map[string]string, fallback string) string {
	if format == "" || format == "__auto" {
		return fallback
	}
	return legendPattern.ReplaceAllStringFunc(format, func(match string) string {
		return labelValues[strings.TrimSpace(match[2:len(match)-2])]
	})
}

var legendPattern = regexp.MustCompile(`\{\{\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\}\}`)
