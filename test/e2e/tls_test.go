package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// TestDispatcherServesTLS: with --tls-cert-file the API answers over TLS,
// and a plain HTTP request gets no event in.
func TestDispatcherServesTLS(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	certFile, keyFile, pool := selfSignedCertificate(t)
	d := startDispatcherTLS(t, t.TempDir(), pool, "--tls-cert-file="+certFile, "--tls-key-file="+keyFile)
	r := newReceiver(t, answerWith(http.StatusOK))
	endpoint(t, namespace, "over-tls", r.URL, []string{"*"}, nil)

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	response, err := client.Post(d.URL+"/v1/namespaces/"+namespace+"/events", "application/json", strings.NewReader(`{"id":"evt_tls","type":"user.created"}`))
	g.Expect(err).NotTo(HaveOccurred())
	response.Body.Close()
	g.Expect(response.StatusCode).To(Equal(http.StatusAccepted))
	g.Eventually(r.eventIDs).WithTimeout(10 * time.Second).Should(Equal([]string{"evt_tls"}))

	plain, err := http.Post(strings.Replace(d.URL, "https://", "http://", 1)+"/v1/namespaces/"+namespace+"/events", "application/json", strings.NewReader(`{"type":"user.created"}`))
	g.Expect(err).NotTo(HaveOccurred())
	plain.Body.Close()
	g.Expect(plain.StatusCode).To(Equal(http.StatusBadRequest), "Go's TLS server answers plain HTTP with 400")
	g.Expect(r.eventIDs()).To(Equal([]string{"evt_tls"}))
}

// selfSignedCertificate writes a certificate for 127.0.0.1 and its key.
func selfSignedCertificate(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hookrelay-dispatcher"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	certificate, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(certificate)
	return certFile, keyFile, pool
}
