package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

func sendCommand(o *options) *cobra.Command {
	var eventType, data, id string
	var sandbox bool
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
			body, err := json.Marshal(map[string]any{"id": id, "type": eventType, "data": json.RawMessage(data), "sandbox": sandbox})
			if err != nil {
				return err
			}
			namespace, a, err := o.connect()
			if err != nil {
				return err
			}
			var answer dispatcherapi.PublishResponse
			if err := a.call("POST", "/v1/namespaces/"+namespace+"/events", body, "application/json", &answer); err != nil {
				return err
			}
			if answer.Duplicate {
				fmt.Printf("event %s was already accepted: %d deliveries, not sent again\n", answer.ID, answer.Deliveries)
				return nil
			}
			fmt.Printf("event %s accepted: %d deliveries\n", answer.ID, answer.Deliveries)
			return nil
		},
	}
	cmd.Flags().StringVar(&eventType, "type", "", "Event type, such as user.created (required).")
	cmd.Flags().StringVar(&data, "data", "{}", "Event data, a JSON value.")
	cmd.Flags().StringVar(&id, "id", "", "Event id; generated when empty. The same id is delivered once.")
	cmd.Flags().BoolVar(&sandbox, "sandbox", false, "Publish a sandbox event (delivered to sandbox endpoints only).")
	_ = cmd.MarkFlagRequired("type")
	return cmd
}

func deliveriesCommand(o *options) *cobra.Command {
	var state, since string
	var limit int
	cmd := &cobra.Command{
		Use:     "deliveries ENDPOINT",
		Short:   "List an endpoint's recent deliveries, newest first",
		Example: "  kubectl hookrelay deliveries palm --state failed --since 24h",
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			query := url.Values{"limit": {fmt.Sprint(limit)}}
			if state != "" {
				query.Set("state", state)
			}
			if since != "" {
				t, err := parseSince(since)
				if err != nil {
					return err
				}
				query.Set("since", t.Format(time.RFC3339))
			}
			namespace, a, err := o.connect()
			if err != nil {
				return err
			}
			var page dispatcherapi.DeliveryPage
			path := "/v1/namespaces/" + namespace + "/endpoints/" + url.PathEscape(args[0]) + "/deliveries?" + query.Encode()
			if err := a.call("GET", path, nil, "", &page); err != nil {
				return err
			}
			table := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
			fmt.Fprintln(table, "DELIVERY\tEVENT\tSTATE\tATTEMPTS\tCREATED\tUPDATED")
			for _, d := range page.Deliveries {
				fmt.Fprintf(table, "%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.EventID, d.State, d.Attempts, age(d.CreatedAt), age(d.UpdatedAt))
			}
			if err := table.Flush(); err != nil {
				return err
			}
			if page.Continue != "" {
				fmt.Printf("(more: the list is cut at --limit=%d)\n", limit)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "Only deliveries in this state: pending, held, succeeded, failed.")
	cmd.Flags().StringVar(&since, "since", "", "Only deliveries created since: an RFC 3339 time or a duration ago, such as 2h.")
	cmd.Flags().IntVar(&limit, "limit", 50, "Most deliveries to list.")
	return cmd
}

func attemptsCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:     "attempts EVENT_ID",
		Short:   "Show every delivery of an event and each attempt's status, duration and error",
		Example: "  kubectl hookrelay attempts evt_1704538200000_f6g7h8i9j0k1",
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			namespace, a, err := o.connect()
			if err != nil {
				return err
			}
			var log dispatcherapi.EventLog
			if err := a.call("GET", "/v1/namespaces/"+namespace+"/events/"+url.PathEscape(args[0]), nil, "", &log); err != nil {
				return err
			}
			fmt.Printf("event %s (%s), %d deliveries\n\n", log.Event.ID, log.Event.Type, len(log.Deliveries))
			table := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
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
		},
	}
}

func retryCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "retry DELIVERY_ID",
		Short: "Make one more attempt of a finished delivery, now",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			namespace, a, err := o.connect()
			if err != nil {
				return err
			}
			var d dispatcherapi.Delivery
			if err := a.call("POST", "/v1/namespaces/"+namespace+"/deliveries/"+url.PathEscape(args[0])+"/retry", nil, "", &d); err != nil {
				return err
			}
			fmt.Printf("delivery %s of event %s to %s is queued for another attempt\n", d.ID, d.EventID, d.Endpoint)
			return nil
		},
	}
}

func replayCommand(o *options) *cobra.Command {
	var since string
	cmd := &cobra.Command{
		Use:     "replay ENDPOINT --since TIME",
		Short:   "Deliver again an endpoint's failed deliveries created since a time, oldest first",
		Example: "  kubectl hookrelay replay palm --since 2026-11-25T08:00:00Z\n  kubectl hookrelay replay palm --since 6h",
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			t, err := parseSince(since)
			if err != nil {
				return err
			}
			namespace, a, err := o.connect()
			if err != nil {
				return err
			}
			var result dispatcherapi.ReplayResult
			path := "/v1/namespaces/" + namespace + "/endpoints/" + url.PathEscape(args[0]) + "/replay?since=" + url.QueryEscape(t.Format(time.RFC3339))
			if err := a.call("POST", path, nil, "", &result); err != nil {
				return err
			}
			fmt.Printf("replaying %d failed deliveries to %s created since %s\n", result.Replayed, args[0], t.Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "An RFC 3339 time, or a duration ago such as 6h (required).")
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
			namespace, err := o.ns()
			if err != nil {
				return err
			}
			config, err := o.restConfig()
			if err != nil {
				return err
			}
			client, err := dynamic.NewForConfig(config)
			if err != nil {
				return err
			}
			now := time.Now().UTC().Format(time.RFC3339)
			patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{annotation: now}}})
			if err != nil {
				return err
			}
			endpoints := client.Resource(hookrelayv1alpha1.GroupVersion.WithResource("webhookendpoints"))
			if _, err := endpoints.Namespace(namespace).Patch(context.Background(), args[0], types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
				return fmt.Errorf("annotating webhookendpoint %s/%s: %w", namespace, args[0], err)
			}
			fmt.Printf("webhookendpoint %s/%s: %s (%s=%s)\n", namespace, args[0], done, annotation, now)
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

func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
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
