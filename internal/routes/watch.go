// Watcher is the dispatcher's side of the contract: it watches the routes
// ConfigMaps and keys Secrets in the dispatcher's own namespace and rebuilds
// the routing table whenever they change.

package routes

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Watcher keeps a routing table in step with the published configuration.
type Watcher struct {
	Clientset kubernetes.Interface
	Namespace string
	Log       logr.Logger
	// Apply receives each new table, in order.
	Apply func(context.Context, *Table) error

	configMaps cache.SharedIndexInformer
	secrets    cache.SharedIndexInformer
	changed    chan struct{}
	// The decoded shards, kept between rebuilds so that a change decodes
	// only the shards it touched. Used by one goroutine at a time: Start,
	// then loop.
	routeShards shardCache[decodedRoute]
	keyShards   shardCache[decodedKeys]
}

// Start starts the informers, waits for them to sync, applies the first
// table, and keeps applying new ones until ctx ends.
func (w *Watcher) Start(ctx context.Context) error {
	w.changed = make(chan struct{}, 1)
	w.configMaps = w.informer(LabelRoutes).Core().V1().ConfigMaps().Informer()
	w.secrets = w.informer(LabelKeys).Core().V1().Secrets().Informer()
	notify := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.notify() },
		UpdateFunc: func(any, any) { w.notify() },
		DeleteFunc: func(any) { w.notify() },
	}
	for _, informer := range []cache.SharedIndexInformer{w.configMaps, w.secrets} {
		if _, err := informer.AddEventHandler(notify); err != nil {
			return err
		}
		go informer.Run(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), w.configMaps.HasSynced, w.secrets.HasSynced) {
		return fmt.Errorf("config: the routes and keys caches did not sync: %w", ctx.Err())
	}
	select { // the initial list is applied below
	case <-w.changed:
	default:
	}
	if err := w.rebuild(ctx); err != nil {
		return err
	}
	go w.loop(ctx)
	return nil
}

func (w *Watcher) informer(label string) informers.SharedInformerFactory {
	return informers.NewSharedInformerFactoryWithOptions(w.Clientset, 0,
		informers.WithNamespace(w.Namespace),
		informers.WithTweakListOptions(func(options *metav1.ListOptions) { options.LabelSelector = label }))
}

func (w *Watcher) notify() {
	select {
	case w.changed <- struct{}{}:
	default: // a rebuild is already due; it will see this change too
	}
}

func (w *Watcher) loop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.changed:
			if err := w.rebuild(ctx); err != nil {
				w.Log.Error(err, "applying the routing table")
			}
		}
	}
}

// rebuild reads the shards from the caches and applies a new table.
func (w *Watcher) rebuild(ctx context.Context) error {
	table, problems := w.build(w.configMaps.GetStore().List(), w.secrets.GetStore().List())
	for _, problem := range problems {
		// Mostly transient: a route whose keys are still on their way.
		w.Log.Info("route left out", "problem", problem.Error())
	}
	w.Log.V(1).Info("routing table", "endpoints", len(table.Endpoints()))
	return w.Apply(ctx, table)
}

// build makes a table of the given routes ConfigMaps and keys Secrets,
// decoding only the shards that changed since the previous build.
func (w *Watcher) build(configMaps, secrets []any) (*Table, []error) {
	routeEntries := w.routeShards.sync(configMaps, func(obj any) map[string][]byte {
		data := obj.(*corev1.ConfigMap).Data
		out := make(map[string][]byte, len(data))
		for k, v := range data {
			out[k] = []byte(v)
		}
		return out
	}, decodeRoute)
	keyEntries := w.keyShards.sync(secrets, func(obj any) map[string][]byte { return obj.(*corev1.Secret).Data }, decodeKeysEntry)
	return assemble(routeEntries, keyEntries)
}

// shardCache holds the decoded entries of each shard object of one kind, by
// UID, as of the resourceVersion they were decoded at.
type shardCache[T any] struct {
	shards map[types.UID]*decodedShard[T]
	// decodes counts the shards decoded, for tests.
	decodes int
}

type decodedShard[T any] struct {
	name, resourceVersion string
	entries               map[string]T
}

// sync decodes the objects new or changed since the last call, forgets the
// deleted ones, and returns every entry. An entry briefly in two shards
// (while they are rewritten) resolves to the shard last by name, the same
// way every time.
func (c *shardCache[T]) sync(objects []any, data func(any) map[string][]byte, decode func(entry string, data []byte) T) map[string]T {
	previous := c.shards
	c.shards = make(map[types.UID]*decodedShard[T], len(objects))
	total := 0
	for _, obj := range objects {
		meta := obj.(metav1.Object)
		shard, ok := previous[meta.GetUID()]
		if !ok || shard.resourceVersion != meta.GetResourceVersion() {
			shard = &decodedShard[T]{name: meta.GetName(), resourceVersion: meta.GetResourceVersion(), entries: map[string]T{}}
			for entry, value := range data(obj) {
				shard.entries[entry] = decode(entry, value)
			}
			c.decodes++
		}
		c.shards[meta.GetUID()] = shard
		total += len(shard.entries)
	}
	shards := slices.SortedFunc(maps.Values(c.shards), func(a, b *decodedShard[T]) int { return cmp.Compare(a.name, b.name) })
	entries := make(map[string]T, total)
	for _, shard := range shards {
		maps.Copy(entries, shard.entries)
	}
	return entries
}
