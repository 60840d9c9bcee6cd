package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
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

	pools connectionPools
}

// NewHTTPClient is the delivery client: it never follows redirects (the
// receiver's answer is the answer), does not ask for compressed answers
// (only a snippet of one is kept), and keeps connections to each endpoint.
// The Attempter gives each endpoint a clone of its transport, whose idle
// pool is sized to the endpoint's maxInFlight (connectionPools).
func NewHTTPClient(transport *http.Transport) *http.Client {
	if transport == nil {
		transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	transport.MaxIdleConnsPerHost = 256
	transport.MaxIdleConns = 4096
	transport.DisableCompression = true
	return &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// connectionPools gives each endpoint its own keep-alive pool, holding as
// many idle connections as the endpoint has attempts in flight at most:
// each attempt finds a connection to reuse, and endpoints sharing a host
// neither share nor evict each other's connections. The transport also
// caps the connections at maxInFlight (MaxConnsPerHost): the queue starts
// at most maxInFlight attempts, but a connection goes back to the pool a
// moment after its response was read, and an attempt started in that
// moment would otherwise dial one more.
type connectionPools struct {
	mu         sync.RWMutex
	byEndpoint map[string]*endpointPool
}

// endpointPool is one endpoint's client, for as long as its maxInFlight
// stays the same.
type endpointPool struct {
	maxInFlight int
	transport   *http.Transport
	client      *http.Client
}

// clientFor is the client of an endpoint's attempts: the Attempter's
// Client with the endpoint's own pool, or the Client itself when its
// transport is not an *http.Transport.
func (a *Attempter) clientFor(endpoint *routes.Route) *http.Client {
	base, ok := a.Client.Transport.(*http.Transport)
	if !ok {
		return a.Client
	}
	maxInFlight := max(int(endpoint.MaxInFlight), 1)
	a.pools.mu.RLock()
	pool := a.pools.byEndpoint[endpoint.ID]
	a.pools.mu.RUnlock()
	if pool != nil && pool.maxInFlight == maxInFlight {
		return pool.client
	}
	a.pools.mu.Lock()
	defer a.pools.mu.Unlock()
	if pool = a.pools.byEndpoint[endpoint.ID]; pool != nil && pool.maxInFlight == maxInFlight {
		return pool.client
	}
	if pool != nil {
		// Connections in use now go idle in the old pool and close after
		// its IdleConnTimeout.
		pool.transport.CloseIdleConnections()
	}
	transport := base.Clone()
	transport.MaxIdleConnsPerHost, transport.MaxIdleConns, transport.MaxConnsPerHost = maxInFlight, maxInFlight, maxInFlight
	client := *a.Client
	client.Transport = transport
	pool = &endpointPool{maxInFlight: maxInFlight, transport: transport, client: &client}
	if a.pools.byEndpoint == nil {
		a.pools.byEndpoint = map[string]*endpointPool{}
	}
	a.pools.byEndpoint[endpoint.ID] = pool
	return pool.client
}

// send sends an attempt's request. With the endpoint's own transport it
// calls its RoundTrip: the client never follows a redirect, so Do would only
// copy the headers for one (an allocation per attempt); its errors are
// wrapped as Do wraps them (*url.Error: `Post "<url>": ...`).
func (a *Attempter) send(endpoint *routes.Route, request *http.Request) (*http.Response, error) {
	client := a.clientFor(endpoint)
	if client == a.Client || client.Timeout != 0 || client.Jar != nil {
		return client.Do(request)
	}
	response, err := client.Transport.RoundTrip(request)
	if err != nil {
		return nil, &url.Error{Op: "Post", URL: request.URL.String(), Err: err}
	}
	return response, nil
}

// forget closes the idle connections of the endpoints that are not routed
// any more, and drops their pools.
func (a *Attempter) forget(routed func(id string) bool) {
	a.pools.mu.Lock()
	defer a.pools.mu.Unlock()
	for id, pool := range a.pools.byEndpoint {
		if !routed(id) {
			pool.transport.CloseIdleConnections()
			delete(a.pools.byEndpoint, id)
		}
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

// attemptTimeout is an attempt that ran out of the endpoint's timeout; it
// is a context.DeadlineExceeded, which its class in the metrics reads.
type attemptTimeout struct{ after time.Duration }

func (t attemptTimeout) Error() string { return fmt.Sprintf("timed out after %s", t.after) }
func (attemptTimeout) Unwrap() error   { return context.DeadlineExceeded }

// do signs and posts body to the endpoint, within the endpoint's timeout.
func (a *Attempter) do(ctx context.Context, endpoint *routes.Route, event *store.Event, body []byte, now time.Time) result {
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, endpoint.Timeout.Duration)
	defer cancel()
	out := a.post(ctx, endpoint, event, body, now)
	out.duration = time.Since(started)
	if out.err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		out.err = attemptTimeout{after: endpoint.Timeout.Duration}
	}
	return out
}

func (a *Attempter) post(ctx context.Context, endpoint *routes.Route, event *store.Event, body []byte, now time.Time) result {
	request, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint.URL, bytes.NewReader(body))
	if err != nil {
		return result{err: fmt.Errorf("building the request: %w", redact.Error(err))}
	}
	// Sized for every header the attempt sends, so that the map never grows.
	header := make(http.Header, len(endpoint.Headers)+len(endpoint.SecretHeaders)+signatureHeaders+2)
	for name, value := range endpoint.Headers {
		header.Set(name, value)
	}
	for name, value := range endpoint.SecretHeaders {
		header.Set(name, value)
	}
	// What Set would store, with one backing array for both values.
	fixed := []string{"application/json", UserAgent}
	header["Content-Type"], header["User-Agent"] = fixed[0:1:1], fixed[1:2:2]
	request.Header = header
	err = a.Signer.Sign(request.Header, signing.Delivery{
		EventID: event.ID, EventType: event.Type, EndpointID: endpoint.ID, Timestamp: now.Unix(), Body: body,
	}, endpoint.Secrets(now), endpoint.SignatureScheme())
	if err != nil {
		return result{err: err}
	}
	response, err := a.send(endpoint, request)
	if err != nil {
		// The error quotes the URL, and is stored, logged and shown in status.
		return result{err: redact.Error(err)}
	}
	defer response.Body.Close()
	snippet := snippets.Get().(*[responseSnippet]byte)
	defer snippets.Put(snippet)
	n, err := readSnippet(response.Body, snippet[:])
	out := result{status: response.StatusCode, retryAfter: response.Header.Get("Retry-After"), response: string(snippet[:n])}
	if err != nil && !endpoint.Succeeded(response.StatusCode) {
		out.err = fmt.Errorf("reading the response: %w", err)
	}
	// Drain a little more so the connection can be reused.
	_, _ = io.CopyN(io.Discard, response.Body, 64<<10)
	return out
}

// readSnippet reads into snippet until it is full or the body ends, as
// io.ReadAll of an io.LimitReader would: the end of the body is no error,
// a truncated body (io.ErrUnexpectedEOF) is.
func readSnippet(body io.Reader, snippet []byte) (int, error) {
	n := 0
	for n < len(snippet) {
		read, err := body.Read(snippet[n:])
		n += read
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// signatureHeaders is the most headers signing sets: three of each family.
const signatureHeaders = 6

// snippets are the buffers response snippets are read into.
var snippets = sync.Pool{New: func() any { return new([responseSnippet]byte) }}

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
