// Command scale measures the control plane at size for `make scale`: it
// starts the API server, the manager and dispatcher binaries, creates
// --endpoints WebhookEndpoints and as many WebhookSubscriptions through the
// API in parallel, and prints how long they take to become Ready, the bytes
// written to the dispatcher configuration, the RSS of both binaries, how
// long an edit takes to go live in the dispatcher, and what a manager
// restart costs. It prints figures; it asserts nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/testenv"
	webhookv1alpha1 "github.com/hookrelay/hookrelay/internal/webhook/v1alpha1"
	"github.com/hookrelay/hookrelay/test/scale/proc"
)

const routesNamespace = "hookrelay-system"

// options are the command's flags.
type options struct {
	endpoints, namespaces, workers, edits int
	managerBinary, dispatcherBinary       string
	managerArgs                           string
	quiet                                 time.Duration
	keepLogs                              bool
}

func main() {
	var opts options
	flag.IntVar(&opts.endpoints, "endpoints", 10000, "WebhookEndpoints to create, each with one WebhookSubscription.")
	flag.IntVar(&opts.namespaces, "namespaces", 10, "Namespaces the endpoints are spread over.")
	flag.IntVar(&opts.workers, "workers", 32, "Parallel creates.")
	flag.IntVar(&opts.edits, "edits", 20, "Edits whose apply→live latency is measured.")
	flag.StringVar(&opts.managerBinary, "manager", "bin/manager", "The manager binary.")
	flag.StringVar(&opts.dispatcherBinary, "dispatcher", "bin/dispatcher", "The dispatcher binary.")
	flag.StringVar(&opts.managerArgs, "manager-args", "", "Extra manager flags, space-separated (e.g. --pprof-bind-address=127.0.0.1:6065).")
	flag.DurationVar(&opts.quiet, "quiet", 5*time.Second, "After a restart, how long no shard may be written for the manager to count as steady.")
	flag.BoolVar(&opts.keepLogs, "keep-logs", false, "Keep the folder with the manager's and dispatcher's logs.")
	flag.Parse()
	logf.SetLogger(logr.Discard())
	if err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

func run(opts options) error {
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "scale: stopping the control plane: %v\n", err)
		}
	}()
	// Interrupted, it still stops the processes and the control plane.
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	dir, err := os.MkdirTemp("", "hookrelay-scale-")
	if err != nil {
		return err
	}
	if opts.keepLogs {
		fmt.Fprintf(os.Stderr, "scale: logs in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	// A client that is not the bottleneck: the creates measure the
	// control plane, not client-side rate limiting.
	config := rest.CopyConfig(env.Config)
	config.QPS, config.Burst = 2000, 4000
	c, err := client.New(config, client.Options{Scheme: env.Scheme})
	if err != nil {
		return err
	}
	namespaces := []string{routesNamespace}
	for i := range opts.namespaces {
		namespaces = append(namespaces, fmt.Sprintf("scale-%02d", i))
	}
	for _, name := range namespaces {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			return err
		}
	}
	if err := installManagerWebhook(ctx, c); err != nil {
		return err
	}
	manager := newManagerProcess(opts, env.Kubeconfig, dir)
	if err := manager.start(); err != nil {
		return err
	}
	defer manager.stop()
	if err := webhookv1alpha1.WaitForAdmission(ctx, c, 60*time.Second); err != nil {
		return fmt.Errorf("%w (see %s)", err, manager.log)
	}
	dispatcher, err := startDispatcher(opts.dispatcherBinary, env.Kubeconfig, filepath.Join(dir, "dispatcher"))
	if err != nil {
		return err
	}
	defer dispatcher.stop()

	shards, err := watchShards(ctx, env.Config)
	if err != nil {
		return err
	}
	endpoints, err := watchEndpoints(ctx, env.Config, env.Scheme)
	if err != nil {
		return err
	}
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer receiver.Close()

	fmt.Printf("hookrelay scale: %d endpoints and %d subscriptions in %d namespaces, %d parallel creates\n\n",
		opts.endpoints, opts.endpoints, opts.namespaces, opts.workers)
	fleet := fleet{endpoints: opts.endpoints, namespaces: opts.namespaces}
	started := time.Now()
	if err := fleet.create(ctx, c, opts.workers, receiver.URL); err != nil {
		return err
	}
	lastCreate := time.Now()
	fmt.Printf("created %d objects in %s (%.0f/s)\n", 2*opts.endpoints, lastCreate.Sub(started).Round(time.Millisecond),
		float64(2*opts.endpoints)/lastCreate.Sub(started).Seconds())
	ready, err := endpoints.waitAll(ctx, opts.endpoints, 30*time.Minute)
	if err != nil {
		return fmt.Errorf("%w (see %s)", err, manager.log)
	}
	fmt.Printf("all endpoints Ready %s after the last create (%.0f endpoints/s from the first create)\n",
		ready.Sub(lastCreate).Round(time.Millisecond), float64(opts.endpoints)/ready.Sub(started).Seconds())
	written := shards.snapshot()
	fmt.Printf("written to routes ConfigMaps and keys Secrets until then: %s in %d writes\n", mebibytes(written.bytes), written.writes)
	for _, p := range []*process{manager.process, dispatcher.process} {
		fmt.Printf("%s RSS: %s\n", p.name, p.memory())
	}

	latencies, err := measureEdits(ctx, c, fleet, dispatcher.address, opts.edits)
	if err != nil {
		return err
	}
	fmt.Printf("apply→live, %d edits: p50 %s, p99 %s (max %s)\n", len(latencies),
		percentile(latencies, 50).Round(time.Millisecond), percentile(latencies, 99).Round(time.Millisecond),
		percentile(latencies, 100).Round(time.Millisecond))

	restart, err := measureRestart(ctx, env.Config, manager, shards, endpoints, opts)
	if err != nil {
		return err
	}
	fmt.Printf("manager restart: steady %s after the new process started (%s)\n", restart.steady.Round(time.Millisecond), steadyDefinition(opts.quiet))
	fmt.Printf("manager restart: %d routes/keys objects rewritten (resourceVersion changed, created or deleted) of %d; %s written\n",
		restart.rewritten, restart.objects, mebibytes(restart.bytes))
	fmt.Printf("manager RSS after the restart: %s\n", manager.process.memory())
	return nil
}

// installManagerWebhook lets the manager serve admission, as in a cluster:
// the test environment's own webhook goes, and config/webhook's comes, for
// the manager to point at itself.
func installManagerWebhook(ctx context.Context, c client.Client) error {
	if err := c.Delete(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: webhookv1alpha1.ConfigurationName + "-envtest"}}); err != nil {
		return fmt.Errorf("removing the test environment's webhook: %w", err)
	}
	path := filepath.Join(testenv.RepoRoot(), "config", "webhook", "manifests.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	configuration := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(data, configuration); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return c.Create(ctx, configuration)
}

func steadyDefinition(quiet time.Duration) string {
	return fmt.Sprintf("steady: every controller's work queue empty, each endpoint and subscription reconciled since the start, "+
		"all endpoints Ready, and no routes/keys object written for %s after", quiet)
}

// fleet names the objects the run creates.
type fleet struct{ endpoints, namespaces int }

func (f fleet) key(i int) (namespace, name string) {
	return fmt.Sprintf("scale-%02d", i%f.namespaces), fmt.Sprintf("ep-%05d", i)
}

// create makes each endpoint and its subscription, workers at a time.
func (f fleet) create(ctx context.Context, c client.Client, workers int, url string) error {
	var next atomic.Int64
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < f.endpoints; i = int(next.Add(1)) - 1 {
				namespace, name := f.key(i)
				subscription := &hookrelayv1alpha1.WebhookSubscription{
					ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
					Spec: hookrelayv1alpha1.WebhookSubscriptionSpec{
						EndpointRef: hookrelayv1alpha1.EndpointReference{Name: name}, EventTypes: []string{"scale.created"}},
				}
				endpoint := &hookrelayv1alpha1.WebhookEndpoint{
					ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
					Spec:       hookrelayv1alpha1.WebhookEndpointSpec{URL: url + "/" + name},
				}
				for _, obj := range []client.Object{subscription, endpoint} {
					if err := c.Create(ctx, obj); err != nil {
						errs <- fmt.Errorf("creating %s/%s: %w", namespace, name, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// readyEndpoints follows every endpoint through one watch (an informer) and
// keeps the set of those Ready, so that counting them, however often, asks
// nothing of the API server the controllers are waiting on (paged Lists of
// 10,000 endpoints every few seconds were a good part of its work) and
// costs little here.
type readyEndpoints struct {
	mu    sync.Mutex
	ready map[types.UID]bool
}

func watchEndpoints(ctx context.Context, config *rest.Config, scheme *runtime.Scheme) (*readyEndpoints, error) {
	endpoints, err := cache.New(config, cache.Options{Scheme: scheme, DefaultTransform: cache.TransformStripManagedFields()})
	if err != nil {
		return nil, err
	}
	informer, err := endpoints.GetInformer(ctx, &hookrelayv1alpha1.WebhookEndpoint{})
	if err != nil {
		return nil, err
	}
	r := &readyEndpoints{ready: map[types.UID]bool{}}
	if _, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    r.observe,
		UpdateFunc: func(_, obj any) { r.observe(obj) },
		DeleteFunc: func(obj any) {
			if tombstone, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = tombstone.Obj
			}
			if endpoint, ok := obj.(*hookrelayv1alpha1.WebhookEndpoint); ok {
				r.mu.Lock()
				delete(r.ready, endpoint.UID)
				r.mu.Unlock()
			}
		},
	}); err != nil {
		return nil, err
	}
	go func() {
		if err := endpoints.Start(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "scale: watching the endpoints: %v\n", err)
		}
	}()
	if !endpoints.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("the endpoints' watch did not sync")
	}
	return r, nil
}

// observe notes whether an endpoint is Ready for its current generation.
func (r *readyEndpoints) observe(obj any) {
	endpoint, ok := obj.(*hookrelayv1alpha1.WebhookEndpoint)
	if !ok {
		return
	}
	condition := meta.FindStatusCondition(endpoint.Status.Conditions, hookrelayv1alpha1.ConditionReady)
	ready := condition != nil && condition.Status == metav1.ConditionTrue && condition.ObservedGeneration == endpoint.Generation
	r.mu.Lock()
	defer r.mu.Unlock()
	if ready {
		r.ready[endpoint.UID] = true
	} else {
		delete(r.ready, endpoint.UID)
	}
}

// count is the number of endpoints Ready for their current generation.
func (r *readyEndpoints) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ready)
}

// waitAll returns when want endpoints were seen Ready.
func (r *readyEndpoints) waitAll(ctx context.Context, want int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	lastReport := time.Now()
	for {
		ready := r.count()
		now := time.Now()
		if ready >= want {
			return now, nil
		}
		if now.After(deadline) {
			return time.Time{}, fmt.Errorf("%d of %d endpoints Ready after %s", ready, want, timeout)
		}
		if now.Sub(lastReport) >= 10*time.Second {
			fmt.Fprintf(os.Stderr, "scale: %d of %d endpoints Ready\n", ready, want)
			lastReport = now
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freeAddress returns a loopback address with a port free at the time of the call.
func freeAddress() (string, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer listener.Close()
	return listener.Addr().String(), nil
}

func mebibytes(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, (len(sorted)*p)/100)]
}

// process is a running binary.
type process struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
}

func startProcess(name, binary, logFile string, env []string, args ...string) (*process, error) {
	log, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("starting %s: %w", binary, err)
	}
	p := &process{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(p.exited)
	}()
	return p, nil
}

// stop sends SIGTERM and waits for the process to exit.
func (p *process) stop() {
	if err := proc.Stop(p.cmd.Process, p.exited); err != nil {
		fmt.Fprintf(os.Stderr, "scale: stopping the %s: %v\n", p.name, err)
	}
}

// memory reads the resident set size, now and at its peak, from /proc.
func (p *process) memory() string {
	fields, err := proc.Status(p.cmd.Process.Pid)
	if err != nil {
		return fmt.Sprintf("unknown (%v)", err)
	}
	return fmt.Sprintf("%s (peak %s)", fields["VmRSS"], fields["VmHWM"])
}
