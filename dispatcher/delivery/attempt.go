package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/signing"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/redact"
	"github.com/hookrelay/hookrelay/internal/routes"
)

// responseSnippet is how much of a response body an attempt keeps.
const responseSnippet = 1024

// UserAgent identifies deliveries.
const UserAgent = "Hookrelay/0.1 (+https://hookrelay.dev)"

// Attempter makes one signed HTTP attempt.
type Attempter struct {
	Client *http.Client
	Signer signing.Signer
}

// NewHTTPClient is the delivery client: it never follows redirects (the
// receiver's answer is the answer) and keeps connections to each endpoint.
func NewHTTPClient(transport *http.Transport) *http.Client {
	if transport == nil {
		transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	transport.MaxIdleConnsPerHost = 256
	transport.MaxIdleConns = 4096
	return &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// result is what came of one attempt.
type result struct {
	status     int
	retryAfter string
	response   string
	duration   time.Duration
	err        error
}

// do signs and posts body to the endpoint, within the endpoint's timeout.
func (a *Attempter) do(ctx context.Context, endpoint *routes.Route, event *store.Event, body []byte, now time.Time) result {
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, endpoint.Timeout.Duration)
	defer cancel()
	out := a.post(ctx, endpoint, event, body, now)
	out.duration = time.Since(started)
	if out.err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		out.err = fmt.Errorf("timed out after %s", endpoint.Timeout.Duration)
	}
	return out
}

func (a *Attempter) post(ctx context.Context, endpoint *routes.Route, event *store.Event, body []byte, now time.Time) result {
	request, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint.URL, bytes.NewReader(body))
	if err != nil {
		return result{err: fmt.Errorf("building the request: %w", redact.Error(err))}
	}
	for name, value := range endpoint.Headers {
		request.Header.Set(name, value)
	}
	for name, value := range endpoint.SecretHeaders {
		request.Header.Set(name, value)
	}
	request.Header.Set("Content-Type", "application/json")
	request.Header.Set("User-Agent", UserAgent)
	err = a.Signer.Sign(request.Header, signing.Delivery{
		EventID: event.ID, EventType: event.Type, EndpointID: endpoint.ID, Timestamp: now.Unix(), Body: body,
	}, endpoint.Secrets(now), endpoint.SignatureScheme())
	if err != nil {
		return result{err: err}
	}
	response, err := a.Client.Do(request)
	if err != nil {
		// The error quotes the URL, and is stored, logged and shown in status.
		return result{err: redact.Error(err)}
	}
	defer response.Body.Close()
	snippet, err := io.ReadAll(io.LimitReader(response.Body, responseSnippet))
	out := result{status: response.StatusCode, retryAfter: response.Header.Get("Retry-After"), response: string(snippet)}
	if err != nil && !endpoint.Succeeded(response.StatusCode) {
		out.err = fmt.Errorf("reading the response: %w", err)
	}
	// Drain a little more so the connection can be reused.
	_, _ = io.CopyN(io.Discard, response.Body, 64<<10)
	return out
}

// Body builds a delivery's body: the event envelope, or the endpoint's
// transform of it.
func Body(endpoint *routes.Route, event *store.Event) ([]byte, error) {
	if endpoint.Transform == nil {
		return envelope(event), nil
	}
	eventMap, err := EventMap(event.ID, event.Type, event.CreatedAt, event.Data, event.Sandbox)
	if err != nil {
		return nil, err
	}
	return endpoint.Transform.Body(eventMap, map[string]any{
		"name": endpoint.Name, "namespace": endpoint.Namespace, "url": endpoint.URL,
	})
}

// envelope is the default body, {"id","object":"event","type","created_at",
// "data"}, with the producer's data bytes as they came. Ingest admits only ids
// and types of plain ASCII letters, digits and punctuation, which Go and JSON
// quote alike, and only valid JSON data.
func envelope(event *store.Event) []byte {
	body := make([]byte, 0, len(event.Data)+len(event.ID)+len(event.Type)+96)
	body = append(body, `{"id":`...)
	body = strconv.AppendQuote(body, event.ID)
	body = append(body, `,"object":"event","type":`...)
	body = strconv.AppendQuote(body, event.Type)
	body = append(body, `,"created_at":"`...)
	body = event.CreatedAt.UTC().AppendFormat(body, time.RFC3339)
	body = append(body, `","data":`...)
	body = append(body, event.Data...)
	return append(body, '}')
}

// EventMap is the event as CEL filters and transforms see it.
func EventMap(id, eventType string, createdAt time.Time, data []byte, sandbox bool) (map[string]any, error) {
	var decoded any
	if len(data) > 0 {
		if err := json.Unmarshal(data, &decoded); err != nil {
			return nil, fmt.Errorf("event data: %w", err)
		}
	}
	return map[string]any{"id": id, "type": eventType, "created_at": formatTime(createdAt), "data": decoded, "sandbox": sandbox}, nil
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
