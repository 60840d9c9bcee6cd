package controllers

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/testenv"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

// TestAdmissionRefusesInvalidSpecs applies each invalid spec with kubectl and
// expects the API server to refuse it with a message naming the field.
func TestAdmissionRefusesInvalidSpecs(t *testing.T) {
	namespace := env.Namespace(t)
	endpoint := func(spec string) string {
		return fmt.Sprintf("apiVersion: hookrelay.dev/v1alpha1\nkind: WebhookEndpoint\nmetadata:\n  name: invalid\n  namespace: %s\nspec:\n%s", namespace, spec)
	}
	subscription := func(spec string) string {
		return fmt.Sprintf("apiVersion: hookrelay.dev/v1alpha1\nkind: WebhookSubscription\nmetadata:\n  name: invalid\n  namespace: %s\nspec:\n  endpointRef: {name: palm}\n%s", namespace, spec)
	}
	cases := []struct {
		name, manifest, field string
	}{
		{"url not a URL", endpoint("  url: not a url\n"), "spec.url"},
		{"url without host", endpoint("  url: https://\n"), "spec.url"},
		{"url with another scheme", endpoint("  url: ftp://files.example.com/hook\n"), "spec.url"},
		{"url with user and password", endpoint("  url: https://user:pass@example.com/\n"), "spec.url must not carry user info"},
		{"url with user", endpoint("  url: https://user@example.com/\n"), "spec.url must not carry user info"},
		{"url with empty user info", endpoint("  url: https://@example.com/\n"), "spec.url must not carry user info"},
		{"url with a loopback zone", endpoint("  url: \"http://[::1%25lo]/\"\n"), "spec.url must not carry an IPv6 zone"},
		{"url with a private zone", endpoint("  url: \"http://[fd00::2%25eth0]/\"\n"), "spec.url must not carry an IPv6 zone"},
		{"url with a link-local zone", endpoint("  url: \"https://[fe80::1%25eth0]:8443/hook\"\n"), "spec.url must not carry an IPv6 zone"},
		{"empty retry schedule", endpoint("  url: https://example.com/hook\n  retry: {schedule: []}\n"), "spec.retry.schedule"},
		{"zero retry step", endpoint("  url: https://example.com/hook\n  retry: {schedule: [1m, 0s]}\n"), "spec.retry.schedule"},
		{"negative retry step", endpoint("  url: https://example.com/hook\n  retry: {schedule: [-5m]}\n"), "spec.retry.schedule"},
		{"retry step not a duration", endpoint("  url: https://example.com/hook\n  retry: {schedule: [soon]}\n"), "spec.retry.schedule"},
		{"zero timeout", endpoint("  url: https://example.com/hook\n  timeout: 0s\n"), "spec.timeout"},
		{"negative timeout", endpoint("  url: https://example.com/hook\n  timeout: -1s\n"), "spec.timeout"},
		{"timeout over 30s", endpoint("  url: https://example.com/hook\n  timeout: 31s\n"), "spec.timeout"},
		{"negative failure threshold", endpoint("  url: https://example.com/hook\n  autoDisable: {afterConsecutiveFailures: -1}\n"), "spec.autoDisable.afterConsecutiveFailures"},
		{"header value with CR LF", endpoint("  url: https://example.com/hook\n  headers: [{name: X-Team, value: \"a\\r\\nX-Injected: 1\"}]\n"), "spec.headers"},
		{"header value with LF", endpoint("  url: https://example.com/hook\n  headers: [{name: X-Team, value: \"a\\nb\"}]\n"), "spec.headers"},
		{"header names equal up to case", endpoint("  url: https://example.com/hook\n  headers: [{name: X-Team, value: a}, {name: x-team, value: b}]\n"), "spec.headers"},
		{"header with value and valueFrom", endpoint("  url: https://example.com/hook\n  headers: [{name: X-Team, value: a, valueFrom: {secretKeyRef: {name: s, key: k}}}]\n"), "spec.headers"},
		{"header without a value", endpoint("  url: https://example.com/hook\n  headers: [{name: X-Team}]\n"), "spec.headers"},
		{"reserved header name", endpoint("  url: https://example.com/hook\n  headers: [{name: Webhook-Signature, value: a}]\n"), "spec.headers"},
		{"headers over the total size", endpoint("  url: https://example.com/hook\n  headers: [" + bigHeaders(5, 4000) + "]\n"), "spec.headers"},
		{"header prefix Webhook with both schemes by default", endpoint("  url: https://example.com/hook\n  signing: {headerPrefix: Webhook}\n"), "spec.signing.headerPrefix must not be Webhook"},
		{"header prefix webhook with both schemes", endpoint("  url: https://example.com/hook\n  signing: {headerPrefix: wEBHOOK, schemes: [StandardWebhooks, Prefixed]}\n"), "spec.signing.headerPrefix must not be Webhook"},
		{"header prefix with a space", endpoint("  url: https://example.com/hook\n  signing: {headerPrefix: \"Palm Sig\"}\n"), "spec.signing.headerPrefix"},
		{"header prefix with a colon", endpoint("  url: https://example.com/hook\n  signing: {headerPrefix: \"X:\"}\n"), "spec.signing.headerPrefix"},
		{"unknown signature scheme", endpoint("  url: https://example.com/hook\n  signing: {schemes: [None]}\n"), "spec.signing.schemes"},
		{"no signature scheme", endpoint("  url: https://example.com/hook\n  signing: {schemes: []}\n"), "spec.signing.schemes"},
		{"event type with spaces", subscription("  eventTypes: [\"user created\"]\n"), "spec.eventTypes"},
		{"wildcard in the middle", subscription("  eventTypes: [\"business.*.updated\"]\n"), "spec.eventTypes"},
		{"leading wildcard", subscription("  eventTypes: [\"*.created\"]\n"), "spec.eventTypes"},
		{"no event types", subscription("  eventTypes: []\n"), "spec.eventTypes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, stderr, err := env.Kubectl(ctx, tc.manifest, "apply", "-f", "-")
			if err == nil {
				t.Fatalf("kubectl apply accepted:\n%s", tc.manifest)
			}
			if !strings.Contains(stderr, tc.field) {
				t.Fatalf("kubectl apply error does not name %s:\n%s", tc.field, stderr)
			}
			if !strings.Contains(stderr, "Invalid value") && !strings.Contains(stderr, "invalid") {
				t.Fatalf("kubectl apply failed for another reason:\n%s", stderr)
			}
		})
	}

	// URLs close to the refused ones are accepted.
	// A Webhook prefix with the Prefixed scheme alone collides with nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	manifest := fmt.Sprintf("apiVersion: hookrelay.dev/v1alpha1\nkind: WebhookEndpoint\nmetadata:\n  name: webhook-prefix\n  namespace: %s\nspec:\n  url: https://example.com/hook\n  signing: {headerPrefix: Webhook, schemes: [Prefixed]}\n", namespace)
	if _, stderr, err := env.Kubectl(ctx, manifest, "apply", "-f", "-"); err != nil {
		t.Errorf("kubectl apply of headerPrefix Webhook with schemes [Prefixed]: %v\n%s", err, stderr)
	}
	cancel()

	for i, url := range []string{"https://example.com/a@b", "https://example.com/?q=a@b", "https://[2606:2800:220:1::1]:8443/hook", "https://example.com/%25"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		manifest := fmt.Sprintf("apiVersion: hookrelay.dev/v1alpha1\nkind: WebhookEndpoint\nmetadata:\n  name: valid-%d\n  namespace: %s\nspec:\n  url: %q\n", i, namespace, url)
		_, stderr, err := env.Kubectl(ctx, manifest, "apply", "-f", "-")
		cancel()
		if err != nil {
			t.Errorf("kubectl apply of url %s: %v\n%s", url, err, stderr)
		}
	}

	// The valid form of the same manifest is accepted, with defaults.
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, stderr, err := env.Kubectl(ctx, endpoint("  url: https://example.com/hook\n"), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply of a valid endpoint: %v\n%s", err, stderr)
	}
	stdout, stderr, err := env.Kubectl(ctx, "", "get", "whep", "invalid", "-n", namespace,
		"-o", "jsonpath={.spec.timeout} {.spec.retry.schedule} {.spec.autoDisable.afterConsecutiveFailures} {.spec.maxInFlight} {.spec.signing.schemes}")
	if err != nil {
		t.Fatalf("kubectl get: %v\n%s", err, stderr)
	}
	if want := `10s ["1m","5m","30m","2h"] 10 10 ["Prefixed","StandardWebhooks"]`; stdout != want {
		t.Fatalf("defaults = %q, want %q", stdout, want)
	}
}

// TestKubectlShowsAndWaitsForEndpoints checks the printer columns and that
// `kubectl wait --for=condition=Ready` returns.
func TestKubectlShowsAndWaitsForEndpoints(t *testing.T) {
	g := NewWithT(t)
	startManager(t, Options{})
	namespace := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	manifest := fmt.Sprintf(`apiVersion: hookrelay.dev/v1alpha1
kind: WebhookEndpoint
metadata: {name: first, namespace: %[1]s}
spec: {url: "https://first.example.com/hooks"}
---
apiVersion: hookrelay.dev/v1alpha1
kind: WebhookEndpoint
metadata: {name: second, namespace: %[1]s}
spec: {url: "https://second.example.com/hooks"}
`, namespace)
	_, stderr, err := env.Kubectl(ctx, manifest, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), stderr)

	stdout, stderr, err := env.Kubectl(ctx, "", "wait", "--for=condition=Ready", "whep", "--all", "-n", namespace, "--timeout=30s")
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	g.Expect(stdout).To(ContainSubstring("webhookendpoint.hookrelay.dev/first condition met"))
	g.Expect(stdout).To(ContainSubstring("webhookendpoint.hookrelay.dev/second condition met"))

	stdout, stderr, err = env.Kubectl(ctx, "", "get", "whep", "-n", namespace)
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	g.Expect(strings.Fields(lines[0])).To(Equal([]string{"NAME", "URL", "READY", "REASON", "DISABLED", "FAILURES", "HELD", "AGE"}))
	g.Expect(strings.Fields(lines[1])[:3]).To(Equal([]string{"first", "https://first.example.com/hooks", "True"}))

	stdout, stderr, err = env.Kubectl(ctx, "", "get", "whep", "-n", namespace, "-o", "wide")
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	g.Expect(strings.Fields(strings.Split(stdout, "\n")[0])).To(Equal([]string{"NAME", "URL", "READY", "REASON", "DISABLED", "FAILURES", "HELD", "AGE", "SANDBOX", "PAUSED", "SECRET", "MESSAGE"}))
	g.Expect(stdout).To(ContainSubstring(whsec.GeneratedSecretName("first")))
}

// TestSamplesBecomeReady applies config/samples/ as the README does.
func TestSamplesBecomeReady(t *testing.T) {
	g := NewWithT(t)
	routesNamespace, _ := startManager(t, Options{AllowInsecure: true})
	namespace := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	_, stderr, err := env.Kubectl(ctx, "", "apply", "-n", namespace, "-f", filepath.Join(testenv.RepoRoot(), "config", "samples"))
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	stdout, stderr, err := env.Kubectl(ctx, "", "wait", "--for=condition=Ready", "whep,whsub", "--all", "-n", namespace, "--timeout=30s")
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	g.Expect(strings.Count(stdout, "condition met")).To(Equal(6))

	published, _ := publishedRoutes(g, routesNamespace)
	palm := published[routes.EntryKey(namespace, "palm")]
	g.Expect(palm.RetrySchedule).To(Equal(hookrelayv1alpha1.DefaultRetrySchedule()))
	g.Expect(palm.Subscriptions[0].EventTypes).To(ContainElement("user.verification.completed"))
	sandbox := published[routes.EntryKey(namespace, "palenca-sandbox")]
	g.Expect(sandbox.Sandbox).To(BeTrue())
	g.Expect(sandbox.SuccessStatusCodes).To(Equal([]int32{200, 201}))
	g.Expect(sandbox.Transform).To(ContainSubstring(`"webhook_url": endpoint.url`))
	g.Expect(sandbox.Transform).To(ContainSubstring(`"user_id": event.data.?user_id.orValue(null)`))
	g.Expect(sandbox.Subscriptions[0].EventTypes).To(Equal([]string{"*"}))
	g.Expect(published[routes.EntryKey(namespace, "palenca-production")].Sandbox).To(BeFalse())
	// Signing comes from the samples, not from a dispatcher flag.
	g.Expect(palm.Signing).To(Equal(&routes.Signing{HeaderPrefix: "Palm", Schemes: []string{routes.SchemePrefixed, routes.SchemeStandardWebhooks}}))
	g.Expect(sandbox.Signing).To(Equal(&routes.Signing{Schemes: []string{routes.SchemeStandardWebhooks}}))
	g.Expect(published[routes.EntryKey(namespace, "palenca-production")].Signing).To(Equal(&routes.Signing{Schemes: []string{routes.SchemeStandardWebhooks}}))
}

// bigHeaders is n YAML flow headers with values of size characters.
func bigHeaders(n, size int) string {
	headers := make([]string, n)
	for i := range headers {
		headers[i] = fmt.Sprintf("{name: X-Big-%d, value: %s}", i, strings.Repeat("v", size))
	}
	return strings.Join(headers, ", ")
}
