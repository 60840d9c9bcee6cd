package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/testenv"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// palencaSpec is the sample's spec (config/samples/palenca.yaml), with a
// short schedule and the receiver's URL.
func palencaSpec(t *testing.T, url string, sandbox bool) func(*hookrelayv1alpha1.WebhookEndpointSpec) {
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "samples", "palenca.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var sample hookrelayv1alpha1.WebhookEndpoint
	if err := yaml.Unmarshal(splitYAML(raw)[0], &sample); err != nil {
		t.Fatal(err)
	}
	return func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		*spec = sample.Spec
		spec.URL, spec.Sandbox = url, sandbox
		spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{{Duration: 50 * time.Millisecond}, {Duration: 50 * time.Millisecond}, {Duration: 50 * time.Millisecond}}}
	}
}

// TestPalencaContract: the wrapped body from the sample's transform, success
// only on 200 and 201, and sandbox events only to sandbox endpoints.
func TestPalencaContract(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())

	// 202 is not a success for Palenca; 201 is.
	production := newReceiver(t, func(n int) (int, time.Duration) {
		if n == 1 {
			return http.StatusAccepted, 0
		}
		return http.StatusCreated, 0
	})
	sandbox := newReceiver(t, answerWith(http.StatusOK))
	productionEndpoint := endpoint(t, namespace, "palenca-production", production.URL+"/hooks", []string{"login.*"}, palencaSpec(t, production.URL+"/hooks", false))
	endpoint(t, namespace, "palenca-sandbox", sandbox.URL+"/hooks", []string{"login.*"}, palencaSpec(t, sandbox.URL+"/hooks", true))

	status, answer := d.publish(t, namespace, `{"id":"evt_login_created","type":"login.created","data":{
		"user_id":"d1c9b98b-3190-479e-99db-04060ff3997f","account_id":"cb39ee15-f29f-427d-9119-0c627575610d",
		"external_id":"None","platform":"uber","status_details":"pending_for_data"}}`)
	g.Expect(status).To(Equal(http.StatusAccepted))
	g.Expect(answer["deliveries"]).To(Equal(1.0), "production event, one production endpoint")
	status, answer = d.publish(t, namespace, `{"id":"evt_sandbox","type":"login.success","sandbox":true,"data":{
		"user_id":"d1c9b98b-3190-479e-99db-04060ff3997f","account_id":"cb39ee15-f29f-427d-9119-0c627575610d",
		"external_id":"None","platform":"uber","status_details":null}}`)
	g.Expect(status).To(Equal(http.StatusAccepted))
	g.Expect(answer["deliveries"]).To(Equal(1.0), "sandbox event, one sandbox endpoint")

	g.Eventually(production.got).WithTimeout(10*time.Second).Should(HaveLen(2), "the 202 was retried")
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(context.Background(), clientKey(productionEndpoint), productionEndpoint)).To(Succeed())
		g.Expect(productionEndpoint.Status.LastSuccessTime).NotTo(BeNil())
	}).WithTimeout(10 * time.Second).Should(Succeed())
	g.Expect(production.eventIDs()).To(Equal([]string{"evt_login_created", "evt_login_created"}))
	var body map[string]any
	g.Expect(json.Unmarshal(production.got()[1].Body, &body)).To(Succeed())
	g.Expect(body).To(Equal(map[string]any{
		"webhook_url": production.URL + "/hooks",
		"data": map[string]any{
			"user_id": "d1c9b98b-3190-479e-99db-04060ff3997f", "account_id": "cb39ee15-f29f-427d-9119-0c627575610d",
			"external_id": "None", "platform": "uber", "status_details": "pending_for_data", "webhook_action": "login.created",
		},
	}))

	g.Eventually(sandbox.eventIDs).WithTimeout(10 * time.Second).Should(Equal([]string{"evt_sandbox"}))
	g.Expect(json.Unmarshal(sandbox.got()[0].Body, &body)).To(Succeed())
	g.Expect(body["data"]).To(HaveKeyWithValue("webhook_action", "login.success"))
	g.Expect(body["data"]).To(HaveKeyWithValue("status_details", BeNil()))
	g.Expect(production.eventIDs()).NotTo(ContainElement("evt_sandbox"))
}

// splitYAML splits a multi-document YAML file.
func splitYAML(data []byte) [][]byte {
	return bytes.Split(data, []byte("\n---\n"))
}
