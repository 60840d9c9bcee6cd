package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
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
	certFile, keyFile, ca := servingCertificate(t)
	pool := ca.pool()
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

// TestDispatcherReloadsItsCertificate: the certificate files are replaced
// as the kubelet replaces a mounted Secret's (a new folder, then one
// symbolic link swapped), first by a renewal from the same CA, then by a
// certificate of a new CA; the same dispatcher process serves each in turn.
// The plugin verifies it with --dispatcher-ca-file and refuses it, naming
// its URL, when that file holds another CA.
func TestDispatcherReloadsItsCertificate(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	first, second := newTestCA(t, "first"), newTestCA(t, "second")
	mount := newSecretMount(t)
	issued := mount.write(t, first)
	d := startDispatcherTLS(t, t.TempDir(), first.pool(), "--tls-cert-file="+mount.certFile(), "--tls-key-file="+mount.keyFile())
	both := first.pool()
	both.AddCert(second.cert)
	served := func() (string, error) { return servedSerial(d.URL, both) }
	g.Expect(served()).To(Equal(issued))
	send := func(caFile, id string) (string, error) {
		return kubectlHookrelay(t, "send", "-n", namespace, "--dispatcher-url", d.URL, "--dispatcher-ca-file", caFile, "--type", "user.created", "--id", id)
	}
	g.Expect(send(first.file, "evt_first")).To(HavePrefix("event evt_first accepted"))

	// Renewed by the same CA: a new key and certificate.
	renewed := mount.write(t, first)
	g.Expect(renewed).NotTo(Equal(issued))
	g.Eventually(served).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Equal(renewed))
	g.Expect(send(first.file, "evt_renewed")).To(HavePrefix("event evt_renewed accepted"))

	// A new CA: the old CA no longer verifies the dispatcher.
	rotated := mount.write(t, second)
	g.Eventually(served).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Equal(rotated))
	out, err := send(first.file, "evt_refused")
	g.Expect(exitCode(err)).To(Equal(1), out)
	g.Expect(out).To(HavePrefix("error: the dispatcher at " + d.URL + " presents a TLS certificate this client does not trust: "))
	g.Expect(out).To(ContainSubstring("(verified against --dispatcher-ca-file " + first.file + "; pass the CA that signed the dispatcher's certificate with --dispatcher-ca-file)"))
	g.Expect(send(second.file, "evt_rotated")).To(HavePrefix("event evt_rotated accepted"))

	// One process throughout: no restart.
	g.Expect(d.done).NotTo(BeClosed())
}

// servedSerial is the serial number of the certificate the dispatcher at
// url serves, verified against pool.
func servedSerial(url string, pool *x509.CertPool) (string, error) {
	conn, err := tls.Dial("tcp", strings.TrimPrefix(url, "https://"), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16), nil
}

// testCA is a CA that issues certificates for 127.0.0.1; file holds its
// certificate.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key := newTestKey(t)
	template := &x509.Certificate{
		SerialNumber: randomSerial(t), Subject: pkix.Name{CommonName: name + "-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), name+"-ca.crt")
	writeFile(t, file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return &testCA{cert: cert, key: key, file: file}
}

func (ca *testCA) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

// issue returns a new key and a certificate for 127.0.0.1, as PEM, and
// the certificate's serial number.
func (ca *testCA) issue(t *testing.T) (certPEM, keyPEM []byte, serial string) {
	t.Helper()
	key := newTestKey(t)
	template := &x509.Certificate{
		SerialNumber: randomSerial(t), Subject: pkix.Name{CommonName: "hookrelay-dispatcher"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		template.SerialNumber.Text(16)
}

// servingCertificate writes a certificate for 127.0.0.1 and its key, and
// returns them with its CA.
func servingCertificate(t *testing.T) (certFile, keyFile string, ca *testCA) {
	t.Helper()
	ca = newTestCA(t, "hookrelay-dispatcher")
	certPEM, keyPEM, _ := ca.issue(t)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeFile(t, certFile, certPEM)
	writeFile(t, keyFile, keyPEM)
	return certFile, keyFile, ca
}

// secretMount is a folder laid out as the kubelet mounts a Secret:
// tls.crt -> ..data/tls.crt, ..data -> a timestamped folder. An update
// writes a new folder, swaps ..data in one rename and removes the old one.
type secretMount struct {
	dir      string
	versions int
}

func newSecretMount(t *testing.T) *secretMount {
	t.Helper()
	mount := &secretMount{dir: t.TempDir()}
	for _, name := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(mount.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return mount
}

func (m *secretMount) certFile() string { return filepath.Join(m.dir, "tls.crt") }
func (m *secretMount) keyFile() string  { return filepath.Join(m.dir, "tls.key") }

// write puts a new certificate of ca in place and returns its serial.
func (m *secretMount) write(t *testing.T, ca *testCA) string {
	t.Helper()
	certPEM, keyPEM, serial := ca.issue(t)
	m.versions++
	version := fmt.Sprintf("..version_%d", m.versions)
	if err := os.Mkdir(filepath.Join(m.dir, version), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(m.dir, version, "tls.crt"), certPEM)
	writeFile(t, filepath.Join(m.dir, version, "tls.key"), keyPEM)
	previous, err := os.Readlink(filepath.Join(m.dir, "..data"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err := os.Symlink(version, filepath.Join(m.dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(m.dir, "..data_tmp"), filepath.Join(m.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if previous != "" {
		if err := os.RemoveAll(filepath.Join(m.dir, previous)); err != nil {
			t.Fatal(err)
		}
	}
	return serial
}

func newTestKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func randomSerial(t *testing.T) *big.Int {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return serial
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
