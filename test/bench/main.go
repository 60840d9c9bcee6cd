// Command bench measures the dispatcher end to end for `make bench`: events
// published to a running dispatcher (real store, fsync on) and delivered to
// loopback receivers, with fan-out 1 and 4 as fast as they are accepted and
// with fan-out 1 paced at a fixed rate, next to a bare two-hop relay (a
// plain Go server that forwards each POST to the receivers, with no store)
// measured in the same run, twice: in a process of its own, like the
// dispatcher (the ratios' baseline), and inside the bench process, sharing
// its runtime with the publishers and receivers (earlier benches' baseline). With --store=postgres, dispatchers on a
// PostgreSQL cluster of the bench's own (fsync and synchronous_commit on, as
// the embedded stores sync) run beside them: one replica on a database, and three
// replicas on another, published to round-robin. With --profile, it takes
// CPU and allocation profiles of the dispatchers during each of their runs
// and says where the time went. It prints figures; it asserts nothing.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/controllers"
	"github.com/hookrelay/hookrelay/internal/pgcluster"
	"github.com/hookrelay/hookrelay/internal/testenv"
)

const (
	routesNamespace = "hookrelay-system"
	namespace       = "bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == relaySubcommand {
		if err := serveRelay(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench relay:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	flag.IntVar(&cfg.events, "events", 5000, "Events to publish in each round of an unpaced run.")
	flag.IntVar(&cfg.rounds, "rounds", 4, "Rounds of each unpaced run: every round measures the relays and the dispatchers one after the other, "+
		"in the opposite order of the round before, so that a machine whose speed drifts weighs on all of them alike (an even number gives each every place alike).")
	flag.IntVar(&cfg.concurrency, "concurrency", 32, "Concurrent publishers.")
	flag.IntVar(&cfg.pacedRate, "paced-rate", 1000, "Events a second of the paced run (fan-out 1).")
	flag.IntVar(&cfg.pacedEvents, "paced-events", 5000, "Events to publish in the paced run.")
	flag.StringVar(&cfg.dispatcherBinary, "dispatcher", "bin/dispatcher", "The dispatcher binary.")
	stores := flag.String("store", "pebble,bolt", "Stores to measure the dispatcher on, comma-separated: pebble and bolt (embedded, one dispatcher each), "+
		"postgres (one and three replicas on a PostgreSQL cluster of the bench's own).")
	flag.BoolVar(&cfg.profile, "profile", false, "Take CPU and allocation profiles of the dispatcher during each of its runs, and say where the time goes.")
	flag.StringVar(&cfg.profileDir, "profile-dir", "", "Folder for the profiles (--profile); a new one under the temporary folder when empty.")
	flag.StringVar(&cfg.metricsOut, "metrics-out", "", "Folder (new or empty) to store the dispatchers' and the manager's /metrics in, scraped every second "+
		"during the runs, for hack/dashboard (make dashboard-png).")
	flag.Parse()
	logf.SetLogger(logr.Discard())
	for name := range strings.SplitSeq(*stores, ",") {
		switch name {
		case "pebble", "bolt":
			cfg.embedded = append(cfg.embedded, name)
		case "postgres":
			cfg.withPostgres = true
		default:
			fmt.Fprintf(os.Stderr, "bench: --store=%s: %q is not pebble, bolt or postgres\n", *stores, name)
			os.Exit(2)
		}
	}
	if cfg.events < 100 || cfg.pacedEvents < 100 || cfg.concurrency < 1 || cfg.pacedRate < 1 || cfg.rounds < 1 {
		fmt.Fprintln(os.Stderr, "bench: --events and --paced-events must be at least 100, --concurrency, --paced-rate and --rounds at least 1")
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if cfg.metricsOut != "" {
		fmt.Fprintf(os.Stderr, "bench: the metrics are in %s; draw the dashboard from them with: make dashboard-png DASHBOARD_SAMPLES=%s\n",
			cfg.metricsOut, cfg.metricsOut)
	}
}

// config is what the flags ask for.
type config struct {
	events, concurrency    int
	rounds                 int
	pacedRate, pacedEvents int
	dispatcherBinary       string
	// embedded are the embedded stores measured, one dispatcher each.
	embedded     []string
	withPostgres bool
	profile      bool
	profileDir   string
	metricsOut   string
}

// receivers are loopback HTTP servers that note when each event first
// arrives and how many deliveries came.
type receivers struct {
	servers []*httptest.Server
	mu      sync.Mutex
	first   map[string]time.Time
	count   int
	done    chan struct{}
	want    int
}

func newReceivers(n int) *receivers {
	r := &receivers{first: map[string]time.Time{}}
	for range n {
		r.servers = append(r.servers, httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			_, _ = io.Copy(io.Discard, req.Body)
			id := req.Header.Get("webhook-id")
			if id == "" {
				id = req.Header.Get("X-Event-Id")
			}
			now := time.Now()
			r.mu.Lock()
			if _, seen := r.first[id]; !seen {
				r.first[id] = now
			}
			r.count++
			if r.count == r.want && r.done != nil {
				close(r.done)
			}
			r.mu.Unlock()
			w.WriteHeader(http.StatusOK)
		})))
	}
	return r
}

func (r *receivers) reset(want int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.first, r.count, r.want, r.done = map[string]time.Time{}, 0, want, make(chan struct{})
}

func (r *receivers) close() {
	for _, s := range r.servers {
		s.Close()
	}
}

// result of one run.
type result struct {
	name               string
	eventsPerSecond    float64
	deliveriesPerSec   float64
	p50, p99           time.Duration
	events, deliveries int
	elapsed            time.Duration
	// latencies are the events' publish→first delivery, sorted.
	latencies []time.Duration
	// cpuPerEvent is the CPU time the measured processes used during the
	// run, over its events; zero where it is not known (the in-bench relay
	// shares its process with the publishers and receivers).
	cpuPerEvent time.Duration
}

// load is what one run publishes: events of eventType, each fanning out to
// fanOut deliveries, by concurrency publishers; with a rate, paced at that
// many events a second, else as fast as they are accepted.
type load struct {
	eventType   string
	events      int
	fanOut      int
	concurrency int
	rate        int
}

// progressEvery is how often a run says on stderr how far it got.
const progressEvery = 2 * time.Second

// measure publishes the load to urls (a dispatcher's replicas, round-robin,
// or the relay) and waits for all deliveries to arrive. Latency is from
// sending an event to its first delivery's arrival.
func measure(name string, urls []string, l load, r *receivers) (result, error) {
	r.reset(l.events * l.fanOut)
	sent := make([]time.Time, l.events)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: l.concurrency}}
	var published atomic.Int64
	stopProgress := progress(name, l, &published, r)
	defer stopProgress()
	started := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range l.events {
			if l.rate > 0 {
				// Due times from the start, so a late send does not delay the rest.
				time.Sleep(time.Until(started.Add(time.Duration(i) * time.Second / time.Duration(l.rate))))
			}
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, l.concurrency)
	for range l.concurrency {
		wg.Go(func() {
			for i := range next {
				if err := publish(client, name, urls[i%len(urls)], l.eventType, i, &sent[i]); err != nil {
					errs <- err
					cancel()
					return
				}
				published.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return result{}, err
	}
	select {
	case <-r.done:
	case <-time.After(5 * time.Minute):
		return result{}, fmt.Errorf("%s: deliveries did not all arrive", name)
	}
	elapsed := time.Since(started)
	r.mu.Lock()
	defer r.mu.Unlock()
	latencies := make([]time.Duration, 0, l.events)
	for i := range l.events {
		latencies = append(latencies, r.first[eventID(name, i)].Sub(sent[i]))
	}
	return combine(name, result{events: l.events, deliveries: l.events * l.fanOut, elapsed: elapsed, latencies: latencies}), nil
}

// combine sums runs of one load into one result: events and deliveries
// over the time they took together, latencies' percentiles over all of
// them, CPU per event over all events.
func combine(name string, runs ...result) result {
	out := result{name: name}
	var cpu time.Duration
	for _, run := range runs {
		out.events += run.events
		out.deliveries += run.deliveries
		out.elapsed += run.elapsed
		out.latencies = append(out.latencies, run.latencies...)
		cpu += run.cpuPerEvent * time.Duration(run.events)
	}
	slices.Sort(out.latencies)
	out.eventsPerSecond = float64(out.events) / out.elapsed.Seconds()
	out.deliveriesPerSec = float64(out.deliveries) / out.elapsed.Seconds()
	out.p50, out.p99 = out.latencies[len(out.latencies)/2], out.latencies[len(out.latencies)*99/100]
	if out.events > 0 {
		out.cpuPerEvent = cpu / time.Duration(out.events)
	}
	return out
}

func eventID(run string, i int) string { return fmt.Sprintf("evt_%s_%06d", run, i) }

// publish posts event i of a run and notes when it was sent.
func publish(client *http.Client, run, url, eventType string, i int, sent *time.Time) error {
	id := eventID(run, i)
	body := fmt.Sprintf(`{"id":%q,"type":%q,"data":{"n":%d,"user_id":"d1c9b98b-3190-479e-99db-04060ff3997f"}}`, id, eventType, i)
	request, err := http.NewRequest(http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	request.Header.Set("Content-Type", "application/json")
	request.Header.Set("X-Event-Id", id)
	*sent = time.Now()
	response, err := client.Do(request)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, response.Body)
	response.Body.Close()
	if response.StatusCode >= 300 {
		return fmt.Errorf("%s: publish answered %d", run, response.StatusCode)
	}
	return nil
}

// progress says on stderr, every progressEvery until stopped, how many
// events of a run are published and how many deliveries arrived.
func progress(name string, l load, published *atomic.Int64, r *receivers) (stop func()) {
	done := make(chan struct{})
	ticker := time.NewTicker(progressEvery)
	go func() {
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case <-ticker.C:
				r.mu.Lock()
				delivered := r.count
				r.mu.Unlock()
				fmt.Fprintf(os.Stderr, "bench: %s: %d/%d events published, %d/%d deliveries arrived\n",
					name, published.Load(), l.events, delivered, l.events*l.fanOut)
			}
		}
	}()
	return func() { close(done) }
}

func run(cfg config) (err error) {
	fmt.Fprintln(os.Stderr, "bench: starting the control plane (kube-apiserver and etcd)")
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: stopping the control plane: %v\n", err)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, name := range []string{routesNamespace, namespace} {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			return err
		}
	}
	fmt.Fprintln(os.Stderr, "bench: starting the manager; creating 4 endpoints and their subscriptions")
	mgr, err := env.NewManager(controllers.CacheOptions(routesNamespace))
	if err != nil {
		return err
	}
	if err := controllers.Setup(mgr, controllers.Options{Namespace: routesNamespace, AllowInsecure: true}); err != nil {
		return err
	}
	go func() { _ = mgr.Start(ctx) }()
	// The manager's scrapes start now, to see the reconciles of the bench's
	// endpoints; the dispatchers' once they run.
	metrics, err := newMetricsOut(cfg.metricsOut)
	if err != nil {
		return err
	}
	stopManagerScrapes, err := metrics.scrape(map[string]scrapeTarget{"manager": managerTarget})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopManagerScrapes()) }()

	r := newReceivers(4)
	defer r.close()
	for i, server := range r.servers {
		name := fmt.Sprintf("receiver-%d", i+1)
		types := []string{"bench.four"}
		if i == 0 {
			types = append(types, "bench.one")
		}
		if err := env.Client.Create(ctx, &hookrelayv1alpha1.WebhookSubscription{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			Spec:       hookrelayv1alpha1.WebhookSubscriptionSpec{EndpointRef: hookrelayv1alpha1.EndpointReference{Name: name}, EventTypes: types},
		}); err != nil {
			return err
		}
		if err := env.Client.Create(ctx, &hookrelayv1alpha1.WebhookEndpoint{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			Spec:       hookrelayv1alpha1.WebhookEndpointSpec{URL: server.URL, MaxInFlight: ptr.To[int32](64)},
		}); err != nil {
			return err
		}
	}

	dataDir, err := os.MkdirTemp("", "hookrelay-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	var dispatchers []dispatcher
	var stores []string
	nameWidth := len("hookrelay-pebble-paced-") + len(strconv.Itoa(cfg.pacedRate)) + 1
	for _, embedded := range cfg.embedded {
		fmt.Fprintf(os.Stderr, "bench: starting the dispatcher on %s\n", embedded)
		d, err := startDispatcher(cfg.dispatcherBinary, env.Kubeconfig, filepath.Join(dataDir, embedded), r, "--store="+embedded)
		if err != nil {
			return err
		}
		defer d.stop()
		dispatchers = append(dispatchers, dispatcher{name: "hookrelay-" + embedded, publishURLs: []string{d.publishURL}, profiling: []string{d.profilingAddress},
			metricsURLs: []string{d.metricsURL}, pids: []int{d.pid}})
		stores = append(stores, fmt.Sprintf("%s in %s (fsync on)", embedded, filepath.Join(dataDir, embedded)))
	}
	if cfg.withPostgres {
		fmt.Fprintln(os.Stderr, "bench: starting PostgreSQL")
		cluster, err := pgcluster.Start(pgcluster.Options{Durable: true})
		if err != nil {
			return fmt.Errorf("starting PostgreSQL: %w", err)
		}
		defer func() {
			if err := cluster.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "bench: stopping PostgreSQL: %v\n", err)
			}
		}()
		for _, replicas := range postgresReplicas {
			name := fmt.Sprintf("hookrelay-postgres-%d", replicas)
			fmt.Fprintf(os.Stderr, "bench: starting %d dispatcher replicas on PostgreSQL\n", replicas)
			d, stop, err := startPostgresReplicas(cfg.dispatcherBinary, env.Kubeconfig, filepath.Join(dataDir, name), cluster, replicas, r)
			if err != nil {
				return err
			}
			defer stop()
			d.name = name
			dispatchers = append(dispatchers, d)
		}
		stores = append(stores, fmt.Sprintf("PostgreSQL in %s, a database for each replica count (fsync on, synchronous_commit on)", cluster.Dir()))
		nameWidth = max(nameWidth, len("hookrelay-postgres-3-paced-")+len(strconv.Itoa(cfg.pacedRate))+1)
	}
	var profiles *profiler
	if cfg.profile {
		if profiles, err = newProfiler(cfg.profileDir); err != nil {
			return err
		}
	}

	stopDispatcherScrapes, err := metrics.scrape(dispatcherTargets(dispatchers))
	if err != nil {
		return err
	}
	// Scraping stops before the dispatchers do (deferred later, run first).
	defer func() { err = errors.Join(err, stopDispatcherScrapes()) }()

	targets := make([]string, len(r.servers))
	for i, s := range r.servers {
		targets[i] = s.URL
	}
	fmt.Printf("hookrelay bench: %d rounds of %d events per unpaced run, %d concurrent publishers; paced: %d events at %d/s; %s\n\n",
		cfg.rounds, cfg.events, cfg.concurrency, cfg.pacedEvents, cfg.pacedRate, strings.Join(stores, "; "))
	fmt.Printf("%-*s %12s %14s %12s %12s %12s\n", nameWidth, "run", "events/s", "deliveries/s", "p50", "p99", "cpu/event")
	b := &bench{r: r, profiles: profiles, nameWidth: nameWidth}
	// rows[kind] holds the relays' results, then each dispatcher's.
	rows := map[string][]result{}
	kinds := []struct {
		kind string
		load load
		// rounds: a paced run's pace, not the machine, sets its rate
		rounds int
	}{
		{"fanout-1", load{eventType: "bench.one", events: cfg.events, fanOut: 1, concurrency: cfg.concurrency}, cfg.rounds},
		{"fanout-4", load{eventType: "bench.four", events: cfg.events, fanOut: 4, concurrency: cfg.concurrency}, cfg.rounds},
		{fmt.Sprintf("paced-%d", cfg.pacedRate), load{eventType: "bench.one", events: cfg.pacedEvents, fanOut: 1, concurrency: cfg.concurrency, rate: cfg.pacedRate}, 1},
	}
	for _, k := range kinds {
		if rows[k.kind], err = b.runWithRelays(dispatchers, targets, dataDir, k.kind, k.load, k.rounds); err != nil {
			return err
		}
	}
	fmt.Println()
	printRatios(dispatchers, rows["fanout-1"], rows["fanout-4"], rows[kinds[2].kind], cfg.pacedRate)
	if profiles != nil {
		fmt.Printf("\nwhere the dispatcher's time goes (profiles in %s; read one with go tool pprof -http=: %s %s):\n",
			profiles.dir, cfg.dispatcherBinary, filepath.Join(profiles.dir, dispatchers[0].name+"-fanout-1.cpu.pb.gz"))
		fmt.Print(b.summaries.String())
	}
	return nil
}

// runWithRelays starts the relays for a load (one per placement), measures
// them and the dispatchers, and stops the relays. The results are the
// relays', in relayPlacements' order, then the dispatchers'.
func (b *bench) runWithRelays(dispatchers []dispatcher, targets []string, dir, kind string, l load, rounds int) ([]result, error) {
	var started []runningRelay
	defer func() {
		for _, relay := range started {
			relay.stop()
		}
	}()
	var relays []dispatcher
	for _, placement := range relayPlacements {
		relay, err := placement.start(targets, l.fanOut, dir)
		if err != nil {
			return nil, err
		}
		relay.name = placement.name
		started = append(started, relay)
		relays = append(relays, relay.dispatcher)
	}
	return b.runAll(append(relays, dispatchers...), kind, l, rounds)
}

// printRatios prints each dispatcher's figures over the relay's, with the
// relay in its own process (the goal's baseline) and in the bench process.
// The rows are the runs' results, relays first (see runWithRelays).
func printRatios(dispatchers []dispatcher, fanOut1, fanOut4, paced []result, pacedRate int) {
	relays := len(relayPlacements)
	for i, d := range dispatchers {
		fmt.Printf("%s / relay, fan-out 1 events/s:     %.2f (goal ≥ 0.60; / relay-in-bench: %.2f)\n", d.name,
			fanOut1[relays+i].eventsPerSecond/fanOut1[0].eventsPerSecond, fanOut1[relays+i].eventsPerSecond/fanOut1[1].eventsPerSecond)
		fmt.Printf("%s / relay, fan-out 4 deliveries/s: %.2f (goal ≥ 0.60; / relay-in-bench: %.2f)\n", d.name,
			fanOut4[relays+i].deliveriesPerSec/fanOut4[0].deliveriesPerSec, fanOut4[relays+i].deliveriesPerSec/fanOut4[1].deliveriesPerSec)
		fmt.Printf("%s paced at %d events/s: p99 publish→first attempt %s (goal ≤ 10ms)\n", d.name, pacedRate,
			paced[relays+i].p99.Round(10*time.Microsecond))
	}
}

// dispatcherTargets are the dispatchers' replicas, by name.
func dispatcherTargets(dispatchers []dispatcher) map[string]scrapeTarget {
	client := &http.Client{}
	targets := map[string]scrapeTarget{}
	for _, d := range dispatchers {
		for i, url := range d.metricsURLs {
			name := d.name
			if len(d.metricsURLs) > 1 {
				name = fmt.Sprintf("%s-replica-%d", d.name, i+1)
			}
			targets[name] = httpTarget(client, url)
		}
	}
	return targets
}

// bench runs the loads and collects the profiles' summaries.
type bench struct {
	r         *receivers
	profiles  *profiler
	nameWidth int
	summaries strings.Builder
}

// runAll warms each of measured up, then measures each in rounds, and
// prints its row: each round measures all of them one after the other, in
// the opposite order of the round before, so that over two rounds each
// holds every place alike, and a drift of the machine's speed (other
// tenants of its host) weighs on each alike rather than on whichever ran
// in a slow moment. Each run starts once the measured processes are quiet
// (settle), so that no run is measured with the work another left behind.
// Only the first round is profiled.
func (b *bench) runAll(measured []dispatcher, kind string, l load, rounds int) ([]result, error) {
	warm := l
	warm.events, warm.rate = 200, 0
	for _, d := range measured {
		fmt.Fprintf(os.Stderr, "bench: warming up %s-%s\n", d.name, kind)
		if _, err := measure(fmt.Sprintf("warm-%s-%s", d.name, kind), d.publishURLs, warm, b.r); err != nil {
			return nil, err
		}
	}
	var pids []int
	for _, d := range measured {
		pids = append(pids, d.pids...)
	}
	runs := make([][]result, len(measured))
	for round := range rounds {
		for turn := range measured {
			i := turn
			if round%2 == 1 {
				i = len(measured) - 1 - turn
			}
			d := measured[i]
			if err := settle(pids); err != nil {
				return nil, err
			}
			name := d.name + "-" + kind
			if rounds > 1 {
				name = fmt.Sprintf("%s-round-%d", name, round+1)
			}
			fmt.Fprintf(os.Stderr, "bench: measuring %s\n", name)
			res, err := b.measure(name, d, l, round == 0)
			if err != nil {
				return nil, err
			}
			runs[i] = append(runs[i], res)
		}
	}
	var results []result
	for i, d := range measured {
		res := combine(d.name+"-"+kind, runs[i]...)
		cpu := "-"
		if res.cpuPerEvent > 0 {
			cpu = res.cpuPerEvent.Round(time.Microsecond).String()
		}
		fmt.Printf("%-*s %12.0f %14.0f %12s %12s %12s\n", b.nameWidth, res.name, res.eventsPerSecond, res.deliveriesPerSec,
			res.p50.Round(10*time.Microsecond), res.p99.Round(10*time.Microsecond), cpu)
		results = append(results, res)
	}
	return results, nil
}

// measure runs one load on d, profiled if asked for, and notes the CPU time
// d's processes used.
func (b *bench) measure(name string, d dispatcher, l load, profiled bool) (result, error) {
	if len(d.pids) == 0 {
		return b.measureProfiled(name, d, l, profiled)
	}
	before, err := processesCPU(d.pids)
	if errors.Is(err, errNoProcFS) {
		return b.measureProfiled(name, d, l, profiled)
	}
	if err != nil {
		return result{}, fmt.Errorf("%s: %w", name, err)
	}
	res, err := b.measureProfiled(name, d, l, profiled)
	if err != nil {
		return result{}, err
	}
	after, err := processesCPU(d.pids)
	if err != nil {
		return result{}, fmt.Errorf("%s: %w", name, err)
	}
	res.cpuPerEvent = (after - before) / time.Duration(res.events)
	return res, nil
}

// measureProfiled runs one load on d, under profiling when asked for (the
// bench's --profile and profiled) and d has a profiling listener.
func (b *bench) measureProfiled(name string, d dispatcher, l load, profiled bool) (result, error) {
	if b.profiles == nil || !profiled || len(d.profiling) == 0 {
		return measure(name, d.publishURLs, l, b.r)
	}
	// Named as the run's row: only its first round is profiled.
	name = strings.TrimSuffix(name, "-round-1")
	capture, err := b.profiles.start(d.profiling)
	if err != nil {
		return result{}, fmt.Errorf("profiling %s: %w", name, err)
	}
	res, err := measure(name, d.publishURLs, l, b.r)
	cpu, allocs, profileErr := capture.finish(name)
	if err != nil {
		return result{}, err
	}
	if profileErr != nil {
		return result{}, fmt.Errorf("profiling %s: %w", name, profileErr)
	}
	printProfiles(&b.summaries, name, res.events, res.elapsed, cpu, allocs)
	return res, nil
}

// dispatcher is what the bench measures, under a name: the publish URLs of
// its replicas (or the relay's), their pprof listeners, and their process
// ids (none for the in-bench relay).
type dispatcher struct {
	name        string
	publishURLs []string
	profiling   []string
	metricsURLs []string
	pids        []int
}

// postgresReplicas are the replica counts measured on PostgreSQL.
var postgresReplicas = []int{1, 3}

// dispatcherProcess is a running dispatcher binary.
type dispatcherProcess struct {
	pid              int
	publishURL       string
	metricsURL       string
	profilingAddress string
	stop             func()
}

// startDispatcher runs the dispatcher binary with its state in dir (created
// here), its pprof listener on a free loopback port, and storeArgs, and
// waits until it routes the bench's events.
func startDispatcher(binary, kubeconfig, dir string, r *receivers, storeArgs ...string) (*dispatcherProcess, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	profilingAddress, err := freeLoopbackAddress()
	if err != nil {
		return nil, err
	}
	// The dispatcher binds a free port itself and names it in addressFile.
	addressFile := filepath.Join(dir, "address")
	args := append([]string{"--namespace=" + routesNamespace, "--listen-address=127.0.0.1:0", "--listen-address-file=" + addressFile,
		"--data-dir=" + dir, "--zap-log-level=error", "--enable-profiling", "--profiling-address=" + profilingAddress,
		"--egress-allow-cidr=127.0.0.0/8", "--insecure-no-auth"}, storeArgs...)
	// The Go runtime's settings of the dispatcher's StatefulSet: the
	// binary runs here as in a cluster.
	runtimeEnv, err := testenv.DispatcherRuntimeEnv()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+kubeconfig), runtimeEnv...)
	cmd.Stderr = os.Stderr
	address, stop, err := startListening(cmd, addressFile, 60*time.Second)
	if err != nil {
		return nil, fmt.Errorf("the dispatcher (%s): %w", dir, err)
	}
	fmt.Fprintf(os.Stderr, "bench: dispatcher at http://%s (profiles at http://%s/debug/pprof/)\n", address, profilingAddress)
	if err := waitRouted("http://"+address, r); err != nil {
		stop()
		return nil, err
	}
	return &dispatcherProcess{pid: cmd.Process.Pid, publishURL: "http://" + address + "/v1/namespaces/" + namespace + "/events", metricsURL: "http://" + address + "/metrics",
		profilingAddress: profilingAddress, stop: stop}, nil
}

// startListening starts cmd, a process that names the address it listens
// on in addressFile, and returns that address and how to stop it (SIGTERM,
// then wait); a process that exits or names no address in time is stopped.
func startListening(cmd *exec.Cmd, addressFile string, timeout time.Duration) (address string, stop func(), err error) {
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	}
	if address, err = testenv.WaitForAddressFile(addressFile, exited, timeout); err != nil {
		stop()
		return "", nil, err
	}
	return address, stop, nil
}

// freeLoopbackAddress is a loopback port free now, for a pprof listener:
// the dispatcher does not say which port 0 picked for it, and fixed ports
// would collide with other benches on the machine.
func freeLoopbackAddress() (string, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	address := listener.Addr().String()
	return address, listener.Close()
}

// startPostgresReplicas starts replicas dispatchers on a new database of
// cluster, each with its own folder under dir, and returns them as one
// dispatcher (to be named by the caller).
func startPostgresReplicas(binary, kubeconfig, dir string, cluster *pgcluster.Cluster, replicas int, r *receivers) (d dispatcher, stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, s := range stops {
			s()
		}
	}
	dsn, err := cluster.CreateDatabase(filepath.Base(dir))
	if err == nil {
		err = os.MkdirAll(dir, 0o700)
	}
	dsnFile := filepath.Join(dir, "dsn")
	if err == nil {
		err = os.WriteFile(dsnFile, []byte(dsn), 0o600)
	}
	for replica := range replicas {
		if err != nil {
			break
		}
		var process *dispatcherProcess
		process, err = startDispatcher(binary, kubeconfig, filepath.Join(dir, fmt.Sprintf("replica-%d", replica+1)), r,
			"--store=postgres", "--postgres-dsn-file="+dsnFile)
		if err == nil {
			d.publishURLs = append(d.publishURLs, process.publishURL)
			d.metricsURLs = append(d.metricsURLs, process.metricsURL)
			d.profiling = append(d.profiling, process.profilingAddress)
			d.pids = append(d.pids, process.pid)
			stops = append(stops, process.stop)
		}
	}
	if err != nil {
		stop()
		return dispatcher{}, nil, err
	}
	return d, stop, nil
}

// waitRouted waits until the dispatcher fans a probe out to all four
// endpoints, and the probe's deliveries have arrived.
func waitRouted(url string, r *receivers) error {
	deadline := time.Now().Add(60 * time.Second)
	r.reset(4)
	var last string
	for time.Now().Before(deadline) {
		response, err := http.Post(url+"/v1/namespaces/"+namespace+"/events", "application/json",
			bytes.NewBufferString(`{"type":"bench.four","data":{}}`))
		if err != nil {
			last = err.Error()
		} else {
			var answer struct{ Deliveries int }
			decodeErr := json.NewDecoder(response.Body).Decode(&answer)
			response.Body.Close()
			last = fmt.Sprintf("%s, %d deliveries (decoding: %v)", response.Status, answer.Deliveries, decodeErr)
			if response.StatusCode == http.StatusAccepted && answer.Deliveries == 4 {
				select {
				case <-r.done:
					return nil
				case <-time.After(30 * time.Second):
					return errors.New("the probe's deliveries did not arrive")
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the dispatcher did not load the bench endpoints within 60s; the last probe: %s", last)
}
