package main

import (
	"context"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hookrelay/hookrelay/controllers"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

// Event types: the prefill's events, which no one publishes during the run,
// and the probe's, which only the probe endpoint takes.
const (
	eventFilled = "scale.filled"
	eventProbe  = "scale.probe"
)

// fleet names the endpoints: endpoint i is ep-<i> in namespace i mod
// namespaces. Endpoint 0 is the held one (disabled, its deliveries held);
// endpoint 1 is the probe, whose new events measure how promptly other
// endpoints are served during the release.
type fleet struct{ endpoints, namespaces int }

type endpoint struct {
	index           int
	namespace, name string
}

func (f fleet) endpoint(i int) endpoint {
	return endpoint{index: i, namespace: f.namespace(i % f.namespaces), name: fmt.Sprintf("ep-%05d", i)}
}

func (f fleet) namespace(i int) string { return fmt.Sprintf("scale-%02d", i) }

func (f fleet) held() endpoint  { return f.endpoint(0) }
func (f fleet) probe() endpoint { return f.endpoint(1) }

// finishedEndpoint is the k-th endpoint (cyclically) of namespace ns other
// than the held one: the prefill's finished deliveries go to these.
func (f fleet) finishedEndpoint(ns, k int) endpoint {
	indexes := (f.endpoints - ns + f.namespaces - 1) / f.namespaces // endpoints of ns
	first := 0
	if ns == f.held().index%f.namespaces {
		first, indexes = 1, indexes-1
	}
	return f.endpoint(ns + f.namespaces*(first+k%indexes))
}

func (e endpoint) id() string  { return routes.ID(e.namespace, e.name) }
func (e endpoint) uid() string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", e.index) }

// publisher writes the fleet's routes ConfigMaps and keys Secrets as the
// manager does (internal/routes: entries packed into shards), without the
// manager: the run measures the dispatcher alone.
type publisher struct {
	clientset       kubernetes.Interface
	fleet           fleet
	receiverURL     string
	heldMaxInFlight int32
	// written is each shard's data as last written, by object name.
	written map[string]map[string][]byte
	keys    map[string][]byte
}

func newPublisher(clientset kubernetes.Interface, f fleet, receiverURL string, heldMaxInFlight int32) (*publisher, error) {
	p := &publisher{clientset: clientset, fleet: f, receiverURL: receiverURL, heldMaxInFlight: heldMaxInFlight,
		written: map[string]map[string][]byte{}, keys: map[string][]byte{}}
	for i := range f.endpoints {
		e := f.endpoint(i)
		secret, err := whsec.New()
		if err != nil {
			return nil, err
		}
		data, err := routes.EncodeKeys(routes.KeysEntry{Keys: []routes.Key{{Secret: secret}}})
		if err != nil {
			return nil, err
		}
		p.keys[routes.EntryKey(e.namespace, e.name)] = data
	}
	return p, nil
}

// route is endpoint i's compiled route; reenableToken goes on the held one.
func (p *publisher) route(i int, reenableToken string) routes.Endpoint {
	e := p.fleet.endpoint(i)
	types := []string{eventFilled}
	if i == p.fleet.probe().index {
		types = append(types, eventProbe)
	}
	route := routes.Endpoint{
		Namespace: e.namespace, Name: e.name, UID: e.uid(), Generation: 1, URL: p.receiverURL + "/" + e.namespace + "/" + e.name,
		Timeout:          metav1.Duration{Duration: 10 * time.Second},
		RetrySchedule:    []metav1.Duration{{Duration: time.Second}, {Duration: 10 * time.Second}, {Duration: time.Minute}},
		AutoDisableAfter: 20, MaxInFlight: 1, KeysVersion: "scale",
		Subscriptions: []routes.Subscription{{Name: e.name, Generation: 1, EventTypes: types}},
	}
	if i == p.fleet.held().index {
		route.MaxInFlight, route.ReenableToken = p.heldMaxInFlight, reenableToken
	}
	return route
}

// publish writes the shards of the fleet's routes, the held endpoint's
// carrying reenableToken; only shards whose data changed are written, keys
// first, as the manager does.
func (p *publisher) publish(ctx context.Context, reenableToken string) error {
	entries := make(map[string][]byte, p.fleet.endpoints)
	for i := range p.fleet.endpoints {
		data, err := routes.EncodeEndpoint(p.route(i, reenableToken))
		if err != nil {
			return err
		}
		e := p.fleet.endpoint(i)
		entries[routes.EntryKey(e.namespace, e.name)] = data
	}
	if err := p.write(ctx, routes.KeysShardPrefix, p.keys, routes.SecretEntrySize); err != nil {
		return err
	}
	return p.write(ctx, routes.RoutesShardPrefix, entries, routes.ConfigMapEntrySize)
}

func (p *publisher) write(ctx context.Context, prefix string, entries map[string][]byte, size func(string, []byte) int) error {
	inUse := 0
	for name := range p.written {
		if len(name) > len(prefix) && name[:len(prefix)] == prefix {
			inUse++
		}
	}
	shards, err := routes.Pack(entries, controllers.DefaultShardSize, inUse, size)
	if err != nil {
		return err
	}
	for i, data := range shards {
		name := routes.ShardName(prefix, i)
		previous, exists := p.written[name]
		if exists && maps.EqualFunc(previous, data, func(a, b []byte) bool { return string(a) == string(b) }) {
			continue
		}
		if err := p.put(ctx, name, prefix == routes.KeysShardPrefix, data, exists); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
		p.written[name] = data
	}
	return nil
}

func (p *publisher) put(ctx context.Context, name string, secret bool, data map[string][]byte, exists bool) error {
	if secret {
		object := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: routesNamespace, Labels: map[string]string{routes.LabelKeys: "true"}},
			Data: data}
		secrets := p.clientset.CoreV1().Secrets(routesNamespace)
		if exists {
			_, err := secrets.Update(ctx, object, metav1.UpdateOptions{})
			return err
		}
		_, err := secrets.Create(ctx, object, metav1.CreateOptions{})
		return err
	}
	strings := make(map[string]string, len(data))
	for key, value := range data {
		strings[key] = string(value)
	}
	object := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: routesNamespace, Labels: map[string]string{routes.LabelRoutes: "true"}},
		Data: strings}
	configMaps := p.clientset.CoreV1().ConfigMaps(routesNamespace)
	if exists {
		_, err := configMaps.Update(ctx, object, metav1.UpdateOptions{})
		return err
	}
	_, err := configMaps.Create(ctx, object, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("%w: the routes namespace must start empty", err)
	}
	return err
}
