package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// cloudEventID is the event id the dispatcher gives a CloudEvent:
// ce_<16 hex digits of SHA-256(source)>_<id>.
func cloudEventID(source, id string) string {
	sum := sha256.Sum256([]byte(source))
	return "ce_" + hex.EncodeToString(sum[:8]) + "_" + id
}

// binaryCloudEvent posts a binary-mode CloudEvent and decodes the answer.
func binaryCloudEvent(g Gomega, url, source, id, eventType, eventTime, data string) (int, map[string]any) {
	request, err := http.NewRequest(http.MethodPost, url, strings.NewReader(data))
	g.Expect(err).NotTo(HaveOccurred())
	request.Header.Set("Content-Type", "application/json")
	request.Header.Set("ce-specversion", "1.0")
	request.Header.Set("ce-id", id)
	request.Header.Set("ce-type", eventType)
	request.Header.Set("ce-source", source)
	if eventTime != "" {
		request.Header.Set("ce-time", eventTime)
	}
	response, err := http.DefaultClient.Do(request)
	g.Expect(err).NotTo(HaveOccurred())
	defer response.Body.Close()
	var answer map[string]any
	g.Expect(json.NewDecoder(response.Body).Decode(&answer)).To(Succeed())
	return response.StatusCode, answer
}

// TestCloudEventsIngest: binary and structured CloudEvents are delivered with
// an event id made of ce-source and ce-id, ce-type as the type and ce-time as
// created_at; a repeated ce-id from the same source is not.
func TestCloudEventsIngest(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	r := newReceiver(t, answerWith(http.StatusOK))
	endpoint(t, namespace, "ce", r.URL, []string{"com.example.*"}, nil)
	url := d.URL + "/v1/namespaces/" + namespace + "/events"
	binaryID, structuredID := cloudEventID("/users", "ce-binary-1"), cloudEventID("/billing", "ce-structured-1")

	binary := func() (int, map[string]any) {
		return binaryCloudEvent(g, url, "/users", "ce-binary-1", "com.example.user.created", "2026-11-25T10:00:00Z", `{"user_id":"usr_1"}`)
	}
	status, answer := binary()
	g.Expect(status).To(Equal(http.StatusAccepted), "%v", answer)
	g.Expect(answer).To(HaveKeyWithValue("id", binaryID))

	status, answer = d.post(t, url, "application/cloudevents+json", `{"specversion":"1.0","id":"ce-structured-1",
		"type":"com.example.invoice.paid","source":"/billing","time":"2026-11-25T11:30:00+01:00",
		"datacontenttype":"application/json","data":{"amount":42}}`)
	g.Expect(status).To(Equal(http.StatusAccepted), "%v", answer)
	g.Expect(answer).To(HaveKeyWithValue("id", structuredID))

	// The same ce-id from the same source again is a duplicate.
	status, answer = binary()
	g.Expect(status).To(Equal(http.StatusOK))
	g.Expect(answer).To(HaveKeyWithValue("duplicate", true))

	g.Eventually(r.eventIDs).WithTimeout(10 * time.Second).Should(ConsistOf(binaryID, structuredID))
	for _, got := range r.got() {
		var envelope map[string]any
		g.Expect(json.Unmarshal(got.Body, &envelope)).To(Succeed())
		g.Expect(envelope).To(HaveKeyWithValue("id", got.EventID()))
		switch got.EventID() {
		case binaryID:
			g.Expect(envelope).To(HaveKeyWithValue("type", "com.example.user.created"))
			g.Expect(envelope).To(HaveKeyWithValue("created_at", "2026-11-25T10:00:00Z"))
			g.Expect(envelope["data"]).To(Equal(map[string]any{"user_id": "usr_1"}))
		case structuredID:
			g.Expect(envelope).To(HaveKeyWithValue("type", "com.example.invoice.paid"))
			g.Expect(envelope).To(HaveKeyWithValue("created_at", "2026-11-25T10:30:00Z"))
			g.Expect(envelope["data"]).To(Equal(map[string]any{"amount": 42.0}))
		}
	}

	// A CloudEvent without a type is refused with a message.
	status, answer = d.post(t, url, "application/cloudevents+json", `{"specversion":"1.0","id":"x","source":"/s"}`)
	g.Expect(status).To(Equal(http.StatusBadRequest))
	g.Expect(answer["error"]).To(ContainSubstring("type"))
}

// TestCloudEventsDedupeOnSourceAndID: two sources that both number their
// events from 1 are not each other's duplicates: both events are delivered,
// each is in the delivery log under the id the publish answered, and only a
// repeat from the same source is dropped.
func TestCloudEventsDedupeOnSourceAndID(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	r := newReceiver(t, answerWith(http.StatusOK))
	endpoint(t, namespace, "orders", r.URL, []string{"order.*"}, nil)
	url := d.URL + "/v1/namespaces/" + namespace + "/events"

	var ids []string
	for _, source := range []string{"/shop-eu", "/shop-us"} {
		status, answer := binaryCloudEvent(g, url, source, "1", "order.paid", "", `{"source":"`+source+`"}`)
		g.Expect(status).To(Equal(http.StatusAccepted), "%v", answer)
		g.Expect(answer).To(Equal(map[string]any{"id": cloudEventID(source, "1"), "deliveries": 1.0}))
		ids = append(ids, answer["id"].(string))
	}
	status, answer := binaryCloudEvent(g, url, "/shop-us", "1", "order.paid", "", `{"again":true}`)
	g.Expect(status).To(Equal(http.StatusOK))
	g.Expect(answer).To(Equal(map[string]any{"id": cloudEventID("/shop-us", "1"), "deliveries": 1.0, "duplicate": true}))

	g.Eventually(r.eventIDs).WithTimeout(10 * time.Second).Should(ConsistOf(ids[0], ids[1]))
	for _, got := range r.got() {
		var envelope struct{ Data struct{ Source string } }
		g.Expect(json.Unmarshal(got.Body, &envelope)).To(Succeed())
		g.Expect(got.EventID()).To(Equal(cloudEventID(envelope.Data.Source, "1")), "each source's own data")
	}
	for _, id := range ids {
		g.Eventually(func(g Gomega) string {
			return eventLogOf(g, d, namespace, id)["orders"].State
		}).WithTimeout(10 * time.Second).Should(Equal("succeeded"))
	}
}
