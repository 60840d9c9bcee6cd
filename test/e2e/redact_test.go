package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

// TestURLCredentialsAreRedacted: a receiver URL carrying ?token=s3cret whose
// deliveries fail with a connection error (Go's error quotes the URL) shows
// the token in none of the dispatcher's log, the endpoint's status, the
// namespace's Events and the delivery log; each shows the URL with
// token=REDACTED instead.
func TestURLCredentialsAreRedacted(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	closed := newRefusingPort(t)
	ep := endpoint(t, namespace, "tokened", closed.URL+"/hooks?token=s3cret&tenant=acme", []string{"*"}, disableAtFirstFailure)
	const shown = "/hooks?token=REDACTED&tenant=REDACTED"

	status, _ := d.publish(t, namespace, `{"id":"evt_tokened","type":"user.created","data":{}}`)
	g.Expect(status).To(Equal(http.StatusAccepted))

	// The delivery log: every attempt's error.
	g.Eventually(func(g Gomega) {
		response, err := http.Get(d.URL + "/v1/namespaces/" + namespace + "/events/evt_tokened")
		g.Expect(err).NotTo(HaveOccurred())
		defer response.Body.Close()
		body, err := io.ReadAll(response.Body)
		g.Expect(err).NotTo(HaveOccurred())
		var eventLog struct {
			Deliveries []struct {
				State    string
				Attempts []struct{ Error string }
			}
		}
		g.Expect(json.Unmarshal(body, &eventLog)).To(Succeed())
		g.Expect(eventLog.Deliveries).To(HaveLen(1))
		g.Expect(eventLog.Deliveries[0].State).To(Equal("failed"))
		g.Expect(eventLog.Deliveries[0].Attempts).To(HaveLen(2))
		for _, attempt := range eventLog.Deliveries[0].Attempts {
			g.Expect(attempt.Error).To(ContainSubstring(shown))
		}
		g.Expect(string(body)).NotTo(ContainSubstring("s3cret"))
	}).WithTimeout(20 * time.Second).Should(Succeed())

	// The status: lastFailureReason and the conditions' messages.
	g.Eventually(func(g Gomega) {
		g.Expect(condition(g, ep, hookrelayv1alpha1.ConditionDisabled)).To(Equal(metav1.ConditionTrue))
		g.Expect(ep.Status.LastFailureReason).To(ContainSubstring(shown))
		statusJSON, err := json.Marshal(ep.Status)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(string(statusJSON)).NotTo(ContainSubstring("s3cret"))
	}).WithTimeout(20 * time.Second).Should(Succeed())

	// The Events: the AutoDisabled warning quotes the last failure.
	g.Eventually(func(g Gomega) {
		var events corev1.EventList
		g.Expect(env.Client.List(t.Context(), &events, client.InNamespace(namespace))).To(Succeed())
		var autoDisabled []string
		for _, event := range events.Items {
			g.Expect(event.Message).NotTo(ContainSubstring("s3cret"), "Event %s", event.Reason)
			if event.Reason == hookrelayv1alpha1.ReasonAutoDisabled {
				autoDisabled = append(autoDisabled, event.Message)
			}
		}
		g.Expect(autoDisabled).To(ContainElement(ContainSubstring(shown)))
	}).WithTimeout(20 * time.Second).Should(Succeed())

	// The dispatcher's log, once it has written everything.
	d.stop(t)
	log, err := os.ReadFile(d.logPath)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(log)).To(ContainSubstring(shown), "the log shows the failed delivery")
	g.Expect(strings.Count(string(log), "s3cret")).To(BeZero(), "the log shows the token:\n%s", log)
}
