package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
)

// measureEdits edits subscriptions spread over the fleet, one at a time,
// each to take a new event type, and times each from just before its
// write until a publish of that type to the dispatcher answers with one
// delivery. It returns the times, sorted.
func measureEdits(ctx context.Context, c client.Client, f fleet, dispatcherAddress string, edits int) ([]time.Duration, error) {
	latencies := make([]time.Duration, 0, edits)
	for k := range edits {
		namespace, name := f.key(k * f.endpoints / edits)
		var subscription hookrelayv1alpha1.WebhookSubscription
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &subscription); err != nil {
			return nil, err
		}
		eventType := fmt.Sprintf("scale.edited-%d", k)
		patch := client.MergeFrom(subscription.DeepCopy())
		subscription.Spec.EventTypes = append(subscription.Spec.EventTypes, eventType)
		applied := time.Now()
		if err := c.Patch(ctx, &subscription, patch); err != nil {
			return nil, fmt.Errorf("editing subscription %s/%s: %w", namespace, name, err)
		}
		live, err := waitDelivers(ctx, dispatcherAddress, namespace, eventType, time.Minute)
		if err != nil {
			return nil, err
		}
		latencies = append(latencies, live.Sub(applied))
	}
	slices.Sort(latencies)
	return latencies, nil
}

// waitDelivers publishes an event of eventType until the dispatcher
// answers that it makes one delivery of it, and returns when it answered.
func waitDelivers(ctx context.Context, address, namespace, eventType string, timeout time.Duration) (time.Time, error) {
	url := "http://" + address + "/v1/namespaces/" + namespace + "/events"
	body := fmt.Sprintf(`{"type":%q,"data":{}}`, eventType)
	var last string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		request, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewBufferString(body))
		if err != nil {
			return time.Time{}, err
		}
		request.Header.Set("Content-Type", "application/json")
		response, err := http.DefaultClient.Do(request)
		if err != nil {
			return time.Time{}, err
		}
		var answer struct{ Deliveries int }
		decodeErr := json.NewDecoder(response.Body).Decode(&answer)
		response.Body.Close()
		answered := time.Now()
		if response.StatusCode == http.StatusAccepted && decodeErr == nil && answer.Deliveries == 1 {
			return answered, nil
		}
		last = fmt.Sprintf("%s, %d deliveries (decoding: %v)", response.Status, answer.Deliveries, decodeErr)
	}
	return time.Time{}, fmt.Errorf("a publish of %s in %s did not make one delivery within %s; the last: %s", eventType, namespace, timeout, last)
}

// restart is what a manager restart cost.
type restart struct {
	steady             time.Duration
	rewritten, objects int
	bytes              int64
}

// measureRestart stops the manager, starts it again and waits for it to
// be steady (see steadyDefinition), then compares the shards'
// resourceVersions with those from before the stop.
func measureRestart(ctx context.Context, config *rest.Config, manager *managerProcess, shards *shardWrites, endpoints *readyEndpoints, opts options) (restart, error) {
	before, err := shardVersions(ctx, config)
	if err != nil {
		return restart{}, err
	}
	manager.stop()
	writtenBefore := shards.snapshot()
	if err := manager.start(); err != nil {
		return restart{}, err
	}
	started := time.Now()
	var caughtUp time.Time
	var pending string
	for deadline := started.Add(10 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			return restart{}, fmt.Errorf("the manager was not steady within 10 minutes of its restart: %s (see %s)", pending, manager.log)
		}
		select {
		case <-manager.process.exited:
			return restart{}, fmt.Errorf("the manager exited after its restart (see %s)", manager.log)
		default:
		}
		if caughtUp.IsZero() {
			if pending = caughtUpAfterStart(manager, endpoints, opts.endpoints); pending == "" {
				caughtUp = time.Now()
			}
			continue
		}
		lastWrite := shards.snapshot().lastWrite
		settled := caughtUp
		if lastWrite.After(started) && lastWrite.After(settled) {
			settled = lastWrite
		}
		if time.Since(settled) >= opts.quiet {
			after, err := shardVersions(ctx, config)
			if err != nil {
				return restart{}, err
			}
			return restart{steady: settled.Sub(started), rewritten: changed(before, after), objects: len(after),
				bytes: shards.snapshot().bytes - writtenBefore.bytes}, nil
		}
	}
}

// caughtUpAfterStart says what the manager has yet to do to be caught up
// since it started: reconcile every endpoint and subscription, empty its
// queues, have all endpoints Ready. "" means caught up. A manager that does
// not serve its metrics yet is not caught up: that error is what is pending.
func caughtUpAfterStart(manager *managerProcess, ready *readyEndpoints, endpoints int) string {
	metrics, err := manager.metrics("workqueue_depth", "controller_runtime_reconcile_total")
	if err != nil {
		return fmt.Sprintf("reading the manager's metrics: %v", err)
	}
	for controller, depth := range metrics["workqueue_depth"] {
		if depth != 0 {
			return fmt.Sprintf("%s queue holds %.0f", controller, depth)
		}
	}
	reconciled := metrics["controller_runtime_reconcile_total"]
	for _, controller := range []string{"webhookendpoint", "webhooksubscription"} {
		if reconciled[controller] < float64(endpoints) {
			return fmt.Sprintf("%s reconciled %.0f of %d", controller, reconciled[controller], endpoints)
		}
	}
	if reconciled["routes"] < 1 {
		return "routes not compiled yet"
	}
	if count := ready.count(); count < endpoints {
		return fmt.Sprintf("%d of %d endpoints Ready", count, endpoints)
	}
	return ""
}

// changed counts the names whose version differs, or that only one map has.
func changed(before, after map[string]string) int {
	n := 0
	for name, version := range after {
		if before[name] != version {
			n++
		}
	}
	for name := range before {
		if _, ok := after[name]; !ok {
			n++
		}
	}
	return n
}
