// Package v1alpha1 holds the hookrelay.dev/v1alpha1 API: WebhookEndpoint
// (where and how to deliver) and WebhookSubscription (what to deliver).
// +kubebuilder:object:generate=true
// +kubebuilder:ac:generate=true
// +kubebuilder:ac:output:package=../applyconfiguration
// +groupName=hookrelay.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every Hookrelay resource.
	GroupVersion = schema.GroupVersion{Group: "hookrelay.dev", Version: "v1alpha1"}

	// SchemeGroupVersion is GroupVersion under the name that the generated
	// apply configurations (api/applyconfiguration) refer to.
	SchemeGroupVersion = GroupVersion

	// SchemeBuilder registers the Hookrelay types with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})

	// AddToScheme adds the Hookrelay types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
