package testenv

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// DispatcherRuntimeEnv is the Go runtime's settings of the dispatcher's
// Deployment in config/dispatcher (see DeployedRuntimeEnv).
func DispatcherRuntimeEnv() ([]string, error) {
	return DeployedRuntimeEnv(DispatcherManifest, "dispatcher")
}

// ManagerRuntimeEnv is the Go runtime's settings of the manager's
// Deployment in config/manager (see DeployedRuntimeEnv).
func ManagerRuntimeEnv() ([]string, error) {
	return DeployedRuntimeEnv(ManagerManifest, "manager")
}

// The manifests of the Deployments whose runtime settings measurements
// run their binaries with, relative to the repository's root.
var (
	DispatcherManifest = filepath.Join("config", "dispatcher", "dispatcher.yaml")
	ManagerManifest    = filepath.Join("config", "manager", "manager.yaml")
)

// DeployedRuntimeEnv is the Go runtime's settings (GOMEMLIMIT, GOGC) that
// the Deployment or StatefulSet in the manifest at path (one of its YAML
// documents) gives container, as NAME=value: so that a measurement runs the
// binary here as it runs in a cluster.
func DeployedRuntimeEnv(path, container string) ([]string, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(RepoRoot(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for document := range bytes.SplitSeq(data, []byte("\n---\n")) {
		var kind metav1.TypeMeta
		if err := yaml.Unmarshal(document, &kind); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		var template *corev1.PodTemplateSpec
		switch kind.Kind {
		case "Deployment":
			var deployment appsv1.Deployment
			err, template = yaml.UnmarshalStrict(document, &deployment), &deployment.Spec.Template
		case "StatefulSet":
			var statefulSet appsv1.StatefulSet
			err, template = yaml.UnmarshalStrict(document, &statefulSet), &statefulSet.Spec.Template
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, c := range template.Spec.Containers {
			if c.Name != container {
				continue
			}
			var env []string
			for _, v := range c.Env {
				if v.Name == "GOMEMLIMIT" || v.Name == "GOGC" {
					env = append(env, v.Name+"="+v.Value)
				}
			}
			return env, nil
		}
	}
	return nil, fmt.Errorf("%s: no Deployment or StatefulSet with a container %q", path, container)
}
