package controllers

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/routes"
)

const (
	// SecretKey is the data key of a signing Secret that holds the whsec_ value.
	SecretKey = "secret"
	// previousSecretKey holds the key being rotated out, until it expires.
	previousSecretKey = "previous"

	// secretPrefix starts every signing secret.
	secretPrefix = "whsec_"
	// generatedSecretBytes is the entropy of a generated signing secret.
	generatedSecretBytes = 32
	// minSecretBytes is the least entropy accepted in a bring-your-own secret.
	minSecretBytes = 24

	// LabelEndpoint names, on a generated Secret, the endpoint it signs for.
	LabelEndpoint  = "hookrelay.dev/endpoint"
	labelManagedBy = "app.kubernetes.io/managed-by"
	managedBy      = "hookrelay"

	// annotationRotatedFor records on a generated Secret the value of the
	// endpoint's rotate-secret annotation it last rotated for, so that each
	// value rotates exactly once.
	annotationRotatedFor = "hookrelay.dev/rotated-for"
	// annotationPreviousExpiresAt is when the previous key stops signing.
	annotationPreviousExpiresAt = "hookrelay.dev/previous-expires-at"
)

// newSigningSecret returns whsec_ + base64 of 32 random bytes.
func newSigningSecret() (string, error) {
	raw := make([]byte, generatedSecretBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generating signing secret: %w", err)
	}
	return secretPrefix + base64.StdEncoding.EncodeToString(raw), nil
}

// checkSigningSecret says what is wrong with a signing secret value, if anything.
func checkSigningSecret(value string) error {
	encoded, ok := strings.CutPrefix(value, secretPrefix)
	if !ok {
		return fmt.Errorf("value does not start with %q", secretPrefix)
	}
	raw, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return fmt.Errorf("value after %q is not standard base64: %v", secretPrefix, err)
	}
	if len(raw) < minSecretBytes {
		return fmt.Errorf("value decodes to %d bytes, want at least %d", len(raw), minSecretBytes)
	}
	return nil
}

// signingSecretName is the Secret that holds an endpoint's signing key: the
// one named by spec.secretRef, or the generated one.
func signingSecretName(endpoint *hookrelayv1alpha1.WebhookEndpoint) string {
	if endpoint.Spec.SecretRef != nil {
		return endpoint.Spec.SecretRef.Name
	}
	return generatedSecretName(endpoint.Name)
}

// generatedSecretName is "<endpoint>-whsec", shortened with a hash when that
// would pass the 253-character name limit.
func generatedSecretName(endpointName string) string {
	const suffix, limit = "-whsec", 253
	if len(endpointName)+len(suffix) <= limit {
		return endpointName + suffix
	}
	sum := sha256.Sum256([]byte(endpointName))
	return endpointName[:limit-len(suffix)-9] + "-" + hex.EncodeToString(sum[:4]) + suffix
}

// activeKeys lists the keys that sign an endpoint's deliveries at now: the
// current key, then the previous one while its grace period lasts. It returns
// an error that names the Secret when the Secret cannot sign.
func activeKeys(secret *corev1.Secret, now time.Time) ([]routes.Key, error) {
	current := string(secret.Data[SecretKey])
	if current == "" {
		return nil, fmt.Errorf("Secret %q has no key %q", secret.Name, SecretKey)
	}
	if err := checkSigningSecret(current); err != nil {
		return nil, fmt.Errorf("Secret %q key %q: %v", secret.Name, SecretKey, err)
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
