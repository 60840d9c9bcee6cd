package controllers

import (
	"context"
	"maps"
	"reflect"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

// TestCacheKeepsNoManagedFields: the manager's cache drops managedFields,
// which with a status applied to every endpoint and subscription would be a
// good part of its memory at size.
func TestCacheKeepsNoManagedFields(t *testing.T) {
	transform := CacheOptions("hookrelay-system").DefaultTransform
	if transform == nil {
		t.Fatal("CacheOptions sets no DefaultTransform: cached objects keep their managedFields")
	}
	endpoint := newEndpoint("tenant", "palm")
	endpoint.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: FieldOwner, Operation: metav1.ManagedFieldsOperationApply}}
	out, err := transform(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	if fields := out.(*hookrelayv1alpha1.WebhookEndpoint).ManagedFields; len(fields) != 0 {
		t.Errorf("the cache keeps managedFields %v", fields)
	}
}

// TestUnlabelledGeneratedSecretIsAdopted: a generated Secret that exists
// but that the cache cannot hold (made before the cache was restricted to
// labelled Secrets) keeps its key: creating one fails, and the controller
// reads it from the API server and labels it.
func TestUnlabelledGeneratedSecretIsAdopted(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	namespace := env.Namespace(t)
	endpoint := newEndpoint(namespace, "palm")
	g.Expect(env.Client.Create(ctx, endpoint)).To(Succeed())
	value, err := whsec.New()
	g.Expect(err).NotTo(HaveOccurred())
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: whsec.GeneratedSecretName(endpoint.Name),
			Labels: map[string]string{LabelEndpoint: endpoint.Name, labelManagedBy: managedBy}},
		Data: map[string][]byte{SecretKey: []byte(value)},
	}
	g.Expect(controllerutil.SetControllerReference(endpoint, secret, env.Scheme)).To(Succeed())
	g.Expect(env.Client.Create(ctx, secret)).To(Succeed())

	startManager(t, Options{})
	eventuallyReady(t, endpoint, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: secret.Name}, secret)).To(Succeed())
		g.Expect(secret.Labels).To(HaveKeyWithValue(hookrelayv1alpha1.LabelEndpointSecret, "true"))
	}).WithTimeout(20 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	g.Expect(string(secret.Data[SecretKey])).To(Equal(value), "the existing key was replaced")
}

// TestCacheKeepsNoLastAppliedSpec: the cached endpoints and subscriptions
// drop the spec copy that a client-side `kubectl apply` leaves in an
// annotation, and their managedFields, and keep their other annotations.
func TestCacheKeepsNoLastAppliedSpec(t *testing.T) {
	options := CacheOptions("hookrelay-system")
	for _, obj := range []client.Object{newEndpoint("tenant", "palm"), &hookrelayv1alpha1.WebhookSubscription{}} {
		transform := options.ByObject[reflectedKey(options, obj)].Transform
		if transform == nil {
			t.Fatalf("%T: no transform", obj)
		}
		obj.SetAnnotations(map[string]string{corev1.LastAppliedConfigAnnotation: `{"spec":{}}`, hookrelayv1alpha1.AnnotationRotateSecret: "now"})
		obj.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: FieldOwner, Operation: metav1.ManagedFieldsOperationApply}})
		out, err := transform(obj)
		if err != nil {
			t.Fatal(err)
		}
		cached := out.(client.Object)
		if want := map[string]string{hookrelayv1alpha1.AnnotationRotateSecret: "now"}; !maps.Equal(cached.GetAnnotations(), want) {
			t.Errorf("%T: cached annotations %v, want %v", obj, cached.GetAnnotations(), want)
		}
		if len(cached.GetManagedFields()) != 0 {
			t.Errorf("%T: the cache keeps managedFields", obj)
		}
	}
}

// reflectedKey finds the ByObject key of obj's type.
func reflectedKey(options cache.Options, obj client.Object) client.Object {
	for key := range options.ByObject {
		if reflect.TypeOf(key) == reflect.TypeOf(obj) {
			return key
		}
	}
	return nil
}
