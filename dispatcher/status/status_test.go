package status

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/dispatcher/delivery"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/testenv"
)

// TestFirstSightWritesWait: the writes that only bring a new route's
// conditions go at FirstSightRate, so that a bulk create does not send the
// API server one status write per endpoint at once; a delivery's health is
// written at once, whatever that rate says.
func TestFirstSightWritesWait(t *testing.T) {
	env := testenv.StartForTest(t)
	ctx := context.Background()
	namespace := env.Namespace(t)
	counting, applies := env.CountingStatusApplies(t)
	clock := clocktesting.NewFakeClock(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
	reporter := &Reporter{Client: counting, Interval: time.Second, Clock: clock, FirstSightRate: 1, FirstSightBurst: 2}

	var seen []*routes.Route
	for i := range 5 {
		endpoint := &hookrelayv1alpha1.WebhookEndpoint{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: fmt.Sprintf("ep-%d", i)},
			Spec:       hookrelayv1alpha1.WebhookEndpointSpec{URL: "https://receiver.example/"},
		}
		if err := env.Client.Create(ctx, endpoint); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, &routes.Route{ID: namespace + "/" + endpoint.Name,
			Endpoint: routes.Endpoint{Namespace: namespace, Name: endpoint.Name, UID: string(endpoint.UID), Generation: 1}})
	}
	for _, route := range seen[:4] {
		reporter.HealthChanged(route, store.Health{Endpoint: route.ID, UID: route.UID}, delivery.ChangeObserved)
	}
	expectApplies := func(want int32, when string) {
		t.Helper()
		if got := applies.Load(); got != want {
			t.Fatalf("%s: %d status writes, want %d", when, got, want)
		}
	}
	reporter.Flush(ctx)
	expectApplies(2, "four routes seen, a burst of 2")
	reporter.Flush(ctx)
	expectApplies(2, "no time passed")

	delivered := clock.Now()
	last := seen[4]
	reporter.HealthChanged(last, store.Health{Endpoint: last.ID, UID: last.UID, LastSuccess: &delivered}, delivery.ChangeDelivered)
	reporter.Flush(ctx)
	expectApplies(3, "a delivery, beside the waiting first sights")

	clock.Step(time.Second)
	reporter.Flush(ctx)
	expectApplies(4, "a second later, at 1 a second")
	clock.Step(time.Second)
	reporter.Flush(ctx)
	expectApplies(5, "two seconds later")
	clock.Step(time.Minute)
	reporter.Flush(ctx)
	expectApplies(5, "nothing left")

	var endpoints hookrelayv1alpha1.WebhookEndpointList
	if err := env.Client.List(ctx, &endpoints, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	for _, endpoint := range endpoints.Items {
		if len(endpoint.Status.Conditions) != 2 {
			t.Errorf("%s: conditions %+v, want Disabled and Delivering", endpoint.Name, endpoint.Status.Conditions)
		}
	}
}
