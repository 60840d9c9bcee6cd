package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/hookrelay/hookrelay/pkg/client"
	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// TestServiceURLTrustsThePublishedCA: for the dispatcher Service's
// in-cluster name, the plugin trusts the CA the manager publishes, read
// with the user's credentials; for another URL it reads nothing and trusts
// the system's CAs only; a refused read is named in the words an
// untrusted certificate's error carries.
func TestServiceURLTrustsThePublishedCA(t *testing.T) {
	dispatcher := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"id":"evt_1","deliveries":1}`))
	}))
	defer dispatcher.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: dispatcher.Certificate().Raw})
	var reads atomic.Int32
	apiServer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reads.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/api/v1/namespaces/hookrelay-system/configmaps/hookrelay-dispatcher-ca" {
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"forbidden"}`))
			return
		}
		_ = json.NewEncoder(w).Encode(&corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: dispatcherCAConfigMap, Namespace: "hookrelay-system"}, Data: map[string]string{"ca.crt": string(caPEM)}})
	}))
	defer apiServer.Close()
	kubeconfig := kubeconfigFor(t, apiServer.URL)
	publish := func(options ...client.Option) error {
		c, err := client.New(dispatcher.URL, options...)
		if err != nil {
			return err
		}
		_, err = c.Publish(context.Background(), "billing", dispatcherapi.PublishRequest{Type: "user.created"})
		return err
	}

	for _, url := range []string{"https://hookrelay-dispatcher.hookrelay-system.svc", "https://hookrelay-dispatcher.hookrelay-system.svc.cluster.local:443/"} {
		trust := trustFor(t, "--kubeconfig", kubeconfig, "--dispatcher-url", url)
		if want := "the system's CAs and the CA in ConfigMap hookrelay-system/hookrelay-dispatcher-ca"; trust.says != want {
			t.Errorf("%s: trusts %q, want %q", url, trust.says, want)
		}
		if err := publish(trust.options...); err != nil {
			t.Errorf("%s: %v", url, err)
		}
	}
	if err := publish(); err == nil || !strings.Contains(err.Error(), "does not trust") {
		t.Errorf("without the published CA: %v, want an untrusted certificate", err)
	}

	reads.Store(0)
	if trust := trustFor(t, "--kubeconfig", kubeconfig, "--dispatcher-url", dispatcher.URL); trust.says != "the system's CAs" || len(trust.options) != 0 || reads.Load() != 0 {
		t.Errorf("another URL: trusts %q with %d options after %d reads, want the system's CAs and no read", trust.says, len(trust.options), reads.Load())
	}
	trust := trustFor(t, "--kubeconfig", kubeconfig, "--dispatcher-namespace", "elsewhere", "--dispatcher-url", "https://hookrelay-dispatcher.elsewhere.svc")
	if want := "the system's CAs, as reading ConfigMap elsewhere/hookrelay-dispatcher-ca failed: forbidden"; trust.says != want {
		t.Errorf("refused read: trusts %q, want %q", trust.says, want)
	}
}

// TestUntrustedDispatcherIsNamed: a dispatcher whose certificate is not
// trusted fails the command with its URL and the flag that fixes it, which
// then works; the CA file does not go with the service proxy.
func TestUntrustedDispatcherIsNamed(t *testing.T) {
	dispatcher := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"id":"evt_1","deliveries":1}`))
	}))
	defer dispatcher.Close()
	_, err := run(t, "send", "-n", "billing", "--type", "user.created", "--dispatcher-url", dispatcher.URL)
	for _, want := range []string{"the dispatcher at " + dispatcher.URL + " presents a TLS certificate this client does not trust",
		"verified against the system's CAs; pass the CA that signed the dispatcher's certificate with --dispatcher-ca-file"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error = %v, want %q", err, want)
		}
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: dispatcher.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "send", "-n", "billing", "--type", "user.created", "--dispatcher-url", dispatcher.URL, "--dispatcher-ca-file", caFile)
	if err != nil || out != "event evt_1 accepted: 1 deliveries\n" {
		t.Errorf("with --dispatcher-ca-file: %q, %v", out, err)
	}
	_, err = run(t, "send", "-n", "billing", "--type", "user.created", "--kubeconfig", kubeconfigFor(t, dispatcher.URL), "--dispatcher-ca-file", caFile)
	if err == nil || !strings.Contains(err.Error(), "--dispatcher-ca-file "+caFile+" goes with --dispatcher-url") {
		t.Errorf("through the proxy: %v, want --dispatcher-ca-file refused", err)
	}
}

// trustFor is the trust the plugin picks with args.
func trustFor(t *testing.T, args ...string) trust {
	t.Helper()
	t.Setenv(envDispatcherCAFile, "")
	o := newOptions(genericiooptions.NewTestIOStreamsDiscard())
	command := &cobra.Command{}
	o.bind(command)
	if err := command.PersistentFlags().Parse(args); err != nil {
		t.Fatal(err)
	}
	trust, err := o.dispatcherTrust(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return trust
}
