package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// WebhookEndpointSpec says where and how the dispatcher delivers events.
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimit) || !has(self.rateLimit.burst) || self.rateLimit.burst >= self.rateLimit.perSecond",message="spec.rateLimit.burst must be at least spec.rateLimit.perSecond"
type WebhookEndpointSpec struct {
	// url receives the deliveries as HTTP POST requests. It must be an absolute
	// https:// URL; plain http:// is accepted by the API but only published when
	// the manager runs with --allow-insecure-endpoints (development). User info
	// (user:password@) and IPv6 zones are refused. Query values are hidden
	// wherever the dispatcher and the controller show the URL, but the URL
	// itself is readable by anyone who can read the endpoint.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="spec.url must be an absolute https:// URL with a host, such as https://example.com/webhooks"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@')",message="spec.url must not carry user info (user:password@); send credentials in a header instead"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*[[][^]]*%')",message="spec.url must not carry an IPv6 zone (such as %25eth0); use a host name or a global address"
	URL string `json:"url"`

	// description is free text for the people who operate the endpoint.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Description string `json:"description,omitempty"`

	// sandbox marks a test endpoint: it receives only events published with
	// "sandbox": true, and production endpoints never receive those.
	// +optional
	// +kubebuilder:default=false
	Sandbox bool `json:"sandbox,omitempty"`

	// secretRef names a Secret in the endpoint's namespace whose key "secret"
	// holds a signing secret of the form whsec_<base64 of at least 24 bytes>.
	// The Secret must carry the label hookrelay.dev/endpoint-secret: "true"
	// and must not be another endpoint's generated Secret.
	// When omitted, the controller generates one (32 random bytes) in a Secret
	// owned by the endpoint and never regenerates it; rotate it with the
	// hookrelay.dev/rotate-secret annotation.
	// +optional
	SecretRef *SecretReference `json:"secretRef,omitempty"`

	// timeout is how long one attempt may take, from connect to the last byte
	// of the response status. Greater than 0s, at most 30s; default 10s.
	// +optional
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s') && duration(self) <= duration('30s')",message="spec.timeout must be a duration greater than 0s and at most 30s, such as 10s"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// retry says when failed attempts are tried again.
	// +optional
	// +kubebuilder:default={schedule: {"1m","5m","30m","2h"}}
	Retry *RetryPolicy `json:"retry,omitempty"`

	// successStatusCodes lists the HTTP status codes that count as delivered.
	// Empty means any 2xx. Anything else, a timeout or a connection error is
	// a failed attempt.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:Minimum=100
	// +kubebuilder:validation:items:Maximum=599
	SuccessStatusCodes []int32 `json:"successStatusCodes,omitempty"`

	// autoDisable says when the dispatcher stops delivering to an endpoint that
	// keeps failing.
	// +optional
	// +kubebuilder:default={afterConsecutiveFailures: 10}
	AutoDisable *AutoDisablePolicy `json:"autoDisable,omitempty"`

	// rateLimit caps how fast deliveries are sent to this endpoint. Unset means
	// no cap beyond maxInFlight.
	// +optional
	RateLimit *RateLimit `json:"rateLimit,omitempty"`

	// maxInFlight caps the attempts in progress at once for this endpoint.
	// Default 10.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxInFlight *int32 `json:"maxInFlight,omitempty"`

	// delivery says in what order deliveries to this endpoint are attempted.
	// +optional
	Delivery *DeliveryPolicy `json:"delivery,omitempty"`

	// headers are HTTP headers added to every delivery, each with a literal
	// value or a value read from a Secret. They cannot replace the signature,
	// content and Standard Webhooks headers. Names are unique regardless of
	// case. At most 32 headers, and at most 16384 characters of literal names
	// and values in all, so that a compiled route always fits the dispatcher
	// configuration.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="self.all(h, self.exists_one(o, o.name.lowerAscii() == h.name.lowerAscii()))",message="spec.headers: names must be unique regardless of case"
	// +kubebuilder:validation:XValidation:rule="self.map(h, size(h.name) + (has(h.value) ? size(h.value) : 0)).sum() <= 16384",message="spec.headers: names and literal values may hold at most 16384 characters in all"
	Headers []Header `json:"headers,omitempty"`

	// payload says how the request body is built from the event.
	// +optional
	Payload *PayloadSpec `json:"payload,omitempty"`

	// signing says which signature headers a delivery carries and how the
	// prefixed family's headers are named. Default: both schemes, with the
	// dispatcher's --header-prefix (Hookrelay unless set).
	// +optional
	// +kubebuilder:default={schemes: {"Prefixed","StandardWebhooks"}}
	Signing *SigningSpec `json:"signing,omitempty"`

	// paused stops deliveries to this endpoint without disabling it; matching
	// events are held and sent once it is unpaused.
	// +optional
	// +kubebuilder:default=false
	Paused bool `json:"paused,omitempty"`
}

// Header is one HTTP header of a delivery: exactly one of value and valueFrom.
// +kubebuilder:validation:XValidation:rule="has(self.value) != has(self.valueFrom)",message="spec.headers: each header needs exactly one of value and valueFrom"
// +kubebuilder:validation:XValidation:rule="!has(self.value) || !self.value.matches('[\\x00-\\x08\\x0a-\\x1f\\x7f]')",message="spec.headers: values must not contain CR, LF or other control characters"
type Header struct {
	// name of the header: letters, digits and '-', at most 128 characters.
	// Not Content-Type, Content-Length, Host, User-Agent or a webhook-*
	// signature header.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9-]+$') && !(self.lowerAscii() in ['content-type', 'content-length', 'host', 'user-agent', 'webhook-id', 'webhook-timestamp', 'webhook-signature'])",message="spec.headers: names must be letters, digits and '-', and must not be Content-Type, Content-Length, Host, User-Agent or a webhook-* signature header"
	Name string `json:"name"`

	// value is the header's literal value, at most 4096 characters. It is
	// stored in the dispatcher configuration in plain text: put credentials
	// in a Secret and use valueFrom.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Value string `json:"value,omitempty"`

	// valueFrom reads the header's value from a Secret.
	// +optional
	ValueFrom *HeaderValueSource `json:"valueFrom,omitempty"`
}

// HeaderValueSource is where a header's value comes from.
type HeaderValueSource struct {
	// secretKeyRef selects a key of a Secret in the endpoint's namespace. The
	// Secret must carry the label hookrelay.dev/endpoint-secret: "true", and
	// the value must be at most 4096 bytes without control characters.
	// +required
	SecretKeyRef SecretKeySelector `json:"secretKeyRef"`
}

// SecretKeySelector names one key of a Secret in the same namespace.
type SecretKeySelector struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// key in the Secret's data.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// SecretReference names a Secret in the same namespace.
type SecretReference struct {
	// name of the Secret; its key "secret" holds the whsec_ signing secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// RetryPolicy says when a failed attempt is tried again.

// SignatureScheme names one family of signature headers.
// +kubebuilder:validation:Enum=Prefixed;StandardWebhooks
type SignatureScheme string

const (
	// SignatureSchemePrefixed sends <prefix>-Signature: t=<unix>,v1=<hex
	// HMAC-SHA256 of "<t>.<body>" keyed by the whole whsec_ string>, with
	// <prefix>-Webhook-Id (the endpoint) and <prefix>-Event-Type, as Palm
	// documents with the prefix Palm.
	SignatureSchemePrefixed SignatureScheme = "Prefixed"
	// SignatureSchemeStandardWebhooks sends webhook-id, webhook-timestamp and
	// webhook-signature as the Standard Webhooks specification says.
	SignatureSchemeStandardWebhooks SignatureScheme = "StandardWebhooks"
)

// SigningSpec says how deliveries to an endpoint are signed. Every delivery
// is signed: at least one scheme.
// +kubebuilder:validation:XValidation:rule="!has(self.headerPrefix) || self.headerPrefix.lowerAscii() != 'webhook' || (has(self.schemes) && !('Prefixed' in self.schemes && 'StandardWebhooks' in self.schemes))",message="spec.signing.headerPrefix must not be Webhook (in any case) while spec.signing.schemes has both Prefixed and StandardWebhooks: Webhook-Signature would be the Standard Webhooks header; choose another prefix or one scheme"
type SigningSpec struct {
	// headerPrefix names the Prefixed scheme's headers: <headerPrefix>-Signature,
	// <headerPrefix>-Webhook-Id and <headerPrefix>-Event-Type, such as Palm.
	// Letters, digits and '-', at most 64 characters. Default: the
	// dispatcher's --header-prefix flag (Hookrelay unless set). Unused when
	// schemes lacks Prefixed.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9][A-Za-z0-9-]*$')",message="spec.signing.headerPrefix must be letters, digits and '-', starting with a letter or digit, such as Palm"
	HeaderPrefix string `json:"headerPrefix,omitempty"`

	// schemes lists the signature header families each delivery carries:
	// Prefixed (<headerPrefix>-Signature: t=,v1=, <headerPrefix>-Webhook-Id,
	// <headerPrefix>-Event-Type) and StandardWebhooks (webhook-id,
	// webhook-timestamp, webhook-signature). One or both; default both.
	// +optional
	// +listType=set
	// +kubebuilder:default={"Prefixed","StandardWebhooks"}
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	Schemes []SignatureScheme `json:"schemes,omitempty"`
}

// RetryPolicy is the schedule of retries after a failed attempt.
type RetryPolicy struct {
	// schedule lists the delays before each retry, each counted from the end
	// of the previous attempt (when its response, timeout or connection error
	// came back), not from its start or from the event's acceptance. The
	// delivery gets len(schedule)+1 attempts in all, then is marked failed.
	// Each step is a positive duration; jitterPercent may lengthen it, and a
	// Retry-After answer may too (see honorRetryAfter).
	// Default 1m, 5m, 30m, 2h (five attempts in all).
	// +optional
	// +listType=atomic
	// +kubebuilder:default={"1m","5m","30m","2h"}
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:Type=string
	// +kubebuilder:validation:items:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.all(d, d.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(d) > duration('0s'))",message="spec.retry.schedule: every step must be a positive duration such as 30s, 5m or 2h"
	Schedule []metav1.Duration `json:"schedule,omitempty"`

	// jitterPercent lengthens each retry delay by a random amount between 0
	// and this percentage of the step, so that retries to a recovering
	// receiver spread out. Unit: percent of the schedule step, 0 to 100; 0
	// waits exactly the schedule. Default 10 (a 1m step waits 60s to 66s).
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	JitterPercent *int32 `json:"jitterPercent,omitempty"`

	// honorRetryAfter makes a Retry-After header on a 429 or 503 answer
	// (seconds or an HTTP date, capped by the dispatcher's --max-retry-after)
	// lengthen that delivery's next delay, and on a 429 hold all of the
	// endpoint's attempts until then. When false the header is ignored: retries
	// follow the schedule, and a 429 holds the endpoint's attempts for one
	// second. Default true.
	// +optional
	// +kubebuilder:default=true
	HonorRetryAfter *bool `json:"honorRetryAfter,omitempty"`
}

// DeliveryOrdering says whether an endpoint's deliveries keep the order in
// which their events were accepted.
// +kubebuilder:validation:Enum=Unordered;Strict
type DeliveryOrdering string

const (
	// OrderingUnordered attempts deliveries concurrently (up to maxInFlight)
	// and retries each on its own schedule: a failed delivery does not hold
	// back the ones behind it, so a later event can arrive first. Fastest.
	OrderingUnordered DeliveryOrdering = "Unordered"
	// OrderingStrict attempts deliveries one at a time, in the order their
	// events were accepted. A failing delivery blocks the ones behind it, also
	// while it waits for its next retry, until it succeeds, fails for good
	// (its retries are exhausted) or the endpoint is disabled or paused; held
	// deliveries are released in the same order. maxInFlight is ignored
	// (treated as 1).
	OrderingStrict DeliveryOrdering = "Strict"
)

// DeliveryPolicy says how deliveries to an endpoint are sequenced.
type DeliveryPolicy struct {
	// ordering is Unordered (default: concurrent, a failed delivery's retries
	// do not hold back later events) or Strict: one delivery at a time in the
	// order the events were accepted (each publish answered before the next
	// was sent), a failing delivery blocking those behind it until it
	// succeeds, fails for good after its last retry, or the endpoint is
	// disabled or paused; then the held deliveries are released in the same
	// order once it is re-enabled or unpaused. With Strict, maxInFlight is
	// ignored (treated as 1), so throughput is one receiver round trip at a
	// time.
	// +optional
	// +kubebuilder:default=Unordered
	Ordering DeliveryOrdering `json:"ordering,omitempty"`
}

// AutoDisablePolicy says when an endpoint that keeps failing is disabled.
type AutoDisablePolicy struct {
	// afterConsecutiveFailures is the number of failed deliveries in a row
	// (each after all its retries) after which the endpoint gets no more
	// attempts and new events are held. 0 never disables the endpoint, for
	// any cause, 410 Gone included. Default 10.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=0
	AfterConsecutiveFailures *int32 `json:"afterConsecutiveFailures,omitempty"`

	// onGone disables the endpoint at the first 410 Gone answer, without
	// retrying that delivery. When false, a 410 is a failed attempt like any
	// other: retried per spec.retry.schedule and counted toward
	// afterConsecutiveFailures. Has no effect when afterConsecutiveFailures
	// is 0. Default true.
	// +optional
	// +kubebuilder:default=true
	OnGone *bool `json:"onGone,omitempty"`
}

// RateLimit is a token bucket for one endpoint.
type RateLimit struct {
	// perSecond is the sustained number of deliveries per second.
	// +required
	// +kubebuilder:validation:Minimum=1
	PerSecond int32 `json:"perSecond"`

	// burst is how many deliveries may be sent at once after a quiet period.
	// Default: perSecond.
	// +optional
	// +kubebuilder:validation:Minimum=1
	Burst int32 `json:"burst,omitempty"`
}

// PayloadSpec says how a delivery's body is built.
type PayloadSpec struct {
	// transform is a CEL expression over event (id, type, created_at, data,
	// sandbox) and endpoint (name, namespace, url) whose result, a map or list,
	// is sent as the JSON body instead of the default event envelope
	// {"id","object","type","created_at","data"}.
	// +optional
	// +kubebuilder:validation:MaxLength=8192
	Transform string `json:"transform,omitempty"`
}

// WebhookEndpointStatus is the observed state of an endpoint. Ready,
// observedGeneration and secretName are written by the controller; the
// delivery fields and the Disabled and Delivering conditions by the dispatcher.
type WebhookEndpointStatus struct {
	// conditions: Ready and Stalled (controller), Disabled and Delivering
	// (dispatcher).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the spec generation the controller last handled
	// completely.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// secretName is the Secret whose key "secret" signs deliveries.
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// consecutiveFailures counts failed deliveries since the last success.
	// +optional
	ConsecutiveFailures int32 `json:"consecutiveFailures,omitempty"`

	// heldDeliveries counts the deliveries stored for this endpoint that wait,
	// held, for it to be unpaused or re-enabled. The dispatcher replica that
	// delivers the endpoint writes it, at most once per status interval.
	// +optional
	HeldDeliveries int64 `json:"heldDeliveries,omitempty"`

	// lastSuccessTime is when a delivery last succeeded.
	// +optional
	LastSuccessTime *metav1.Time `json:"lastSuccessTime,omitempty"`

	// lastFailureTime is when a delivery last failed.
	// +optional
	LastFailureTime *metav1.Time `json:"lastFailureTime,omitempty"`

	// lastFailureReason says why the last delivery failed (status code,
	// timeout or connection error).
	// +optional
	LastFailureReason string `json:"lastFailureReason,omitempty"`

	// disabledAt is when the dispatcher disabled the endpoint.
	// +optional
	DisabledAt *metav1.Time `json:"disabledAt,omitempty"`

	// lastRotateSecret is the value of the hookrelay.dev/rotate-secret
	// annotation (an RFC 3339 time) of the last rotation: only a later time
	// rotates the key again. Written by the controller.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	LastRotateSecret string `json:"lastRotateSecret,omitempty"`

	// lastReenableRequestedAt is the value of the
	// hookrelay.dev/reenable-requested-at annotation (an RFC 3339 time) last
	// passed on to the dispatcher: only a later time re-enables the endpoint
	// again. Written by the controller.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	LastReenableRequestedAt string `json:"lastReenableRequestedAt,omitempty"`
}

// WebhookEndpoint is a receiver of webhooks: its URL, signing secret and
// delivery policy.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=whep,categories=hookrelay
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.spec.url`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Disabled",type=string,JSONPath=`.status.conditions[?(@.type=="Disabled")].status`
// +kubebuilder:printcolumn:name="Failures",type=integer,JSONPath=`.status.consecutiveFailures`
// +kubebuilder:printcolumn:name="Held",type=integer,JSONPath=`.status.heldDeliveries`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Sandbox",type=boolean,JSONPath=`.spec.sandbox`,priority=1
// +kubebuilder:printcolumn:name="Paused",type=boolean,JSONPath=`.spec.paused`,priority=1
// +kubebuilder:printcolumn:name="Secret",type=string,JSONPath=`.status.secretName`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
type WebhookEndpoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec WebhookEndpointSpec `json:"spec"`

	// +optional
	Status WebhookEndpointStatus `json:"status,omitempty"`
}

// WebhookEndpointList is a list of WebhookEndpoints.
// +kubebuilder:object:root=true
type WebhookEndpointList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WebhookEndpoint `json:"items"`
}

func init() {
	SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &WebhookEndpoint{}, &WebhookEndpointList{})
		return nil
	})
}

// Defaults that apply when a field is unset. The +kubebuilder:default
// markers above are the source: the API server fills them in, so the
// controllers read defaulted objects. These copies serve only objects that
// did not pass through it (unit tests, routes published before a field
// existed); controllers' TestGoDefaultsMatchTheCRD fails when they differ
// from the CRD's.
const (
	DefaultTimeout                  = 10 * time.Second
	DefaultAfterConsecutiveFailures = 10
	DefaultMaxInFlight              = 10
	DefaultJitterPercent            = 10
)

// DefaultRetrySchedule is 1m, 5m, 30m, 2h: five attempts in all.
func DefaultRetrySchedule() []metav1.Duration {
	return []metav1.Duration{{Duration: time.Minute}, {Duration: 5 * time.Minute}, {Duration: 30 * time.Minute}, {Duration: 2 * time.Hour}}
}

// EffectiveTimeout is spec.timeout or its default.
func (s *WebhookEndpointSpec) EffectiveTimeout() time.Duration {
	if s.Timeout == nil {
		return DefaultTimeout
	}
	return s.Timeout.Duration
}

// EffectiveRetrySchedule is spec.retry.schedule or its default.
func (s *WebhookEndpointSpec) EffectiveRetrySchedule() []metav1.Duration {
	if s.Retry == nil || len(s.Retry.Schedule) == 0 {
		return DefaultRetrySchedule()
	}
	return s.Retry.Schedule
}

// EffectiveAfterConsecutiveFailures is spec.autoDisable.afterConsecutiveFailures or its default.
func (s *WebhookEndpointSpec) EffectiveAfterConsecutiveFailures() int32 {
	if s.AutoDisable == nil || s.AutoDisable.AfterConsecutiveFailures == nil {
		return DefaultAfterConsecutiveFailures
	}
	return *s.AutoDisable.AfterConsecutiveFailures
}

// EffectiveOrdering is spec.delivery.ordering or its default, Unordered.
func (s *WebhookEndpointSpec) EffectiveOrdering() DeliveryOrdering {
	if s.Delivery == nil || s.Delivery.Ordering == "" {
		return OrderingUnordered
	}
	return s.Delivery.Ordering
}

// EffectiveJitterPercent is spec.retry.jitterPercent or its default.
func (s *WebhookEndpointSpec) EffectiveJitterPercent() int32 {
	if s.Retry == nil || s.Retry.JitterPercent == nil {
		return DefaultJitterPercent
	}
	return *s.Retry.JitterPercent
}

// EffectiveHonorRetryAfter is spec.retry.honorRetryAfter or its default.
func (s *WebhookEndpointSpec) EffectiveHonorRetryAfter() bool {
	return s.Retry == nil || s.Retry.HonorRetryAfter == nil || *s.Retry.HonorRetryAfter
}

// EffectiveOnGone is spec.autoDisable.onGone or its default.
func (s *WebhookEndpointSpec) EffectiveOnGone() bool {
	return s.AutoDisable == nil || s.AutoDisable.OnGone == nil || *s.AutoDisable.OnGone
}

// EffectiveSignatureSchemes is spec.signing.schemes or its default (both).
func (s *WebhookEndpointSpec) EffectiveSignatureSchemes() []SignatureScheme {
	if s.Signing == nil || len(s.Signing.Schemes) == 0 {
		return []SignatureScheme{SignatureSchemePrefixed, SignatureSchemeStandardWebhooks}
	}
	return s.Signing.Schemes
}

// EffectiveMaxInFlight is spec.maxInFlight or its default.
func (s *WebhookEndpointSpec) EffectiveMaxInFlight() int32 {
	if s.MaxInFlight == nil {
		return DefaultMaxInFlight
	}
	return *s.MaxInFlight
}

// EffectiveBurst is burst or its default, perSecond. It has no CRD default:
// a default cannot name another field.
func (r *RateLimit) EffectiveBurst() int32 {
	if r.Burst == 0 {
		return r.PerSecond
	}
	return r.Burst
}
