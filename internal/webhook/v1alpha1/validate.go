// Package v1alpha1 is the validating admission webhook of the hookrelay.dev/v1alpha1
// resources: it refuses at `kubectl apply` what the CRD's OpenAPI and CEL
// rules cannot check, such as a payload transform or a subscription filter
// that does not compile or whose estimated cost is over the budget. The
// controllers run the same checks (a second line, for objects stored before
// the webhook existed), through the same functions.
// +kubebuilder:webhookconfiguration:mutating=false,name=hookrelay-validating-webhook
package v1alpha1

import (
	"context"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/celenv"
)

// ConfigurationName is the ValidatingWebhookConfiguration that
// config/webhook installs (the package marker above names it).
const ConfigurationName = "hookrelay-validating-webhook"

// The paths the webhook server serves, as the markers below declare them.
const (
	EndpointPath     = "/validate-hookrelay-dev-v1alpha1-webhookendpoint"
	SubscriptionPath = "/validate-hookrelay-dev-v1alpha1-webhooksubscription"
)

var (
	transformPath = field.NewPath("spec", "payload", "transform")
	filterPath    = field.NewPath("spec", "filter")
)

// ValidateTransform reports a payload transform that celenv refuses (it does
// not compile, gives the wrong type, or may cost too much), as an error on
// spec.payload.transform; nil when it is empty or acceptable.
func ValidateTransform(transform string) *field.Error {
	if transform == "" {
		return nil
	}
	_, err := celenv.CompileTransform(transform)
	return refusedExpression(transformPath, err)
}

// ValidateFilter is ValidateTransform for a subscription's spec.filter.
func ValidateFilter(filter string) *field.Error {
	if filter == "" {
		return nil
	}
	_, err := celenv.CompileFilter(filter)
	return refusedExpression(filterPath, err)
}

// refusedExpression reports celenv's refusal of an expression on its field;
// nil when err is nil.
func refusedExpression(path *field.Path, err error) *field.Error {
	if err == nil {
		return nil
	}
	// The value is the user's own expression, up to thousands of
	// characters; the compiler's message already points into it.
	return field.Invalid(path, field.OmitValueType{}, err.Error())
}

// Message is the one-line form of a field error for a condition message:
// "<field>: <detail>".
func Message(err *field.Error) string {
	return fmt.Sprintf("%s: %s", err.Field, err.Detail)
}

// Register serves both validators on a webhook server: the manager's, or
// the one the integration tests run once per control plane.
func Register(server webhook.Server, scheme *runtime.Scheme) {
	server.Register(EndpointPath, admission.WithValidator[*hookrelayv1alpha1.WebhookEndpoint](scheme, EndpointValidator{}))
	server.Register(SubscriptionPath, admission.WithValidator[*hookrelayv1alpha1.WebhookSubscription](scheme, SubscriptionValidator{}))
}

// WaitForAdmission returns once the API server calls the webhook: a
// server-side dry run of an endpoint whose transform does not compile is
// refused by it. The API server picks up a configuration (or caBundle)
// change a moment after it is written.
func WaitForAdmission(ctx context.Context, c client.Client, timeout time.Duration) error {
	probe := &hookrelayv1alpha1.WebhookEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceDefault, Name: "admission-probe"},
		Spec: hookrelayv1alpha1.WebhookEndpointSpec{
			URL: "https://receiver.example/probe", Payload: &hookrelayv1alpha1.PayloadSpec{Transform: "{"},
		},
	}
	var last error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		last = c.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		if errors.IsInvalid(last) && strings.Contains(last.Error(), transformPath.String()) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return fmt.Errorf("the admission webhook did not answer within %s; last dry run: %v", timeout, last)
}

// The API server calls the webhook only for an endpoint that has something
// it checks (matchConditions, evaluated by the API server): a transform or
// an action annotation. A bulk create of 10,000 plain endpoints then costs
// no webhook round trips.
// +kubebuilder:webhook:path=/validate-hookrelay-dev-v1alpha1-webhookendpoint,mutating=false,failurePolicy=fail,sideEffects=None,groups=hookrelay.dev,resources=webhookendpoints,verbs=create;update,versions=v1alpha1,name=webhookendpoints.hookrelay.dev,admissionReviewVersions=v1,serviceName=hookrelay-webhook,serviceNamespace=hookrelay-system,timeoutSeconds=10,patch=`{"matchConditions":[{"name":"has-transform-or-action-annotation","expression":"(has(object.spec.payload) && has(object.spec.payload.transform)) || (has(object.metadata.annotations) && ('hookrelay.dev/rotate-secret' in object.metadata.annotations || 'hookrelay.dev/reenable-requested-at' in object.metadata.annotations))"}]}`

// EndpointValidator refuses WebhookEndpoints whose payload transform celenv
// refuses, or whose action annotations (rotate-secret,
// reenable-requested-at) are not RFC 3339 times.
type EndpointValidator struct{}

var _ admission.Validator[*hookrelayv1alpha1.WebhookEndpoint] = EndpointValidator{}

// actionAnnotations are the annotations that request an action and hold a time.
var actionAnnotations = []string{hookrelayv1alpha1.AnnotationRotateSecret, hookrelayv1alpha1.AnnotationReenableRequestedAt}

// ValidateCreate checks the transform and the action annotations.
func (EndpointValidator) ValidateCreate(_ context.Context, endpoint *hookrelayv1alpha1.WebhookEndpoint) (admission.Warnings, error) {
	return nil, invalid("WebhookEndpoint", endpoint.Name,
		append(ValidateActionAnnotations(nil, endpoint.Annotations), ValidateTransform(transformOf(endpoint)))...)
}

// ValidateUpdate checks the transform and each action annotation only when
// it changed: an object stored before a check existed (or before the budget
// shrank) can still get its other annotations, labels and finalizers
// changed, and be deleted.
func (EndpointValidator) ValidateUpdate(_ context.Context, old, endpoint *hookrelayv1alpha1.WebhookEndpoint) (admission.Warnings, error) {
	errs := ValidateActionAnnotations(old.Annotations, endpoint.Annotations)
	if transformOf(old) != transformOf(endpoint) {
		errs = append(errs, ValidateTransform(transformOf(endpoint)))
	}
	return nil, invalid("WebhookEndpoint", endpoint.Name, errs...)
}

// ValidateActionAnnotations reports each action annotation that is set,
// differs from its value in old, and is not an RFC 3339 time. The
// controllers act only on times, and only on one later than the last acted
// on; anything else would be ignored in silence.
func ValidateActionAnnotations(old, annotations map[string]string) []*field.Error {
	var errs []*field.Error
	for _, annotation := range actionAnnotations {
		value, ok := annotations[annotation]
		if !ok || value == old[annotation] {
			continue
		}
		if _, _, err := hookrelayv1alpha1.ActionRequested(annotation, value, ""); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("metadata", "annotations").Key(annotation), value,
				"must be an RFC 3339 time such as 2026-01-02T15:04:05Z (kubectl hookrelay sets the time now); the action runs only for a time later than the last one acted on"))
		}
	}
	return errs
}

// ValidateDelete allows every deletion.
func (EndpointValidator) ValidateDelete(context.Context, *hookrelayv1alpha1.WebhookEndpoint) (admission.Warnings, error) {
	return nil, nil
}

func transformOf(endpoint *hookrelayv1alpha1.WebhookEndpoint) string {
	if endpoint.Spec.Payload == nil {
		return ""
	}
	return endpoint.Spec.Payload.Transform
}

// Only a subscription with a filter reaches the webhook (see EndpointValidator).
// +kubebuilder:webhook:path=/validate-hookrelay-dev-v1alpha1-webhooksubscription,mutating=false,failurePolicy=fail,sideEffects=None,groups=hookrelay.dev,resources=webhooksubscriptions,verbs=create;update,versions=v1alpha1,name=webhooksubscriptions.hookrelay.dev,admissionReviewVersions=v1,serviceName=hookrelay-webhook,serviceNamespace=hookrelay-system,timeoutSeconds=10,patch=`{"matchConditions":[{"name":"has-filter","expression":"has(object.spec.filter)"}]}`

// SubscriptionValidator refuses WebhookSubscriptions whose filter celenv
// refuses.
type SubscriptionValidator struct{}

var _ admission.Validator[*hookrelayv1alpha1.WebhookSubscription] = SubscriptionValidator{}

// ValidateCreate checks the filter.
func (SubscriptionValidator) ValidateCreate(_ context.Context, subscription *hookrelayv1alpha1.WebhookSubscription) (admission.Warnings, error) {
	return nil, invalid("WebhookSubscription", subscription.Name, ValidateFilter(subscription.Spec.Filter))
}

// ValidateUpdate checks the filter only when it changed (see EndpointValidator).
func (SubscriptionValidator) ValidateUpdate(_ context.Context, old, subscription *hookrelayv1alpha1.WebhookSubscription) (admission.Warnings, error) {
	if old.Spec.Filter == subscription.Spec.Filter {
		return nil, nil
	}
	return nil, invalid("WebhookSubscription", subscription.Name, ValidateFilter(subscription.Spec.Filter))
}

// ValidateDelete allows every deletion.
func (SubscriptionValidator) ValidateDelete(context.Context, *hookrelayv1alpha1.WebhookSubscription) (admission.Warnings, error) {
	return nil, nil
}

// invalid wraps field errors (nil ones are skipped) in the API server's
// Invalid status, which kubectl prints as `<field>: Invalid value: <detail>`.
func invalid(kind, name string, errs ...*field.Error) error {
	var list field.ErrorList
	for _, err := range errs {
		if err != nil {
			list = append(list, err)
		}
	}
	if len(list) == 0 {
		return nil
	}
	return errors.NewInvalid(hookrelayv1alpha1.GroupVersion.WithKind(kind).GroupKind(), name, list)
}
