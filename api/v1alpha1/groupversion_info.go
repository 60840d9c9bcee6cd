// Package v1alpha1 holds the hookrelay.dev/v1alpha1 API: WebhookEndpoint
// (where and how to deliver) and WebhookSubscription (what to deliver).
// +kubebuilder:object:generate=true
// +groupName=hookrelay.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every Hookrelay resource.
	GroupVersion = schema.GroupVersion{Group: "hookrelay.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the Hookrelay types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the Hookrelay types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
