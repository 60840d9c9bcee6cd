// Package testenv starts the real control plane (kube-apiserver and etcd
// built by hack/controlplane.sh) for integration tests, with the Hookrelay
// CRDs and admission webhook installed, and runs kubectl against it.
package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/yaml"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	hookrelayscheme "github.com/hookrelay/hookrelay/internal/scheme"
	webhookv1alpha1 "github.com/hookrelay/hookrelay/internal/webhook/v1alpha1"
)

// Env is a running control plane.
type Env struct {
	Config *rest.Config
	Scheme *k8sruntime.Scheme
	// Client reads straight from the API server, never from a cache.
	Client client.Client
	// Kubeconfig is a file for kubectl, as a cluster admin.
	Kubeconfig string

	environment *envtest.Environment
	// stopWebhook stops the webhook server and waits for it.
	stopWebhook func() error
}

// LabelSkipAdmission on a namespace (value "true") keeps the admission
// webhook away from its objects, in tests only: to store what admission
// refuses, as an object stored before the webhook existed, and see the
// controllers' own checks.
const LabelSkipAdmission = "hookrelay.dev/test-skip-admission"

// RepoRoot is the repository's top folder.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Options change the control plane Start starts.
type Options struct {
	// APIServerFlags are set on kube-apiserver, such as
	// "egress-selector-config-file".
	APIServerFlags map[string]string
	// CRDDirectoryPaths are folders of more CRDs to install beside
	// config/crd/bases, such as prometheus-operator's.
	CRDDirectoryPaths []string
}

// Start starts kube-apiserver and etcd from $KUBEBUILDER_ASSETS with the
// CRDs from config/crd/bases and the admission webhook of
// config/webhook, served in this process. Call Stop when done.
func Start() (*Env, error) {
	return StartWith(Options{})
}

// StartWith is Start with options.
func StartWith(options Options) (*Env, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, `make test-e2e` or `make test-dev`, which build the control plane into bin/controlplane")
	}
	scheme, err := hookrelayscheme.New()
	if err != nil {
		return nil, err
	}
	webhooks, err := webhookConfigurations()
	if err != nil {
		return nil, err
	}
	// The webhook's port is bound here and held, and envtest points the
	// configuration at it: a port envtest picked and let go could be taken
	// by another process before the webhook server binds it.
	webhookListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	environment := &envtest.Environment{
		CRDDirectoryPaths:     append([]string{filepath.Join(RepoRoot(), "config", "crd", "bases")}, options.CRDDirectoryPaths...),
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
		// envtest makes a serving certificate and points the webhooks at
		// the listener, where startWebhook serves them.
		WebhookInstallOptions: envtest.WebhookInstallOptions{
			ValidatingWebhooks: webhooks,
			LocalServingHost:   "127.0.0.1", LocalServingPort: webhookListener.Addr().(*net.TCPAddr).Port,
		},
	}
	for flag, value := range options.APIServerFlags {
		environment.ControlPlane.GetAPIServer().Configure().Set(flag, value)
	}
	config, err := environment.Start()
	if err != nil {
		webhookListener.Close()
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	env := &Env{Config: config, Scheme: scheme, environment: environment, stopWebhook: func() error { return nil }}
	if env.stopWebhook, err = startWebhook(environment, webhookListener, scheme); err != nil {
		webhookListener.Close()
		_ = env.Stop()
		return nil, err
	}
	if env.Client, err = client.New(config, client.Options{Scheme: scheme}); err != nil {
		_ = env.Stop()
		return nil, err
	}
	if err := webhookv1alpha1.WaitForAdmission(context.Background(), env.Client, 30*time.Second); err != nil {
		_ = env.Stop()
		return nil, err
	}
	admin, err := environment.AddUser(envtest.User{Name: "hookrelay-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("adding the kubectl user: %w", err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hookrelay-kubeconfig-")
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	env.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(env.Kubeconfig, kubeconfig, 0o600); err != nil {
		_ = env.Stop()
		return nil, err
	}
	return env, nil
}

// Run is the body of a TestMain that needs only the control plane: it
// starts it into *env, runs the package's tests and stops it, and returns
// the exit code for os.Exit.
func Run(m *testing.M, env **Env) int {
	return RunWith(m, env, Options{})
}

// RunWith is Run with options.
func RunWith(m *testing.M, env **Env, options Options) int {
	var err error
	if *env, err = StartWith(options); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := (*env).Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}()
	return m.Run()
}

// Stop stops the webhook server and the control plane and removes the
// kubeconfig.
func (e *Env) Stop() error {
	if e.Kubeconfig != "" {
		_ = os.RemoveAll(filepath.Dir(e.Kubeconfig))
	}
	webhookErr := e.stopWebhook()
	return errors.Join(webhookErr, e.environment.Stop())
}

// webhookConfigurations reads the generated config/webhook/manifests.yaml,
// with a namespaceSelector that leaves out LabelSkipAdmission namespaces.
func webhookConfigurations() ([]*admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	path := filepath.Join(RepoRoot(), "config", "webhook", "manifests.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var configurations []*admissionregistrationv1.ValidatingWebhookConfiguration
	for document := range strings.SplitSeq(string(data), "\n---\n") {
		if strings.TrimSpace(strings.TrimPrefix(document, "---")) == "" {
			continue
		}
		configuration := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := yaml.UnmarshalStrict([]byte(document), configuration); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		// Its own name: envtest points it at a URL, and the install test
		// applies the production configuration (pointing at a Service) beside it.
		configuration.Name += "-envtest"
		for i := range configuration.Webhooks {
			configuration.Webhooks[i].NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: LabelSkipAdmission, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"true"}},
			}}
		}
		configurations = append(configurations, configuration)
	}
	if len(configurations) == 0 {
		return nil, fmt.Errorf("%s holds no webhook configuration: run `make manifests`", path)
	}
	return configurations, nil
}

// startWebhook serves the validators on listener, where envtest pointed the
// webhook configuration, once per control plane: managers come and go with
// tests, admission stays.
func startWebhook(environment *envtest.Environment, listener net.Listener, scheme *k8sruntime.Scheme) (stop func() error, err error) {
	certDir := environment.WebhookInstallOptions.LocalServingCertDir
	certificate, err := tls.LoadX509KeyPair(filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key"))
	if err != nil {
		return nil, fmt.Errorf("the webhook's serving certificate from envtest: %w", err)
	}
	// The server only collects the handlers: ServeTLS serves them on the
	// listener held since before envtest started.
	server := webhook.NewServer(webhook.Options{})
	webhookv1alpha1.Register(server, scheme)
	return ServeTLS(listener, server.WebhookMux(), &tls.Config{Certificates: []tls.Certificate{certificate}, MinVersion: tls.VersionTLS12}), nil
}

// ServeTLS serves handler over TLS on listener (an open one: tests never
// pick a port, close it and bind it again). stop shuts the server down and
// returns the error it stopped with, if any.
func ServeTLS(listener net.Listener, handler http.Handler, tlsConfig *tls.Config) (stop func() error) {
	server := &http.Server{Handler: handler, TLSConfig: tlsConfig, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- server.ServeTLS(listener, "", "") }()
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdownErr := server.Shutdown(ctx)
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			return errors.Join(shutdownErr, fmt.Errorf("webhook server: %w", err))
		}
		return shutdownErr
	}
}

// Namespace creates a fresh namespace for one test and deletes it after.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	return e.namespace(t, nil)
}

// NamespaceWithoutAdmission is Namespace with LabelSkipAdmission: the
// admission webhook does not see its objects.
func (e *Env) NamespaceWithoutAdmission(t testing.TB) string {
	t.Helper()
	return e.namespace(t, map[string]string{LabelSkipAdmission: "true"})
}

func (e *Env) namespace(t testing.TB, labels map[string]string) string {
	t.Helper()
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "hookrelay-test-", Labels: labels}}
	if err := e.Client.Create(context.Background(), namespace); err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	t.Cleanup(func() {
		// envtest runs no namespace controller: delete the Hookrelay
		// objects explicitly, so later tests do not see them.
		for _, obj := range []client.Object{&hookrelayv1alpha1.WebhookSubscription{}, &hookrelayv1alpha1.WebhookEndpoint{}} {
			if err := e.Client.DeleteAllOf(context.Background(), obj, client.InNamespace(namespace.Name)); err != nil {
				t.Errorf("deleting %T objects in %s: %v", obj, namespace.Name, err)
			}
		}
		if err := e.Client.Delete(context.Background(), namespace); err != nil {
			t.Errorf("deleting namespace %s: %v", namespace.Name, err)
		}
	})
	return namespace.Name
}

// NewManager returns a controller manager on the control plane, as tests and
// the bench run it: the given cache, no metrics or probe listeners, and
// controller names that may repeat (a test starts several managers).
func (e *Env) NewManager(cacheOptions cache.Options) (ctrl.Manager, error) {
	return ctrl.NewManager(e.Config, ctrl.Options{
		Scheme:                 e.Scheme,
		Cache:                  cacheOptions,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             ctrlconfig.Controller{SkipNameValidation: new(true)},
	})
}

// Kubectl runs /usr/bin/kubectl (or the kubectl on PATH) against the control
// plane, with stdin, and returns its stdout and stderr.
func (e *Env) Kubectl(ctx context.Context, stdin string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	cmd.Stdin = bytes.NewBufferString(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// UserKubeconfig adds a user (client certificate) in groups and returns a
// kubeconfig file for kubectl as that user, removed when the test ends.
// Tests bind it roles to check RBAC and admission policies.
func (e *Env) UserKubeconfig(t testing.TB, name string, groups ...string) string {
	t.Helper()
	user, err := e.environment.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		t.Fatalf("adding user %s: %v", name, err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatalf("kubeconfig of user %s: %v", name, err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// WaitForAddressFile polls path, which a process started with
// --listen-address=127.0.0.1:0 --listen-address-file=path writes once it
// listens, and returns the address in it. It gives up when exited is closed
// (nil: never) or after timeout, saying what it last read.
func WaitForAddressFile(path string, exited <-chan struct{}, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		// Written through a rename: present means complete.
		data, err := os.ReadFile(path)
		if err == nil {
			return string(data), nil
		}
		select {
		case <-exited:
			return "", fmt.Errorf("exited before writing its address to %s", path)
		default:
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no address in %s after %s: %w", path, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartForTest starts the control plane for one test, which fails if it
// cannot, and stops it when the test ends.
func StartForTest(t testing.TB) *Env {
	t.Helper()
	env, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	return env
}

// CountingStatusApplies is a client of the environment that counts the
// status writes (Server-Side Apply to a subresource) that it sends.
func (e *Env) CountingStatusApplies(t testing.TB) (client.Client, *atomic.Int32) {
	t.Helper()
	watching, err := client.NewWithWatch(e.Config, client.Options{Scheme: e.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	applies := &atomic.Int32{}
	return interceptor.NewClient(watching, interceptor.Funcs{
		SubResourceApply: func(ctx context.Context, c client.Client, subResource string, obj k8sruntime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
			applies.Add(1)
			return c.SubResource(subResource).Apply(ctx, obj, opts...)
		},
	}), applies
}
