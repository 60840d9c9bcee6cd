package v1alpha1

import (
	"fmt"
	"time"
)

// Condition types. Ready is owned by the controller (field owner
// hookrelay-controller); Disabled and Delivering by the dispatcher (field
// owner hookrelay-dispatcher). Both write with Server-Side Apply, so neither
// erases the other's entries.
const (
	// ConditionReady is True when the resource is fully reconciled: for an
	// endpoint, its signing key is valid and its route is published to the
	// dispatcher; for a subscription, its endpoint exists and its filter compiles.
	ConditionReady = "Ready"

	// ConditionDisabled is True when the dispatcher stopped delivering to an
	// endpoint because it kept failing. Set by the dispatcher.
	ConditionDisabled = "Disabled"

	// ConditionDelivering is True while the endpoint's most recent deliveries
	// succeed. Set by the dispatcher.
	ConditionDelivering = "Delivering"

	// ConditionStalled is True, with the reason of Ready=False, when the spec
	// (or a Secret it names) is invalid in a way retrying cannot fix; it is
	// removed once the spec is fixed. kstatus (Flux, `kubectl wait`) reads it
	// as Failed, so a rollout fails at once instead of waiting out its
	// timeout. Set by the controller.
	ConditionStalled = "Stalled"
)

// Reasons: of the conditions above, of Kubernetes Events and of delivery
// failures. Each comment reads "Name (where it shows): what it means." and
// then "Do: what the user should do." The README's troubleshooting table is
// generated from these comments (go run ./hack/reasons, part of make
// generate), so write them for the user, in Markdown.

// Reasons of an endpoint's Ready condition. Those of False are also the
// reasons of a Warning event on the endpoint when the condition changes;
// all of them but AutoDisabled also set Stalled=True with the same reason.
const (
	// ReasonPublished (Ready=True on an endpoint): the route and signing keys
	// are live in the dispatcher configuration.
	// Do: nothing.
	ReasonPublished = "Published"

	// ReasonPaused (Ready=True on an endpoint): the route is published and
	// `spec.paused` is true: matching events are held, not delivered.
	// Do: set `spec.paused` to false to send the held deliveries.
	ReasonPaused = "Paused"

	// ReasonPublishing (Ready=Unknown on an endpoint): the endpoint is valid
	// and its route is being written to the dispatcher configuration.
	// Do: wait a second; if it stays, read the manager log.
	ReasonPublishing = "Publishing"

	// ReasonSecretInvalid (Ready=False and Stalled=True on an endpoint; Warning event): the
	// `spec.secretRef` Secret (or a `spec.headers[].valueFrom` Secret) is
	// missing, lacks the label `hookrelay.dev/endpoint-secret: "true"`,
	// belongs to another endpoint, lacks the key, or is not `whsec_` + base64
	// of at least 24 bytes; or a Secret of the generated name exists and is
	// not owned by the endpoint.
	// Do: create, label or fix the Secret named in the message.
	ReasonSecretInvalid = "SecretInvalid"

	// ReasonRouteTooLarge (Ready=False and Stalled=True on an endpoint; Warning event): the
	// endpoint's compiled route (with its subscriptions) or its keys entry
	// (signing keys and header values from Secrets) is larger than one shard
	// of the dispatcher configuration; the message has its size and the
	// limit. The endpoint is left out; every other endpoint is still
	// published.
	// Do: use fewer or shorter headers, subscriptions or transform; or run
	// the manager with a larger `--routes-shard-size`.
	ReasonRouteTooLarge = "RouteTooLarge"

	// ReasonInsecureURL (Ready=False and Stalled=True on an endpoint; Warning event):
	// `spec.url` uses plain `http://` and the manager does not run with
	// `--allow-insecure-endpoints`.
	// Do: use an `https://` URL.
	ReasonInsecureURL = "InsecureURL"

	// ReasonTransformInvalid (Ready=False and Stalled=True on an endpoint; Warning event):
	// `spec.payload.transform` does not compile as a CEL expression over
	// event and endpoint, or its estimated cost is over the budget (admission
	// refuses both; this shows on objects stored before).
	// Do: fix the CEL expression; the message has the compiler's error or the
	// estimate.
	ReasonTransformInvalid = "TransformInvalid"
)

// Reasons of a subscription's Ready condition. Those of False are also the
// reasons of a Warning event on the subscription when the condition changes.
const (
	// ReasonResolved (Ready=True on a subscription): its endpoint exists and
	// is Ready, and its filter compiles.
	// Do: nothing.
	ReasonResolved = "Resolved"

	// ReasonEndpointNotFound (Ready=False on a subscription; Warning event): no
	// WebhookEndpoint named by `spec.endpointRef.name` exists in the
	// subscription's namespace.
	// Do: create the endpoint, or fix `spec.endpointRef.name`; the
	// subscription turns Ready when the endpoint appears.
	ReasonEndpointNotFound = "EndpointNotFound"

	// ReasonEndpointNotReady (Ready=False or Unknown on a subscription;
	// Warning event when False): its endpoint exists but is not Ready; the
	// message has the endpoint's reason and message.
	// Do: fix the endpoint (`kubectl describe whep NAME`); the subscription
	// turns Ready with it.
	ReasonEndpointNotReady = "EndpointNotReady"

	// ReasonFilterInvalid (Ready=False and Stalled=True on a subscription; Warning event):
	// `spec.filter` does not compile to a boolean CEL expression over event,
	// or its estimated cost is over the budget.
	// Do: fix the CEL expression; the message has the compiler's error or the
	// estimate.
	ReasonFilterInvalid = "FilterInvalid"
)

// Reasons of an endpoint's Disabled condition, set by the dispatcher, and of
// the events it records when the condition changes. AutoDisabled is also
// the reason of the endpoint's Ready=False while it is disabled (set by the
// controller from the Disabled condition).
const (
	// ReasonEnabled (Disabled=False): the endpoint receives deliveries.
	// Do: nothing.
	ReasonEnabled = "Enabled"

	// ReasonAutoDisabled (Disabled=True and Ready=False; Warning event): the
	// endpoint failed `spec.autoDisable.afterConsecutiveFailures` deliveries
	// in a row, or answered `410 Gone` with `spec.autoDisable.onGone` true;
	// new events are held.
	// Do: fix the receiver, then set the annotation
	// `hookrelay.dev/reenable-requested-at` to the time now
	// (`kubectl hookrelay reenable NAME`).
	ReasonAutoDisabled = "AutoDisabled"

	// ReasonReenabled (Disabled=False; Normal event): the
	// `hookrelay.dev/reenable-requested-at` annotation took a time later
	// than the one last acted on; held deliveries are released oldest first.
	// Do: nothing.
	ReasonReenabled = "Reenabled"
)

// Reasons of an endpoint's Delivering condition, set by the dispatcher.
const (
	// ReasonNoDeliveries (Delivering=Unknown): no delivery to the endpoint has
	// finished yet.
	// Do: nothing; publish an event that a subscription matches to see a
	// delivery.
	ReasonNoDeliveries = "NoDeliveries"

	// ReasonDelivered (Delivering=True): the last delivery succeeded.
	// Do: nothing.
	ReasonDelivered = "Delivered"

	// ReasonFailing (Delivering=False): the last deliveries failed; the
	// message and `status.lastFailureReason` say why.
	// Do: check the receiver and `kubectl hookrelay deliveries ENDPOINT
	// --state failed`.
	ReasonFailing = "Failing"
)

// Reasons of events the controller records about an endpoint's signing key.
const (
	// ReasonSecretRotated (Normal event): the `hookrelay.dev/rotate-secret`
	// annotation took a time later than the one last acted on
	// (`status.lastRotateSecret`) and the controller made a new signing key;
	// the previous key keeps signing for the rotation grace period.
	// Do: give the new key to the receiver before the grace period ends.
	ReasonSecretRotated = "SecretRotated"

	// ReasonPreviousKeyExpired (Normal event): the rotation grace period
	// ended; deliveries are signed with the current key only.
	// Do: nothing.
	ReasonPreviousKeyExpired = "PreviousKeyExpired"

	// ReasonRotationInvalid (Warning event): the `hookrelay.dev/rotate-secret`
	// annotation is not an RFC 3339 time; the key was not rotated.
	// Do: set the annotation to a time such as `2026-01-02T15:04:05Z`.
	ReasonRotationInvalid = "RotationInvalid"

	// ReasonReenableInvalid (Warning event): the
	// `hookrelay.dev/reenable-requested-at` annotation is not an RFC 3339
	// time; the endpoint was not re-enabled.
	// Do: set the annotation to a time such as `2026-01-02T15:04:05Z`.
	ReasonReenableInvalid = "ReenableInvalid"

	// ReasonRotationNotSupported (Warning event): the
	// `hookrelay.dev/rotate-secret` annotation is set on an endpoint with
	// `spec.secretRef`, whose Secret the controller does not change.
	// Do: rotate by changing the Secret named in `spec.secretRef`, and remove
	// the annotation.
	ReasonRotationNotSupported = "RotationNotSupported"
)

// Delivery failure reasons: they begin an attempt's error in the delivery
// log and the endpoint's `status.lastFailureReason`. Set by the dispatcher.
const (
	// ReasonPoisoned (attempt error; `status.lastFailureReason`): the dispatcher process died while an
	// attempt of the delivery was in flight, as many times as its
	// `--poison-after` flag says (default 3). The delivery is failed instead
	// of attempted again, so an input that crashes the dispatcher cannot
	// crash it in a loop; it counts toward auto-disable.
	// Do: read the dispatcher's previous log; replay the delivery once the
	// cause is fixed.
	ReasonPoisoned = "Poisoned"
)

// Annotations users set on a WebhookEndpoint to request an action. Each
// holds an RFC 3339 time and acts only when that time is later than the one
// last acted on (recorded in the endpoint's status), so that a GitOps tool
// re-applying an older or the same value from Git does nothing. Admission
// refuses a value that is not an RFC 3339 time.
const (
	// AnnotationRotateSecret makes the controller generate a new signing
	// key; the previous key keeps signing for the rotation grace period.
	// The time acted on is status.lastRotateSecret.
	AnnotationRotateSecret = "hookrelay.dev/rotate-secret"

	// AnnotationReenableRequestedAt re-enables an auto-disabled endpoint and
	// starts its failure count over. The time acted on is
	// status.lastReenableRequestedAt.
	AnnotationReenableRequestedAt = "hookrelay.dev/reenable-requested-at"
)

// ActionRequested reads an action annotation's value: its time, and
// whether it asks for the action given the value last acted on (empty when
// none). A value that is not an RFC 3339 time is an error naming the
// annotation. A last value that is not a time (written before times were
// required) is older than any time.
func ActionRequested(annotation, value, last string) (time.Time, bool, error) {
	requested, err := time.Parse(time.RFC3339, value)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("annotation %s=%q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", annotation, value)
	}
	previous, err := time.Parse(time.RFC3339, last)
	if err != nil {
		return requested, true, nil
	}
	return requested, requested.After(previous), nil
}

// LabelEndpointSecret, set to "true" on a Secret, lets WebhookEndpoints in
// its namespace read it: as a bring-your-own signing secret
// (spec.secretRef) or for header values (spec.headers[].valueFrom). A
// Secret without it is refused (SecretInvalid), and so is one generated
// for another endpoint. The controller sets it on the Secrets it generates.
const LabelEndpointSecret = "hookrelay.dev/endpoint-secret"
