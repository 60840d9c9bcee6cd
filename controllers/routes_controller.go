package controllers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
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
	// Shards and KeysShards read the routes ConfigMaps and the keys Secrets:
	// informer caches in the manager, so that a compile reads no shard from
	// the API server. A cache may lag behind this reconciler's own writes,
	// which it remembers (see syncShards).
	Shards, KeysShards client.Reader
	Clock              clock.PassiveClock
	// Namespace holds the dispatcher configuration.
	Namespace string
	// ShardSize is the most bytes one ConfigMap or Secret may hold.
	ShardSize int
	// AllowInsecure publishes plain http:// endpoints (development only).
	AllowInsecure bool

	publication *publication
	// keysCache holds the keys shards, apart from the client's cache.
	keysCache cache.Cache

	// Only Reconcile touches these, and the work queue never runs it twice
	// at once (it has a single request).
	//
	// routeEntries holds each endpoint's encoded route from the last
	// compile, so that only changed endpoints are encoded again.
	routeEntries map[types.UID]encodedRoute
	// written is what this reconciler last wrote to each shard, by name.
	written map[string]writtenShard

	// nextCompile is the earliest a compile is to start (Unix
	// nanoseconds), for compileTrigger.
	nextCompile atomic.Int64

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

// changeSeen marks a change waiting for publication.
func (r *RoutesReconciler) changeSeen() {
	r.changedMu.Lock()
	defer r.changedMu.Unlock()
	if r.changedSince.IsZero() {
		r.changedSince = r.Clock.Now()
	}
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

// encodedRoute is an endpoint's encoded route and what it was compiled
// from: the endpoint's, its subscriptions' and its keys' versions.
type encodedRoute struct {
	from  string
	route []byte
}

// writtenShard is a shard as this reconciler last wrote it, which the
// informer cache may not show yet.
type writtenShard struct {
	resourceVersion string
	digest          [sha256.Size]byte
}

// A compile waits after the previous one for as long as that one took, up
// to maxCompileWait: a change after a quiet spell compiles at once, while a
// burst of changes keeps the compiler busy half the time at most, each
// compile taking in all of the burst's changes so far, so that the shards
// are not rewritten for each.
const maxCompileWait = 2 * time.Second

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
	started := r.Clock.Now()
	since := r.takeChanged()
	defer func() {
		r.published(since, err)
		now := r.Clock.Now()
		r.nextCompile.Store(now.Add(now.Sub(started)).UnixNano())
	}()
	out, err := r.compile(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	r.leaveOutOversized(out)
	// The shards in use now set the shard count, so that it changes only
	// when the entries outgrow it or shrink well below it.
	currentKeys, err := r.currentShards(ctx, r.KeysShards, &corev1.SecretList{}, routes.LabelKeys)
	if err != nil {
		return ctrl.Result{}, err
	}
	currentRoutes, err := r.currentShards(ctx, r.Shards, &corev1.ConfigMapList{}, routes.LabelRoutes)
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

// compile turns the cached endpoints, subscriptions and Secrets into shard
// entries. It reads the cache without copying (nothing here writes to what it
// reads) and encodes again only the routes whose sources changed.
func (r *RoutesReconciler) compile(ctx context.Context) (*compiled, error) {
	var endpoints hookrelayv1alpha1.WebhookEndpointList
	if err := r.List(ctx, &endpoints, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var subscriptions hookrelayv1alpha1.WebhookSubscriptionList
	if err := r.List(ctx, &subscriptions, client.UnsafeDisableDeepCopy); err != nil {
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
	// In name order, for routeSources: the cache lists in no set order.
	for _, list := range subscriptionsOf {
		slices.SortFunc(list, func(a, b *hookrelayv1alpha1.WebhookSubscription) int { return strings.Compare(a.Name, b.Name) })
	}

	now := r.Clock.Now()
	out := &compiled{routes: map[string][]byte{}, keys: map[string][]byte{},
		published: map[types.NamespacedName]publishedRoute{}, rejected: map[types.NamespacedName]rejectedRoute{}}
	encoded := make(map[types.UID]encodedRoute, len(endpoints.Items))
	// Only labelled Secrets, from the cache: the endpoint controller reports
	// those it cannot use.
	secrets := secretGetter{cached: r.Client}
	for i := range endpoints.Items {
		endpoint := &endpoints.Items[i]
		if !endpoint.DeletionTimestamp.IsZero() {
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
		keysVersion := routes.KeysVersion(keys)
		from := routeSources(endpoint, keysVersion, subscriptionsOf[name])
		route, ok := r.routeEntries[endpoint.UID]
		if !ok || route.from != from {
			if checkEndpointSpec(endpoint, r.AllowInsecure) != nil {
				continue
			}
			route.from = from
			if route.route, err = routes.EncodeEndpoint(compileRoute(endpoint, keys, subscriptionsOf[name])); err != nil {
				return nil, err
			}
		}
		encoded[endpoint.UID] = route
		entry := routes.EntryKey(endpoint.Namespace, endpoint.Name)
		out.routes[entry] = route.route
		if out.keys[entry], err = routes.EncodeKeys(routes.KeysEntry{Keys: keys, Headers: headers}); err != nil {
			return nil, err
		}
		out.published[name] = publishedRoute{generation: endpoint.Generation, keysVersion: keysVersion}
	}
	// Endpoints gone, or no longer published, are forgotten.
	r.routeEntries = encoded
	return out, nil
}

// routeSources identifies what an endpoint's route is compiled from: the
// endpoint's resourceVersion (spec, status, annotations), its keys and each
// subscription's resourceVersion. An endpoint's route is encoded again only
// when they change.
func routeSources(endpoint *hookrelayv1alpha1.WebhookEndpoint, keysVersion string, subscriptions []*hookrelayv1alpha1.WebhookSubscription) string {
	var from strings.Builder
	from.WriteString(endpoint.ResourceVersion)
	from.WriteByte('/')
	from.WriteString(keysVersion)
	for _, subscription := range subscriptions {
		from.WriteByte('/')
		from.WriteString(subscription.Name)
		from.WriteByte('=')
		from.WriteString(subscription.ResourceVersion)
	}
	return from.String()
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
	err := r.Get(ctx, types.NamespacedName{Namespace: endpoint.Namespace, Name: whsec.GeneratedSecretName(endpoint.Name)}, &secret,
		client.UnsafeDisableDeepCopy)
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

// desiredShard is a shard to write and a digest of its data.
type desiredShard struct {
	object client.Object
	digest [sha256.Size]byte
	// fill, when set, gives object its data: only for a shard compared in
	// full or written, since an unchanged shard (the digest says so) needs
	// none, and a routes ConfigMap's data is a copy of every entry.
	fill func()
}

// full is the shard with its data.
func (d desiredShard) full() client.Object {
	if d.fill != nil {
		d.fill()
	}
	return d.object
}

// shardDigest fingerprints a shard's entries.
func shardDigest(shard map[string][]byte) [sha256.Size]byte {
	h := sha256.New()
	for _, key := range slices.Sorted(maps.Keys(shard)) {
		h.Write([]byte(key))
		h.Write([]byte{0})
		h.Write(shard[key])
		h.Write([]byte{0})
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// shardKind is what syncShards needs to know of one kind of shard.
type shardKind struct {
	prefix    string
	newObject func() client.Object
	// sameData compares two shards' data.
	sameData func(have, want client.Object) bool
}

// syncRoutes makes the routes ConfigMaps hold exactly the given shards.
func (r *RoutesReconciler) syncRoutes(ctx context.Context, current map[string]client.Object, shards []map[string][]byte) error {
	desired := make([]desiredShard, len(shards))
	for i, shard := range shards {
		object := &corev1.ConfigMap{ObjectMeta: r.shardMeta(routes.ShardName(routes.RoutesShardPrefix, i), routes.LabelRoutes)}
		desired[i] = desiredShard{digest: shardDigest(shard), object: object, fill: func() {
			if object.Data != nil {
				return
			}
			object.Data = make(map[string]string, len(shard))
			for k, v := range shard {
				object.Data[k] = string(v)
			}
		}}
	}
	// maps.Equal: an empty shard reads back with nil data.
	return r.syncShards(ctx, current, desired, shardKind{prefix: routes.RoutesShardPrefix,
		newObject: func() client.Object { return &corev1.ConfigMap{} },
		sameData: func(have, want client.Object) bool {
			return maps.Equal(have.(*corev1.ConfigMap).Data, want.(*corev1.ConfigMap).Data)
		}})
}

// syncKeys makes the keys Secrets hold exactly the given shards.
func (r *RoutesReconciler) syncKeys(ctx context.Context, current map[string]client.Object, shards []map[string][]byte) error {
	desired := make([]desiredShard, len(shards))
	for i, shard := range shards {
		desired[i] = desiredShard{digest: shardDigest(shard),
			object: &corev1.Secret{ObjectMeta: r.shardMeta(routes.ShardName(routes.KeysShardPrefix, i), routes.LabelKeys),
				Type: corev1.SecretTypeOpaque, Data: shard}}
	}
	return r.syncShards(ctx, current, desired, shardKind{prefix: routes.KeysShardPrefix,
		newObject: func() client.Object { return &corev1.Secret{} },
		sameData: func(have, want client.Object) bool {
			return maps.EqualFunc(have.(*corev1.Secret).Data, want.(*corev1.Secret).Data, bytes.Equal)
		}})
}

// currentShards lists the cached shards of one kind, by name, uncopied:
// they are only read.
func (r *RoutesReconciler) currentShards(ctx context.Context, reader client.Reader, list client.ObjectList, label string) (map[string]client.Object, error) {
	if err := reader.List(ctx, list, client.InNamespace(r.Namespace), client.HasLabels{label}, client.UnsafeDisableDeepCopy); err != nil {
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
//
// current is the cache, which may not show this reconciler's latest writes
// yet: where it shows another version than the one last written, the shard
// is compared with what was written, and an update carries that version.
// Then an update where the cache merely lags writes what changed since, or
// nothing when nothing did (the API server stores an identical object as a
// no-op), and one after someone else's edit or delete fails, is forgotten,
// and the retry repairs the shard from the cache.
func (r *RoutesReconciler) syncShards(ctx context.Context, current map[string]client.Object, desired []desiredShard, kind shardKind) error {
	sameData := kind.sameData
	if r.written == nil {
		r.written = map[string]writtenShard{}
	}
	var updates []desiredShard
	for _, want := range desired {
		name := want.object.GetName()
		have, cached := current[name]
		delete(current, name)
		written, remembered := r.written[name]
		sameLabels := cached && maps.Equal(have.GetLabels(), want.object.GetLabels())
		switch {
		case remembered && cached && have.GetResourceVersion() == written.resourceVersion:
			if written.digest == want.digest && sameLabels {
				continue
			}
			want.object.SetResourceVersion(written.resourceVersion)
		case remembered:
			if written.digest == want.digest && sameLabels && sameData(have, want.full()) {
				// As wanted, in another version: from now on the cache's.
				delete(r.written, name)
				continue
			}
			want.object.SetResourceVersion(written.resourceVersion)
		case !cached:
			if err := r.Create(ctx, want.full()); err != nil {
				return fmt.Errorf("creating shard %s/%s: %w", r.Namespace, name, err)
			}
			r.written[name] = writtenShard{resourceVersion: want.object.GetResourceVersion(), digest: want.digest}
			continue
		case sameLabels && sameData(have, want.full()):
			continue
		default:
			want.object.SetResourceVersion(have.GetResourceVersion())
		}
		updates = append(updates, want)
	}
	for _, want := range updates {
		name := want.object.GetName()
		if err := r.Update(ctx, want.full()); err != nil {
			delete(r.written, name)
			return fmt.Errorf("updating shard %s/%s: %w", r.Namespace, name, err)
		}
		r.written[name] = writtenShard{resourceVersion: want.object.GetResourceVersion(), digest: want.digest}
	}
	// Shards written but not cached yet are gone too, when not wanted.
	wanted := make(map[string]bool, len(desired))
	for _, want := range desired {
		wanted[want.object.GetName()] = true
	}
	for name := range r.written {
		if _, cached := current[name]; !cached && !wanted[name] && strings.HasPrefix(name, kind.prefix) {
			stale := kind.newObject()
			stale.SetNamespace(r.Namespace)
			stale.SetName(name)
			current[name] = stale
		}
	}
	for name, stale := range current {
		if err := r.Delete(ctx, stale); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting shard %s/%s: %w", r.Namespace, name, err)
		}
		delete(r.written, name)
	}
	return nil
}

// SetupWithManager funnels every relevant change into one compile request.
func (r *RoutesReconciler) SetupWithManager(mgr ctrl.Manager) error {
	compile := compileTrigger[client.Object]{r}
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
		WatchesRawSource(source.Kind[*corev1.Secret](r.keysCache, &corev1.Secret{}, compileTrigger[*corev1.Secret]{r})).
		// The cache holds only the routes ConfigMaps (see CacheOptions):
		// an edited or deleted shard is repaired.
		Watches(&corev1.ConfigMap{}, compile).
		Complete(r)
}

// compileTrigger enqueues the single compile request on every event, no
// sooner than nextCompile.
type compileTrigger[T client.Object] struct{ r *RoutesReconciler }

func (t compileTrigger[T]) enqueue(queue workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	t.r.changeSeen()
	request := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: t.r.Namespace, Name: "routes"}}
	// At most maxCompileWait, whatever a clock set back says.
	if wait := min(time.Unix(0, t.r.nextCompile.Load()).Sub(t.r.Clock.Now()), maxCompileWait); wait > 0 {
		queue.AddAfter(request, wait)
		return
	}
	queue.Add(request)
}

func (t compileTrigger[T]) Create(_ context.Context, _ event.TypedCreateEvent[T], queue workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	t.enqueue(queue)
}

func (t compileTrigger[T]) Update(_ context.Context, _ event.TypedUpdateEvent[T], queue workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	t.enqueue(queue)
}

func (t compileTrigger[T]) Delete(_ context.Context, _ event.TypedDeleteEvent[T], queue workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	t.enqueue(queue)
}

func (t compileTrigger[T]) Generic(_ context.Context, _ event.TypedGenericEvent[T], queue workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	t.enqueue(queue)
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
