// Package controllers reconciles WebhookEndpoints and WebhookSubscriptions
// into signing Secrets and the dispatcher configuration (routes ConfigMaps
// and keys Secrets in the operator namespace).
package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/statusapply"
)

// DefaultRotationGrace is how long a rotated-out key keeps signing.
const DefaultRotationGrace = 24 * time.Hour

// Options configure the controllers.
type Options struct {
	// Namespace holds the dispatcher configuration (the operator namespace).
	Namespace string
	// ShardSize is the most bytes one routes ConfigMap or keys Secret holds.
	ShardSize int
	// AllowInsecure publishes plain http:// endpoints (development only).
	AllowInsecure bool
	// RotationGrace is how long a rotated-out key keeps signing.
	RotationGrace time.Duration
	// Clock is the time source; tests inject a fake one.
	Clock clock.PassiveClock
}

// CacheOptions restricts the manager's caches: ConfigMaps to the routes
// shards in the operator namespace, Secrets to those labelled
// hookrelay.dev/endpoint-secret=true (generated signing Secrets and the
// bring-your-own ones users opted in). Other Secrets in the cluster are never
// held in memory; the keys shards have their own cache (see Setup), so that
// no endpoint can read them through the manager's client. No cached object
// keeps its managedFields, which no controller reads: with every endpoint
// and subscription's status applied, they would be a good part of the
// manager's memory. Nor does a cached endpoint or subscription keep the
// copy of its spec that a client-side `kubectl apply` leaves in an
// annotation; the manager never writes them from the cache (status goes
// through Server-Side Apply), so the annotation is not lost.
func CacheOptions(namespace string) cache.Options {
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: map[client.Object]cache.ByObject{
		&hookrelayv1alpha1.WebhookEndpoint{}:     {Transform: stripLastApplied},
		&hookrelayv1alpha1.WebhookSubscription{}: {Transform: stripLastApplied},
		&corev1.ConfigMap{}: {
			Namespaces: map[string]cache.Config{namespace: {}},
			Label:      labels.SelectorFromSet(labels.Set{routes.LabelRoutes: "true"}),
		},
		&corev1.Secret{}: {
			Label: labels.SelectorFromSet(labels.Set{hookrelayv1alpha1.LabelEndpointSecret: "true"}),
		},
	}}
}

// stripLastApplied drops managedFields and kubectl's last-applied-configuration annotation.
func stripLastApplied(in any) (any, error) {
	out, err := cache.TransformStripManagedFields()(in)
	if err != nil {
		return nil, err
	}
	if obj, ok := out.(metav1.Object); ok {
		if annotations := obj.GetAnnotations(); annotations != nil {
			delete(annotations, corev1.LastAppliedConfigAnnotation)
		}
	}
	return out, nil
}

// newKeysCache caches the keys shards in the operator namespace, apart from
// the manager's cache, only to repair them when they are edited or deleted.
func newKeysCache(mgr ctrl.Manager, namespace string) (cache.Cache, error) {
	return cache.New(mgr.GetConfig(), cache.Options{
		Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(), HTTPClient: mgr.GetHTTPClient(),
		DefaultNamespaces: map[string]cache.Config{namespace: {}},
		DefaultTransform:  cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Label: labels.SelectorFromSet(labels.Set{routes.LabelKeys: "true"})},
		},
	})
}

// Leader election (--leader-elect) keeps its Lease in the operator namespace.
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=hookrelay-system,resources=leases,verbs=get;list;watch;create;update;patch;delete

// The metrics endpoint's authentication and authorization filter asks the
// API server about each scraper's token.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// MetricsServerOptions serve the manager's metrics over HTTPS behind
// controller-runtime's authentication and authorization filter (a bearer
// token allowed to get the non-resource URL /metrics), with the
// certificate in certDir or else a self-signed one; not secure, over plain
// HTTP to anyone.
func MetricsServerOptions(address string, secure bool, certDir string) metricsserver.Options {
	if !secure {
		return metricsserver.Options{BindAddress: address}
	}
	return metricsserver.Options{BindAddress: address, SecureServing: true, CertDir: certDir,
		FilterProvider: filters.WithAuthenticationAndAuthorization}
}

// Setup registers the endpoint, subscription and routes controllers.
func Setup(mgr ctrl.Manager, opts Options) error {
	if opts.Namespace == "" {
		return fmt.Errorf("controllers: the operator namespace is required")
	}
	if opts.ShardSize == 0 {
		opts.ShardSize = DefaultShardSize
	}
	if opts.RotationGrace == 0 {
		opts.RotationGrace = DefaultRotationGrace
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	report := reporter{recorder: mgr.GetEventRecorder("hookrelay-controller")}
	status := statusWriter{Writer: &statusapply.Writer{Client: mgr.GetClient(), FieldOwner: FieldOwner}, clock: opts.Clock}
	published := newPublication()

	endpoints := &EndpointReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(), Clock: opts.Clock,
		AllowInsecure: opts.AllowInsecure, RotationGrace: opts.RotationGrace,
		reporter: report, status: status, publication: published,
	}
	if err := endpoints.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the endpoint controller: %w", err)
	}
	subscriptions := &SubscriptionReconciler{Client: mgr.GetClient(), reporter: report, status: status}
	if err := subscriptions.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the subscription controller: %w", err)
	}
	keysCache, err := newKeysCache(mgr, opts.Namespace)
	if err != nil {
		return fmt.Errorf("creating the keys shards cache: %w", err)
	}
	if err := mgr.Add(keysCache); err != nil {
		return err
	}
	compiler := &RoutesReconciler{
		Client: mgr.GetClient(), Shards: mgr.GetCache(), KeysShards: keysCache, Clock: opts.Clock, Namespace: opts.Namespace,
		ShardSize: opts.ShardSize, AllowInsecure: opts.AllowInsecure, publication: published, keysCache: keysCache,
	}
	if err := compiler.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the routes compiler: %w", err)
	}
	return nil
}

// referrers lists into list the objects in obj's namespace whose field index
// names obj, and returns a reconcile request for each: the map function of a
// watch on the objects they refer to. A failed list is logged, as a map
// function cannot return it; the referrers then wait for their next change.
func referrers(ctx context.Context, c client.Reader, list client.ObjectList, index string, obj client.Object) []reconcile.Request {
	err := c.List(ctx, list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{index: obj.GetName()})
	var items []runtime.Object
	if err == nil {
		items, err = meta.ExtractList(list)
	}
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing the objects that refer to a changed one; they are not reconciled for this change",
			"list", fmt.Sprintf("%T", list), "index", index, "namespace", obj.GetNamespace(), "name", obj.GetName())
		return nil
	}
	requests := make([]reconcile.Request, len(items))
	for i, item := range items {
		requests[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(item.(client.Object))}
	}
	return requests
}
