// Command bench measures the dispatcher end to end for `make bench`: events
// published to a running dispatcher (real store, fsync on) and delivered to
// loopback receivers, with fan-out 1 and 4, next to a bare two-hop relay (a
// plain Go server that forwards each POST to the receivers, with no store)
// measured in the same run. With --store=postgres, dispatchers on a
// PostgreSQL cluster of the bench's own (fsync and synchronous_commit on, as
// the embedded store syncs) run beside them: one replica on a database, and three
// replicas on another, published to round-robin. It prints figures; it
// asserts nothing.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
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
	events := flag.Int("events", 5000, "Events to publish in each run.")
	concurrency := flag.Int("concurrency", 32, "Concurrent publishers.")
	dispatcherBinary := flag.String("dispatcher", "bin/dispatcher", "The dispatcher binary.")
	store := flag.String("store", "pebble", "pebble or bolt measures the dispatcher on that embedded store; postgres measures it on PostgreSQL as well "+
		"(beside pebble), in the same run.")
	flag.Parse()
	logf.SetLogger(logr.Discard())
	embedded := *store
	switch *store {
	case "pebble", "bolt":
	case "postgres":
		embedded = "pebble"
	default:
		fmt.Fprintf(os.Stderr, "bench: --store=%s: want pebble, bolt or postgres\n", *store)
		os.Exit(2)
	}
	if err := run(*events, *concurrency, *dispatcherBinary, embedded, *store == "postgres"); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
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
}

// measure publishes events to urls (a dispatcher's replicas, round-robin,
// or the relay), fanOut deliveries each, and waits for all deliveries to
// arrive.
func measure(name string, urls []string, eventType string, events, fanOut, concurrency int, r *receivers) (result, error) {
	r.reset(events * fanOut)
	sent := make([]time.Time, events)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency}}
	started := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, concurrency)
	for worker := range concurrency {
		wg.Go(func() {
			for i := worker; i < events; i += concurrency {
				id := fmt.Sprintf("evt_%s_%06d", name, i)
				body := fmt.Sprintf(`{"id":%q,"type":%q,"data":{"n":%d,"user_id":"d1c9b98b-3190-479e-99db-04060ff3997f"}}`, id, eventType, i)
				request, _ := http.NewRequest(http.MethodPost, urls[i%len(urls)], bytes.NewBufferString(body))
				request.Header.Set("Content-Type", "application/json")
				request.Header.Set("X-Event-Id", id)
				sent[i] = time.Now()
				response, err := client.Do(request)
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, response.Body)
				response.Body.Close()
				if response.StatusCode >= 300 {
					errs <- fmt.Errorf("%s: publish answered %d", name, response.StatusCode)
					return
				}
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
	latencies := make([]time.Duration, 0, events)
	for i := range events {
		latencies = append(latencies, r.first[fmt.Sprintf("evt_%s_%06d", name, i)].Sub(sent[i]))
	}
	slices.Sort(latencies)
	return result{
		name: name, events: events, deliveries: events * fanOut,
		eventsPerSecond:  float64(events) / elapsed.Seconds(),
		deliveriesPerSec: float64(events*fanOut) / elapsed.Seconds(),
		p50:              latencies[len(latencies)/2], p99: latencies[len(latencies)*99/100],
	}, nil
}

// relay is the baseline: accept the POST, forward it to each receiver, answer.
func relay(targets []string, fanOut int) *httptest.Server {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var wg sync.WaitGroup
		for _, target := range targets[:fanOut] {
			wg.Go(func() {
				forward, _ := http.NewRequest(http.MethodPost, target, bytes.NewReader(body))
				forward.Header.Set("Content-Type", "application/json")
				forward.Header.Set("X-Event-Id", req.Header.Get("X-Event-Id"))
				if response, err := client.Do(forward); err == nil {
					_, _ = io.Copy(io.Discard, response.Body)
					response.Body.Close()
				}
			})
		}
		wg.Wait()
		w.WriteHeader(http.StatusAccepted)
	}))
}

func run(events, concurrency int, dispatcherBinary, embedded string, withPostgres bool) error {
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
	mgr, err := env.NewManager(controllers.CacheOptions(routesNamespace))
	if err != nil {
		return err
	}
	if err := controllers.Setup(mgr, controllers.Options{Namespace: routesNamespace, AllowInsecure: true}); err != nil {
		return err
	}
	go func() { _ = mgr.Start(ctx) }()

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
	profiling := &profilingAddresses{next: 6060}
	local, err := startDispatcher(dispatcherBinary, env.Kubeconfig, filepath.Join(dataDir, embedded), profiling.take(), r, "--store="+embedded)
	if err != nil {
		return err
	}
	defer local.stop()
	dispatchers := []dispatcher{{name: "hookrelay", publishURLs: []string{local.publishURL}}}
	stores := embedded + " store in " + filepath.Join(dataDir, embedded) + " (fsync on)"
	nameWidth := 22
	if withPostgres {
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
			urls, stop, err := startPostgresReplicas(dispatcherBinary, env.Kubeconfig, filepath.Join(dataDir, name), cluster, replicas, profiling, r)
			if err != nil {
				return err
			}
			defer stop()
			dispatchers = append(dispatchers, dispatcher{name: name, publishURLs: urls})
		}
		stores += fmt.Sprintf(" and PostgreSQL in %s, a database for each replica count (fsync on, synchronous_commit on)", cluster.Dir())
		nameWidth = len("hookrelay-postgres-3-fanout-1") + 1
	}

	targets := make([]string, len(r.servers))
	for i, s := range r.servers {
		targets[i] = s.URL
	}
	fmt.Printf("hookrelay bench: %d events per run, %d concurrent publishers, %s\n\n", events, concurrency, stores)
	fmt.Printf("%-*s %12s %14s %12s %12s\n", nameWidth, "run", "events/s", "deliveries/s", "p50", "p99")
	// rows[fanOut] holds the relay's result, then each dispatcher's.
	rows := map[int][]result{}
	fanOuts := []int{1, 4}
	for _, fanOut := range fanOuts {
		eventType := map[int]string{1: "bench.one", 4: "bench.four"}[fanOut]
		baseline := relay(targets, fanOut)
		measured := append([]dispatcher{{name: "relay", publishURLs: []string{baseline.URL}}}, dispatchers...)
		// Warm all up, then measure each.
		for _, d := range measured {
			if _, err := measure(fmt.Sprintf("warm-%s-%d", d.name, fanOut), d.publishURLs, eventType, 200, fanOut, concurrency, r); err != nil {
				baseline.Close()
				return err
			}
		}
		for _, d := range measured {
			res, err := measure(fmt.Sprintf("%s-fanout-%d", d.name, fanOut), d.publishURLs, eventType, events, fanOut, concurrency, r)
			if err != nil {
				baseline.Close()
				return err
			}
			fmt.Printf("%-*s %12.0f %14.0f %12s %12s\n", nameWidth, res.name, res.eventsPerSecond, res.deliveriesPerSec,
				res.p50.Round(10*time.Microsecond), res.p99.Round(10*time.Microsecond))
			rows[fanOut] = append(rows[fanOut], res)
		}
		baseline.Close()
	}
	fmt.Println()
	for _, fanOut := range fanOuts {
		relayResult, boltResult := rows[fanOut][0], rows[fanOut][1]
		fmt.Printf("%s: %.0f%% of the relay's delivered events/s\n", boltResult.name, 100*boltResult.eventsPerSecond/relayResult.eventsPerSecond)
		for _, res := range rows[fanOut][2:] {
			fmt.Printf("%s: %.0f%% of the embedded store's delivered events/s\n", res.name, 100*res.eventsPerSecond/boltResult.eventsPerSecond)
		}
	}
	return nil
}

// dispatcher is what the bench measures, under a name: the publish URLs of
// its replicas (or the relay's).
type dispatcher struct {
	name        string
	publishURLs []string
}

// postgresReplicas are the replica counts measured on PostgreSQL.
var postgresReplicas = []int{1, 3}

// dispatcherProcess is a running dispatcher binary.
type dispatcherProcess struct {
	publishURL string
	stop       func()
}

// startDispatcher runs the dispatcher binary with its state in dir (created
// here), its pprof listener on profilingAddress, and storeArgs, and waits
// until it routes the bench's events.
func startDispatcher(binary, kubeconfig, dir, profilingAddress string, r *receivers, storeArgs ...string) (*dispatcherProcess, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// The dispatcher binds a free port itself and names it in addressFile.
	addressFile := filepath.Join(dir, "address")
	args := append([]string{"--namespace=" + routesNamespace, "--listen-address=127.0.0.1:0", "--listen-address-file=" + addressFile,
		"--data-dir=" + dir, "--zap-log-level=error", "--enable-profiling", "--profiling-address=" + profilingAddress,
		"--egress-allow-cidr=127.0.0.0/8", "--insecure-no-auth"}, storeArgs...)
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	}
	address, err := testenv.WaitForAddressFile(addressFile, exited, 60*time.Second)
	if err != nil {
		stop()
		return nil, fmt.Errorf("the dispatcher (%s): %w", dir, err)
	}
	fmt.Fprintf(os.Stderr, "bench: dispatcher at http://%s (profiles at http://%s/debug/pprof/)\n", address, profilingAddress)
	if err := waitRouted("http://"+address, r); err != nil {
		stop()
		return nil, err
	}
	return &dispatcherProcess{publishURL: "http://" + address + "/v1/namespaces/" + namespace + "/events", stop: stop}, nil
}

// profilingAddresses hands each dispatcher its own pprof port.
type profilingAddresses struct{ next int }

func (p *profilingAddresses) take() string {
	p.next++
	return fmt.Sprintf("127.0.0.1:%d", p.next-1)
}

// startPostgresReplicas starts replicas dispatchers on a new database of
// cluster, each with its own folder under dir, and returns their publish
// URLs.
func startPostgresReplicas(binary, kubeconfig, dir string, cluster *pgcluster.Cluster, replicas int, profiling *profilingAddresses,
	r *receivers) (urls []string, stop func(), err error) {
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
		var d *dispatcherProcess
		d, err = startDispatcher(binary, kubeconfig, filepath.Join(dir, fmt.Sprintf("replica-%d", replica+1)), profiling.take(), r,
			"--store=postgres", "--postgres-dsn-file="+dsnFile)
		if err == nil {
			urls = append(urls, d.publishURL)
			stops = append(stops, d.stop)
		}
	}
	if err != nil {
		stop()
		return nil, nil, err
	}
	return urls, stop, nil
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
