package controllers

import (
	"context"
	"strings"
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

// TestOversizedEndpointIsLeftOutAlone: an endpoint whose route does not fit
// a shard is reported RouteTooLarge, and every other endpoint is published.
func TestOversizedEndpointIsLeftOutAlone(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	const shardSize = 8 << 10
	routesNamespace, _ := startManager(t, Options{ShardSize: shardSize})
	namespaceA, namespaceB := env.Namespace(t), env.Namespace(t)

	// Within the admission bounds, over this manager's small shard.
	oversized := newEndpoint(namespaceB, "oversized")
	for _, name := range []string{"X-One", "X-Two", "X-Three"} {
		oversized.Spec.Headers = append(oversized.Spec.Headers, hookrelayv1alpha1.Header{Name: name, Value: strings.Repeat("<", 4000)})
	}
	g.Expect(env.Client.Create(ctx, oversized)).To(Succeed())
	condition := eventuallyReady(t, oversized, metav1.ConditionFalse, hookrelayv1alpha1.ReasonRouteTooLarge)
	g.Expect(condition.Message).To(MatchRegexp(`compiled route is \d+ bytes, over the limit of %d bytes`, shardSize-2048))

	small := newEndpoint(namespaceA, "small")
	g.Expect(env.Client.Create(ctx, small)).To(Succeed())
	eventuallyReady(t, small, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)
	published, keys := publishedRoutes(g, routesNamespace)
	g.Expect(published).To(HaveKey(routes.EntryKey(namespaceA, "small")))
	g.Expect(published).NotTo(HaveKey(routes.EntryKey(namespaceB, "oversized")))
	g.Expect(keys).NotTo(HaveKey(routes.EntryKey(namespaceB, "oversized")))

	// Made small enough, it is published.
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(oversized), oversized)).To(Succeed())
	oversized.Spec.Headers = oversized.Spec.Headers[:1]
	oversized.Spec.Headers[0].Value = "short"
	g.Expect(env.Client.Update(ctx, oversized)).To(Succeed())
	eventuallyReady(t, oversized, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)
}

// TestMaximalEndpointFitsTheDefaultShard: the admission bounds keep the
// largest endpoint spec (before subscriptions) under the default shard size,
// with every character escaped twice (JSON in a JSON-encoded ConfigMap).
func TestMaximalEndpointFitsTheDefaultShard(t *testing.T) {
	endpoint := newEndpoint(strings.Repeat("n", 63), strings.Repeat("e", 253))
	endpoint.Spec.URL = "https://" + strings.Repeat("\u2028", 2040)
	endpoint.Spec.Payload = &hookrelayv1alpha1.PayloadSpec{Transform: strings.Repeat("<", 8192)}
	remaining := 16384
	for i := range 32 {
		name := strings.Repeat("h", 125) + string(rune('A'+i/26)) + string(rune('a'+i%26))
		value := strings.Repeat("<", min(4096, max(remaining-len(name), 0)))
		remaining -= len(name) + len(value)
		endpoint.Spec.Headers = append(endpoint.Spec.Headers, hookrelayv1alpha1.Header{Name: name, Value: value})
	}
	for range 32 {
		endpoint.Spec.SuccessStatusCodes = append(endpoint.Spec.SuccessStatusCodes, 200)
	}
	endpoint.Spec.Retry = &hookrelayv1alpha1.RetryPolicy{}
	for range 20 {
		endpoint.Spec.Retry.Schedule = append(endpoint.Spec.Retry.Schedule, metav1.Duration{Duration: 1234567 * time.Hour})
	}
	encoded, err := routes.EncodeEndpoint(compileRoute(endpoint, []routes.Key{{Secret: whsec.Encode(make([]byte, 33))}}, nil))
	if err != nil {
		t.Fatal(err)
	}
	size := routes.ConfigMapEntrySize(routes.EntryKey(endpoint.Namespace, endpoint.Name), encoded)
	if budget := routes.EntryBudget(DefaultShardSize); size > budget/2 {
		t.Fatalf("a maximal endpoint takes %d bytes; want at most half of one endpoint's budget of %d bytes, the rest for subscriptions", size, budget)
	}
}

// TestSecretRefCannotNameAnotherEndpointsSecret: an endpoint cannot sign
// with another endpoint's generated key, nor with an unlabelled Secret.
func TestSecretRefCannotNameAnotherEndpointsSecret(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	routesNamespace, _ := startManager(t, Options{})
	namespace := env.Namespace(t)

	victim := newEndpoint(namespace, "victim")
	g.Expect(env.Client.Create(ctx, victim)).To(Succeed())
	eventuallyReady(t, victim, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)
	victimKey := string(signingSecret(g, victim).Data[SecretKey])

	thief := newEndpoint(namespace, "thief")
	thief.Spec.SecretRef = &hookrelayv1alpha1.SecretReference{Name: whsec.GeneratedSecretName("victim")}
	g.Expect(env.Client.Create(ctx, thief)).To(Succeed())
	condition := eventuallyReady(t, thief, metav1.ConditionFalse, hookrelayv1alpha1.ReasonSecretInvalid)
	g.Expect(condition.Message).To(ContainSubstring(`generated signing Secret of WebhookEndpoint "victim"`))
	g.Expect(condition.Message).NotTo(ContainSubstring(victimKey))

	// A header cannot carry it either.
	leaker := newEndpoint(namespace, "leaker")
	leaker.Spec.Headers = []hookrelayv1alpha1.Header{{Name: "X-Key", ValueFrom: &hookrelayv1alpha1.HeaderValueSource{
		SecretKeyRef: hookrelayv1alpha1.SecretKeySelector{Name: whsec.GeneratedSecretName("victim"), Key: SecretKey}}}}
	g.Expect(env.Client.Create(ctx, leaker)).To(Succeed())
	condition = eventuallyReady(t, leaker, metav1.ConditionFalse, hookrelayv1alpha1.ReasonSecretInvalid)
	g.Expect(condition.Message).To(ContainSubstring("spec.headers[X-Key].valueFrom.secretKeyRef"))

	// An unlabelled bring-your-own Secret is refused, naming the label.
	value := whsec.Encode([]byte("0123456789abcdef0123456789abcdef"))
	own := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "own"}, Data: map[string][]byte{SecretKey: []byte(value)}}
	g.Expect(env.Client.Create(ctx, own)).To(Succeed())
	byo := newEndpoint(namespace, "byo")
	byo.Spec.SecretRef = &hookrelayv1alpha1.SecretReference{Name: "own"}
	g.Expect(env.Client.Create(ctx, byo)).To(Succeed())
	condition = eventuallyReady(t, byo, metav1.ConditionFalse, hookrelayv1alpha1.ReasonSecretInvalid)
	g.Expect(condition.Message).To(ContainSubstring(hookrelayv1alpha1.LabelEndpointSecret + "=true"))

	// Labelled, it signs.
	own.Labels = map[string]string{hookrelayv1alpha1.LabelEndpointSecret: "true"}
	g.Expect(env.Client.Update(ctx, own)).To(Succeed())
	eventuallyReady(t, byo, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)

	published, keys := publishedRoutes(g, routesNamespace)
	for _, name := range []string{"thief", "leaker"} {
		g.Expect(published).NotTo(HaveKey(routes.EntryKey(namespace, name)))
		g.Expect(keys).NotTo(HaveKey(routes.EntryKey(namespace, name)))
	}
	for entry, keysEntry := range keys {
		if entry == routes.EntryKey(namespace, "victim") {
			continue
		}
		for _, key := range keysEntry.Keys {
			g.Expect(key.Secret).NotTo(Equal(victimKey), "entry %s signs with the victim's key", entry)
		}
		for _, header := range keysEntry.Headers {
			g.Expect(header).NotTo(Equal(victimKey), "entry %s sends the victim's key", entry)
		}
	}
}

// TestHeaderValuesFromSecrets: a header value from a labelled Secret is
// published in the keys Secrets only, never in a routes ConfigMap.
func TestHeaderValuesFromSecrets(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	routesNamespace, _ := startManager(t, Options{})
	namespace := env.Namespace(t)
	const token = "Bearer tok-3f9c2e7a51"

	endpoint := newEndpoint(namespace, "authorized")
	endpoint.Spec.Headers = []hookrelayv1alpha1.Header{
		{Name: "X-Team", Value: "income"},
		{Name: "Authorization", ValueFrom: &hookrelayv1alpha1.HeaderValueSource{
			SecretKeyRef: hookrelayv1alpha1.SecretKeySelector{Name: "receiver-token", Key: "token"}}},
	}
	g.Expect(env.Client.Create(ctx, endpoint)).To(Succeed())
	condition := eventuallyReady(t, endpoint, metav1.ConditionFalse, hookrelayv1alpha1.ReasonSecretInvalid)
	g.Expect(condition.Message).To(ContainSubstring(`spec.headers[Authorization].valueFrom.secretKeyRef: Secret "receiver-token" not found`))

	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "receiver-token",
			Labels: map[string]string{hookrelayv1alpha1.LabelEndpointSecret: "true"}},
		Data: map[string][]byte{"token": []byte("line\r\nX-Injected: 1")},
	}
	g.Expect(env.Client.Create(ctx, secret)).To(Succeed())
	g.Eventually(func(g Gomega) {
		condition := readyOf(g, endpoint)
		g.Expect(condition.Message).To(ContainSubstring("is not a valid header value"))
		g.Expect(condition.Message).NotTo(ContainSubstring("Injected"))
	}).WithTimeout(20 * time.Second).Should(Succeed())

	secret.Data["token"] = []byte(token)
	g.Expect(env.Client.Update(ctx, secret)).To(Succeed())
	eventuallyReady(t, endpoint, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)
	entry := routes.EntryKey(namespace, "authorized")
	published, keys := publishedRoutes(g, routesNamespace)
	g.Expect(published[entry].Headers).To(Equal(map[string]string{"X-Team": "income"}))
	g.Expect(keys[entry].Headers).To(Equal(map[string]string{"Authorization": token}))
	var configMaps corev1.ConfigMapList
	g.Expect(env.Client.List(ctx, &configMaps)).To(Succeed())
	for _, configMap := range configMaps.Items {
		for key, data := range configMap.Data {
			g.Expect(data).NotTo(ContainSubstring("tok-3f9c2e7a51"), "ConfigMap %s/%s key %s", configMap.Namespace, configMap.Name, key)
		}
	}

	// A new value in the Secret is published without a spec change.
	secret.Data["token"] = []byte("Bearer rotated")
	g.Expect(env.Client.Update(ctx, secret)).To(Succeed())
	g.Eventually(func(g Gomega) string {
		_, keys := publishedRoutes(g, routesNamespace)
		return keys[entry].Headers["Authorization"]
	}).WithTimeout(20 * time.Second).Should(Equal("Bearer rotated"))
}

// TestHeaderCannotCarryASigningSecret: a labelled bring-your-own signing
// Secret cannot supply another endpoint's header values, even when the
// endpoint names it for signing only after the header was published, and no
// header value may be a whsec_ key, whichever Secret holds it.
func TestHeaderCannotCarryASigningSecret(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	routesNamespace, _ := startManager(t, Options{})
	namespace := env.Namespace(t)
	signingKey := whsec.Encode([]byte("0123456789abcdef0123456789abcdef"))
	labelled := map[string]string{hookrelayv1alpha1.LabelEndpointSecret: "true"}
	shared := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "shared", Labels: labelled},
		Data: map[string][]byte{SecretKey: []byte(signingKey), "token": []byte("Bearer plain")}}
	g.Expect(env.Client.Create(ctx, shared)).To(Succeed())
	headerFrom := func(endpoint *hookrelayv1alpha1.WebhookEndpoint, secret, key string) {
		endpoint.Spec.Headers = []hookrelayv1alpha1.Header{{Name: "X-K", ValueFrom: &hookrelayv1alpha1.HeaderValueSource{
			SecretKeyRef: hookrelayv1alpha1.SecretKeySelector{Name: secret, Key: key}}}}
	}

	// Until an endpoint signs with it, it is a header Secret like any other.
	user := newEndpoint(namespace, "user")
	headerFrom(user, "shared", "token")
	g.Expect(env.Client.Create(ctx, user)).To(Succeed())
	eventuallyReady(t, user, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)

	owner := newEndpoint(namespace, "owner")
	owner.Spec.SecretRef = &hookrelayv1alpha1.SecretReference{Name: "shared"}
	g.Expect(env.Client.Create(ctx, owner)).To(Succeed())
	eventuallyReady(t, owner, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)
	condition := eventuallyReady(t, user, metav1.ConditionFalse, hookrelayv1alpha1.ReasonSecretInvalid)
	g.Expect(condition.Message).To(ContainSubstring(`spec.headers[X-K].valueFrom.secretKeyRef: Secret "shared" is the signing Secret of WebhookEndpoint "owner"`))

	thief := newEndpoint(namespace, "thief")
	headerFrom(thief, "shared", SecretKey)
	g.Expect(env.Client.Create(ctx, thief)).To(Succeed())
	condition = eventuallyReady(t, thief, metav1.ConditionFalse, hookrelayv1alpha1.ReasonSecretInvalid)
	g.Expect(condition.Message).To(ContainSubstring("spec.headers[X-K].valueFrom.secretKeyRef"))
	g.Expect(condition.Message).NotTo(ContainSubstring(signingKey))

	// A copy of the key in a Secret no endpoint signs with.
	copied := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "copied", Labels: labelled},
		Data: map[string][]byte{"token": []byte(signingKey)}}
	g.Expect(env.Client.Create(ctx, copied)).To(Succeed())
	copier := newEndpoint(namespace, "copier")
	headerFrom(copier, "copied", "token")
	g.Expect(env.Client.Create(ctx, copier)).To(Succeed())
	condition = eventuallyReady(t, copier, metav1.ConditionFalse, hookrelayv1alpha1.ReasonSecretInvalid)
	g.Expect(condition.Message).To(ContainSubstring(`spec.headers[X-K].valueFrom.secretKeyRef: key "token" of Secret "copied" holds a signing secret`))
	g.Expect(condition.Message).NotTo(ContainSubstring(signingKey))

	g.Eventually(func(g Gomega) {
		_, keys := publishedRoutes(g, routesNamespace)
		g.Expect(keys).To(HaveKey(routes.EntryKey(namespace, "owner")))
		for _, name := range []string{"user", "thief", "copier"} {
			g.Expect(keys).NotTo(HaveKey(routes.EntryKey(namespace, name)))
		}
		for entry, keysEntry := range keys {
			if entry == routes.EntryKey(namespace, "owner") {
				continue
			}
			for _, key := range keysEntry.Keys {
				g.Expect(key.Secret).NotTo(Equal(signingKey), "entry %s signs with the owner's key", entry)
			}
			for name, header := range keysEntry.Headers {
				g.Expect(header).NotTo(ContainSubstring(whsec.Prefix), "entry %s header %s", entry, name)
			}
		}
	}).WithTimeout(20 * time.Second).Should(Succeed())

	// Once the owner signs with another Secret, the header may be used again.
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(owner), owner)).To(Succeed())
		owner.Spec.SecretRef = nil
		g.Expect(env.Client.Update(ctx, owner)).To(Succeed())
	}).WithTimeout(20 * time.Second).Should(Succeed())
	eventuallyReady(t, user, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)
}
