// The routing table is the dispatcher's reading of the routes: compiled
// routes and keys, with filters and transforms compiled, swapped atomically
// as a whole when the configuration changes.

package routes

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/signing"
	"github.com/hookrelay/hookrelay/internal/celenv"
)

// Route is one deliverable endpoint: its published Endpoint with the keys
// and header values from Secrets, and its CEL compiled.
type Route struct {
	Endpoint
	// ID is "<namespace>/<name>".
	ID   string
	Keys []Key
	// SecretHeaders are the header values from Secrets, published in the
	// keys Secrets rather than in the route.
	SecretHeaders map[string]string
	Transform     *celenv.Transform

	subscriptions []subscription
}

type subscription struct {
	eventTypes []string
	filter     *celenv.Filter
}

// Secrets lists the keys that sign at now, current first.
func (e *Route) Secrets(now time.Time) []string {
	secrets := make([]string, 0, len(e.Keys))
	for _, key := range e.Keys {
		if key.ExpiresAt == nil || now.Before(*key.ExpiresAt) {
			secrets = append(secrets, key.Secret)
		}
	}
	return secrets
}

// SignatureScheme is the endpoint's spec.signing; routes without it sign
// with both families and the dispatcher's prefix.
func (e *Route) SignatureScheme() signing.Scheme {
	if e.Signing == nil {
		return signing.BothSchemes
	}
	return signing.Scheme{
		Prefix:           e.Signing.HeaderPrefix,
		Prefixed:         slices.Contains(e.Signing.Schemes, SchemePrefixed),
		StandardWebhooks: slices.Contains(e.Signing.Schemes, SchemeStandardWebhooks),
	}
}

// Succeeded reports whether a status code counts as delivered.
func (e *Route) Succeeded(status int) bool {
	if len(e.SuccessStatusCodes) == 0 {
		return status >= 200 && status < 300
	}
	return slices.Contains(e.SuccessStatusCodes, int32(status))
}

// Table is an immutable routing table.
type Table struct {
	endpoints   map[string]*Route
	byNamespace map[string][]*Route
}

// ID names an endpoint in the table.
func ID(namespace, name string) string { return namespace + "/" + name }

// Build compiles the shards' entries into a table. An entry that cannot be
// used is left out and reported; the rest of the table still works.
func Build(routeEntries, keyEntries map[string][]byte) (*Table, []error) {
	decodedRoutes := make(map[string]decodedRoute, len(routeEntries))
	for entry, data := range routeEntries {
		decodedRoutes[entry] = decodeRoute(entry, data)
	}
	decodedKeys := make(map[string]decodedKeys, len(keyEntries))
	for entry, data := range keyEntries {
		decodedKeys[entry] = decodeKeysEntry(entry, data)
	}
	return assemble(decodedRoutes, decodedKeys)
}

// decodedRoute is a routes entry decoded with its CEL loaded, without its
// keys, or why it cannot be used. It is shared by the tables built while its
// shard is unchanged, so it is never modified.
type decodedRoute struct {
	route *Route
	err   error
}

// decodedKeys is a keys entry decoded, or why it cannot be used.
type decodedKeys struct {
	entry KeysEntry
	err   error
}

func decodeRoute(entry string, data []byte) decodedRoute {
	route, err := DecodeEndpoint(data)
	if err != nil {
		return decodedRoute{err: fmt.Errorf("route %s: %w", entry, err)}
	}
	endpoint := &Route{Endpoint: route, ID: ID(route.Namespace, route.Name)}
	// Load, not Compile: the controllers checked the static cost; the
	// run-time bounds hold for whatever was published.
	if route.Transform != "" {
		if endpoint.Transform, err = celenv.LoadTransform(route.Transform); err != nil {
			return decodedRoute{err: fmt.Errorf("route %s: transform: %w", entry, err)}
		}
	}
	for _, s := range route.Subscriptions {
		compiled := subscription{eventTypes: s.EventTypes}
		if s.Filter != "" {
			if compiled.filter, err = celenv.LoadFilter(s.Filter); err != nil {
				return decodedRoute{err: fmt.Errorf("route %s: subscription %s: filter: %w", entry, s.Name, err)}
			}
		}
		endpoint.subscriptions = append(endpoint.subscriptions, compiled)
	}
	return decodedRoute{route: endpoint}
}

func decodeKeysEntry(entry string, data []byte) decodedKeys {
	keysEntry, err := DecodeKeys(data)
	if err != nil {
		return decodedKeys{err: fmt.Errorf("route %s: %w", entry, err)}
	}
	return decodedKeys{entry: keysEntry}
}

// assemble pairs each decoded route with its keys into a new table.
func assemble(decodedRoutes map[string]decodedRoute, keys map[string]decodedKeys) (*Table, []error) {
	table := &Table{endpoints: make(map[string]*Route, len(decodedRoutes)), byNamespace: map[string][]*Route{}}
	var problems []error
	for entry, decoded := range decodedRoutes {
		if decoded.err != nil {
			problems = append(problems, decoded.err)
			continue
		}
		keysEntry, ok := keys[entry]
		if !ok {
			problems = append(problems, fmt.Errorf("route %s: no signing keys published", entry))
			continue
		}
		if keysEntry.err != nil {
			problems = append(problems, keysEntry.err)
			continue
		}
		// The keys shard is written before the routes shard, so keys newer
		// than the route (route.KeysVersion differs, during a rotation) are
		// the ones to sign with.
		endpoint := *decoded.route
		endpoint.Keys, endpoint.SecretHeaders = keysEntry.entry.Keys, keysEntry.entry.Headers
		table.endpoints[endpoint.ID] = &endpoint
		table.byNamespace[endpoint.Namespace] = append(table.byNamespace[endpoint.Namespace], &endpoint)
	}
	for _, endpoints := range table.byNamespace {
		slices.SortFunc(endpoints, func(a, b *Route) int { return strings.Compare(a.ID, b.ID) })
	}
	return table, problems
}

// Endpoint returns an endpoint by ID, or nil.
func (t *Table) Endpoint(id string) *Route { return t.endpoints[id] }

// Endpoints lists every endpoint.
func (t *Table) Endpoints() []*Route {
	out := make([]*Route, 0, len(t.endpoints))
	for _, endpoint := range t.endpoints {
		out = append(out, endpoint)
	}
	return out
}

// Match lists the endpoints of namespace that an event goes to: one per
// endpoint, however many of its subscriptions match; sandbox events only to
// sandbox endpoints and production events only to production ones. event
// gives the envelope that filters see; it is called only if a filter runs.
func (t *Table) Match(namespace, eventType string, sandbox bool, event func() map[string]any) []*Route {
	var out []*Route
	for _, endpoint := range t.byNamespace[namespace] {
		if endpoint.Sandbox != sandbox {
			continue
		}
		if slices.ContainsFunc(endpoint.subscriptions, func(s subscription) bool { return s.matches(eventType, event) }) {
			out = append(out, endpoint)
		}
	}
	return out
}

func (s subscription) matches(eventType string, event func() map[string]any) bool {
	if !slices.ContainsFunc(s.eventTypes, func(pattern string) bool { return TypeMatches(pattern, eventType) }) {
		return false
	}
	if s.filter == nil {
		return true
	}
	// A filter that cannot evaluate on this event (a missing field, say)
	// does not match it.
	matched, err := s.filter.Match(event())
	return err == nil && matched
}

// TypeMatches reports whether an event type matches a subscription pattern:
// "*", "prefix.*", or an exact type.
func TypeMatches(pattern, eventType string) bool {
	if pattern == "*" {
		return true
	}
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(eventType, prefix)
	}
	return pattern == eventType
}
