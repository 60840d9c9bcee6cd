package e2e

import (
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// TestConcurrentRetriesDeliverOnce: four concurrent retries of one finished
// delivery: one is accepted, three get 409, the receiver gets one more
// delivery, and the log keeps every attempt under its own number.
func TestConcurrentRetriesDeliverOnce(t *testing.T) {
	g := NewWithT(t)
	namespace := env.Namespace(t)
	d := startDispatcher(t, t.TempDir())
	// The retried attempt (the receiver's second delivery) stays in flight
	// until every retry has its answer: a retry that came after it finished
	// would rightly be a second retry, and the race would decide how many.
	released := make(chan struct{})
	release := sync.OnceFunc(func() { close(released) })
	r := newReceiver(t, func(n int) (int, time.Duration) {
		if n == 2 {
			<-released
		}
		return http.StatusOK, 0
	})
	t.Cleanup(release) // before the receiver's Close, which waits for its handlers
	endpoint(t, namespace, "retried", r.URL, []string{"*"}, nil)

	status, _ := d.publish(t, namespace, `{"id":"evt_retried","type":"order.created","data":{}}`)
	g.Expect(status).To(Equal(http.StatusAccepted))
	var deliveryID string
	g.Eventually(func(g Gomega) {
		log := eventLog(g, d, namespace, "evt_retried")
		g.Expect(log.Deliveries).To(HaveLen(1))
		g.Expect(log.Deliveries[0].State).To(Equal("succeeded"))
		deliveryID = log.Deliveries[0].ID
	}).WithTimeout(10 * time.Second).WithPolling(20 * time.Millisecond).Should(Succeed())

	const retries = 4
	statuses := make(chan int, retries)
	var wg sync.WaitGroup
	for range retries {
		wg.Go(func() {
			response, err := http.Post(d.URL+"/v1/namespaces/"+namespace+"/deliveries/"+deliveryID+"/retry", "application/json", nil)
			if err != nil {
				t.Error(err)
				return
			}
			response.Body.Close()
			statuses <- response.StatusCode
		})
	}
	wg.Wait()
	release()
	close(statuses)
	var got []int
	for status := range statuses {
		got = append(got, status)
	}
	g.Expect(got).To(ConsistOf(http.StatusAccepted, http.StatusConflict, http.StatusConflict, http.StatusConflict))

	// Once the log holds the second attempt, the receiver has it too; the
	// refused retries started none.
	g.Eventually(func(g Gomega) {
		log := eventLog(g, d, namespace, "evt_retried")
		g.Expect(log.Deliveries[0].State).To(Equal("succeeded"))
		var numbers []int
		for _, attempt := range log.Deliveries[0].Attempts {
			numbers = append(numbers, attempt.Number)
		}
		g.Expect(numbers).To(Equal([]int{1, 2}))
	}).WithTimeout(10 * time.Second).WithPolling(20 * time.Millisecond).Should(Succeed())
	g.Expect(r.eventIDs()).To(Equal([]string{"evt_retried", "evt_retried"}))
}

// eventLogAnswer is the part of GET .../events/{id} that tests read.
type eventLogAnswer struct {
	Deliveries []struct {
		ID       string `json:"id"`
		State    string `json:"state"`
		Attempts []struct {
			Number int `json:"number"`
		} `json:"attempts"`
	} `json:"deliveries"`
}

func eventLog(g Gomega, d *dispatcher, namespace, id string) eventLogAnswer {
	response, err := http.Get(d.URL + "/v1/namespaces/" + namespace + "/events/" + id)
	g.Expect(err).NotTo(HaveOccurred())
	defer response.Body.Close()
	g.Expect(response.StatusCode).To(Equal(http.StatusOK))
	var log eventLogAnswer
	g.Expect(json.NewDecoder(response.Body).Decode(&log)).To(Succeed())
	return log
}
