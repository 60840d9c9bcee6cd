package controllers

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/routes"
)

// DefaultShardSize keeps each routes ConfigMap and keys Secret well under
// the API server's object size limit.
const DefaultShardSize = 512 << 10

// RoutesReconciler compiles every Ready endpoint and subscription into the
// dispatcher configuration: routes ConfigMaps and keys Secrets in the
// operator namespace, sharded by size. All changes funnel into one request,
// so bursts of changes coalesce into one compile.
type RoutesReconciler struct {
	client.Client
	// Shards reads the shards straight from the API server: the cache lags
	// behind this reconciler's own writes, which would make them conflict.
	Shards client.Reader
	Clock  clock.PassiveClock
	// Namespace holds the dispatcher configuration.
	Namespace string
	// ShardSize is the most bytes one ConfigMap or Secret may hold.
	ShardSize int
	// AllowInsecure publishes plain http:// endpoints (development only).
	AllowInsecure bool

	publication *publication
}

// +kubebuilder:rbac:groups="",namespace=hookrelay-system,resources=configmaps,verbs=get;list;watch;create;update;delete

// compiled is one compile's output.
type compiled struct {
	routes, keys map[string][]byte
	published    map[types.NamespacedName]publishedRoute
	// nextExpiry is when the earliest rotated-out key stops signing.
	nextExpiry time.Time
}

// Reconcile compiles and publishes the whole configuration.
func (r *RoutesReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (ctrl.Result, error) {
	out, err := r.compile(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	keyShards, err := routes.Pack(out.keys, r.ShardSize, routes.SecretEntrySize)
	if err != nil {
		return ctrl.Result{}, err
	}
	routeShards, err := routes.Pack(out.routes, r.ShardSize, routes.ConfigMapEntrySize)
	if err != nil {
		return ctrl.Result{}, err
	}
	// Keys first, so that a route never reaches the dispatcher before its keys.
	if err := r.syncKeys(ctx, keyShards); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.syncRoutes(ctx, routeShards); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.publication.record(ctx, out.published); err != nil {
		return ctrl.Result{}, err
	}
	if out.nextExpiry.IsZero() {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: max(out.nextExpiry.Sub(r.Clock.Now()), time.Second)}, nil
}

// compile turns the cached endpoints, subscriptions and Secrets into shard entries.
func (r *RoutesReconciler) compile(ctx context.Context) (*compiled, error) {
	var endpoints hookrelayv1alpha1.WebhookEndpointList
	if err := r.List(ctx, &endpoints); err != nil {
		return nil, err
	}
	var subscriptions hookrelayv1alpha1.WebhookSubscriptionList
	if err := r.List(ctx, &subscriptions); err != nil {
		return nil, err
	}
	subscriptionsOf := map[types.NamespacedName][]*hookrelayv1alpha1.WebhookSubscription{}
	for i := range subscriptions.Items {
		subscription := &subscriptions.Items[i]
		if !subscription.DeletionTimestamp.IsZero() {
			continue
		}
		endpoint := types.NamespacedName{Namespace: subscription.Namespace, Name: subscription.Spec.EndpointRef.Name}
		subscriptionsOf[endpoint] = append(subscriptionsOf[endpoint], subscription)
	}

	now := r.Clock.Now()
	out := &compiled{routes: map[string][]byte{}, keys: map[string][]byte{}, published: map[types.NamespacedName]publishedRoute{}}
	for i := range endpoints.Items {
		endpoint := &endpoints.Items[i]
		if !endpoint.DeletionTimestamp.IsZero() || checkEndpointSpec(endpoint, r.AllowInsecure) != nil {
			continue
		}
		var secret corev1.Secret
		err := r.Get(ctx, types.NamespacedName{Namespace: endpoint.Namespace, Name: signingSecretName(endpoint)}, &secret)
		if apierrors.IsNotFound(err) {
			continue // the endpoint controller reports it
		}
		if err != nil {
			return nil, err
		}
		if endpoint.Spec.SecretRef == nil && !metav1.IsControlledBy(&secret, endpoint) {
			continue
		}
		keys, err := activeKeys(&secret, now)
		if err != nil {
			continue
		}
		for _, key := range keys {
			if key.ExpiresAt != nil && (out.nextExpiry.IsZero() || key.ExpiresAt.Before(out.nextExpiry)) {
				out.nextExpiry = *key.ExpiresAt
			}
		}

		name := client.ObjectKeyFromObject(endpoint)
		route := compileRoute(endpoint, keys, subscriptionsOf[name])
		entry := routes.EntryKey(endpoint.Namespace, endpoint.Name)
		if out.routes[entry], err = routes.EncodeEndpoint(route); err != nil {
			return nil, err
		}
		if out.keys[entry], err = routes.EncodeKeys(keys); err != nil {
			return nil, err
		}
		out.published[name] = publishedRoute{generation: endpoint.Generation, keysVersion: route.KeysVersion}
	}
	return out, nil
}

// compileRoute is the dispatcher's view of one endpoint and its Ready subscriptions.
func compileRoute(endpoint *hookrelayv1alpha1.WebhookEndpoint, keys []routes.Key, subscriptions []*hookrelayv1alpha1.WebhookSubscription) routes.Endpoint {
	spec := &endpoint.Spec
	route := routes.Endpoint{
		Namespace:          endpoint.Namespace,
		Name:               endpoint.Name,
		UID:                string(endpoint.UID),
		Generation:         endpoint.Generation,
		URL:                spec.URL,
		Sandbox:            spec.Sandbox,
		Paused:             spec.Paused,
		Timeout:            metav1.Duration{Duration: spec.EffectiveTimeout()},
		RetrySchedule:      spec.EffectiveRetrySchedule(),
		SuccessStatusCodes: slices.Sorted(slices.Values(spec.SuccessStatusCodes)),
		AutoDisableAfter:   spec.EffectiveAfterConsecutiveFailures(),
		MaxInFlight:        spec.EffectiveMaxInFlight(),
		Headers:            spec.Headers,
		ReenableToken:      endpoint.Annotations[hookrelayv1alpha1.AnnotationReenableRequestedAt],
		KeysVersion:        routes.KeysVersion(keys),
	}
	if spec.Payload != nil {
		route.Transform = spec.Payload.Transform
	}
	if spec.RateLimit != nil {
		route.RateLimit = &routes.RateLimit{PerSecond: spec.RateLimit.PerSecond, Burst: spec.RateLimit.Burst}
		if route.RateLimit.Burst == 0 {
			route.RateLimit.Burst = spec.RateLimit.PerSecond
		}
	}
	for _, subscription := range subscriptions {
		if checkSubscription(subscription, true) != nil {
			continue
		}
		route.Subscriptions = append(route.Subscriptions, routes.Subscription{
			Name:       subscription.Name,
			Generation: subscription.Generation,
			EventTypes: slices.Sorted(slices.Values(subscription.Spec.EventTypes)),
			Filter:     subscription.Spec.Filter,
		})
	}
	slices.SortFunc(route.Subscriptions, func(a, b routes.Subscription) int { return strings.Compare(a.Name, b.Name) })
	return route
}

// syncRoutes makes the routes ConfigMaps hold exactly the given shards.
func (r *RoutesReconciler) syncRoutes(ctx context.Context, shards []map[string][]byte) error {
	current, err := r.currentShards(ctx, &corev1.ConfigMapList{}, routes.LabelRoutes)
	if err != nil {
		return err
	}
	desired := make([]client.Object, len(shards))
	for i, shard := range shards {
		data := make(map[string]string, len(shard))
		for k, v := range shard {
			data[k] = string(v)
		}
		desired[i] = &corev1.ConfigMap{ObjectMeta: r.shardMeta(routes.ShardName(routes.RoutesShardPrefix, i), routes.LabelRoutes), Data: data}
	}
	return r.syncShards(ctx, current, desired, func(have, want client.Object) bool {
		return reflect.DeepEqual(have.(*corev1.ConfigMap).Data, want.(*corev1.ConfigMap).Data)
	})
}

// syncKeys makes the keys Secrets hold exactly the given shards.
func (r *RoutesReconciler) syncKeys(ctx context.Context, shards []map[string][]byte) error {
	current, err := r.currentShards(ctx, &corev1.SecretList{}, routes.LabelKeys)
	if err != nil {
		return err
	}
	desired := make([]client.Object, len(shards))
	for i, shard := range shards {
		desired[i] = &corev1.Secret{ObjectMeta: r.shardMeta(routes.ShardName(routes.KeysShardPrefix, i), routes.LabelKeys),
			Type: corev1.SecretTypeOpaque, Data: shard}
	}
	return r.syncShards(ctx, current, desired, func(have, want client.Object) bool {
		return reflect.DeepEqual(have.(*corev1.Secret).Data, want.(*corev1.Secret).Data)
	})
}

// currentShards lists the shards of one kind, by name.
func (r *RoutesReconciler) currentShards(ctx context.Context, list client.ObjectList, label string) (map[string]client.Object, error) {
	if err := r.Shards.List(ctx, list, client.InNamespace(r.Namespace), client.HasLabels{label}); err != nil {
		return nil, err
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	current := make(map[string]client.Object, len(items))
	for _, item := range items {
		obj := item.(client.Object)
		current[obj.GetName()] = obj
	}
	return current, nil
}

func (r *RoutesReconciler) shardMeta(name, label string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: r.Namespace, Labels: map[string]string{label: "true", labelManagedBy: managedBy}}
}

// syncShards creates or updates the desired shards whose data differs, then
// deletes the shards no longer needed. Unchanged shards are not written.
func (r *RoutesReconciler) syncShards(ctx context.Context, current map[string]client.Object, desired []client.Object, sameData func(have, want client.Object) bool) error {
	for _, want := range desired {
		have, ok := current[want.GetName()]
		delete(current, want.GetName())
		switch {
		case !ok:
			if err := r.Create(ctx, want); err != nil {
				return fmt.Errorf("creating shard %s/%s: %w", r.Namespace, want.GetName(), err)
			}
		case !sameData(have, want) || !maps.Equal(have.GetLabels(), want.GetLabels()):
			want.SetResourceVersion(have.GetResourceVersion())
			if err := r.Update(ctx, want); err != nil {
				return fmt.Errorf("updating shard %s/%s: %w", r.Namespace, want.GetName(), err)
			}
		}
	}
	for _, stale := range current {
		if err := r.Delete(ctx, stale); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting shard %s/%s: %w", r.Namespace, stale.GetName(), err)
		}
	}
	return nil
}

// SetupWithManager funnels every relevant change into one compile request.
func (r *RoutesReconciler) SetupWithManager(mgr ctrl.Manager) error {
	compile := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: r.Namespace, Name: "routes"}}}
	})
	specOrAnnotations := builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))
	return ctrl.NewControllerManagedBy(mgr).
		Named("routes").
		// Not on status writes: the dispatcher writes endpoint status often.
		Watches(&hookrelayv1alpha1.WebhookEndpoint{}, compile, specOrAnnotations).
		Watches(&hookrelayv1alpha1.WebhookSubscription{}, compile, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Secret{}, compile, builder.WithPredicates(predicate.NewPredicateFuncs(r.isRelevantSecret))).
		// The cache holds only the routes ConfigMaps (see CacheOptions):
		// an edited or deleted shard is repaired.
		Watches(&corev1.ConfigMap{}, compile).
		Complete(r)
}

// isRelevantSecret reports whether a Secret signs for an endpoint or is a
// keys shard; other Secrets in the cluster do not trigger a compile.
func (r *RoutesReconciler) isRelevantSecret(secret client.Object) bool {
	labels := secret.GetLabels()
	if _, ok := labels[LabelEndpoint]; ok {
		return true
	}
	if _, ok := labels[routes.LabelKeys]; ok && secret.GetNamespace() == r.Namespace {
		return true
	}
	var endpoints hookrelayv1alpha1.WebhookEndpointList
	if err := r.List(context.Background(), &endpoints, client.InNamespace(secret.GetNamespace()),
		client.MatchingFields{secretRefIndex: secret.GetName()}, client.Limit(1)); err != nil {
		// Compile rather than miss a change.
		return true
	}
	return len(endpoints.Items) > 0
}
