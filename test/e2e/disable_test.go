package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

// TestAutoDisableAndReenable: ten failed deliveries in a row disable the
// endpoint (kubectl shows it), later events are held, and the re-enable
// annotation delivers them oldest first.
func TestAutoDisableAndReenable(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	failing := newReceiver(t, answerWith(http.StatusInternalServerError))
	ep := endpoint(t, namespace, "flaky", failing.URL, []string{"*"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{{Duration: 10 * time.Millisecond}}}
		spec.MaxInFlight = ptr.To[int32](1)
	})

	for i := range 10 {
		status, _ := d.publish(t, namespace, fmt.Sprintf(`{"id":"evt_fail_%d","type":"user.created","data":{}}`, i))
		g.Expect(status).To(Equal(http.StatusAccepted))
	}
	disabled := func(g Gomega) string {
		stdout, stderr, err := env.Kubectl(context.Background(), "", "get", "whep", "flaky", "-n", namespace,
			"-o", `jsonpath={.status.conditions[?(@.type=="Disabled")].status}`)
		g.Expect(err).NotTo(HaveOccurred(), stderr)
		return stdout
	}
	g.Eventually(disabled).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Equal("True"))
	g.Expect(failing.got()).To(HaveLen(20), "10 deliveries of 2 attempts each")
	g.Expect(env.Client.Get(t.Context(), clientKey(ep), ep)).To(Succeed())
	g.Expect(ep.Status.ConsecutiveFailures).To(Equal(int32(10)))
	g.Expect(ep.Status.DisabledAt).NotTo(BeNil())
	// Ready follows Disabled, a moment later: the controller derives it.
	g.Eventually(func(g Gomega) []string {
		stdout, stderr, err := env.Kubectl(context.Background(), "", "get", "whep", "flaky", "-n", namespace)
		g.Expect(err).NotTo(HaveOccurred(), stderr)
		return strings.Fields(strings.Split(stdout, "\n")[1])[2:6]
	}).WithTimeout(10*time.Second).Should(Equal([]string{"False", "AutoDisabled", "True", "10"}), "READY REASON DISABLED FAILURES")
	stdout, _, err := env.Kubectl(context.Background(), "", "get", "events", "-n", namespace, "--field-selector", "reason=AutoDisabled")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(stdout).To(ContainSubstring("disabled after 10 consecutive failed deliveries"))

	// Further events are held: no attempt reaches the receiver.
	failing.setAnswer(answerWith(http.StatusOK))
	for i := range 3 {
		status, answer := d.publish(t, namespace, fmt.Sprintf(`{"id":"evt_held_%d","type":"user.created","data":{}}`, i))
		g.Expect(status).To(Equal(http.StatusAccepted))
		g.Expect(answer["deliveries"]).To(Equal(1.0))
	}
	g.Eventually(func(g Gomega) string { return d.metric(g, "hookrelay_held_deliveries") }).
		WithTimeout(10 * time.Second).Should(Equal("3"))
	g.Expect(failing.got()).To(HaveLen(20))

	// Re-enabling delivers the held events, oldest first.
	out, err := kubectlHookrelay(t, "reenable", "flaky", "-n", namespace)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func() []string { return failing.eventIDs()[20:] }).WithTimeout(20 * time.Second).
		Should(Equal([]string{"evt_held_0", "evt_held_1", "evt_held_2"}))
	g.Eventually(disabled).WithTimeout(20 * time.Second).Should(Equal("False"))
	g.Eventually(func(g Gomega) string {
		g.Expect(env.Client.Get(t.Context(), clientKey(ep), ep)).To(Succeed())
		for _, c := range ep.Status.Conditions {
			if c.Type == hookrelayv1alpha1.ConditionDisabled {
				return c.Reason
			}
		}
		return ""
	}).WithTimeout(10 * time.Second).Should(Equal(hookrelayv1alpha1.ReasonReenabled))
	g.Expect(ep.Status.ConsecutiveFailures).To(BeZero())
	g.Expect(d.metric(g, "hookrelay_held_deliveries")).To(Equal("0"))
}

// TestGoneDisablesAtOnce: a 410 answer disables the endpoint after one attempt.
func TestGoneDisablesAtOnce(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	gone := newReceiver(t, answerWith(http.StatusGone))
	ep := endpoint(t, namespace, "gone", gone.URL, []string{"*"}, palmSpec)
	status, _ := d.publish(t, namespace, `{"id":"evt_gone","type":"user.created","data":{}}`)
	g.Expect(status).To(Equal(http.StatusAccepted))
	g.Eventually(func(g Gomega) metav1.ConditionStatus { return condition(g, ep, hookrelayv1alpha1.ConditionDisabled) }).
		WithTimeout(20 * time.Second).Should(Equal(metav1.ConditionTrue))
	g.Expect(gone.got()).To(HaveLen(1), "no retry after 410 Gone")
	g.Expect(ep.Status.LastFailureReason).To(ContainSubstring("410 Gone"))
}

// TestAutoDisabledEventWithLongReason: a failure reason that makes the
// AutoDisabled note longer than the API server's 1 KiB limit (a connection
// error quoting a long URL) still records the Event, cut with an ellipsis.
func TestAutoDisabledEventWithLongReason(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	closed := newRefusingPort(t)
	ep := endpoint(t, namespace, "long", closed.URL+"/"+strings.Repeat("segment/", 150), []string{"*"}, disableAtFirstFailure)
	status, _ := d.publish(t, namespace, `{"id":"evt_long","type":"user.created","data":{}}`)
	g.Expect(status).To(Equal(http.StatusAccepted))
	g.Eventually(func(g Gomega) metav1.ConditionStatus { return condition(g, ep, hookrelayv1alpha1.ConditionDisabled) }).
		WithTimeout(20 * time.Second).Should(Equal(metav1.ConditionTrue))
	g.Expect(len(ep.Status.LastFailureReason)).To(BeNumerically(">", 1024))

	g.Eventually(func(g Gomega) string {
		var events corev1.EventList
		g.Expect(env.Client.List(t.Context(), &events, client.InNamespace(namespace),
			client.MatchingFields{"reason": hookrelayv1alpha1.ReasonAutoDisabled})).To(Succeed())
		g.Expect(events.Items).To(HaveLen(1))
		return events.Items[0].Message
	}).WithTimeout(20 * time.Second).Should(SatisfyAll(
		HavePrefix("disabled after 1 consecutive failed deliveries (last: Post"),
		HaveSuffix("…"),
		WithTransform(func(note string) int { return len(note) }, BeNumerically("<=", 1024)),
	))
}

// disableAtFirstFailure retries once, 10ms later, and disables the endpoint
// when that delivery has failed.
func disableAtFirstFailure(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
	spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{{Duration: 10 * time.Millisecond}}}
	spec.AutoDisable = &hookrelayv1alpha1.AutoDisablePolicy{AfterConsecutiveFailures: ptr.To[int32](1)}
}
