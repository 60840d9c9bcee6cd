package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	hookrelayv1alpha1ac "github.com/hookrelay/hookrelay/api/applyconfiguration/api/v1alpha1"
	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/redact"
	"github.com/hookrelay/hookrelay/internal/routes"
	webhookv1alpha1 "github.com/hookrelay/hookrelay/internal/webhook/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

// secretRefIndex indexes endpoints by the Secrets they name
// (spec.secretRef.name, spec.headers[].valueFrom.secretKeyRef.name), so that
// a change to one of those Secrets re-reconciles the endpoints that use it.
const secretRefIndex = "spec.secretNames"

// referencedSecrets lists the Secrets an endpoint names, besides its generated one.
func referencedSecrets(endpoint *hookrelayv1alpha1.WebhookEndpoint) []string {
	var names []string
	if ref := endpoint.Spec.SecretRef; ref != nil {
		names = append(names, ref.Name)
	}
	for _, header := range endpoint.Spec.Headers {
		if header.ValueFrom != nil && !slices.Contains(names, header.ValueFrom.SecretKeyRef.Name) {
			names = append(names, header.ValueFrom.SecretKeyRef.Name)
		}
	}
	return names
}

// EndpointReconciler gives each WebhookEndpoint a signing Secret (generated
// once, or checked when brought by the user), rotates it on request, and
// reports Ready once the endpoint's route is published to the dispatcher.
type EndpointReconciler struct {
	client.Client
	// APIReader reads Secrets that the cache does not hold (those without
	// the hookrelay.dev/endpoint-secret label) by name, for a definitive answer.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Clock     clock.PassiveClock
	// AllowInsecure publishes plain http:// endpoints (development only).
	AllowInsecure bool
	// RotationGrace is how long a rotated-out key keeps signing.
	RotationGrace time.Duration

	reporter    reporter
	status      statusWriter
	publication *publication
}

// terminalError is an invalid spec or reference. The reconciler reports it
// as Ready=False with its reason and message and does not return it:
// retrying does not fix it, a change to the objects does.
type terminalError struct {
	reason, message string
	// recheck: the problem is a Secret the cache cannot show (missing, or
	// not labelled), so no watch event announces its fix: look again later.
	recheck bool
	// unknown: not an error yet, only not known to work (Ready=Unknown).
	unknown bool
}

func (e *terminalError) Error() string { return e.message }

// asTerminal returns the terminalError in err's chain, or nil: then err is
// nil or transient.
func asTerminal(err error) *terminalError {
	terminal, _ := errors.AsType[*terminalError](err)
	return terminal
}

// publishingGrace is how long a new endpoint may wait for its route to be
// published before its status says Publishing.
const publishingGrace = 5 * time.Second

// secretRecheckInterval is how often an endpoint whose Secret is missing or
// unlabelled is looked at again.
const secretRecheckInterval = 30 * time.Second

// +kubebuilder:rbac:groups=hookrelay.dev,resources=webhookendpoints,verbs=get;list;watch
// +kubebuilder:rbac:groups=hookrelay.dev,resources=webhookendpoints/status,verbs=get;patch
// Secrets, cluster-wide: list and watch feed the cache, which a label
// selector limits to hookrelay.dev/endpoint-secret=true (RBAC cannot limit by
// label); get reads an unlabelled bring-your-own Secret by name, only to say
// which label it lacks; create makes generated Secrets, update rotates and
// labels them, delete replaces one left by a deleted endpoint of the same name.
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile ensures the endpoint's signing Secret and reports its status.
func (r *EndpointReconciler) Reconcile(ctx context.Context, req reconcile.Request) (ctrl.Result, error) {
	var endpoint hookrelayv1alpha1.WebhookEndpoint
	if err := r.Get(ctx, req.NamespacedName, &endpoint); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !endpoint.DeletionTimestamp.IsZero() {
		// The generated Secret is garbage-collected through its owner
		// reference; the routes compiler drops the route.
		return ctrl.Result{}, nil
	}

	secret, requeueAfter, err := r.ensureSecret(ctx, &endpoint)
	var keys []routes.Key
	if err == nil {
		keys, err = activeKeys(secret, r.Clock.Now())
	}
	if err == nil {
		err = checkEndpointSpec(&endpoint, r.AllowInsecure)
	}
	if err == nil {
		// Only for the message: the routes compiler reads them again.
		_, err = secretHeaders(ctx, r.secrets(), &endpoint)
	}
	if err == nil {
		if message, ok := r.publication.tooLarge(req.NamespacedName, endpoint.Generation); ok {
			err = &terminalError{reason: hookrelayv1alpha1.ReasonRouteTooLarge, message: message}
		}
	}
	trouble := asTerminal(err)
	if err != nil && trouble == nil {
		return ctrl.Result{}, err
	}

	generation := endpoint.Generation
	var conditions []*metav1ac.ConditionApplyConfiguration
	published := trouble == nil && r.publication.isPublished(req.NamespacedName,
		publishedRoute{generation: generation, keysVersion: routes.KeysVersion(keys)})
	if wait, ok := r.awaitPublication(&endpoint, secret, trouble, published); ok {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	disabled := meta.FindStatusCondition(endpoint.Status.Conditions, hookrelayv1alpha1.ConditionDisabled)
	switch {
	case trouble != nil:
		conditions = r.status.troubleConditions(endpoint.Status.Conditions, trouble, generation)
		if previous := meta.FindStatusCondition(endpoint.Status.Conditions, hookrelayv1alpha1.ConditionReady); previous == nil ||
			previous.Reason != trouble.reason || previous.Message != trouble.message {
			r.reporter.warning(ctx, &endpoint, trouble.reason, "Validate", "%s", trouble.message)
		}
	case published && disabled != nil && disabled.Status == metav1.ConditionTrue:
		// The dispatcher owns Disabled; Ready says it too, so that health
		// checks that read only Ready (kstatus, Argo CD) see a disabled
		// endpoint as not working.
		conditions = append(conditions, r.status.readyCondition(endpoint.Status.Conditions, metav1.ConditionFalse,
			hookrelayv1alpha1.ReasonAutoDisabled, disabled.Message, generation))
	case published && endpoint.Spec.Paused:
		conditions = append(conditions, r.status.readyCondition(endpoint.Status.Conditions, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPaused,
			fmt.Sprintf("route and signing keys are published; paused (spec.paused): %d matching events are held until spec.paused is false; "+
				"list them with `kubectl hookrelay deliveries %s --state held`", endpoint.Status.HeldDeliveries, endpoint.Name), generation))
	case published:
		conditions = append(conditions, r.status.readyCondition(endpoint.Status.Conditions, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished,
			"route and signing keys are published to the dispatcher", generation))
	default:
		// Not fully handled until the route is out: keep the previous
		// observedGeneration, so readers know the new spec is not live yet.
		generation = endpoint.Status.ObservedGeneration
		conditions = append(conditions, r.status.readyCondition(endpoint.Status.Conditions, metav1.ConditionUnknown, hookrelayv1alpha1.ReasonPublishing,
			"waiting for the route to be published to the dispatcher", generation))
	}

	status := hookrelayv1alpha1ac.WebhookEndpointStatus().WithConditions(conditions...)
	if generation != 0 {
		status.WithObservedGeneration(generation)
	}
	if secret != nil {
		status.WithSecretName(secret.Name)
	}
	// Every apply carries both: a field this owner leaves out is removed.
	if rotated := lastRotation(&endpoint, secret); rotated != "" {
		status.WithLastRotateSecret(rotated)
	}
	if reenable := r.reenableRequest(ctx, &endpoint); reenable != "" {
		status.WithLastReenableRequestedAt(reenable)
	}
	if err := r.status.Apply(ctx, endpoint.UID, &endpoint,
		hookrelayv1alpha1ac.WebhookEndpoint(endpoint.Name, endpoint.Namespace).WithStatus(status)); err != nil {
		return ctrl.Result{}, err
	}
	if trouble != nil && trouble.recheck {
		requeueAfter = secretRecheckInterval
	}
	return ctrl.Result{RequeueAfter: requeueAfter}, nil
}

// reenableRequest is the re-enable request to pass on to the dispatcher
// (through status.lastReenableRequestedAt, which the routes compiler
// publishes): the annotation when it holds a later time than the one passed
// on before, that one otherwise.
func (r *EndpointReconciler) reenableRequest(ctx context.Context, endpoint *hookrelayv1alpha1.WebhookEndpoint) string {
	last := endpoint.Status.LastReenableRequestedAt
	value := endpoint.Annotations[hookrelayv1alpha1.AnnotationReenableRequestedAt]
	if value == "" || value == last {
		return last
	}
	_, later, err := hookrelayv1alpha1.ActionRequested(hookrelayv1alpha1.AnnotationReenableRequestedAt, value, last)
	if err != nil {
		r.reporter.warning(ctx, endpoint, hookrelayv1alpha1.ReasonReenableInvalid, "Reenable", "%v; the endpoint was not re-enabled", err)
		return last
	}
	if !later {
		return last
	}
	return value
}

// lastRotation is the rotate-secret value the generated Secret was last
// rotated for (or created under): the Secret records it, in the same write
// as the key, and the status shows it.
func lastRotation(endpoint *hookrelayv1alpha1.WebhookEndpoint, secret *corev1.Secret) string {
	if endpoint.Spec.SecretRef != nil || secret == nil {
		return ""
	}
	rotatedFor := secret.Annotations[annotationRotatedFor]
	// A Secret created under a value that is not a time has no rotation to show.
	if _, err := time.Parse(time.RFC3339, rotatedFor); err != nil {
		return ""
	}
	return rotatedFor
}

// awaitPublication says whether to leave the status of a sound endpoint
// whose route is not published as it is for now, and when to look again;
// the publication wakes this controller before that when it comes.
func (r *EndpointReconciler) awaitPublication(endpoint *hookrelayv1alpha1.WebhookEndpoint, secret *corev1.Secret,
	trouble *terminalError, published bool) (time.Duration, bool) {
	if trouble != nil || published {
		return 0, false
	}
	if meta.FindStatusCondition(endpoint.Status.Conditions, hookrelayv1alpha1.ConditionReady) != nil {
		// Right after a start nothing is known published yet, while the
		// shards still hold what was: saying Publishing now would make
		// every Ready endpoint flap on a restart. The first compile wakes
		// the endpoints it publishes.
		return publishingGrace, !r.publication.known()
	}
	// A new endpoint is most often published within moments: one status
	// write (Ready), not two. Publishing is said only if it takes longer.
	since := publishableSince(endpoint, secret)
	return publishingGrace - r.Clock.Since(since), newerThan(since, r.Clock.Now(), publishingGrace)
}

// publishableSince is when an endpoint could first be published: its
// creation, or its signing Secret's when that came later. Under a burst of
// creates an endpoint waits in the work queue before its Secret is
// generated; the time to publish counts from then.
func publishableSince(endpoint *hookrelayv1alpha1.WebhookEndpoint, secret *corev1.Secret) time.Time {
	if secret != nil && secret.CreationTimestamp.After(endpoint.CreationTimestamp.Time) {
		return secret.CreationTimestamp.Time
	}
	return endpoint.CreationTimestamp.Time
}

// newerThan says whether created is less than age before now. A clock
// behind created (another clock, or a fake one) makes nothing newer.
func newerThan(created, now time.Time, age time.Duration) bool {
	elapsed := now.Sub(created)
	return elapsed >= 0 && elapsed < age
}

// checkEndpointSpec finds what admission cannot check in a spec.
func checkEndpointSpec(endpoint *hookrelayv1alpha1.WebhookEndpoint, allowInsecure bool) error {
	if strings.HasPrefix(strings.ToLower(endpoint.Spec.URL), "http://") && !allowInsecure {
		return &terminalError{reason: hookrelayv1alpha1.ReasonInsecureURL, message: fmt.Sprintf(
			"spec.url %q uses plain http://; use https://, or run the manager with --allow-insecure-endpoints for development", redact.URL(endpoint.Spec.URL))}
	}
	if endpoint.Spec.Payload != nil && endpoint.Spec.Payload.Transform != "" {
		if err := webhookv1alpha1.ValidateTransform(endpoint.Spec.Payload.Transform); err != nil {
			return &terminalError{reason: hookrelayv1alpha1.ReasonTransformInvalid, message: webhookv1alpha1.Message(err)}
		}
	}
	return nil
}

// ensureSecret returns the endpoint's signing Secret, generating, rotating
// and expiring keys as needed, and when to come back to expire a key. A
// Secret the endpoint cannot use is a terminalError.
func (r *EndpointReconciler) ensureSecret(ctx context.Context, endpoint *hookrelayv1alpha1.WebhookEndpoint) (*corev1.Secret, time.Duration, error) {
	name := signingSecretName(endpoint)
	if endpoint.Spec.SecretRef != nil {
		secret, err := r.secrets().get(ctx, endpoint.Namespace, name, "spec.secretRef.name")
		if err != nil {
			return nil, 0, err
		}
		if err := foreignSecret(secret, endpoint, "spec.secretRef.name", true); err != nil {
			return nil, 0, err
		}
		if endpoint.Annotations[hookrelayv1alpha1.AnnotationRotateSecret] != "" {
			r.reporter.warning(ctx, endpoint, hookrelayv1alpha1.ReasonRotationNotSupported, "Rotate",
				"annotation %s is ignored for a bring-your-own secret (spec.secretRef); rotate by changing Secret %q",
				hookrelayv1alpha1.AnnotationRotateSecret, name)
		}
		return secret, 0, nil
	}

	secret := &corev1.Secret{}
	err := r.Get(ctx, types.NamespacedName{Namespace: endpoint.Namespace, Name: name}, secret)
	if apierrors.IsNotFound(err) {
		// Most often a new endpoint: create first, and read the API server
		// only when a Secret exists that the cache does not hold.
		secret, err = r.generateSecret(ctx, endpoint, name)
		if !apierrors.IsAlreadyExists(err) {
			return secret, 0, err
		}
		secret, err = r.uncachedSecret(ctx, endpoint.Namespace, name)
	}
	if err != nil {
		return nil, 0, err
	}
	if ownedByEarlierEndpoint(secret, endpoint) {
		// An endpoint of the same name was deleted and its Secret not yet
		// garbage-collected: it signs for nobody. Replace it.
		if err := r.Delete(ctx, secret, client.Preconditions{UID: &secret.UID}); client.IgnoreNotFound(err) != nil {
			return nil, 0, fmt.Errorf("deleting the Secret %s/%s of a deleted endpoint: %w", secret.Namespace, secret.Name, err)
		}
		secret, err = r.generateSecret(ctx, endpoint, name)
		return secret, 0, err
	}
	if !metav1.IsControlledBy(secret, endpoint) {
		return nil, 0, &terminalError{reason: hookrelayv1alpha1.ReasonSecretInvalid, message: fmt.Sprintf(
			"Secret %q exists and is not owned by this endpoint; delete it, or name it in spec.secretRef to bring your own", name)}
	}
	if err := r.rotate(ctx, endpoint, secret); err != nil {
		return nil, 0, err
	}
	requeueAfter, err := r.expirePreviousKey(ctx, endpoint, secret)
	return secret, requeueAfter, err
}

// secrets reads the Secrets an endpoint names, with a definitive answer
// from the API server when the cache does not hold one.
func (r *EndpointReconciler) secrets() secretGetter {
	return secretGetter{cached: r.Client, live: r.APIReader}
}

// uncachedSecret reads a Secret of a generated name that exists but is not
// in the cache: the cache has not seen it yet, or it was generated before
// the cache was restricted to labelled Secrets. It is read from the API
// server and, if an endpoint controls it and it lacks the label, labelled,
// so that the cache holds it from then on.
func (r *EndpointReconciler) uncachedSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	if r.APIReader == nil {
		return nil, fmt.Errorf("the Secret %s/%s exists but is not in the cache yet", namespace, name)
	}
	secret := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, secret); err != nil {
		return nil, err
	}
	if owner := metav1.GetControllerOf(secret); owner == nil || owner.Kind != kindWebhookEndpoint || secret.Labels[hookrelayv1alpha1.LabelEndpointSecret] == "true" {
		return secret, nil
	}
	if secret.Labels == nil {
		secret.Labels = map[string]string{}
	}
	secret.Labels[hookrelayv1alpha1.LabelEndpointSecret] = "true"
	if err := r.Update(ctx, secret); err != nil {
		return nil, fmt.Errorf("labelling signing Secret %s/%s: %w", namespace, name, err)
	}
	return secret, nil
}

// ownedByEarlierEndpoint reports whether a Secret's controller is a
// WebhookEndpoint of the same name with another UID: one that was deleted.
func ownedByEarlierEndpoint(secret *corev1.Secret, endpoint *hookrelayv1alpha1.WebhookEndpoint) bool {
	owner := metav1.GetControllerOf(secret)
	return owner != nil && owner.APIVersion == hookrelayv1alpha1.GroupVersion.String() && owner.Kind == kindWebhookEndpoint &&
		owner.Name == endpoint.Name && owner.UID != endpoint.UID
}

// generateSecret creates the endpoint's Secret with a new key. It never
// replaces an existing Secret: if the cache has not seen one that exists,
// Create fails and the reconcile is retried.
func (r *EndpointReconciler) generateSecret(ctx context.Context, endpoint *hookrelayv1alpha1.WebhookEndpoint, name string) (*corev1.Secret, error) {
	value, err := whsec.New()
	if err != nil {
		return nil, err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: endpoint.Namespace,
			Labels: map[string]string{LabelEndpoint: endpoint.Name, labelManagedBy: managedBy,
				hookrelayv1alpha1.LabelEndpointSecret: "true"},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{SecretKey: []byte(value)},
	}
	// A rotation requested before the Secret existed is already satisfied.
	if requested := endpoint.Annotations[hookrelayv1alpha1.AnnotationRotateSecret]; requested != "" {
		secret.Annotations = map[string]string{annotationRotatedFor: requested}
	}
	if err := controllerutil.SetControllerReference(endpoint, secret, r.Scheme); err != nil {
		return nil, err
	}
	if err := r.Create(ctx, secret); err != nil {
		return nil, fmt.Errorf("creating signing Secret %s/%s: %w", endpoint.Namespace, name, err)
	}
	// Logged, not recorded as an Event: every new endpoint has one, which
	// status.secretName shows, and a bulk apply of thousands of endpoints
	// would cost the API server as many Event writes.
	logf.FromContext(ctx).V(1).Info("generated the signing Secret", "secret", name)
	return secret, nil
}

// rotate makes a new current key when the rotate-secret annotation holds a
// later time than the one the Secret was last rotated for; the old key
// becomes the previous one for the grace period.
// Update carries the cached resourceVersion, so a stale cache cannot rotate
// twice: the second Update conflicts.
func (r *EndpointReconciler) rotate(ctx context.Context, endpoint *hookrelayv1alpha1.WebhookEndpoint, secret *corev1.Secret) error {
	requested := endpoint.Annotations[hookrelayv1alpha1.AnnotationRotateSecret]
	if requested == "" || requested == secret.Annotations[annotationRotatedFor] {
		return nil
	}
	_, later, err := hookrelayv1alpha1.ActionRequested(hookrelayv1alpha1.AnnotationRotateSecret, requested, secret.Annotations[annotationRotatedFor])
	if err != nil {
		r.reporter.warning(ctx, endpoint, hookrelayv1alpha1.ReasonRotationInvalid, "Rotate", "%v; the key was not rotated", err)
		return nil
	}
	if !later {
		// An older time, such as Git's value applied again after a
		// rotation from the command line: already done.
		return nil
	}
	value, err := whsec.New()
	if err != nil {
		return err
	}
	expiresAt := r.Clock.Now().Add(r.RotationGrace).UTC().Truncate(time.Second)
	secret.Data[previousSecretKey] = secret.Data[SecretKey]
	secret.Data[SecretKey] = []byte(value)
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
	}
	secret.Annotations[annotationRotatedFor] = requested
	secret.Annotations[annotationPreviousExpiresAt] = expiresAt.Format(time.RFC3339)
	if err := r.Update(ctx, secret); err != nil {
		return fmt.Errorf("rotating signing Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	r.reporter.normal(ctx, endpoint, hookrelayv1alpha1.ReasonSecretRotated, "Rotate",
		"rotated the signing key in Secret %q; the previous key keeps signing until %s", secret.Name, expiresAt.Format(time.RFC3339))
	return nil
}

// expirePreviousKey drops a previous key whose grace period is over, or
// says when to come back to do so.
func (r *EndpointReconciler) expirePreviousKey(ctx context.Context, endpoint *hookrelayv1alpha1.WebhookEndpoint, secret *corev1.Secret) (time.Duration, error) {
	_, expiresAt, ok := previousKey(secret)
	if !ok {
		return 0, nil
	}
	if remaining := expiresAt.Sub(r.Clock.Now()); remaining > 0 {
		return remaining, nil
	}
	delete(secret.Data, previousSecretKey)
	delete(secret.Annotations, annotationPreviousExpiresAt)
	if err := r.Update(ctx, secret); err != nil {
		return 0, fmt.Errorf("dropping the expired previous key from Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	r.reporter.normal(ctx, endpoint, hookrelayv1alpha1.ReasonPreviousKeyExpired, "Rotate", "the previous signing key in Secret %q expired and no longer signs", secret.Name)
	return 0, nil
}

// SetupWithManager watches endpoints, their Secrets and route publications.
func (r *EndpointReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &hookrelayv1alpha1.WebhookEndpoint{}, secretRefIndex,
		func(obj client.Object) []string {
			return referencedSecrets(obj.(*hookrelayv1alpha1.WebhookEndpoint))
		}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("webhookendpoint").
		// Spec changes, annotations (rotation, re-enable) and the
		// dispatcher's Disabled condition; not other status writes.
		For(&hookrelayv1alpha1.WebhookEndpoint{}, builder.WithPredicates(
			predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{},
				conditionChanged(hookrelayv1alpha1.ConditionDisabled), pausedHeldChanged()), r.status.forgetDeleted())).
		Owns(&corev1.Secret{}).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.endpointsUsingSecret)).
		WatchesRawSource(source.Channel(r.publication.changes, &handler.TypedEnqueueRequestForObject[*hookrelayv1alpha1.WebhookEndpoint]{})).
		Complete(r)
}

// endpointsUsingSecret maps a Secret to the endpoints that name it in
// spec.secretRef or spec.headers.
func (r *EndpointReconciler) endpointsUsingSecret(ctx context.Context, secret client.Object) []reconcile.Request {
	return referrers(ctx, r.Client, &hookrelayv1alpha1.WebhookEndpointList{}, secretRefIndex, secret)
}
