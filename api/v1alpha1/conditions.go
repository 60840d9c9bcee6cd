package v1alpha1

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
)

// Reasons of the Ready condition.
const (
	// ReasonPublished: the endpoint's route and keys are in the dispatcher
	// configuration.
	ReasonPublished = "Published"

	// ReasonPublishing: the endpoint is valid and its route is being written to
	// the dispatcher configuration.
	ReasonPublishing = "Publishing"

	// ReasonSecretInvalid: a Secret the endpoint reads (spec.secretRef or
	// spec.headers[].valueFrom) is missing, lacks the hookrelay.dev/endpoint-secret
	// label, belongs to another endpoint, lacks the key, or holds an invalid
	// value (for spec.secretRef: not whsec_ with at least 24 bytes).
	ReasonSecretInvalid = "SecretInvalid"

	// ReasonInsecureURL: spec.url uses plain http:// and the manager does not
	// run with --allow-insecure-endpoints.
	ReasonInsecureURL = "InsecureURL"

	// ReasonTransformInvalid: spec.payload.transform is not a valid CEL
	// expression over event and endpoint.
	ReasonTransformInvalid = "TransformInvalid"

	// ReasonResolved: the subscription's endpoint exists and its filter compiles.
	ReasonResolved = "Resolved"

	// ReasonEndpointNotFound: no WebhookEndpoint named by spec.endpointRef.name
	// exists in the subscription's namespace.
	ReasonEndpointNotFound = "EndpointNotFound"

	// ReasonFilterInvalid: spec.filter is not a valid boolean CEL expression
	// over event.
	ReasonFilterInvalid = "FilterInvalid"
)

// Reasons of the Disabled and Delivering conditions (set by the dispatcher).
const (
	// ReasonAutoDisabled: the endpoint failed
	// spec.autoDisable.afterConsecutiveFailures deliveries in a row, or
	// answered 410 Gone with spec.autoDisable.onGone.
	ReasonAutoDisabled = "AutoDisabled"

	// ReasonReenabled: the hookrelay.dev/reenable-requested-at annotation
	// changed and held deliveries are being released.
	ReasonReenabled = "Reenabled"

	// ReasonEnabled: the endpoint receives deliveries.
	ReasonEnabled = "Enabled"
)

// Delivery failure reasons (the delivery log's attempt errors and an
// endpoint's status.lastFailureReason, set by the dispatcher).
const (
	// ReasonPoisoned: the dispatcher process died while an attempt of the
	// delivery was in flight, as many times as its --poison-after flag says
	// (default 3). The delivery is failed instead of attempted again, so an
	// input that crashes the dispatcher cannot crash it in a loop. It counts
	// as a failed delivery toward auto-disable; replay it once the cause is
	// fixed.
	ReasonPoisoned = "Poisoned"
)

// Annotations users set on a WebhookEndpoint.
const (
	// AnnotationRotateSecret, set to an RFC 3339 time, makes the controller
	// generate a new signing key once per distinct value. The previous key
	// keeps signing for the rotation grace period.
	AnnotationRotateSecret = "hookrelay.dev/rotate-secret"

	// AnnotationReenableRequestedAt, set to any new value (conventionally an
	// RFC 3339 time), re-enables an auto-disabled endpoint.
	AnnotationReenableRequestedAt = "hookrelay.dev/reenable-requested-at"
)

// Tenant isolation: route size and Secrets an endpoint may read.
const (
	// ReasonRouteTooLarge: the endpoint's compiled route or its keys entry
	// (signing keys and header values from Secrets) is larger than one shard
	// of the dispatcher configuration (--routes-shard-size). The endpoint is
	// left out of the configuration; every other endpoint is still published.
	ReasonRouteTooLarge = "RouteTooLarge"

	// LabelEndpointSecret, set to "true" on a Secret, lets WebhookEndpoints in
	// its namespace read it: as a bring-your-own signing secret
	// (spec.secretRef) or for header values (spec.headers[].valueFrom). A
	// Secret without it is refused (SecretInvalid), and so is one generated
	// for another endpoint. The controller sets it on the Secrets it generates.
	LabelEndpointSecret = "hookrelay.dev/endpoint-secret"
)
