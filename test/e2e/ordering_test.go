package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/testreceiver"
)

func strictSpec(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
	spec.Delivery = &hookrelayv1alpha1.DeliveryPolicy{Ordering: hookrelayv1alpha1.OrderingStrict}
	spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{
		{Duration: 100 * time.Millisecond}, {Duration: 100 * time.Millisecond}, {Duration: 100 * time.Millisecond},
	}}
}

func publishOrdered(t *testing.T, d *dispatcher, namespace, prefix string, count int) []string {
	t.Helper()
	g := NewWithT(t)
	ids := make([]string, count)
	for i := range count {
		ids[i] = fmt.Sprintf("evt_%s_%03d", prefix, i+1)
		status, answer := d.publish(t, namespace, fmt.Sprintf(`{"id":%q,"type":"login.created","data":{"n":%d}}`, ids[i], i+1))
		g.Expect(status).To(Equal(http.StatusAccepted), "%v", answer)
		g.Expect(answer["deliveries"]).To(Equal(1.0))
	}
	return ids
}

// TestStrictOrderingSurvivesRetries: 200 events to a Strict endpoint whose
// receiver fails the 5th and 17th delivery twice arrive in order, each
// exactly once, after its success.
func TestStrictOrderingSurvivesRetries(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	receiver := testreceiver.NewOrdered(t, map[string]int{"evt_r_005": 2, "evt_r_017": 2})
	endpoint(t, namespace, "ordered", receiver.URL, []string{"*"}, strictSpec)

	ids := publishOrdered(t, d, namespace, "r", 200)
	g.Eventually(receiver.Delivered).WithTimeout(60 * time.Second).WithPolling(50 * time.Millisecond).Should(HaveLen(len(ids)))
	g.Expect(receiver.Delivered()).To(Equal(ids))
	g.Expect(receiver.Attempts("evt_r_005")).To(Equal(3))
	g.Expect(receiver.Attempts("evt_r_017")).To(Equal(3))
}

// TestStrictOrderingReleasesHeldEventsInOrder: 200 events held while a
// Strict endpoint is paused are released in order when it is unpaused.
func TestStrictOrderingReleasesHeldEventsInOrder(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	receiver := testreceiver.NewOrdered(t, nil)
	ep := endpoint(t, namespace, "held", receiver.URL, []string{"*"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		strictSpec(spec)
		spec.Paused = true
	})

	ids := publishOrdered(t, d, namespace, "h", 200)
	g.Eventually(func(g Gomega) string { return d.metric(g, "hookrelay_held_deliveries") }).
		WithTimeout(10 * time.Second).Should(Equal("200"))
	g.Expect(receiver.Delivered()).To(BeEmpty())

	patch := client.MergeFrom(ep.DeepCopy())
	ep.Spec.Paused = false
	g.Expect(env.Client.Patch(t.Context(), ep, patch)).To(Succeed())
	g.Eventually(receiver.Delivered).WithTimeout(60 * time.Second).WithPolling(50 * time.Millisecond).Should(HaveLen(len(ids)))
	g.Expect(receiver.Delivered()).To(Equal(ids))
	g.Expect(d.metric(g, "hookrelay_held_deliveries")).To(Equal("0"))
}

// TestStrictOrderingAfterAutoDisable: an auto-disabled Strict endpoint holds
// the events behind the failure that disabled it and those published
// later; re-enabling releases them all in order.
func TestStrictOrderingAfterAutoDisable(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	receiver := testreceiver.NewOrdered(t, map[string]int{"evt_d_003": 4})
	endpoint(t, namespace, "disabled", receiver.URL, []string{"*"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		strictSpec(spec)
		spec.AutoDisable = &hookrelayv1alpha1.AutoDisablePolicy{AfterConsecutiveFailures: ptr.To[int32](1)}
	})

	ids := publishOrdered(t, d, namespace, "d", 200)
	g.Eventually(func(g Gomega) string { return d.metric(g, "hookrelay_held_deliveries") }).
		WithTimeout(30 * time.Second).Should(Equal("197"))
	g.Expect(receiver.Delivered()).To(Equal(ids[:2]))

	out, err := kubectlHookrelay(t, "reenable", "disabled", "-n", namespace)
	g.Expect(err).NotTo(HaveOccurred(), out)
	want := slices.Concat(ids[:2], ids[3:])
	g.Eventually(receiver.Delivered).WithTimeout(60 * time.Second).WithPolling(50 * time.Millisecond).Should(HaveLen(len(want)))
	g.Expect(receiver.Delivered()).To(Equal(want))
}
