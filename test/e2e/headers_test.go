package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

// TestHeaderFromSecretReachesTheReceiver: a header value kept in a Secret
// arrives with the delivery, next to a literal header, and is stored in no
// ConfigMap.
func TestHeaderFromSecretReachesTheReceiver(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	const token = "Bearer e2e-7c1d0b9f44a2"
	g.Expect(env.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "receiver-token",
			Labels: map[string]string{hookrelayv1alpha1.LabelEndpointSecret: "true"}},
		Data: map[string][]byte{"token": []byte(token)},
	})).To(Succeed())

	ok := newReceiver(t, answerWith(http.StatusOK))
	endpoint(t, namespace, "authorized", ok.URL, []string{"user.created"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.Headers = []hookrelayv1alpha1.Header{
			{Name: "X-Team", Value: "income"},
			{Name: "Authorization", ValueFrom: &hookrelayv1alpha1.HeaderValueSource{
				SecretKeyRef: hookrelayv1alpha1.SecretKeySelector{Name: "receiver-token", Key: "token"}}},
		}
	})
	status, answer := d.publish(t, namespace, `{"id":"evt_header","type":"user.created","data":{}}`)
	g.Expect(status).To(Equal(http.StatusAccepted), "%v", answer)
	g.Eventually(ok.eventIDs).WithTimeout(10 * time.Second).Should(HaveLen(1))
	got := ok.got()[0]
	g.Expect(got.Header.Get("Authorization")).To(Equal(token))
	g.Expect(got.Header.Get("X-Team")).To(Equal("income"))

	var configMaps corev1.ConfigMapList
	g.Expect(env.Client.List(ctx, &configMaps)).To(Succeed())
	for _, configMap := range configMaps.Items {
		for key, data := range configMap.Data {
			g.Expect(strings.Contains(data, "e2e-7c1d0b9f44a2")).To(BeFalse(), "ConfigMap %s/%s key %s holds the token", configMap.Namespace, configMap.Name, key)
		}
	}
}
