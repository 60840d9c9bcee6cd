package controllers

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

// bombTransform is under 5,000 characters, yet each replace with an empty
// pattern puts the long string between every two characters: evaluated, it
// would allocate gigabytes. Only a static cost estimate can refuse it.
func bombTransform() string {
	long := strings.Repeat("x", 1000)
	expression := "event.type"
	for range 4 {
		expression += ".replace('', '" + long + "')"
	}
	return `{"body": ` + expression + `}`
}

// TestAdmissionWebhookRefusesCEL: kubectl apply of a transform or filter that
// celenv refuses, or of an action annotation that is not a time, fails with
// a message naming the field; valid ones are accepted.
func TestAdmissionWebhookRefusesCEL(t *testing.T) {
	namespace := env.Namespace(t)
	endpoint := func(name, transform string) string {
		return fmt.Sprintf("apiVersion: hookrelay.dev/v1alpha1\nkind: WebhookEndpoint\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  url: https://receiver.example/hook\n  payload:\n    transform: %q\n", name, namespace, transform)
	}
	subscription := func(name, filter string) string {
		return fmt.Sprintf("apiVersion: hookrelay.dev/v1alpha1\nkind: WebhookSubscription\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  endpointRef: {name: palm}\n  eventTypes: [\"login.*\"]\n  filter: %q\n", name, namespace, filter)
	}
	annotated := func(name, annotation, value string) string {
		return fmt.Sprintf("apiVersion: hookrelay.dev/v1alpha1\nkind: WebhookEndpoint\nmetadata:\n  name: %s\n  namespace: %s\n  annotations:\n    %s: %q\nspec:\n  url: https://receiver.example/hook\n", name, namespace, annotation, value)
	}
	apply := func(t *testing.T, manifest string, args ...string) (string, string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return env.Kubectl(ctx, manifest, append([]string{"apply", "-f", "-"}, args...)...)
	}

	refused := []struct {
		name, manifest, message string
	}{
		{"transform that does not compile", endpoint("syntax", `{"data": event.data.`),
			`spec.payload.transform: Invalid value: ERROR: <input>:1:`},
		{"transform with an unknown function", endpoint("unknown-function", `{"data": frobnicate(event.data)}`),
			`spec.payload.transform: Invalid value: ERROR: <input>:1:`},
		{"transform that is not an object", endpoint("not-an-object", `event.type + "!"`),
			`spec.payload.transform: Invalid value: expression gives string, want map or list`},
		{"rotate-secret that is not a time", annotated("rotate-now", hookrelayv1alpha1.AnnotationRotateSecret, "now"),
			`metadata.annotations[hookrelay.dev/rotate-secret]: Invalid value: "now": must be an RFC 3339 time such as 2026-01-02T15:04:05Z`},
		{"reenable-requested-at that is not a time", annotated("reenable-please", hookrelayv1alpha1.AnnotationReenableRequestedAt, "please"),
			`metadata.annotations[hookrelay.dev/reenable-requested-at]: Invalid value: "please": must be an RFC 3339 time`},
		{"filter that does not compile", subscription("syntax", `event.data.platform ==`),
			`spec.filter: Invalid value: ERROR: <input>:1:`},
		{"filter that is not a bool", subscription("not-a-bool", `1 + 1`),
			`spec.filter: Invalid value: expression gives int, want bool`},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := apply(t, tc.manifest)
			if err == nil {
				t.Fatalf("kubectl apply accepted:\n%s", tc.manifest)
			}
			if !strings.Contains(stderr, tc.message) {
				t.Fatalf("kubectl apply error does not contain %q:\n%s", tc.message, stderr)
			}
		})
	}

	t.Run("valid ones are accepted", func(t *testing.T) {
		for _, manifest := range []string{
			endpoint("palm", `{"data": event.data, "webhook_url": endpoint.url}`),
			annotated("rotate-at-a-time", hookrelayv1alpha1.AnnotationRotateSecret, "2026-01-02T15:04:05Z"),
			subscription("uber-logins", `event.data.platform == "uber"`),
		} {
			stdout, stderr, err := apply(t, manifest)
			if err != nil || !strings.Contains(stdout, "created") {
				t.Fatalf("kubectl apply refused:\n%s\n%s%s", manifest, stdout, stderr)
			}
		}
		// A changed expression is checked on update too.
		_, stderr, err := apply(t, subscription("uber-logins", `event.data.platform ==`))
		if err == nil || !strings.Contains(stderr, "spec.filter: Invalid value:") {
			t.Fatalf("an update to a filter that does not compile: err %v\n%s", err, stderr)
		}
	})

	t.Run("cost bomb", func(t *testing.T) {
		bomb := bombTransform()
		if len(bomb) >= 5000 {
			t.Fatalf("the bomb is %d characters, want under 5,000", len(bomb))
		}
		// A server-side dry run: admission runs, nothing is stored.
		_, stderr, err := apply(t, endpoint("bomb", bomb), "--dry-run=server")
		if err == nil {
			t.Fatal("kubectl apply accepted a transform over the cost budget")
		}
		if !strings.Contains(stderr, "spec.payload.transform: Invalid value:") || !strings.Contains(stderr, "estimated cost") {
			t.Fatalf("kubectl apply error does not name spec.payload.transform:\n%s", stderr)
		}
	})
}

// TestAdmissionWebhookSkipsPlainObjects: the API server calls the webhook
// only for what it checks (a transform, an action annotation, a filter), so
// that a bulk create of plain endpoints and subscriptions costs no webhook
// round trips; its own counter of webhook calls says so.
func TestAdmissionWebhookSkipsPlainObjects(t *testing.T) {
	namespace := env.Namespace(t)
	calls := func(webhook string) float64 {
		t.Helper()
		clientset, err := kubernetes.NewForConfig(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		metrics, err := clientset.RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		total := 0.0
		for line := range strings.Lines(string(metrics)) {
			if !strings.HasPrefix(line, "apiserver_admission_webhook_request_total{") || !strings.Contains(line, `name="`+webhook+`"`) {
				continue
			}
			fields := strings.Fields(line)
			value, err := strconv.ParseFloat(fields[len(fields)-1], 64)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			total += value
		}
		return total
	}
	const endpoints, subscriptions = "webhookendpoints.hookrelay.dev", "webhooksubscriptions.hookrelay.dev"
	endpointCalls, subscriptionCalls := calls(endpoints), calls(subscriptions)
	apply := func(manifest string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, stderr, err := env.Kubectl(ctx, manifest, "apply", "-f", "-"); err != nil {
			t.Fatalf("kubectl apply: %v: %s", err, stderr)
		}
	}
	apply(fmt.Sprintf("apiVersion: hookrelay.dev/v1alpha1\nkind: WebhookEndpoint\nmetadata:\n  name: plain\n  namespace: %s\n  labels: {team: a}\nspec:\n  url: https://receiver.example/hook\n"+
		"---\napiVersion: hookrelay.dev/v1alpha1\nkind: WebhookSubscription\nmetadata:\n  name: plain\n  namespace: %s\nspec:\n  endpointRef: {name: plain}\n  eventTypes: [\"login.*\"]\n", namespace, namespace))
	if got, got2 := calls(endpoints), calls(subscriptions); got != endpointCalls || got2 != subscriptionCalls {
		t.Fatalf("a plain endpoint and subscription called the webhook: %v and %v calls, want %v and %v", got, got2, endpointCalls, subscriptionCalls)
	}
	apply(fmt.Sprintf("apiVersion: hookrelay.dev/v1alpha1\nkind: WebhookEndpoint\nmetadata:\n  name: transformed\n  namespace: %s\nspec:\n  url: https://receiver.example/hook\n  payload:\n    transform: '{\"type\": event.type}'\n"+
		"---\napiVersion: hookrelay.dev/v1alpha1\nkind: WebhookSubscription\nmetadata:\n  name: filtered\n  namespace: %s\nspec:\n  endpointRef: {name: plain}\n  eventTypes: [\"login.*\"]\n  filter: 'event.type != \"\"'\n", namespace, namespace))
	if got, got2 := calls(endpoints), calls(subscriptions); got != endpointCalls+1 || got2 != subscriptionCalls+1 {
		t.Fatalf("a transform and a filter: %v and %v webhook calls, want %v and %v", got, got2, endpointCalls+1, subscriptionCalls+1)
	}
}
