package e2e

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/hookrelay/hookrelay/internal/testenv"
)

// TestInstallManifestsPassServerDryRun applies config/default with
// --dry-run=server and accounts for every object it holds.
func TestInstallManifestsPassServerDryRun(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stdout, stderr, err := env.Kubectl(ctx, "", "apply", "-k", filepath.Join(testenv.RepoRoot(), "config", "default"), "--dry-run=server")
	g.Expect(err).NotTo(HaveOccurred(), stderr)

	var objects []string
	for line := range strings.SplitSeq(strings.TrimSpace(stdout), "\n") {
		g.Expect(line).To(HaveSuffix("(server dry run)"), "every object is applied by the server")
		objects = append(objects, strings.Fields(line)[0])
	}
	slices.Sort(objects)
	g.Expect(objects).To(Equal([]string{
		"clusterrole.rbac.authorization.k8s.io/hookrelay-dispatcher",
		"clusterrole.rbac.authorization.k8s.io/hookrelay-editor",
		"clusterrole.rbac.authorization.k8s.io/hookrelay-manager",
		"clusterrole.rbac.authorization.k8s.io/hookrelay-operator",
		"clusterrole.rbac.authorization.k8s.io/hookrelay-publisher",
		"clusterrole.rbac.authorization.k8s.io/hookrelay-viewer",
		"clusterrolebinding.rbac.authorization.k8s.io/hookrelay-dispatcher",
		"clusterrolebinding.rbac.authorization.k8s.io/hookrelay-manager",
		"customresourcedefinition.apiextensions.k8s.io/webhookendpoints.hookrelay.dev",
		"customresourcedefinition.apiextensions.k8s.io/webhooksubscriptions.hookrelay.dev",
		"deployment.apps/hookrelay-manager",
		"namespace/hookrelay-system",
		"role.rbac.authorization.k8s.io/hookrelay-dispatcher",
		"role.rbac.authorization.k8s.io/hookrelay-manager",
		"rolebinding.rbac.authorization.k8s.io/hookrelay-dispatcher",
		"rolebinding.rbac.authorization.k8s.io/hookrelay-manager",
		"service/hookrelay-dispatcher",
		"service/hookrelay-webhook",
		"serviceaccount/hookrelay-dispatcher",
		"serviceaccount/hookrelay-manager",
		"statefulset.apps/hookrelay-dispatcher",
		"validatingadmissionpolicy.admissionregistration.k8s.io/hookrelay-endpoint-annotations",
		"validatingadmissionpolicybinding.admissionregistration.k8s.io/hookrelay-endpoint-annotations",
		"validatingwebhookconfiguration.admissionregistration.k8s.io/hookrelay-validating-webhook",
	}))

	// One image name, set in one place.
	rendered, stderr, err := env.Kubectl(ctx, "", "kustomize", filepath.Join(testenv.RepoRoot(), "config", "default"))
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	g.Expect(strings.Count(rendered, "image: ghcr.io/hookrelay/hookrelay:v0.1.0")).To(Equal(2))
	g.Expect(rendered).NotTo(ContainSubstring("image: hookrelay\n"))
}
