package delivery

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/hookrelay/hookrelay/internal/routes"
)

func TestRetryPolicy(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	endpoint := &routes.Route{Endpoint: routes.Endpoint{
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
			for _, random := range []func(int64) int64{lowest, highest} {
				delay := retryDelay(endpoint, tc.attempts, tc.status, tc.retryAfter, time.Hour, now, random)
				if delay < tc.min || delay > tc.max {
					t.Fatalf("retryDelay = %s, want between %s and %s", delay, tc.min, tc.max)
				}
			}
		})
	}
}

// lowest and highest are the extremes of a random source: random(n) is in [0, n).
func lowest(int64) int64    { return 0 }
func highest(n int64) int64 { return n - 1 }

func TestRetryDelayJitter(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	const longest = time.Duration(math.MaxInt64)
	cases := []struct {
		name          string
		step          time.Duration
		jitterPercent *int32
		least, most   time.Duration
	}{
		{name: "unset is the default 10%", step: time.Minute, least: time.Minute, most: 66 * time.Second},
		{name: "0 waits exactly the schedule", step: time.Minute, jitterPercent: ptr.To[int32](0), least: time.Minute, most: time.Minute},
		{name: "0 on a short step", step: 10 * time.Millisecond, jitterPercent: ptr.To[int32](0), least: 10 * time.Millisecond, most: 10 * time.Millisecond},
		{name: "10% of 5m", step: 5 * time.Minute, jitterPercent: ptr.To[int32](10), least: 5 * time.Minute, most: 330 * time.Second},
		{name: "100% doubles at most", step: 2 * time.Hour, jitterPercent: ptr.To[int32](100), least: 2 * time.Hour, most: 4 * time.Hour},
		{name: "1% of 1ns rounds to none", step: time.Nanosecond, jitterPercent: ptr.To[int32](1), least: time.Nanosecond, most: time.Nanosecond},
		{name: "out of range is clamped to 100%", step: time.Second, jitterPercent: ptr.To[int32](500), least: time.Second, most: 2 * time.Second},
		{name: "the longest step does not overflow", step: longest - time.Hour, jitterPercent: ptr.To[int32](100), least: longest - time.Hour, most: longest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := &routes.Route{Endpoint: routes.Endpoint{RetrySchedule: []metav1.Duration{{Duration: tc.step}}, JitterPercent: tc.jitterPercent}}
			if got := retryDelay(endpoint, 1, 500, "", time.Hour, now, lowest); got != tc.least {
				t.Errorf("shortest retryDelay = %s, want %s", got, tc.least)
			}
			if got := retryDelay(endpoint, 1, 500, "", time.Hour, now, highest); got != tc.most {
				t.Errorf("longest retryDelay = %s, want %s", got, tc.most)
			}
			for range 100 {
				if got := retryDelay(endpoint, 1, 500, "", time.Hour, now, rand.Int64N); got < tc.least || got > tc.most {
					t.Fatalf("retryDelay = %s, want between %s and %s", got, tc.least, tc.most)
				}
			}
		})
	}
}

func TestRetryAfterChoice(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name            string
		ignore          bool
		status          int
		retryAfter      string
		wantDelay       time.Duration
		wantBackOff429  time.Duration
		checkBackOff429 bool
	}{
		{name: "honoured on 429", status: 429, retryAfter: "600", wantDelay: 10 * time.Minute, wantBackOff429: 10 * time.Minute, checkBackOff429: true},
		{name: "honoured on 503 as a date", status: 503, retryAfter: now.Add(20 * time.Minute).Format(http.TimeFormat), wantDelay: 20 * time.Minute},
		{name: "shorter than the step changes nothing", status: 503, retryAfter: "5", wantDelay: time.Minute},
		{name: "ignored on 429", ignore: true, status: 429, retryAfter: "600", wantDelay: time.Minute, wantBackOff429: defaultBackOff, checkBackOff429: true},
		{name: "ignored on 503", ignore: true, status: 503, retryAfter: "600", wantDelay: time.Minute},
		{name: "429 without Retry-After backs off a second", status: 429, wantDelay: time.Minute, wantBackOff429: defaultBackOff, checkBackOff429: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := &routes.Route{Endpoint: routes.Endpoint{
				RetrySchedule: []metav1.Duration{{Duration: time.Minute}}, JitterPercent: ptr.To[int32](0), IgnoreRetryAfter: tc.ignore,
			}}
			if got := retryDelay(endpoint, 1, tc.status, tc.retryAfter, time.Hour, now, highest); got != tc.wantDelay {
				t.Errorf("retryDelay = %s, want %s", got, tc.wantDelay)
			}
			if !tc.checkBackOff429 {
				return
			}
			if got := backOffAfter429(endpoint, tc.retryAfter, time.Hour, now); got != tc.wantBackOff429 {
				t.Errorf("backOffAfter429 = %s, want %s", got, tc.wantBackOff429)
			}
		})
	}
}

func TestAutoDisablePolicy(t *testing.T) {
	cases := []struct {
		name                string
		threshold           int32
		keepOnGone          bool
		consecutiveFailures int
		gone                bool
		wantDisable         bool
	}{
		{name: "410 disables at once by default", threshold: 10, consecutiveFailures: 1, gone: true, wantDisable: true},
		{name: "410 with onGone false is a failure like any other", threshold: 10, keepOnGone: true, consecutiveFailures: 1, gone: true},
		{name: "onGone false still counts to the threshold", threshold: 3, keepOnGone: true, consecutiveFailures: 3, wantDisable: true},
		{name: "below the threshold", threshold: 3, consecutiveFailures: 2},
		{name: "at the threshold", threshold: 3, consecutiveFailures: 3, wantDisable: true},
		{name: "threshold 0 never disables on 410", threshold: 0, consecutiveFailures: 1, gone: true},
		{name: "threshold 0 never disables on 410 with onGone false", threshold: 0, keepOnGone: true, consecutiveFailures: 1, gone: true},
		{name: "threshold 0 never disables on many failures", threshold: 0, consecutiveFailures: 1_000_000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := &routes.Route{Endpoint: routes.Endpoint{AutoDisableAfter: tc.threshold, KeepOnGone: tc.keepOnGone}}
			if got := shouldDisable(endpoint, tc.consecutiveFailures, tc.gone); got != tc.wantDisable {
				t.Errorf("shouldDisable = %v, want %v", got, tc.wantDisable)
			}
			if tc.gone {
				// A 410 that does not disable is retried per the schedule.
				if got := goneDisables(endpoint); got != tc.wantDisable {
					t.Errorf("goneDisables = %v, want %v", got, tc.wantDisable)
				}
			}
		})
	}
	if shouldDisable(nil, 100, true) {
		t.Error("an endpoint removed from the routes is not disabled")
	}
}

func TestAnySuccessCodeByDefault(t *testing.T) {
	endpoint := &routes.Route{}
	for status, want := range map[int]Outcome{200: OutcomeSuccess, 204: OutcomeSuccess, 299: OutcomeSuccess, 301: OutcomeFailure, 404: OutcomeFailure} {
		if got := classify(endpoint, status, nil); got != want {
			t.Errorf("classify(%d) = %s, want %s", status, got, want)
		}
	}
}
