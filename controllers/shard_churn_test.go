package controllers

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

// TestEditingOneOfManyEndpointsRewritesOneShard: with 2,000 endpoints
// published over many shards, editing one rewrites one routes ConfigMap and
// at most one keys Secret; every other shard keeps its resourceVersion.
func TestEditingOneOfManyEndpointsRewritesOneShard(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	// Small shards, so that 2,000 endpoints need many of each kind.
	const shardSize, count = 64 << 10, 2000
	routesNamespace, _ := startManager(t, Options{ShardSize: shardSize})
	// Admission is tested elsewhere; here it would only slow the creates.
	namespace := env.NamespaceWithoutAdmission(t)

	// One signing Secret brought for all, so that publishing does not wait
	// for 2,000 generated ones.
	g.Expect(env.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "shared",
			Labels: map[string]string{hookrelayv1alpha1.LabelEndpointSecret: "true"}},
		Data: map[string][]byte{SecretKey: []byte(whsec.Encode(bytes.Repeat([]byte{7}, 32)))},
	})).To(Succeed())
	start := time.Now()
	createInParallel(t, count, func(i int) client.Object {
		endpoint := newEndpoint(namespace, fmt.Sprintf("endpoint-%04d", i))
		endpoint.Spec.SecretRef = &hookrelayv1alpha1.SecretReference{Name: "shared"}
		return endpoint
	})
	t.Logf("created %d endpoints in %v", count, time.Since(start))
	g.Eventually(func(g Gomega) {
		published, keys := publishedRoutes(g, routesNamespace)
		g.Expect(published).To(HaveLen(count))
		g.Expect(keys).To(HaveLen(count))
	}).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
	t.Logf("published %d endpoints %v after the first create", count, time.Since(start))
	routesBefore, keysBefore := shardVersions(g, routesNamespace)
	g.Expect(len(routesBefore)).To(BeNumerically(">=", 8), "routes spread over many ConfigMaps")
	g.Expect(len(keysBefore)).To(BeNumerically(">=", 4), "keys spread over many Secrets")

	endpoint := newEndpoint(namespace, "endpoint-1234")
	endpoint.Spec.SecretRef = &hookrelayv1alpha1.SecretReference{Name: "shared"}
	edited := endpoint.DeepCopy()
	// Longer by more than any endpoint's entry: in a shard packed full, it
	// pushes another entry out.
	edited.Spec.URL = "https://receiver.example/edited"
	edited.Spec.Headers = []hookrelayv1alpha1.Header{{Name: "X-Tenant-Context", Value: strings.Repeat("x", 1000)}}
	g.Expect(env.Client.Patch(ctx, edited, client.MergeFrom(endpoint))).To(Succeed())
	entry := routes.EntryKey(namespace, endpoint.Name)
	edit := time.Now()
	g.Eventually(func(g Gomega) string {
		published, _ := publishedRoutes(g, routesNamespace)
		return published[entry].URL
	}).WithTimeout(30 * time.Second).Should(Equal(edited.Spec.URL))
	t.Logf("edit published %v after it was made", time.Since(edit))

	routesAfter, keysAfter := shardVersions(g, routesNamespace)
	g.Expect(changedVersions(routesBefore, routesAfter)).To(HaveLen(1), "routes ConfigMaps rewritten")
	g.Expect(len(changedVersions(keysBefore, keysAfter))).To(BeNumerically("<=", 1), "keys Secrets rewritten")
}

// createInParallel creates count objects through the API, a few at a time.
func createInParallel(t *testing.T, count int, object func(i int) client.Object) {
	t.Helper()
	const workers = 32
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := env.Client.Create(context.Background(), object(i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	func() {
		defer close(next)
		for i := range count {
			select {
			case next <- i:
			case err := <-errs:
				t.Fatalf("creating object %d: %v", i, err)
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// shardVersions reads the resourceVersion of every routes ConfigMap and keys
// Secret in namespace, by name.
func shardVersions(g Gomega, namespace string) (routeShards, keyShards map[string]string) {
	var configMaps corev1.ConfigMapList
	g.Expect(env.Client.List(context.Background(), &configMaps, client.InNamespace(namespace), client.HasLabels{routes.LabelRoutes})).To(Succeed())
	var secrets corev1.SecretList
	g.Expect(env.Client.List(context.Background(), &secrets, client.InNamespace(namespace), client.HasLabels{routes.LabelKeys})).To(Succeed())
	versions := func(objs []client.Object) map[string]string {
		out := map[string]string{}
		for _, obj := range objs {
			out[obj.GetName()] = obj.GetResourceVersion()
		}
		return out
	}
	return versions(objects(configMaps.Items)), versions(objects(secrets.Items))
}

// changedVersions names the shards created, rewritten or deleted between two
// readings.
func changedVersions(before, after map[string]string) []string {
	var changed []string
	for name, version := range after {
		if before[name] != version {
			changed = append(changed, name)
		}
	}
	for name := range before {
		if _, ok := after[name]; !ok {
			changed = append(changed, name)
		}
	}
	return changed
}
