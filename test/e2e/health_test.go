package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/argocdhealth"
	"github.com/hookrelay/hookrelay/internal/testenv"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

// healthOf is what GitOps tools see of one object: kstatus's status (Flux,
// `kubectl wait`), Argo CD's health from config/argocd/health.lua, and the
// object's Ready and Stalled conditions.
type healthOf struct {
	KStatus status.Status
	Argo    string
	Ready   string // status/reason
	Stalled string // status/reason, empty when absent
}

// argoScript is the shipped Argo CD health check.
var argoScript = func() string {
	text, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "argocd", "health.lua"))
	if err != nil {
		panic(err)
	}
	return string(text)
}()

// readHealth reads the object from the API server, as the tools do, and
// computes its health with kstatus and with the Argo CD script.
func readHealth(g Gomega, kind, namespace, name string) healthOf {
	object := &unstructured.Unstructured{}
	object.SetGroupVersionKind(hookrelayv1alpha1.GroupVersion.WithKind(kind))
	g.Expect(env.Client.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: name}, object)).To(Succeed())
	computed, err := status.Compute(object)
	g.Expect(err).NotTo(HaveOccurred())
	argo, err := argocdhealth.Run(argoScript, object.Object)
	g.Expect(err).NotTo(HaveOccurred())
	conditions, _, err := unstructured.NestedSlice(object.Object, "status", "conditions")
	g.Expect(err).NotTo(HaveOccurred())
	health := healthOf{KStatus: computed.Status, Argo: argo.Status}
	for _, c := range conditions {
		condition := c.(map[string]any)
		value := condition["status"].(string) + "/" + condition["reason"].(string)
		switch condition["type"] {
		case hookrelayv1alpha1.ConditionReady:
			health.Ready = value
		case hookrelayv1alpha1.ConditionStalled:
			health.Stalled = value
		}
	}
	return health
}

// expectHealth waits until the object's health is want.
func expectHealth(t *testing.T, kind, namespace, name string, want healthOf) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) healthOf { return readHealth(g, kind, namespace, name) }).
		WithTimeout(30*time.Second).WithPolling(100*time.Millisecond).Should(Equal(want), "%s %s/%s", kind, namespace, name)
}

const (
	endpointKind     = "WebhookEndpoint"
	subscriptionKind = "WebhookSubscription"
)

var (
	healthy = healthOf{KStatus: status.CurrentStatus, Argo: "Healthy", Ready: "True/" + hookrelayv1alpha1.ReasonPublished}
	// A subscription of an endpoint that is not Ready is not Ready either.
	endpointNotReady = healthOf{KStatus: status.InProgressStatus, Argo: "Degraded", Ready: "False/" + hookrelayv1alpha1.ReasonEndpointNotReady}
)

// TestHealthAsGitOpsToolsSeeIt: for a working, an auto-disabled and a paused
// endpoint, and for a subscription of each, kstatus and the Argo CD health
// check compute what the README says, on the objects the controllers and
// the dispatcher wrote.
func TestHealthAsGitOpsToolsSeeIt(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	subscriptionHealthy := healthOf{KStatus: status.CurrentStatus, Argo: "Healthy", Ready: "True/" + hookrelayv1alpha1.ReasonResolved}

	// Working: Current, Healthy.
	working := endpoint(t, namespace, "working", newReceiver(t, answerWith(http.StatusOK)).URL, []string{"working.*"}, nil)
	expectHealth(t, endpointKind, namespace, "working", healthy)
	expectHealth(t, subscriptionKind, namespace, "working", subscriptionHealthy)

	// A new spec: the dispatcher's conditions follow its generation with
	// no delivery made.
	g.Expect(env.Client.Get(t.Context(), clientKey(working), working)).To(Succeed())
	working.Spec.Description = "a new generation"
	g.Expect(env.Client.Update(t.Context(), working)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), clientKey(working), working)).To(Succeed())
		g.Expect(working.Generation).To(BeNumerically(">", 1))
		g.Expect(working.Status.ObservedGeneration).To(Equal(working.Generation))
		for _, conditionType := range []string{hookrelayv1alpha1.ConditionReady, hookrelayv1alpha1.ConditionDisabled, hookrelayv1alpha1.ConditionDelivering} {
			c := meta.FindStatusCondition(working.Status.Conditions, conditionType)
			g.Expect(c).NotTo(BeNil(), conditionType)
			g.Expect(c.ObservedGeneration).To(Equal(working.Generation), conditionType)
		}
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
	g.Expect(meta.FindStatusCondition(working.Status.Conditions, hookrelayv1alpha1.ConditionDelivering).Reason).To(Equal(hookrelayv1alpha1.ReasonNoDeliveries))

	// Auto-disabled (a 410 Gone disables at once): Ready=False AutoDisabled
	// beside Disabled=True; kstatus InProgress (not Current: kstatus has no
	// Degraded, and Stalled is kept for specs that a retry cannot fix),
	// Argo CD Degraded. Its subscription follows it.
	endpoint(t, namespace, "gone", newReceiver(t, answerWith(http.StatusGone)).URL, []string{"gone.*"}, nil)
	code, _ := d.publish(t, namespace, `{"id":"evt_gone","type":"gone.away","data":{}}`)
	g.Expect(code).To(Equal(http.StatusAccepted))
	expectHealth(t, endpointKind, namespace, "gone",
		healthOf{KStatus: status.InProgressStatus, Argo: "Degraded", Ready: "False/" + hookrelayv1alpha1.ReasonAutoDisabled})
	expectHealth(t, subscriptionKind, namespace, "gone", endpointNotReady)
	var gone hookrelayv1alpha1.WebhookEndpoint
	g.Expect(env.Client.Get(t.Context(), client.ObjectKey{Namespace: namespace, Name: "gone"}, &gone)).To(Succeed())
	g.Expect(meta.IsStatusConditionTrue(gone.Status.Conditions, hookrelayv1alpha1.ConditionDisabled)).To(BeTrue())
	g.Expect(meta.FindStatusCondition(gone.Status.Conditions, hookrelayv1alpha1.ConditionReady).Message).To(ContainSubstring(hookrelayv1alpha1.AnnotationReenableRequestedAt))
	stdout, stderr, err := env.Kubectl(t.Context(), "", "get", "whep", "gone", "-n", namespace)
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	g.Expect(strings.Fields(strings.Split(stdout, "\n")[1])[2:5]).To(Equal([]string{"False", "AutoDisabled", "True"}), "READY REASON DISABLED")

	// Re-enabled: Ready again, and so is its subscription.
	out, err := kubectlHookrelay(t, "reenable", "gone", "-n", namespace)
	g.Expect(err).NotTo(HaveOccurred(), out)
	expectHealth(t, endpointKind, namespace, "gone", healthy)
	expectHealth(t, subscriptionKind, namespace, "gone", subscriptionHealthy)

	// Paused: Ready=True with reason Paused, Current for kstatus (the spec
	// is live: pausing is what it asks for), Suspended for Argo CD; the
	// message and the Held column count what waits.
	paused := endpoint(t, namespace, "paused", newReceiver(t, answerWith(http.StatusOK)).URL, []string{"paused.*"},
		func(spec *hookrelayv1alpha1.WebhookEndpointSpec) { spec.Paused = true })
	for i := range 3 {
		code, _ = d.publish(t, namespace, fmt.Sprintf(`{"id":"evt_paused_%d","type":"paused.held","data":{}}`, i))
		g.Expect(code).To(Equal(http.StatusAccepted))
	}
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), clientKey(paused), paused)).To(Succeed())
		g.Expect(paused.Status.HeldDeliveries).To(Equal(int64(3)))
		g.Expect(meta.FindStatusCondition(paused.Status.Conditions, hookrelayv1alpha1.ConditionReady).Message).
			To(ContainSubstring("paused (spec.paused): 3 matching events are held until spec.paused is false"))
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
	expectHealth(t, endpointKind, namespace, "paused",
		healthOf{KStatus: status.CurrentStatus, Argo: "Suspended", Ready: "True/" + hookrelayv1alpha1.ReasonPaused})
	expectHealth(t, subscriptionKind, namespace, "paused", subscriptionHealthy)
	stdout, stderr, err = env.Kubectl(t.Context(), "", "get", "whep", "paused", "-n", namespace, "-o", "wide")
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	g.Expect(strings.Fields(strings.Split(stdout, "\n")[1])[2:4]).To(Equal([]string{"True", "Paused"}), "READY REASON")
	g.Expect(stdout).To(ContainSubstring("3 matching events are held until spec.paused is false"))
	stdout, stderr, err = env.Kubectl(t.Context(), "", "get", "whep", "paused", "-n", namespace)
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	lines := strings.Split(stdout, "\n")
	g.Expect(strings.Fields(lines[0])[5:7]).To(Equal([]string{"FAILURES", "HELD"}))
	g.Expect(strings.Fields(lines[1])[5:7]).To(Equal([]string{"0", "3"}), "FAILURES HELD")
}

// TestStalledOnInvalidSpecs: an endpoint with a transform that does not
// compile, and a subscription with such a filter (stored before admission
// checked them), are Stalled with the reason of Ready=False: kstatus
// Failed, Argo CD Degraded; a subscription of the stalled endpoint is not
// Ready. Fixing the spec removes Stalled and both turn healthy.
func TestStalledOnInvalidSpecs(t *testing.T) {
	g := NewWithT(t)
	namespace := env.NamespaceWithoutAdmission(t)
	receiver := newReceiver(t, answerWith(http.StatusOK))
	broken := &hookrelayv1alpha1.WebhookEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "broken"},
		Spec: hookrelayv1alpha1.WebhookEndpointSpec{URL: receiver.URL,
			Payload: &hookrelayv1alpha1.PayloadSpec{Transform: `{"id": event.id +}`}},
	}
	g.Expect(env.Client.Create(t.Context(), broken)).To(Succeed())
	subscribe := func(name, filter string) *hookrelayv1alpha1.WebhookSubscription {
		subscription := &hookrelayv1alpha1.WebhookSubscription{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			Spec: hookrelayv1alpha1.WebhookSubscriptionSpec{EndpointRef: hookrelayv1alpha1.EndpointReference{Name: "broken"},
				EventTypes: []string{"*"}, Filter: filter},
		}
		g.Expect(env.Client.Create(t.Context(), subscription)).To(Succeed())
		return subscription
	}
	subscribe("follower", "")
	filtered := subscribe("filtered", `event.data.platform ==`)

	stalled := func(reason string) healthOf {
		return healthOf{KStatus: status.FailedStatus, Argo: "Degraded", Ready: "False/" + reason, Stalled: "True/" + reason}
	}
	expectHealth(t, endpointKind, namespace, "broken", stalled(hookrelayv1alpha1.ReasonTransformInvalid))
	expectHealth(t, subscriptionKind, namespace, "follower", endpointNotReady)
	expectHealth(t, subscriptionKind, namespace, "filtered", stalled(hookrelayv1alpha1.ReasonFilterInvalid))

	// `kubectl wait` on Stalled answers at once, as Flux's check does.
	_, stderr, err := env.Kubectl(t.Context(), "", "wait", "whep/broken", "-n", namespace, "--for=condition=Stalled", "--timeout=10s")
	g.Expect(err).NotTo(HaveOccurred(), stderr)

	g.Expect(env.Client.Get(t.Context(), clientKey(broken), broken)).To(Succeed())
	broken.Spec.Payload.Transform = `{"id": event.id}`
	g.Expect(env.Client.Update(t.Context(), broken)).To(Succeed())
	g.Expect(env.Client.Get(t.Context(), clientKey(filtered), filtered)).To(Succeed())
	filtered.Spec.Filter = `event.data.platform == "uber"`
	g.Expect(env.Client.Update(t.Context(), filtered)).To(Succeed())
	expectHealth(t, endpointKind, namespace, "broken", healthy)
	resolved := healthOf{KStatus: status.CurrentStatus, Argo: "Healthy", Ready: "True/" + hookrelayv1alpha1.ReasonResolved}
	expectHealth(t, subscriptionKind, namespace, "follower", resolved)
	expectHealth(t, subscriptionKind, namespace, "filtered", resolved)
}

// TestRotationSurvivesAGitOpsReapply: Git holds rotate-secret at an old
// time; `kubectl hookrelay rotate-secret` rotates the key; a GitOps tool then
// applies Git's manifest again with server-side apply, setting the old time
// back. That is not a second rotation: the key rotated once, and the
// previous key still verifies deliveries during the grace period.
func TestRotationSurvivesAGitOpsReapply(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	receiver := newReceiver(t, answerWith(http.StatusOK))
	const gitTime = "2026-01-02T15:04:05Z"
	manifest := func(description string) string {
		return `apiVersion: hookrelay.dev/v1alpha1
kind: WebhookEndpoint
metadata:
  name: gitops
  namespace: ` + namespace + `
  annotations:
    ` + hookrelayv1alpha1.AnnotationRotateSecret + `: "` + gitTime + `"
spec:
  url: ` + receiver.URL + `
  description: ` + description + `
---
apiVersion: hookrelay.dev/v1alpha1
kind: WebhookSubscription
metadata:
  name: gitops
  namespace: ` + namespace + `
spec:
  endpointRef: {name: gitops}
  eventTypes: ["*"]
`
	}
	apply := func(description string) {
		t.Helper()
		// GitOps tools apply with force: Git's value wins over a field
		// another manager (here the plugin) changed.
		_, stderr, err := env.Kubectl(t.Context(), manifest(description), "apply", "--server-side", "--force-conflicts", "--field-manager=gitops", "-f", "-")
		g.Expect(err).NotTo(HaveOccurred(), stderr)
	}
	apply("from git")
	ep := &hookrelayv1alpha1.WebhookEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "gitops"}}
	expectHealth(t, endpointKind, namespace, "gitops", healthy)
	originalKey := secretOf(t, ep)

	out, err := kubectlHookrelay(t, "rotate-secret", "gitops", "-n", namespace)
	g.Expect(err).NotTo(HaveOccurred(), out)
	var rotatedKey string
	g.Eventually(func() string { rotatedKey = secretOf(t, ep); return rotatedKey }).WithTimeout(10 * time.Second).ShouldNot(Equal(originalKey))
	g.Expect(env.Client.Get(t.Context(), clientKey(ep), ep)).To(Succeed())
	pluginTime := ep.Annotations[hookrelayv1alpha1.AnnotationRotateSecret]
	g.Expect(pluginTime).NotTo(Equal(gitTime))

	// Git's manifest again, with a new description: once its generation is
	// observed, the controller has handled the object carrying Git's old
	// rotate-secret time.
	apply("from git, synced again")
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), clientKey(ep), ep)).To(Succeed())
		g.Expect(ep.Annotations[hookrelayv1alpha1.AnnotationRotateSecret]).To(Equal(gitTime))
		g.Expect(ep.Status.ObservedGeneration).To(Equal(ep.Generation))
		g.Expect(ep.Spec.Description).To(Equal("from git, synced again"))
	}).WithTimeout(10 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	g.Expect(ep.Status.LastRotateSecret).To(Equal(pluginTime), "the time last acted on")

	// Exactly one rotation: the key the plugin made is current, the
	// original one is the previous one, and one SecretRotated event.
	var secret corev1.Secret
	g.Expect(env.Client.Get(t.Context(), client.ObjectKey{Namespace: namespace, Name: whsec.GeneratedSecretName("gitops")}, &secret)).To(Succeed())
	g.Expect(string(secret.Data["secret"])).To(Equal(rotatedKey))
	g.Expect(string(secret.Data["previous"])).To(Equal(originalKey))
	stdout, stderr, err := env.Kubectl(t.Context(), "", "get", "events", "-n", namespace, "--field-selector", "reason="+hookrelayv1alpha1.ReasonSecretRotated, "-o", "name")
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	g.Expect(strings.Fields(stdout)).To(HaveLen(1), stdout)

	// The previous key still verifies: a delivery carries both signatures.
	n := 0
	g.Eventually(func(g Gomega) {
		n++
		code, _ := d.publish(t, namespace, fmt.Sprintf(`{"id":"evt_gitops_%d","type":"key.rotated","data":{}}`, n))
		g.Expect(code).To(Equal(http.StatusAccepted))
		g.Eventually(receiver.eventIDs).WithTimeout(10 * time.Second).Should(HaveLen(n))
		last := receiver.got()[n-1]
		for _, key := range []string{originalKey, rotatedKey} {
			g.Expect(verifyPrefixed(last.Header, "Hookrelay", key, last.Body)).To(Succeed())
			g.Expect(verifyStandard(last.Header, key, last.Body)).To(Succeed())
		}
	}).WithTimeout(rotationGrace / 2).WithPolling(100 * time.Millisecond).Should(Succeed())
}
