package servingcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
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
		Namespace: operatorNamespace, SecretName: "hookrelay-webhook-cert", ConfigurationName: configuration.Name,
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
