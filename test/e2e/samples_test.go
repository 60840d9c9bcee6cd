package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/samples"
	"github.com/hookrelay/hookrelay/internal/testenv"
)

// applySample creates the objects of config/samples/<file> in namespace as
// shipped, except each WebhookEndpoint's spec.url, which becomes urls[name]
// (the dev overlay's only change). It waits until the dispatcher has every
// endpoint's route and returns the endpoints by name.
func applySample(t *testing.T, namespace, file string, urls map[string]string) map[string]*hookrelayv1alpha1.WebhookEndpoint {
	t.Helper()
	g := NewWithT(t)
	objects, err := samples.Load(filepath.Join(testenv.RepoRoot(), "config", "samples", file))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(samples.RewriteEndpointURLs(objects, func(name string) string {
		url, ok := urls[name]
		if !ok {
			t.Fatalf("%s has endpoint %s, which the test gives no URL", file, name)
		}
		return url
	})).To(Succeed())
	endpoints := map[string]*hookrelayv1alpha1.WebhookEndpoint{}
	subscriptionsOf := map[string]int{}
	for _, object := range objects {
		object.SetNamespace(namespace)
		g.Expect(env.Client.Create(context.Background(), object)).To(Succeed(), "%s %s", object.GetKind(), object.GetName())
		switch object.GetKind() {
		case "WebhookEndpoint":
			endpoints[object.GetName()] = &hookrelayv1alpha1.WebhookEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: object.GetName()}}
		case "WebhookSubscription":
			endpoint, _, _ := unstructured.NestedString(object.Object, "spec", "endpointRef", "name")
			subscriptionsOf[endpoint]++
		}
	}
	g.Expect(endpoints).To(HaveLen(len(urls)), "every URL the test gives names an endpoint of %s", file)
	for _, endpoint := range endpoints {
		g.Eventually(func(g Gomega) {
			g.Expect(condition(g, endpoint, hookrelayv1alpha1.ConditionReady)).To(Equal(metav1.ConditionTrue))
			g.Expect(condition(g, endpoint, hookrelayv1alpha1.ConditionDisabled)).To(Equal(metav1.ConditionFalse))
			// An endpoint is Ready once its route is out, which can be before
			// its subscriptions join the route: wait for them too.
			g.Expect(compiledRoute(g, endpoint).Subscriptions).To(HaveLen(subscriptionsOf[endpoint.Name]))
		}).WithTimeout(30*time.Second).WithPolling(50*time.Millisecond).Should(Succeed(), "endpoint %s", endpoint.Name)
	}
	return endpoints
}

// compiledRoute reads an endpoint's route as the controllers published it
// for the dispatcher.
func compiledRoute(g Gomega, endpoint *hookrelayv1alpha1.WebhookEndpoint) routes.Endpoint {
	var shards corev1.ConfigMapList
	g.Expect(env.Client.List(context.Background(), &shards, client.InNamespace(routesNamespace), client.HasLabels{routes.LabelRoutes})).To(Succeed())
	key := routes.EntryKey(endpoint.Namespace, endpoint.Name)
	var published []string
	for _, shard := range shards.Items {
		if data, ok := shard.Data[key]; ok {
			route, err := routes.DecodeEndpoint([]byte(data))
			g.Expect(err).NotTo(HaveOccurred())
			return route
		}
		for entry := range shard.Data {
			published = append(published, entry)
		}
	}
	// Fails, listing the routes that are published.
	g.Expect(published).To(ContainElement(key), "the published routes")
	return routes.Endpoint{}
}

// durations is a schedule as written in a CR, such as 1m, 5m.
func durations(steps ...string) []metav1.Duration {
	out := make([]metav1.Duration, len(steps))
	for i, step := range steps {
		d, err := time.ParseDuration(step)
		if err != nil {
			panic(err)
		}
		out[i] = metav1.Duration{Duration: d}
	}
	return out
}

// logCapture prints a delivery as its receiver got it (with -v), for the
// README's contract sections.
func logCapture(t *testing.T, url string, got delivery) {
	t.Helper()
	names := make([]string, 0, len(got.Header))
	for name := range got.Header {
		names = append(names, name)
	}
	slices.Sort(names)
	var text strings.Builder
	fmt.Fprintf(&text, "POST %s\n", url)
	for _, name := range names {
		for _, value := range got.Header[name] {
			fmt.Fprintf(&text, "%s: %s\n", name, value)
		}
	}
	fmt.Fprintf(&text, "\n%s", got.Body)
	t.Logf("captured delivery:\n%s", text.String())
}

// signatureHeaders are the names of h that carry a signature family.
func signatureHeaders(h http.Header) []string {
	var names []string
	for name := range h {
		lower := strings.ToLower(name)
		if strings.HasSuffix(lower, "-signature") || strings.HasSuffix(lower, "-webhook-id") || strings.HasSuffix(lower, "-event-type") ||
			strings.HasPrefix(lower, "webhook-") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}
