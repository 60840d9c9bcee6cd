package testreceiver

import (
	"net/http"
	"slices"
	"testing"
)

// post sends one request for the event id and returns the answer's status.
func post(url, id string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, url, http.NoBody)
	if err != nil {
		return 0, err
	}
	req.Header.Set("webhook-id", id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, resp.Body.Close()
}

// TestOrderedFailsThenRecordsInOrder: an event's first failures[id]
// attempts fail; the accepted ones are recorded in the order they came.
func TestOrderedFailsThenRecordsInOrder(t *testing.T) {
	receiver := NewOrdered(t, map[string]int{"b": 2})
	var statuses []int
	for _, id := range []string{"a", "b", "b", "c", "b"} {
		status, err := post(receiver.URL, id)
		if err != nil {
			t.Fatal(err)
		}
		statuses = append(statuses, status)
	}
	if want := []int{200, 500, 500, 200, 200}; !slices.Equal(statuses, want) {
		t.Fatalf("statuses %v, want %v", statuses, want)
	}
	if got, want := receiver.Delivered(), []string{"a", "c", "b"}; !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	if got := receiver.Attempts("b"); got != 3 {
		t.Fatalf("attempts of b: %d, want 3", got)
	}
}

// TestHeldOrderedAnswersOnRelease: a held request is answered once
// Release lets it through.
func TestHeldOrderedAnswersOnRelease(t *testing.T) {
	receiver := NewHeldOrdered(t, nil)
	errs := make(chan error, 1)
	go func() {
		_, err := post(receiver.URL, "a")
		errs <- err
	}()
	receiver.Release()
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if got, want := receiver.Delivered(), []string{"a"}; !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
}
