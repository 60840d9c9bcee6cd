// Package scheme builds the runtime scheme that the manager, the
// dispatcher, the tests and the local tools share: the built-in Kubernetes
// types and the hookrelay.dev API.
package scheme

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

// New returns a scheme with the built-in Kubernetes types and the
// hookrelay.dev API.
func New() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("adding the Kubernetes types to the scheme: %w", err)
	}
	if err := hookrelayv1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("adding the hookrelay.dev types to the scheme: %w", err)
	}
	return scheme, nil
}
