package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/pgtest"
	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// orderCreated is the event the replica tests publish.
func orderCreated(prefix string) func(n int) (string, string) {
	return func(n int) (string, string) {
		id := fmt.Sprintf("evt_%s_%05d", prefix, n)
		return id, fmt.Sprintf(`{"id":%q,"type":"order.created","data":{"n":%d}}`, id, n)
	}
}

// TestReplicasDeliverEachEventOncePerEndpoint: 5,000 events published
// round-robin to three replicas, with two endpoints subscribed, reach each
// endpoint exactly once, signed, as with one dispatcher on bbolt.
func TestReplicasDeliverEachEventOncePerEndpoint(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	replicas := startReplicas(t, false)
	var receivers []*receiver
	var secrets []string
	for _, name := range []string{"fan-a", "fan-b"} {
		r := newReceiver(t, answerWith(http.StatusOK))
		secrets = append(secrets, secretOf(t, endpoint(t, namespace, name, r.URL, []string{"order.created"}, nil)))
		receivers = append(receivers, r)
	}

	const total = 5000
	accepted, failed := replicas.publishAll(namespace, total, 6, false, orderCreated("fan"))
	g.Expect(failed).To(BeEmpty(), "every publish to a live replica is accepted")
	g.Expect(accepted).To(HaveLen(total))
	for i, r := range receivers {
		g.Eventually(func() string { return undelivered(r, accepted) }).WithTimeout(5*time.Minute).WithPolling(200*time.Millisecond).
			Should(BeEmpty(), "endpoint %d", i)
	}
	for i, r := range receivers {
		deliveries := r.got()
		g.Expect(deliveries).To(HaveLen(total), "no replica died: endpoint %d gets no duplicate", i)
		for _, d := range deliveries {
			g.Expect(verifyPrefixed(d.Header, "Hookrelay", secrets[i], d.Body)).To(Succeed(), d.EventID())
			g.Expect(verifyStandard(d.Header, secrets[i], d.Body)).To(Succeed(), d.EventID())
		}
	}
}

// TestReplicasDisableAfterThresholdAcrossReplicas: an endpoint that always
// fails, whose events are accepted by different replicas, is disabled after
// exactly 5 failed deliveries: its owner alone counts them.
func TestReplicasDisableAfterThresholdAcrossReplicas(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	replicas := startReplicas(t, false)
	failing := newReceiver(t, answerWith(http.StatusInternalServerError))
	// A delivery gets at least two attempts (a schedule has one step or
	// more); Strict ordering makes the deliveries fail one after the other,
	// so none is attempted once the fifth has failed.
	ep := endpoint(t, namespace, "failing", failing.URL, []string{"*"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.Retry = &hookrelayv1alpha1.RetryPolicy{Schedule: []metav1.Duration{{Duration: 10 * time.Millisecond}}, JitterPercent: ptr.To[int32](0)}
		spec.AutoDisable = &hookrelayv1alpha1.AutoDisablePolicy{AfterConsecutiveFailures: ptr.To[int32](5)}
		spec.Delivery = &hookrelayv1alpha1.DeliveryPolicy{Ordering: hookrelayv1alpha1.OrderingStrict}
	})

	const total, threshold, attemptsPerDelivery = 8, 5, 2
	for n := range total {
		// Event n goes to replica n mod 3: all three accept some.
		_, body := orderCreated("failing")(n)
		_, err := replicas.publishOnce(namespace, n, body, false)
		g.Expect(err).NotTo(HaveOccurred())
	}
	g.Eventually(func(g Gomega) metav1.ConditionStatus { return condition(g, ep, hookrelayv1alpha1.ConditionDisabled) }).
		WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Equal(metav1.ConditionTrue))
	g.Expect(ep.Status.ConsecutiveFailures).To(Equal(int32(threshold)))
	// Every replica serves the delivery log: ask one that may not own the
	// endpoint.
	g.Eventually(func(g Gomega) []int {
		return []int{
			len(deliveriesIn(g, replicas[1], namespace, "failing", store.Failed)),
			len(deliveriesIn(g, replicas[1], namespace, "failing", store.Held)),
		}
	}).WithTimeout(20*time.Second).WithPolling(100*time.Millisecond).Should(Equal([]int{threshold, total - threshold}), "failed, held")
	g.Expect(failing.got()).To(HaveLen(threshold*attemptsPerDelivery), "no attempt after the fifth failed delivery")
}

// deliveriesIn lists an endpoint's deliveries in a state from a replica's
// delivery log.
func deliveriesIn(g Gomega, r *replica, namespace, endpoint string, state store.State) []dispatcherapi.Delivery {
	d := r.dispatcher()
	g.Expect(d).NotTo(BeNil(), r.name+" is down")
	response, err := replicaClient.Get(fmt.Sprintf("%s/v1/namespaces/%s/endpoints/%s/deliveries?state=%s&limit=500", d.URL, namespace, endpoint, state))
	g.Expect(err).NotTo(HaveOccurred())
	defer response.Body.Close()
	g.Expect(response.StatusCode).To(Equal(http.StatusOK))
	var page dispatcherapi.DeliveryPage
	g.Expect(json.NewDecoder(response.Body).Decode(&page)).To(Succeed())
	return page.Deliveries
}

// TestReplicaKilledMidLoad: kill -9 of the replica owning a busy endpoint
// loses no accepted event; another replica takes the endpoint over and
// delivers within 15 s of the kill; the duplicates are at most the attempts
// that were in flight at the kill.
//
// An attempt is in flight until its record is stored, which the engine
// does after the answer, in batches: the test stalls the receiver and
// kills once every answered attempt is recorded, so that the attempts in
// flight are the stalled ones, which it can count.
func TestReplicaKilledMidLoad(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	replicas := startReplicas(t, false)
	var stalled atomic.Bool
	var waiting atomic.Int32
	stall := make(chan struct{})
	busy := newReceiver(t, func(int) (int, time.Duration) {
		if stalled.Load() {
			waiting.Add(1)
			<-stall
		}
		// A slow receiver keeps attempts in flight.
		return http.StatusOK, 10 * time.Millisecond
	})
	unstall := sync.OnceFunc(func() { close(stall) })
	// Before the receiver closes, which waits for its handlers.
	t.Cleanup(unstall)
	const maxInFlight = 4
	endpoint(t, namespace, "busy", busy.URL, []string{"order.created"}, func(spec *hookrelayv1alpha1.WebhookEndpointSpec) {
		spec.MaxInFlight = ptr.To[int32](maxInFlight)
	})
	owner := replicas.owner(t, namespace, "busy")
	witness := replicas.others(owner)[0]

	const total = 400
	var accepted []string
	var failed []error
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		// A publish to the killed replica is retried on the next one.
		accepted, failed = replicas.publishAll(namespace, total, 4, true, orderCreated("busy"))
	}()
	g.Eventually(func() int { return len(busy.got()) }).WithTimeout(60 * time.Second).WithPolling(5 * time.Millisecond).
		Should(BeNumerically(">=", 50))
	stalled.Store(true)
	g.Eventually(func(g Gomega) {
		answered := len(busy.got()) - int(waiting.Load())
		g.Expect(deliveriesIn(g, witness, namespace, "busy", store.Succeeded)).To(HaveLen(answered))
	}).WithTimeout(30*time.Second).WithPolling(20*time.Millisecond).Should(Succeed(), "every answered attempt is recorded")
	owner.kill()
	killedAt := time.Now()
	inFlight := int(waiting.Load())
	unstall()
	t.Logf("killed %s, the owner of busy, with %d deliveries received and %d attempts in flight", owner.name, len(busy.got()), inFlight)

	// An event accepted after the kill can only be delivered by a new owner.
	g.Expect(witness.publish(namespace, `{"id":"evt_after_kill","type":"order.created","data":{}}`).accepted()).To(BeTrue())
	g.Eventually(func() map[string]int { return tally(busy) }).WithTimeout(time.Until(killedAt.Add(15*time.Second))).WithPolling(20*time.Millisecond).
		Should(HaveKey("evt_after_kill"), "delivery resumes within 15 s of the kill")
	t.Logf("%s took busy over", replicas.owner(t, namespace, "busy").name)

	<-loaded
	g.Expect(failed).To(BeEmpty(), "a publish refused by the killed replica is accepted by the next")
	g.Expect(accepted).To(HaveLen(total))
	g.Eventually(func() string { return undelivered(busy, accepted) }).WithTimeout(2 * time.Minute).WithPolling(100 * time.Millisecond).Should(BeEmpty())
	extra := duplicates(busy)
	t.Logf("%d duplicate deliveries after the kill, %d attempts in flight, maxInFlight %d", extra, inFlight, maxInFlight)
	logDuplicates(t, busy, killedAt)
	g.Expect(extra).To(BeNumerically("<=", inFlight), "only the attempts in flight at the kill are made again")
	g.Expect(extra).To(BeNumerically("<=", maxInFlight))
}

// logDuplicates shows when each copy of a duplicated delivery arrived,
// relative to the kill.
func logDuplicates(t *testing.T, r *receiver, killedAt time.Time) {
	arrivals := map[string][]time.Duration{}
	for _, d := range r.got() {
		arrivals[d.EventID()] = append(arrivals[d.EventID()], d.At.Sub(killedAt))
	}
	for id, at := range arrivals {
		if len(at) > 1 {
			t.Logf("%s arrived %v after the kill", id, at)
		}
	}
}

// TestReplicaLosingTheDatabase: a replica cut off from PostgreSQL answers
// publishes with 503 and Retry-After and is not ready; another replica
// takes its endpoints over; once the connection is back, it is ready and
// accepts again.
func TestReplicaLosingTheDatabase(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	replicas := startReplicas(t, true)
	r := newReceiver(t, answerWith(http.StatusOK))
	endpoint(t, namespace, "moved", r.URL, []string{"order.created"}, nil)
	partition := store.Partition(namespace, "moved")
	cut := replicas.owner(t, namespace, "moved")
	t.Logf("cutting %s, the owner of moved (partition %d), off the database", cut.name, partition)
	cut.proxy.cut()

	g.Eventually(func(g Gomega) {
		result := cut.publish(namespace, `{"type":"order.created","data":{}}`)
		g.Expect(result.err).NotTo(HaveOccurred())
		g.Expect(result.status).To(Equal(http.StatusServiceUnavailable))
		g.Expect(result.retryAfter).NotTo(BeEmpty())
		g.Expect(cut.readyz(g)).To(Equal(http.StatusServiceUnavailable))
	}).WithTimeout(10*time.Second).WithPolling(100*time.Millisecond).Should(Succeed(), "the cut replica refuses publishes and is not ready")
	// No double owner: the cut replica owns nothing once another has its
	// partition.
	g.Eventually(func(g Gomega) {
		g.Expect(cut.dispatcher().metric(g, "hookrelay_partitions_owned")).To(Equal("0"))
		g.Expect(replicas.ownersOf(g, partition)).To(ConsistOf(Not(Equal(cut.name))))
	}).WithTimeout(15 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())

	other := replicas.others(cut)[0]
	g.Expect(other.publish(namespace, `{"id":"evt_while_cut","type":"order.created","data":{}}`).accepted()).To(BeTrue())
	g.Eventually(func() map[string]int { return tally(r) }).WithTimeout(15*time.Second).WithPolling(20*time.Millisecond).
		Should(HaveKeyWithValue("evt_while_cut", 1), "the new owner delivers")

	cut.proxy.restore(t)
	g.Eventually(cut.readyz).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Equal(http.StatusOK))
	publishAfterRestore := func() publishResult {
		return cut.publish(namespace, `{"id":"evt_after_restore","type":"order.created","data":{}}`)
	}
	g.Eventually(publishAfterRestore).WithTimeout(10 * time.Second).WithPolling(100 * time.Millisecond).
		Should(WithTransform(publishResult.accepted, BeTrue()))
	g.Eventually(func() map[string]int { return tally(r) }).WithTimeout(15 * time.Second).WithPolling(20 * time.Millisecond).
		Should(HaveKeyWithValue("evt_after_restore", 1))
	g.Expect(tally(r)).To(HaveKeyWithValue("evt_while_cut", 1), "delivered once")
}

// TestReplicasRollingRestart: all three replicas restarted one at a time
// with SIGTERM under load, with a publisher that retries a refused or
// failed publish once on another replica: every publish is accepted in
// the end, and every accepted event is delivered.
func TestReplicasRollingRestart(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	replicas := startReplicas(t, false)
	var receivers []*receiver
	for _, name := range []string{"rolling-a", "rolling-b"} {
		r := newReceiver(t, answerWith(http.StatusOK))
		endpoint(t, namespace, name, r.URL, []string{"order.created"}, nil)
		receivers = append(receivers, r)
	}

	// The publisher runs until the restarts are over (or the test ends),
	// at a steady pace a 2-core machine keeps up with.
	restarted := make(chan struct{})
	var mu sync.Mutex
	var accepted []string
	var failed, retried []error
	var publishing sync.WaitGroup
	stopPublishing := sync.OnceFunc(func() {
		close(restarted)
		publishing.Wait()
	})
	t.Cleanup(stopPublishing)
	publishing.Go(func() {
		pace := time.NewTicker(20 * time.Millisecond)
		defer pace.Stop()
		event := orderCreated("rolling")
		for n := 0; ; n++ {
			select {
			case <-restarted:
				return
			case <-pace.C:
			}
			id, body := event(n)
			refusals, err := replicas.publishOnce(namespace, n, body, true)
			mu.Lock()
			if err == nil && len(refusals) > 0 {
				retried = append(retried, refusals[0])
			}
			if err == nil {
				accepted = append(accepted, id)
			} else {
				failed = append(failed, fmt.Errorf("%s: %w", id, err))
			}
			mu.Unlock()
		}
	})
	for _, r := range replicas {
		r.stop(t)
		r.start(t)
		t.Logf("restarted %s", r.name)
	}
	stopPublishing()

	g.Expect(failed).To(BeEmpty(), "every publish is accepted by one replica or the next")
	t.Logf("%d events accepted during the rolling restart, %d of them on the second try, after %v",
		len(accepted), len(retried), retried[:min(len(retried), 5)])
	g.Expect(accepted).NotTo(BeEmpty())
	for i, r := range receivers {
		g.Eventually(func() string { return undelivered(r, accepted) }).WithTimeout(2*time.Minute).WithPolling(100*time.Millisecond).
			Should(BeEmpty(), "endpoint %d", i)
		t.Logf("endpoint %d: %d duplicate deliveries", i, duplicates(r))
	}
}

// TestReplicaProxyCutsAndRestores checks the harness: a connection through
// the proxy works, fails once the proxy is cut, and a new one works after
// it is restored.
func TestReplicaProxyCutsAndRestores(t *testing.T) {
	g := NewWithT(t)
	p := newPGProxy(t, pgtest.Database(t))
	query := func(conn *pgx.Conn) error {
		var one int
		return conn.QueryRow(t.Context(), "SELECT 1").Scan(&one)
	}
	conn, err := pgx.Connect(t.Context(), p.dsn)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(query(conn)).To(Succeed())
	p.cut()
	g.Expect(query(conn)).NotTo(Succeed(), "the forwarded connection is closed")
	_, err = pgx.Connect(t.Context(), p.dsn)
	g.Expect(err).To(HaveOccurred(), "new connections are refused")
	p.restore(t)
	conn, err = pgx.Connect(t.Context(), p.dsn)
	g.Expect(err).NotTo(HaveOccurred())
	defer conn.Close(t.Context())
	g.Expect(query(conn)).To(Succeed())
}
