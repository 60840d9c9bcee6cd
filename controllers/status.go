package controllers

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/utils/clock"
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

// forgetDeleted is a predicate that drops what was remembered of an object
// when it is deleted, and lets every event through.
func (w statusWriter) forgetDeleted() predicate.Funcs {
	return predicate.Funcs{DeleteFunc: func(e event.DeleteEvent) bool {
		w.Forget(e.Object.GetUID())
		return true
	}}
}
