package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/hookrelay/hookrelay/internal/routes"
)

// shardWrites sums what is written to the routes ConfigMaps and keys
// Secrets, as seen by watching them.
type shardWrites struct {
	mu        sync.Mutex
	bytes     int64
	writes    int
	lastWrite time.Time
}

// written is a copy of the sums at one time.
type written struct {
	bytes     int64
	writes    int
	lastWrite time.Time
}

func (s *shardWrites) snapshot() written {
	s.mu.Lock()
	defer s.mu.Unlock()
	return written{bytes: s.bytes, writes: s.writes, lastWrite: s.lastWrite}
}

func (s *shardWrites) add(size int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bytes += int64(size)
	s.writes++
	s.lastWrite = time.Now()
}

// watchShards watches both kinds of shard until ctx ends, adding the data
// size of each object added or modified.
func watchShards(ctx context.Context, config *rest.Config) (*shardWrites, error) {
	clientset, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	s := &shardWrites{}
	configMaps := clientset.CoreV1().ConfigMaps(routesNamespace)
	secrets := clientset.CoreV1().Secrets(routesNamespace)
	watches := []struct {
		label string
		list  func(context.Context, metav1.ListOptions) (runtime.Object, error)
		watch func(context.Context, metav1.ListOptions) (watch.Interface, error)
	}{
		{routes.LabelRoutes,
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return configMaps.List(ctx, o)
			},
			configMaps.Watch},
		{routes.LabelKeys,
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return secrets.List(ctx, o) },
			secrets.Watch},
	}
	for _, w := range watches {
		selector := metav1.ListOptions{LabelSelector: w.label}
		listed, err := w.list(ctx, selector)
		if err != nil {
			return nil, err
		}
		version, err := listVersion(listed)
		if err != nil {
			return nil, err
		}
		watcher, err := watchtools.NewRetryWatcherWithContext(ctx, version, &cache.ListWatch{
			WatchFuncWithContext: func(ctx context.Context, options metav1.ListOptions) (watch.Interface, error) {
				options.LabelSelector = w.label
				return w.watch(ctx, options)
			},
		})
		if err != nil {
			return nil, err
		}
		go s.consume(ctx, watcher)
	}
	return s, nil
}

func listVersion(list runtime.Object) (string, error) {
	accessor, ok := list.(metav1.ListInterface)
	if !ok {
		return "", fmt.Errorf("%T is not a list", list)
	}
	return accessor.GetResourceVersion(), nil
}

func (s *shardWrites) consume(ctx context.Context, watcher *watchtools.RetryWatcher) {
	defer watcher.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case event, ok := <-watcher.ResultChan():
			if !ok {
				return
			}
			switch event.Type {
			case watch.Added, watch.Modified:
				s.add(dataSize(event.Object))
			case watch.Error:
				fmt.Fprintf(os.Stderr, "scale: watching the shards: %v\n", event.Object)
			}
		}
	}
}

// dataSize is the bytes of an object's data, keys and values.
func dataSize(obj runtime.Object) int {
	size := 0
	switch obj := obj.(type) {
	case *corev1.ConfigMap:
		for key, value := range obj.Data {
			size += len(key) + len(value)
		}
	case *corev1.Secret:
		for key, value := range obj.Data {
			size += len(key) + len(value)
		}
	}
	return size
}

// shardVersions lists the resourceVersion of each routes and keys object, by kind and name.
func shardVersions(ctx context.Context, config *rest.Config) (map[string]string, error) {
	clientset, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	versions := map[string]string{}
	configMaps, err := clientset.CoreV1().ConfigMaps(routesNamespace).List(ctx, metav1.ListOptions{LabelSelector: routes.LabelRoutes})
	if err != nil {
		return nil, err
	}
	for _, item := range configMaps.Items {
		versions["ConfigMap/"+item.Name] = item.ResourceVersion
	}
	secrets, err := clientset.CoreV1().Secrets(routesNamespace).List(ctx, metav1.ListOptions{LabelSelector: routes.LabelKeys})
	if err != nil {
		return nil, err
	}
	for _, item := range secrets.Items {
		versions["Secret/"+item.Name] = item.ResourceVersion
	}
	return versions, nil
}
