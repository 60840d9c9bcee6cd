package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestServiceURLTrustsThePublishedCA: in a Pod, a client of the dispatcher
// Service's in-cluster name trusts the CA published in the ConfigMap of
// that namespace, read as the Pod's ServiceAccount; a refused read leaves
// the system's CAs, and the certificate error says why; another URL reads
// nothing.
func TestServiceURLTrustsThePublishedCA(t *testing.T) {
	caPEM, certificate := serviceCertificate(t, "hookrelay-dispatcher.hookrelay-system.svc")
	dispatcher := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, accepted)
	}))
	dispatcher.TLS = &tls.Config{Certificates: []tls.Certificate{certificate}, MinVersion: tls.VersionTLS12}
	dispatcher.StartTLS()
	defer dispatcher.Close()

	var reads atomic.Int32
	apiServer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reads.Add(1)
		if r.Header.Get("Authorization") != "Bearer pod-token" || r.URL.Path != "/api/v1/namespaces/hookrelay-system/configmaps/"+CAConfigMap {
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"kind":"Status","message":"configmaps is forbidden"}`)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"kind": "ConfigMap", "data": map[string]string{"ca.crt": string(caPEM)}})
	}))
	defer apiServer.Close()
	dir := t.TempDir()
	saved := inCluster
	t.Cleanup(func() { inCluster = saved })
	inCluster.tokenFile, inCluster.caFile = filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt")
	inCluster.host = func() string { return apiServer.Listener.Addr().String() }
	if err := os.WriteFile(inCluster.tokenFile, []byte("pod-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(inCluster.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: apiServer.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	// The Service's name leads to the test dispatcher.
	viaService := func(c *Client) *Client {
		transport := c.http.Transport
		if transport == nil {
			transport = http.DefaultTransport
		}
		redirected := transport.(*http.Transport).Clone()
		redirected.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, dispatcher.Listener.Addr().String())
		}
		c.http = &http.Client{Transport: redirected}
		return c
	}

	if err := publish(viaService(newClient(t, "https://hookrelay-dispatcher.hookrelay-system.svc"))); err != nil {
		t.Fatalf("the Service's name with the published CA: %v", err)
	}
	err := publish(viaService(newClient(t, "https://hookrelay-dispatcher.elsewhere.svc.cluster.local")))
	want := "presents a TLS certificate this client does not trust (reading the ConfigMap elsewhere/hookrelay-dispatcher-ca failed: the API server answered 403: configmaps is forbidden)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a refused read: %v, want %q", err, want)
	}
	reads.Store(0)
	if c := newClient(t, "https://dispatcher.example"); c.http != http.DefaultClient || reads.Load() != 0 {
		t.Errorf("another URL: %d reads, want none and the default client", reads.Load())
	}
	inCluster.host = func() string { return "" }
	err = publish(viaService(newClient(t, "https://hookrelay-dispatcher.hookrelay-system.svc")))
	if want := "(not in a Pod, so the ConfigMap hookrelay-system/hookrelay-dispatcher-ca was not read: pass its ca.crt with WithCAFile)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("outside a Pod: %v, want %q", err, want)
	}
}

// serviceCertificate is a CA (PEM) and a certificate it signed for name.
func serviceCertificate(t *testing.T, name string) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTemplate := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, template, caTemplate, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestServiceNamespace(t *testing.T) {
	for host, want := range map[string]string{
		"hookrelay-dispatcher.hookrelay-system.svc":                "hookrelay-system",
		"hookrelay-dispatcher.billing.svc.cluster.local":           "billing",
		"HOOKRELAY-DISPATCHER.BILLING.SVC.":                        "billing",
		"hookrelay-dispatcher.hookrelay-system":                    "",
		"a.b.c.svc":                                                "",
		"dispatcher.example":                                       "",
		".hookrelay-system.svc":                                    "",
		"hookrelay-dispatcher.hookrelay-system.svc.cluster.local.": "hookrelay-system",
	} {
		got, ok := serviceNamespace(host)
		if got != want || ok != (want != "") {
			t.Errorf("serviceNamespace(%q) = %q, %t; want %q", host, got, ok, want)
		}
	}
}
