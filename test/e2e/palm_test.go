package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/routes"
)

// shortSchedule stands in for Palm's 1m, 5m, 30m, 2h.
var shortSchedule = []metav1.Duration{{Duration: 200 * time.Millisecond}, {Duration: 400 * time.Millisecond}, {Duration: 600 * time.Millisecond}, {Duration: 800 * time.Millisecond}}

func palmSpec(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
	spec.Timeout = &metav1.Duration{Duration: time.Second}
	spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: shortSchedule}
}

// palmBusinessVerification is the "Verification completed" example of
// palm-webhooks.txt, published as a producer would.
const palmBusinessVerification = `{"id":"evt_1704538200000_f6g7h8i9j0k1","type":"business.verification.completed","data":{"object":{"business_id":"bus_987e6543-e21a-45b6-c789-012345678901","verification_id":"ver_456e7890-f12a-34b5-c678-901234567890","reference_id":"your_business_ref_789","risk":{"level":"low","reasons":[]},"match":{"legal_name":"match","ein":"match","entity_type":"match","address_line_1":"match"},"associates":[{"user_id":"123e4567-e89b-12d3-a456-426614174000","verification_id":"660e8400-e29b-41d4-a716-446655440001","status":"completed","risk":{"level":"low","reasons":[]},"match":{"first_name":"match","last_name":"match","date_of_birth":"match","ssn":"match"},"watchlist":{"status":"clear"}}]}}}`

// TestPalmContract: config/samples/palm.yaml as shipped (URL rewritten to
// the test's receiver), on a dispatcher with default flags, delivers what
// palm-webhooks.txt documents: the envelope, Palm-Signature verified by
// Palm's five steps, Palm-Webhook-Id, Palm-Event-Type, and webhook-signature
// verified by the Standard Webhooks reference library; 2xx is success; the
// compiled route has the 10 s timeout, the 1m, 5m, 30m, 2h retries (five
// attempts) and auto-disable after 10 failed deliveries. Then the same
// behaviour at run time on short schedules: five attempts spaced by the
// schedule against a failing receiver, and timeouts as failures.
func TestPalmContract(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())

	// Palm: "Return a 2xx immediately"; 202 is a success.
	ok := newReceiver(t, answerWith(http.StatusAccepted))
	url := ok.URL + "/webhooks/palm"
	palm := applySample(t, namespace, "palm.yaml", map[string]string{"palm": url})["palm"]

	route := compiledRoute(g, palm)
	g.Expect(route.Timeout.Duration).To(Equal(10*time.Second), "Palm: respond within 10 seconds")
	g.Expect(route.RetrySchedule).To(Equal(durations("1m", "5m", "30m", "2h")), "Palm: retries after 1m, 5m, 30m, 2h")
	g.Expect(len(route.RetrySchedule)+1).To(Equal(5), "Palm: 5 total attempts")
	g.Expect(route.SuccessStatusCodes).To(BeEmpty(), "Palm: any 2xx")
	g.Expect(route.AutoDisableAfter).To(Equal(int32(10)), "Palm: disabled after 10 consecutive failed deliveries")
	g.Expect(route.KeepOnGone).To(BeTrue(), "Palm: every non-2xx is retried, a 410 too")
	g.Expect(route.JitterPercent).To(Equal(ptr.To[int32](0)), "Palm: retries exactly 1m, 5m, 30m, 2h after the previous attempt")
	g.Expect(route.IgnoreRetryAfter).To(BeTrue(), "Palm: the schedule, not the receiver's Retry-After")
	g.Expect(route.Signing).To(Equal(&routes.Signing{HeaderPrefix: "Palm", Schemes: []string{routes.SchemePrefixed, routes.SchemeStandardWebhooks}}))

	status, answer := d.publish(t, namespace, palmBusinessVerification)
	g.Expect(status).To(Equal(http.StatusAccepted), "%v", answer)
	g.Expect(answer).To(Equal(map[string]any{"id": "evt_1704538200000_f6g7h8i9j0k1", "deliveries": 1.0}))
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), clientKey(palm), palm)).To(Succeed())
		g.Expect(palm.Status.LastSuccessTime).NotTo(BeNil())
	}).WithTimeout(10 * time.Second).Should(Succeed())
	g.Expect(ok.got()).To(HaveLen(1), "a 2xx is delivered, not retried")
	got := ok.got()[0]
	logCapture(t, url, got)

	secret := secretOf(t, palm)
	g.Expect(verifyPalm(got.Header, secret, got.Body)).To(Succeed(), "Palm's five steps")
	g.Expect(verifyStandard(got.Header, secret, got.Body)).To(Succeed(), "Standard Webhooks reference library")
	g.Expect(got.Header.Get("Palm-Webhook-Id")).To(Equal(namespace + "/palm"))
	g.Expect(got.Header.Get("Palm-Event-Type")).To(Equal("business.verification.completed"))
	g.Expect(got.Header.Get("webhook-id")).To(Equal("evt_1704538200000_f6g7h8i9j0k1"))
	g.Expect(signatureHeaders(got.Header)).To(Equal([]string{"Palm-Event-Type", "Palm-Signature", "Palm-Webhook-Id", "Webhook-Id", "Webhook-Signature", "Webhook-Timestamp"}),
		"no header family but Palm's and Standard Webhooks'")
	g.Expect(got.Header.Get("Content-Type")).To(Equal("application/json"))

	var envelope map[string]json.RawMessage
	g.Expect(json.Unmarshal(got.Body, &envelope)).To(Succeed())
	g.Expect(envelope).To(HaveLen(5), "id, object, type, created_at, data")
	g.Expect(string(envelope["id"])).To(Equal(`"evt_1704538200000_f6g7h8i9j0k1"`))
	g.Expect(string(envelope["object"])).To(Equal(`"event"`))
	g.Expect(string(envelope["type"])).To(Equal(`"business.verification.completed"`))
	var createdAt string
	g.Expect(json.Unmarshal(envelope["created_at"], &createdAt)).To(Succeed())
	_, err := time.Parse(time.RFC3339, createdAt)
	g.Expect(err).NotTo(HaveOccurred(), "created_at is ISO 8601")
	var published map[string]json.RawMessage
	g.Expect(json.Unmarshal([]byte(palmBusinessVerification), &published)).To(Succeed())
	g.Expect(envelope["data"]).To(MatchJSON(published["data"]), "data is the documented payload")
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
	type deliveryLog struct {
		Endpoint, State string
		Attempts        []struct {
			Number     int
			StatusCode int     `json:"status_code"`
			DurationMS float64 `json:"duration_ms"`
			Response   string
		}
	}
	var eventLog struct{ Deliveries []deliveryLog }
	g.Expect(json.NewDecoder(response.Body).Decode(&eventLog)).To(Succeed())
	response.Body.Close()
	// The sample's endpoint subscribes to user.created too, and succeeds.
	g.Expect(eventLog.Deliveries).To(HaveLen(2))
	brokenLog := eventLog.Deliveries[slices.IndexFunc(eventLog.Deliveries, func(d deliveryLog) bool {
		return d.Endpoint == "palm-broken"
	})]
	g.Expect(brokenLog.State).To(Equal("failed"))
	g.Expect(brokenLog.Attempts).To(HaveLen(5))
	for i, attempt := range brokenLog.Attempts {
		g.Expect(attempt.Number).To(Equal(i + 1))
		g.Expect(attempt.StatusCode).To(Equal(http.StatusInternalServerError))
		g.Expect(attempt.DurationMS).To(BeNumerically(">", 0))
		g.Expect(attempt.Response).To(Equal(fmt.Sprintf(`{"received":%d}`, i+1)))
	}
	// A smoke check of the spacing (half of each step); the exact one is
	// TestAttemptSpacingFollowsTheSchedule in dispatcher/delivery.
	for i := 1; i < len(attempts); i++ {
		g.Expect(attempts[i].At.Sub(attempts[i-1].At)).To(BeNumerically(">=", shortSchedule[i-1].Duration/2),
			"attempt %d came long before its retry delay", i+1)
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

// TestDispatcherRefusesWebhookHeaderPrefix: a default prefix of Webhook
// would make <prefix>-Signature the Standard Webhooks header, so the
// dispatcher refuses to start with it, saying why.
func TestDispatcherRefusesWebhookHeaderPrefix(t *testing.T) {
	g := NewWithT(t)
	for _, prefix := range []string{"Webhook", "webhook", "WEBHOOK"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, dispatcherBinary, "--header-prefix="+prefix, "--listen-address=127.0.0.1:0",
			"--data-dir="+t.TempDir(), "--insecure-no-auth").CombinedOutput()
		cancel()
		g.Expect(err).To(HaveOccurred(), "the dispatcher started with --header-prefix=%s", prefix)
		g.Expect(string(out)).To(ContainSubstring("--header-prefix: header prefix %q would make %s-Signature collide with the Standard Webhooks header webhook-signature", prefix, prefix))
	}
}
