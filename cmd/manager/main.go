// Command manager runs the Hookrelay controllers (signing Secrets for
// WebhookEndpoints, subscription checks, the dispatcher configuration) and
// the validating admission webhook of the Hookrelay resources.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/hookrelay/hookrelay/controllers"
	hookrelayscheme "github.com/hookrelay/hookrelay/internal/scheme"
	"github.com/hookrelay/hookrelay/internal/servingcert"
	webhookv1alpha1 "github.com/hookrelay/hookrelay/internal/webhook/v1alpha1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

func run() error {
	opts := controllers.Options{}
	var metricsAddr, metricsCertDir, probeAddr string
	var metricsSecure bool
	var leaderElect bool
	var pprofAddr string
	var clientLimits limits
	var webhookAddr, webhookCertDir, webhookSecret, webhookService, webhookURL string
	var dispatcherCert dispatcherCertOptions
	flag.StringVar(&opts.Namespace, "routes-namespace", envOr("POD_NAMESPACE", "hookrelay-system"),
		"Namespace of the dispatcher configuration (routes ConfigMaps, keys Secrets); defaults to $POD_NAMESPACE.")
	flag.IntVar(&opts.ShardSize, "routes-shard-size", controllers.DefaultShardSize,
		"Most bytes one routes ConfigMap or keys Secret may hold.")
	flag.BoolVar(&opts.AllowInsecure, "allow-insecure-endpoints", false,
		"Publish endpoints with plain http:// URLs. For development only.")
	flag.DurationVar(&opts.RotationGrace, "rotation-grace-period", controllers.DefaultRotationGrace,
		"How long a rotated-out signing key keeps signing deliveries.")
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "Address of the Prometheus metrics endpoint; 0 turns it off.")
	flag.BoolVar(&metricsSecure, "metrics-secure", true,
		"Serve the metrics over HTTPS, to bearer tokens allowed to get the non-resource URL /metrics (TokenReview and SubjectAccessReview); "+
			"false serves them over plain HTTP to anyone.")
	flag.StringVar(&metricsCertDir, "metrics-cert-dir", "",
		"Folder with tls.crt and tls.key to serve the metrics with (e.g. from cert-manager); empty: a self-signed certificate made at start.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader, so that only one replica reconciles at a time.")
	flag.StringVar(&webhookAddr, "webhook-bind-address", ":9443", "Address of the validating admission webhook (HTTPS).")
	flag.StringVar(&webhookCertDir, "webhook-cert-dir", "",
		"Folder with tls.crt and tls.key to serve the webhook with (e.g. from cert-manager; the caBundle is then yours to set). "+
			"Empty: the manager makes its own CA and certificate, keeps them in the Secret --webhook-cert-secret and sets the caBundle.")
	flag.StringVar(&webhookSecret, "webhook-cert-secret", "hookrelay-webhook-cert", "Secret in the operator namespace that holds the self-made webhook certificate.")
	flag.StringVar(&webhookService, "webhook-service-name", "hookrelay-webhook",
		"Service in the operator namespace through which the API server calls the webhook (names in the certificate).")
	flag.StringVar(&webhookURL, "webhook-url", "",
		"Base URL (https://HOST:PORT) at which the API server calls the webhook, instead of the Service: for a manager running outside the cluster, as `make dev` runs it.")
	dispatcherCert.bind(flag.CommandLine)
	flag.StringVar(&pprofAddr, "pprof-bind-address", "", "Address of the pprof profiles (/debug/pprof/); empty turns them off.")
	clientLimits.bind(flag.CommandLine)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")
	if opts.AllowInsecure {
		log.Info("WARNING: --allow-insecure-endpoints publishes plain http:// endpoints; use it for development only")
	}

	scheme, err := hookrelayscheme.New()
	if err != nil {
		return err
	}
	config, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	// The API server gzips large answers for clients that accept it: each
	// routes shard written comes back at up to --routes-shard-size, and the
	// first Lists hold every endpoint, subscription and signing Secret.
	// Within a cluster, compressing them costs the API server more than the
	// bytes saved are worth.
	config.DisableCompression = true
	webhookHost, webhookPortText, err := net.SplitHostPort(webhookAddr)
	if err != nil {
		return fmt.Errorf("--webhook-bind-address %q: %w", webhookAddr, err)
	}
	webhookPort, err := strconv.Atoi(webhookPortText)
	if err != nil {
		return fmt.Errorf("--webhook-bind-address %q: port: %w", webhookAddr, err)
	}
	webhookOptions := webhook.Options{Host: webhookHost, Port: webhookPort, CertDir: webhookCertDir}
	var provisioner *servingcert.Provisioner
	if webhookCertDir == "" {
		// The API server's own client: the manager's cache holds no
		// Secrets of this kind and no webhook configurations.
		direct, err := client.New(config, client.Options{Scheme: scheme})
		if err != nil {
			return err
		}
		provisioner, err = servingcert.New(direct, servingcert.Options{
			Namespace: opts.Namespace, SecretName: webhookSecret, Name: "hookrelay-webhook", ConfigurationName: webhookv1alpha1.ConfigurationName,
			DNSNames: serviceNames(webhookService, opts.Namespace),
			URL:      webhookURL,
		})
		if err != nil {
			return err
		}
		// Before the manager starts, so the webhook serves from its first
		// request.
		if err := provisioner.Ensure(context.Background()); err != nil {
			return fmt.Errorf("provisioning the webhook certificate: %w", err)
		}
		webhookOptions.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.GetCertificate = provisioner.GetCertificate }}
	}
	if metricsCertDir != "" {
		// controller-runtime falls back to a self-signed certificate when
		// the files are missing: a mistyped folder must not go unnoticed.
		for _, name := range []string{"tls.crt", "tls.key"} {
			if _, err := os.Stat(filepath.Join(metricsCertDir, name)); err != nil {
				return fmt.Errorf("--metrics-cert-dir: %w", err)
			}
		}
	}
	options := ctrl.Options{
		Scheme:                        scheme,
		Cache:                         controllers.CacheOptions(opts.Namespace),
		Metrics:                       controllers.MetricsServerOptions(metricsAddr, metricsSecure, metricsCertDir),
		HealthProbeBindAddress:        probeAddr,
		WebhookServer:                 webhook.NewServer(webhookOptions),
		LeaderElection:                leaderElect,
		LeaderElectionID:              "hookrelay-manager.hookrelay.dev",
		LeaderElectionNamespace:       opts.Namespace,
		LeaderElectionReleaseOnCancel: true,
		PprofBindAddress:              pprofAddr,
	}
	if err := clientLimits.apply(&options); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(config, options)
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if err := controllers.Setup(mgr, opts); err != nil {
		return err
	}
	webhookv1alpha1.Register(mgr.GetWebhookServer(), scheme)
	if provisioner != nil {
		if err := mgr.Add(provisioner); err != nil {
			return err
		}
	}
	// Not before the start: a dispatcher Secret that cert-manager has not
	// written yet must not keep the manager from starting.
	dispatcherProvisioner, err := dispatcherCert.provisioner(config, scheme, opts.Namespace)
	if err != nil {
		return err
	}
	if err := mgr.Add(dispatcherProvisioner); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	// Ready once the webhook serves, so the Service sends admission
	// requests only to replicas that answer them.
	if err := mgr.AddReadyzCheck("readyz", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return err
	}
	log.Info("starting the manager", "routesNamespace", opts.Namespace, "allowInsecureEndpoints", opts.AllowInsecure)
	return mgr.Start(ctrl.SetupSignalHandler())
}

// serviceNames are the DNS names of a Service in a cluster, which its
// serving certificate holds.
func serviceNames(service, namespace string) []string {
	return []string{service + "." + namespace + ".svc", service + "." + namespace + ".svc.cluster.local"}
}

func envOr(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}
