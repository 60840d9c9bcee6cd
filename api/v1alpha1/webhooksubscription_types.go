package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// WebhookSubscriptionSpec says which events go to an endpoint.
type WebhookSubscriptionSpec struct {
	// endpointRef names the WebhookEndpoint, in the same namespace, that
	// receives the matching events.
	// +required
	EndpointRef EndpointReference `json:"endpointRef"`

	// eventTypes lists the event types to deliver: exact names such as
	// user.verification.completed, a trailing wildcard such as business.*
	// (every type under business.), or * for all.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=128
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.all(t, t == '*' || t.matches('^[A-Za-z0-9_-]+([.][A-Za-z0-9_-]+)*([.][*])?$'))",message="spec.eventTypes: each entry must be an exact type such as user.created, a trailing wildcard such as business.*, or *"
	EventTypes []string `json:"eventTypes"`

	// filter is an optional CEL expression over event (id, type, created_at,
	// data, sandbox) that must be true for an event to be delivered, such as
	// event.data.platform == "uber".
	// +optional
	// +kubebuilder:validation:MaxLength=8192
	Filter string `json:"filter,omitempty"`
}

// EndpointReference names a WebhookEndpoint in the same namespace.
type EndpointReference struct {
	// name of the WebhookEndpoint.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// WebhookSubscriptionStatus is the observed state of a subscription.
type WebhookSubscriptionStatus struct {
	// conditions: Ready is True when the endpoint exists and is Ready and the
	// filter compiles; Stalled is True while the filter does not compile.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the spec generation the controller last handled
	// completely.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// WebhookSubscription routes event types, optionally filtered, to a
// WebhookEndpoint.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=whsub,categories=hookrelay
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.spec.endpointRef.name`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Events",type=string,JSONPath=`.spec.eventTypes`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
type WebhookSubscription struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec WebhookSubscriptionSpec `json:"spec"`

	// +optional
	Status WebhookSubscriptionStatus `json:"status,omitempty"`
}

// WebhookSubscriptionList is a list of WebhookSubscriptions.
// +kubebuilder:object:root=true
type WebhookSubscriptionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WebhookSubscription `json:"items"`
}

func init() {
	SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &WebhookSubscription{}, &WebhookSubscriptionList{})
		return nil
	})
}
