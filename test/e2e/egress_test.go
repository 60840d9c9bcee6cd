package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

// TestEgressRefusesInternalAddresses: deliveries to the metadata service, a
// private address, and a name that resolves to loopback are refused before
// any connection, and the attempt log says why; allow-listed, loopback works.
func TestEgressRefusesInternalAddresses(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	dataDir := t.TempDir()
	d := startDispatcher(t, dataDir, "--egress-allow-cidr=") // nothing allow-listed

	var connections atomic.Int32
	r := newReceiver(t, answerWith(http.StatusOK))
	r.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			connections.Add(1)
		}
	}
	receiverURL, err := url.Parse(r.URL)
	g.Expect(err).NotTo(HaveOccurred())
	oneRetry := func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{{Duration: 10 * time.Millisecond}}}
	}
	endpoint(t, namespace, "metadata", "http://169.254.169.254/latest/meta-data", []string{"probe.metadata"}, oneRetry)
	endpoint(t, namespace, "private", "http://10.0.0.1/hooks", []string{"probe.private"}, oneRetry)
	endpoint(t, namespace, "by-name", "http://localhost:"+receiverURL.Port()+"/hooks", []string{"probe.by-name"}, oneRetry)

	for eventType, want := range map[string]string{
		"probe.metadata": "egress refused: 169.254.169.254 is a cloud metadata address",
		"probe.private":  "egress refused: 10.0.0.1 is a private (RFC 1918) address",
		"probe.by-name":  "is a loopback address",
	} {
		status, _ := d.publish(t, namespace, `{"id":"evt_`+eventType+`","type":"`+eventType+`","data":{}}`)
		g.Expect(status).To(Equal(http.StatusAccepted))
		g.Eventually(func(g Gomega) {
			response, err := http.Get(d.URL + "/v1/namespaces/" + namespace + "/events/evt_" + eventType)
			g.Expect(err).NotTo(HaveOccurred())
			defer response.Body.Close()
			var eventLog struct {
				Deliveries []struct {
					State    string
					Attempts []struct{ Error string }
				}
			}
			g.Expect(json.NewDecoder(response.Body).Decode(&eventLog)).To(Succeed())
			g.Expect(eventLog.Deliveries).To(HaveLen(1))
			g.Expect(eventLog.Deliveries[0].State).To(Equal("failed"))
			g.Expect(eventLog.Deliveries[0].Attempts).To(HaveLen(2))
			g.Expect(eventLog.Deliveries[0].Attempts[1].Error).To(ContainSubstring(want))
		}).WithTimeout(20*time.Second).Should(Succeed(), eventType)
	}
	g.Expect(connections.Load()).To(BeZero(), "a refused delivery connected to the receiver")
	g.Expect(r.got()).To(BeEmpty())

	// With loopback allow-listed, the same endpoint is delivered to.
	d.stop(t)
	d = startDispatcher(t, dataDir)
	status, _ := d.publish(t, namespace, `{"id":"evt_allowed","type":"probe.by-name","data":{}}`)
	g.Expect(status).To(Equal(http.StatusAccepted))
	g.Eventually(r.eventIDs).WithTimeout(20 * time.Second).Should(Equal([]string{"evt_allowed"}))
}
