package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kubeconfigFor writes a kubeconfig for an API server at url, as user
// "user" with a bearer token, namespace "billing".
func kubeconfigFor(t *testing.T, url string) string {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	config := clientcmdapi.NewConfig()
	// kubeconfig credentials are only used over TLS.
	config.Clusters["test"] = &clientcmdapi.Cluster{Server: url, InsecureSkipTLSVerify: true}
	config.AuthInfos["user"] = &clientcmdapi.AuthInfo{Token: "user-token"}
	config.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "user", Namespace: "billing"}
	config.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*config, kubeconfig); err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

// run runs the plugin with args and returns its output and error.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	t.Setenv(envDispatcherURL, "")
	t.Setenv(envDispatcherToken, "")
	t.Setenv(envDispatcherCAFile, "")
	var out bytes.Buffer
	root := newRootCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &out})
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// TestServiceProxyCarriesTheUsersToken: without --dispatcher-url the
// plugin goes through the API server's service proxy and hands the
// dispatcher the user's own token, which the API server would otherwise
// keep.
func TestServiceProxyCarriesTheUsersToken(t *testing.T) {
	var path, forwarded, authorization string
	apiServer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, forwarded, authorization = r.URL.Path, r.Header.Get("X-Hookrelay-Authorization"), r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"evt_1","deliveries":2}`))
	}))
	defer apiServer.Close()

	out, err := run(t, "send", "--kubeconfig", kubeconfigFor(t, apiServer.URL), "--type", "user.created")
	if err != nil {
		t.Fatal(err)
	}
	if out != "event evt_1 accepted: 2 deliveries\n" {
		t.Errorf("output = %q", out)
	}
	if want := "/api/v1/namespaces/hookrelay-system/services/https:hookrelay-dispatcher:https/proxy/v1/namespaces/billing/events"; path != want {
		t.Errorf("path = %s, want %s", path, want)
	}
	if forwarded != "Bearer user-token" || authorization != "Bearer user-token" {
		t.Errorf("X-Hookrelay-Authorization = %q, Authorization = %q; want the user's token in both", forwarded, authorization)
	}
}

// TestAPIServerRefusalIsKubectlsError: a 403 of the API server itself (no
// services/proxy) is its Status error, which kubectl prints, not raw JSON;
// a 4xx of the dispatcher behind the proxy stays the dispatcher's message.
func TestAPIServerRefusalIsKubectlsError(t *testing.T) {
	forbidden := apierrors.NewForbidden(
		schemaServices, "https:hookrelay-dispatcher:https", errString(`User "alice" cannot get resource "services/proxy" in API group "" in the namespace "hookrelay-system"`))
	forbidden.ErrStatus.APIVersion, forbidden.ErrStatus.Kind = "v1", "Status"
	apiServer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.URL.Path, "/events/evt_gone") {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"no event \"evt_gone\" in namespace \"billing\""}`))
			return
		}
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(forbidden.ErrStatus)
	}))
	defer apiServer.Close()
	kubeconfig := kubeconfigFor(t, apiServer.URL)

	_, err := run(t, "attempts", "evt_1", "--kubeconfig", kubeconfig)
	if !apierrors.IsForbidden(err) {
		t.Fatalf("error = %v, want the API server's Forbidden", err)
	}
	if got, want := kubectlError(err).Error(), forbidden.Error(); got != want {
		t.Errorf("error = %q, want %q", got, want)
	}

	_, err = run(t, "attempts", "evt_gone", "--kubeconfig", kubeconfig)
	if err == nil || apierrors.IsNotFound(err) || !strings.Contains(err.Error(), `no event "evt_gone" in namespace "billing" (HTTP 404)`) {
		t.Errorf("error = %v, want the dispatcher's 404 message", err)
	}
}

// TestSilentDispatcherTimesOut: a dispatcher that accepts the connection
// and never answers fails the command after --request-timeout.
func TestSilentDispatcherTimesOut(t *testing.T) {
	release := make(chan struct{})
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer silent.Close()
	defer close(release)

	_, err := run(t, "attempts", "evt_1", "--dispatcher-url", silent.URL, "--request-timeout", "100ms", "-n", "billing")
	if err == nil || !strings.Contains(err.Error(), "the dispatcher did not answer within 100ms (--request-timeout)") {
		t.Fatalf("error = %v, want a timeout naming --request-timeout", err)
	}
}

// TestHelpSaysKubectlHookrelay: the help names the command as typed.
func TestHelpSaysKubectlHookrelay(t *testing.T) {
	out, err := run(t, "deliveries", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kubectl hookrelay deliveries ENDPOINT [flags]", "--dispatcher-url", "--request-timeout", "--context", "-o, --output", "wide"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "kubectl-hookrelay") {
		t.Errorf("help names the binary, not `kubectl hookrelay`:\n%s", out)
	}
}
