package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/pgtest"
)

// TestPostgresStoreDeliversAndSurvivesRestart: with --store=postgres (the
// DSN in a file, as a mounted Secret gives it), events are delivered and
// signed as with bbolt; a delivery still being retried when the dispatcher
// stops is delivered by a new one on the same database, which starts with
// an empty --data-dir: the database alone carries what was accepted.
func TestPostgresStoreDeliversAndSurvivesRestart(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	// A Secret's key often ends in a newline.
	if err := os.WriteFile(dsnFile, []byte(pgtest.Database(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	postgres := []string{"--store=postgres", "--postgres-dsn-file=" + dsnFile}
	first := startDispatcher(t, t.TempDir(), postgres...)

	healthy := newReceiver(t, answerWith(http.StatusOK))
	flaky := newReceiver(t, answerWith(http.StatusServiceUnavailable))
	healthyEndpoint := endpoint(t, namespace, "healthy", healthy.URL, []string{"order.created"}, nil)
	// Retries a second apart, more than the test needs: the delivery is
	// still pending when the first dispatcher stops.
	flakyEndpoint := endpoint(t, namespace, "flaky", flaky.URL, []string{"order.paid"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		schedule := make([]metav1.Duration, 20)
		for i := range schedule {
			schedule[i] = metav1.Duration{Duration: time.Second}
		}
		spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: schedule, JitterPercent: ptr.To[int32](0)}
	})

	const events = 20
	var published []string
	for i := range events {
		id := fmt.Sprintf("evt_pg_%02d", i)
		status, answer := first.publish(t, namespace, fmt.Sprintf(`{"id":%q,"type":"order.created","data":{"n":%d}}`, id, i))
		g.Expect(status).To(Equal(http.StatusAccepted))
		g.Expect(answer["deliveries"]).To(Equal(1.0))
		published = append(published, id)
	}
	g.Eventually(healthy.eventIDs).WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(ConsistOf(published))
	key := secretOf(t, healthyEndpoint)
	for _, d := range healthy.got() {
		g.Expect(verifyPrefixed(d.Header, "Hookrelay", key, d.Body)).To(Succeed(), d.EventID())
		g.Expect(verifyStandard(d.Header, key, d.Body)).To(Succeed(), d.EventID())
	}

	status, _ := first.publish(t, namespace, `{"id":"evt_pg_retried","type":"order.paid","data":{}}`)
	g.Expect(status).To(Equal(http.StatusAccepted))
	g.Eventually(flaky.eventIDs).WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(ContainElement("evt_pg_retried"))
	first.stop(t)
	// Only the second dispatcher can see this answer.
	failedAttempts := len(flaky.got())
	flaky.setAnswer(answerWith(http.StatusOK))

	startDispatcher(t, t.TempDir(), postgres...)
	g.Eventually(func() int { return len(flaky.got()) }).WithTimeout(30*time.Second).WithPolling(50*time.Millisecond).
		Should(BeNumerically(">", failedAttempts), "the retry after the restart")
	delivered := flaky.got()[failedAttempts]
	g.Expect(delivered.EventID()).To(Equal("evt_pg_retried"))
	flakyKey := secretOf(t, flakyEndpoint)
	g.Expect(verifyPrefixed(delivered.Header, "Hookrelay", flakyKey, delivered.Body)).To(Succeed())
	g.Expect(verifyStandard(delivered.Header, flakyKey, delivered.Body)).To(Succeed())
	g.Expect(healthy.got()).To(HaveLen(events), "no event delivered again after the restart")
}
