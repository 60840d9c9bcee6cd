// Package samples reads the sample manifests (config/samples/) and points
// their WebhookEndpoints at a local receiver, so that `make dev` and the
// contract tests apply the files as shipped, only the URLs changed.
package samples

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Load reads every object of a multi-document YAML file.
func Load(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objects []*unstructured.Unstructured
	for {
		object := &unstructured.Unstructured{}
		err := decoder.Decode(&object.Object)
		if errors.Is(err, io.EOF) {
			return objects, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(object.Object) == 0 {
			continue
		}
		objects = append(objects, object)
	}
}

// RewriteEndpointURLs sets each WebhookEndpoint's spec.url to urlFor(its
// name), and leaves every other field and object as it is.
func RewriteEndpointURLs(objects []*unstructured.Unstructured, urlFor func(name string) string) error {
	for _, object := range objects {
		if object.GetKind() != "WebhookEndpoint" {
			continue
		}
		if err := unstructured.SetNestedField(object.Object, urlFor(object.GetName()), "spec", "url"); err != nil {
			return fmt.Errorf("WebhookEndpoint %s: spec.url: %w", object.GetName(), err)
		}
	}
	return nil
}

// Under is a urlFor that puts each endpoint at base/<name>, as the `make dev`
// receiver expects.
func Under(base string) func(name string) string {
	return func(name string) string { return base + "/" + name }
}

// YAML joins objects into one multi-document YAML stream.
func YAML(objects []*unstructured.Unstructured) ([]byte, error) {
	var out bytes.Buffer
	for i, object := range objects {
		data, err := yaml.Marshal(object.Object)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", object.GetKind(), object.GetName(), err)
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(data)
	}
	return out.Bytes(), nil
}
