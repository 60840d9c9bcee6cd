package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// options are the flags every command shares.
type options struct {
	kubeconfig, context, namespace string
	server, token                  string
	dispatcherNamespace            string
	dispatcherService              string
	dispatcherScheme               string
}

func (o *options) bind(cmd *cobra.Command) {
	flags := cmd.PersistentFlags()
	flags.StringVar(&o.kubeconfig, "kubeconfig", "", "Path to the kubeconfig file.")
	flags.StringVar(&o.context, "context", "", "The kubeconfig context to use.")
	flags.StringVarP(&o.namespace, "namespace", "n", "", "Namespace of the endpoints and events; defaults to the context's.")
	flags.StringVar(&o.server, "server", os.Getenv("HOOKRELAY_SERVER"),
		"URL of a dispatcher to talk to directly, such as http://127.0.0.1:8080 ($HOOKRELAY_SERVER); otherwise the API server's service proxy.")
	flags.StringVar(&o.token, "token", os.Getenv("HOOKRELAY_TOKEN"), "Bearer token for a dispatcher reached with --server ($HOOKRELAY_TOKEN).")
	flags.StringVar(&o.dispatcherNamespace, "dispatcher-namespace", "hookrelay-system", "Namespace of the dispatcher Service.")
	flags.StringVar(&o.dispatcherService, "dispatcher-service", "hookrelay-dispatcher", "Name of the dispatcher Service.")
	flags.StringVar(&o.dispatcherScheme, "dispatcher-scheme", "http", "Scheme of the dispatcher Service behind the proxy: http, or https when it runs with --tls-cert-file.")
}

func (o *options) clientConfig() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.context})
}

// restConfig is the user's kubeconfig.
func (o *options) restConfig() (*rest.Config, error) {
	config, err := o.clientConfig().ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	return config, nil
}

// ns is the namespace to work in: the flag, else the context's.
func (o *options) ns() (string, error) {
	if o.namespace != "" {
		return o.namespace, nil
	}
	namespace, _, err := o.clientConfig().Namespace()
	if err != nil {
		if o.server != "" {
			return "default", nil
		}
		return "", fmt.Errorf("reading the namespace from kubeconfig: %w", err)
	}
	return namespace, nil
}

// connect gives the namespace to work in and a way to the dispatcher.
func (o *options) connect() (string, *api, error) {
	namespace, err := o.ns()
	if err != nil {
		return "", nil, err
	}
	a, err := o.dispatcher()
	return namespace, a, err
}

// api reaches the dispatcher's API.
type api struct {
	client *http.Client
	base   string
	token  string
}

// dispatcher connects directly (--server) or through the service proxy.
func (o *options) dispatcher() (*api, error) {
	if o.server != "" {
		return &api{client: http.DefaultClient, base: strings.TrimSuffix(o.server, "/"), token: o.token}, nil
	}
	config, err := o.restConfig()
	if err != nil {
		return nil, err
	}
	// The API server keeps the Authorization header for itself; pass the
	// user's token on in the header the dispatcher reads behind the proxy.
	config.Wrap(func(rt http.RoundTripper) http.RoundTripper { return forwardToken{next: rt} })
	client, err := rest.HTTPClientFor(config)
	if err != nil {
		return nil, err
	}
	if o.dispatcherScheme != "http" && o.dispatcherScheme != "https" {
		return nil, fmt.Errorf("--dispatcher-scheme %q is not http or https", o.dispatcherScheme)
	}
	base := fmt.Sprintf("%s/api/v1/namespaces/%s/services/%s:%s:http/proxy",
		strings.TrimSuffix(config.Host, "/"), o.dispatcherNamespace, o.dispatcherScheme, o.dispatcherService)
	return &api{client: client, base: base}, nil
}

type forwardToken struct{ next http.RoundTripper }

func (f forwardToken) RoundTrip(r *http.Request) (*http.Response, error) {
	if authorization := r.Header.Get("Authorization"); authorization != "" {
		r = r.Clone(r.Context())
		r.Header.Set(dispatcherapi.TokenHeader, authorization)
	}
	return f.next.RoundTrip(r)
}

// call sends a request and decodes a 2xx answer into out; any other answer
// becomes an error with the dispatcher's message.
func (a *api) call(method, path string, body []byte, contentType string, out any) error {
	request, err := http.NewRequest(method, a.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if contentType != "" {
		request.Header.Set("Content-Type", contentType)
	}
	if a.token != "" {
		request.Header.Set("Authorization", "Bearer "+a.token)
	}
	response, err := a.client.Do(request)
	if err != nil {
		return fmt.Errorf("reaching the dispatcher: %w", err)
	}
	defer response.Body.Close()
	data, err := io.ReadAll(response.Body)
	if err != nil {
		return err
	}
	if response.StatusCode >= 300 {
		var problem dispatcherapi.Error
		if json.Unmarshal(data, &problem) == nil && problem.Error != "" {
			return fmt.Errorf("%s (HTTP %d)", problem.Error, response.StatusCode)
		}
		return fmt.Errorf("the dispatcher answered HTTP %d: %s", response.StatusCode, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("reading the dispatcher's answer: %w", err)
		}
	}
	return nil
}
