package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

// shortSchedule stands in for Palm's 1m, 5m, 30m, 2h.
var shortSchedule = []metav1.Duration{{Duration: 200 * time.Millisecond}, {Duration: 400 * time.Millisecond}, {Duration: 600 * time.Millisecond}, {Duration: 800 * time.Millisecond}}

func palmSpec(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
	spec.Timeout = &metav1.Duration{Duration: time.Second}
	spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: shortSchedule}
}

// TestPalmContract: signed envelope in both header families, five attempts
// spaced by the schedule against a failing receiver, timeouts as failures.
func TestPalmContract(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir(), "--header-prefix=Palm")

	ok := newReceiver(t, answerWith(http.StatusOK))
	palm := endpoint(t, namespace, "palm", ok.URL+"/webhooks", []string{"business.*"}, palmSpec)
	status, answer := d.publish(t, namespace, `{"id":"evt_1704538200000_f6g7h8i9j0k1","type":"business.verification.completed",
		"data":{"object":{"business_id":"bus_987e6543","risk":{"level":"low","reasons":[]}}}}`)
	g.Expect(status).To(Equal(http.StatusAccepted), "%v", answer)
	g.Expect(answer).To(Equal(map[string]any{"id": "evt_1704538200000_f6g7h8i9j0k1", "deliveries": 1.0}))

	g.Eventually(ok.got).WithTimeout(10 * time.Second).Should(HaveLen(1))
	got := ok.got()[0]
	secret := secretOf(t, palm)
	g.Expect(verifyPalm(got.Header, secret, got.Body)).To(Succeed())
	g.Expect(verifyStandard(got.Header, secret, got.Body)).To(Succeed())
	g.Expect(got.Header.Get("Palm-Webhook-Id")).To(Equal(namespace + "/palm"))
	g.Expect(got.Header.Get("Palm-Event-Type")).To(Equal("business.verification.completed"))
	g.Expect(got.Header.Get("webhook-id")).To(Equal("evt_1704538200000_f6g7h8i9j0k1"))
	var envelope map[string]any
	err := json.Unmarshal(got.Body, &envelope)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(envelope).To(HaveKeyWithValue("id", "evt_1704538200000_f6g7h8i9j0k1"))
	g.Expect(envelope).To(HaveKeyWithValue("object", "event"))
	g.Expect(envelope).To(HaveKeyWithValue("type", "business.verification.completed"))
	g.Expect(envelope).To(HaveKey("created_at"))
	_, err = time.Parse(time.RFC3339, envelope["created_at"].(string))
	g.Expect(err).NotTo(HaveOccurred(), "created_at is ISO 8601")
	g.Expect(envelope["data"]).To(HaveKeyWithValue("object", HaveKeyWithValue("business_id", "bus_987e6543")))
	g.Eventually(func(g Gomega) metav1.ConditionStatus {
		return condition(g, palm, hookrelayv1alpha1.ConditionDelivering)
	}).
		WithTimeout(10 * time.Second).Should(Equal(metav1.ConditionTrue))

	// A receiver that answers 500 gets exactly 5 attempts, spaced by the schedule.
	failing := newReceiver(t, answerWith(http.StatusInternalServerError))
	broken := endpoint(t, namespace, "palm-broken", failing.URL, []string{"user.created"}, palmSpec)
	status, _ = d.publish(t, namespace, `{"id":"evt_failing","type":"user.created","data":{}}`)
	g.Expect(status).To(Equal(http.StatusAccepted))
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), clientKey(broken), broken)).To(Succeed())
		g.Expect(broken.Status.ConsecutiveFailures).To(Equal(int32(1)), "the delivery failed")
		g.Expect(broken.Status.LastFailureReason).To(Equal("HTTP 500 (5 attempts)"))
	}).WithTimeout(20 * time.Second).Should(Succeed())
	attempts := failing.got()
	g.Expect(attempts).To(HaveLen(5))
	// The delivery log has the five attempts, each with its status and the response.
	response, err := http.Get(d.URL + "/v1/namespaces/" + namespace + "/events/evt_failing")
	g.Expect(err).NotTo(HaveOccurred())
	var eventLog struct {
		Deliveries []struct {
			Endpoint, State string
			Attempts        []struct {
				Number     int
				StatusCode int     `json:"status_code"`
				DurationMS float64 `json:"duration_ms"`
				Response   string
			}
		}
	}
	g.Expect(json.NewDecoder(response.Body).Decode(&eventLog)).To(Succeed())
	response.Body.Close()
	g.Expect(eventLog.Deliveries).To(HaveLen(1))
	g.Expect(eventLog.Deliveries[0].State).To(Equal("failed"))
	g.Expect(eventLog.Deliveries[0].Attempts).To(HaveLen(5))
	for i, attempt := range eventLog.Deliveries[0].Attempts {
		g.Expect(attempt.Number).To(Equal(i + 1))
		g.Expect(attempt.StatusCode).To(Equal(http.StatusInternalServerError))
		g.Expect(attempt.DurationMS).To(BeNumerically(">", 0))
		g.Expect(attempt.Response).To(Equal(fmt.Sprintf(`{"received":%d}`, i+1)))
	}
	for i := 1; i < len(attempts); i++ {
		g.Expect(attempts[i].At.Sub(attempts[i-1].At)).To(BeNumerically(">=", shortSchedule[i-1].Duration),
			"attempt %d came before its retry delay", i+1)
		g.Expect(attempts[i].EventID()).To(Equal("evt_failing"))
	}
	g.Expect(condition(g, broken, hookrelayv1alpha1.ConditionDelivering)).To(Equal(metav1.ConditionFalse))

	// A receiver that answers after the timeout fails too.
	slow := newReceiver(t, func(int) (int, time.Duration) { return http.StatusOK, 3 * time.Second })
	sleeper := endpoint(t, namespace, "palm-slow", slow.URL, []string{"session.completed"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		palmSpec(spec)
		spec.Retry.Schedule = shortSchedule[:1]
	})
	status, _ = d.publish(t, namespace, `{"type":"session.completed","data":{}}`)
	g.Expect(status).To(Equal(http.StatusAccepted))
	g.Eventually(func(g Gomega) string {
		g.Expect(env.Client.Get(t.Context(), clientKey(sleeper), sleeper)).To(Succeed())
		return sleeper.Status.LastFailureReason
	}).WithTimeout(20 * time.Second).Should(Equal("timed out after 1s (2 attempts)"))
	g.Expect(slow.got()).To(HaveLen(2))
	g.Expect(slices.Compact(slow.eventIDs())).To(HaveLen(1))
}
