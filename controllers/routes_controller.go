package controllers

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

// DefaultShardSize keeps each routes ConfigMap and keys Secret well under
// the API server's object size limit.
const DefaultShardSize = 512 << 10

// RoutesReconciler compiles every Ready endpoint and subscription into the
// dispatcher configuration: routes ConfigMaps and keys Secrets in the
// operator namespace, sharded by a hash of each endpoint's entry key
// (see routes.Pack). All changes funnel into one request,
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
	// keysCache holds the keys shards, apart from the client's cache.
	keysCache cache.Cache

	// changedMu guards changedSince: when the earliest change not yet
	// written to the shards was seen, zero when none waits.
	changedMu    sync.Mutex
	changedSince time.Time
}

// routesPublishSeconds is registered with controller-runtime's registry,
// served on the manager's metrics endpoint.
var routesPublishSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
	Name:    "hookrelay_routes_publish_seconds",
	Help:    "Time from a change of an endpoint, subscription or Secret being seen to the routes and keys shards being written.",
	Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
})

func init() { metrics.Registry.MustRegister(routesPublishSeconds) }

// changeSeen marks a change waiting for publication, and asks for the one
// compile request all changes coalesce into.
func (r *RoutesReconciler) changeSeen() []reconcile.Request {
	r.changedMu.Lock()
	if r.changedSince.IsZero() {
		r.changedSince = r.Clock.Now()
	}
	r.changedMu.Unlock()
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: r.Namespace, Name: "routes"}}}
}

// takeChanged returns when the earliest waiting change was seen, and
// clears it: changes seen from now on wait for the next compile.
func (r *RoutesReconciler) takeChanged() time.Time {
	r.changedMu.Lock()
	defer r.changedMu.Unlock()
	since := r.changedSince
	r.changedSince = time.Time{}
	return since
}

// published observes the publication of the changes waiting since since; a
// compile that failed puts them back, for the retry to measure.
func (r *RoutesReconciler) published(since time.Time, err error) {
	if since.IsZero() {
		return
	}
	if err == nil {
		routesPublishSeconds.Observe(r.Clock.Since(since).Seconds())
		return
	}
	r.changedMu.Lock()
	defer r.changedMu.Unlock()
	if r.changedSince.IsZero() || since.Before(r.changedSince) {
		r.changedSince = since
	}
}

// +kubebuilder:rbac:groups="",namespace=hookrelay-system,resources=configmaps,verbs=get;list;watch;create;update;delete

// compiled is one compile's output.
type compiled struct {
	routes, keys map[string][]byte
	published    map[types.NamespacedName]publishedRoute
	rejected     map[types.NamespacedName]rejectedRoute
	// nextExpiry is when the earliest rotated-out key stops signing.
	nextExpiry time.Time
}

// Reconcile compiles and publishes the whole configuration.
func (r *RoutesReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (result ctrl.Result, err error) {
	since := r.takeChanged()
	defer func() { r.published(since, err) }()
	out, err := r.compile(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	r.leaveOutOversized(out)
	// The shards in use now set the shard count, so that it changes only
	// when the entries outgrow it or shrink well below it.
	currentKeys, err := r.currentShards(ctx, &corev1.SecretList{}, routes.LabelKeys)
	if err != nil {
		return ctrl.Result{}, err
	}
	currentRoutes, err := r.currentShards(ctx, &corev1.ConfigMapList{}, routes.LabelRoutes)
	if err != nil {
		return ctrl.Result{}, err
	}
	keyShards, err := routes.Pack(out.keys, r.ShardSize, len(currentKeys), routes.SecretEntrySize)
	if err != nil {
		return ctrl.Result{}, err
	}
	routeShards, err := routes.Pack(out.routes, r.ShardSize, len(currentRoutes), routes.ConfigMapEntrySize)
	if err != nil {
		return ctrl.Result{}, err
	}
	// Keys first, so that a route never reaches the dispatcher before its keys.
	if err := r.syncKeys(ctx, currentKeys, keyShards); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.syncRoutes(ctx, currentRoutes, routeShards); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.publication.record(ctx, out.published, out.rejected); err != nil {
		return ctrl.Result{}, err
	}
	if out.nextExpiry.IsZero() {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: max(out.nextExpiry.Sub(r.Clock.Now()), time.Second)}, nil
}

// leaveOutOversized removes the endpoints whose route or keys entry would not
// fit in a shard, so that one endpoint cannot stop the publication of all the
// others; the endpoint controller reports them RouteTooLarge.
func (r *RoutesReconciler) leaveOutOversized(out *compiled) {
	budget := routes.EntryBudget(r.ShardSize)
	for name, published := range out.published {
		entry := routes.EntryKey(name.Namespace, name.Name)
		var message string
		if size := routes.ConfigMapEntrySize(entry, out.routes[entry]); size > budget {
			message = fmt.Sprintf("the compiled route is %d bytes, over the limit of %d bytes for one endpoint (--routes-shard-size=%d); "+
				"shorten spec.headers, spec.payload.transform or the filters of its subscriptions", size, budget, r.ShardSize)
		} else if size := routes.SecretEntrySize(entry, out.keys[entry]); size > budget {
			message = fmt.Sprintf("the signing keys and header values from Secrets take %d bytes, over the limit of %d bytes for one endpoint (--routes-shard-size=%d); "+
				"shorten the header values in Secrets", size, budget, r.ShardSize)
		} else {
			continue
		}
		delete(out.routes, entry)
		delete(out.keys, entry)
		delete(out.published, name)
		out.rejected[name] = rejectedRoute{generation: published.generation, message: message}
	}
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
	out := &compiled{routes: map[string][]byte{}, keys: map[string][]byte{},
		published: map[types.NamespacedName]publishedRoute{}, rejected: map[types.NamespacedName]rejectedRoute{}}
	// Only labelled Secrets, from the cache: the endpoint controller reports
	// those it cannot use.
	secrets := secretGetter{cached: r.Client}
	for i := range endpoints.Items {
		endpoint := &endpoints.Items[i]
		if !endpoint.DeletionTimestamp.IsZero() || checkEndpointSpec(endpoint, r.AllowInsecure) != nil {
			continue
		}
		secret, err := r.signingSecret(ctx, secrets, endpoint)
		if asTerminal(err) != nil {
			continue // the endpoint controller reports it
		}
		if err != nil {
			return nil, err
		}
		headers, err := secretHeaders(ctx, secrets, endpoint)
		if asTerminal(err) != nil {
			continue
		}
		if err != nil {
			return nil, err
		}
		keys, err := activeKeys(secret, now)
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
		if out.keys[entry], err = routes.EncodeKeys(routes.KeysEntry{Keys: keys, Headers: headers}); err != nil {
			return nil, err
		}
		out.published[name] = publishedRoute{generation: endpoint.Generation, keysVersion: route.KeysVersion}
	}
	return out, nil
}

// signingSecret returns the cached Secret that signs for an endpoint, or a
// terminalError saying what keeps it from signing.
func (r *RoutesReconciler) signingSecret(ctx context.Context, secrets secretGetter, endpoint *hookrelayv1alpha1.WebhookEndpoint) (*corev1.Secret, error) {
	if endpoint.Spec.SecretRef != nil {
		secret, err := secrets.get(ctx, endpoint.Namespace, endpoint.Spec.SecretRef.Name, "spec.secretRef.name")
		if err != nil {
			return nil, err
		}
		if err := foreignSecret(secret, endpoint, "spec.secretRef.name", true); err != nil {
			return nil, err
		}
		return secret, nil
	}
	var secret corev1.Secret
	err := r.Get(ctx, types.NamespacedName{Namespace: endpoint.Namespace, Name: whsec.GeneratedSecretName(endpoint.Name)}, &secret)
	if apierrors.IsNotFound(err) {
		return nil, &terminalError{reason: hookrelayv1alpha1.ReasonSecretInvalid, message: "not generated yet"}
	}
	if err != nil {
		return nil, err
	}
	if !metav1.IsControlledBy(&secret, endpoint) {
		return nil, &terminalError{reason: hookrelayv1alpha1.ReasonSecretInvalid, message: "not owned by the endpoint"}
	}
	return &secret, nil
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
		KeepOnGone:         !spec.EffectiveOnGone(),
		JitterPercent:      new(spec.EffectiveJitterPercent()),
		IgnoreRetryAfter:   !spec.EffectiveHonorRetryAfter(),
		MaxInFlight:        spec.EffectiveMaxInFlight(),
		Headers:            literalHeaders(spec.Headers),
		ReenableToken:      endpoint.Status.LastReenableRequestedAt,
		KeysVersion:        routes.KeysVersion(keys),
	}
	if spec.EffectiveOrdering() == hookrelayv1alpha1.OrderingStrict {
		route.Ordering = routes.OrderingStrict
	}
	if spec.Payload != nil {
		route.Transform = spec.Payload.Transform
	}
	route.Signing = &routes.Signing{}
	if spec.Signing != nil {
		route.Signing.HeaderPrefix = spec.Signing.HeaderPrefix
	}
	for _, scheme := range spec.EffectiveSignatureSchemes() {
		route.Signing.Schemes = append(route.Signing.Schemes, string(scheme))
	}
	route.Signing.Schemes = slices.Compact(slices.Sorted(slices.Values(route.Signing.Schemes)))
	if spec.RateLimit != nil {
		route.RateLimit = &routes.RateLimit{PerSecond: spec.RateLimit.PerSecond, Burst: spec.RateLimit.EffectiveBurst()}
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

// literalHeaders maps the headers with a literal value by name; those with a
// value from a Secret go in the keys entry instead.
func literalHeaders(headers []hookrelayv1alpha1.Header) map[string]string {
	var literal map[string]string
	for _, header := range headers {
		if header.ValueFrom != nil {
			continue
		}
		if literal == nil {
			literal = map[string]string{}
		}
		literal[header.Name] = header.Value
	}
	return literal
}

// syncRoutes makes the routes ConfigMaps hold exactly the given shards.
func (r *RoutesReconciler) syncRoutes(ctx context.Context, current map[string]client.Object, shards []map[string][]byte) error {
	desired := make([]client.Object, len(shards))
	for i, shard := range shards {
		data := make(map[string]string, len(shard))
		for k, v := range shard {
			data[k] = string(v)
		}
		desired[i] = &corev1.ConfigMap{ObjectMeta: r.shardMeta(routes.ShardName(routes.RoutesShardPrefix, i), routes.LabelRoutes), Data: data}
	}
	// maps.Equal: an empty shard reads back with nil data.
	return r.syncShards(ctx, current, desired, func(have, want client.Object) bool {
		return maps.Equal(have.(*corev1.ConfigMap).Data, want.(*corev1.ConfigMap).Data)
	})
}

// syncKeys makes the keys Secrets hold exactly the given shards.
func (r *RoutesReconciler) syncKeys(ctx context.Context, current map[string]client.Object, shards []map[string][]byte) error {
	desired := make([]client.Object, len(shards))
	for i, shard := range shards {
		desired[i] = &corev1.Secret{ObjectMeta: r.shardMeta(routes.ShardName(routes.KeysShardPrefix, i), routes.LabelKeys),
			Type: corev1.SecretTypeOpaque, Data: shard}
	}
	return r.syncShards(ctx, current, desired, func(have, want client.Object) bool {
		return maps.EqualFunc(have.(*corev1.Secret).Data, want.(*corev1.Secret).Data, bytes.Equal)
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

// syncShards creates the new shards, then updates those whose data differs,
// then deletes the shards no longer needed; unchanged shards are not written.
// In that order an entry that moves, when the shard count changes, is in its
// new shard before it leaves its old one, so the dispatcher never misses it.
func (r *RoutesReconciler) syncShards(ctx context.Context, current map[string]client.Object, desired []client.Object, sameData func(have, want client.Object) bool) error {
	var updates []client.Object
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
			updates = append(updates, want)
		}
	}
	for _, want := range updates {
		if err := r.Update(ctx, want); err != nil {
			return fmt.Errorf("updating shard %s/%s: %w", r.Namespace, want.GetName(), err)
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
	compile := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request { return r.changeSeen() })
	// The re-enable request reaches the route through the status, once the
	// endpoint controller accepted it as later than the previous one.
	specOrAnnotations := builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{},
		predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.(*hookrelayv1alpha1.WebhookEndpoint).Status.LastReenableRequestedAt !=
				e.ObjectNew.(*hookrelayv1alpha1.WebhookEndpoint).Status.LastReenableRequestedAt
		}}))
	return ctrl.NewControllerManagedBy(mgr).
		Named("routes").
		// Not on status writes: the dispatcher writes endpoint status often.
		Watches(&hookrelayv1alpha1.WebhookEndpoint{}, compile, specOrAnnotations).
		Watches(&hookrelayv1alpha1.WebhookSubscription{}, compile, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Secret{}, compile, builder.WithPredicates(predicate.NewPredicateFuncs(r.isRelevantSecret))).
		// An edited or deleted keys shard is repaired.
		WatchesRawSource(source.Kind(r.keysCache, &corev1.Secret{}, handler.TypedEnqueueRequestsFromMapFunc(
			func(context.Context, *corev1.Secret) []reconcile.Request { return r.changeSeen() }))).
		// The cache holds only the routes ConfigMaps (see CacheOptions):
		// an edited or deleted shard is repaired.
		Watches(&corev1.ConfigMap{}, compile).
		Complete(r)
}

// isRelevantSecret reports whether a labelled Secret is generated for an
// endpoint or named by one; other labelled Secrets do not trigger a compile.
func (r *RoutesReconciler) isRelevantSecret(secret client.Object) bool {
	if _, ok := secret.GetLabels()[LabelEndpoint]; ok {
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
