package servingcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/testenv"
	webhookv1alpha1 "github.com/hookrelay/hookrelay/internal/webhook/v1alpha1"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m, &env))
}

// TestSelfMadeCertificateIsTrustedByTheAPIServer runs the manager's path
// end to end, in the URL form `make dev` uses: the provisioner makes the
// Secret and sets the configuration's URL and caBundle, a webhook server
// serves its certificate, and the API server calls it (refusing a transform
// that does not compile). Replicas share the Secret; renewal keeps the CA
// until the CA itself is due.
func TestSelfMadeCertificateIsTrustedByTheAPIServer(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	operatorNamespace := env.Namespace(t)
	// The webhook of testenv leaves this namespace alone: only this test's
	// configuration answers for it.
	tenant := env.NamespaceWithoutAdmission(t)

	path := webhookv1alpha1.EndpointPath
	configuration := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "servingcert-test"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "webhookendpoints.hookrelay.dev",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: operatorNamespace, Name: "hookrelay-webhook", Path: &path}},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{"hookrelay.dev"}, APIVersions: []string{"v1alpha1"}, Resources: []string{"webhookendpoints"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: tenant}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	g.Expect(env.Client.Create(ctx, configuration)).To(Succeed())
	t.Cleanup(func() { _ = env.Client.Delete(ctx, configuration) })

	// The webhook's port is held from here on: the provisioner writes it
	// into the configuration before the server serves.
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	clock := clocktesting.NewFakePassiveClock(time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC))
	options := Options{
		Namespace: operatorNamespace, SecretName: "hookrelay-webhook-cert", Name: "hookrelay-webhook", ConfigurationName: configuration.Name,
		DNSNames: []string{"hookrelay-webhook." + operatorNamespace + ".svc"},
		URL:      "https://" + listener.Addr().String(), Clock: clock,
	}
	provisioner, err := New(env.Client, options)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(provisioner.Ensure(ctx)).To(Succeed())

	g.Expect(env.Client.Get(ctx, types.NamespacedName{Name: configuration.Name}, configuration)).To(Succeed())
	clientConfig := configuration.Webhooks[0].ClientConfig
	g.Expect(clientConfig.Service).To(BeNil())
	g.Expect(clientConfig.URL).To(HaveValue(Equal(options.URL + path)))
	secret := readSecret(g, options)
	g.Expect(clientConfig.CABundle).To(Equal(secret.Data[keyCACert]))

	// The manager's webhook server takes the same GetCertificate.
	server := webhook.NewServer(webhook.Options{})
	webhookv1alpha1.Register(server, env.Scheme)
	stopServer := testenv.ServeTLS(listener, server.WebhookMux(), &tls.Config{GetCertificate: provisioner.GetCertificate, MinVersion: tls.VersionTLS12})
	t.Cleanup(func() {
		if err := stopServer(); err != nil {
			t.Errorf("webhook server: %v", err)
		}
	})

	endpoint := &hookrelayv1alpha1.WebhookEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: "palenca"},
		Spec: hookrelayv1alpha1.WebhookEndpointSpec{
			URL: "https://receiver.example/", Payload: &hookrelayv1alpha1.PayloadSpec{Transform: `{"data": event.data.`},
		},
	}
	// The API server picks up the configuration change on its own time.
	g.Eventually(func() string {
		err := env.Client.Create(ctx, endpoint.DeepCopy())
		if err == nil {
			return "created"
		}
		return err.Error()
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(ContainSubstring("spec.payload.transform: Invalid value: ERROR: <input>:1:"))

	// A second replica uses the same Secret as it is.
	replica, err := New(env.Client, options)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(replica.Ensure(ctx)).To(Succeed())
	g.Expect(readSecret(g, options).Data).To(Equal(secret.Data))

	// Near its end, the serving certificate is renewed by the same CA.
	clock.SetTime(clock.Now().Add(servingLifetime - renewBefore + time.Hour))
	g.Expect(provisioner.Ensure(ctx)).To(Succeed())
	renewed := readSecret(g, options)
	g.Expect(renewed.Data[keyCert]).NotTo(Equal(secret.Data[keyCert]))
	g.Expect(renewed.Data[keyCACert]).To(Equal(secret.Data[keyCACert]))
	current, err2 := provisioner.GetCertificate(nil)
	g.Expect(err2).NotTo(HaveOccurred())
	g.Expect(current.Leaf.NotAfter).To(BeTemporally(">", clock.Now().Add(renewBefore)))

	// Near the CA's end, a new CA; the bundle trusts both meanwhile.
	clock.SetTime(time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC).Add(caLifetime - renewBefore + time.Hour))
	g.Expect(provisioner.Ensure(ctx)).To(Succeed())
	rotated := readSecret(g, options)
	g.Expect(bytes.HasPrefix(rotated.Data[keyCACert], secret.Data[keyCACert])).To(BeFalse())
	g.Expect(bytes.HasSuffix(rotated.Data[keyCACert], secret.Data[keyCACert])).To(BeTrue())
	g.Expect(strings.Count(string(rotated.Data[keyCACert]), "BEGIN CERTIFICATE")).To(Equal(2))
	g.Expect(env.Client.Get(ctx, types.NamespacedName{Name: configuration.Name}, configuration)).To(Succeed())
	g.Expect(configuration.Webhooks[0].ClientConfig.CABundle).To(Equal(rotated.Data[keyCACert]))
}

func readSecret(g Gomega, options Options) *corev1.Secret {
	secret := &corev1.Secret{}
	g.Expect(env.Client.Get(context.Background(), types.NamespacedName{Namespace: options.Namespace, Name: options.SecretName}, secret)).To(Succeed())
	return secret
}

// TestDispatcherCertificateAndCAConfigMap: for the dispatcher, the
// provisioner keeps the Secret the dispatcher mounts and publishes its CA
// in a ConfigMap; the certificate verifies against that ConfigMap for the
// Service's names, renewal keeps the ConfigMap as it is, and a new CA is
// published beside the old one.
func TestDispatcherCertificateAndCAConfigMap(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	namespace := env.Namespace(t)
	start := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	clock := clocktesting.NewFakePassiveClock(start)
	serviceName := "hookrelay-dispatcher." + namespace + ".svc"
	options := Options{
		Namespace: namespace, SecretName: "hookrelay-dispatcher-tls", Name: "hookrelay-dispatcher", CAConfigMapName: "hookrelay-dispatcher-ca",
		DNSNames: []string{serviceName, serviceName + ".cluster.local"}, Clock: clock,
	}
	provisioner, err := New(env.Client, options)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(provisioner.Ensure(ctx)).To(Succeed())
	secret := readSecret(g, options)
	g.Expect(secret.Type).To(Equal(corev1.SecretTypeTLS))
	configMap := readConfigMap(g, options)
	g.Expect(configMap.Data[CAKey]).To(Equal(string(secret.Data[keyCACert])))
	first := verifiedLeaf(g, secret, configMap, serviceName+".cluster.local", clock.Now())

	// Nothing due: nothing is written.
	g.Expect(provisioner.Ensure(ctx)).To(Succeed())
	g.Expect(readSecret(g, options).ResourceVersion).To(Equal(secret.ResourceVersion))
	g.Expect(readConfigMap(g, options).ResourceVersion).To(Equal(configMap.ResourceVersion))

	// Near its end, the certificate is renewed by the same CA: the
	// ConfigMap, which producers may have copied, stays as it is.
	clock.SetTime(start.Add(servingLifetime - renewBefore + time.Hour))
	g.Expect(provisioner.Ensure(ctx)).To(Succeed())
	renewed := readSecret(g, options)
	g.Expect(readConfigMap(g, options).ResourceVersion).To(Equal(configMap.ResourceVersion))
	second := verifiedLeaf(g, renewed, configMap, serviceName, clock.Now())
	g.Expect(second.SerialNumber).NotTo(Equal(first.SerialNumber))
	g.Expect(second.NotAfter).To(BeTemporally(">", clock.Now().Add(renewBefore)))

	// Near the CA's end, a new CA, published beside the old one.
	clock.SetTime(start.Add(caLifetime - renewBefore + time.Hour))
	g.Expect(provisioner.Ensure(ctx)).To(Succeed())
	rotated := readSecret(g, options)
	published := readConfigMap(g, options)
	g.Expect(strings.Count(published.Data[CAKey], "BEGIN CERTIFICATE")).To(Equal(2))
	g.Expect(published.Data[CAKey]).To(HaveSuffix(configMap.Data[CAKey]))
	verifiedLeaf(g, rotated, published, serviceName, clock.Now())
}

// TestPublishOnlyLeavesTheSecretAlone: with cert-manager (or a provided
// Secret) the provisioner writes no Secret; it says which Secret it waits
// for, then publishes its ca.crt and puts back an edited ConfigMap.
func TestPublishOnlyLeavesTheSecretAlone(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	namespace := env.Namespace(t)
	options := Options{
		Namespace: namespace, SecretName: "hookrelay-dispatcher-tls", Name: "hookrelay-dispatcher", CAConfigMapName: "hookrelay-dispatcher-ca",
		DNSNames: []string{"hookrelay-dispatcher." + namespace + ".svc"}, PublishOnly: true,
	}
	publisher, err := New(env.Client, options)
	g.Expect(err).NotTo(HaveOccurred())
	err = publisher.Ensure(ctx)
	g.Expect(err).To(MatchError(ContainSubstring("reading Secret " + namespace + "/hookrelay-dispatcher-tls (written by cert-manager or by you")))
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue())

	// The Secret as cert-manager writes it: tls.crt, tls.key, ca.crt.
	issuer, err := New(env.Client, Options{Namespace: namespace, SecretName: "elsewhere", Name: "issuer", CAConfigMapName: "unused",
		DNSNames: options.DNSNames})
	g.Expect(err).NotTo(HaveOccurred())
	issued, err := issuer.issue(nil)
	g.Expect(err).NotTo(HaveOccurred())
	delete(issued, keyCAKey)
	g.Expect(env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: options.SecretName},
		Type: corev1.SecretTypeTLS, Data: issued})).To(Succeed())
	g.Expect(publisher.Ensure(ctx)).To(Succeed())
	g.Expect(readSecret(g, options).Data).To(Equal(issued))
	configMap := readConfigMap(g, options)
	g.Expect(configMap.Data[CAKey]).To(Equal(string(issued[keyCACert])))

	configMap.Data[CAKey] = "edited"
	g.Expect(env.Client.Update(ctx, configMap)).To(Succeed())
	g.Expect(publisher.Ensure(ctx)).To(Succeed())
	g.Expect(readConfigMap(g, options).Data[CAKey]).To(Equal(string(issued[keyCACert])))
}

func readConfigMap(g Gomega, options Options) *corev1.ConfigMap {
	configMap := &corev1.ConfigMap{}
	g.Expect(env.Client.Get(context.Background(), types.NamespacedName{Namespace: options.Namespace, Name: options.CAConfigMapName}, configMap)).To(Succeed())
	return configMap
}

// verifiedLeaf is the Secret's certificate, verified for name at now
// against the CA bundle the ConfigMap publishes.
func verifiedLeaf(g Gomega, secret *corev1.Secret, configMap *corev1.ConfigMap, name string, now time.Time) *x509.Certificate {
	pair, err := tls.X509KeyPair(secret.Data[keyCert], secret.Data[keyKey])
	g.Expect(err).NotTo(HaveOccurred())
	roots := x509.NewCertPool()
	g.Expect(roots.AppendCertsFromPEM([]byte(configMap.Data[CAKey]))).To(BeTrue())
	_, err = pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, CurrentTime: now})
	g.Expect(err).NotTo(HaveOccurred())
	return pair.Leaf
}
