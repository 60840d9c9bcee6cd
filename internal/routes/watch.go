// Watcher is the dispatcher's side of the contract: it watches the routes
// ConfigMaps and keys Secrets in the dispatcher's own namespace and rebuilds
// the routing table whenever they change.

package routes

import (
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
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
	routeShards shardCache[string, decodedRoute]
	keyShards   shardCache[[]byte, decodedKeys]
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
	routeEntries := w.routeShards.sync(configMaps, func(obj any) map[string]string { return obj.(*corev1.ConfigMap).Data },
		maphash.String, func(entry, data string) decodedRoute { return decodeRoute(entry, []byte(data)) })
	keyEntries := w.keyShards.sync(secrets, func(obj any) map[string][]byte { return obj.(*corev1.Secret).Data },
		maphash.Bytes, decodeKeysEntry)
	return assemble(routeEntries, keyEntries)
}

// shardCache holds the decoded entries of each shard object of one kind, by
// UID, as of the resourceVersion they were decoded at, each with a hash of
// its encoded value.
type shardCache[R string | []byte, T any] struct {
	seed   maphash.Seed
	shards map[types.UID]*decodedShard[T]
	// decodes counts the shards read again, entryDecodes the entries
	// decoded, for tests.
	decodes, entryDecodes int
}

type decodedShard[T any] struct {
	name, resourceVersion string
	entries               map[string]decodedEntry[T]
}

type decodedEntry[T any] struct {
	hash  uint64
	value T
}

// sync reads the objects new or changed since the last call, forgets the
// deleted ones, and returns every entry. In a shard read again, only the
// entries whose encoded value is new are decoded: a compile under a burst
// rewrites every shard to add a few endpoints to each, and a shard split
// moves entries unchanged. An entry briefly in two shards (while they are
// rewritten) resolves to the shard last by name, the same way every time.
func (c *shardCache[R, T]) sync(objects []any, data func(any) map[string]R, hash func(maphash.Seed, R) uint64,
	decode func(entry string, data R) T) map[string]T {
	if c.shards == nil {
		c.seed = maphash.MakeSeed()
	}
	previous := c.shards
	c.shards = make(map[types.UID]*decodedShard[T], len(objects))
	var known map[string]decodedEntry[T] // previous entries by key, made when a shard is read
	total := 0
	for _, obj := range objects {
		meta := obj.(metav1.Object)
		shard, ok := previous[meta.GetUID()]
		if !ok || shard.resourceVersion != meta.GetResourceVersion() {
			if known == nil {
				known = map[string]decodedEntry[T]{}
				for _, old := range previous {
					maps.Copy(known, old.entries)
				}
			}
			raw := data(obj)
			shard = &decodedShard[T]{name: meta.GetName(), resourceVersion: meta.GetResourceVersion(), entries: make(map[string]decodedEntry[T], len(raw))}
			for entry, value := range raw {
				h := hash(c.seed, value)
				if old, ok := known[entry]; ok && old.hash == h {
					shard.entries[entry] = old
					continue
				}
				shard.entries[entry] = decodedEntry[T]{hash: h, value: decode(entry, value)}
				c.entryDecodes++
			}
			c.decodes++
		}
		c.shards[meta.GetUID()] = shard
		total += len(shard.entries)
	}
	shards := slices.SortedFunc(maps.Values(c.shards), func(a, b *decodedShard[T]) int { return cmp.Compare(a.name, b.name) })
	entries := make(map[string]T, total)
	for _, shard := range shards {
		for entry, decoded := range shard.entries {
			entries[entry] = decoded.value
		}
	}
	return entries
}
