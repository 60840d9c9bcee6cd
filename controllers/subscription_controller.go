package controllers

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hookrelayv1alpha1ac "github.com/hookrelay/hookrelay/api/applyconfiguration/api/v1alpha1"
	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	webhookv1alpha1 "github.com/hookrelay/hookrelay/internal/webhook/v1alpha1"
)

// endpointRefIndex indexes subscriptions by spec.endpointRef.name, so that an
// endpoint's appearance or removal re-reconciles its subscriptions.
const endpointRefIndex = "spec.endpointRef.name"

// SubscriptionReconciler reports whether a WebhookSubscription's endpoint
// exists and is Ready, and its filter compiles.
type SubscriptionReconciler struct {
	client.Client

	reporter reporter
	status   statusWriter
}

// +kubebuilder:rbac:groups=hookrelay.dev,resources=webhooksubscriptions,verbs=get;list;watch
// +kubebuilder:rbac:groups=hookrelay.dev,resources=webhooksubscriptions/status,verbs=get;patch

// Reconcile resolves the endpoint, compiles the filter and reports Ready.
func (r *SubscriptionReconciler) Reconcile(ctx context.Context, req reconcile.Request) (ctrl.Result, error) {
	var subscription hookrelayv1alpha1.WebhookSubscription
	if err := r.Get(ctx, req.NamespacedName, &subscription); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !subscription.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}

	var endpoint hookrelayv1alpha1.WebhookEndpoint
	err := r.Get(ctx, types.NamespacedName{Namespace: subscription.Namespace, Name: subscription.Spec.EndpointRef.Name}, &endpoint)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	endpointExists := err == nil && endpoint.DeletionTimestamp.IsZero()

	trouble := asTerminal(checkSubscription(&subscription, endpointExists))
	if trouble == nil {
		trouble = endpointNotReady(&endpoint)
	}
	if meta.FindStatusCondition(subscription.Status.Conditions, hookrelayv1alpha1.ConditionReady) == nil {
		switch {
		case trouble != nil && trouble.unknown && meta.FindStatusCondition(endpoint.Status.Conditions, hookrelayv1alpha1.ConditionReady) == nil:
			// Applied with its endpoint, it most often comes before the
			// endpoint has a Ready condition; the endpoint controller
			// writes one, which wakes this controller: one status write
			// (Ready) does instead of two. Nothing to look at before that.
			return ctrl.Result{}, nil
		case !endpointExists && newerThan(subscription.CreationTimestamp.Time, r.status.clock.Now(), publishingGrace):
			// Or a moment before its endpoint, whose creation wakes this
			// controller: no write and no Warning meanwhile.
			return ctrl.Result{RequeueAfter: publishingGrace - r.status.clock.Now().Sub(subscription.CreationTimestamp.Time)}, nil
		}
	}
	var conditions []*metav1ac.ConditionApplyConfiguration
	switch {
	case trouble != nil && trouble.unknown:
		conditions = append(conditions, r.status.readyCondition(subscription.Status.Conditions, metav1.ConditionUnknown,
			trouble.reason, trouble.message, subscription.Generation))
	case trouble != nil:
		conditions = r.status.troubleConditions(subscription.Status.Conditions, trouble, subscription.Generation)
		if previous := meta.FindStatusCondition(subscription.Status.Conditions, hookrelayv1alpha1.ConditionReady); previous == nil || previous.Message != trouble.message {
			r.reporter.warning(ctx, &subscription, trouble.reason, "Validate", "%s", trouble.message)
		}
	default:
		conditions = append(conditions, r.status.readyCondition(subscription.Status.Conditions, metav1.ConditionTrue, hookrelayv1alpha1.ReasonResolved,
			fmt.Sprintf("delivering to endpoint %q", endpoint.Name), subscription.Generation))
	}
	return ctrl.Result{}, r.status.Apply(ctx, subscription.UID, &subscription,
		hookrelayv1alpha1ac.WebhookSubscription(subscription.Name, subscription.Namespace).WithStatus(
			hookrelayv1alpha1ac.WebhookSubscriptionStatus().WithConditions(conditions...).WithObservedGeneration(subscription.Generation)))
}

// endpointNotReady says why a subscription whose endpoint exists cannot
// deliver yet: the endpoint's Ready is False (a terminalError) or not known
// yet (one marked unknown); nil when it is True. A subscription is only as
// healthy as its endpoint, so that a health check of the subscription alone
// (kstatus, Argo CD) does not call it healthy while nothing is delivered.
func endpointNotReady(endpoint *hookrelayv1alpha1.WebhookEndpoint) *terminalError {
	ready := meta.FindStatusCondition(endpoint.Status.Conditions, hookrelayv1alpha1.ConditionReady)
	switch {
	case ready == nil:
		return &terminalError{reason: hookrelayv1alpha1.ReasonEndpointNotReady, unknown: true,
			message: fmt.Sprintf("endpoint %q has no Ready condition yet", endpoint.Name)}
	case ready.Status == metav1.ConditionTrue:
		return nil
	case ready.Status == metav1.ConditionFalse:
		return &terminalError{reason: hookrelayv1alpha1.ReasonEndpointNotReady,
			message: fmt.Sprintf("endpoint %q is not Ready (%s): %s", endpoint.Name, ready.Reason, ready.Message)}
	default:
		return &terminalError{reason: hookrelayv1alpha1.ReasonEndpointNotReady, unknown: true,
			message: fmt.Sprintf("endpoint %q is not Ready yet (%s): %s", endpoint.Name, ready.Reason, ready.Message)}
	}
}

// checkSubscription finds what admission cannot check in a subscription, as
// a terminalError. The routes compiler uses it too, to publish only Ready
// subscriptions.
func checkSubscription(subscription *hookrelayv1alpha1.WebhookSubscription, endpointExists bool) error {
	if !endpointExists {
		return &terminalError{reason: hookrelayv1alpha1.ReasonEndpointNotFound, message: fmt.Sprintf(
			"spec.endpointRef.name: WebhookEndpoint %q not found in namespace %q", subscription.Spec.EndpointRef.Name, subscription.Namespace)}
	}
	if subscription.Spec.Filter != "" {
		if err := webhookv1alpha1.ValidateFilter(subscription.Spec.Filter); err != nil {
			return &terminalError{reason: hookrelayv1alpha1.ReasonFilterInvalid, message: webhookv1alpha1.Message(err)}
		}
	}
	return nil
}

// SetupWithManager watches subscriptions and the endpoints they name.
func (r *SubscriptionReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &hookrelayv1alpha1.WebhookSubscription{}, endpointRefIndex,
		func(obj client.Object) []string {
			return []string{obj.(*hookrelayv1alpha1.WebhookSubscription).Spec.EndpointRef.Name}
		}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("webhooksubscription").
		For(&hookrelayv1alpha1.WebhookSubscription{}, builder.WithPredicates(predicate.GenerationChangedPredicate{}, r.status.forgetDeleted())).
		Watches(&hookrelayv1alpha1.WebhookEndpoint{}, handler.EnqueueRequestsFromMapFunc(r.subscriptionsOfEndpoint),
			builder.WithPredicates(predicate.Or[client.Object](predicate.Funcs{
				// An endpoint's appearance, removal or Ready condition
				// changes a subscription.
				UpdateFunc: func(e event.UpdateEvent) bool {
					return e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
				},
			}, conditionChanged(hookrelayv1alpha1.ConditionReady)))).
		Complete(r)
}

// subscriptionsOfEndpoint maps an endpoint to the subscriptions that name it.
func (r *SubscriptionReconciler) subscriptionsOfEndpoint(ctx context.Context, endpoint client.Object) []reconcile.Request {
	return referrers(ctx, r.Client, &hookrelayv1alpha1.WebhookSubscriptionList{}, endpointRefIndex, endpoint)
}
