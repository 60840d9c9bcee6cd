package delivery

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/routing"
)

// Outcome classifies an attempt.
type Outcome string

const (
	OutcomeSuccess Outcome = "success"
	OutcomeFailure Outcome = "failure"
	// OutcomeGone is a 410: the receiver says the endpoint is gone for good.
	OutcomeGone Outcome = "gone"
)

// classify says what a finished attempt means for the endpoint's policy.
func classify(endpoint *routing.Endpoint, status int, err error) Outcome {
	switch {
	case err != nil:
		return OutcomeFailure
	case endpoint.Succeeded(status):
		return OutcomeSuccess
	case status == http.StatusGone:
		return OutcomeGone
	}
	return OutcomeFailure
}

// shouldRetry says whether a delivery that has made attempts attempts gets
// another one under the endpoint's schedule (len(schedule)+1 in all).
func shouldRetry(endpoint *routing.Endpoint, attempts int) bool {
	return attempts <= len(endpoint.RetrySchedule)
}

// retryDelay is how long to wait after attempt number attempts failed: the
// schedule's step plus up to 10% jitter, or the receiver's Retry-After on
// 429 and 503 when longer, capped at maxRetryAfter.
func retryDelay(endpoint *routing.Endpoint, attempts int, status int, retryAfter string, maxRetryAfter time.Duration, now time.Time) time.Duration {
	step := endpoint.RetrySchedule[attempts-1].Duration
	delay := step + time.Duration(rand.Int64N(int64(step/10)+1))
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		if asked, ok := parseRetryAfter(retryAfter, now); ok {
			delay = max(delay, min(asked, maxRetryAfter))
		}
	}
	return delay
}

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(value string, now time.Time) (time.Duration, bool) {
	if value == "" {
		return 0, false
	}
	if seconds, err := strconv.Atoi(value); err == nil && seconds >= 0 {
		return time.Duration(seconds) * time.Second, true
	}
	if at, err := http.ParseTime(value); err == nil {
		return max(at.Sub(now), 0), true
	}
	return 0, false
}

// defaultBackOff is how long an endpoint's attempts wait after a 429 that
// names no Retry-After.
const defaultBackOff = time.Second

// backOffAfter429 is how long all attempts to an endpoint wait after it
// answered 429: its Retry-After, capped, or a second.
func backOffAfter429(retryAfter string, maxRetryAfter time.Duration, now time.Time) time.Duration {
	if asked, ok := parseRetryAfter(retryAfter, now); ok {
		return min(asked, maxRetryAfter)
	}
	return defaultBackOff
}
