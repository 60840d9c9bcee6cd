package controllers

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/statusapply"
)

// FieldOwner is the Server-Side Apply field manager of everything the
// controllers write in a status. The dispatcher applies its own conditions
// under another field owner, and neither erases the other's.
const FieldOwner = "hookrelay-controller"

// statusWriter applies the controller's share of a status: the Ready
// condition and a few plain fields. Both controllers share one, so that what
// it remembers of each object is dropped in one place.
type statusWriter struct {
	*statusapply.Writer
	clock clock.PassiveClock
}

// readyCondition builds the Ready condition, keeping lastTransitionTime when
// the status did not change.
func (w statusWriter) readyCondition(existing []metav1.Condition, status metav1.ConditionStatus, reason, message string, generation int64) *metav1ac.ConditionApplyConfiguration {
	ready := statusapply.SetConditions(existing, w.clock.Now(), metav1.Condition{
		Type:               hookrelayv1alpha1.ConditionReady,
		Status:             status,
		Reason:             reason,
		Message:            message,
		ObservedGeneration: generation,
	})
	return statusapply.Conditions(ready...)[0]
}

// troubleConditions builds Ready=False for a terminalError and, when its
// reason is a stalling one, Stalled=True with the same reason and message.
// The controller owns Stalled: leaving it out of a later apply removes it.
func (w statusWriter) troubleConditions(existing []metav1.Condition, trouble *terminalError, generation int64) []*metav1ac.ConditionApplyConfiguration {
	ready := w.readyCondition(existing, metav1.ConditionFalse, trouble.reason, trouble.message, generation)
	if !stalls(trouble.reason) {
		return []*metav1ac.ConditionApplyConfiguration{ready}
	}
	stalled := statusapply.SetConditions(existing, w.clock.Now(), metav1.Condition{
		Type:               hookrelayv1alpha1.ConditionStalled,
		Status:             metav1.ConditionTrue,
		Reason:             trouble.reason,
		Message:            trouble.message,
		ObservedGeneration: generation,
	})
	return append([]*metav1ac.ConditionApplyConfiguration{ready}, statusapply.Conditions(stalled...)...)
}

// stalls says whether a Ready=False reason is a terminal spec error: one
// that no retry fixes, only a change to the spec or to a Secret it names.
// kstatus reads Stalled=True as Failed. A missing endpoint is not one: a
// subscription applied before its endpoint waits for it.
func stalls(reason string) bool {
	switch reason {
	case hookrelayv1alpha1.ReasonInsecureURL, hookrelayv1alpha1.ReasonTransformInvalid, hookrelayv1alpha1.ReasonFilterInvalid,
		hookrelayv1alpha1.ReasonSecretInvalid, hookrelayv1alpha1.ReasonRouteTooLarge:
		return true
	}
	return false
}

// conditionChanged is a predicate that lets through updates that change the
// status, reason or message of a condition of the given type, as well as
// creations and deletions: the conditions another writer owns (the
// dispatcher's Disabled, an endpoint's Ready for its subscriptions) that
// this controller derives from.
func conditionChanged(conditionType string) predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return !sameCondition(conditionsOf(e.ObjectOld), conditionsOf(e.ObjectNew), conditionType)
	}}
}

// pausedHeldChanged is a predicate that lets through updates of a paused
// endpoint's held count, which the dispatcher writes and its Ready message
// says.
func pausedHeldChanged() predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		previous, okOld := e.ObjectOld.(*hookrelayv1alpha1.WebhookEndpoint)
		endpoint, okNew := e.ObjectNew.(*hookrelayv1alpha1.WebhookEndpoint)
		return okOld && okNew && endpoint.Spec.Paused && previous.Status.HeldDeliveries != endpoint.Status.HeldDeliveries
	}}
}

func conditionsOf(obj client.Object) []metav1.Condition {
	switch o := obj.(type) {
	case *hookrelayv1alpha1.WebhookEndpoint:
		return o.Status.Conditions
	case *hookrelayv1alpha1.WebhookSubscription:
		return o.Status.Conditions
	}
	return nil
}

func sameCondition(a, b []metav1.Condition, conditionType string) bool {
	x, y := meta.FindStatusCondition(a, conditionType), meta.FindStatusCondition(b, conditionType)
	if x == nil || y == nil {
		return x == y
	}
	return x.Status == y.Status && x.Reason == y.Reason && x.Message == y.Message
}

// forgetDeleted is a predicate that drops what was remembered of an object
// when it is deleted, and lets every event through.
func (w statusWriter) forgetDeleted() predicate.Funcs {
	return predicate.Funcs{DeleteFunc: func(e event.DeleteEvent) bool {
		w.Forget(e.Object.GetUID())
		return true
	}}
}
