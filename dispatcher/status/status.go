// Package status writes the dispatcher's share of WebhookEndpoint status —
// the Disabled and Delivering conditions and the delivery counters — with
// Server-Side Apply under its own field owner, so the controller's Ready
// condition is never touched. Writes are coalesced to at most one per
// endpoint per interval. The engine reports each new spec generation of a
// route too, so the conditions' observedGeneration follows the spec without
// waiting for a delivery; those writes, when they carry nothing else, go
// after every other and at most FirstSightRate a second.
package status

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1ac "github.com/hookrelay/hookrelay/api/applyconfiguration/api/v1alpha1"
	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/dispatcher/delivery"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/eventnote"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/statusapply"
)

// FieldOwner is the Server-Side Apply field manager of the dispatcher.
const FieldOwner = "hookrelay-dispatcher"

// Reporter implements delivery.StatusSink.
type Reporter struct {
	Client   client.Client
	Recorder events.EventRecorder
	Log      logr.Logger
	// Interval is the shortest time between two writes to one endpoint.
	Interval time.Duration
	// Clock paces the writes and dates the conditions; the real clock when nil.
	Clock clock.WithTicker
	// FirstSightRate bounds the writes a second, and FirstSightBurst the
	// writes at once, that only bring an endpoint's conditions to a new
	// route or spec (defaults DefaultFirstSightRate, DefaultFirstSightBurst).
	// A bulk create of 10,000 endpoints, or a restart with them loaded,
	// would otherwise send 10,000 status writes to the API server at once,
	// ahead of the controllers' Ready and of health changes.
	FirstSightRate  rate.Limit
	FirstSightBurst int

	writerOnce   sync.Once
	statusWriter *statusapply.Writer
	limiterOnce  sync.Once
	firstSight   *rate.Limiter

	mu    sync.Mutex
	dirty map[string]report
	// applied holds, by endpoint UID, the conditions last written, to keep
	// their lastTransitionTime: a new endpoint of the same name has no
	// status yet.
	applied map[string][]metav1.Condition
	// generations holds, by endpoint UID, the highest spec generation
	// reported: a delivery that began under an older route can finish after
	// a newer one was observed, and observedGeneration must not go back.
	generations map[string]int64
	// latest is the last health reported of each endpoint, by id, to write
	// again with a new held count; held is that count.
	latest map[string]report
	held   map[string]int64
}

// DefaultFirstSightRate is Reporter.FirstSightRate's default.
const DefaultFirstSightRate rate.Limit = 10

// DefaultFirstSightBurst is Reporter.FirstSightBurst's default.
const DefaultFirstSightBurst = 100

// report is the latest health of an endpoint, waiting to be written; the
// conditions derive from it alone.
type report struct {
	endpoint *routes.Route
	health   store.Health
	// firstSight: nothing but a new route or spec to write (see FirstSightRate).
	firstSight bool
}

// HealthChanged implements delivery.StatusSink.
func (r *Reporter) HealthChanged(endpoint *routes.Route, health store.Health, change delivery.Change) {
	r.mu.Lock()
	if r.dirty == nil {
		r.dirty = map[string]report{}
	}
	if r.latest == nil {
		r.latest = map[string]report{}
	}
	queued, isQueued := r.dirty[endpoint.ID]
	firstSight := change == delivery.ChangeObserved && (!isQueued || queued.firstSight)
	r.dirty[endpoint.ID] = report{endpoint: endpoint, health: health, firstSight: firstSight}
	r.latest[endpoint.ID] = report{endpoint: endpoint, health: health}
	r.mu.Unlock()

	switch change {
	case delivery.ChangeDisabled:
		r.event(endpoint, corev1.EventTypeWarning, hookrelayv1alpha1.ReasonAutoDisabled, "Disable", disabledMessage(health))
	case delivery.ChangeReenabled:
		r.event(endpoint, corev1.EventTypeNormal, hookrelayv1alpha1.ReasonReenabled, "Reenable",
			"re-enabled by annotation "+hookrelayv1alpha1.AnnotationReenableRequestedAt+"; releasing held deliveries oldest first")
	}
}

// HeldChanged implements delivery.StatusSink. The engine reports an
// endpoint's health before its held count, so the count is written with
// the latest health; one that has none yet is written with the first.
func (r *Reporter) HeldChanged(endpoint *routes.Route, held int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held == nil {
		r.held = map[string]int64{}
	}
	if previous, known := r.held[endpoint.ID]; known && previous == held {
		return
	}
	r.held[endpoint.ID] = held
	if queued, ok := r.dirty[endpoint.ID]; ok {
		queued.firstSight = false
		r.dirty[endpoint.ID] = queued
		return
	}
	if latest, ok := r.latest[endpoint.ID]; ok {
		if r.dirty == nil {
			r.dirty = map[string]report{}
		}
		r.dirty[endpoint.ID] = latest
	}
}

func disabledMessage(health store.Health) string {
	return fmt.Sprintf("disabled after %d consecutive failed deliveries (last: %s); set annotation %s to re-enable",
		health.ConsecutiveFailures, health.LastFailureReason, hookrelayv1alpha1.AnnotationReenableRequestedAt)
}

func (r *Reporter) event(endpoint *routes.Route, eventType, reason, action, note string) {
	r.Log.Info(note, "endpoint", endpoint.ID, "reason", reason)
	if r.Recorder == nil {
		return
	}
	regarding := &hookrelayv1alpha1.WebhookEndpoint{
		TypeMeta:   metav1.TypeMeta{APIVersion: hookrelayv1alpha1.GroupVersion.String(), Kind: "WebhookEndpoint"},
		ObjectMeta: metav1.ObjectMeta{Namespace: endpoint.Namespace, Name: endpoint.Name, UID: types.UID(endpoint.UID)},
	}
	r.Recorder.Eventf(regarding, nil, eventType, reason, action, "%s", eventnote.Fit(note))
}

// Run writes the queued changes every Interval until ctx ends, then once more.
func (r *Reporter) Run(ctx context.Context) {
	ticker := r.clock().NewTicker(r.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r.Flush(flushCtx)
			cancel()
			return
		case <-ticker.C():
			r.Flush(ctx)
		}
	}
}

// Flush writes every queued change now, but first-sight writes only as
// FirstSightRate allows: the others wait for a later Flush.
func (r *Reporter) Flush(ctx context.Context) {
	r.mu.Lock()
	dirty := r.dirty
	r.dirty = nil
	r.mu.Unlock()
	var firstSight []string
	for id, rep := range dirty {
		if rep.firstSight {
			firstSight = append(firstSight, id)
			continue
		}
		r.write(ctx, id, rep)
	}
	now := r.clock().Now()
	for _, id := range firstSight {
		if r.limiter().AllowN(now, 1) {
			r.write(ctx, id, dirty[id])
		} else {
			r.keep(id, dirty[id])
		}
	}
}

// write applies one report; a failed one is queued again.
func (r *Reporter) write(ctx context.Context, id string, rep report) {
	err := r.apply(ctx, rep)
	if apierrors.IsNotFound(err) {
		return // the endpoint was deleted
	}
	if err != nil {
		r.Log.Error(err, "writing endpoint status; will try again", "endpoint", id)
		r.keep(id, rep)
	}
}

// keep queues rep again, unless a newer report of the endpoint came meanwhile.
func (r *Reporter) keep(id string, rep report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dirty == nil {
		r.dirty = map[string]report{}
	}
	if _, newer := r.dirty[id]; !newer {
		r.dirty[id] = rep
	}
}

// limiter is the first-sight writes' limiter, made on first use.
func (r *Reporter) limiter() *rate.Limiter {
	r.limiterOnce.Do(func() {
		limit, burst := r.FirstSightRate, r.FirstSightBurst
		if limit == 0 {
			limit = DefaultFirstSightRate
		}
		if burst == 0 {
			burst = DefaultFirstSightBurst
		}
		r.firstSight = rate.NewLimiter(limit, burst)
	})
	return r.firstSight
}

func (r *Reporter) apply(ctx context.Context, rep report) error {
	health := rep.health
	r.mu.Lock()
	if r.applied == nil {
		r.applied = map[string][]metav1.Condition{}
	}
	previous := r.applied[rep.endpoint.UID]
	if r.generations == nil {
		r.generations = map[string]int64{}
	}
	generation := max(rep.endpoint.Generation, r.generations[rep.endpoint.UID])
	r.generations[rep.endpoint.UID] = generation
	held := r.held[rep.endpoint.ID]
	r.mu.Unlock()

	disabled := metav1.Condition{Type: hookrelayv1alpha1.ConditionDisabled, Status: metav1.ConditionFalse, Reason: hookrelayv1alpha1.ReasonEnabled,
		Message: "the endpoint receives deliveries", ObservedGeneration: generation}
	switch {
	case health.Disabled:
		disabled.Status, disabled.Reason, disabled.Message = metav1.ConditionTrue, hookrelayv1alpha1.ReasonAutoDisabled, disabledMessage(health)
	case health.ReenableToken != "":
		disabled.Reason = hookrelayv1alpha1.ReasonReenabled
		disabled.Message = "re-enabled by annotation " + hookrelayv1alpha1.AnnotationReenableRequestedAt + "=" + health.ReenableToken
	}
	delivering := metav1.Condition{Type: hookrelayv1alpha1.ConditionDelivering, Status: metav1.ConditionUnknown, Reason: hookrelayv1alpha1.ReasonNoDeliveries,
		Message: "no delivery has finished yet", ObservedGeneration: generation}
	switch {
	case health.ConsecutiveFailures > 0:
		delivering.Status, delivering.Reason = metav1.ConditionFalse, hookrelayv1alpha1.ReasonFailing
		delivering.Message = fmt.Sprintf("%d deliveries in a row failed; last: %s", health.ConsecutiveFailures, health.LastFailureReason)
	case health.LastSuccess != nil:
		delivering.Status, delivering.Reason, delivering.Message = metav1.ConditionTrue, hookrelayv1alpha1.ReasonDelivered, "the last delivery succeeded"
	}
	conditions := statusapply.SetConditions(previous, r.clock().Now(), disabled, delivering)

	status := hookrelayv1alpha1ac.WebhookEndpointStatus().
		WithConditions(statusapply.Conditions(conditions...)...).
		WithConsecutiveFailures(int32(health.ConsecutiveFailures)).
		WithHeldDeliveries(held)
	if health.LastSuccess != nil {
		status.WithLastSuccessTime(metav1.NewTime(*health.LastSuccess))
	}
	if health.LastFailure != nil {
		status.WithLastFailureTime(metav1.NewTime(*health.LastFailure))
	}
	if health.DisabledAt != nil {
		status.WithDisabledAt(metav1.NewTime(*health.DisabledAt))
	}
	if health.LastFailureReason != "" {
		status.WithLastFailureReason(health.LastFailureReason)
	}
	// The dispatcher does not read endpoints: what it last applied decides.
	if err := r.writer().Apply(ctx, types.UID(rep.endpoint.UID), nil,
		hookrelayv1alpha1ac.WebhookEndpoint(rep.endpoint.Name, rep.endpoint.Namespace).WithStatus(status)); err != nil {
		return err
	}
	r.mu.Lock()
	r.applied[rep.endpoint.UID] = conditions
	r.mu.Unlock()
	return nil
}

func (r *Reporter) clock() clock.WithTicker {
	if r.Clock == nil {
		return clock.RealClock{}
	}
	return r.Clock
}

// writer is the Writer of this Reporter, made on first use.
func (r *Reporter) writer() *statusapply.Writer {
	r.writerOnce.Do(func() {
		r.statusWriter = &statusapply.Writer{Client: r.Client, FieldOwner: FieldOwner}
	})
	return r.statusWriter
}
