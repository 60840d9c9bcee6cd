package testenv

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestDeployedRuntimeEnv reads the Go runtime's settings from the
// manifests the measurements follow: a Deployment's (the manager's
// GOMEMLIMIT), a StatefulSet's among other documents (the dispatcher's),
// and names a container that is not there.
func TestDeployedRuntimeEnv(t *testing.T) {
	config := filepath.Join(RepoRoot(), "config")
	manager, err := DeployedRuntimeEnv(filepath.Join(config, "manager", "manager.yaml"), "manager")
	if err != nil || !slices.ContainsFunc(manager, func(v string) bool { return strings.HasPrefix(v, "GOMEMLIMIT=") }) {
		t.Errorf("manager: %q, %v; want its GOMEMLIMIT", manager, err)
	}
	if _, err := DeployedRuntimeEnv(filepath.Join(config, "dispatcher", "dispatcher.yaml"), "dispatcher"); err != nil {
		t.Errorf("dispatcher: %v", err)
	}
	if _, err := DeployedRuntimeEnv(filepath.Join(config, "dispatcher", "dispatcher.yaml"), "manager"); err == nil || !strings.Contains(err.Error(), `"manager"`) {
		t.Errorf("a container the StatefulSet does not have: %v, want an error naming it", err)
	}
}
