package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// TestCloudEventsIngest: binary and structured CloudEvents are delivered with
// ce-id as the event id and ce-type as the type; a repeated ce-id is not.
func TestCloudEventsIngest(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	r := newReceiver(t, answerWith(http.StatusOK))
	endpoint(t, namespace, "ce", r.URL, []string{"com.example.*"}, nil)
	url := d.URL + "/v1/namespaces/" + namespace + "/events"

	binary := func(id string) (int, map[string]any) {
		request, err := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"user_id":"usr_1"}`))
		g.Expect(err).NotTo(HaveOccurred())
		request.Header.Set("Content-Type", "application/json")
		request.Header.Set("ce-specversion", "1.0")
		request.Header.Set("ce-id", id)
		request.Header.Set("ce-type", "com.example.user.created")
		request.Header.Set("ce-source", "/users")
		request.Header.Set("ce-time", "2026-11-25T10:00:00Z")
		response, err := http.DefaultClient.Do(request)
		g.Expect(err).NotTo(HaveOccurred())
		defer response.Body.Close()
		var answer map[string]any
		g.Expect(json.NewDecoder(response.Body).Decode(&answer)).To(Succeed())
		return response.StatusCode, answer
	}
	status, answer := binary("ce-binary-1")
	g.Expect(status).To(Equal(http.StatusAccepted), "%v", answer)
	g.Expect(answer).To(HaveKeyWithValue("id", "ce-binary-1"))

	status, answer = d.post(t, url, "application/cloudevents+json", `{"specversion":"1.0","id":"ce-structured-1",
		"type":"com.example.invoice.paid","source":"/billing","datacontenttype":"application/json","data":{"amount":42}}`)
	g.Expect(status).To(Equal(http.StatusAccepted), "%v", answer)
	g.Expect(answer).To(HaveKeyWithValue("id", "ce-structured-1"))

	// The same ce-id again is a duplicate.
	status, answer = binary("ce-binary-1")
	g.Expect(status).To(Equal(http.StatusOK))
	g.Expect(answer).To(HaveKeyWithValue("duplicate", true))

	g.Eventually(r.eventIDs).WithTimeout(10 * time.Second).Should(ConsistOf("ce-binary-1", "ce-structured-1"))
	for _, got := range r.got() {
		var envelope map[string]any
		g.Expect(json.Unmarshal(got.Body, &envelope)).To(Succeed())
		switch got.EventID() {
		case "ce-binary-1":
			g.Expect(envelope).To(HaveKeyWithValue("type", "com.example.user.created"))
			g.Expect(envelope).To(HaveKeyWithValue("created_at", "2026-11-25T10:00:00Z"))
			g.Expect(envelope["data"]).To(Equal(map[string]any{"user_id": "usr_1"}))
		case "ce-structured-1":
			g.Expect(envelope).To(HaveKeyWithValue("type", "com.example.invoice.paid"))
			g.Expect(envelope["data"]).To(Equal(map[string]any{"amount": 42.0}))
		}
	}

	// A CloudEvent without a type is refused with a message.
	status, answer = d.post(t, url, "application/cloudevents+json", `{"specversion":"1.0","id":"x","source":"/s"}`)
	g.Expect(status).To(Equal(http.StatusBadRequest))
	g.Expect(answer["error"]).To(ContainSubstring("type"))
}
