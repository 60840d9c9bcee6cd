// Package status writes the dispatcher's share of WebhookEndpoint status —
// the Disabled and Delivering conditions and the delivery counters — with
// Server-Side Apply under its own field owner, so the controller's Ready
// condition is never touched. Writes are coalesced to at most one per
// endpoint per interval.
package status

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/dispatcher/delivery"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/eventnote"
	"github.com/hookrelay/hookrelay/internal/routes"
)

// FieldOwner is the Server-Side Apply field manager of the dispatcher.
const FieldOwner = "hookrelay-dispatcher"

// Reasons of the Delivering condition.
const (
	ReasonDelivered    = "Delivered"
	ReasonFailing      = "Failing"
	ReasonNoDeliveries = "NoDeliveries"
)

// Reporter implements delivery.StatusSink.
type Reporter struct {
	Client   client.Client
	Recorder events.EventRecorder
	Log      logr.Logger
	// Interval is the shortest time between two writes to one endpoint.
	Interval time.Duration

	mu    sync.Mutex
	dirty map[string]report
	// applied is keyed by endpoint UID: a new endpoint of the same name
	// has no status yet.
	applied map[string]appliedConditions
}

// report is the latest health of an endpoint, waiting to be written; the
// conditions derive from it alone.
type report struct {
	endpoint *routes.Route
	health   store.Health
}

// appliedConditions remembers what was written, to keep lastTransitionTime
// and to skip writes that change nothing.
type appliedConditions struct {
	disabled, delivering metav1.Condition
	status               map[string]any
}

// HealthChanged implements delivery.StatusSink.
func (r *Reporter) HealthChanged(endpoint *routes.Route, health store.Health, change delivery.Change) {
	r.mu.Lock()
	if r.dirty == nil {
		r.dirty = map[string]report{}
	}
	r.dirty[endpoint.ID] = report{endpoint: endpoint, health: health}
	r.mu.Unlock()

	switch change {
	case delivery.ChangeDisabled:
		r.event(endpoint, corev1.EventTypeWarning, hookrelayv1alpha1.ReasonAutoDisabled, "Disable", disabledMessage(health))
	case delivery.ChangeReenabled:
		r.event(endpoint, corev1.EventTypeNormal, hookrelayv1alpha1.ReasonReenabled, "Reenable",
			"re-enabled by annotation "+hookrelayv1alpha1.AnnotationReenableRequestedAt+"; releasing held deliveries oldest first")
	}
}

func disabledMessage(health store.Health) string {
	return fmt.Sprintf("disabled after %d consecutive failed deliveries (last: %s); set annotation %s to re-enable",
		health.ConsecutiveFailures, health.LastFailureReason, hookrelayv1alpha1.AnnotationReenableRequestedAt)
}

func (r *Reporter) event(endpoint *routes.Route, eventType, reason, action, note string) {
	r.Log.Info(note, "endpoint", endpoint.ID, "reason", reason)
	if r.Recorder == nil {
		return
	}
	regarding := &hookrelayv1alpha1.WebhookEndpoint{
		TypeMeta:   metav1.TypeMeta{APIVersion: hookrelayv1alpha1.GroupVersion.String(), Kind: "WebhookEndpoint"},
		ObjectMeta: metav1.ObjectMeta{Namespace: endpoint.Namespace, Name: endpoint.Name, UID: types.UID(endpoint.UID)},
	}
	r.Recorder.Eventf(regarding, nil, eventType, reason, action, "%s", eventnote.Fit(note))
}

// Run writes the queued changes every Interval until ctx ends, then once more.
func (r *Reporter) Run(ctx context.Context) {
	ticker := time.NewTicker(r.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r.Flush(flushCtx)
			cancel()
			return
		case <-ticker.C:
			r.Flush(ctx)
		}
	}
}

// Flush writes every queued change now.
func (r *Reporter) Flush(ctx context.Context) {
	r.mu.Lock()
	dirty := r.dirty
	r.dirty = nil
	r.mu.Unlock()
	for id, rep := range dirty {
		err := r.apply(ctx, rep)
		if apierrors.IsNotFound(err) {
			continue // the endpoint was deleted
		}
		if err != nil {
			r.Log.Error(err, "writing endpoint status; will try again", "endpoint", id)
			r.mu.Lock()
			if r.dirty == nil {
				r.dirty = map[string]report{}
			}
			if _, newer := r.dirty[id]; !newer {
				r.dirty[id] = rep
			}
			r.mu.Unlock()
		}
	}
}

func (r *Reporter) apply(ctx context.Context, rep report) error {
	now := metav1.NewTime(time.Now().UTC().Truncate(time.Second))
	health := rep.health
	r.mu.Lock()
	if r.applied == nil {
		r.applied = map[string]appliedConditions{}
	}
	previous := r.applied[rep.endpoint.UID]
	r.mu.Unlock()

	disabled := metav1.Condition{Type: hookrelayv1alpha1.ConditionDisabled, Status: metav1.ConditionFalse, Reason: hookrelayv1alpha1.ReasonEnabled,
		Message: "the endpoint receives deliveries"}
	switch {
	case health.Disabled:
		disabled.Status, disabled.Reason, disabled.Message = metav1.ConditionTrue, hookrelayv1alpha1.ReasonAutoDisabled, disabledMessage(health)
	case health.ReenableToken != "":
		disabled.Reason = hookrelayv1alpha1.ReasonReenabled
		disabled.Message = "re-enabled by annotation " + hookrelayv1alpha1.AnnotationReenableRequestedAt + "=" + health.ReenableToken
	}
	delivering := metav1.Condition{Type: hookrelayv1alpha1.ConditionDelivering, Status: metav1.ConditionUnknown, Reason: ReasonNoDeliveries,
		Message: "no delivery has finished yet"}
	switch {
	case health.ConsecutiveFailures > 0:
		delivering.Status, delivering.Reason = metav1.ConditionFalse, ReasonFailing
		delivering.Message = fmt.Sprintf("%d deliveries in a row failed; last: %s", health.ConsecutiveFailures, health.LastFailureReason)
	case health.LastSuccess != nil:
		delivering.Status, delivering.Reason, delivering.Message = metav1.ConditionTrue, ReasonDelivered, "the last delivery succeeded"
	}
	for _, c := range []struct{ condition, before *metav1.Condition }{{&disabled, &previous.disabled}, {&delivering, &previous.delivering}} {
		c.condition.ObservedGeneration = rep.endpoint.Generation
		c.condition.LastTransitionTime = now
		if c.before.Status == c.condition.Status {
			c.condition.LastTransitionTime = c.before.LastTransitionTime
		}
	}

	status := map[string]any{"consecutiveFailures": int64(health.ConsecutiveFailures)}
	setTime := func(field string, t *time.Time) {
		if t != nil {
			status[field] = t.UTC().Format(time.RFC3339)
		}
	}
	setTime("lastSuccessTime", health.LastSuccess)
	setTime("lastFailureTime", health.LastFailure)
	setTime("disabledAt", health.DisabledAt)
	if health.LastFailureReason != "" {
		status["lastFailureReason"] = health.LastFailureReason
	}
	conditions := make([]any, 0, 2)
	for _, condition := range []metav1.Condition{disabled, delivering} {
		converted, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&condition)
		if err != nil {
			return err
		}
		conditions = append(conditions, converted)
	}
	status["conditions"] = conditions
	if previous.status != nil && reflect.DeepEqual(previous.status, status) {
		return nil
	}

	patch := &unstructured.Unstructured{Object: map[string]any{"status": status}}
	patch.SetGroupVersionKind(hookrelayv1alpha1.GroupVersion.WithKind("WebhookEndpoint"))
	patch.SetNamespace(rep.endpoint.Namespace)
	patch.SetName(rep.endpoint.Name)
	if err := r.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(patch),
		client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return err
	}
	r.mu.Lock()
	r.applied[rep.endpoint.UID] = appliedConditions{disabled: disabled, delivering: delivering, status: status}
	r.mu.Unlock()
	return nil
}
