package client

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevent "github.com/cloudevents/sdk-go/v2/event"

	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// dispatcherStub answers each request with the next of answers (the last
// one again once they run out) and records what it got.
type dispatcherStub struct {
	mu      sync.Mutex
	answers []stubAnswer
	got     []*http.Request
	bodies  []string
}

type stubAnswer struct {
	status     int
	retryAfter string
	body       string
}

func (s *dispatcherStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.got, s.bodies = append(s.got, r), append(s.bodies, string(body))
	answer := s.answers[min(len(s.got), len(s.answers))-1]
	s.mu.Unlock()
	if answer.retryAfter != "" {
		w.Header().Set("Retry-After", answer.retryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(answer.status)
	_, _ = io.WriteString(w, answer.body)
}

func (s *dispatcherStub) requests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.got...)
}

const accepted = `{"id":"evt_1","deliveries":1}`

func serve(t *testing.T, answers ...stubAnswer) (*dispatcherStub, string) {
	t.Helper()
	stub := &dispatcherStub{answers: answers}
	server := httptest.NewServer(stub)
	t.Cleanup(server.Close)
	return stub, server.URL
}

// recordSleeps makes c's waits return at once, recording them.
func recordSleeps(c *Client) *[]time.Duration {
	var waits []time.Duration
	c.sleep = func(ctx context.Context, d time.Duration) error {
		waits = append(waits, d)
		return ctx.Err()
	}
	return &waits
}

func newClient(t *testing.T, url string, options ...Option) *Client {
	t.Helper()
	c, err := New(url, options...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func publish(c *Client) error {
	_, err := c.Publish(context.Background(), "billing", dispatcherapi.PublishRequest{ID: "inv-1", Type: "invoice.paid", Data: json.RawMessage(`{}`)})
	return err
}

// projectedToken lays out a token file as the kubelet does: dir/token links
// to ..data/token, and ..data to a timestamped folder.
type projectedToken struct {
	dir      string
	versions int
}

func newProjectedToken(t *testing.T, token string) *projectedToken {
	t.Helper()
	p := &projectedToken{dir: t.TempDir()}
	p.rotate(t, token)
	if err := os.Symlink(filepath.Join("..data", "token"), p.path()); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *projectedToken) path() string { return filepath.Join(p.dir, "token") }

// rotate writes token in a new folder and swaps ..data to it with a rename,
// atomically, as the kubelet's AtomicWriter does.
func (p *projectedToken) rotate(t *testing.T, token string) {
	t.Helper()
	p.versions++
	version := filepath.Join(p.dir, "..v"+string(rune('0'+p.versions)))
	if err := os.Mkdir(version, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(version, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(p.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(version), link); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link, filepath.Join(p.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func authorizations(stub *dispatcherStub) []string {
	var got []string
	for _, r := range stub.requests() {
		got = append(got, r.Header.Get("Authorization"))
	}
	return got
}

func TestTokenFileFollowsRotation(t *testing.T) {
	stub, url := serve(t, stubAnswer{status: http.StatusAccepted, body: accepted})
	token := newProjectedToken(t, "first")
	c := newClient(t, url, WithTokenFile(token.path()))
	for _, next := range []string{"", "second", "third"} {
		if next != "" {
			token.rotate(t, next)
		}
		if err := publish(c); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"Bearer first", "Bearer second", "Bearer third"}
	if got := authorizations(stub); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("sent %q, want %q", got, want)
	}
}

// TestTokenFileIsReadAgainAfterA401: a file rewritten in place with the
// same size and time looks unchanged, so the cached token goes out; the
// dispatcher's 401 makes the client read the file again and try once more.
func TestTokenFileIsReadAgainAfterA401(t *testing.T) {
	stub, url := serve(t,
		stubAnswer{status: http.StatusAccepted, body: accepted},
		stubAnswer{status: http.StatusUnauthorized, body: `{"error":"the token was refused: expired"}`},
		stubAnswer{status: http.StatusAccepted, body: accepted},
		stubAnswer{status: http.StatusUnauthorized, body: `{"error":"the token was refused: expired"}`})
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("aaaa"), 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, url, WithTokenFile(path))
	if err := publish(c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("bbbb"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := publish(c); err != nil {
		t.Fatal(err)
	}
	want := []string{"Bearer aaaa", "Bearer aaaa", "Bearer bbbb"}
	if got := authorizations(stub); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("sent %q, want %q", got, want)
	}

	// A 401 with a token the file still holds is the answer: once.
	err = publish(c)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("got %v, want the 401", err)
	}
	if got := len(stub.requests()); got != 4 {
		t.Fatalf("sent %d requests, want 4", got)
	}
}

func TestTokenFileErrors(t *testing.T) {
	_, url := serve(t, stubAnswer{status: http.StatusAccepted, body: accepted})
	path := filepath.Join(t.TempDir(), "token")
	c := newClient(t, url, WithTokenFile(path))
	if err := publish(c); err == nil || !strings.Contains(err.Error(), "reading the token file") {
		t.Fatalf("got %v, want the missing file named", err)
	}
	if err := os.WriteFile(path, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := publish(c); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("got %v, want an empty-file error", err)
	}
}

func TestRetriesHonourRetryAfter(t *testing.T) {
	stub, url := serve(t,
		stubAnswer{status: http.StatusServiceUnavailable, retryAfter: "3", body: `{"error":"not ready; retry shortly"}`},
		stubAnswer{status: http.StatusTooManyRequests, retryAfter: "7", body: `{"error":"too many failed authentications"}`},
		stubAnswer{status: http.StatusServiceUnavailable, body: `{"error":"the event could not be stored; publish it again"}`},
		stubAnswer{status: http.StatusAccepted, body: accepted})
	c := newClient(t, url)
	waits := recordSleeps(c)
	if err := publish(c); err != nil {
		t.Fatal(err)
	}
	if got := len(stub.requests()); got != 4 {
		t.Fatalf("sent %d requests, want 4", got)
	}
	if len(*waits) != 3 || (*waits)[0] != 3*time.Second || (*waits)[1] != 7*time.Second {
		t.Fatalf("waited %v, want 3s, 7s and a backoff", *waits)
	}
	// Without Retry-After, the third wait is the backoff after try 3.
	if wait := (*waits)[2]; wait < 4*firstBackoff || wait >= 6*firstBackoff {
		t.Fatalf("backoff %s is outside [%s, %s)", wait, 4*firstBackoff, 6*firstBackoff)
	}
	for i, body := range stub.bodies {
		if body != stub.bodies[0] {
			t.Fatalf("request %d sent %q, not the first's %q", i+1, body, stub.bodies[0])
		}
	}
}

func TestRetriesAreBounded(t *testing.T) {
	for _, tries := range []int{1, 2, DefaultMaxTries} {
		stub, url := serve(t, stubAnswer{status: http.StatusServiceUnavailable, retryAfter: "1", body: `{"error":"not ready"}`})
		var options []Option
		if tries != DefaultMaxTries {
			options = append(options, WithMaxTries(tries))
		}
		c := newClient(t, url, options...)
		recordSleeps(c)
		err := publish(c)
		var apiErr *APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable || apiErr.RetryAfter != time.Second {
			t.Fatalf("got %v, want the last 503 with its Retry-After", err)
		}
		if got := len(stub.requests()); got != tries {
			t.Fatalf("sent %d requests, want %d", got, tries)
		}
	}
}

func TestOtherAnswersAreNotRetried(t *testing.T) {
	for _, status := range []int{http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusInternalServerError} {
		stub, url := serve(t, stubAnswer{status: status, body: `{"error":"no"}`})
		c := newClient(t, url)
		recordSleeps(c)
		if err := publish(c); err == nil {
			t.Fatalf("HTTP %d: no error", status)
		}
		if got := len(stub.requests()); got != 1 {
			t.Fatalf("HTTP %d: sent %d requests, want 1", status, got)
		}
	}
}

func TestWaitingStopsWithTheContext(t *testing.T) {
	stub, url := serve(t, stubAnswer{status: http.StatusServiceUnavailable, retryAfter: "3600", body: `{"error":"not ready"}`})
	c := newClient(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	c.sleep = func(waitCtx context.Context, d time.Duration) error {
		cancel()
		return sleep(waitCtx, d)
	}
	_, err := c.Publish(ctx, "billing", dispatcherapi.PublishRequest{Type: "invoice.paid"})
	var apiErr *APIError
	if !errors.Is(err, context.Canceled) || !errors.As(err, &apiErr) {
		t.Fatalf("got %v, want the 503 and context.Canceled", err)
	}
	if got := len(stub.requests()); got != 1 {
		t.Fatalf("sent %d requests, want 1", got)
	}
}

func TestRetryAfterForms(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for value, want := range map[string]time.Duration{
		"":                              0,
		"5":                             5 * time.Second,
		"-5":                            0,
		"soon":                          0,
		"Thu, 26 Nov 2026 10:00:09 GMT": 9 * time.Second,
		"Thu, 26 Nov 2026 09:00:00 GMT": 0,
	} {
		if got := retryAfter(value, now); got != want {
			t.Errorf("Retry-After %q: %s, want %s", value, got, want)
		}
	}
}

func TestRequestsHaveATimeout(t *testing.T) {
	release := make(chan struct{})
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer server.Close()
	defer close(release)
	c := newClient(t, server.URL, WithTimeout(50*time.Millisecond))
	if err := publish(c); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the deadline exceeded", err)
	}
	if c := newClient(t, server.URL); c.timeout != DefaultTimeout {
		t.Fatalf("default timeout %s, want %s", c.timeout, DefaultTimeout)
	}
}

func TestTLSIsVerified(t *testing.T) {
	server := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, accepted)
	}))
	defer server.Close()
	want := "the dispatcher at " + server.URL + " presents a TLS certificate this client does not trust: "
	if err := publish(newClient(t, server.URL)); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %q", err, want)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := publish(newClient(t, server.URL, WithCAFile(caFile))); err != nil {
		t.Fatal(err)
	}
	if err := publish(newClient(t, server.URL, WithCAPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw})))); err != nil {
		t.Fatal(err)
	}
}

func TestOptionsAreChecked(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, test := range map[string]struct {
		options []Option
		says    string
	}{
		"no tries":         {[]Option{WithMaxTries(0)}, "max tries 0 is less than 1"},
		"negative timeout": {[]Option{WithTimeout(-time.Second)}, "timeout -1s is negative"},
		"missing CA file":  {[]Option{WithCAFile(filepath.Join(t.TempDir(), "none.pem"))}, "reading the CA file"},
		"not PEM":          {[]Option{WithCAFile(notPEM)}, "holds no PEM certificate"},
		"CA and client":    {[]Option{WithCAFile(notPEM), WithHTTPClient(http.DefaultClient)}, "WithCAFile and WithHTTPClient"},
		"PEM and client":   {[]Option{WithCAPEM([]byte("hello")), WithHTTPClient(http.DefaultClient)}, "WithCAPEM and WithHTTPClient"},
		"PEM not PEM":      {[]Option{WithCAPEM([]byte("hello"))}, "the CA bundle holds no PEM certificate"},
	} {
		if _, err := New("https://dispatcher.example:8443", test.options...); err == nil || !strings.Contains(err.Error(), test.says) {
			t.Errorf("%s: got %v, want %q", name, err, test.says)
		}
	}
}

func TestPublishCloudEventIsStructured(t *testing.T) {
	stub, url := serve(t, stubAnswer{status: http.StatusAccepted, body: accepted})
	c := newClient(t, url)
	event := cloudevent.New()
	event.SetID("inv-1")
	event.SetSource("billing/invoices")
	event.SetType("invoice.paid")
	event.SetExtension("sandbox", true)
	if err := event.SetData(cloudevent.ApplicationJSON, map[string]int{"amount": 42}); err != nil {
		t.Fatal(err)
	}
	answer, err := c.PublishCloudEvent(context.Background(), "billing", event)
	if err != nil {
		t.Fatal(err)
	}
	if answer.ID != "evt_1" {
		t.Fatalf("answer %+v", answer)
	}
	request := stub.requests()[0]
	if got := request.Header.Get("Content-Type"); got != "application/cloudevents+json" {
		t.Fatalf("Content-Type %q", got)
	}
	if request.URL.Path != "/v1/namespaces/billing/events" {
		t.Fatalf("path %q", request.URL.Path)
	}
	var sent cloudevent.Event
	if err := json.Unmarshal([]byte(stub.bodies[0]), &sent); err != nil {
		t.Fatal(err)
	}
	if sent.ID() != "inv-1" || sent.Source() != "billing/invoices" || sent.Type() != "invoice.paid" ||
		sent.Extensions()["sandbox"] != true || string(sent.Data()) != `{"amount":42}` {
		t.Fatalf("sent %s", stub.bodies[0])
	}

	// An invalid event is refused before any request.
	if _, err := c.PublishCloudEvent(context.Background(), "billing", cloudevent.New()); err == nil || !strings.Contains(err.Error(), "CloudEvent is invalid") {
		t.Fatalf("got %v, want the event refused", err)
	}
	if got := len(stub.requests()); got != 1 {
		t.Fatalf("sent %d requests, want 1", got)
	}
}
