// Package dispatcherapi holds the types of the dispatcher's HTTP API: the
// bodies producers publish, and the delivery log the API answers with.
// It depends on the standard library only, so that clients (the kubectl
// plugin, pkg/client, producers' services) link nothing of the dispatcher.
package dispatcherapi

import (
	"encoding/json"
	"time"
)

// TokenHeader carries the bearer token when a request comes through the API
// server's service proxy, which keeps the Authorization header for itself.
const TokenHeader = "X-Hookrelay-Authorization"

// State of a delivery.
type State string

const (
	// Pending deliveries wait for their next attempt.
	Pending State = "pending"
	// Held deliveries wait for their endpoint to be re-enabled or unpaused.
	Held State = "held"
	// Succeeded deliveries got a success status.
	Succeeded State = "succeeded"
	// Failed deliveries used all their attempts.
	Failed State = "failed"
)

// PublishRequest is the JSON body of a publish
// (POST /v1/namespaces/{namespace}/events).
type PublishRequest struct {
	// ID is the event's id; the dispatcher generates one when empty. An id
	// already accepted within the dedupe window is not delivered again.
	ID   string `json:"id,omitempty"`
	Type string `json:"type"`
	// Data is the event's JSON payload; {} when empty.
	Data json.RawMessage `json:"data,omitempty"`
	// CreatedAt is when the producer says the event happened (RFC 3339);
	// the accept time when empty.
	CreatedAt string `json:"created_at,omitempty"`
	Sandbox   bool   `json:"sandbox,omitempty"`
}

// PublishResponse is the answer to a publish.
type PublishResponse struct {
	ID         string `json:"id"`
	Deliveries int    `json:"deliveries"`
	Duplicate  bool   `json:"duplicate,omitempty"`
}

// Error is the body of every 4xx and 5xx answer.
type Error struct {
	Error string `json:"error"`
}

// Event is an accepted event.
type Event struct {
	Namespace string    `json:"namespace"`
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	CreatedAt time.Time `json:"created_at"`
	// Data is the producer's JSON; EventLog carries it beside the event.
	Data    json.RawMessage `json:"-"`
	Sandbox bool            `json:"sandbox,omitempty"`
	// AcceptedAt starts the dedupe window.
	AcceptedAt time.Time `json:"accepted_at"`
	// Deliveries is how many deliveries the event fanned out to.
	Deliveries int `json:"deliveries"`
}

// Delivery is one event on its way to one endpoint.
type Delivery struct {
	// ID sorts in the order deliveries were accepted.
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	EventID   string `json:"event_id"`
	// Endpoint is the WebhookEndpoint's name, in Namespace.
	Endpoint      string    `json:"endpoint"`
	State         State     `json:"state"`
	Attempts      int       `json:"attempts"`
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	// Interrupted counts the times the dispatcher process died while an
	// attempt of this delivery was in flight; at the dispatcher's
	// --poison-after the delivery is failed as Poisoned.
	Interrupted int `json:"interrupted,omitempty"`
}

// Attempt is one HTTP request of a delivery and what came of it.
type Attempt struct {
	DeliveryID string    `json:"delivery_id"`
	Number     int       `json:"number"`
	StartedAt  time.Time `json:"started_at"`
	// DurationMS is how long the attempt took, in milliseconds.
	DurationMS float64 `json:"duration_ms"`
	StatusCode int     `json:"status_code,omitempty"`
	Error      string  `json:"error,omitempty"`
	// Response is the first KiB of the response body.
	Response string `json:"response,omitempty"`
}

// EventLog is an event with its deliveries and their attempts
// (GET /v1/namespaces/{namespace}/events/{id}).
type EventLog struct {
	Event      Event           `json:"event"`
	Data       json.RawMessage `json:"data"`
	Deliveries []DeliveryLog   `json:"deliveries"`
}

// DeliveryLog is a delivery with its attempts.
type DeliveryLog struct {
	Delivery
	Attempts []Attempt `json:"attempts"`
}

// DeliveryPage is one page of an endpoint's deliveries, newest first
// (GET /v1/namespaces/{namespace}/endpoints/{endpoint}/deliveries).
type DeliveryPage struct {
	Deliveries []Delivery `json:"deliveries"`
	// Continue, when set, fetches the next page (?continue=).
	Continue string `json:"continue,omitempty"`
}

// ReplayResult says how many deliveries a replay queued
// (POST /v1/namespaces/{namespace}/endpoints/{endpoint}/replay).
type ReplayResult struct {
	Replayed int `json:"replayed"`
}
