// Command manager runs the Hookrelay controllers: signing Secrets for
// WebhookEndpoints, subscription checks, and the dispatcher configuration.
package main

import (
	"flag"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/controllers"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

func run() error {
	opts := controllers.Options{}
	var metricsAddr, probeAddr string
	var leaderElect bool
	flag.StringVar(&opts.Namespace, "routes-namespace", envOr("POD_NAMESPACE", "hookrelay-system"),
		"Namespace of the dispatcher configuration (routes ConfigMaps, keys Secrets); defaults to $POD_NAMESPACE.")
	flag.IntVar(&opts.ShardSize, "routes-shard-size", controllers.DefaultShardSize,
		"Most bytes one routes ConfigMap or keys Secret may hold.")
	flag.BoolVar(&opts.AllowInsecure, "allow-insecure-endpoints", false,
		"Publish endpoints with plain http:// URLs. For development only.")
	flag.DurationVar(&opts.RotationGrace, "rotation-grace-period", controllers.DefaultRotationGrace,
		"How long a rotated-out signing key keeps signing deliveries.")
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint; 0 turns it off.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader, so that only one replica reconciles at a time.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")
	if opts.AllowInsecure {
		log.Info("WARNING: --allow-insecure-endpoints publishes plain http:// endpoints; use it for development only")
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := hookrelayv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	config, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	mgr, err := ctrl.NewManager(config, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         controllers.CacheOptions(opts.Namespace),
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              "hookrelay-manager.hookrelay.dev",
		LeaderElectionNamespace:       opts.Namespace,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if err := controllers.Setup(mgr, opts); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.Info("starting the manager", "routesNamespace", opts.Namespace, "allowInsecureEndpoints", opts.AllowInsecure)
	return mgr.Start(ctrl.SetupSignalHandler())
}

func envOr(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}
