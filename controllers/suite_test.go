package controllers

import (
	"context"
	"os"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/testenv"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	os.Exit(testenv.Run(m, &env))
}

// startManager runs the controllers until the test ends (or stop is called),
// with the dispatcher configuration in a fresh namespace, which it returns.
func startManager(t *testing.T, opts Options) (routesNamespace string, stop func()) {
	t.Helper()
	if opts.Namespace == "" {
		opts.Namespace = env.Namespace(t)
	}
	if opts.RotationGrace == 0 {
		opts.RotationGrace = time.Hour
	}
	mgr, err := env.NewManager(CacheOptions(opts.Namespace))
	if err != nil {
		t.Fatalf("creating the manager: %v", err)
	}
	if err := Setup(mgr, opts); err != nil {
		t.Fatalf("setting up the controllers: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}
	t.Cleanup(stop)
	return opts.Namespace, stop
}

// zapLevel is quiet unless HOOKRELAY_TEST_LOG=debug.
func zapLevel() zapcore.Level {
	if os.Getenv("HOOKRELAY_TEST_LOG") == "debug" {
		return -1
	}
	return 2
}

// endpoint returns a valid endpoint spec with a local https URL.
func newEndpoint(namespace, name string) *hookrelayv1alpha1.WebhookEndpoint {
	return &hookrelayv1alpha1.WebhookEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec:       hookrelayv1alpha1.WebhookEndpointSpec{URL: "https://receiver.example/" + name},
	}
}

func newSubscription(namespace, name, endpoint string, eventTypes ...string) *hookrelayv1alpha1.WebhookSubscription {
	return &hookrelayv1alpha1.WebhookSubscription{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: hookrelayv1alpha1.WebhookSubscriptionSpec{
			EndpointRef: hookrelayv1alpha1.EndpointReference{Name: endpoint},
			EventTypes:  eventTypes,
		},
	}
}

// readyOf reads an object's Ready condition from the API server.
func readyOf(g Gomega, obj client.Object) *metav1.Condition {
	g.Expect(env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)).To(Succeed())
	var conditions []metav1.Condition
	switch o := obj.(type) {
	case *hookrelayv1alpha1.WebhookEndpoint:
		conditions = o.Status.Conditions
	case *hookrelayv1alpha1.WebhookSubscription:
		conditions = o.Status.Conditions
	}
	condition := meta.FindStatusCondition(conditions, hookrelayv1alpha1.ConditionReady)
	g.Expect(condition).NotTo(BeNil(), "no Ready condition yet")
	return condition
}

// eventuallyReady waits for Ready=status with reason.
func eventuallyReady(t *testing.T, obj client.Object, status metav1.ConditionStatus, reason string) *metav1.Condition {
	t.Helper()
	var condition *metav1.Condition
	NewWithT(t).Eventually(func(g Gomega) {
		condition = readyOf(g, obj)
		g.Expect(condition.Status).To(Equal(status), "Ready message: %s", condition.Message)
		g.Expect(condition.Reason).To(Equal(reason))
	}).WithTimeout(20 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	return condition
}

// signingSecret reads the value of an endpoint's signing Secret.
func signingSecret(g Gomega, endpoint *hookrelayv1alpha1.WebhookEndpoint) *corev1.Secret {
	var secret corev1.Secret
	g.Expect(env.Client.Get(context.Background(), types.NamespacedName{Namespace: endpoint.Namespace, Name: whsec.GeneratedSecretName(endpoint.Name)}, &secret)).To(Succeed())
	return &secret
}

// publishedRoutes reads every route and key from the shards in a namespace.
func publishedRoutes(g Gomega, namespace string) (map[string]routes.Endpoint, map[string]routes.KeysEntry) {
	var configMaps corev1.ConfigMapList
	g.Expect(env.Client.List(context.Background(), &configMaps, client.InNamespace(namespace), client.HasLabels{routes.LabelRoutes})).To(Succeed())
	endpoints := map[string]routes.Endpoint{}
	for _, configMap := range configMaps.Items {
		for key, data := range configMap.Data {
			endpoint, err := routes.DecodeEndpoint([]byte(data))
			g.Expect(err).NotTo(HaveOccurred())
			endpoints[key] = endpoint
		}
	}
	var secrets corev1.SecretList
	g.Expect(env.Client.List(context.Background(), &secrets, client.InNamespace(namespace), client.HasLabels{routes.LabelKeys})).To(Succeed())
	keys := map[string]routes.KeysEntry{}
	for _, secret := range secrets.Items {
		for key, data := range secret.Data {
			decoded, err := routes.DecodeKeys(data)
			g.Expect(err).NotTo(HaveOccurred())
			keys[key] = decoded
		}
	}
	return endpoints, keys
}
