package v1alpha1

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

func endpointWithTransform(transform string, labels map[string]string) *hookrelayv1alpha1.WebhookEndpoint {
	return &hookrelayv1alpha1.WebhookEndpoint{
		ObjectMeta: metav1.ObjectMeta{Name: "palenca", Labels: labels},
		Spec: hookrelayv1alpha1.WebhookEndpointSpec{
			URL: "https://receiver.example/", Payload: &hookrelayv1alpha1.PayloadSpec{Transform: transform},
		},
	}
}

// TestUpdateChecksOnlyAChangedExpression: an object stored before a check
// existed keeps taking metadata changes (re-enable, rotate, finalizers),
// but a changed expression is checked.
func TestUpdateChecksOnlyAChangedExpression(t *testing.T) {
	ctx := context.Background()
	stored := endpointWithTransform("{", nil)
	relabelled := endpointWithTransform("{", map[string]string{"team": "a"})
	if _, err := (EndpointValidator{}).ValidateUpdate(ctx, stored, relabelled); err != nil {
		t.Errorf("a metadata change to a stored endpoint was refused: %v", err)
	}
	_, err := (EndpointValidator{}).ValidateUpdate(ctx, stored, endpointWithTransform("{{", nil))
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.payload.transform: Invalid value: ERROR: <input>:1:") {
		t.Errorf("a changed transform that does not compile: got %v", err)
	}

	old := &hookrelayv1alpha1.WebhookSubscription{Spec: hookrelayv1alpha1.WebhookSubscriptionSpec{Filter: "event.type =="}}
	same := old.DeepCopy()
	same.Annotations = map[string]string{"note": "x"}
	if _, err := (SubscriptionValidator{}).ValidateUpdate(ctx, old, same); err != nil {
		t.Errorf("a metadata change to a stored subscription was refused: %v", err)
	}
	changed := old.DeepCopy()
	changed.Spec.Filter = "1 + 1"
	_, err = (SubscriptionValidator{}).ValidateUpdate(ctx, old, changed)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.filter: Invalid value: expression gives int, want bool") {
		t.Errorf("a changed filter of the wrong type: got %v", err)
	}
}
