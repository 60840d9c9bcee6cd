package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/statusapply"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

func TestGeneratedSecretNeverChanges(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	_, stop := startManager(t, Options{})
	namespace := env.Namespace(t)

	endpoint := newEndpoint(namespace, "palm")
	g.Expect(env.Client.Create(ctx, endpoint)).To(Succeed())
	eventuallyReady(t, endpoint, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)

	secret := signingSecret(g, endpoint)
	value := string(secret.Data[SecretKey])
	raw, err := whsec.Decode(value)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(raw).To(HaveLen(32))
	g.Expect(metav1.IsControlledBy(secret, endpoint)).To(BeTrue(), "the Secret is owned by the endpoint")
	g.Expect(secret.Labels).To(HaveKeyWithValue(LabelEndpoint, "palm"))
	g.Expect(endpoint.Status.SecretName).To(Equal(secret.Name))

	// editSpec changes the spec and waits until the controller handled it.
	editSpec := func(description string) {
		t.Helper()
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(endpoint), endpoint)).To(Succeed())
		endpoint.Spec.Description = description
		g.Expect(env.Client.Update(ctx, endpoint)).To(Succeed())
		g.Eventually(func(g Gomega) {
			condition := readyOf(g, endpoint)
			g.Expect(condition.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(endpoint.Status.ObservedGeneration).To(Equal(endpoint.Generation))
		}).WithTimeout(20 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	}

	editSpec("edited once")
	g.Expect(string(signingSecret(g, endpoint).Data[SecretKey])).To(Equal(value), "an edit regenerated the secret")

	stop()
	startManager(t, Options{})
	editSpec("edited after a restart")
	g.Expect(string(signingSecret(g, endpoint).Data[SecretKey])).To(Equal(value), "a restart regenerated the secret")

}

func TestRotationKeepsPreviousKeyForTheGracePeriod(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	clock := clocktesting.NewFakeClock(time.Now())
	routesNamespace, _ := startManager(t, Options{Clock: clock, RotationGrace: 24 * time.Hour})
	namespace := env.Namespace(t)

	endpoint := newEndpoint(namespace, "rotating")
	g.Expect(env.Client.Create(ctx, endpoint)).To(Succeed())
	eventuallyReady(t, endpoint, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)
	entry := routes.EntryKey(namespace, endpoint.Name)
	original := string(signingSecret(g, endpoint).Data[SecretKey])

	publishedSecrets := func(g Gomega) []string {
		_, keys := publishedRoutes(g, routesNamespace)
		var secrets []string
		for _, key := range keys[entry].Keys {
			secrets = append(secrets, key.Secret)
		}
		return secrets
	}
	g.Expect(publishedSecrets(g)).To(Equal([]string{original}))

	annotate(t, endpoint, hookrelayv1alpha1.AnnotationRotateSecret, "2026-11-25T10:00:00Z")
	var rotated string
	g.Eventually(func(g Gomega) {
		rotated = string(signingSecret(g, endpoint).Data[SecretKey])
		g.Expect(rotated).NotTo(Equal(original))
		g.Expect(publishedSecrets(g)).To(Equal([]string{rotated, original}), "new key first, old key kept")
	}).WithTimeout(20 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	g.Expect(rotated).To(HavePrefix(whsec.Prefix))

	// Just before the end of the grace period both keys still sign.
	clock.Step(24*time.Hour - time.Minute)
	annotate(t, endpoint, "test.hookrelay.dev/poke", "1")
	g.Consistently(publishedSecrets).WithTimeout(time.Second).Should(Equal([]string{rotated, original}))

	clock.Step(2 * time.Minute)
	annotate(t, endpoint, "test.hookrelay.dev/poke", "2")
	g.Eventually(publishedSecrets).WithTimeout(20 * time.Second).Should(Equal([]string{rotated}))
	g.Expect(signingSecret(g, endpoint).Data).NotTo(HaveKey(previousSecretKey))

	// The same annotation value never rotates again.
	annotate(t, endpoint, "test.hookrelay.dev/poke", "3")
	g.Consistently(func(g Gomega) string { return string(signingSecret(g, endpoint).Data[SecretKey]) }).
		WithTimeout(time.Second).Should(Equal(rotated))

	// Nor does an older time (Git's value applied again after a rotation
	// from the command line); the status shows the time acted on.
	annotate(t, endpoint, hookrelayv1alpha1.AnnotationRotateSecret, "2026-11-24T10:00:00Z")
	g.Consistently(func(g Gomega) string { return string(signingSecret(g, endpoint).Data[SecretKey]) }).
		WithTimeout(time.Second).Should(Equal(rotated))
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(endpoint), endpoint)).To(Succeed())
	g.Expect(endpoint.Status.LastRotateSecret).To(Equal("2026-11-25T10:00:00Z"))

	// A later time rotates again.
	annotate(t, endpoint, hookrelayv1alpha1.AnnotationRotateSecret, "2026-11-26T10:00:00Z")
	g.Eventually(func(g Gomega) string { return string(signingSecret(g, endpoint).Data[SecretKey]) }).
		WithTimeout(20 * time.Second).ShouldNot(Equal(rotated))
}

func TestBringYourOwnSecret(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	routesNamespace, _ := startManager(t, Options{})
	namespace := env.Namespace(t)

	endpoint := newEndpoint(namespace, "byo")
	endpoint.Spec.SecretRef = &hookrelayv1alpha1.SecretReference{Name: "customer-secret"}
	g.Expect(env.Client.Create(ctx, endpoint)).To(Succeed())
	condition := eventuallyReady(t, endpoint, metav1.ConditionFalse, hookrelayv1alpha1.ReasonSecretInvalid)
	g.Expect(condition.Message).To(ContainSubstring(`"customer-secret" not found`))

	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "customer-secret",
			Labels: map[string]string{hookrelayv1alpha1.LabelEndpointSecret: "true"}},
		Data: map[string][]byte{SecretKey: []byte("not-a-whsec")},
	}
	g.Expect(env.Client.Create(ctx, secret)).To(Succeed())
	g.Eventually(func(g Gomega) {
		condition := readyOf(g, endpoint)
		g.Expect(condition.Reason).To(Equal(hookrelayv1alpha1.ReasonSecretInvalid))
		g.Expect(condition.Message).To(ContainSubstring(`is not a signing secret`))
	}).WithTimeout(20 * time.Second).Should(Succeed())

	// Too short: the message says what is wanted, not what the Secret holds.
	secret.Data[SecretKey] = []byte(whsec.Encode([]byte("0123456789")))
	g.Expect(env.Client.Update(ctx, secret)).To(Succeed())
	g.Eventually(func(g Gomega) {
		condition := readyOf(g, endpoint)
		g.Expect(condition.Message).To(ContainSubstring("at least 24 random bytes"))
		g.Expect(condition.Message).NotTo(ContainSubstring("10"))
		g.Expect(condition.Message).NotTo(ContainSubstring("MDEyMzQ1Njc4OQ"))
	}).WithTimeout(20 * time.Second).Should(Succeed())

	value := whsec.Encode([]byte("0123456789abcdef0123456789abcdef"))
	secret.Data[SecretKey] = []byte(value)
	g.Expect(env.Client.Update(ctx, secret)).To(Succeed())
	eventuallyReady(t, endpoint, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)
	_, keys := publishedRoutes(g, routesNamespace)
	g.Expect(keys[routes.EntryKey(namespace, "byo")]).To(Equal(routes.KeysEntry{Keys: []routes.Key{{Secret: value}}}))
}

func TestInsecureURL(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startManager(t, Options{})
	namespace := env.Namespace(t)

	endpoint := newEndpoint(namespace, "plain")
	endpoint.Spec.URL = "http://receiver.example/hooks?token=s3cret"
	g.Expect(env.Client.Create(ctx, endpoint)).To(Succeed())
	condition := eventuallyReady(t, endpoint, metav1.ConditionFalse, hookrelayv1alpha1.ReasonInsecureURL)
	g.Expect(condition.Message).To(ContainSubstring("--allow-insecure-endpoints"))
	// The query value is hidden, the rest of the URL is shown.
	g.Expect(condition.Message).To(ContainSubstring(`"http://receiver.example/hooks?token=REDACTED"`))
	g.Expect(condition.Message).NotTo(ContainSubstring("s3cret"))

	g.Eventually(func(g Gomega) {
		events := eventsOf(g, namespace)
		// One per created endpoint would be thousands in a bulk apply.
		g.Expect(events).NotTo(HaveKey("SecretGenerated"))
		g.Expect(events).To(HaveKey(hookrelayv1alpha1.ReasonInsecureURL))
		g.Expect(events[hookrelayv1alpha1.ReasonInsecureURL]).To(ContainSubstring("token=REDACTED"))
		g.Expect(events[hookrelayv1alpha1.ReasonInsecureURL]).NotTo(ContainSubstring("s3cret"))
	}).WithTimeout(20 * time.Second).Should(Succeed())
}

// TestLongEventNoteIsCut: a warning whose note exceeds the API server's
// 1 KiB limit (here, a long spec.url quoted in the InsecureURL message) is
// still recorded, cut with an ellipsis.
func TestLongEventNoteIsCut(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startManager(t, Options{})
	namespace := env.Namespace(t)

	endpoint := newEndpoint(namespace, "long")
	endpoint.Spec.URL = "http://receiver.example/" + strings.Repeat("segment/", 200)
	g.Expect(env.Client.Create(ctx, endpoint)).To(Succeed())
	condition := eventuallyReady(t, endpoint, metav1.ConditionFalse, hookrelayv1alpha1.ReasonInsecureURL)
	g.Expect(len(condition.Message)).To(BeNumerically(">", 1024), "the condition keeps the whole message")

	g.Eventually(func(g Gomega) {
		events := eventsOf(g, namespace)
		g.Expect(events).To(HaveKey(hookrelayv1alpha1.ReasonInsecureURL))
		note := events[hookrelayv1alpha1.ReasonInsecureURL]
		g.Expect(len(note)).To(BeNumerically("<=", 1024))
		g.Expect(note).To(HavePrefix(`spec.url "http://receiver.example/segment/segment/`))
		g.Expect(note).To(HaveSuffix("…"))
	}).WithTimeout(20 * time.Second).Should(Succeed())
}

// eventsOf reads the Events of a namespace from the API server, the latest
// message by reason.
func eventsOf(g Gomega, namespace string) map[string]string {
	var events corev1.EventList
	g.Expect(env.Client.List(context.Background(), &events, client.InNamespace(namespace))).To(Succeed())
	messages := map[string]string{}
	for _, event := range events.Items {
		messages[event.Reason] = event.Message
	}
	return messages
}

func TestInsecureURLAllowedForDevelopment(t *testing.T) {
	g := NewWithT(t)
	startManager(t, Options{AllowInsecure: true})
	namespace := env.Namespace(t)

	endpoint := newEndpoint(namespace, "plain")
	endpoint.Spec.URL = "http://127.0.0.1:9/hooks"
	g.Expect(env.Client.Create(context.Background(), endpoint)).To(Succeed())
	eventuallyReady(t, endpoint, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)
}

// annotate sets an annotation on an object, retrying on conflicts.
func annotate(t *testing.T, obj client.Object, key, value string) {
	t.Helper()
	NewWithT(t).Eventually(func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		annotations := obj.GetAnnotations()
		if annotations == nil {
			annotations = map[string]string{}
		}
		annotations[key] = value
		obj.SetAnnotations(annotations)
		return env.Client.Update(context.Background(), obj)
	}).WithTimeout(10 * time.Second).Should(Succeed())
}

func TestRecreatedEndpointReplacesTheOrphanedSecret(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startManager(t, Options{})
	namespace := env.Namespace(t)

	endpoint := newEndpoint(namespace, "again")
	g.Expect(env.Client.Create(ctx, endpoint)).To(Succeed())
	eventuallyReady(t, endpoint, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)
	first := string(signingSecret(g, endpoint).Data[SecretKey])

	// This control plane runs no garbage collector: the Secret outlives its endpoint.
	g.Expect(env.Client.Delete(ctx, endpoint)).To(Succeed())
	recreated := newEndpoint(namespace, "again")
	g.Expect(env.Client.Create(ctx, recreated)).To(Succeed())
	eventuallyReady(t, recreated, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)
	secret := signingSecret(g, recreated)
	g.Expect(metav1.IsControlledBy(secret, recreated)).To(BeTrue())
	g.Expect(string(secret.Data[SecretKey])).NotTo(Equal(first), "a new endpoint gets a new key")
}

// TestOverBudgetTransform: a transform whose estimated cost is over the
// budget (a replace bomb of under 5,000 characters) is refused, naming the
// field, and the endpoint is not published.
func TestOverBudgetTransform(t *testing.T) {
	g := NewWithT(t)
	startManager(t, Options{})
	// Stored past admission, as before the webhook existed: the controller refuses it too.
	namespace := env.NamespaceWithoutAdmission(t)

	endpoint := newEndpoint(namespace, "bomb")
	endpoint.Spec.Payload = &hookrelayv1alpha1.PayloadSpec{Transform: `{"x": event.type.replace('', '` + strings.Repeat("x", 200) +
		`').replace('', '` + strings.Repeat("x", 200) + `').replace('', '` + strings.Repeat("x", 4000) + `')}`}
	g.Expect(env.Client.Create(context.Background(), endpoint)).To(Succeed())
	condition := eventuallyReady(t, endpoint, metav1.ConditionFalse, hookrelayv1alpha1.ReasonTransformInvalid)
	g.Expect(condition.Message).To(HavePrefix("spec.payload.transform: estimated cost "))
	g.Expect(condition.Message).To(ContainSubstring("exceeds the budget of 10000000 CEL cost units"))
}

// TestNewerThan: a new endpoint waits for its publication before it is
// said to be Publishing only while the controller's clock agrees that it
// is new; a clock behind its creation (a fake one) never makes it wait.
func TestNewerThan(t *testing.T) {
	created := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		now  time.Time
		want bool
	}{
		{created, true},
		{created.Add(publishingGrace - time.Millisecond), true},
		{created.Add(publishingGrace), false},
		{created.Add(-time.Second), false},
		{created.Add(time.Hour), false},
	} {
		if got := newerThan(created, tc.now, publishingGrace); got != tc.want {
			t.Errorf("created %s, now %s: %v, want %v", created, tc.now, got, tc.want)
		}
	}
}

// TestStartKeepsReadyUntilTheFirstCompile: a controller that has not seen a
// compile since its start (a restarted manager) leaves a Ready endpoint's
// status as it is, rather than saying Publishing until the compile, and the
// compile that publishes it changes nothing either.
func TestStartKeepsReadyUntilTheFirstCompile(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	_, stop := startManager(t, Options{})
	namespace := env.Namespace(t)
	endpoint := newEndpoint(namespace, "restart")
	g.Expect(env.Client.Create(ctx, endpoint)).To(Succeed())
	eventuallyReady(t, endpoint, metav1.ConditionTrue, hookrelayv1alpha1.ReasonPublished)
	stop()
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(endpoint), endpoint)).To(Succeed())
	before := endpoint.ResourceVersion

	published := newPublication()
	now := clocktesting.NewFakeClock(time.Now())
	reconciler := &EndpointReconciler{Client: env.Client, APIReader: env.Client, Scheme: env.Scheme, Clock: now,
		AllowInsecure: true, RotationGrace: time.Hour, publication: published,
		status: statusWriter{Writer: &statusapply.Writer{Client: env.Client, FieldOwner: FieldOwner}, clock: now}}
	request := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(endpoint)}
	result, err := reconciler.Reconcile(ctx, request)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(result.RequeueAfter).To(BeNumerically(">", 0), "looked at again after the first compile")
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(endpoint), endpoint)).To(Succeed())
	g.Expect(endpoint.ResourceVersion).To(Equal(before), "the status was written before the first compile")

	secret := signingSecret(g, endpoint)
	keys, err := activeKeys(secret, time.Now())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(published.record(ctx, map[types.NamespacedName]publishedRoute{
		request.NamespacedName: {generation: endpoint.Generation, keysVersion: routes.KeysVersion(keys)},
	}, nil)).To(Succeed())
	_, err = reconciler.Reconcile(ctx, request)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(endpoint), endpoint)).To(Succeed())
	g.Expect(endpoint.ResourceVersion).To(Equal(before), "the first compile's publication rewrote the status")
}
