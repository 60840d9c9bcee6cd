package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

// eventLogOf reads an event's deliveries and attempts from the read API.
type loggedDelivery struct {
	Endpoint    string
	State       string
	Interrupted int
	Attempts    []struct {
		Number int
		Error  string
	}
}

func eventLogOf(g Gomega, d *dispatcher, namespace, id string) map[string]loggedDelivery {
	response, err := http.Get(d.URL + "/v1/namespaces/" + namespace + "/events/" + id)
	g.Expect(err).NotTo(HaveOccurred())
	defer response.Body.Close()
	g.Expect(response.StatusCode).To(Equal(http.StatusOK))
	var eventLog struct{ Deliveries []loggedDelivery }
	g.Expect(json.NewDecoder(response.Body).Decode(&eventLog)).To(Succeed())
	byEndpoint := map[string]loggedDelivery{}
	for _, delivery := range eventLog.Deliveries {
		byEndpoint[delivery.Endpoint] = delivery
	}
	return byEndpoint
}

// rssWatch polls a process's resident set size (VmRSS) until stopped.
type rssWatch struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	maxKiB  int64
	samples int
}

func watchRSS(pid int) *rssWatch {
	w := &rssWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		ticker := time.NewTicker(2 * time.Millisecond)
		defer ticker.Stop()
		for {
			if kib, ok := vmRSS(pid); ok {
				w.mu.Lock()
				w.maxKiB, w.samples = max(w.maxKiB, kib), w.samples+1
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-ticker.C:
			}
		}
	}()
	return w
}

func (w *rssWatch) peak() (kib int64, samples int) {
	close(w.stop)
	<-w.done
	return w.maxKiB, w.samples
}

func vmRSS(pid int) (int64, bool) {
	file, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	defer file.Close()
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		if value, ok := strings.CutPrefix(scanner.Text(), "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
			return kib, err == nil
		}
	}
	return 0, false
}

// publishRoutes writes a routes shard and a keys shard into namespace by
// hand, as no controller would: nothing checks the endpoints' transforms.
func publishRoutes(t *testing.T, namespace string, endpoints ...routes.Endpoint) {
	t.Helper()
	keys := []routes.Key{{Secret: whsec.Encode([]byte("0123456789abcdef01234567"))}}
	encodedKeys, err := routes.EncodeKeys(routes.KeysEntry{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	routeData, keyData := map[string]string{}, map[string][]byte{}
	for _, endpoint := range endpoints {
		endpoint.KeysVersion = routes.KeysVersion(keys)
		encoded, err := routes.EncodeEndpoint(endpoint)
		if err != nil {
			t.Fatal(err)
		}
		entry := routes.EntryKey(endpoint.Namespace, endpoint.Name)
		routeData[entry], keyData[entry] = string(encoded), encodedKeys
	}
	for _, shard := range []client.Object{
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: routes.KeysShardPrefix + "0", Labels: map[string]string{routes.LabelKeys: "true"}},
			Data:       keyData,
		},
		&corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: routes.RoutesShardPrefix + "0", Labels: map[string]string{routes.LabelRoutes: "true"}},
			Data:       routeData,
		},
	} {
		if err := env.Client.Create(context.Background(), shard); err != nil {
			t.Fatal(err)
		}
	}
}

// bombTransform would build 2 GiB in one replace on "user.created": under
// 5,000 characters, refused at admission by its estimated cost.
var bombTransform = fmt.Sprintf(`{"x": event.type.replace('', '%s').replace('', '%s').replace('', '%s')}`,
	strings.Repeat("x", 200), strings.Repeat("x", 200), strings.Repeat("x", 4000))

// TestBombRouteFailsOnlyItsDelivery publishes, bypassing admission and the
// controllers, a route whose transform would allocate gigabytes: its
// deliveries fail with a clear error, the other endpoint gets every event,
// and the dispatcher's resident memory stays under 300 MiB throughout.
func TestBombRouteFailsOnlyItsDelivery(t *testing.T) {
	g := NewWithT(t)
	routesNS, tenant := env.Namespace(t), env.Namespace(t)
	bombReceiver := newReceiver(t, answerWith(http.StatusOK))
	healthy := newReceiver(t, answerWith(http.StatusOK))
	route := func(name, url, transform string) routes.Endpoint {
		return routes.Endpoint{
			Namespace: tenant, Name: name, UID: "uid-" + name, Generation: 1, URL: url,
			Timeout:       metav1.Duration{Duration: 10 * time.Second},
			RetrySchedule: []metav1.Duration{{Duration: 100 * time.Millisecond}},
			MaxInFlight:   4, Transform: transform,
			Subscriptions: []routes.Subscription{{Name: name, Generation: 1, EventTypes: []string{"user.*"}}},
		}
	}
	publishRoutes(t, routesNS, route("bomb", bombReceiver.URL, bombTransform), route("healthy", healthy.URL, ""))

	d := startDispatcher(t, t.TempDir(), "--namespace="+routesNS)
	rss := watchRSS(d.cmd.Process.Pid)
	g.Eventually(func() int {
		status, _ := d.publish(t, tenant, `{"type":"probe.none","data":{}}`)
		return status
	}).WithTimeout(30*time.Second).WithPolling(50*time.Millisecond).Should(Equal(http.StatusAccepted), "publishing to %s", tenant)

	const events = 5
	for i := range events {
		status, answer := d.publish(t, tenant, fmt.Sprintf(`{"id":"evt_bomb_%d","type":"user.created","data":{}}`, i))
		g.Expect(status).To(Equal(http.StatusAccepted))
		g.Expect(answer["deliveries"]).To(Equal(2.0))
	}
	g.Eventually(healthy.eventIDs).WithTimeout(30 * time.Second).Should(HaveLen(events))
	failures := map[int]string{}
	for i := range events {
		g.Eventually(func(g Gomega) {
			bomb := eventLogOf(g, d, tenant, fmt.Sprintf("evt_bomb_%d", i))["bomb"]
			g.Expect(bomb.State).To(Equal("failed"))
			g.Expect(bomb.Attempts).To(HaveLen(2))
			failures[i] = bomb.Attempts[1].Error
		}).WithTimeout(2 * time.Minute).WithPolling(50 * time.Millisecond).Should(Succeed())
	}
	g.Expect(bombReceiver.got()).To(BeEmpty())

	peak, samples := rss.peak()
	t.Logf("dispatcher peak RSS %d MiB over %d samples", peak>>10, samples)
	g.Expect(samples).To(BeNumerically(">", 10))
	g.Expect(peak).To(BeNumerically("<", 300<<10), "peak VmRSS in KiB")
	select {
	case <-d.done:
		t.Fatal("the dispatcher exited")
	default:
	}
	for i, failure := range failures {
		// Two gigabytes, refused before they are allocated.
		g.Expect(failure).To(MatchRegexp(`^transform: replace would build a string of 2\d{9} bytes or more, over the limit of 1048576$`), "event %d", i)
	}
}

// TestPoisonedDeliveryIsNotAttemptedAgain kills the dispatcher three times
// while the receiver holds an attempt of one delivery open; the fourth
// start fails that delivery as Poisoned without attempting it, and another
// endpoint's deliveries keep arriving.
func TestPoisonedDeliveryIsNotAttemptedAgain(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	dataDir := t.TempDir()
	hanging := newReceiver(t, func(int) (int, time.Duration) { return http.StatusOK, time.Minute })
	healthy := newReceiver(t, answerWith(http.StatusOK))
	d := startDispatcher(t, dataDir)
	spec := func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.Timeout = &metav1.Duration{Duration: 30 * time.Second}
		spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{{Duration: 100 * time.Millisecond}}}
	}
	hangingEndpoint := endpoint(t, namespace, "hanging", hanging.URL, []string{"hang.*"}, spec)
	endpoint(t, namespace, "healthy", healthy.URL, []string{"order.*"}, spec)

	status, _ := d.publish(t, namespace, `{"id":"evt_poison","type":"hang.now","data":{}}`)
	g.Expect(status).To(Equal(http.StatusAccepted))
	for crash := 1; crash <= 3; crash++ {
		if crash > 1 {
			d = startDispatcher(t, dataDir)
		}
		g.Eventually(hanging.eventIDs).WithTimeout(30*time.Second).WithPolling(10*time.Millisecond).
			Should(HaveLen(crash), "attempt in flight before crash %d", crash)
		d.kill()
	}

	d = startDispatcher(t, dataDir)
	g.Eventually(func(g Gomega) {
		delivery := eventLogOf(g, d, namespace, "evt_poison")["hanging"]
		g.Expect(delivery.State).To(Equal("failed"))
		g.Expect(delivery.Interrupted).To(Equal(3))
		g.Expect(delivery.Attempts).To(HaveLen(1))
		g.Expect(delivery.Attempts[0].Number).To(Equal(1))
		g.Expect(delivery.Attempts[0].Error).To(HavePrefix(hookrelayv1alpha1.ReasonPoisoned + ": the dispatcher stopped while an attempt of this delivery was in flight, 3 times"))
	}).WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())

	// Deliveries to the other endpoint keep arriving; by the time they have,
	// the poisoned one would have been attempted again if it were.
	for i := range 3 {
		status, _ := d.publish(t, namespace, fmt.Sprintf(`{"id":"evt_after_poison_%d","type":"order.created","data":{}}`, i))
		g.Expect(status).To(Equal(http.StatusAccepted))
	}
	g.Eventually(healthy.eventIDs).WithTimeout(30 * time.Second).Should(HaveLen(3))
	g.Expect(hanging.got()).To(HaveLen(3), "the poisoned delivery was attempted again")

	// It counts as a failed delivery on the endpoint's status.
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(context.Background(), clientKey(hangingEndpoint), hangingEndpoint)).To(Succeed())
		g.Expect(hangingEndpoint.Status.ConsecutiveFailures).To(Equal(int32(1)))
		g.Expect(hangingEndpoint.Status.LastFailureReason).To(HavePrefix(hookrelayv1alpha1.ReasonPoisoned + ": "))
	}).WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	log, err := os.ReadFile(d.logPath)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(strings.Count(string(log), "delivery poisoned")).To(Equal(1), "logged once")
}
