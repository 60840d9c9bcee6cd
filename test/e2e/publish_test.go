package e2e

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// TestProducerCreatedAt: the envelope carries the created_at the producer
// published (in UTC, whole seconds), and the accept time when it published none.
func TestProducerCreatedAt(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	r := newReceiver(t, answerWith(http.StatusOK))
	endpoint(t, namespace, "target", r.URL, []string{"*"}, nil)

	status, answer := d.publish(t, namespace, `{"id":"evt_produced","type":"user.created","created_at":"2026-11-25T10:46:30+01:00","data":{}}`)
	g.Expect(status).To(Equal(http.StatusAccepted), "%v", answer)
	status, answer = d.publish(t, namespace, `{"id":"evt_unstamped","type":"user.created","data":{}}`)
	g.Expect(status).To(Equal(http.StatusAccepted), "%v", answer)
	status, answer = d.publish(t, namespace, `{"type":"user.created","created_at":"2026-11-25","data":{}}`)
	g.Expect(status).To(Equal(http.StatusBadRequest))
	g.Expect(answer["error"]).To(ContainSubstring(`created_at "2026-11-25" is not an RFC 3339 time`))

	g.Eventually(r.eventIDs).WithTimeout(10 * time.Second).Should(ConsistOf("evt_produced", "evt_unstamped"))
	for _, got := range r.got() {
		var envelope struct {
			CreatedAt string `json:"created_at"`
		}
		g.Expect(json.Unmarshal(got.Body, &envelope)).To(Succeed())
		switch got.EventID() {
		case "evt_produced":
			g.Expect(envelope.CreatedAt).To(Equal("2026-11-25T09:46:30Z"))
		case "evt_unstamped":
			// The accept time, on the dispatcher's clock.
			accepted, err := time.Parse(time.RFC3339, envelope.CreatedAt)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(accepted.IsZero()).To(BeFalse())
		}
	}
}

// TestNamespaceWithoutEndpoints: a namespace still setting up takes events
// (202, no deliveries), its delivery log shows them, and their ids dedupe.
func TestNamespaceWithoutEndpoints(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())

	status, answer := d.publish(t, namespace, `{"id":"evt_early","type":"user.created","data":{"n":1}}`)
	g.Expect(status).To(Equal(http.StatusAccepted), "%v", answer)
	g.Expect(answer).To(Equal(map[string]any{"id": "evt_early", "deliveries": 0.0}))

	response, err := http.Get(d.URL + "/v1/namespaces/" + namespace + "/events/evt_early")
	g.Expect(err).NotTo(HaveOccurred())
	defer response.Body.Close()
	g.Expect(response.StatusCode).To(Equal(http.StatusOK))
	var eventLog struct {
		Event      map[string]any
		Data       map[string]any
		Deliveries []any
	}
	g.Expect(json.NewDecoder(response.Body).Decode(&eventLog)).To(Succeed())
	g.Expect(eventLog.Event).To(HaveKeyWithValue("id", "evt_early"))
	g.Expect(eventLog.Event).To(HaveKeyWithValue("deliveries", 0.0))
	g.Expect(eventLog.Data).To(Equal(map[string]any{"n": 1.0}))
	g.Expect(eventLog.Deliveries).To(BeEmpty())

	status, answer = d.publish(t, namespace, `{"id":"evt_early","type":"user.created","data":{"n":2}}`)
	g.Expect(status).To(Equal(http.StatusOK))
	g.Expect(answer).To(Equal(map[string]any{"id": "evt_early", "deliveries": 0.0, "duplicate": true}))
}
