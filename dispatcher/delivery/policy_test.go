package delivery

import (
	"errors"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hookrelay/hookrelay/dispatcher/routing"
	"github.com/hookrelay/hookrelay/routes"
)

func TestRetryPolicy(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	endpoint := &routing.Endpoint{Endpoint: routes.Endpoint{
		RetrySchedule:      []metav1.Duration{{Duration: time.Minute}, {Duration: 5 * time.Minute}},
		SuccessStatusCodes: []int32{200, 201},
	}}
	cases := []struct {
		name          string
		attempts      int
		status        int
		retryAfter    string
		min, max      time.Duration
		wantRetry     bool
		wantOutcome   Outcome
		attemptFailed error
	}{
		{name: "first failure waits the first step", attempts: 1, status: 500, min: time.Minute, max: 66 * time.Second, wantRetry: true, wantOutcome: OutcomeFailure},
		{name: "second failure waits the second step", attempts: 2, status: 500, min: 5 * time.Minute, max: 330 * time.Second, wantRetry: true, wantOutcome: OutcomeFailure},
		{name: "schedule exhausted", attempts: 3, status: 500, wantRetry: false, wantOutcome: OutcomeFailure},
		{name: "Retry-After seconds on 429", attempts: 1, status: 429, retryAfter: "600", min: 10 * time.Minute, max: 10 * time.Minute, wantRetry: true, wantOutcome: OutcomeFailure},
		{name: "Retry-After is capped", attempts: 1, status: 503, retryAfter: "86400", min: time.Hour, max: time.Hour, wantRetry: true, wantOutcome: OutcomeFailure},
		{name: "Retry-After date", attempts: 1, status: 503, retryAfter: now.Add(20 * time.Minute).Format(http.TimeFormat), min: 20 * time.Minute, max: 20 * time.Minute, wantRetry: true, wantOutcome: OutcomeFailure},
		{name: "Retry-After ignored on 500", attempts: 1, status: 500, retryAfter: "600", min: time.Minute, max: 66 * time.Second, wantRetry: true, wantOutcome: OutcomeFailure},
		{name: "202 is not a listed success", attempts: 1, status: 202, min: time.Minute, max: 66 * time.Second, wantRetry: true, wantOutcome: OutcomeFailure},
		{name: "201 is a listed success", attempts: 1, status: 201, wantOutcome: OutcomeSuccess},
		{name: "410 disables", attempts: 1, status: 410, wantOutcome: OutcomeGone},
		{name: "connection error", attempts: 1, attemptFailed: errors.New("connection refused"), min: time.Minute, max: 66 * time.Second, wantRetry: true, wantOutcome: OutcomeFailure},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(endpoint, tc.status, tc.attemptFailed); got != tc.wantOutcome {
				t.Fatalf("classify = %s, want %s", got, tc.wantOutcome)
			}
			if tc.wantOutcome != OutcomeFailure {
				return
			}
			if got := shouldRetry(endpoint, tc.attempts); got != tc.wantRetry {
				t.Fatalf("shouldRetry = %v, want %v", got, tc.wantRetry)
			}
			if !tc.wantRetry {
				return
			}
			delay := retryDelay(endpoint, tc.attempts, tc.status, tc.retryAfter, time.Hour, now)
			if delay < tc.min || delay > tc.max {
				t.Fatalf("retryDelay = %s, want between %s and %s", delay, tc.min, tc.max)
			}
		})
	}
}

func TestAnySuccessCodeByDefault(t *testing.T) {
	endpoint := &routing.Endpoint{}
	for status, want := range map[int]Outcome{200: OutcomeSuccess, 204: OutcomeSuccess, 299: OutcomeSuccess, 301: OutcomeFailure, 404: OutcomeFailure} {
		if got := classify(endpoint, status, nil); got != want {
			t.Errorf("classify(%d) = %s, want %s", status, got, want)
		}
	}
}
