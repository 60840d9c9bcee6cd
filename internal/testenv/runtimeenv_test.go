package testenv

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestDeployedRuntimeEnv reads the Go runtime's settings from the
// manifests the measurements follow: a Deployment's (the manager's
// GOMEMLIMIT), a StatefulSet's among other documents (the dispatcher's
// GOMEMLIMIT), and names a container that is not there.
func TestDeployedRuntimeEnv(t *testing.T) {
	manager, err := ManagerRuntimeEnv()
	if err != nil || !slices.ContainsFunc(manager, func(v string) bool { return strings.HasPrefix(v, "GOMEMLIMIT=") }) {
		t.Errorf("manager: %q, %v; want its GOMEMLIMIT", manager, err)
	}
	dispatcher, err := DispatcherRuntimeEnv()
	if err != nil || !slices.ContainsFunc(dispatcher, func(v string) bool { return strings.HasPrefix(v, "GOMEMLIMIT=") }) {
		t.Errorf("dispatcher: %q, %v; want its GOMEMLIMIT", dispatcher, err)
	}
	if _, err := DeployedRuntimeEnv(filepath.Join(RepoRoot(), DispatcherManifest), "manager"); err == nil || !strings.Contains(err.Error(), `"manager"`) {
		t.Errorf("a container the StatefulSet does not have: %v, want an error naming it", err)
	}
}
