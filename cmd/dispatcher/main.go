// Command dispatcher accepts events from the platform's services, stores them
// durably, and delivers them signed to the endpoints that subscribe, with
// retries, auto-disable and status written back to the WebhookEndpoints.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/hookrelay/hookrelay/dispatcher/delivery"
	"github.com/hookrelay/hookrelay/dispatcher/ingest"
	"github.com/hookrelay/hookrelay/dispatcher/signing"
	"github.com/hookrelay/hookrelay/dispatcher/status"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
	hookrelayscheme "github.com/hookrelay/hookrelay/internal/scheme"
)

type options struct {
	namespace          string
	listen             string
	listenFile         string
	dataDir            string
	store              string
	replica            string
	postgresDSNFile    string
	headerPrefix       string
	maxBody            int64
	retention          time.Duration
	maxRetryAfter      time.Duration
	statusInterval     time.Duration
	drainTimeout       time.Duration
	profiling          bool
	profilingAddr      string
	readHeaderTimeout  time.Duration
	readTimeout        time.Duration
	writeTimeout       time.Duration
	idleTimeout        time.Duration
	authFailureRate    float64
	authFailureBurst   int
	tlsCertFile        string
	tlsKeyFile         string
	egressAllow        string
	insecureNoAuth     bool
	tokenAudience      string
	authCacheTTL       time.Duration
	poisonAfter        int
	metricsPerEndpoint bool
}

func main() {
	var opts options
	flag.StringVar(&opts.namespace, "namespace", envOr("POD_NAMESPACE", "hookrelay-system"),
		"Namespace of the routes ConfigMaps and keys Secrets the controllers publish; defaults to $POD_NAMESPACE.")
	flag.StringVar(&opts.listen, "listen-address", ":8080", "Address of the ingest API, /healthz, /readyz, /openapi.json and /metrics.")
	flag.StringVar(&opts.listenFile, "listen-address-file", "",
		"Write the bound address of --listen-address (host:port) to this file once listening: with port 0, tells a test or `make dev` the port chosen.")
	flag.StringVar(&opts.dataDir, "data-dir", "/var/lib/hookrelay",
		"Folder of the embedded store (pebble/ with --store=pebble, hookrelay.db with --store=bolt) and of the in-flight journal that --poison-after counts from "+
			"(with --store=postgres, the journal is this pod's local state: a crash is counted only if the same pod restarts, for the partitions it takes first).")
	flag.StringVar(&opts.store, "store", storePebble,
		"Where events and deliveries are kept: pebble (embedded, in --data-dir/pebble; one replica), bolt (the former embedded store, --data-dir/hookrelay.db) "+
			"or postgres (DSN from --postgres-dsn-file or $"+postgresDSNEnv+"; any number of replicas, which share the endpoints out between them).")
	flag.StringVar(&opts.replica, "replica-name", "",
		"Name of this replica among those on one PostgreSQL database, unique among them (at most 50 bytes); defaults to $POD_NAME, else the host name and process id.")
	flag.StringVar(&opts.postgresDSNFile, "postgres-dsn-file", "",
		"File holding the PostgreSQL DSN for --store=postgres (a mounted Secret's key; a trailing newline is ignored); without it, $"+postgresDSNEnv+" is read.")
	flag.StringVar(&opts.headerPrefix, "header-prefix", "Hookrelay",
		"Default prefix of the <prefix>-Signature, <prefix>-Webhook-Id and <prefix>-Event-Type headers, for endpoints without spec.signing.headerPrefix. "+
			"Not Webhook (the Standard Webhooks headers).")
	flag.Int64Var(&opts.maxBody, "max-body-bytes", ingest.DefaultMaxBody, "Largest accepted event body, in bytes.")
	flag.DurationVar(&opts.retention, "retention", 7*24*time.Hour, "How long finished deliveries and their attempts are kept.")
	flag.DurationVar(&opts.maxRetryAfter, "max-retry-after", time.Hour, "Longest delay a receiver's Retry-After may ask for.")
	flag.DurationVar(&opts.statusInterval, "status-interval", time.Second, "Shortest time between two status writes to one endpoint.")
	flag.DurationVar(&opts.drainTimeout, "drain-timeout", 30*time.Second, "How long SIGTERM waits for attempts in flight.")
	flag.StringVar(&opts.egressAllow, "egress-allow-cidr", "",
		"Comma-separated CIDRs that deliveries may reach although they are loopback, private, link-local or cloud-metadata addresses (127.0.0.0/8 for local development).")
	flag.BoolVar(&opts.insecureNoAuth, "insecure-no-auth", false,
		"Accept requests without a token or RBAC check. For local development only: anyone who reaches the dispatcher can publish and read.")
	flag.StringVar(&opts.tokenAudience, "token-audience", "",
		"Audiences that bearer tokens may be issued for, comma-separated: a token for any one of them is accepted; empty accepts the API server's audiences. "+
			"Producers' projected tokens for a dedicated audience and the kubectl plugin through the API server's proxy together need both, "+
			"such as hookrelay,https://kubernetes.default.svc.cluster.local.")
	flag.DurationVar(&opts.authCacheTTL, "auth-cache-ttl", 30*time.Second, "How long a TokenReview or SubjectAccessReview answer is reused.")
	flag.StringVar(&opts.tlsCertFile, "tls-cert-file", "",
		"Serve the API over TLS with this certificate (PEM, its chain after it); with --tls-key-file. "+
			"Both files are read again when they change (a renewed Secret): no restart.")
	flag.StringVar(&opts.tlsKeyFile, "tls-key-file", "", "Private key (PEM) of --tls-cert-file.")
	flag.BoolVar(&opts.profiling, "enable-profiling", false, "Serve Go's pprof profiles under /debug/pprof/ on --profiling-address.")
	flag.StringVar(&opts.profilingAddr, "profiling-address", "127.0.0.1:6060", "Loopback address of the pprof listener (--enable-profiling); other addresses are refused.")
	flag.DurationVar(&opts.readHeaderTimeout, "read-header-timeout", 10*time.Second, "Longest time a client may take to send a request's headers.")
	flag.DurationVar(&opts.readTimeout, "read-timeout", 30*time.Second, "Longest time a client may take to send a whole request, body included.")
	flag.DurationVar(&opts.writeTimeout, "write-timeout", 60*time.Second, "Longest time from the end of a request's headers to the end of its answer.")
	flag.DurationVar(&opts.idleTimeout, "idle-timeout", 2*time.Minute, "How long an idle keep-alive connection stays open.")
	flag.Float64Var(&opts.authFailureRate, "auth-failure-rate", float64(ingest.DefaultFailureRate),
		"Failed authentications (no token, or a refused one) allowed per second from one client address; past --auth-failure-burst it gets 429.")
	flag.IntVar(&opts.authFailureBurst, "auth-failure-burst", ingest.DefaultFailureBurst, "Failed authentications one client address may make at once.")
	flag.IntVar(&opts.poisonAfter, "poison-after", 3,
		"Fail a delivery as Poisoned once the process has died this many times while one of its attempts was in flight (0: never).")
	flag.BoolVar(&opts.metricsPerEndpoint, "metrics-per-endpoint", false,
		"Add the hookrelay_endpoint_* gauges, one series per endpoint (queue depth, oldest pending age, held, disabled); off, the metrics are by namespace only.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, opts options) error {
	log := ctrl.Log.WithName("dispatcher")
	if err := opts.check(); err != nil {
		return err
	}
	var profilingListener net.Listener
	if opts.profiling {
		var err error
		if profilingListener, err = listenLoopback(opts.profilingAddr); err != nil {
			return fmt.Errorf("--profiling-address: %w", err)
		}
		defer profilingListener.Close()
	}
	allow, err := delivery.ParseCIDRs(opts.egressAllow)
	if err != nil {
		return fmt.Errorf("--egress-allow-cidr: %w", err)
	}
	// The store first: a damaged file or an unreachable database is the
	// first thing to report. --data-dir holds the journal with either store.
	if err := os.MkdirAll(opts.dataDir, 0o700); err != nil {
		return err
	}
	db, err := opts.openStore(ctx, log, os.Getenv)
	if err != nil {
		return err
	}
	defer func() {
		if err := db.Close(); err != nil {
			log.Error(err, "closing the store")
		}
	}()
	journal, err := delivery.OpenJournal(filepath.Join(opts.dataDir, "inflight.journal"))
	if err != nil {
		return err
	}
	defer journal.Close()
	restConfig, scheme, kube, clientset, err := kubeClients()
	if err != nil {
		return err
	}

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := delivery.NewMetrics(registry)
	metrics.PerEndpoint = opts.metricsPerEndpoint
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: clientset.EventsV1()})
	broadcaster.StartRecordingToSink(ctx.Done())
	defer broadcaster.Shutdown()
	reporter := &status.Reporter{
		Client: kube, Recorder: broadcaster.NewRecorder(scheme, "hookrelay-dispatcher"),
		Log: log.WithName("status"), Interval: opts.statusInterval, Clock: clock.RealClock{},
	}
	// On PostgreSQL, the lease holder tells the engine which partitions it
	// owns, and the engine wakes the other replicas through it.
	var leases *store.Leases
	var waker delivery.Waker
	handler := &owner{log: log}
	if shared, ok := db.(*store.Postgres); ok {
		if leases, err = shared.Leases(store.LeaseOptions{Replica: opts.replicaName(), Handler: handler, Log: log.WithName("leases")}); err != nil {
			return fmt.Errorf("--replica-name: %w", err)
		}
		waker = leases
	}
	engine, err := delivery.New(ctx, delivery.Options{
		Store:         db,
		Waker:         waker,
		RecordWriters: recordWriters(leases),
		Attempt:       &delivery.Attempter{Client: delivery.NewHTTPClient(delivery.EgressPolicy{Allow: allow}.Transport()), Signer: signing.Signer{Prefix: opts.headerPrefix}},
		Status:        reporter,
		Metrics:       metrics,
		Log:           log.WithName("delivery"),
		MaxRetryAfter: opts.maxRetryAfter,
		Journal:       journal,
		PoisonAfter:   opts.poisonAfter,
		Clock:         clock.RealClock{},
	})
	if err != nil {
		return err
	}
	handler.Engine = engine

	var ready atomic.Bool
	readiness := readiness(&ready, leases)
	mux := http.NewServeMux()
	api := &ingest.Handler{Publisher: engine, Store: db, MaxBody: opts.maxBody, Log: log.WithName("api"), Ready: readiness,
		Refused: ingest.NewRefusedCounter(registry)}
	registerProcessMetrics(registry, readiness, opts.dataDir, opts.store != storePostgres)
	metricsAuthz := restConfig
	var warnings []warning
	if opts.insecureNoAuth {
		warnings = append(warnings, warning{"--insecure-no-auth",
			"anyone who reaches the dispatcher can publish events, read the delivery log and its metrics; use it for local development only"})
		metricsAuthz = nil
	} else {
		api.Auth = &ingest.KubeAuth{Client: clientset, TTL: opts.authCacheTTL, FailureRate: rate.Limit(opts.authFailureRate), FailureBurst: opts.authFailureBurst}
		api.Auth.Audiences = opts.audiences()
	}
	api.Register(mux)
	if opts.profiling {
		warnings = append(warnings, warning{"--enable-profiling",
			"Go's pprof profiles are served on " + profilingListener.Addr().String() + "; they reveal memory contents and cost CPU"})
		profilingServer := &http.Server{Handler: profilingMux(), ReadHeaderTimeout: opts.readHeaderTimeout, IdleTimeout: opts.idleTimeout}
		go func() {
			if err := profilingServer.Serve(profilingListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error(err, "serving profiles")
			}
		}()
		defer profilingServer.Close()
	}
	go warnEvery(ctx, log, time.Minute, warnings)
	serveMetrics, err := metricsHandler(registry, log.WithName("metrics"), metricsAuthz)
	if err != nil {
		return err
	}
	mux.Handle("GET /metrics", serveMetrics)
	server, serveErr, err := startServer(ctx, opts, mux, log)
	if err != nil {
		return err
	}

	watcher := &routes.Watcher{
		Clientset: clientset, Namespace: opts.namespace, Log: log.WithName("config"),
		Apply: func(ctx context.Context, table *routes.Table) error { return engine.SetTable(ctx, table) },
	}
	if err := watcher.Start(ctx); err != nil {
		return err
	}
	// The lease holder outlives ctx: the partitions stay this replica's
	// while its attempts drain, and go to the others after.
	leasesCtx, stopLeases := context.WithCancel(context.Background())
	defer stopLeases()
	leasesDone, err := startDelivering(ctx, leasesCtx, engine, leases, log)
	if err != nil {
		return err
	}
	ready.Store(true)

	// The reporter outlives ctx: it writes what the drained attempts change.
	reporterCtx, stopReporter := context.WithCancel(context.Background())
	defer stopReporter()
	reporterDone := make(chan struct{})
	go func() { reporter.Run(reporterCtx); close(reporterDone) }()
	go sweep(ctx, db, opts.retention, clock.RealClock{}, log)

	select {
	case err := <-serveErr:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("draining")
	ready.Store(false)
	// The ingest server stops accepting and the engine stops starting
	// attempts at once; each then drains under its own deadline, so a slow
	// client holding a request open cannot use up the attempts' drain time
	// (an attempt abandoned at exit is delivered again after the restart).
	serverCtx, cancelServer := context.WithTimeout(context.Background(), opts.drainTimeout)
	defer cancelServer()
	serverStopped := make(chan error, 1)
	go func() { serverStopped <- server.Shutdown(serverCtx) }()
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), opts.drainTimeout)
	defer cancelDrain()
	if err := engine.Stop(drainCtx); err != nil {
		log.Error(err, "draining deliveries")
	}
	stopLeases()
	<-leasesDone
	if err := <-serverStopped; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error(err, "stopping the ingest server; closing the connections left")
		_ = server.Close()
	}
	stopReporter()
	<-reporterDone
	log.Info("stopped")
	return nil
}

// watchCertificate serves the certificate in certFile and keyFile, read
// again whenever either changes (a renewed Secret, whose mounted files the
// kubelet swaps), so a renewal needs no restart. A pair that does not load
// leaves the previous one in use, and is logged.
func watchCertificate(ctx context.Context, certFile, keyFile string, log logr.Logger) (*tls.Config, error) {
	watcher, err := certwatcher.New(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert-file %s, --tls-key-file %s: %w", certFile, keyFile, err)
	}
	watcher.RegisterCallback(func(certificate tls.Certificate) {
		if leaf := certificate.Leaf; leaf != nil {
			log.Info("serving a new TLS certificate", "serial", leaf.SerialNumber.Text(16), "notAfter", leaf.NotAfter, "issuer", leaf.Issuer.String())
		}
	})
	go func() {
		if err := watcher.Start(ctx); err != nil {
			log.Error(err, "watching the TLS certificate files; the certificate in use is no longer reloaded", "certFile", certFile)
		}
	}()
	return &tls.Config{GetCertificate: watcher.GetCertificate, MinVersion: tls.VersionTLS12}, nil
}

// check refuses flag values the dispatcher cannot run with.
func (opts options) check() error {
	// Endpoints without spec.signing.headerPrefix sign with both schemes
	// under this prefix, so it must not collide with Standard Webhooks.
	if err := signing.CheckPrefix(opts.headerPrefix, true); err != nil {
		return fmt.Errorf("--header-prefix: %w", err)
	}
	if (opts.tlsCertFile == "") != (opts.tlsKeyFile == "") {
		return fmt.Errorf("--tls-cert-file and --tls-key-file go together")
	}
	switch opts.store {
	case storePebble, storeBolt:
		if opts.postgresDSNFile != "" {
			return fmt.Errorf("--postgres-dsn-file goes with --store=%s, not --store=%s", storePostgres, opts.store)
		}
	case storePostgres:
	default:
		return fmt.Errorf("--store %q is not a store: choose %s (embedded, the default), %s (the former embedded store) or %s",
			opts.store, storePebble, storeBolt, storePostgres)
	}
	if opts.poisonAfter < 0 {
		return fmt.Errorf("--poison-after %d must be 0 (never) or more", opts.poisonAfter)
	}
	for name, value := range map[string]time.Duration{"--read-header-timeout": opts.readHeaderTimeout, "--read-timeout": opts.readTimeout,
		"--write-timeout": opts.writeTimeout, "--idle-timeout": opts.idleTimeout, "--drain-timeout": opts.drainTimeout} {
		if value <= 0 {
			return fmt.Errorf("%s %s must be positive: without it a slow client holds its connection for ever", name, value)
		}
	}
	if slices.Contains(opts.audiences(), "") {
		return fmt.Errorf("--token-audience %q has an empty audience: list audiences separated by single commas", opts.tokenAudience)
	}
	if opts.authFailureRate <= 0 || opts.authFailureBurst < 1 {
		return fmt.Errorf("--auth-failure-rate %g and --auth-failure-burst %d must be positive", opts.authFailureRate, opts.authFailureBurst)
	}
	return nil
}

// audiences are --token-audience's, nil when it is empty.
func (opts options) audiences() []string {
	if opts.tokenAudience == "" {
		return nil
	}
	return strings.Split(opts.tokenAudience, ",")
}

// The stores --store chooses from, and where the PostgreSQL DSN is read
// when no --postgres-dsn-file is given.
const (
	storePebble    = "pebble"
	storeBolt      = "bolt"
	storePostgres  = "postgres"
	postgresDSNEnv = "HOOKRELAY_POSTGRES_DSN"
)

// openStore opens the store --store names; getenv reads the environment.
// The pebble store first takes in a bbolt file left by an earlier version.
func (opts options) openStore(ctx context.Context, log logr.Logger, getenv func(string) string) (store.Store, error) {
	switch opts.store {
	case storePebble:
		db, err := store.OpenPebble(filepath.Join(opts.dataDir, "pebble"))
		if err != nil {
			return nil, err // not a nil *Pebble in a non-nil Store
		}
		migrated, err := store.MigrateBolt(filepath.Join(opts.dataDir, "hookrelay.db"), db)
		if err != nil {
			return nil, errors.Join(err, db.Close())
		}
		if migrated != nil {
			log.Info("copied the bbolt store into pebble", "from", migrated.From, "renamedTo", migrated.To, "events", migrated.Events,
				"deliveries", migrated.Deliveries, "attempts", migrated.Attempts, "healths", migrated.Healths)
		}
		return db, nil
	case storeBolt:
		db, err := store.OpenBolt(filepath.Join(opts.dataDir, "hookrelay.db"))
		if err != nil {
			return nil, err
		}
		return db, nil
	}
	dsn, err := opts.postgresDSN(getenv)
	if err != nil {
		return nil, err
	}
	db, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		return nil, err
	}
	return db, nil
}

// postgresDSN reads the DSN from --postgres-dsn-file, or else from the
// environment. A Secret's file often ends in a newline, which is no part
// of the DSN. Errors never quote the DSN: it may hold a password.
func (opts options) postgresDSN(getenv func(string) string) (string, error) {
	if opts.postgresDSNFile != "" {
		data, err := os.ReadFile(opts.postgresDSNFile)
		if err != nil {
			return "", fmt.Errorf("--postgres-dsn-file: %w", err)
		}
		dsn := strings.TrimSpace(string(data))
		if dsn == "" {
			return "", fmt.Errorf("--postgres-dsn-file %s is empty: it should hold the PostgreSQL DSN", opts.postgresDSNFile)
		}
		return dsn, nil
	}
	if dsn := strings.TrimSpace(getenv(postgresDSNEnv)); dsn != "" {
		return dsn, nil
	}
	return "", fmt.Errorf("--store=%s needs a DSN: set --postgres-dsn-file (a mounted Secret's file) or $%s", storePostgres, postgresDSNEnv)
}

// kubeClients connects to the API server in $KUBECONFIG (or in-cluster).
func kubeClients() (*rest.Config, *runtime.Scheme, client.Client, *kubernetes.Clientset, error) {
	restConfig, err := ctrl.GetConfig()
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	scheme, err := hookrelayscheme.New()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	kube, err := client.New(restConfig, client.Options{Scheme: scheme})
	if err != nil {
		return nil, nil, nil, nil, err
	}
	clientset, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return restConfig, scheme, kube, clientset, nil
}

// firstSweepAfter is how long after the start the first sweep runs: a
// sweep walks every stored delivery (seconds of CPU for a million), which a
// start, busy recovering and releasing held deliveries, should not pay for
// too, and which a restart loop would otherwise repeat each time.
const firstSweepAfter = 10 * time.Minute

// sweep deletes finished deliveries older than the retention,
// firstSweepAfter after the start and hourly after that, on clk.
func sweep(ctx context.Context, db store.Store, retention time.Duration, clk clock.WithTicker, log logr.Logger) {
	first := clk.NewTimer(firstSweepAfter)
	defer first.Stop()
	select {
	case <-ctx.Done():
		return
	case <-first.C():
	}
	ticker := clk.NewTicker(time.Hour)
	defer ticker.Stop()
	for {
		swept, err := db.Sweep(ctx, clk.Now().Add(-retention))
		if err != nil {
			log.Error(err, "sweeping finished deliveries")
		} else if swept > 0 {
			log.Info("swept finished deliveries", "count", swept, "retention", retention.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
		}
	}
}

// warning is an unsafe setting the dispatcher runs with.
type warning struct{ flag, risk string }

// warnEvery logs each warning now and then every interval, so that an unsafe
// setting left on in production keeps showing in the logs. logr has no
// warning level: the message starts with WARNING and carries warning=true.
func warnEvery(ctx context.Context, log logr.Logger, interval time.Duration, warnings []warning) {
	if len(warnings) == 0 {
		return
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		for _, w := range warnings {
			log.Info("WARNING: "+w.flag+" is set: "+w.risk, "warning", true, "flag", w.flag)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// writeFileAtomically writes through a temporary file and a rename, so a
// reader polling for path never sees it half written.
func writeFileAtomically(path string, data []byte) error {
	temporary := path + ".tmp"
	if err := os.WriteFile(temporary, data, 0o600); err != nil {
		return err
	}
	return os.Rename(temporary, path)
}

// listenLoopback listens on address only if it is a loopback IP (or
// localhost): profiles must not be reachable from the network.
func listenLoopback(address string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("%q is not host:port: %w", address, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("%q is not a loopback address such as 127.0.0.1:6060; profiles are served on loopback only", address)
	}
	return net.Listen("tcp", address)
}

func profilingMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func envOr(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

// replicaName is --replica-name, or the pod's name, or the host's name and
// the process id (several replicas on one machine, as `make dev` runs).
func (opts options) replicaName() string {
	if opts.replica != "" {
		return opts.replica
	}
	if pod := os.Getenv("POD_NAME"); pod != "" {
		return pod
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "dispatcher"
	}
	if len(host) > 40 {
		host = host[:40]
	}
	return host + "-" + strconv.Itoa(os.Getpid())
}

// recordWriters is how many transactions write attempt records at once:
// PostgreSQL commits concurrent ones together; bbolt would only queue them.
func recordWriters(leases *store.Leases) int {
	if leases == nil {
		return 1
	}
	return 4
}

// readiness says why the dispatcher takes no writes now: it is starting,
// or its lease session (with --store=postgres) is not ticking.
func readiness(ready *atomic.Bool, leases *store.Leases) func() error {
	return func() error {
		switch {
		case !ready.Load():
			return errors.New("the dispatcher is starting: it is still recovering stored deliveries")
		case leases != nil && !leases.Connected():
			return errors.New("the dispatcher cannot reach PostgreSQL: it stores nothing and delivers nothing until it does")
		}
		return nil
	}
}

// startDelivering starts the engine on what the store holds: all of it
// for the only replica (bbolt), or the partitions the lease holder takes,
// run until leasesCtx ends. The channel closes when the leases are given up.
func startDelivering(ctx, leasesCtx context.Context, engine *delivery.Engine, leases *store.Leases, log logr.Logger) (<-chan struct{}, error) {
	done := make(chan struct{})
	if leases == nil {
		pending, held, err := engine.Recover(ctx)
		if err != nil {
			return nil, err
		}
		log.Info("ready", "endpoints", len(engine.Table().Endpoints()), "pendingDeliveries", pending, "heldDeliveries", held)
		close(done)
		return done, nil
	}
	go func() { leases.Run(leasesCtx); close(done) }()
	go resync(ctx, engine, log)
	log.Info("ready; delivering the partitions this replica takes", "endpoints", len(engine.Table().Endpoints()))
	return done, nil
}

// owner lets the lease holder drive the engine's partitions.
type owner struct {
	*delivery.Engine
	log logr.Logger
}

// Acquire implements store.LeaseHandler.
func (o *owner) Acquire(ctx context.Context, partitions []int) error {
	pending, held, err := o.Engine.Acquire(ctx, partitions)
	if err != nil {
		return err
	}
	o.log.Info("delivering partitions", "partitions", len(partitions), "pendingDeliveries", pending, "heldDeliveries", held)
	return nil
}

// resyncInterval is how often a replica re-reads its partitions for
// deliveries whose wake-up was lost.
const resyncInterval = 5 * time.Second

// resync re-reads the owned partitions every resyncInterval until ctx ends.
func resync(ctx context.Context, engine *delivery.Engine, log logr.Logger) {
	ticker := time.NewTicker(resyncInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			if err := engine.Resync(ctx); err != nil && ctx.Err() == nil {
				log.Error(err, "re-reading the owned partitions for deliveries no replica queued")
			}
		}
	}
}

// startServer listens on --listen-address and serves handler there, over TLS
// with a certificate read again when its files change if --tls-cert-file is
// set; the channel gets the error serving ends with.
func startServer(ctx context.Context, opts options, handler http.Handler, log logr.Logger) (*http.Server, <-chan error, error) {
	listener, err := net.Listen("tcp", opts.listen)
	if err != nil {
		return nil, nil, err
	}
	// Every phase of a connection has a deadline, so a slow or hostile
	// client (authenticated or not) cannot hold one open.
	server := &http.Server{Handler: handler, ReadHeaderTimeout: opts.readHeaderTimeout, ReadTimeout: opts.readTimeout,
		WriteTimeout: opts.writeTimeout, IdleTimeout: opts.idleTimeout}
	if opts.tlsCertFile != "" {
		if server.TLSConfig, err = watchCertificate(ctx, opts.tlsCertFile, opts.tlsKeyFile, log); err != nil {
			listener.Close()
			return nil, nil, err
		}
	}
	serveErr := make(chan error, 1)
	go func() {
		if server.TLSConfig != nil {
			// The certificate comes from TLSConfig.GetCertificate.
			serveErr <- server.ServeTLS(listener, "", "")
			return
		}
		serveErr <- server.Serve(listener)
	}()
	log.Info("listening", "address", listener.Addr().String(), "tls", opts.tlsCertFile != "", "namespace", opts.namespace, "headerPrefix", opts.headerPrefix,
		"store", opts.store)
	if opts.listenFile != "" {
		if err := writeFileAtomically(opts.listenFile, []byte(listener.Addr().String())); err != nil {
			server.Close()
			return nil, nil, fmt.Errorf("--listen-address-file: %w", err)
		}
	}
	return server, serveErr, nil
}
