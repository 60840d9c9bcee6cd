package routes

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestWatcherDecodesOnlyChangedShards: a rebuild reads the shards whose
// resourceVersion changed and those added, decodes only their entries whose
// value is new (not those unchanged, nor those moved from another shard),
// drops the deleted shards, and reuses the rest; the table follows every
// change.
func TestWatcherDecodesOnlyChangedShards(t *testing.T) {
	keys := []Key{{Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}
	routeShard := func(index int, version string, urls map[string]string) *corev1.ConfigMap {
		data := map[string]string{}
		for name, url := range urls {
			encoded, err := EncodeEndpoint(Endpoint{Namespace: "ns", Name: name, URL: url, KeysVersion: KeysVersion(keys),
				Subscriptions: []Subscription{{Name: "all", EventTypes: []string{"*"}, Filter: `event.type != ""`}}})
			if err != nil {
				t.Fatal(err)
			}
			data[EntryKey("ns", name)] = string(encoded)
		}
		return &corev1.ConfigMap{ObjectMeta: shardObjectMeta(RoutesShardPrefix, index, version), Data: data}
	}
	keyShard := func(index int, version string, names ...string) *corev1.Secret {
		data := map[string][]byte{}
		for _, name := range names {
			encoded, err := EncodeKeys(KeysEntry{Keys: keys})
			if err != nil {
				t.Fatal(err)
			}
			data[EntryKey("ns", name)] = encoded
		}
		return &corev1.Secret{ObjectMeta: shardObjectMeta(KeysShardPrefix, index, version), Data: data}
	}
	w := &Watcher{}
	build := func(configMaps []*corev1.ConfigMap, secrets []*corev1.Secret, wantRouteDecodes, wantKeyDecodes, wantEntryDecodes int, wantURLs map[string]string) {
		t.Helper()
		routeDecodes, keyDecodes, entryDecodes := w.routeShards.decodes, w.keyShards.decodes, w.routeShards.entryDecodes
		table, problems := w.build(anys(configMaps), anys(secrets))
		if len(problems) != 0 {
			t.Fatal(problems)
		}
		if got := w.routeShards.decodes - routeDecodes; got != wantRouteDecodes {
			t.Errorf("decoded %d routes shards, want %d", got, wantRouteDecodes)
		}
		if got := w.keyShards.decodes - keyDecodes; got != wantKeyDecodes {
			t.Errorf("decoded %d keys shards, want %d", got, wantKeyDecodes)
		}
		if got := w.routeShards.entryDecodes - entryDecodes; got != wantEntryDecodes {
			t.Errorf("decoded %d routes, want %d", got, wantEntryDecodes)
		}
		urls := map[string]string{}
		for _, route := range table.Endpoints() {
			if len(route.Keys) != 1 || route.Keys[0].Secret != keys[0].Secret {
				t.Errorf("%s signs with %v", route.ID, route.Keys)
			}
			urls[route.Name] = route.URL
		}
		if fmt.Sprint(urls) != fmt.Sprint(wantURLs) {
			t.Errorf("table routes %v, want %v", urls, wantURLs)
		}
	}

	routes0 := routeShard(0, "1", map[string]string{"a": "https://a.example/1", "b": "https://b.example/1"})
	routes1 := routeShard(1, "1", map[string]string{"c": "https://c.example/1"})
	keys0 := keyShard(0, "1", "a", "b", "c", "d")
	build([]*corev1.ConfigMap{routes0, routes1}, []*corev1.Secret{keys0}, 2, 1, 3,
		map[string]string{"a": "https://a.example/1", "b": "https://b.example/1", "c": "https://c.example/1"})
	build([]*corev1.ConfigMap{routes0, routes1}, []*corev1.Secret{keys0}, 0, 0, 0,
		map[string]string{"a": "https://a.example/1", "b": "https://b.example/1", "c": "https://c.example/1"})

	// Change: only the rewritten shard is read.
	routes1 = routeShard(1, "2", map[string]string{"c": "https://c.example/2"})
	build([]*corev1.ConfigMap{routes0, routes1}, []*corev1.Secret{keys0}, 1, 0, 1,
		map[string]string{"a": "https://a.example/1", "b": "https://b.example/1", "c": "https://c.example/2"})

	// A rewritten shard with one entry changed: only that entry is decoded.
	routes0 = routeShard(0, "2", map[string]string{"a": "https://a.example/1", "b": "https://b.example/2"})
	build([]*corev1.ConfigMap{routes0, routes1}, []*corev1.Secret{keys0}, 1, 0, 1,
		map[string]string{"a": "https://a.example/1", "b": "https://b.example/2", "c": "https://c.example/2"})

	// Add a shard.
	routes2 := routeShard(2, "1", map[string]string{"d": "https://d.example/1"})
	build([]*corev1.ConfigMap{routes0, routes1, routes2}, []*corev1.Secret{keys0}, 1, 0, 1,
		map[string]string{"a": "https://a.example/1", "b": "https://b.example/2", "c": "https://c.example/2", "d": "https://d.example/1"})

	// An entry that moves to another shard, unchanged (a split): nothing
	// is decoded.
	routes0 = routeShard(0, "3", map[string]string{"a": "https://a.example/1", "b": "https://b.example/2", "d": "https://d.example/1"})
	routes2 = routeShard(2, "2", map[string]string{})
	build([]*corev1.ConfigMap{routes0, routes1, routes2}, []*corev1.Secret{keys0}, 2, 0, 0,
		map[string]string{"a": "https://a.example/1", "b": "https://b.example/2", "c": "https://c.example/2", "d": "https://d.example/1"})

	// Delete one: its routes leave the table, nothing is decoded.
	build([]*corev1.ConfigMap{routes1, routes2}, []*corev1.Secret{keys0}, 0, 0, 0,
		map[string]string{"c": "https://c.example/2"})

	// Deleted and created again under the same name: a new UID is read
	// even at a resourceVersion seen before.
	recreated := routeShard(1, "2", map[string]string{"c": "https://c.example/3"})
	recreated.UID = "recreated"
	build([]*corev1.ConfigMap{recreated, routes2}, []*corev1.Secret{keys0}, 1, 0, 1,
		map[string]string{"c": "https://c.example/3"})
}

// shardObjectMeta names a shard; its UID follows from the name.
func shardObjectMeta(prefix string, index int, version string) metav1.ObjectMeta {
	name := ShardName(prefix, index)
	return metav1.ObjectMeta{Name: name, Namespace: "hookrelay-system", UID: types.UID("uid-" + name), ResourceVersion: version}
}

func anys[T any](items []T) []any {
	out := make([]any, len(items))
	for i, item := range items {
		out[i] = item
	}
	return out
}
