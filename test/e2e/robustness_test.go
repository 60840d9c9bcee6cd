package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

// TestCrashLosesNothingAccepted kills the dispatcher with SIGKILL while 1,000
// events are in flight; after a restart on the same store, every event that
// got a 202 reaches the receiver at least once.
func TestCrashLosesNothingAccepted(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	dataDir := t.TempDir()
	d := startDispatcher(t, dataDir)
	// A slow receiver keeps most deliveries in flight when the kill comes.
	r := newReceiver(t, func(int) (int, time.Duration) { return http.StatusOK, 20 * time.Millisecond })
	endpoint(t, namespace, "crash", r.URL, []string{"*"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{{Duration: 100 * time.Millisecond}}}
		spec.MaxInFlight = ptr.To[int32](2)
	})

	const total = 1000
	var publishers sync.WaitGroup
	statuses := make([]int, total)
	for worker := range 8 {
		publishers.Go(func() {
			for i := worker; i < total; i += 8 {
				response, err := http.Post(d.URL+"/v1/namespaces/"+namespace+"/events", "application/json",
					strings.NewReader(fmt.Sprintf(`{"id":"evt_crash_%04d","type":"order.created","data":{"n":%d}}`, i, i)))
				if err != nil {
					continue
				}
				response.Body.Close()
				statuses[i] = response.StatusCode
			}
		})
	}
	publishers.Wait()
	var accepted []string
	for i, status := range statuses {
		g.Expect(status).To(Equal(http.StatusAccepted), "event %d", i)
		accepted = append(accepted, fmt.Sprintf("evt_crash_%04d", i))
	}
	g.Eventually(func() int { return len(r.got()) }).WithTimeout(30 * time.Second).WithPolling(time.Millisecond).
		Should(BeNumerically(">=", 50))
	d.kill()
	receivedBeforeRestart := len(r.got())
	t.Logf("killed with %d of %d accepted events delivered", receivedBeforeRestart, total)
	g.Expect(receivedBeforeRestart).To(BeNumerically("<", total), "the kill came while events were in flight")

	startDispatcher(t, dataDir)
	g.Eventually(func(g Gomega) {
		received := map[string]bool{}
		for _, id := range r.eventIDs() {
			received[id] = true
		}
		var missing []string
		for _, id := range accepted {
			if !received[id] {
				missing = append(missing, id)
			}
		}
		g.Expect(missing).To(BeEmpty(), "accepted events that never arrived")
	}).WithTimeout(60 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// TestDeadEndpointDoesNotDelayOthers: an endpoint that never answers in time
// keeps retrying while a healthy one gets every event.
func TestDeadEndpointDoesNotDelayOthers(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	dead := newReceiver(t, func(int) (int, time.Duration) { return http.StatusOK, time.Minute })
	healthy := newReceiver(t, answerWith(http.StatusOK))
	timeout := func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.Timeout = &metav1.Duration{Duration: 2 * time.Second}
		spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{{Duration: 100 * time.Millisecond}, {Duration: 100 * time.Millisecond}}}
		spec.MaxInFlight = ptr.To[int32](2)
	}
	endpoint(t, namespace, "dead", dead.URL, []string{"*"}, timeout)
	endpoint(t, namespace, "healthy", healthy.URL, []string{"*"}, timeout)

	const events = 100
	for i := range events {
		status, answer := d.publish(t, namespace, fmt.Sprintf(`{"id":"evt_iso_%03d","type":"invoice.paid","data":{}}`, i))
		g.Expect(status).To(Equal(http.StatusAccepted))
		g.Expect(answer["deliveries"]).To(Equal(2.0))
	}
	// With 2 workers and a 2 s timeout, the dead endpoint needs minutes to
	// get through 100 events; the healthy one must not wait for it.
	g.Eventually(healthy.eventIDs).WithTimeout(10 * time.Second).Should(HaveLen(events))
	g.Expect(len(dead.got())).To(BeNumerically("<", events), "the dead endpoint is still retrying")
}

// TestBadInput: each malformed request gets a 4xx naming the problem, and
// nothing accepted before is affected.
func TestBadInput(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir(), "--max-body-bytes=1024")
	r := newReceiver(t, answerWith(http.StatusOK))
	endpoint(t, namespace, "target", r.URL, []string{"*"}, nil)

	status, _ := d.publish(t, namespace, `{"id":"evt_before","type":"user.created","data":{}}`)
	g.Expect(status).To(Equal(http.StatusAccepted))

	cases := []struct {
		name, namespace, body string
		status                int
		message               string
	}{
		{"malformed JSON", namespace, `{"type":"user.created",`, http.StatusBadRequest, "body is not a valid event"},
		{"missing type", namespace, `{"data":{}}`, http.StatusBadRequest, "type is required"},
		{"malformed type", namespace, `{"type":"user created"}`, http.StatusBadRequest, `type "user created" is malformed`},
		{"unknown field", namespace, `{"type":"user.created","payload":{}}`, http.StatusBadRequest, `unknown field "payload"`},
		{"oversize body", namespace, `{"type":"user.created","data":{"pad":"` + strings.Repeat("x", 2048) + `"}}`, http.StatusRequestEntityTooLarge, "over the 1024-byte limit"},
		{"invalid namespace", "Not_A_Namespace", `{"type":"user.created"}`, http.StatusBadRequest, "not a valid namespace name"},
	}
	for _, tc := range cases {
		status, answer := d.publish(t, tc.namespace, tc.body)
		g.Expect(status).To(Equal(tc.status), tc.name)
		g.Expect(answer["error"]).To(ContainSubstring(tc.message), tc.name)
	}

	status, answer := d.publish(t, namespace, `{"id":"evt_after","type":"user.created","data":{}}`)
	g.Expect(status).To(Equal(http.StatusAccepted))
	g.Expect(answer["deliveries"]).To(Equal(1.0))
	g.Eventually(r.eventIDs).WithTimeout(10 * time.Second).Should(ConsistOf("evt_before", "evt_after"))

	// The same id again is not fanned out twice: 200 with the first result.
	status, answer = d.publish(t, namespace, `{"id":"evt_before","type":"user.created","data":{"again":true}}`)
	g.Expect(status).To(Equal(http.StatusOK))
	g.Expect(answer).To(Equal(map[string]any{"id": "evt_before", "deliveries": 1.0, "duplicate": true}))
}
