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

// rebuild reads every shard from the caches and applies a new table.
func (w *Watcher) rebuild(ctx context.Context) error {
	routeEntries, keyEntries := map[string][]byte{}, map[string][]byte{}
	for _, obj := range sorted(w.configMaps.GetStore().List()) {
		for key, value := range obj.(*corev1.ConfigMap).Data {
			routeEntries[key] = []byte(value)
		}
	}
	for _, obj := range sorted(w.secrets.GetStore().List()) {
		maps.Copy(keyEntries, obj.(*corev1.Secret).Data)
	}
	table, problems := Build(routeEntries, keyEntries)
	for _, problem := range problems {
		// Mostly transient: a route whose keys are still on their way.
		w.Log.Info("route left out", "problem", problem.Error())
	}
	w.Log.V(1).Info("routing table", "endpoints", len(table.Endpoints()))
	return w.Apply(ctx, table)
}

// sorted orders shards by name, so an endpoint briefly in two shards (while
// they are rewritten) resolves the same way every time.
func sorted(objects []any) []metav1.Object {
	out := make([]metav1.Object, 0, len(objects))
	for _, obj := range objects {
		out = append(out, obj.(metav1.Object))
	}
	slices.SortFunc(out, func(a, b metav1.Object) int { return cmp.Compare(a.GetName(), b.GetName()) })
	return out
}
