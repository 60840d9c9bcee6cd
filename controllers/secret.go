package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

const (
	// SecretKey is the data key of a signing Secret that holds the whsec_ value.
	SecretKey = "secret"
	// previousSecretKey holds the key being rotated out, until it expires.
	previousSecretKey = "previous"

	// minSecretBytes is the least entropy accepted in a bring-your-own secret.
	minSecretBytes = 24

	// LabelEndpoint names, on a generated Secret, the endpoint it signs for.
	LabelEndpoint  = "hookrelay.dev/endpoint"
	labelManagedBy = "app.kubernetes.io/managed-by"
	managedBy      = "hookrelay"
	// kindWebhookEndpoint is the kind that controls a generated Secret.
	kindWebhookEndpoint = "WebhookEndpoint"

	// annotationRotatedFor records on a generated Secret the value of the
	// endpoint's rotate-secret annotation it last rotated for, so that each
	// value rotates exactly once.
	annotationRotatedFor = "hookrelay.dev/rotated-for"
	// annotationPreviousExpiresAt is when the previous key stops signing.
	annotationPreviousExpiresAt = "hookrelay.dev/previous-expires-at"
)

// checkSigningSecret says whether a value is a valid signing secret. The
// error says what a valid one looks like, never what this one holds or how
// long it is: the reader of the message may not be allowed to read the Secret.
func checkSigningSecret(value string) error {
	key, err := whsec.Decode(value)
	if err != nil || len(key) < minSecretBytes {
		return fmt.Errorf("value is not a signing secret: it must be %q followed by the standard base64 of at least %d random bytes", whsec.Prefix, minSecretBytes)
	}
	return nil
}

// signingSecretName is the Secret that holds an endpoint's signing key: the
// one named by spec.secretRef, or the generated one.
func signingSecretName(endpoint *hookrelayv1alpha1.WebhookEndpoint) string {
	if endpoint.Spec.SecretRef != nil {
		return endpoint.Spec.SecretRef.Name
	}
	return whsec.GeneratedSecretName(endpoint.Name)
}

// activeKeys lists the keys that sign an endpoint's deliveries at now: the
// current key, then the previous one while its grace period lasts. It returns
// a terminalError that names the Secret when the Secret cannot sign.
func activeKeys(secret *corev1.Secret, now time.Time) ([]routes.Key, error) {
	current := string(secret.Data[SecretKey])
	if current == "" {
		return nil, &terminalError{reason: hookrelayv1alpha1.ReasonSecretInvalid,
			message: fmt.Sprintf("Secret %q has no key %q", secret.Name, SecretKey)}
	}
	if err := checkSigningSecret(current); err != nil {
		return nil, &terminalError{reason: hookrelayv1alpha1.ReasonSecretInvalid,
			message: fmt.Sprintf("Secret %q key %q: %v", secret.Name, SecretKey, err)}
	}
	keys := []routes.Key{{Secret: current}}
	if previous, expiresAt, ok := previousKey(secret); ok && now.Before(expiresAt) {
		keys = append(keys, routes.Key{Secret: previous, ExpiresAt: &expiresAt})
	}
	return keys, nil
}

// previousKey returns the key being rotated out of a generated Secret and
// when it expires. A previous key without a readable expiry has expired.
func previousKey(secret *corev1.Secret) (string, time.Time, bool) {
	previous := string(secret.Data[previousSecretKey])
	if previous == "" {
		return "", time.Time{}, false
	}
	expiresAt, err := time.Parse(time.RFC3339, secret.Annotations[annotationPreviousExpiresAt])
	if err != nil {
		return previous, time.Time{}, true
	}
	return previous, expiresAt, true
}

// maxSecretHeaderBytes bounds a header value read from a Secret, like the
// CRD bounds a literal one.
const maxSecretHeaderBytes = 4096

// secretGetter reads the Secrets an endpoint names. cached holds only the
// Secrets labelled hookrelay.dev/endpoint-secret (see CacheOptions); live,
// when set, reads a cache miss by name from the API server, so that an
// unlabelled Secret gets a message saying which label to add rather than
// "not found".
type secretGetter struct {
	cached, live client.Reader
}

// get returns the Secret name in namespace, or a terminalError saying what
// keeps an endpoint from using it. field names the spec field that refers to
// it. The Secret is the cache's own object: the caller must not change it.
func (s secretGetter) get(ctx context.Context, namespace, name, field string) (*corev1.Secret, error) {
	// Not copied: callers only read it.
	secret := &corev1.Secret{}
	err := s.cached.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, secret, client.UnsafeDisableDeepCopy)
	if apierrors.IsNotFound(err) && s.live != nil {
		if err = s.live.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &corev1.Secret{}); err == nil {
			return nil, unlabelledSecret(field, name)
		}
	}
	if apierrors.IsNotFound(err) {
		return nil, &terminalError{reason: hookrelayv1alpha1.ReasonSecretInvalid, recheck: true,
			message: fmt.Sprintf("%s: Secret %q not found in namespace %q", field, name, namespace)}
	}
	if err != nil {
		return nil, err
	}
	if secret.Labels[hookrelayv1alpha1.LabelEndpointSecret] != "true" {
		return nil, unlabelledSecret(field, name)
	}
	return secret, nil
}

func unlabelledSecret(field, name string) error {
	return &terminalError{reason: hookrelayv1alpha1.ReasonSecretInvalid, recheck: true, message: fmt.Sprintf(
		"%s: Secret %q does not carry the label %s=true that lets endpoints read it; add it with `kubectl label secret %s %s=true`",
		field, name, hookrelayv1alpha1.LabelEndpointSecret, name, hookrelayv1alpha1.LabelEndpointSecret)}
}

// foreignSecret says why an endpoint may not read a labelled Secret: it is
// another endpoint's generated signing Secret, or a keys shard of the
// dispatcher configuration. ownOK allows the endpoint's own generated Secret.
func foreignSecret(secret *corev1.Secret, endpoint *hookrelayv1alpha1.WebhookEndpoint, field string, ownOK bool) error {
	if _, ok := secret.Labels[routes.LabelKeys]; ok {
		return &terminalError{reason: hookrelayv1alpha1.ReasonSecretInvalid, message: fmt.Sprintf(
			"%s: Secret %q holds the dispatcher's keys and cannot be used by an endpoint", field, secret.Name)}
	}
	owner := metav1.GetControllerOf(secret)
	if owner == nil || owner.APIVersion != hookrelayv1alpha1.GroupVersion.String() || owner.Kind != kindWebhookEndpoint {
		return nil
	}
	if ownOK && owner.UID == endpoint.UID {
		return nil
	}
	return &terminalError{reason: hookrelayv1alpha1.ReasonSecretInvalid, message: fmt.Sprintf(
		"%s: Secret %q is the generated signing Secret of WebhookEndpoint %q; an endpoint may use only its own generated Secret or one brought for it",
		field, secret.Name, owner.Name)}
}

// signingSecretOf refuses, for a header, a Secret that a WebhookEndpoint in
// its namespace names in spec.secretRef: a bring-your-own signing Secret
// carries the same label as a header Secret, and its key must reach no
// receiver but the endpoint's own, in a signature.
func signingSecretOf(ctx context.Context, reader client.Reader, secret *corev1.Secret, field string) error {
	var endpoints hookrelayv1alpha1.WebhookEndpointList
	if err := reader.List(ctx, &endpoints, client.InNamespace(secret.Namespace),
		client.MatchingFields{secretRefIndex: secret.Name}); err != nil {
		return fmt.Errorf("listing the endpoints that name Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	for _, other := range endpoints.Items {
		if other.Spec.SecretRef != nil && other.Spec.SecretRef.Name == secret.Name {
			return &terminalError{reason: hookrelayv1alpha1.ReasonSecretInvalid, message: fmt.Sprintf(
				"%s: Secret %q is the signing Secret of WebhookEndpoint %q (its spec.secretRef); a signing Secret cannot supply header values",
				field, secret.Name, other.Name)}
		}
	}
	return nil
}

// secretHeaders reads the header values an endpoint takes from Secrets
// (spec.headers[].valueFrom), by header name.
func secretHeaders(ctx context.Context, secrets secretGetter, endpoint *hookrelayv1alpha1.WebhookEndpoint) (map[string]string, error) {
	var values map[string]string
	for _, header := range endpoint.Spec.Headers {
		if header.ValueFrom == nil {
			continue
		}
		ref := header.ValueFrom.SecretKeyRef
		field := fmt.Sprintf("spec.headers[%s].valueFrom.secretKeyRef", header.Name)
		secret, err := secrets.get(ctx, endpoint.Namespace, ref.Name, field)
		if err != nil {
			return nil, err
		}
		if err := foreignSecret(secret, endpoint, field, false); err != nil {
			return nil, err
		}
		if err := signingSecretOf(ctx, secrets.cached, secret, field); err != nil {
			return nil, err
		}
		value, ok := secret.Data[ref.Key]
		if !ok {
			return nil, &terminalError{reason: hookrelayv1alpha1.ReasonSecretInvalid,
				message: fmt.Sprintf("%s: Secret %q has no key %q", field, ref.Name, ref.Key)}
		}
		// Said without the value or its length: the message is public.
		if len(value) > maxSecretHeaderBytes || !httpguts.ValidHeaderFieldValue(string(value)) {
			return nil, &terminalError{reason: hookrelayv1alpha1.ReasonSecretInvalid, message: fmt.Sprintf(
				"%s: key %q of Secret %q is not a valid header value: at most %d bytes, without CR, LF or other control characters",
				field, ref.Key, ref.Name, maxSecretHeaderBytes)}
		}
		// A signing key sent as a header would reach a receiver that must not
		// hold it, whichever Secret it was copied into.
		if strings.HasPrefix(string(value), whsec.Prefix) {
			return nil, &terminalError{reason: hookrelayv1alpha1.ReasonSecretInvalid, message: fmt.Sprintf(
				"%s: key %q of Secret %q holds a signing secret (it starts with %q) and cannot be sent as a header",
				field, ref.Key, ref.Name, whsec.Prefix)}
		}
		if values == nil {
			values = map[string]string{}
		}
		values[header.Name] = string(value)
	}
	return values, nil
}
