// Package store keeps events, deliveries, attempts and endpoint health
// durably. Pebble is the embedded implementation, one folder for one
// replica (Bolt, the one before it, stays selectable and is migrated from);
// Postgres is the shared one, one database for any number of replicas.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// ErrNotFound is returned for an event or delivery that is not stored.
var ErrNotFound = errors.New("not found")

// ErrClosed is returned by every method of a store after Close.
var ErrClosed = errors.New("store is closed")

// DeliveryChange is a compare-and-set of one delivery: To is stored only
// while the stored delivery still has State and Attempts, so that two
// callers acting on the same reading cannot both move it.
type DeliveryChange struct {
	State    State
	Attempts int
	To       Delivery
}

// The records the store keeps are the HTTP API's types: one definition,
// in pkg/dispatcherapi, which the delivery log answers with as stored.
type (
	// State of a delivery.
	State = dispatcherapi.State
	// Event is an accepted event; Data is stored beside the record.
	Event = dispatcherapi.Event
	// Delivery is one event on its way to one endpoint.
	Delivery = dispatcherapi.Delivery
	// Attempt is one HTTP request of a delivery and what came of it.
	Attempt = dispatcherapi.Attempt
)

// The states of a delivery.
const (
	Pending   = dispatcherapi.Pending
	Held      = dispatcherapi.Held
	Succeeded = dispatcherapi.Succeeded
	Failed    = dispatcherapi.Failed
)

// Health is an endpoint's delivery record, which drives auto-disable.
type Health struct {
	// Endpoint is "<namespace>/<name>".
	Endpoint string `json:"endpoint"`
	// UID is the WebhookEndpoint's; a new endpoint of the same name starts
	// with a clean record.
	UID                 string     `json:"uid,omitempty"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	Disabled            bool       `json:"disabled,omitempty"`
	DisabledAt          *time.Time `json:"disabled_at,omitempty"`
	LastSuccess         *time.Time `json:"last_success,omitempty"`
	LastFailure         *time.Time `json:"last_failure,omitempty"`
	LastFailureReason   string     `json:"last_failure_reason,omitempty"`
	// ReenableToken is the last re-enable request acted upon.
	ReenableToken string `json:"reenable_token,omitempty"`
}

// endpointKey is how Health.Endpoint names an endpoint: "<namespace>/<name>".
func endpointKey(namespace, endpoint string) string { return namespace + "/" + endpoint }

// AttemptRecord is what one attempt changes: the attempt itself, its
// delivery's new state, and the endpoint's health when that changed (its
// Endpoint is then the delivery's "<namespace>/<endpoint>").
type AttemptRecord struct {
	Delivery Delivery
	Attempt  Attempt
	Health   *Health
}

// DeliveryQuery selects an endpoint's deliveries.
type DeliveryQuery struct {
	// State keeps only deliveries in that state, when set.
	State State
	// Since and Until bound the deliveries' creation time, when set.
	Since, Until time.Time
	// After continues a listing after the delivery with this id.
	After string
	// Limit is the most deliveries in a page.
	Limit int
}

// step is what a listing of an endpoint's deliveries, newest first, does
// with the next one: adds it to the page, skips it, or stops, at the first
// delivery older than Since (older ones only from there on) or when the page
// is full, next then being where the following page starts.
func (q DeliveryQuery) step(page []Delivery, d Delivery) (_ []Delivery, next string, stop bool) {
	switch {
	case !q.Since.IsZero() && d.CreatedAt.Before(q.Since):
		return page, "", true
	case (q.State != "" && d.State != q.State) || (!q.Until.IsZero() && !d.CreatedAt.Before(q.Until)):
		return page, "", false
	case q.Limit > 0 && len(page) == q.Limit:
		return page, page[len(page)-1].ID, true
	}
	return append(page, d), "", false
}

// Target is one endpoint an event fans out to.
type Target struct {
	Endpoint string
	// Held stores the delivery as held (endpoint disabled or paused).
	Held bool
}

// Accepted is the outcome of Accept.
type Accepted struct {
	Event      Event
	Deliveries []Delivery
	// Duplicate is true when the event id was accepted before, within the
	// dedupe window; Event is then the first one and Deliveries is empty.
	Duplicate bool
}

// Store is the durable state of the dispatcher. Every write is on disk
// (fsync) when it returns, except that Pebble's RecordAttempts and Sweep do
// not wait for their sync (see Pebble): a lost attempt record means an
// attempt made again.
type Store interface {
	// Accept stores an event and one delivery per target in one transaction,
	// unless an event with the same namespace and id was accepted since
	// dedupeSince. A delivery is stored held when its target is Held or when
	// its endpoint's stored health (Health.Endpoint "<namespace>/<endpoint>")
	// says Disabled, read in that transaction: a replica that does not own
	// the endpoint, and so does not track its health, holds it too.
	Accept(ctx context.Context, event Event, targets []Target, dedupeSince time.Time) (Accepted, error)
	// RecordAttempts stores attempts, with their deliveries' new states and,
	// where not nil, their endpoints' new health, in one transaction, and
	// says which records were applied. Each record is a compare-and-set: it
	// applies only while its stored delivery is still pending at the attempt
	// before it (Attempts == record.Delivery.Attempts-1); otherwise nothing
	// of it is stored (applied[i] is false), which is not an error. So a
	// replica that lost an endpoint's partition mid-attempt cannot overwrite
	// the progress of the partition's new owner, nor record an attempt
	// number twice. Records of one delivery apply in the order given.
	RecordAttempts(ctx context.Context, records []AttemptRecord) (applied []bool, err error)
	// UpdateDeliveries stores new states of deliveries (held ⇄ pending).
	UpdateDeliveries(ctx context.Context, deliveries []Delivery) error
	// ChangeDeliveries applies compare-and-sets in one transaction and says
	// which were applied; a change whose delivery moved on (or is gone) is
	// skipped, not an error.
	ChangeDeliveries(ctx context.Context, changes []DeliveryChange) (applied []bool, err error)
	// PutHealth stores an endpoint's health.
	PutHealth(ctx context.Context, health Health) error
	// ActivePage lists the pending and held deliveries of the given
	// partitions (see Partition) a page at a time, so that a caller holds
	// no more than limit of them at once (a disabled endpoint may have a
	// million held): at most limit of them, each partition's oldest first,
	// from where the page before left off (after is its next, empty for the
	// first page). next is empty after the last page.
	ActivePage(ctx context.Context, partitions []int, after string, limit int) (page []Delivery, next string, err error)
	// Healths lists every endpoint's health.
	Healths(ctx context.Context) ([]Health, error)
	// Event returns an event.
	Event(ctx context.Context, namespace, id string) (Event, error)
	// Events reads the events of the deliveries at once: events[i] is
	// deliveries[i]'s, left zero (ID empty) when it is not stored.
	Events(ctx context.Context, deliveries []Delivery) (events []Event, err error)
	// Attempts lists a delivery's attempts in order.
	Attempts(ctx context.Context, deliveryID string) ([]Attempt, error)
	// DeliveriesOf lists an event's deliveries.
	DeliveriesOf(ctx context.Context, namespace, eventID string) ([]Delivery, error)
	// Delivery returns one delivery.
	Delivery(ctx context.Context, id string) (Delivery, error)
	// EndpointDeliveries lists an endpoint's deliveries, newest first, as the
	// query says; next is the After of the following page, empty at the end.
	EndpointDeliveries(ctx context.Context, namespace, endpoint string, query DeliveryQuery) (page []Delivery, next string, err error)
	// Sweep deletes finished deliveries, their attempts, and events, last
	// updated before the time, and says how many deliveries went.
	Sweep(ctx context.Context, before time.Time) (int, error)
	Close() error
}
