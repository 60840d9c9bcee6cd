package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/testenv"
)

// TestGoDefaultsMatchTheCRD: the CRD's +kubebuilder:default markers are the
// source of every default. The Go side falls back to its own defaults
// (api/v1alpha1's Effective* methods) only for objects that did not pass
// through the API server; it must compile the same route from such an
// object as from the one the API server defaulted. One case per object of
// the schema that holds defaults, present and empty, so that each default
// is applied in one case at least.
func TestGoDefaultsMatchTheCRD(t *testing.T) {
	ctx := context.Background()
	namespace := env.Namespace(t)
	if paths := defaultedObjects(t, "hookrelay.dev_webhooksubscriptions.yaml"); len(paths) > 0 {
		t.Fatalf("the WebhookSubscription CRD has defaults in %v: extend this test to compare them with the Go side", paths)
	}
	for i, path := range defaultedObjects(t, "hookrelay.dev_webhookendpoints.yaml") {
		t.Run("spec"+strings.Join(append([]string{""}, path...), "."), func(t *testing.T) {
			g := NewWithT(t)
			bare := newEndpoint(namespace, fmt.Sprintf("defaults-%d", i))
			spec := map[string]any{"url": bare.Spec.URL}
			object := spec
			for _, field := range path {
				child := map[string]any{}
				object[field] = child
				object = child
			}
			raw, err := json.Marshal(spec)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(json.Unmarshal(raw, &bare.Spec)).To(Succeed())

			defaulted := bare.DeepCopy()
			g.Expect(env.Client.Create(ctx, defaulted)).To(Succeed()) // reads back the defaulted object
			g.Expect(defaulted.Spec).NotTo(Equal(bare.Spec), "the API server filled in no default")
			bare.ObjectMeta = defaulted.ObjectMeta
			g.Expect(compileRoute(bare, nil, nil)).To(Equal(compileRoute(defaulted, nil, nil)),
				"the Go defaults differ from the CRD's (+kubebuilder:default in api/v1alpha1)")
		})
	}
}

// defaultedObjects lists the paths below spec of the objects in a CRD's
// schema that have a property with a default (spec itself is the empty
// path), in a stable order.
func defaultedObjects(t *testing.T, file string) [][]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "crd", "bases", file))
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema schema `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != hookrelayv1alpha1.GroupVersion.Version {
		t.Fatalf("%s: want one version, %s", file, hookrelayv1alpha1.GroupVersion.Version)
	}
	var paths [][]string
	var walk func(s schema, path []string)
	walk = func(s schema, path []string) {
		if s.Items != nil && s.Items.hasDefaults() {
			t.Fatalf("%s: a list item under spec.%s has defaults: extend this test to cover them", file, strings.Join(path, "."))
		}
		names := slices.Sorted(maps.Keys(s.Properties))
		for _, name := range names {
			if s.Properties[name].Default != nil {
				paths = append(paths, path)
				break
			}
		}
		for _, name := range names {
			walk(s.Properties[name], append(slices.Clone(path), name))
		}
	}
	walk(crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"], nil)
	return paths
}

// schema is the part of an OpenAPI schema that holds defaults.
type schema struct {
	Default    any               `json:"default"`
	Properties map[string]schema `json:"properties"`
	Items      *schema           `json:"items"`
}

func (s schema) hasDefaults() bool {
	if s.Default != nil {
		return true
	}
	for _, property := range s.Properties {
		if property.hasDefaults() {
			return true
		}
	}
	return s.Items != nil && s.Items.hasDefaults()
}
