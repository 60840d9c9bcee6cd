package delivery

import (
	"math"
	"net/http"
	"strconv"
	"time"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/internal/routes"
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
func classify(endpoint *routes.Route, status int, err error) Outcome {
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
func shouldRetry(endpoint *routes.Route, attempts int) bool {
	return attempts <= len(endpoint.RetrySchedule)
}

// goneDisables says whether a 410 Gone ends the delivery and disables the
// endpoint at once (spec.autoDisable.onGone). Otherwise a 410 is a failed
// attempt like any other, retried per the schedule.
func goneDisables(endpoint *routes.Route) bool {
	return shouldDisable(endpoint, 0, true)
}

// shouldDisable says whether an endpoint that has failed consecutiveFailures
// deliveries in a row, the last one with a 410 Gone when gone, is disabled.
// A threshold of 0 never disables, whatever the cause.
func shouldDisable(endpoint *routes.Route, consecutiveFailures int, gone bool) bool {
	if endpoint == nil || endpoint.AutoDisableAfter <= 0 {
		return false
	}
	return (gone && !endpoint.KeepOnGone) || consecutiveFailures >= int(endpoint.AutoDisableAfter)
}

// retryDelay is how long to wait after attempt number attempts failed,
// counted from that attempt's end (now): the schedule's step plus a random
// jitter of up to spec.retry.jitterPercent of it, or the receiver's
// Retry-After on 429 and 503 when longer (capped at maxRetryAfter) unless
// the endpoint ignores Retry-After. random(n) returns a number in [0, n).
func retryDelay(endpoint *routes.Route, attempts int, status int, retryAfter string, maxRetryAfter time.Duration, now time.Time, random func(int64) int64) time.Duration {
	step := endpoint.RetrySchedule[attempts-1].Duration
	delay := step + jitter(step, jitterPercent(endpoint), random)
	if !endpoint.IgnoreRetryAfter && (status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable) {
		if asked, ok := parseRetryAfter(retryAfter, now); ok {
			delay = max(delay, min(asked, maxRetryAfter))
		}
	}
	return delay
}

// jitterPercent is the endpoint's jitter in percent of a step, within 0–100
// (routes from objects that bypassed admission included).
func jitterPercent(endpoint *routes.Route) int64 {
	if endpoint.JitterPercent == nil {
		return hookrelayv1alpha1.DefaultJitterPercent
	}
	return min(max(int64(*endpoint.JitterPercent), 0), 100)
}

// jitter is a random duration in [0, percent% of step], without overflowing
// for the longest steps the API accepts.
func jitter(step time.Duration, percent int64, random func(int64) int64) time.Duration {
	if percent == 0 || step <= 0 {
		return 0
	}
	spread := int64(step)/100*percent + int64(step)%100*percent/100
	spread = min(spread, math.MaxInt64-int64(step))
	return time.Duration(random(spread + 1))
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
// answered 429: its Retry-After, capped, or a second when it names none or
// the endpoint ignores Retry-After.
func backOffAfter429(endpoint *routes.Route, retryAfter string, maxRetryAfter time.Duration, now time.Time) time.Duration {
	if endpoint.IgnoreRetryAfter {
		return defaultBackOff
	}
	if asked, ok := parseRetryAfter(retryAfter, now); ok {
		return min(asked, maxRetryAfter)
	}
	return defaultBackOff
}
