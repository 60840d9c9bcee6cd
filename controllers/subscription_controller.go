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
// exists and its filter compiles.
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

	if !endpointExists && meta.FindStatusCondition(subscription.Status.Conditions, hookrelayv1alpha1.ConditionReady) == nil &&
		newerThan(subscription.CreationTimestamp.Time, r.status.clock.Now(), publishingGrace) {
		// Applied with its endpoint, it most often comes a moment before
		// it: the endpoint's creation wakes this controller, and one status
		// write (Ready) does instead of two and a Warning.
		return ctrl.Result{RequeueAfter: publishingGrace - r.status.clock.Now().Sub(subscription.CreationTimestamp.Time)}, nil
	}
	var ready *metav1ac.ConditionApplyConfiguration
	if trouble := asTerminal(checkSubscription(&subscription, endpointExists)); trouble != nil {
		ready = r.status.readyCondition(subscription.Status.Conditions, metav1.ConditionFalse, trouble.reason, trouble.message, subscription.Generation)
		if previous := meta.FindStatusCondition(subscription.Status.Conditions, hookrelayv1alpha1.ConditionReady); previous == nil || previous.Message != trouble.message {
			r.reporter.warning(ctx, &subscription, trouble.reason, "Validate", "%s", trouble.message)
		}
	} else {
		ready = r.status.readyCondition(subscription.Status.Conditions, metav1.ConditionTrue, hookrelayv1alpha1.ReasonResolved,
			fmt.Sprintf("delivering to endpoint %q", endpoint.Name), subscription.Generation)
	}
	return ctrl.Result{}, r.status.Apply(ctx, subscription.UID, &subscription,
		hookrelayv1alpha1ac.WebhookSubscription(subscription.Name, subscription.Namespace).WithStatus(
			hookrelayv1alpha1ac.WebhookSubscriptionStatus().WithConditions(ready).WithObservedGeneration(subscription.Generation)))
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
			builder.WithPredicates(predicate.Funcs{
				// Only an endpoint's appearance or removal changes a subscription.
				UpdateFunc: func(e event.UpdateEvent) bool {
					return e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
				},
			})).
		Complete(r)
}

// subscriptionsOfEndpoint maps an endpoint to the subscriptions that name it.
func (r *SubscriptionReconciler) subscriptionsOfEndpoint(ctx context.Context, endpoint client.Object) []reconcile.Request {
	return referrers(ctx, r.Client, &hookrelayv1alpha1.WebhookSubscriptionList{}, endpointRefIndex, endpoint)
}
