package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/hookrelay/hookrelay/internal/eventnote"
)

// reporter records a Kubernetes Event on an object and logs the same line,
// so that what a cluster operator sees in `kubectl describe` is also in the
// manager's log.
type reporter struct {
	recorder events.EventRecorder
}

// normal reports progress; warning reports a failure. The reason is the
// condition reason where there is one.
func (r reporter) normal(ctx context.Context, obj client.Object, reason, action, format string, args ...any) {
	r.report(ctx, obj, corev1.EventTypeNormal, reason, action, format, args...)
}

func (r reporter) warning(ctx context.Context, obj client.Object, reason, action, format string, args ...any) {
	r.report(ctx, obj, corev1.EventTypeWarning, reason, action, format, args...)
}

func (r reporter) report(ctx context.Context, obj client.Object, eventType, reason, action, format string, args ...any) {
	note := fmt.Sprintf(format, args...)
	log := logf.FromContext(ctx).WithValues("reason", reason)
	if eventType == corev1.EventTypeWarning {
		log.Info("warning: "+note, "eventType", eventType)
	} else {
		log.Info(note)
	}
	r.recorder.Eventf(obj, nil, eventType, reason, action, "%s", eventnote.Fit(note))
}
