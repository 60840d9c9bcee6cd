package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/routes"
)

func TestRoutesFollowEndpointsAndSubscriptions(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	routesNamespace, _ := startManager(t, Options{})
	namespace := env.Namespace(t)
	entry := routes.EntryKey(namespace, "palenca")
	route := func(g Gomega) routes.Endpoint {
		published, _ := publishedRoutes(g, routesNamespace)
		g.Expect(published).To(HaveKey(entry))
		return published[entry]
	}

	endpoint := newEndpoint(namespace, "palenca")
	endpoint.Spec.SuccessStatusCodes = []int32{201, 200}
	endpoint.Spec.Sandbox = true
	endpoint.Spec.Headers = []hookrelayv1alpha1.Header{{Name: "X-Team", Value: "income"}}
	g.Expect(env.Client.Create(ctx, endpoint)).To(Succeed())
	subscription := newSubscription(namespace, "logins", "palenca", "login.*")
	subscription.Spec.Filter = `event.data.platform == "uber"`
	g.Expect(env.Client.Create(ctx, subscription)).To(Succeed())

	g.Eventually(func(g Gomega) {
		r := route(g)
		g.Expect(r.URL).To(Equal("https://receiver.example/palenca"))
		g.Expect(r.Timeout.Duration).To(Equal(10 * time.Second))
		g.Expect(r.RetrySchedule).To(Equal(hookrelayv1alpha1.DefaultRetrySchedule()))
		g.Expect(r.SuccessStatusCodes).To(Equal([]int32{200, 201}))
		g.Expect(r.AutoDisableAfter).To(Equal(int32(10)))
		g.Expect(r.Sandbox).To(BeTrue())
		g.Expect(r.Headers).To(Equal(map[string]string{"X-Team": "income"}))
		g.Expect(r.Subscriptions).To(Equal([]routes.Subscription{{
			Name: "logins", Generation: 1, EventTypes: []string{"login.*"}, Filter: `event.data.platform == "uber"`,
		}}))
	}).WithTimeout(20 * time.Second).Should(Succeed())

	// Update: the subscription's event types.
	// Retried on a conflict: the controller writes the status meanwhile
	// (Ready once the endpoint is).
	g.Eventually(func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(subscription), subscription); err != nil {
			return err
		}
		subscription.Spec.EventTypes = []string{"login.success", "login.error"}
		return env.Client.Update(ctx, subscription)
	}).WithTimeout(10 * time.Second).Should(Succeed())
	g.Eventually(func(g Gomega) []string {
		r := route(g)
		g.Expect(r.Subscriptions).To(HaveLen(1))
		return r.Subscriptions[0].EventTypes
	}).WithTimeout(20 * time.Second).Should(Equal([]string{"login.error", "login.success"}))

	// Pause, and a re-enable request.
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(endpoint), endpoint)).To(Succeed())
	endpoint.Spec.Paused = true
	g.Expect(env.Client.Update(ctx, endpoint)).To(Succeed())
	annotate(t, endpoint, hookrelayv1alpha1.AnnotationReenableRequestedAt, "2026-11-25T10:00:00Z")
	g.Eventually(func(g Gomega) {
		r := route(g)
		g.Expect(r.Paused).To(BeTrue())
		g.Expect(r.ReenableToken).To(Equal("2026-11-25T10:00:00Z"))
	}).WithTimeout(20 * time.Second).Should(Succeed())
	eventuallyReady(t, endpoint, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPaused)

	// An older re-enable time (Git's, applied again) is not passed on: once
	// a later spec is published, the token is still the later time.
	annotate(t, endpoint, hookrelayv1alpha1.AnnotationReenableRequestedAt, "2026-11-24T10:00:00Z")
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(endpoint), endpoint)).To(Succeed())
	endpoint.Spec.Paused = false
	g.Expect(env.Client.Update(ctx, endpoint)).To(Succeed())
	g.Eventually(func(g Gomega) bool { return route(g).Paused }).WithTimeout(20 * time.Second).Should(BeFalse())
	g.Expect(route(g).ReenableToken).To(Equal("2026-11-25T10:00:00Z"))
	eventuallyReady(t, endpoint, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(endpoint), endpoint)).To(Succeed())
	g.Expect(endpoint.Status.LastReenableRequestedAt).To(Equal("2026-11-25T10:00:00Z"))

	// Delete the subscription, then the endpoint.
	g.Expect(env.Client.Delete(ctx, subscription)).To(Succeed())
	g.Eventually(func(g Gomega) []routes.Subscription { return route(g).Subscriptions }).
		WithTimeout(20 * time.Second).Should(BeEmpty())
	g.Expect(env.Client.Delete(ctx, endpoint)).To(Succeed())
	g.Eventually(func(g Gomega) {
		published, keys := publishedRoutes(g, routesNamespace)
		g.Expect(published).NotTo(HaveKey(entry))
		g.Expect(keys).NotTo(HaveKey(entry))
	}).WithTimeout(20 * time.Second).Should(Succeed())
}

func TestRoutesShardUnderTheSizeLimitWithoutChurn(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	const shardSize, count = 16 << 10, 200
	routesNamespace, _ := startManager(t, Options{ShardSize: shardSize})
	namespace := env.Namespace(t)

	for i := range count {
		endpoint := newEndpoint(namespace, fmt.Sprintf("endpoint-%03d", i))
		endpoint.Spec.Description = "one of many endpoints that together need several shards"
		g.Expect(env.Client.Create(ctx, endpoint)).To(Succeed())
		g.Expect(env.Client.Create(ctx, newSubscription(namespace, endpoint.Name, endpoint.Name, "*"))).To(Succeed())
	}
	g.Eventually(func(g Gomega) {
		published, keys := publishedRoutes(g, routesNamespace)
		g.Expect(published).To(HaveLen(count))
		g.Expect(keys).To(HaveLen(count))
		for _, route := range published {
			g.Expect(route.Subscriptions).To(HaveLen(1))
		}
	}).WithTimeout(60 * time.Second).Should(Succeed())

	var configMaps corev1.ConfigMapList
	g.Expect(env.Client.List(ctx, &configMaps, client.InNamespace(routesNamespace), client.HasLabels{routes.LabelRoutes})).To(Succeed())
	var secrets corev1.SecretList
	g.Expect(env.Client.List(ctx, &secrets, client.InNamespace(routesNamespace), client.HasLabels{routes.LabelKeys})).To(Succeed())
	g.Expect(len(configMaps.Items)).To(BeNumerically(">", 3), "routes spread over several ConfigMaps")
	g.Expect(len(secrets.Items)).To(BeNumerically(">", 1), "keys spread over several Secrets")
	versions := map[string]string{}
	for _, obj := range append(objects(configMaps.Items), objects(secrets.Items)...) {
		encoded, err := json.Marshal(obj)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(len(encoded)).To(BeNumerically("<=", shardSize), "%s is over the limit", obj.GetName())
		versions[obj.GetName()] = obj.GetResourceVersion()
	}

	// A compile of an unchanged configuration writes nothing.
	compiler := &RoutesReconciler{Client: env.Client, Shards: env.Client, KeysShards: env.Client, Clock: clock.RealClock{}, Namespace: routesNamespace,
		ShardSize: shardSize, publication: newPublication()}
	_, err := compiler.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: routesNamespace, Name: "routes"}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(env.Client.List(ctx, &configMaps, client.InNamespace(routesNamespace), client.HasLabels{routes.LabelRoutes})).To(Succeed())
	g.Expect(env.Client.List(ctx, &secrets, client.InNamespace(routesNamespace), client.HasLabels{routes.LabelKeys})).To(Succeed())
	after := map[string]string{}
	for _, obj := range append(objects(configMaps.Items), objects(secrets.Items)...) {
		after[obj.GetName()] = obj.GetResourceVersion()
	}
	g.Expect(after).To(Equal(versions), "a no-op compile changed a resourceVersion")
}

func objects[T any, P interface {
	*T
	client.Object
}](items []T) []client.Object {
	out := make([]client.Object, len(items))
	for i := range items {
		out[i] = P(&items[i])
	}
	return out
}

// noShardsSeen is a shard cache that has not seen any shard yet.
type noShardsSeen struct{ client.Reader }

func (noShardsSeen) List(context.Context, client.ObjectList, ...client.ListOption) error { return nil }

// TestShardsSurviveALaggingCache: the compiler remembers its own shard
// writes, so that a cache that does not show them yet makes it write
// nothing again, while a shard someone else edited is still repaired.
func TestShardsSurviveALaggingCache(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startManager(t, Options{})
	namespace := env.Namespace(t)
	endpoint := newEndpoint(namespace, "lag")
	g.Expect(env.Client.Create(ctx, endpoint)).To(Succeed())
	eventuallyReady(t, endpoint, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)

	// A second compiler, writing its shards in a namespace of its own.
	shardsNamespace := env.Namespace(t)
	compiler := &RoutesReconciler{Client: env.Client, Shards: noShardsSeen{env.Client}, KeysShards: noShardsSeen{env.Client},
		Clock: clock.RealClock{}, Namespace: shardsNamespace, ShardSize: DefaultShardSize, publication: newPublication()}
	compile := func() error {
		_, err := compiler.Reconcile(ctx, reconcile.Request{})
		return err
	}
	g.Expect(compile()).To(Succeed())
	routesBefore, keysBefore := shardVersions(g, shardsNamespace)
	g.Expect(routesBefore).To(HaveLen(1))
	g.Expect(keysBefore).To(HaveLen(1))
	g.Expect(compile()).To(Succeed())
	routesAfter, keysAfter := shardVersions(g, shardsNamespace)
	g.Expect(changedVersions(routesBefore, routesAfter)).To(BeEmpty(), "a compile behind a lagging cache rewrote a routes shard")
	g.Expect(changedVersions(keysBefore, keysAfter)).To(BeEmpty(), "a compile behind a lagging cache rewrote a keys shard")

	// Someone else edits the routes shard: the update from the version last
	// written conflicts, and the retry, from a cache that shows the edit,
	// repairs it.
	compiler.Shards, compiler.KeysShards = env.Client, env.Client
	var shard corev1.ConfigMap
	g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: shardsNamespace, Name: routes.ShardName(routes.RoutesShardPrefix, 0)}, &shard)).To(Succeed())
	want := shard.DeepCopy().Data
	shard.Data["edited"] = "by hand"
	g.Expect(env.Client.Update(ctx, &shard)).To(Succeed())
	g.Expect(compile()).To(MatchError(ContainSubstring("updating shard")))
	g.Expect(compile()).To(Succeed())
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(&shard), &shard)).To(Succeed())
	g.Expect(shard.Data).To(Equal(want))
}
