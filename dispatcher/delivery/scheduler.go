package delivery

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/clock"

	"github.com/hookrelay/hookrelay/internal/routes"
)

// scheduler runs work when it falls due on the engine's clock: a delivery's
// next attempt, and the waits of an endpoint's line. Tests drive it with a
// fake clock instead of sleeping.
type scheduler struct {
	clock clock.WithDelayedExecution

	mu      sync.Mutex
	timers  map[string]clock.Timer
	stopped bool
}

func newScheduler(c clock.WithDelayedExecution) *scheduler {
	return &scheduler{clock: c, timers: map[string]clock.Timer{}}
}

// at calls fire at due, at once if it is past, unless the scheduler stops
// or the key is cancelled first. key names the timer (a delivery id); a new
// time for a key replaces its timer.
func (s *scheduler) at(key string, due time.Time, fire func()) {
	s.cancel(key)
	wait := due.Sub(s.clock.Now())
	if wait <= 0 {
		fire()
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	var timer clock.Timer
	timer = s.clock.AfterFunc(wait, func() {
		// A fake clock calls this while it holds its lock: fire runs
		// elsewhere, so that it may read the clock.
		go func() {
			s.mu.Lock()
			current := s.timers[key] == timer
			if current {
				delete(s.timers, key)
			}
			s.mu.Unlock()
			if current {
				fire()
			}
		}()
	})
	s.timers[key] = timer
}

// cancel stops the timers of the keys; a timer that already fired is not
// called back.
func (s *scheduler) cancel(keys ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, key := range keys {
		if timer, ok := s.timers[key]; ok {
			timer.Stop()
			delete(s.timers, key)
		}
	}
}

// stop cancels the timers not yet fired; at schedules nothing after it.
func (s *scheduler) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	for key, timer := range s.timers {
		timer.Stop()
		delete(s.timers, key)
	}
}

// sleep waits for wait on the clock (negative: until woken), a wake-up or
// stopping; it reports false on stopping.
func (s *scheduler) sleep(wait time.Duration, wake, stopping <-chan struct{}) bool {
	var due <-chan time.Time
	if wait >= 0 {
		timer := s.clock.NewTimer(wait)
		defer timer.Stop()
		due = timer.C()
	}
	select {
	case <-due:
	case <-wake:
	case <-stopping:
		return false
	}
	return true
}

// pacer holds an endpoint's attempts back: after a 429 Too Many Requests
// until the time the receiver asked for, and to the endpoint's rate limit.
// Both run on the scheduler's clock.
type pacer struct {
	scheduler *scheduler

	mu          sync.Mutex
	limiter     *rate.Limiter
	pausedUntil time.Time
}

// setLimit applies the endpoint's rate limit, nil for none. An unchanged
// limit keeps its bucket.
func (p *pacer) setLimit(limit *routes.RateLimit) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case limit == nil:
		p.limiter = nil
	case p.limiter == nil || p.limiter.Limit() != rate.Limit(limit.PerSecond) || p.limiter.Burst() != int(limit.Burst):
		p.limiter = rate.NewLimiter(rate.Limit(limit.PerSecond), max(int(limit.Burst), 1))
	}
}

// pause holds the endpoint's next attempts until the given time: the
// receiver asked for less traffic (429), so all of its deliveries wait, and
// no other endpoint's.
func (p *pacer) pause(until time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if until.After(p.pausedUntil) {
		p.pausedUntil = until
	}
}

// resumesAt is when the endpoint's pause ends; zero or past when it has none.
func (p *pacer) resumesAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pausedUntil
}

// wait blocks until the endpoint may start an attempt: its pause is over
// and its rate limit admits one. It reports false if stopping closes first;
// the attempt then gives its place in the rate limit back.
func (p *pacer) wait(stopping <-chan struct{}) bool {
	for {
		now := p.scheduler.clock.Now()
		paused := p.resumesAt().Sub(now)
		if paused <= 0 {
			break
		}
		// Again after the wait: another 429 may have made the pause longer.
		if !p.scheduler.sleep(paused, nil, stopping) {
			return false
		}
	}
	p.mu.Lock()
	limiter := p.limiter
	p.mu.Unlock()
	if limiter == nil {
		return true
	}
	now := p.scheduler.clock.Now()
	// The rate limit is read on the scheduler's clock, not its own.
	reservation := limiter.ReserveN(now, 1)
	if !reservation.OK() {
		return true // a burst of at least 1 always admits one; without a wait, as before a limit
	}
	if delay := reservation.DelayFrom(now); delay > 0 && !p.scheduler.sleep(delay, nil, stopping) {
		reservation.CancelAt(p.scheduler.clock.Now())
		return false
	}
	return true
}
