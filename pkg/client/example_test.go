package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/hookrelay/hookrelay/pkg/client"
	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// fakeDispatcher stands in for the dispatcher: it accepts every publish
// from a caller with the token "secret" and says what it got.
func fakeDispatcher() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") != "Bearer secret" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"the token was refused"}`)
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Printf("%s %s (%s): %s\n", r.Method, r.URL.Path, r.Header.Get("Content-Type"), body)
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"id":"inv-1001","deliveries":2}`)
	}))
}

// Publish an event from a Pod, with its projected ServiceAccount token.
func ExampleClient_Publish() {
	dispatcher := fakeDispatcher()
	defer dispatcher.Close()
	// In a Pod: /var/run/secrets/hookrelay/token, projected with the
	// dispatcher's audience.
	dir, err := os.MkdirTemp("", "hookrelay-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("secret"), 0o600); err != nil {
		panic(err)
	}

	c, err := client.New(dispatcher.URL, client.WithTokenFile(tokenFile))
	if err != nil {
		panic(err)
	}
	answer, err := c.Publish(context.Background(), "billing", dispatcherapi.PublishRequest{
		ID:   "inv-1001", // publishing the same id again is harmless
		Type: "invoice.paid",
		Data: json.RawMessage(`{"amount":4200,"currency":"EUR"}`),
	})
	if err != nil {
		panic(err)
	}
	fmt.Printf("accepted %s for %d deliveries\n", answer.ID, answer.Deliveries)
	// Output:
	// POST /v1/namespaces/billing/events (application/json): {"id":"inv-1001","type":"invoice.paid","data":{"amount":4200,"currency":"EUR"}}
	// accepted inv-1001 for 2 deliveries
}

// Publish a CloudEvent made with the CloudEvents Go SDK.
func ExampleClient_PublishCloudEvent() {
	dispatcher := fakeDispatcher()
	defer dispatcher.Close()
	c, err := client.New(dispatcher.URL, client.WithToken("secret"))
	if err != nil {
		panic(err)
	}

	event := cloudevents.NewEvent()
	event.SetID("1001")
	event.SetSource("billing/invoices")
	event.SetType("invoice.paid")
	event.SetTime(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC))
	if err := event.SetData(cloudevents.ApplicationJSON, map[string]any{"amount": 4200}); err != nil {
		panic(err)
	}
	answer, err := c.PublishCloudEvent(context.Background(), "billing", event)
	if err != nil {
		panic(err)
	}
	fmt.Printf("accepted for %d deliveries\n", answer.Deliveries)
	// Output:
	// POST /v1/namespaces/billing/events (application/cloudevents+json): {"specversion":"1.0","id":"1001","source":"billing/invoices","type":"invoice.paid","datacontenttype":"application/json","time":"2026-11-25T10:00:00Z","data":{"amount":4200}}
	// accepted for 2 deliveries
}

// Errors from the dispatcher are *client.APIError, with its message.
func ExampleAPIError() {
	dispatcher := fakeDispatcher()
	defer dispatcher.Close()
	c, err := client.New(dispatcher.URL, client.WithToken("expired"), client.WithMaxTries(1))
	if err != nil {
		panic(err)
	}
	_, err = c.Publish(context.Background(), "billing", dispatcherapi.PublishRequest{Type: "invoice.paid"})
	fmt.Println(err)
	// Output:
	// the token was refused (HTTP 401)
}

// List an endpoint's failed deliveries, page by page.
func ExampleClient_Deliveries() {
	dispatcher := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println(r.URL.Path, r.URL.RawQuery)
		page := `{"deliveries":[{"id":"dlv_2","event_id":"inv-1002","endpoint":"ledger","state":"failed","attempts":5}],"continue":"dlv_2"}`
		if r.URL.Query().Get("continue") != "" {
			page = `{"deliveries":[{"id":"dlv_1","event_id":"inv-1001","endpoint":"ledger","state":"failed","attempts":5}]}`
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, page)
	}))
	defer dispatcher.Close()
	c, err := client.New(dispatcher.URL, client.WithToken("secret"))
	if err != nil {
		panic(err)
	}

	query := client.DeliveryQuery{State: dispatcherapi.Failed, Limit: 1}
	for {
		page, err := c.Deliveries(context.Background(), "billing", "ledger", query)
		if err != nil {
			panic(err)
		}
		for _, d := range page.Deliveries {
			fmt.Printf("%s: event %s, %s after %d attempts\n", d.ID, d.EventID, d.State, d.Attempts)
		}
		if page.Continue == "" {
			break
		}
		query.Continue = page.Continue
	}
	// Output:
	// /v1/namespaces/billing/endpoints/ledger/deliveries limit=1&state=failed
	// dlv_2: event inv-1002, failed after 5 attempts
	// /v1/namespaces/billing/endpoints/ledger/deliveries continue=dlv_2&limit=1&state=failed
	// dlv_1: event inv-1001, failed after 5 attempts
}
