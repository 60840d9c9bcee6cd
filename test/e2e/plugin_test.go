package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

// TestPluginAttemptsAndReplay: `kubectl hookrelay attempts` shows each
// attempt of a delivery that failed twice and then succeeded; `kubectl
// hookrelay replay --since` delivers failed deliveries again; `retry` of a
// held delivery says why it is held.
func TestPluginAttemptsAndReplay(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	server := "--dispatcher-url=" + d.URL
	shortRetries := func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{{Duration: 50 * time.Millisecond}, {Duration: 50 * time.Millisecond}}}
	}

	flaky := newReceiver(t, func(n int) (int, time.Duration) {
		if n <= 2 {
			return http.StatusInternalServerError, 0
		}
		return http.StatusOK, 0
	})
	endpoint(t, namespace, "third-time", flaky.URL, []string{"order.*"}, shortRetries)
	out, err := kubectlHookrelay(t, "send", "-n", namespace, server, "--type", "order.created", "--id", "evt_third_time", "--data", `{"order":1}`)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(Equal("event evt_third_time accepted: 1 deliveries\n"))
	g.Eventually(flaky.eventIDs).WithTimeout(10 * time.Second).Should(HaveLen(3))

	g.Eventually(func(g Gomega) {
		out, err := kubectlHookrelay(t, "attempts", "evt_third_time", "-n", namespace, server)
		g.Expect(err).NotTo(HaveOccurred(), out)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		g.Expect(lines[0]).To(Equal("event evt_third_time (order.created), 1 deliveries"))
		g.Expect(strings.Fields(lines[2])).To(Equal([]string{"ENDPOINT", "DELIVERY", "STATE", "ATTEMPT", "STARTED", "STATUS", "DURATION", "ERROR", "RESPONSE"}))
		g.Expect(lines[3:]).To(HaveLen(3))
		for i, status := range []string{"500", "500", "200"} {
			fields := strings.Fields(lines[3+i])
			g.Expect(fields[0]).To(Equal("third-time"))
			g.Expect(fields[2]).To(Equal("succeeded"))
			g.Expect(fields[3]).To(Equal(fmt.Sprint(i + 1)))
			g.Expect(fields[5]).To(Equal(status))
			g.Expect(fields[6]).To(MatchRegexp(`^\d+\.\dms$`))
		}
	}).WithTimeout(10 * time.Second).Should(Succeed())

	// An attempt that never connects shows its error.
	dead := newRefusingPort(t)
	endpoint(t, namespace, "dead", dead.URL, []string{"refund.*"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		shortRetries(spec)
		spec.MaxInFlight = ptr.To[int32](1) // so that arrivals keep the replay's order
	})
	since := time.Now().UTC().Add(-time.Second).Format(time.RFC3339)
	for i := range 2 {
		out, err := kubectlHookrelay(t, "send", "-n", namespace, server, "--type", "refund.issued", "--id", fmt.Sprintf("evt_refund_%d", i))
		g.Expect(err).NotTo(HaveOccurred(), out)
	}
	g.Eventually(func(g Gomega) {
		out, err := kubectlHookrelay(t, "deliveries", "dead", "-n", namespace, server, "--state", "failed")
		g.Expect(err).NotTo(HaveOccurred(), out)
		g.Expect(regexp.MustCompile(`(?m)evt_refund_\d\s+failed\s+3`).FindAllString(out, -1)).To(HaveLen(2), out)
	}).WithTimeout(20 * time.Second).Should(Succeed())
	out, err = kubectlHookrelay(t, "attempts", "evt_refund_0", "-n", namespace, server)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("connect: connection refused"))

	// Replay them to a receiver that is back, at the same address; --wait
	// returns once both were attempted, quietly for so few off a terminal.
	back := dead.listen(t, answerWith(http.StatusOK))
	out, err = kubectlHookrelay(t, "replay", "dead", "-n", namespace, server, "--since", since, "--wait")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(MatchRegexp("^replaying 2 failed deliveries to dead created since \\S+\nall 2 replayed deliveries to dead were attempted\n$"))
	g.Expect(back.eventIDs()).To(Equal([]string{"evt_refund_0", "evt_refund_1"}))

	// A retry of a held delivery says it is held, and why.
	endpoint(t, namespace, "paused", flaky.URL, []string{"invoice.*"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) { spec.Paused = true })
	g.Eventually(func() (string, error) {
		return kubectlHookrelay(t, "send", "-n", namespace, server, "--type", "invoice.paid", "--id", "evt_paused")
	}).WithTimeout(10 * time.Second).Should(Equal("event evt_paused accepted: 1 deliveries\n"))
	var held string
	g.Eventually(func() (string, error) {
		held, err = kubectlHookrelay(t, "deliveries", "paused", "-n", namespace, server, "--state", "held", "-o", "jsonpath={.items[*].metadata.name}")
		return held, err
	}).WithTimeout(10 * time.Second).Should(MatchRegexp(`^dlv_\w+$`))
	out, err = kubectlHookrelay(t, "retry", held, "-n", namespace, server)
	g.Expect(err).To(HaveOccurred())
	g.Expect(out).To(Equal("error: delivery " + held + " is held, not retried: webhookendpoint paused is paused (spec.paused); " +
		"its held deliveries go out, oldest first, once it is unpaused\n"))

	// Errors say what is wrong.
	out, err = kubectlHookrelay(t, "replay", "dead", "-n", namespace, server, "--since", "yesterday")
	g.Expect(err).To(HaveOccurred())
	g.Expect(out).To(ContainSubstring(`--since "yesterday" is neither an RFC 3339 time`))
	out, err = kubectlHookrelay(t, "attempts", "evt_nope", "-n", namespace, server)
	g.Expect(err).To(HaveOccurred())
	g.Expect(out).To(ContainSubstring(`no event "evt_nope" in namespace`))
	// Nothing to list is said as kubectl get says it, and is not an error.
	out, err = kubectlHookrelay(t, "deliveries", "paused", "-n", namespace, server, "--state", "failed")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(Equal("No resources found in " + namespace + " namespace.\n"))
	out, err = kubectlHookrelay(t, "deliveries", "paused", "-n", namespace, server, "--state", "failed", "-o", "name")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(BeEmpty())
	out, err = kubectlHookrelay(t, "deliveries", "nope", "-n", namespace, server)
	g.Expect(err).To(HaveOccurred())
	g.Expect(out).To(Equal(`Error from server (NotFound): webhookendpoints.hookrelay.dev "nope" not found` + "\n"))
}

// TestPluginReplayWaitProgress: `replay --wait` of 100 deliveries or more
// says on stderr how many of them were attempted while some are not, and
// returns once all were.
func TestPluginReplayWaitProgress(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	const replayed = 100
	dead := newRefusingPort(t)
	endpoint(t, namespace, "many", dead.URL, []string{"refund.*"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{{Duration: 10 * time.Millisecond}}}
		spec.AutoDisable = &hookrelayv1alpha1.AutoDisablePolicy{AfterConsecutiveFailures: ptr.To[int32](0)}
	})
	since := time.Now().UTC().Add(-time.Second).Format(time.RFC3339)
	for i := range replayed {
		g.Eventually(func() int {
			status, _ := d.publish(t, namespace, fmt.Sprintf(`{"id":"evt_many_%d","type":"refund.issued","data":{}}`, i))
			return status
		}).WithTimeout(10 * time.Second).Should(Equal(http.StatusAccepted))
	}
	g.Eventually(func() (string, error) {
		return kubectlHookrelay(t, "deliveries", "many", "-n", namespace, "--dispatcher-url="+d.URL, "--state", "failed", "--limit", "500",
			"-o", "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}")
	}).WithTimeout(30 * time.Second).Should(WithTransform(func(out string) int { return strings.Count(out, "\n") }, Equal(replayed)))

	// The receiver back holds the replayed attempts until the progress was
	// seen, so that some are still pending when the plugin first looks.
	release := make(chan struct{})
	var releaseOnce sync.Once
	dead.listen(t, func(int) (int, time.Duration) {
		<-release
		return http.StatusOK, 0
	})
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", "hookrelay", "replay", "many", "-n", namespace, "--dispatcher-url="+d.URL, "--since", since, "--wait")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(cmd.Start()).To(Succeed())
	lines := bufio.NewScanner(stderr)
	g.Expect(lines.Scan()).To(BeTrue(), "stderr ended without a progress line")
	g.Expect(lines.Text()).To(MatchRegexp(`^replay: \d+ of 100 deliveries to many attempted$`))
	releaseOnce.Do(func() { close(release) })
	for lines.Scan() {
		g.Expect(lines.Text()).To(MatchRegexp(`^replay: \d+ of 100 deliveries to many attempted$`))
	}
	g.Expect(cmd.Wait()).To(Succeed(), stdout.String())
	g.Expect(stdout.String()).To(MatchRegexp("^replaying 100 failed deliveries to many created since \\S+\nall 100 replayed deliveries to many were attempted\n$"))
}
