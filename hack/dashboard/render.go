package main

import (
	"context"
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// line is one series of a panel, as Grafana draws it: NaN where the query
// had no value at a step.
type line struct {
	name   string
	times  []time.Time
	values []float64
}

// maxPoints is how many steps a panel's range query takes, as Grafana
// asks for about one point for every few pixels of a panel's width.
const maxPoints = 240

// evaluate runs each of a panel's queries over the samples as a range
// query with Prometheus's own engine.
func evaluate(ctx context.Context, engine *promql.Engine, s *samples, p panel) ([]line, error) {
	step := max(s.scrapeInterval, (s.end.Sub(s.start) / maxPoints).Round(time.Second))
	var lines []line
	for _, t := range p.Targets {
		expr, err := expand(t.Expr, step, s.scrapeInterval)
		if err != nil {
			return nil, fmt.Errorf("panel %q: %w", p.Title, err)
		}
		query, err := engine.NewRangeQuery(ctx, s, nil, expr, s.start, s.end, step)
		if err != nil {
			return nil, fmt.Errorf("panel %q: %w", p.Title, err)
		}
		result := query.Exec(ctx)
		if result.Err != nil {
			query.Close()
			return nil, fmt.Errorf("panel %q: %s: %w", p.Title, expr, result.Err)
		}
		matrix, err := result.Matrix()
		if err != nil {
			query.Close()
			return nil, fmt.Errorf("panel %q: %s: %w", p.Title, expr, err)
		}
		for _, series := range matrix {
			l := line{name: legend(t.LegendFormat, series.Metric.Map(), series.Metric.String())}
			if strings.TrimSpace(l.name) == "" {
				// A legend of labels the series lacks names it by its labels.
				l.name = series.Metric.String()
			}
			for _, point := range series.Floats {
				l.times = append(l.times, time.UnixMilli(point.T))
				l.values = append(l.values, point.F)
			}
			lines = append(lines, l)
		}
		query.Close()
	}
	slices.SortStableFunc(lines, func(a, b line) int { return strings.Compare(a.name, b.name) })
	return lines, nil
}

// unit is how a Grafana unit labels the axis.
type unit struct {
	format func(float64) string
}

// units are the Grafana unit ids the renderer formats as Grafana does.
var units = map[string]unit{
	"short": {format: short},
	"ops":   {format: func(v float64) string { return short(v) + " ops/s" }},
	"s":     {format: seconds},
}

// short is Grafana's "short" unit: SI suffixes, a few significant digits.
func short(v float64) string {
	for _, scale := range []struct {
		factor float64
		suffix string
	}{{1e9, " Bil"}, {1e6, " Mil"}, {1e3, " K"}} {
		if math.Abs(v) >= scale.factor {
			return trim(v/scale.factor) + scale.suffix
		}
	}
	return trim(v)
}

// seconds is Grafana's "s" unit: the largest of µs, ms, s, min, hour
// that keeps the value at one or more.
func seconds(v float64) string {
	switch abs := math.Abs(v); {
	case abs == 0:
		return "0 s"
	case abs < 1e-3:
		return trim(v*1e6) + " µs"
	case abs < 1:
		return trim(v*1e3) + " ms"
	case abs < 60:
		return trim(v) + " s"
	case abs < 3600:
		return trim(v/60) + " min"
	default:
		return trim(v/3600) + " hour"
	}
}

// trim writes v with at most three significant digits and no trailing
// zeros after the point.
func trim(v float64) string {
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// unitTicks labels the default ticks in a unit.
type unitTicks struct{ unit unit }

func (u unitTicks) Ticks(minimum, maximum float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(minimum, maximum)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = u.unit.format(ticks[i].Value)
		}
	}
	return ticks
}

// Layout of the image: a grid unit's height, and the gaps.
const (
	imageWidth  = 1600 // pixels
	imageDPI    = 96
	gridRowSize = 36
	headerSize  = 44
	panelGap    = 6
)

// render draws every panel where the dashboard places it, and writes the
// PNG. It returns how many lines each panel drew.
func render(ctx context.Context, d dashboard, s *samples, out io.Writer) (map[int]int, error) {
	for _, p := range d.Panels {
		if err := p.check(); err != nil {
			return nil, err
		}
	}
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	rows := 0
	for _, p := range d.Panels {
		rows = max(rows, p.GridPos.Y+p.GridPos.H)
	}
	width, height := imageWidth*vg.Inch/imageDPI, vg.Length(headerSize+rows*gridRowSize)
	canvas := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(imageDPI), vgimg.UseBackgroundColor(color.White))
	whole := draw.New(canvas)
	header := draw.TextStyle{Color: color.Black, Font: font.From(plot.DefaultFont, 16), Handler: plot.DefaultTextHandler, YAlign: draw.YCenter}
	whole.FillText(header, vg.Point{X: 2 * panelGap, Y: height - headerSize/2},
		fmt.Sprintf("%s — %s to %s UTC, namespace: All", d.Title, s.start.UTC().Format("2006-01-02 15:04:05"), s.end.UTC().Format("15:04:05")))
	drawn := map[int]int{}
	for _, p := range d.Panels {
		lines, err := evaluate(ctx, engine, s, p)
		if err != nil {
			return nil, err
		}
		column := width / gridColumns
		area := draw.Canvas{Canvas: canvas, Rectangle: vg.Rectangle{
			Min: vg.Point{X: vg.Length(p.GridPos.X) * column, Y: height - headerSize - vg.Length((p.GridPos.Y+p.GridPos.H)*gridRowSize)},
			Max: vg.Point{X: vg.Length(p.GridPos.X+p.GridPos.W) * column, Y: height - headerSize - vg.Length(p.GridPos.Y*gridRowSize)},
		}}
		area = draw.Crop(area, panelGap, -panelGap, panelGap, -panelGap)
		drawn[p.ID] = drawPanel(area, p, lines, s)
	}
	if _, err := (vgimg.PngCanvas{Canvas: canvas}).WriteTo(out); err != nil {
		return nil, err
	}
	return drawn, nil
}

// drawPanel draws a panel's lines, or "No data" as Grafana does, and
// returns how many lines had a value.
func drawPanel(area draw.Canvas, p panel, lines []line, s *samples) int {
	border := vg.Path{}
	border.Move(area.Min)
	border.Line(vg.Point{X: area.Max.X, Y: area.Min.Y})
	border.Line(area.Max)
	border.Line(vg.Point{X: area.Min.X, Y: area.Max.Y})
	border.Close()
	area.SetColor(color.Gray{Y: 0xd0})
	area.SetLineWidth(1)
	area.Stroke(border)
	inner := draw.Crop(area, panelGap, -panelGap, panelGap, -panelGap)

	chart := plot.New()
	chart.Title.Text = p.Title
	chart.Title.TextStyle.Font.Size = 13
	chart.X.Tick.Marker = plot.TimeTicks{Format: "15:04:05"}
	chart.Y.Tick.Marker = unitTicks{unit: units[p.FieldConfig.Defaults.Unit]}
	chart.X.Min, chart.X.Max = float64(s.start.Unix()), float64(s.end.Unix())
	// The dashboard's min is 0; an empty or flat-zero panel spans 0 to 1.
	highest := 0.0
	chart.Legend.Top = true
	chart.Legend.TextStyle.Font.Size = 10
	withValues := 0
	for i, l := range lines {
		style := draw.LineStyle{Color: plotutil.Color(i), Width: vg.Points(1.5)}
		segments := 0
		for _, segment := range segments_(l) {
			line, err := plotter.NewLine(segment)
			if err != nil {
				continue
			}
			line.LineStyle = style
			chart.Add(line)
			if segments == 0 {
				chart.Legend.Add(l.name, line)
			}
			segments++
			for _, point := range segment {
				highest = max(highest, point.Y)
			}
		}
		if segments > 0 {
			withValues++
		}
	}
	chart.Y.Min, chart.Y.Max = 0, 1
	if highest > 0 {
		chart.Y.Max = highest * 1.1
	}
	chart.Draw(inner)
	if withValues == 0 {
		noData := draw.TextStyle{Color: color.Gray{Y: 0x80}, Font: font.From(plot.DefaultFont, 14), Handler: plot.DefaultTextHandler,
			XAlign: draw.XCenter, YAlign: draw.YCenter}
		inner.FillText(noData, inner.Center(), "No data")
	}
	return withValues
}

// segments_ cuts a line where its value is missing (NaN, as
// histogram_quantile answers when nothing was observed), as Grafana leaves
// a gap.
func segments_(l line) []plotter.XYs {
	var out []plotter.XYs
	var current plotter.XYs
	for i, v := range l.values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			if len(current) > 0 {
				out = append(out, current)
			}
			current = nil
			continue
		}
		current = append(current, plotter.XY{X: float64(l.times[i].Unix()), Y: v})
	}
	if len(current) > 0 {
		out = append(out, current)
	}
	return out
}
