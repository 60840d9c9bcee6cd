package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

func TestSubscriptionWaitsForItsEndpoint(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startManager(t, Options{})
	namespace := env.Namespace(t)

	subscription := newSubscription(namespace, "verifications", "palm", "user.verification.completed", "business.*")
	g.Expect(env.Client.Create(ctx, subscription)).To(Succeed())
	condition := eventuallyReady(t, subscription, metav1.ConditionFalse, hookrelayv1alpha1.ReasonEndpointNotFound)
	g.Expect(condition.Message).To(ContainSubstring(`WebhookEndpoint "palm" not found`))

	// The endpoint's creation reaches the subscription through a watch.
	g.Expect(env.Client.Create(ctx, newEndpoint(namespace, "palm"))).To(Succeed())
	g.Eventually(func(g Gomega) {
		condition := readyOf(g, subscription)
		g.Expect(condition.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(condition.Reason).To(Equal(hookrelayv1alpha1.ReasonResolved))
	}).WithTimeout(2 * time.Second).WithPolling(20 * time.Millisecond).Should(Succeed())
	g.Expect(subscription.Status.ObservedGeneration).To(Equal(subscription.Generation))

	// And its removal too.
	g.Expect(env.Client.Delete(ctx, newEndpoint(namespace, "palm"))).To(Succeed())
	eventuallyReady(t, subscription, metav1.ConditionFalse, hookrelayv1alpha1.ReasonEndpointNotFound)
}

// TestSubscriptionWithBrokenFilter: a filter that admission would refuse
// (stored where the webhook does not look, as before it existed) makes the
// subscription Ready=False.
func TestSubscriptionWithBrokenFilter(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startManager(t, Options{})
	namespace := env.NamespaceWithoutAdmission(t)
	g.Expect(env.Client.Create(ctx, newEndpoint(namespace, "palenca"))).To(Succeed())

	subscription := newSubscription(namespace, "uber-logins", "palenca", "login.*")
	subscription.Spec.Filter = `event.data.platform ==`
	g.Expect(env.Client.Create(ctx, subscription)).To(Succeed())
	condition := eventuallyReady(t, subscription, metav1.ConditionFalse, hookrelayv1alpha1.ReasonFilterInvalid)
	g.Expect(condition.Message).To(HavePrefix("spec.filter: ERROR: <input>:1:"))
	g.Expect(condition.Message).To(ContainSubstring("Syntax error"))

	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(subscription), subscription)).To(Succeed())
	subscription.Spec.Filter = `event.data.platform == "uber"`
	g.Expect(env.Client.Update(ctx, subscription)).To(Succeed())
	eventuallyReady(t, subscription, metav1.ConditionTrue, hookrelayv1alpha1.ReasonResolved)
}

func TestSubscriptionWithOverBudgetFilter(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startManager(t, Options{})
	// Stored past admission, as before the webhook existed: the controller refuses it too.
	namespace := env.NamespaceWithoutAdmission(t)
	g.Expect(env.Client.Create(ctx, newEndpoint(namespace, "palenca"))).To(Succeed())

	subscription := newSubscription(namespace, "bomb", "palenca", "login.*")
	subscription.Spec.Filter = `event.data.s.replace('', '` + strings.Repeat("y", 100) + `').size() > 0`
	g.Expect(env.Client.Create(ctx, subscription)).To(Succeed())
	condition := eventuallyReady(t, subscription, metav1.ConditionFalse, hookrelayv1alpha1.ReasonFilterInvalid)
	g.Expect(condition.Message).To(HavePrefix("spec.filter: estimated cost "))
	g.Expect(condition.Message).To(ContainSubstring("exceeds the budget of 10000000 CEL cost units"))
}
