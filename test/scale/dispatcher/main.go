// Command dispatcher measures one dispatcher at size for `make
// scale-dispatcher`: it fills an embedded store through the store.Store
// interface with --deliveries deliveries across --endpoints endpoints (most
// finished, --held of them held for one disabled endpoint), publishes the
// endpoints' routes shards the way the manager does, starts the real
// dispatcher binary on that store, and prints its time to ready, its memory,
// and how fast the held deliveries arrive at a loopback receiver once the
// endpoint is re-enabled through its route's re-enable token, while another
// endpoint's new events keep arriving. It prints figures; it asserts nothing
// beyond the run's own consistency (every held delivery arrives).
//
// It is its own program rather than a mode of test/scale: it needs no
// manager and no WebhookEndpoint objects (the routes shards are written
// directly, so only the dispatcher is measured), and it spends minutes on a
// store that the control-plane run has no use for.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/hookrelay/hookrelay/internal/testenv"
)

const routesNamespace = "hookrelay-system"

type options struct {
	shape
	dispatcherBinary string
	dispatcherArgs   string
	prefilled        string
	heldMaxInFlight  int
	probeRate        int
	timeout          time.Duration
	keep             bool
}

func main() {
	var opts options
	flag.IntVar(&opts.Endpoints, "endpoints", 10000, "Endpoints in the dispatcher's routes.")
	flag.IntVar(&opts.Namespaces, "namespaces", 10, "Namespaces the endpoints are spread over.")
	flag.IntVar(&opts.Deliveries, "deliveries", 1000000, "Deliveries stored before the dispatcher starts, --held of them held and the rest finished.")
	flag.IntVar(&opts.Held, "held", 100000, "Held deliveries of the one disabled endpoint, released when it is re-enabled.")
	flag.IntVar(&opts.FanOut, "fan-out", 10, "Finished deliveries per stored event.")
	flag.StringVar(&opts.Store, "store", "pebble", "The dispatcher's --store: the embedded engine filled and measured.")
	flag.StringVar(&opts.dispatcherBinary, "dispatcher", "bin/dispatcher", "The dispatcher binary.")
	flag.StringVar(&opts.dispatcherArgs, "dispatcher-args", "",
		"Extra dispatcher flags, space-separated (e.g. --enable-profiling --profiling-address=127.0.0.1:6070 to profile the release).")
	flag.StringVar(&opts.prefilled, "prefilled", "",
		"Folder of a prefilled store to reuse: filled there on the first run, copied for each run after (the dispatcher changes its copy). Empty fills a new store each run.")
	flag.IntVar(&opts.heldMaxInFlight, "held-max-in-flight", 16, "The held endpoint's maxInFlight: its concurrent attempts during the release.")
	flag.IntVar(&opts.probeRate, "probe-rate", 100, "Events per second published to the probe endpoint during the release.")
	flag.DurationVar(&opts.timeout, "timeout", 15*time.Minute, "Longest wait for the dispatcher to start and for the release to end.")
	flag.BoolVar(&opts.keep, "keep", false, "Keep the run's folder (store copy and dispatcher log).")
	flag.Parse()
	logf.SetLogger(logr.Discard())
	if err := opts.check(); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(2)
	}
	if err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

func (opts options) check() error {
	switch {
	case opts.Namespaces < 1 || opts.Endpoints <= opts.Namespaces:
		return fmt.Errorf("--endpoints %d must be more than --namespaces %d (at least 1)", opts.Endpoints, opts.Namespaces)
	case opts.Held < 1 || opts.Held >= opts.Deliveries:
		return fmt.Errorf("--held %d must be at least 1 and less than --deliveries %d", opts.Held, opts.Deliveries)
	case opts.FanOut < 1:
		return fmt.Errorf("--fan-out %d must be at least 1", opts.FanOut)
	case opts.heldMaxInFlight < 1 || opts.probeRate < 1:
		return fmt.Errorf("--held-max-in-flight %d and --probe-rate %d must be at least 1", opts.heldMaxInFlight, opts.probeRate)
	}
	return nil
}

func run(opts options) error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	dir, err := os.MkdirTemp("", "hookrelay-scale-dispatcher-")
	if err != nil {
		return err
	}
	if opts.keep {
		fmt.Fprintf(os.Stderr, "scale: run folder %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	f := fleet{endpoints: opts.Endpoints, namespaces: opts.Namespaces}
	dataDir := filepath.Join(dir, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	if err := prepareStore(ctx, opts.shape, f, opts.prefilled, dataDir); err != nil {
		return err
	}
	ranks, err := heldOrder(ctx, opts.Store, dataDir, f.held())
	if err != nil {
		return err
	}
	if len(ranks) != opts.Held {
		return fmt.Errorf("the store holds %d held deliveries for %s, not %d", len(ranks), f.held().id(), opts.Held)
	}

	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "scale: stopping the control plane: %v\n", err)
		}
	}()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: routesNamespace}}); err != nil {
		return err
	}
	clientset, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		return err
	}
	receiver := newReceiver(f, ranks)
	defer receiver.close()
	publisher, err := newPublisher(clientset, f, receiver.url(), int32(opts.heldMaxInFlight))
	if err != nil {
		return err
	}
	if err := publisher.publish(ctx, ""); err != nil {
		return err
	}

	fmt.Printf("hookrelay scale-dispatcher: --store=%s, %d endpoints in %d namespaces, %d stored deliveries (%d finished, %d held for %s, maxInFlight %d)\n\n",
		opts.Store, opts.Endpoints, opts.Namespaces, opts.Deliveries, opts.Deliveries-opts.Held, opts.Held, f.held().id(), opts.heldMaxInFlight)
	dispatcher, err := startDispatcher(ctx, opts, env.Kubeconfig, dataDir)
	if err != nil {
		return err
	}
	defer dispatcher.stop()
	startCPU, err := dispatcher.cpu()
	if err != nil {
		return err
	}
	listening, ready, err := dispatcher.startPhases()
	if err != nil {
		return err
	}
	fmt.Printf("dispatcher runtime settings (%s): %s\n", testenv.DispatcherManifest, strings.Join(dispatcher.runtimeEnv, " "))
	fmt.Printf("time to ready (process start → /readyz 200): %s, %s of CPU; store open and listening after %s, routes loaded and deliveries recovered %s later\n",
		dispatcher.ready.Round(time.Millisecond), startCPU, listening.Round(time.Millisecond), (ready - listening).Round(time.Millisecond))
	fmt.Printf("memory after start: %s\n", dispatcher.memory())

	probe := newProber(dispatcher.publishURL(f.probe().namespace), receiver, opts.probeRate)
	baseline, err := probe.run(ctx, func(stop <-chan struct{}) { waitOrStop(stop, 3*time.Second) })
	if err != nil {
		return err
	}
	fmt.Printf("probe before the release: %s\n", baseline)

	cpuBefore, err := dispatcher.cpu()
	if err != nil {
		return err
	}
	released := time.Now()
	var release releaseResult
	during, err := probe.run(ctx, func(stop <-chan struct{}) {
		if err := publisher.publish(ctx, "scale-reenable"); err != nil {
			release.err = err
			return
		}
		release = receiver.waitHeld(ctx, released, opts.timeout)
	})
	if err != nil {
		return err
	}
	if release.err != nil {
		return fmt.Errorf("%w (dispatcher log: %s)", release.err, dispatcher.log)
	}
	fmt.Printf("release of %d held deliveries: all arrived %s after the re-enable token was written (%.0f deliveries/s); first after %s\n",
		opts.Held, release.last.Sub(released).Round(time.Millisecond), float64(opts.Held)/release.last.Sub(released).Seconds(),
		release.first.Sub(released).Round(time.Millisecond))
	cpuAfter, err := dispatcher.cpu()
	if err != nil {
		return err
	}
	// The probe's events and the status writes are in it too: an upper bound.
	perDelivery := (cpuAfter - cpuBefore) / time.Duration(opts.Held)
	fmt.Printf("dispatcher CPU during the release: %s, %s per released delivery (%.0f deliveries/s per core if CPU-bound)\n",
		cpuAfter-cpuBefore, perDelivery, float64(time.Second)/float64(perDelivery))
	fmt.Printf("release order (unordered endpoint, maxInFlight %d: handed out oldest first, up to maxInFlight attempts at once): %s\n",
		opts.heldMaxInFlight, release.order)
	fmt.Printf("probe during the release (%s, another endpoint's new events, %d/s): %s\n", f.probe().id(), opts.probeRate, during)
	fmt.Printf("memory after the release: %s\n", dispatcher.memory())
	return nil
}

// waitOrStop waits for d or until stop closes.
func waitOrStop(stop <-chan struct{}, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-stop:
	}
}
