package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// scrapeInterval is how often --metrics-out scrapes each target.
const scrapeInterval = time.Second

// scrapeTarget answers what a target's /metrics would: the exposition text.
type scrapeTarget func(ctx context.Context) ([]byte, error)

// httpTarget scrapes a dispatcher's /metrics (the bench runs it with
// --insecure-no-auth, so no token is needed).
func httpTarget(client *http.Client, url string) scrapeTarget {
	return func(ctx context.Context) ([]byte, error) {
		request, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		request.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		return readOK(client, request)
	}
}

// readOK sends request and returns the body of a 200 answer; another
// status is an error that names the URL and carries the body.
func readOK(client *http.Client, request *http.Request) ([]byte, error) {
	response, err := client.Do(request)
	if err != nil {
		return nil, err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		return nil, err
	}
	if response.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %s", request.Method, request.URL, response.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// managerTarget gathers the in-process manager's registry, the one its
// metrics server would serve.
func managerTarget(context.Context) ([]byte, error) {
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		return nil, err
	}
	var text bytes.Buffer
	encoder := expfmt.NewEncoder(&text, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, family := range families {
		if err := encoder.Encode(family); err != nil {
			return nil, err
		}
	}
	return text.Bytes(), nil
}

// metricsOut scrapes into the --metrics-out folder; without one, it
// does nothing.
type metricsOut struct{ dir string }

func newMetricsOut(dir string) (*metricsOut, error) {
	if dir == "" {
		return &metricsOut{}, nil
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("--metrics-out=%s is not empty: the scrapes of two runs would mix; name a new folder", dir)
	}
	return &metricsOut{dir: dir}, nil
}

// scrape starts scraping targets into the folder; stop ends it.
func (m *metricsOut) scrape(targets map[string]scrapeTarget) (stop func() error, err error) {
	if m.dir == "" {
		return func() error { return nil }, nil
	}
	return startScraping(m.dir, targets)
}

// startScraping stores every target's exposition each scrapeInterval as
// dir/TARGET/UNIX_MILLIS.prom, the layout hack/dashboard reads, until the
// returned stop, which says the first scrape that failed.
func startScraping(dir string, targets map[string]scrapeTarget) (stop func() error, err error) {
	for name := range targets {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	for name, target := range targets {
		wg.Go(func() {
			ticker := time.NewTicker(scrapeInterval)
			defer ticker.Stop()
			for {
				if err := scrapeOnce(ctx, filepath.Join(dir, name), target); err != nil && ctx.Err() == nil {
					mu.Lock()
					failures = append(failures, fmt.Errorf("scraping %s: %w", name, err))
					mu.Unlock()
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-ticker.C:
				}
			}
		})
	}
	fmt.Fprintf(os.Stderr, "bench: scraping the metrics of %s every %s into %s\n", strings.Join(slices.Sorted(maps.Keys(targets)), ", "), scrapeInterval, dir)
	return func() error {
		cancel()
		wg.Wait()
		return errors.Join(failures...)
	}, nil
}

func scrapeOnce(ctx context.Context, dir string, target scrapeTarget) error {
	at := time.Now()
	ctx, cancel := context.WithTimeout(ctx, scrapeInterval)
	defer cancel()
	body, err := target(ctx)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, strconv.FormatInt(at.UnixMilli(), 10)+".prom"), body, 0o644)
}
