package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/pkg/client"
	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// defaultRequestTimeout bounds each command's requests when
// --request-timeout is not given: kubectl's default "0" means no timeout,
// and a dispatcher that never answers must not hang the plugin.
const defaultRequestTimeout = 30 * time.Second

// Environment variables that stand in for the dispatcher flags.
const (
	envDispatcherURL    = "HOOKRELAY_DISPATCHER_URL"
	envDispatcherToken  = "HOOKRELAY_DISPATCHER_TOKEN"
	envDispatcherCAFile = "HOOKRELAY_DISPATCHER_CA_FILE"
)

// options are the flags every command shares: kubectl's own
// (--kubeconfig, --context, -n, --as, --request-timeout, ...) and the
// dispatcher's.
type options struct {
	kube *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	dispatcherURL, dispatcherToken string
	dispatcherCAFile               string
	dispatcherNamespace            string
	dispatcherService              string
	dispatcherScheme               string
}

func newOptions(streams genericiooptions.IOStreams) *options {
	return &options{kube: genericclioptions.NewConfigFlags(true), IOStreams: streams}
}

func (o *options) bind(cmd *cobra.Command) {
	flags := cmd.PersistentFlags()
	o.kube.AddFlags(flags)
	flags.StringVar(&o.dispatcherURL, "dispatcher-url", os.Getenv(envDispatcherURL),
		"URL of a dispatcher to talk to directly, such as http://127.0.0.1:8080 ($"+envDispatcherURL+"); otherwise the API server's service proxy.")
	flags.StringVar(&o.dispatcherToken, "dispatcher-token", os.Getenv(envDispatcherToken),
		"Bearer token for a dispatcher reached with --dispatcher-url ($"+envDispatcherToken+").")
	flags.StringVar(&o.dispatcherCAFile, "dispatcher-ca-file", os.Getenv(envDispatcherCAFile),
		"PEM file of the CA that signed the certificate of the dispatcher at an https:// --dispatcher-url ($"+envDispatcherCAFile+"). "+
			"Without it, the system's CAs, and for the Service's in-cluster name also the CA in the ConfigMap "+dispatcherCAConfigMap+" of --dispatcher-namespace.")
	flags.StringVar(&o.dispatcherNamespace, "dispatcher-namespace", "hookrelay-system", "Namespace of the dispatcher Service.")
	flags.StringVar(&o.dispatcherService, "dispatcher-service", "hookrelay-dispatcher", "Name of the dispatcher Service.")
	flags.StringVar(&o.dispatcherScheme, "dispatcher-scheme", "https",
		"Scheme of the dispatcher Service behind the proxy, and the name of its port: https, or http for a dispatcher run without --tls-cert-file.")
}

// namespace is the namespace to work in: -n, else the context's, else
// "default", as kubectl does.
func (o *options) namespace() (string, error) {
	namespace, _, err := o.kube.ToRawKubeConfigLoader().Namespace()
	return namespace, err
}

// requestTimeout is --request-timeout, or defaultRequestTimeout when it is
// unset or 0.
func (o *options) requestTimeout() (time.Duration, error) {
	if o.kube.Timeout == nil || *o.kube.Timeout == "" {
		return defaultRequestTimeout, nil
	}
	timeout, err := clientcmd.ParseTimeout(*o.kube.Timeout)
	if err != nil {
		return 0, fmt.Errorf("--request-timeout %q: %w", *o.kube.Timeout, err)
	}
	if timeout == 0 {
		return defaultRequestTimeout, nil
	}
	return timeout, nil
}

// session is what a command needs: its namespace and a client of the
// dispatcher, and a deadline for its dispatcher calls.
type session struct {
	namespace string
	client    *client.Client
	timeout   time.Duration
	// trust says which CAs verify the dispatcher's certificate.
	trust string
}

// connect reaches the dispatcher directly (--dispatcher-url) or through the
// API server's service proxy with the user's own credentials.
func (o *options) connect() (*session, error) {
	namespace, err := o.namespace()
	// A dispatcher reached directly needs no kubeconfig.
	if clientcmd.IsEmptyConfig(err) && o.dispatcherURL != "" {
		namespace, err = metav1.NamespaceDefault, nil
	}
	if err != nil {
		return nil, err
	}
	timeout, err := o.requestTimeout()
	if err != nil {
		return nil, err
	}
	s := &session{namespace: namespace, timeout: timeout}
	if o.dispatcherURL != "" {
		options := []client.Option{client.WithTimeout(timeout)}
		if o.dispatcherToken != "" {
			options = append(options, client.WithToken(o.dispatcherToken))
		}
		trust, err := o.dispatcherTrust(timeout)
		if err != nil {
			return nil, err
		}
		s.trust = trust.says
		if s.client, err = client.New(o.dispatcherURL, append(options, trust.options...)...); err != nil {
			return nil, fmt.Errorf("--dispatcher-url: %w", err)
		}
		return s, nil
	}
	if o.dispatcherCAFile != "" {
		return nil, fmt.Errorf("--dispatcher-ca-file %s goes with --dispatcher-url: through the service proxy, the API server connects to the dispatcher", o.dispatcherCAFile)
	}
	if o.dispatcherScheme != "http" && o.dispatcherScheme != "https" {
		return nil, fmt.Errorf("--dispatcher-scheme %q is not http or https", o.dispatcherScheme)
	}
	config, err := o.kube.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	config = rest.CopyConfig(config)
	// The API server keeps the Authorization header for itself; pass the
	// user's token on in the header the dispatcher reads behind the proxy,
	// and turn the API server's own refusals into its Status errors.
	config.Wrap(func(rt http.RoundTripper) http.RoundTripper { return proxyTransport{next: rt} })
	httpClient, err := rest.HTTPClientFor(config)
	if err != nil {
		return nil, err
	}
	httpClient.Timeout = timeout
	// The Service's port is named after its scheme (config/dispatcher).
	base := fmt.Sprintf("%s/api/v1/namespaces/%s/services/%s:%s:%s/proxy",
		strings.TrimSuffix(config.Host, "/"), o.dispatcherNamespace, o.dispatcherScheme, o.dispatcherService, o.dispatcherScheme)
	if s.client, err = client.New(base, client.WithHTTPClient(httpClient)); err != nil {
		return nil, err
	}
	return s, nil
}

// context bounds one dispatcher call.
func (s *session) context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.timeout)
}

// explain names what a failed dispatcher call ran into.
func (s *session) explain(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return fmt.Errorf("the dispatcher did not answer within %s (--request-timeout): %w", s.timeout, err)
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return fmt.Errorf("%w\n(verified against %s; pass the CA that signed the dispatcher's certificate with --dispatcher-ca-file)", err, s.trust)
	}
	return err
}

func isTimeout(err error) bool {
	var timeout interface{ Timeout() bool }
	return errors.As(err, &timeout) && timeout.Timeout()
}

// proxyTransport forwards the user's token to the dispatcher and makes an
// answer of the API server itself (not of the dispatcher behind it) the
// apierrors.StatusError kubectl prints.
type proxyTransport struct{ next http.RoundTripper }

func (p proxyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if authorization := r.Header.Get("Authorization"); authorization != "" {
		r = r.Clone(r.Context())
		r.Header.Set(dispatcherapi.TokenHeader, authorization)
	}
	response, err := p.next.RoundTrip(r)
	if err != nil || response.StatusCode < 400 {
		return response, err
	}
	// The dispatcher answers errors as {"error": ...}; the API server (a
	// refused services/proxy, no endpoints) as a metav1.Status.
	data, err := io.ReadAll(io.LimitReader(response.Body, 1<<20))
	closeErr := response.Body.Close()
	if err != nil {
		return nil, err
	}
	if closeErr != nil {
		return nil, closeErr
	}
	var status metav1.Status
	if json.Unmarshal(data, &status) == nil && (status.Kind == "Status" || status.Status == metav1.StatusFailure) {
		return nil, &apierrors.StatusError{ErrStatus: status}
	}
	response.Body = io.NopCloser(bytes.NewReader(data))
	return response, nil
}

// endpoints is the API server's WebhookEndpoints in the namespace.
func (o *options) endpoints(namespace string) (dynamic.ResourceInterface, error) {
	config, err := o.kube.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	dynamicClient, err := dynamic.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	return dynamicClient.Resource(hookrelayv1alpha1.GroupVersion.WithResource("webhookendpoints")).Namespace(namespace), nil
}

// endpoint reads a WebhookEndpoint from the API server, so that an unknown
// one is kubectl's NotFound rather than an empty list.
func (o *options) endpoint(ctx context.Context, namespace, name string) (*unstructured.Unstructured, error) {
	endpoints, err := o.endpoints(namespace)
	if err != nil {
		return nil, err
	}
	return endpoints.Get(ctx, name, metav1.GetOptions{})
}
