package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

// TestRateLimitSlowsOnlyItsEndpoint: an endpoint limited to 5 deliveries a
// second gets them spread out, while another gets everything at once. A
// smoke check: the exact window is TestRateLimitAdmitsItsBurst in
// dispatcher/delivery, on a fake clock.
func TestRateLimitSlowsOnlyItsEndpoint(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	limited := newReceiver(t, answerWith(http.StatusOK))
	free := newReceiver(t, answerWith(http.StatusOK))
	endpoint(t, namespace, "limited", limited.URL, []string{"*"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.RateLimit = &hookrelayv1alpha1.RateLimit{PerSecond: 5, Burst: 5}
	})
	endpoint(t, namespace, "free", free.URL, []string{"*"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.MaxInFlight = ptr.To[int32](20)
	})

	const events = 25
	for i := range events {
		status, _ := d.publish(t, namespace, fmt.Sprintf(`{"id":"evt_rate_%02d","type":"usage.reported","data":{}}`, i))
		g.Expect(status).To(Equal(http.StatusAccepted))
	}
	g.Eventually(free.eventIDs).WithTimeout(10 * time.Second).Should(HaveLen(events))
	g.Eventually(limited.eventIDs).WithTimeout(30 * time.Second).Should(HaveLen(events))
	// 25 deliveries at 5 a second after a burst of 5 take 4 s; half of that
	// shows the limit is applied at all, whatever the machine's load.
	arrivals := limited.got()
	first, last := arrivals[0].At, arrivals[len(arrivals)-1].At
	g.Expect(last.Sub(first)).To(BeNumerically(">=", 2*time.Second), "the limited endpoint got its deliveries at once")
}

// TestRotatedKeysBothVerifyDuringTheGracePeriod: after a rotation, a
// receiver with only the old key and one with only the new key both verify a
// delivery; some time after the grace period, only the new key does. The
// exact end of the grace period is TestRotationGraceEndsOnTheClock in
// dispatcher/delivery, on a fake clock.
func TestRotatedKeysBothVerifyDuringTheGracePeriod(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	r := newReceiver(t, answerWith(http.StatusOK))
	ep := endpoint(t, namespace, "rotating", r.URL, []string{"*"}, nil)
	oldKey := secretOf(t, ep)

	out, err := kubectlHookrelay(t, "rotate-secret", "rotating", "-n", namespace)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("secret rotation requested"))
	var newKey string
	g.Eventually(func() string { newKey = secretOf(t, ep); return newKey }).WithTimeout(10 * time.Second).ShouldNot(Equal(oldKey))

	// Publish until a delivery carries both keys' signatures (the dispatcher
	// picks up the new keys within a moment).
	n := 0
	var both delivery
	g.Eventually(func(g Gomega) {
		n++
		status, _ := d.publish(t, namespace, fmt.Sprintf(`{"id":"evt_rotation_%d","type":"key.rotated","data":{}}`, n))
		g.Expect(status).To(Equal(http.StatusAccepted))
		g.Eventually(r.eventIDs).WithTimeout(10 * time.Second).Should(HaveLen(n))
		both = r.got()[n-1]
		g.Expect(strings.Count(both.Header.Get("Hookrelay-Signature"), "v1=")).To(Equal(2))
	}).WithTimeout(rotationGrace / 2).WithPolling(100 * time.Millisecond).Should(Succeed())
	for _, key := range []string{oldKey, newKey} {
		g.Expect(verifyPrefixed(both.Header, "Hookrelay", key, both.Body)).To(Succeed())
		g.Expect(verifyStandard(both.Header, key, both.Body)).To(Succeed())
	}

	// After the grace period, only the new key signs.
	g.Eventually(func(g Gomega) {
		n++
		status, _ := d.publish(t, namespace, fmt.Sprintf(`{"id":"evt_rotation_%d","type":"key.rotated","data":{}}`, n))
		g.Expect(status).To(Equal(http.StatusAccepted))
		g.Eventually(r.eventIDs).WithTimeout(10 * time.Second).Should(HaveLen(n))
		last := r.got()[n-1]
		g.Expect(verifyPrefixed(last.Header, "Hookrelay", oldKey, last.Body)).NotTo(Succeed())
		g.Expect(verifyStandard(last.Header, oldKey, last.Body)).NotTo(Succeed())
		g.Expect(verifyPrefixed(last.Header, "Hookrelay", newKey, last.Body)).To(Succeed())
		g.Expect(verifyStandard(last.Header, newKey, last.Body)).To(Succeed())
	}).WithTimeout(3 * rotationGrace).WithPolling(time.Second).Should(Succeed())
}

// TestTooManyRequestsSlowsOnlyThatEndpoint: after a 429 with Retry-After: 1,
// the endpoint is left alone for a while, while another endpoint gets its
// events at once. A smoke check: the exact pause is
// TestTooManyRequestsPausesTheEndpoint in dispatcher/delivery, on a fake
// clock.
func TestTooManyRequestsSlowsOnlyThatEndpoint(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	busy := newReceiver(t, func(n int) (int, time.Duration) {
		if n == 1 {
			return http.StatusTooManyRequests, 0
		}
		return http.StatusOK, 0
	})
	busy.setRetryAfter("1")
	calm := newReceiver(t, answerWith(http.StatusOK))
	endpoint(t, namespace, "busy", busy.URL, []string{"report.*"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.MaxInFlight = ptr.To[int32](1)
		spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{{Duration: 100 * time.Millisecond}}}
	})
	endpoint(t, namespace, "calm", calm.URL, []string{"report.*"}, nil)

	for i := range 5 {
		status, _ := d.publish(t, namespace, fmt.Sprintf(`{"id":"evt_429_%d","type":"report.ready","data":{}}`, i))
		g.Expect(status).To(Equal(http.StatusAccepted))
	}
	g.Eventually(calm.eventIDs).WithTimeout(10 * time.Second).Should(HaveLen(5))
	g.Eventually(busy.eventIDs).WithTimeout(20*time.Second).Should(HaveLen(6), "5 deliveries and the one retried after the 429")
	arrivals := busy.got()
	g.Expect(arrivals[1].At.Sub(arrivals[0].At)).To(BeNumerically(">=", 500*time.Millisecond), "the endpoint was not left alone after its 429")
}
