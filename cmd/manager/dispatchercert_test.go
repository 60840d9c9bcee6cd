package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"maps"
	"os"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hookrelay/hookrelay/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m, &env))
}

// TestManagerProvisionsTheDispatcherCertificate: with its default flags,
// the manager makes the Secret the dispatcher mounts, with a certificate
// for the Service's names, publishes its CA in the ConfigMap clients read,
// and renews the certificate from the same CA when it is due. With
// --dispatcher-cert-provisioning=false it leaves a provided Secret as it is
// and publishes that Secret's CA.
func TestManagerProvisionsTheDispatcherCertificate(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	start := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	fake := clocktesting.NewFakePassiveClock(start)
	secret, configMap := &corev1.Secret{}, &corev1.ConfigMap{}
	read := func(g Gomega) {
		g.Expect(env.Client.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: "hookrelay-dispatcher-tls"}, secret)).To(Succeed())
		g.Expect(env.Client.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: "hookrelay-dispatcher-ca"}, configMap)).To(Succeed())
	}
	stop := runDispatcherProvisioner(t, namespace, fake)
	g.Eventually(read).WithTimeout(30 * time.Second).Should(Succeed())
	stop()
	first := verifiedFor(g, secret, configMap, "hookrelay-dispatcher."+namespace+".svc", fake.Now())
	verifiedFor(g, secret, configMap, "hookrelay-dispatcher."+namespace+".svc.cluster.local", fake.Now())
	published := configMap.Data["ca.crt"]

	// A year less 90 days later, at the next check: a new certificate,
	// the same CA.
	fake.SetTime(start.Add(276 * 24 * time.Hour))
	stop = runDispatcherProvisioner(t, namespace, fake)
	g.Eventually(func(g Gomega) {
		read(g)
		g.Expect(verifiedFor(g, secret, configMap, "hookrelay-dispatcher."+namespace+".svc", fake.Now()).SerialNumber).NotTo(Equal(first.SerialNumber))
	}).WithTimeout(30 * time.Second).Should(Succeed())
	stop()
	g.Expect(configMap.Data["ca.crt"]).To(Equal(published))

	// A provided Secret (or cert-manager's): only its CA is published.
	provided := env.Namespace(t)
	data := maps.Clone(secret.Data)
	delete(data, "ca.key")
	g.Expect(env.Client.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: provided, Name: "hookrelay-dispatcher-tls"},
		Type: corev1.SecretTypeTLS, Data: data})).To(Succeed())
	stop = runDispatcherProvisioner(t, provided, fake, "--dispatcher-cert-provisioning=false")
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(context.Background(), types.NamespacedName{Namespace: provided, Name: "hookrelay-dispatcher-ca"}, configMap)).To(Succeed())
	}).WithTimeout(30 * time.Second).Should(Succeed())
	stop()
	g.Expect(configMap.Data["ca.crt"]).To(Equal(published))
	g.Expect(env.Client.Get(context.Background(), types.NamespacedName{Namespace: provided, Name: "hookrelay-dispatcher-tls"}, secret)).To(Succeed())
	g.Expect(secret.Data).To(Equal(data))
}

// runDispatcherProvisioner starts the dispatcher's provisioner as the
// manager does, with the manager's flags and args, on clk.
func runDispatcherProvisioner(t *testing.T, namespace string, clk *clocktesting.FakePassiveClock, args ...string) (stop func()) {
	t.Helper()
	flags := flag.NewFlagSet("manager", flag.ContinueOnError)
	var options dispatcherCertOptions
	options.bind(flags)
	if err := flags.Parse(args); err != nil {
		t.Fatal(err)
	}
	options.clock = clk
	provisioner, err := options.provisioner(env.Config, env.Scheme, namespace)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- provisioner.Start(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// verifiedFor is the Secret's certificate, verified for name at now
// against the ConfigMap's CA.
func verifiedFor(g Gomega, secret *corev1.Secret, configMap *corev1.ConfigMap, name string, now time.Time) *x509.Certificate {
	pair, err := tls.X509KeyPair(secret.Data["tls.crt"], secret.Data["tls.key"])
	g.Expect(err).NotTo(HaveOccurred())
	roots := x509.NewCertPool()
	g.Expect(roots.AppendCertsFromPEM([]byte(configMap.Data["ca.crt"]))).To(BeTrue())
	_, err = pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, CurrentTime: now})
	g.Expect(err).NotTo(HaveOccurred())
	return pair.Leaf
}
