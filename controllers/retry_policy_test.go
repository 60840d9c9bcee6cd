package controllers

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/routes"
)

// TestRetryAndAutoDisableChoicesReachTheRoute: the API server fills in
// onGone, jitterPercent, honorRetryAfter and the schedule, and the compiled
// route carries what the endpoint chose; an out-of-range jitter is refused
// with a message naming the field.
func TestRetryAndAutoDisableChoicesReachTheRoute(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	routesNamespace, _ := startManager(t, Options{})
	namespace := env.Namespace(t)
	route := func(g Gomega, name string) routes.Endpoint {
		published, _ := publishedRoutes(g, routesNamespace)
		g.Expect(published).To(HaveKey(routes.EntryKey(namespace, name)))
		return published[routes.EntryKey(namespace, name)]
	}

	defaults := newEndpoint(namespace, "defaults")
	g.Expect(env.Client.Create(ctx, defaults)).To(Succeed())
	g.Expect(defaults.Spec.Retry).To(Equal(&hookrelayv1alpha1.RetryPolicy{
		Schedule: hookrelayv1alpha1.DefaultRetrySchedule(), JitterPercent: ptr.To[int32](10), HonorRetryAfter: new(true),
	}))
	g.Expect(defaults.Spec.AutoDisable).To(Equal(&hookrelayv1alpha1.AutoDisablePolicy{
		AfterConsecutiveFailures: ptr.To[int32](10), OnGone: new(true),
	}))
	g.Eventually(func(g Gomega) {
		r := route(g, "defaults")
		g.Expect(r.JitterPercent).To(Equal(ptr.To[int32](10)))
		g.Expect(r.IgnoreRetryAfter).To(BeFalse())
		g.Expect(r.KeepOnGone).To(BeFalse())
		g.Expect(r.AutoDisableAfter).To(Equal(int32(10)))
	}).WithTimeout(20 * time.Second).Should(Succeed())

	// Palenca-like: never disabled, exact spacing, Retry-After ignored; the
	// schedule is filled in when only the other retry fields are set.
	chosen := newEndpoint(namespace, "chosen")
	chosen.Spec.Retry = &hookrelayv1alpha1.RetryPolicy{JitterPercent: ptr.To[int32](0), HonorRetryAfter: new(false)}
	chosen.Spec.AutoDisable = &hookrelayv1alpha1.AutoDisablePolicy{AfterConsecutiveFailures: ptr.To[int32](0), OnGone: new(false)}
	g.Expect(env.Client.Create(ctx, chosen)).To(Succeed())
	g.Expect(chosen.Spec.Retry.Schedule).To(Equal(hookrelayv1alpha1.DefaultRetrySchedule()))
	g.Eventually(func(g Gomega) {
		r := route(g, "chosen")
		g.Expect(r.RetrySchedule).To(Equal(hookrelayv1alpha1.DefaultRetrySchedule()))
		g.Expect(r.JitterPercent).To(Equal(ptr.To[int32](0)))
		g.Expect(r.IgnoreRetryAfter).To(BeTrue())
		g.Expect(r.KeepOnGone).To(BeTrue())
		g.Expect(r.AutoDisableAfter).To(BeZero())
	}).WithTimeout(20 * time.Second).Should(Succeed())

	tooMuch := newEndpoint(namespace, "too-much-jitter")
	tooMuch.Spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{{Duration: time.Minute}}, JitterPercent: ptr.To[int32](101)}
	err := env.Client.Create(ctx, tooMuch)
	g.Expect(err).To(HaveOccurred())
	g.Expect(err.Error()).To(ContainSubstring("spec.retry.jitterPercent"))
}
