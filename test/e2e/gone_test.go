package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

// goneEndpoint is an endpoint whose deliveries get two attempts, one at a
// time, with the given auto-disable policy.
func goneEndpoint(autoDisable *hookrelayv1alpha1.AutoDisablePolicy) func(*hookrelayv1alpha1.WebhookEndpointSpec) {
	return func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{{Duration: 10 * time.Millisecond}}, JitterPercent: ptr.To[int32](0)}
		spec.MaxInFlight = ptr.To[int32](1)
		spec.AutoDisable = autoDisable
	}
}

// publishFailing publishes events first..last-1 and waits until the endpoint
// reports that many consecutive failed deliveries.
func publishFailing(t *testing.T, d *dispatcher, ep *hookrelayv1alpha1.WebhookEndpoint, first, last int) {
	t.Helper()
	g := NewWithT(t)
	for i := first; i < last; i++ {
		status, answer := d.publish(t, ep.Namespace, fmt.Sprintf(`{"id":"evt_gone_%d","type":"user.created","data":{}}`, i))
		g.Expect(status).To(Equal(http.StatusAccepted), "%v", answer)
		g.Expect(answer["deliveries"]).To(Equal(1.0))
	}
	g.Eventually(func(g Gomega) int32 {
		g.Expect(env.Client.Get(t.Context(), clientKey(ep), ep)).To(Succeed())
		return ep.Status.ConsecutiveFailures
	}).WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(Equal(int32(last)))
}

// TestThresholdZeroNeverDisablesOnGone: with afterConsecutiveFailures 0 a
// 410 Gone is a failed attempt like any other (onGone left at its default):
// it is retried per the schedule, and the endpoint is never disabled and
// keeps getting attempts.
func TestThresholdZeroNeverDisablesOnGone(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	gone := newReceiver(t, answerWith(http.StatusGone))
	ep := endpoint(t, namespace, "never", gone.URL, []string{"*"}, goneEndpoint(&hookrelayv1alpha1.AutoDisablePolicy{AfterConsecutiveFailures: ptr.To[int32](0)}))

	publishFailing(t, d, ep, 0, 3)
	g.Expect(condition(g, ep, hookrelayv1alpha1.ConditionDisabled)).NotTo(Equal(metav1.ConditionTrue))
	g.Expect(ep.Status.DisabledAt).To(BeNil())
	g.Expect(gone.got()).To(HaveLen(6), "3 deliveries of 2 attempts each: a 410 is retried")
	g.Expect(ep.Status.LastFailureReason).To(Equal("HTTP 410 (2 attempts)"))

	// Still deliverable: a later event gets its attempts too.
	publishFailing(t, d, ep, 3, 4)
	g.Expect(gone.got()).To(HaveLen(8))
	g.Expect(condition(g, ep, hookrelayv1alpha1.ConditionDisabled)).NotTo(Equal(metav1.ConditionTrue))
	g.Expect(d.metric(g, "hookrelay_held_deliveries")).To(Equal("0"))
}

// TestGoneCountsTowardThresholdWithoutOnGone: with onGone false and a
// threshold of 3, 410 answers are retried and the endpoint is disabled only
// after the third failed delivery.
func TestGoneCountsTowardThresholdWithoutOnGone(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	gone := newReceiver(t, answerWith(http.StatusGone))
	ep := endpoint(t, namespace, "three", gone.URL, []string{"*"}, goneEndpoint(&hookrelayv1alpha1.AutoDisablePolicy{
		AfterConsecutiveFailures: ptr.To[int32](3), OnGone: new(false),
	}))

	publishFailing(t, d, ep, 0, 2)
	g.Expect(condition(g, ep, hookrelayv1alpha1.ConditionDisabled)).To(Equal(metav1.ConditionFalse))
	g.Expect(gone.got()).To(HaveLen(4), "2 deliveries of 2 attempts each")

	publishFailing(t, d, ep, 2, 3)
	g.Eventually(func(g Gomega) metav1.ConditionStatus { return condition(g, ep, hookrelayv1alpha1.ConditionDisabled) }).
		WithTimeout(20 * time.Second).Should(Equal(metav1.ConditionTrue))
	g.Expect(gone.got()).To(HaveLen(6))
	g.Expect(ep.Status.LastFailureReason).To(Equal("HTTP 410 (2 attempts)"))
}
