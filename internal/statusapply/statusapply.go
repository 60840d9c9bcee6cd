// Package statusapply writes one field owner's share of an object's status
// with Server-Side Apply, from the generated apply configurations
// (api/applyconfiguration). The controllers and the dispatcher each write
// through a Writer under their own field owner, so neither erases the
// other's fields.
package statusapply

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Writer applies status under one field owner, forcing ownership, and skips
// the writes that would change nothing. Its zero value needs Client and
// FieldOwner set; it is safe for concurrent use.
type Writer struct {
	Client     client.Client
	FieldOwner string

	// written holds, by object UID, the SHA-256 of the JSON of the apply
	// configuration this process last applied (not the JSON: 20,000 objects
	// would keep megabytes): a cache can still show an older status right
	// after a write, so the object alone cannot say whether a write is due.
	written sync.Map
}

// Apply writes desired, an apply configuration that names one object and
// sets only this owner's share of its status, unless that is known to change
// nothing. current is the object as last read, or nil when the caller does
// not read it. With current, the write is skipped when current's status
// holds desired and this Writer has applied nothing else to uid since it
// started; without, when this Writer last applied exactly desired to uid.
// A write fills desired with the object the API server returns: build a new
// one for each call.
func (w *Writer) Apply(ctx context.Context, uid types.UID, current client.Object, desired runtime.ApplyConfiguration) error {
	encoded, err := json.Marshal(desired)
	if err != nil {
		return fmt.Errorf("encoding the status to apply: %w", err)
	}
	digest := sha256.Sum256(encoded)
	last, wrote := w.written.Load(uid)
	switch {
	case wrote && last.([sha256.Size]byte) != digest:
		// Changed since the last write: apply, whatever the cache shows.
	case current == nil:
		if wrote {
			return nil
		}
	default:
		holds, err := statusHolds(current, encoded)
		if err != nil {
			return err
		}
		if holds {
			return nil
		}
	}
	if err := w.Client.Status().Apply(ctx, desired, client.FieldOwner(w.FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying status as %s: %w", w.FieldOwner, err)
	}
	w.written.Store(uid, digest)
	return nil
}

// Forget drops what was remembered of an object, once it is deleted.
func (w *Writer) Forget(uid types.UID) {
	w.written.Delete(uid)
}

// SetConditions returns wants with lastTransitionTime as
// meta.SetStatusCondition leaves it in existing: kept from the condition of
// the same type when its status did not change, now (to the second)
// otherwise. existing is not modified.
func SetConditions(existing []metav1.Condition, now time.Time, wants ...metav1.Condition) []metav1.Condition {
	conditions := slices.Clone(existing)
	settled := make([]metav1.Condition, 0, len(wants))
	for _, want := range wants {
		want.LastTransitionTime = metav1.NewTime(now.UTC().Truncate(time.Second))
		meta.SetStatusCondition(&conditions, want)
		settled = append(settled, *meta.FindStatusCondition(conditions, want.Type))
	}
	return settled
}

// Conditions converts conditions to apply configurations. A zero
// observedGeneration is left out, as metav1.Condition's omitempty does.
func Conditions(conditions ...metav1.Condition) []*metav1ac.ConditionApplyConfiguration {
	out := make([]*metav1ac.ConditionApplyConfiguration, 0, len(conditions))
	for _, c := range conditions {
		condition := metav1ac.Condition().WithType(c.Type).WithStatus(c.Status).WithReason(c.Reason).
			WithMessage(c.Message).WithLastTransitionTime(c.LastTransitionTime)
		if c.ObservedGeneration != 0 {
			condition.WithObservedGeneration(c.ObservedGeneration)
		}
		out = append(out, condition)
	}
	return out
}

// statusHolds reports whether current's status already has every field of
// the encoded apply configuration's status, and each of its conditions
// exactly. Both sides are compared as JSON, as the API server sees them.
func statusHolds(current client.Object, desired []byte) (bool, error) {
	var want, have struct {
		Status map[string]any `json:"status"`
	}
	if err := json.Unmarshal(desired, &want); err != nil {
		return false, fmt.Errorf("decoding the status to apply: %w", err)
	}
	encoded, err := json.Marshal(current)
	if err != nil {
		return false, fmt.Errorf("encoding %s: %w", current.GetName(), err)
	}
	if err := json.Unmarshal(encoded, &have); err != nil {
		return false, fmt.Errorf("decoding %s: %w", current.GetName(), err)
	}
	for key, value := range want.Status {
		if key == "conditions" {
			if !holdsConditions(have.Status[key], value) {
				return false, nil
			}
			continue
		}
		if !reflect.DeepEqual(have.Status[key], value) {
			return false, nil
		}
	}
	return true, nil
}

// holdsConditions reports whether have lists each condition of want, by type,
// exactly.
func holdsConditions(have, want any) bool {
	haveList, _ := have.([]any)
	wantList, _ := want.([]any)
	for _, condition := range wantList {
		wanted, _ := condition.(map[string]any)
		index := slices.IndexFunc(haveList, func(c any) bool {
			existing, ok := c.(map[string]any)
			return ok && existing["type"] == wanted["type"]
		})
		if index < 0 || !reflect.DeepEqual(haveList[index], wanted) {
			return false
		}
	}
	return true
}
