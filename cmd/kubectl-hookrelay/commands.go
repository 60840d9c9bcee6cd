package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/pkg/client"
	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

func sendCommand(o *options) *cobra.Command {
	var event dispatcherapi.PublishRequest
	var data string
	cmd := &cobra.Command{
		Use:   "send --type TYPE [--data JSON]",
		Short: "Publish a test event, like a producer would",
		Example: `  kubectl hookrelay send --type user.verification.completed --data '{"user_id":"usr_123"}'
  kubectl hookrelay send --type login.success --sandbox --data '{"user_id":"u1","platform":"uber"}'`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if !json.Valid([]byte(data)) {
				return fmt.Errorf("--data %q is not valid JSON", data)
			}
			event.Data = json.RawMessage(data)
			s, err := o.connect()
			if err != nil {
				return err
			}
			ctx, cancel := s.context()
			defer cancel()
			answer, err := s.client.Publish(ctx, s.namespace, event)
			if err != nil {
				return s.explain(err)
			}
			if answer.Duplicate {
				fmt.Fprintf(o.Out, "event %s was already accepted: %d deliveries, not sent again\n", answer.ID, answer.Deliveries)
				return nil
			}
			fmt.Fprintf(o.Out, "event %s accepted: %d deliveries\n", answer.ID, answer.Deliveries)
			return nil
		},
	}
	cmd.Flags().StringVar(&event.Type, "type", "", "Event type, such as user.created (required).")
	cmd.Flags().StringVar(&data, "data", "{}", "Event data, a JSON value.")
	cmd.Flags().StringVar(&event.ID, "id", "", "Event id; generated when empty. The same id is delivered once.")
	cmd.Flags().BoolVar(&event.Sandbox, "sandbox", false, "Publish a sandbox event (delivered to sandbox endpoints only).")
	_ = cmd.MarkFlagRequired("type")
	return cmd
}

func deliveriesCommand(o *options) *cobra.Command {
	var state, since string
	var limit int
	out := newOutput()
	cmd := &cobra.Command{
		Use:   "deliveries ENDPOINT",
		Short: "List an endpoint's recent deliveries, newest first",
		Example: `  kubectl hookrelay deliveries palm --state failed --since 24h
  kubectl hookrelay deliveries palm -o json | jq -r '.items[] | select(.state == "failed") | .event_id'`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			query := client.DeliveryQuery{State: dispatcherapi.State(state), Limit: limit}
			if since != "" {
				t, err := parseSince(since)
				if err != nil {
					return err
				}
				query.Since = t
			}
			s, err := o.connect()
			if err != nil {
				return err
			}
			ctx, cancel := s.context()
			defer cancel()
			if _, err := o.endpoint(ctx, s.namespace, args[0]); err != nil {
				return err
			}
			page, err := s.client.Deliveries(ctx, s.namespace, args[0], query)
			if err != nil {
				return s.explain(err)
			}
			list, err := deliveryList(s.namespace, page)
			if err != nil {
				return err
			}
			// As kubectl get says it: no table of nothing, a line on stderr.
			if format := out.flags.OutputFormat; len(page.Deliveries) == 0 && (format == nil || *format == "" || *format == wide) {
				fmt.Fprintf(o.ErrOut, "No resources found in %s namespace.\n", s.namespace)
				return nil
			}
			if err := out.print(o.Out, list, func() *metav1.Table { return deliveryTable(page, time.Now()) }); err != nil {
				return err
			}
			if page.Continue != "" {
				fmt.Fprintf(o.ErrOut, "(more: the list is cut at --limit=%d)\n", limit)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "Only deliveries in this state: pending, held, succeeded, failed.")
	cmd.Flags().StringVar(&since, "since", "", "Only deliveries created since: an RFC 3339 time or a duration ago, such as 2h.")
	cmd.Flags().IntVar(&limit, "limit", 50, "Most deliveries to list.")
	out.bind(cmd)
	return cmd
}

func attemptsCommand(o *options) *cobra.Command {
	out := newOutput()
	cmd := &cobra.Command{
		Use:     "attempts EVENT_ID",
		Short:   "Show every delivery of an event and each attempt's status, duration and error",
		Example: "  kubectl hookrelay attempts evt_1704538200000_f6g7h8i9j0k1\n  kubectl hookrelay attempts evt_1704538200000_f6g7h8i9j0k1 -o yaml",
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			s, err := o.connect()
			if err != nil {
				return err
			}
			ctx, cancel := s.context()
			defer cancel()
			log, err := s.client.Event(ctx, s.namespace, args[0])
			if err != nil {
				return s.explain(err)
			}
			if format := out.flags.OutputFormat; format != nil && *format != "" && *format != wide {
				object, err := record(kindEventLog, s.namespace, log.Event.ID, log)
				if err != nil {
					return err
				}
				return out.print(o.Out, &object, nil)
			}
			return printAttempts(o, log)
		},
	}
	out.bind(cmd)
	return cmd
}

func printAttempts(o *options, log dispatcherapi.EventLog) error {
	fmt.Fprintf(o.Out, "event %s (%s), %d deliveries\n\n", log.Event.ID, log.Event.Type, len(log.Deliveries))
	table := tabwriter.NewWriter(o.Out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(table, "ENDPOINT\tDELIVERY\tSTATE\tATTEMPT\tSTARTED\tSTATUS\tDURATION\tERROR\tRESPONSE")
	for _, d := range log.Deliveries {
		if len(d.Attempts) == 0 {
			fmt.Fprintf(table, "%s\t%s\t%s\t-\t-\t-\t-\t-\t-\n", d.Endpoint, d.ID, d.State)
		}
		for _, attempt := range d.Attempts {
			status := "-"
			if attempt.StatusCode != 0 {
				status = fmt.Sprint(attempt.StatusCode)
			}
			fmt.Fprintf(table, "%s\t%s\t%s\t%d\t%s\t%s\t%.1fms\t%s\t%s\n", d.Endpoint, d.ID, d.State, attempt.Number,
				attempt.StartedAt.Local().Format("15:04:05"), status, attempt.DurationMS, orDash(attempt.Error), orDash(shorten(attempt.Response, 40)))
		}
	}
	return table.Flush()
}

// heldDelivery finds the endpoint in the dispatcher's answer to a retry of
// a held delivery (delivery.ErrNotRetriable's message).
var heldDelivery = regexp.MustCompile(`is held until endpoint (\S+) is`)

func retryCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "retry DELIVERY_ID",
		Short: "Make one more attempt of a finished delivery, now",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			s, err := o.connect()
			if err != nil {
				return err
			}
			ctx, cancel := s.context()
			defer cancel()
			d, err := s.client.Retry(ctx, s.namespace, args[0])
			var apiErr *client.APIError
			if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusConflict {
				if match := heldDelivery.FindStringSubmatch(apiErr.Message); match != nil {
					return o.held(ctx, s.namespace, args[0], match[1])
				}
			}
			if err != nil {
				return s.explain(err)
			}
			fmt.Fprintf(o.Out, "delivery %s of event %s to %s is queued for another attempt\n", d.ID, d.EventID, d.Endpoint)
			return nil
		},
	}
}

// held says that a delivery is held and why: its endpoint is paused or
// auto-disabled.
func (o *options) held(ctx context.Context, namespace, delivery, endpointName string) error {
	held := fmt.Sprintf("delivery %s is held, not retried", delivery)
	endpoint, err := o.endpoint(ctx, namespace, endpointName)
	if err != nil {
		return fmt.Errorf("%s: endpoint %s is paused or disabled (reading it: %w)", held, endpointName, err)
	}
	if paused, _, _ := unstructured.NestedBool(endpoint.Object, "spec", "paused"); paused {
		return fmt.Errorf("%s: webhookendpoint %s is paused (spec.paused); its held deliveries go out, oldest first, once it is unpaused", held, endpointName)
	}
	reason := "auto-disabled"
	conditions, _, _ := unstructured.NestedSlice(endpoint.Object, "status", "conditions")
	for _, c := range conditions {
		condition, _ := c.(map[string]any)
		if condition["type"] == hookrelayv1alpha1.ConditionDisabled && condition["status"] == string(metav1.ConditionTrue) {
			reason = fmt.Sprintf("disabled (%v: %v)", condition["reason"], condition["message"])
		}
	}
	return fmt.Errorf("%s: webhookendpoint %s is %s; `kubectl hookrelay reenable %s` sends its held deliveries, oldest first",
		held, endpointName, reason, endpointName)
}

func replayCommand(o *options) *cobra.Command {
	var since string
	var wait bool
	cmd := &cobra.Command{
		Use:   "replay ENDPOINT --since TIME",
		Short: "Deliver again an endpoint's failed deliveries created since a time, oldest first",
		Example: "  kubectl hookrelay replay palm --since 2026-11-25T08:00:00Z\n  kubectl hookrelay replay palm --since 6h\n" +
			"  kubectl hookrelay replay palm --since 6h --wait",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			t, err := parseSince(since)
			if err != nil {
				return err
			}
			s, err := o.connect()
			if err != nil {
				return err
			}
			ctx, cancel := s.context()
			defer cancel()
			if _, err := o.endpoint(ctx, s.namespace, args[0]); err != nil {
				return err
			}
			var replayed map[string]bool
			if wait {
				// The failed deliveries now are those the replay queues: the
				// wait follows them by id, whatever else the endpoint gets.
				if replayed, err = s.deliveryIDs(args[0], dispatcherapi.Failed, t); err != nil {
					return err
				}
			}
			result, err := s.client.Replay(ctx, s.namespace, args[0], t)
			if err != nil {
				return s.explain(err)
			}
			fmt.Fprintf(o.Out, "replaying %d failed deliveries to %s created since %s\n", result.Replayed, args[0], t.Format(time.RFC3339))
			if !wait || result.Replayed == 0 {
				return nil
			}
			if err := s.waitReplayed(context.Background(), args[0], t, replayed, result.Replayed, o.ErrOut); err != nil {
				return err
			}
			fmt.Fprintf(o.Out, "all %d replayed deliveries to %s were attempted\n", result.Replayed, args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "An RFC 3339 time, or a duration ago such as 6h (required).")
	cmd.Flags().BoolVar(&wait, "wait", false, "Wait until every replayed delivery had its attempt, saying how many did on stderr every 2s "+
		"(for 100 deliveries or more, or when stderr is a terminal).")
	_ = cmd.MarkFlagRequired("since")
	return cmd
}

func reenableCommand(o *options) *cobra.Command {
	return annotateCommand(o, "reenable ENDPOINT", "Re-enable an auto-disabled endpoint; its held deliveries go out oldest first",
		hookrelayv1alpha1.AnnotationReenableRequestedAt, "re-enable requested")
}

func rotateSecretCommand(o *options) *cobra.Command {
	return annotateCommand(o, "rotate-secret ENDPOINT", "Rotate an endpoint's generated signing secret; the old key keeps signing for the grace period",
		hookrelayv1alpha1.AnnotationRotateSecret, "secret rotation requested")
}

// annotateCommand sets an annotation on a WebhookEndpoint to the time now.
func annotateCommand(o *options, use, short, annotation, done string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			namespace, err := o.namespace()
			if err != nil {
				return err
			}
			endpoints, err := o.endpoints(namespace)
			if err != nil {
				return err
			}
			// To the nanosecond: an action acts only on a time later than the last
			// one acted on, so two requests in one second both act.
			now := time.Now().UTC().Format(time.RFC3339Nano)
			patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{annotation: now}}})
			if err != nil {
				return err
			}
			timeout, err := o.requestTimeout()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			if _, err := endpoints.Patch(ctx, args[0], types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
				return err
			}
			fmt.Fprintf(o.Out, "webhookendpoint.hookrelay.dev/%s %s (%s=%s)\n", args[0], done, annotation, now)
			return nil
		},
	}
}

// parseSince reads an RFC 3339 time or a duration before now.
func parseSince(value string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, value); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(value); err == nil && d > 0 {
		return time.Now().Add(-d).UTC().Truncate(time.Second), nil
	}
	return time.Time{}, fmt.Errorf("--since %q is neither an RFC 3339 time such as 2026-11-25T10:00:00Z nor a duration such as 6h", value)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}
