// Package client is a Go client of the Hookrelay dispatcher's HTTP API:
// publish events, read the delivery log, retry and replay deliveries.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// Client talks to one dispatcher (or to its Service through the API
// server's proxy, given an HTTP client that authenticates there).
type Client struct {
	base  string
	http  *http.Client
	token func() (string, error)
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sends requests with h instead of a default client.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithToken sends a fixed bearer token.
func WithToken(token string) Option {
	return func(c *Client) { c.token = func() (string, error) { return token, nil } }
}

// WithTokenFile sends the bearer token read from path, such as a projected
// ServiceAccount token.
func WithTokenFile(path string) Option {
	return func(c *Client) {
		c.token = func() (string, error) {
			data, err := os.ReadFile(path)
			if err != nil {
				return "", fmt.Errorf("reading the token file: %w", err)
			}
			return strings.TrimSpace(string(data)), nil
		}
	}
}

// New returns a client of the dispatcher at baseURL, such as
// https://hookrelay-dispatcher.hookrelay-system.svc:8443.
func New(baseURL string, options ...Option) (*Client, error) {
	parsed, err := url.Parse(baseURL)
	if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
		return nil, fmt.Errorf("dispatcher URL %q is not an http:// or https:// URL", baseURL)
	}
	c := &Client{base: strings.TrimSuffix(baseURL, "/"), http: http.DefaultClient}
	for _, option := range options {
		option(c)
	}
	return c, nil
}

// APIError is an answer other than 2xx, with the dispatcher's message.
type APIError struct {
	StatusCode int
	Message    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.StatusCode)
}

// IsNotFound reports whether err is the dispatcher's 404.
func IsNotFound(err error) bool {
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound
}

// Publish publishes a JSON event in namespace.
func (c *Client) Publish(ctx context.Context, namespace string, event dispatcherapi.PublishRequest) (dispatcherapi.PublishResponse, error) {
	body, err := json.Marshal(event)
	if err != nil {
		return dispatcherapi.PublishResponse{}, err
	}
	var answer dispatcherapi.PublishResponse
	err = c.do(ctx, http.MethodPost, "/v1/namespaces/"+url.PathEscape(namespace)+"/events", body, "application/json", &answer)
	return answer, err
}

// Event reads an event with its deliveries and their attempts.
func (c *Client) Event(ctx context.Context, namespace, id string) (dispatcherapi.EventLog, error) {
	var log dispatcherapi.EventLog
	err := c.do(ctx, http.MethodGet, "/v1/namespaces/"+url.PathEscape(namespace)+"/events/"+url.PathEscape(id), nil, "", &log)
	return log, err
}

// DeliveryQuery selects an endpoint's deliveries.
type DeliveryQuery struct {
	// State keeps only deliveries in that state, when set.
	State dispatcherapi.State
	// Since and Until bound the deliveries' creation time, when set.
	Since, Until time.Time
	// Limit is the most deliveries in a page; the dispatcher's default when 0.
	Limit int
	// Continue is the previous page's DeliveryPage.Continue.
	Continue string
}

// Deliveries lists one page of an endpoint's deliveries, newest first.
func (c *Client) Deliveries(ctx context.Context, namespace, endpoint string, query DeliveryQuery) (dispatcherapi.DeliveryPage, error) {
	values := url.Values{}
	if query.State != "" {
		values.Set("state", string(query.State))
	}
	if !query.Since.IsZero() {
		values.Set("since", query.Since.UTC().Format(time.RFC3339))
	}
	if !query.Until.IsZero() {
		values.Set("until", query.Until.UTC().Format(time.RFC3339))
	}
	if query.Limit > 0 {
		values.Set("limit", fmt.Sprint(query.Limit))
	}
	if query.Continue != "" {
		values.Set("continue", query.Continue)
	}
	path := "/v1/namespaces/" + url.PathEscape(namespace) + "/endpoints/" + url.PathEscape(endpoint) + "/deliveries"
	if len(values) > 0 {
		path += "?" + values.Encode()
	}
	var page dispatcherapi.DeliveryPage
	err := c.do(ctx, http.MethodGet, path, nil, "", &page)
	return page, err
}

// Retry asks for one more attempt of a delivery, now.
func (c *Client) Retry(ctx context.Context, namespace, deliveryID string) (dispatcherapi.Delivery, error) {
	var d dispatcherapi.Delivery
	err := c.do(ctx, http.MethodPost, "/v1/namespaces/"+url.PathEscape(namespace)+"/deliveries/"+url.PathEscape(deliveryID)+"/retry", nil, "", &d)
	return d, err
}

// Replay queues one more attempt of each of an endpoint's failed deliveries
// created since the given time.
func (c *Client) Replay(ctx context.Context, namespace, endpoint string, since time.Time) (dispatcherapi.ReplayResult, error) {
	path := "/v1/namespaces/" + url.PathEscape(namespace) + "/endpoints/" + url.PathEscape(endpoint) +
		"/replay?since=" + url.QueryEscape(since.UTC().Format(time.RFC3339))
	var result dispatcherapi.ReplayResult
	err := c.do(ctx, http.MethodPost, path, nil, "", &result)
	return result, err
}

// do sends a request and decodes a 2xx answer into out; any other answer
// is an *APIError with the dispatcher's message.
func (c *Client) do(ctx context.Context, method, path string, body []byte, contentType string, out any) error {
	request, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if contentType != "" {
		request.Header.Set("Content-Type", contentType)
	}
	if c.token != nil {
		token, err := c.token()
		if err != nil {
			return err
		}
		request.Header.Set("Authorization", "Bearer "+token)
	}
	response, err := c.http.Do(request)
	if err != nil {
		return fmt.Errorf("reaching the dispatcher: %w", err)
	}
	defer response.Body.Close()
	data, err := io.ReadAll(response.Body)
	if err != nil {
		return fmt.Errorf("reading the dispatcher's answer: %w", err)
	}
	if response.StatusCode >= 300 {
		var problem dispatcherapi.Error
		if json.Unmarshal(data, &problem) == nil && problem.Error != "" {
			return &APIError{StatusCode: response.StatusCode, Message: problem.Error}
		}
		return &APIError{StatusCode: response.StatusCode, Message: "the dispatcher answered: " + strings.TrimSpace(string(data))}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("reading the dispatcher's answer: %w", err)
		}
	}
	return nil
}
