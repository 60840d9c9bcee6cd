package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// scrapeExtension names a scrape's file: SAMPLES/TARGET/UNIX_MILLIS.prom
// holds the text exposition that TARGET's /metrics answered at that time.
const scrapeExtension = ".prom"

// samples are the series of a bench run's scrapes, held in memory as
// Prometheus would store them: each scrape's lines, labelled with the
// target as instance, at the scrape's time.
type samples struct {
	series     map[string]*memorySeries
	start, end time.Time
	// scrapeInterval is the median gap between two scrapes of a target.
	scrapeInterval time.Duration
}

type memorySeries struct {
	labels  labels.Labels
	samples []chunks.Sample
}

// readSamples reads every scrape under dir.
func readSamples(dir string) (*samples, error) {
	targets, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	s := &samples{series: map[string]*memorySeries{}}
	var gaps []time.Duration
	for _, t := range targets {
		if !t.IsDir() {
			continue
		}
		files, err := filepath.Glob(filepath.Join(dir, t.Name(), "*"+scrapeExtension))
		if err != nil {
			return nil, err
		}
		var times []int64
		for _, file := range files {
			millis, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(file), scrapeExtension), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: the name is not a time in Unix milliseconds: %w", file, err)
			}
			times = append(times, millis)
		}
		slices.Sort(times)
		for i, millis := range times {
			if err := s.addScrape(filepath.Join(dir, t.Name(), strconv.FormatInt(millis, 10)+scrapeExtension), t.Name(), millis); err != nil {
				return nil, err
			}
			if i > 0 {
				gaps = append(gaps, time.Duration(millis-times[i-1])*time.Millisecond)
			}
		}
	}
	if len(s.series) == 0 || len(gaps) == 0 {
		return nil, fmt.Errorf("%s: no target folder with two scrapes or more (%s files)", dir, scrapeExtension)
	}
	slices.Sort(gaps)
	s.scrapeInterval = gaps[len(gaps)/2]
	return s, nil
}

// addScrape parses one scrape with Prometheus's own text parser.
func (s *samples) addScrape(file, instance string, millis int64) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	parser := textparse.NewPromParser(raw, labels.NewSymbolTable(), false)
	at := time.UnixMilli(millis)
	if s.start.IsZero() || at.Before(s.start) {
		s.start = at
	}
	if at.After(s.end) {
		s.end = at
	}
	for {
		entry, err := parser.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		if entry != textparse.EntrySeries {
			continue
		}
		_, _, value := parser.Series()
		var lset labels.Labels
		parser.Labels(&lset)
		builder := labels.NewBuilder(lset)
		builder.Set("instance", instance)
		lset = builder.Labels()
		key := lset.String()
		series := s.series[key]
		if series == nil {
			series = &memorySeries{labels: lset}
			s.series[key] = series
		}
		series.samples = append(series.samples, floatSample{t: millis, f: value})
	}
}

// Querier answers the PromQL engine's selections from memory.
func (s *samples) Querier(int64, int64) (storage.Querier, error) {
	return &storage.MockQuerier{SelectMockFunction: s.selectSeries}, nil
}

func (s *samples) selectSeries(_ bool, _ *storage.SelectHints, matchers ...*labels.Matcher) storage.SeriesSet {
	var matched []storage.Series
	for _, series := range s.series {
		if matchesAll(series.labels, matchers) {
			matched = append(matched, storage.NewListSeries(series.labels, series.samples))
		}
	}
	slices.SortFunc(matched, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	return &seriesSet{series: matched, next: -1}
}

func matchesAll(lset labels.Labels, matchers []*labels.Matcher) bool {
	for _, m := range matchers {
		if !m.Matches(lset.Get(m.Name)) {
			return false
		}
	}
	return true
}

// seriesSet iterates over selected series in label order.
type seriesSet struct {
	series []storage.Series
	next   int
}

func (s *seriesSet) Next() bool {
	s.next++
	return s.next < len(s.series)
}
func (s *seriesSet) At() storage.Series              { return s.series[s.next] }
func (*seriesSet) Err() error                        { return nil }
func (*seriesSet) Warnings() annotations.Annotations { return nil }
func (f floatSample) T() int64                       { return f.t }
func (floatSample) ST() int64                        { return 0 }
func (f floatSample) F() float64                     { return f.f }
func (floatSample) H() *histogram.Histogram          { return nil }
func (floatSample) FH() *histogram.FloatHistogram    { return nil }
func (floatSample) Type() chunkenc.ValueType         { return chunkenc.ValFloat }
func (f floatSample) Copy() chunks.Sample            { return f }

// floatSample is one scraped value.
type floatSample struct {
	t int64
	f float64
}
