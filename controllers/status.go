package controllers

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

// FieldOwner is the Server-Side Apply field manager of everything the
// controllers write in a status. The dispatcher applies its own conditions
// under another field owner, and neither erases the other's.
const FieldOwner = "hookrelay-controller"

// statusWriter applies the controller's share of a status: the Ready
// condition and a few plain fields.
type statusWriter struct {
	client client.Client
	clock  clock.PassiveClock
	// written remembers, by object UID, the status this process last
	// applied: the cache can still show an older one right after a write.
	// forgetDeleted drops an entry once its object is gone.
	written *sync.Map
}

// readyCondition builds the Ready condition, keeping lastTransitionTime when
// the status did not change.
func (w statusWriter) readyCondition(existing []metav1.Condition, status metav1.ConditionStatus, reason, message string, generation int64) metav1.Condition {
	condition := metav1.Condition{
		Type:               hookrelayv1alpha1.ConditionReady,
		Status:             status,
		Reason:             reason,
		Message:            message,
		ObservedGeneration: generation,
		LastTransitionTime: metav1.NewTime(w.clock.Now().UTC().Truncate(1e9)),
	}
	if previous := meta.FindStatusCondition(existing, condition.Type); previous != nil && previous.Status == status {
		condition.LastTransitionTime = previous.LastTransitionTime
	}
	return condition
}

// apply writes fields (the controller's share of obj's status, with the Ready
// condition under "conditions") with Server-Side Apply, unless obj's status
// already holds them.
func (w statusWriter) apply(ctx context.Context, obj client.Object, ready metav1.Condition, fields map[string]any) error {
	condition, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&ready)
	if err != nil {
		return fmt.Errorf("converting condition: %w", err)
	}
	desired := map[string]any{"conditions": []any{condition}}
	maps.Copy(desired, fields)
	current, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return fmt.Errorf("converting %s: %w", obj.GetName(), err)
	}
	currentStatus, _, _ := unstructured.NestedMap(current, "status")
	last, wrote := w.written.Load(obj.GetUID())
	if statusHolds(currentStatus, desired) && (!wrote || reflect.DeepEqual(last, desired)) {
		return nil
	}

	gvk, err := w.client.GroupVersionKindFor(obj)
	if err != nil {
		return err
	}
	patch := &unstructured.Unstructured{Object: map[string]any{"status": desired}}
	patch.SetGroupVersionKind(gvk)
	patch.SetNamespace(obj.GetNamespace())
	patch.SetName(obj.GetName())
	if err := w.client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(patch),
		client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying status of %s/%s: %w", obj.GetNamespace(), obj.GetName(), err)
	}
	w.written.Store(obj.GetUID(), desired)
	return nil
}

// forgetDeleted is a predicate that drops what was remembered of an object
// when it is deleted, and lets every event through.
func (w statusWriter) forgetDeleted() predicate.Funcs {
	return predicate.Funcs{DeleteFunc: func(e event.DeleteEvent) bool {
		w.written.Delete(e.Object.GetUID())
		return true
	}}
}

// statusHolds reports whether current already has every desired field, and
// each desired condition exactly.
func statusHolds(current, desired map[string]any) bool {
	for key, want := range desired {
		if key != "conditions" {
			if !reflect.DeepEqual(current[key], want) {
				return false
			}
			continue
		}
		have, _ := current["conditions"].([]any)
		for _, condition := range want.([]any) {
			if !containsCondition(have, condition.(map[string]any)) {
				return false
			}
		}
	}
	return true
}

func containsCondition(conditions []any, want map[string]any) bool {
	for _, c := range conditions {
		if condition, ok := c.(map[string]any); ok && condition["type"] == want["type"] {
			return reflect.DeepEqual(condition, want)
		}
	}
	return false
}
