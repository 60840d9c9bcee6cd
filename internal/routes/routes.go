// Package routes is the compiled dispatcher configuration: the format the
// controllers write into the operator namespace and the dispatcher reads.
//
// Routes live in ConfigMaps labelled LabelRoutes, one data key per endpoint
// (see EntryKey) holding that endpoint's compiled Endpoint as JSON. Signing keys
// live in Secrets labelled LabelKeys, one data key per endpoint holding its
// KeysEntry as JSON: active signing keys and header values from Secrets, which
// never go in the ConfigMaps. Each kind is split into a power-of-two count of
// shards by a hash of the entry key, enough to keep each object under a size
// limit, so that a change to one endpoint rewrites one shard of each (see Pack).
package routes

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// LabelRoutes marks the ConfigMaps that hold compiled routes.
	LabelRoutes = "hookrelay.dev/routes"
	// LabelKeys marks the Secrets that hold the endpoints' active signing keys.
	LabelKeys = "hookrelay.dev/keys"

	// RoutesShardPrefix and KeysShardPrefix name the shards: prefix + index.
	RoutesShardPrefix = "hookrelay-routes-"
	KeysShardPrefix   = "hookrelay-keys-"
)

// Endpoint is one Ready WebhookEndpoint as the dispatcher needs it, with the
// Ready subscriptions that point at it.
type Endpoint struct {
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	UID        string `json:"uid"`
	Generation int64  `json:"generation"`

	URL                string            `json:"url"`
	Sandbox            bool              `json:"sandbox,omitempty"`
	Paused             bool              `json:"paused,omitempty"`
	Timeout            metav1.Duration   `json:"timeout"`
	RetrySchedule      []metav1.Duration `json:"retrySchedule"`
	SuccessStatusCodes []int32           `json:"successStatusCodes,omitempty"`
	// AutoDisableAfter is the number of consecutive failed deliveries that
	// disables the endpoint; 0 never disables.
	AutoDisableAfter int32 `json:"autoDisableAfter"`
	// The policy fields below are named so that their zero value is the
	// behaviour from before they existed: a route published by an older
	// manager keeps its meaning.
	//
	// KeepOnGone makes a 410 Gone an ordinary failed attempt instead of
	// disabling the endpoint at once (spec.autoDisable.onGone false).
	KeepOnGone bool `json:"keepOnGone,omitempty"`
	// JitterPercent is spec.retry.jitterPercent; nil means the API default.
	JitterPercent *int32 `json:"jitterPercent,omitempty"`
	// IgnoreRetryAfter is spec.retry.honorRetryAfter false.
	IgnoreRetryAfter bool       `json:"ignoreRetryAfter,omitempty"`
	RateLimit        *RateLimit `json:"rateLimit,omitempty"`
	MaxInFlight      int32      `json:"maxInFlight"`
	// Ordering is OrderingStrict for an endpoint whose deliveries are
	// attempted one at a time in acceptance order; empty is unordered.
	Ordering string `json:"ordering,omitempty"`
	// Headers are the literal header values (spec.headers[].value); values
	// from Secrets are in the endpoint's KeysEntry.
	Headers   map[string]string `json:"headers,omitempty"`
	Transform string            `json:"transform,omitempty"`
	// Signing is spec.signing; nil (routes written before it existed) signs
	// with both schemes and the dispatcher's prefix.
	Signing *Signing `json:"signing,omitempty"`
	// ReenableToken is the endpoint's status.lastReenableRequestedAt: the
	// latest hookrelay.dev/reenable-requested-at time the controller
	// accepted. A new value re-enables an auto-disabled endpoint.
	ReenableToken string `json:"reenableToken,omitempty"`
	// KeysVersion fingerprints the active keys published for this endpoint.
	KeysVersion string `json:"keysVersion"`

	Subscriptions []Subscription `json:"subscriptions,omitempty"`
}

// OrderingStrict is Endpoint.Ordering for strictly ordered delivery.
const OrderingStrict = "Strict"

// Strict reports whether the endpoint's deliveries are strictly ordered.
func (e *Endpoint) Strict() bool { return e.Ordering == OrderingStrict }

// Signature schemes, as spec.signing.schemes names them.
const (
	SchemePrefixed         = "Prefixed"
	SchemeStandardWebhooks = "StandardWebhooks"
)

// Signing says which signature headers an endpoint's deliveries carry.
type Signing struct {
	// HeaderPrefix names the Prefixed headers; empty means the dispatcher's
	// --header-prefix.
	HeaderPrefix string `json:"headerPrefix,omitempty"`
	// Schemes are SchemePrefixed and/or SchemeStandardWebhooks, sorted.
	Schemes []string `json:"schemes"`
}

// RateLimit is a token bucket: PerSecond sustained, Burst at once.
type RateLimit struct {
	PerSecond int32 `json:"perSecond"`
	Burst     int32 `json:"burst"`
}

// Subscription is one Ready WebhookSubscription.
type Subscription struct {
	Name       string   `json:"name"`
	Generation int64    `json:"generation"`
	EventTypes []string `json:"eventTypes"`
	Filter     string   `json:"filter,omitempty"`
}

// Key is one signing secret (whsec_…) that is active for an endpoint.
// ExpiresAt is set on a previous key kept during a rotation grace period.
type Key struct {
	Secret    string     `json:"secret"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// KeysEntry is an endpoint's entry in a keys Secret: what must not be stored
// in a ConfigMap.
type KeysEntry struct {
	// Keys are the active signing keys, current first.
	Keys []Key `json:"keys"`
	// Headers are the header values read from Secrets
	// (spec.headers[].valueFrom), by header name.
	Headers map[string]string `json:"headers,omitempty"`
}

// EntryKey returns the data key of an endpoint in a shard: "<namespace>.<name>".
// Namespaces cannot contain dots, so the first dot separates the two.
func EntryKey(namespace, name string) string {
	return namespace + "." + name
}

// KeysVersion fingerprints a list of keys without revealing them.
func KeysVersion(keys []Key) string {
	h := sha256.New()
	for _, k := range keys {
		h.Write([]byte(k.Secret))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// EncodeEndpoint and EncodeKeys give the canonical JSON of a shard entry, so
// that an unchanged configuration encodes to identical bytes.
func EncodeEndpoint(e Endpoint) ([]byte, error) { return json.Marshal(e) }

// EncodeKeys gives the canonical JSON of an endpoint's keys entry.
func EncodeKeys(entry KeysEntry) ([]byte, error) { return json.Marshal(entry) }

// DecodeEndpoint reads a routes ConfigMap entry.
func DecodeEndpoint(data []byte) (Endpoint, error) {
	var e Endpoint
	if err := json.Unmarshal(data, &e); err != nil {
		return Endpoint{}, fmt.Errorf("routes: decoding endpoint: %w", err)
	}
	return e, nil
}

// DecodeKeys reads a keys Secret entry.
func DecodeKeys(data []byte) (KeysEntry, error) {
	// The previous version wrote a bare array of keys; shards it wrote are
	// read until the manager rewrites them.
	if bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("[")) {
		var keys []Key
		if err := json.Unmarshal(data, &keys); err != nil {
			return KeysEntry{}, fmt.Errorf("routes: decoding keys: %w", err)
		}
		return KeysEntry{Keys: keys}, nil
	}
	var entry KeysEntry
	if err := json.Unmarshal(data, &entry); err != nil {
		return KeysEntry{}, fmt.Errorf("routes: decoding keys: %w", err)
	}
	return entry, nil
}
