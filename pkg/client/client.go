// Package client is a Go client of the Hookrelay dispatcher's HTTP API:
// publish events (JSON or CloudEvents), read the delivery log, retry and
// replay deliveries.
//
// A Client is safe for concurrent use. It verifies TLS certificates (add a
// private CA with WithCAFile or WithCAPEM), bounds each request (WithTimeout), retries
// answers 429 and 503 with backoff that honours Retry-After (WithMaxTries),
// and, with WithTokenFile, follows a projected ServiceAccount token as the
// kubelet rotates it.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	cloudevent "github.com/cloudevents/sdk-go/v2/event"

	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// Defaults of the options.
const (
	// DefaultTimeout bounds one HTTP request, its answer's body included.
	DefaultTimeout = 30 * time.Second
	// DefaultMaxTries is how many times a request answered 429 or 503 is
	// sent in all.
	DefaultMaxTries = 4
)

// Backoff between tries when the answer has no Retry-After: doubling from
// firstBackoff up to maxBackoff, plus up to half of that again at random so
// that producers refused together do not come back together.
const (
	firstBackoff = 250 * time.Millisecond
	maxBackoff   = 8 * time.Second
)

// maxAnswer bounds the answer body read into memory; the largest answer,
// an event log, holds at most a few MiB.
const maxAnswer = 32 << 20

// Client talks to one dispatcher (or to its Service through the API
// server's proxy, given an HTTP client that authenticates there).
type Client struct {
	base string
	http *http.Client
	// token gives the bearer token; reread asks for a fresh read of a
	// token file, after a 401.
	token    func(reread bool) (string, error)
	timeout  time.Duration
	maxTries int
	caFile   string
	caPEM    []byte
	// trustNote says why the published CA is not trusted, for an
	// untrusted certificate's error.
	trustNote string
	// sleep waits d or until ctx ends; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
	// err is the first option's error, returned by New.
	err error
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sends requests with h instead of a default client, such as
// one from a rest.Config that reaches the dispatcher through the API
// server's proxy. WithTimeout still bounds each request.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithToken sends a fixed bearer token.
func WithToken(token string) Option {
	return func(c *Client) { c.token = func(bool) (string, error) { return token, nil } }
}

// WithTokenFile sends the bearer token read from path, such as a projected
// ServiceAccount token. The file is read again when it changes (the kubelet
// rotates a projected token by swapping a symbolic link, which a stat of the
// path sees) and once after an answer 401, so a rotated token is picked up
// without reading the file for every request.
func WithTokenFile(path string) Option {
	return func(c *Client) {
		file := &tokenFile{path: path}
		c.token = file.get
	}
}

// WithTimeout bounds each HTTP request, its answer's body included
// (DefaultTimeout when not given); 0 leaves only the context's deadline.
// Waiting between retries is bounded by the context alone.
func WithTimeout(d time.Duration) Option {
	return func(c *Client) {
		if d < 0 {
			c.fail(fmt.Errorf("timeout %s is negative", d))
		}
		c.timeout = d
	}
}

// WithMaxTries sets how many times in all a request answered 429 (too many
// requests) or 503 (not ready, or the store out of reach) is sent, at least
// 1 (no retries); DefaultMaxTries when not given. Such an answer means the
// dispatcher did not act on the request, so sending it again is safe.
func WithMaxTries(n int) Option {
	return func(c *Client) {
		if n < 1 {
			c.fail(fmt.Errorf("max tries %d is less than 1", n))
		}
		c.maxTries = n
	}
}

// WithCAFile trusts the certificate authorities in the PEM bundle at path,
// beside the system's, for a dispatcher served with --tls-cert-file by a
// private CA. Not with WithHTTPClient, whose transport has its own TLS
// configuration.
func WithCAFile(path string) Option { return func(c *Client) { c.caFile = path } }

// WithCAPEM trusts the certificate authorities in a PEM bundle, beside the
// system's and WithCAFile's, such as the ca.crt of the ConfigMap
// hookrelay-dispatcher-ca that the manager publishes. Not with
// WithHTTPClient.
func WithCAPEM(bundle []byte) Option {
	return func(c *Client) { c.caPEM = append(c.caPEM, bundle...) }
}

func (c *Client) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// New returns a client of the dispatcher at baseURL, such as
// https://hookrelay-dispatcher.hookrelay-system.svc from a Pod. For such a
// Service name, without WithCAFile, WithCAPEM or WithHTTPClient, and in a
// Pod, New trusts the CA that the manager publishes in the ConfigMap
// hookrelay-dispatcher-ca of that namespace (any ServiceAccount may read
// it), read as the Pod's ServiceAccount within 10 seconds. If that read
// fails, the system's CAs alone verify the dispatcher, and an untrusted
// certificate's error says why the ConfigMap did not help.
func New(baseURL string, options ...Option) (*Client, error) {
	parsed, err := url.Parse(baseURL)
	if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
		return nil, fmt.Errorf("dispatcher URL %q is not an http:// or https:// URL", baseURL)
	}
	c := &Client{base: strings.TrimSuffix(baseURL, "/"), timeout: DefaultTimeout, maxTries: DefaultMaxTries, sleep: sleep}
	for _, option := range options {
		option(c)
	}
	if c.err != nil {
		return nil, c.err
	}
	trusting := c.caFile != "" || c.caPEM != nil
	switch {
	case trusting && c.http != nil:
		option := "WithCAFile"
		if c.caFile == "" {
			option = "WithCAPEM"
		}
		return nil, fmt.Errorf("%s and WithHTTPClient are both given: set the CA in the HTTP client's transport instead", option)
	case trusting:
		if c.http, err = httpClientTrusting(c.caFile, c.caPEM); err != nil {
			return nil, err
		}
	case c.http == nil:
		c.http = http.DefaultClient
		if bundle, note := clusterCA(parsed); bundle != nil {
			if c.http, err = httpClientTrusting("", bundle); err != nil {
				return nil, fmt.Errorf("ConfigMap %s: %w", CAConfigMap, err)
			}
		} else {
			c.trustNote = note
		}
	}
	return c, nil
}

// httpClientTrusting is the default transport trusting the system's CAs and
// those in the PEM bundle at caFile (when set) and in caPEM.
func httpClientTrusting(caFile string, caPEM []byte) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading the CA file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
	}
	if caPEM != nil && !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("the CA bundle holds no PEM certificate")
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: transport}, nil
}

// tokenFile caches a token file's content until a stat of the path says it
// changed.
type tokenFile struct {
	path  string
	mu    sync.Mutex
	info  os.FileInfo
	token string
}

func (f *tokenFile) get(reread bool) (string, error) {
	// Stat follows the symbolic links, so a swapped ..data link shows as
	// another file.
	info, err := os.Stat(f.path)
	if err != nil {
		return "", fmt.Errorf("reading the token file: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !reread && f.info != nil && os.SameFile(info, f.info) && info.ModTime().Equal(f.info.ModTime()) && info.Size() == f.info.Size() {
		return f.token, nil
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return "", fmt.Errorf("reading the token file: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("token file %s is empty", f.path)
	}
	// Should the file change between the stat and the read, the next stat
	// differs from info and reads it again.
	f.info, f.token = info, token
	return token, nil
}

// APIError is an answer other than 2xx, with the dispatcher's message.
type APIError struct {
	StatusCode int
	Message    string
	// RetryAfter is the wait the dispatcher asked for with a 429 or 503,
	// zero when it did not.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.StatusCode)
}

// IsNotFound reports whether err is the dispatcher's 404.
func IsNotFound(err error) bool {
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound
}

// Publish publishes a JSON event in namespace. Give the event an ID to make
// publishing it again (after a timeout, say) harmless: the dispatcher
// delivers an id once within its dedupe window and answers Duplicate.
func (c *Client) Publish(ctx context.Context, namespace string, event dispatcherapi.PublishRequest) (dispatcherapi.PublishResponse, error) {
	body, err := json.Marshal(event)
	if err != nil {
		return dispatcherapi.PublishResponse{}, err
	}
	var answer dispatcherapi.PublishResponse
	err = c.do(ctx, http.MethodPost, eventsPath(namespace), body, "application/json", &answer)
	return answer, err
}

// PublishCloudEvent publishes a CloudEvent, made with the CloudEvents Go
// SDK, in namespace. It is sent in structured mode (one
// application/cloudevents+json body): the SDK's own encoding carries every
// attribute and extension as it is, the same bytes are sent again on a
// retry, and no header of a proxy on the way can drop an attribute. Its
// data must be JSON; its source and id make the dispatcher's event id, so
// publishing it again is harmless.
func (c *Client) PublishCloudEvent(ctx context.Context, namespace string, event cloudevent.Event) (dispatcherapi.PublishResponse, error) {
	if err := event.Validate(); err != nil {
		return dispatcherapi.PublishResponse{}, fmt.Errorf("CloudEvent is invalid: %w", err)
	}
	body, err := json.Marshal(event)
	if err != nil {
		return dispatcherapi.PublishResponse{}, fmt.Errorf("encoding the CloudEvent: %w", err)
	}
	var answer dispatcherapi.PublishResponse
	err = c.do(ctx, http.MethodPost, eventsPath(namespace), body, "application/cloudevents+json", &answer)
	return answer, err
}

func eventsPath(namespace string) string {
	return "/v1/namespaces/" + url.PathEscape(namespace) + "/events"
}

// Event reads an event with its deliveries and their attempts.
func (c *Client) Event(ctx context.Context, namespace, id string) (dispatcherapi.EventLog, error) {
	var log dispatcherapi.EventLog
	err := c.do(ctx, http.MethodGet, eventsPath(namespace)+"/"+url.PathEscape(id), nil, "", &log)
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
// is an *APIError with the dispatcher's message. A 429 or 503 is sent
// again, up to maxTries in all; a 401 once more with the token file read
// again, when that gives another token.
func (c *Client) do(ctx context.Context, method, path string, body []byte, contentType string, out any) error {
	reread := false
	for try := 1; ; try++ {
		token, err := c.bearer()
		if err != nil {
			return err
		}
		err = c.send(ctx, method, path, body, contentType, token, out)
		var apiErr *APIError
		if !errors.As(err, &apiErr) {
			return err
		}
		switch apiErr.StatusCode {
		case http.StatusUnauthorized:
			if reread || c.token == nil {
				return err
			}
			// The token may have been rotated since the file was last
			// read: read it again, and try once more if it changed.
			fresh, readErr := c.token(true)
			if readErr != nil {
				return errors.Join(err, readErr)
			}
			if fresh == token {
				return err
			}
			reread = true
			try--
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			if try >= c.maxTries {
				return err
			}
			wait := apiErr.RetryAfter
			if wait <= 0 {
				wait = backoff(try)
			}
			if sleepErr := c.sleep(ctx, wait); sleepErr != nil {
				return fmt.Errorf("%w; stopped waiting to try again: %w", err, sleepErr)
			}
		default:
			return err
		}
	}
}

// bearer is the token to send, empty for none.
func (c *Client) bearer() (string, error) {
	if c.token == nil {
		return "", nil
	}
	return c.token(false)
}

// send makes one HTTP request, bounded by the client's timeout.
func (c *Client) send(ctx context.Context, method, path string, body []byte, contentType, token string, out any) error {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	request, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if contentType != "" {
		request.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		request.Header.Set("Authorization", "Bearer "+token)
	}
	response, err := c.http.Do(request)
	if err != nil {
		if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
			return fmt.Errorf("the dispatcher at %s presents a TLS certificate this client does not trust%s: %w", c.base, c.trustNote, err)
		}
		return fmt.Errorf("reaching the dispatcher at %s: %w", c.base, err)
	}
	defer response.Body.Close()
	data, err := io.ReadAll(io.LimitReader(response.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("reading the dispatcher's answer: %w", err)
	}
	if response.StatusCode >= 300 {
		apiErr := &APIError{StatusCode: response.StatusCode, RetryAfter: retryAfter(response.Header.Get("Retry-After"), time.Now())}
		var problem dispatcherapi.Error
		if json.Unmarshal(data, &problem) == nil && problem.Error != "" {
			apiErr.Message = problem.Error
		} else {
			apiErr.Message = "the dispatcher answered: " + strings.TrimSpace(string(data))
		}
		return apiErr
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("reading the dispatcher's answer: %w", err)
		}
	}
	return nil
}

// retryAfter reads a Retry-After header, seconds or an HTTP date; zero when
// absent or unreadable.
func retryAfter(value string, now time.Time) time.Duration {
	if value == "" {
		return 0
	}
	if seconds, err := strconv.Atoi(value); err == nil {
		return max(time.Duration(seconds)*time.Second, 0)
	}
	if at, err := http.ParseTime(value); err == nil {
		return max(at.Sub(now), 0)
	}
	return 0
}

// backoff is the wait before try+1 when the dispatcher named none.
func backoff(try int) time.Duration {
	wait := maxBackoff
	if try < 6 {
		wait = min(firstBackoff<<(try-1), maxBackoff)
	}
	return wait + rand.N(wait/2)
}

func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
