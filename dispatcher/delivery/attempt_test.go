package delivery

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hookrelay/hookrelay/dispatcher/signing"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/internal/redact"
	"github.com/hookrelay/hookrelay/internal/routes"
	"github.com/hookrelay/hookrelay/internal/whsec"
)

func attemptRoute(id, url string, maxInFlight int32) *routes.Route {
	return &routes.Route{
		ID:       id,
		Endpoint: routes.Endpoint{URL: url, Timeout: metav1.Duration{Duration: 10 * time.Second}, MaxInFlight: maxInFlight},
		Keys:     []routes.Key{{Secret: whsec.Encode(make([]byte, 32))}},
	}
}

// TestAttemptsReuseConnections: an endpoint's attempts, maxInFlight at a
// time, open no more connections than that, and each endpoint has its own
// pool sized to its maxInFlight, dropped once it is not routed.
func TestAttemptsReuseConnections(t *testing.T) {
	var opened atomic.Int32
	server := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Webhook-Signature") == "" || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("User-Agent") != UserAgent {
			w.WriteHeader(http.StatusBadRequest)
		}
		_, _ = w.Write([]byte("ok"))
	}))
	server.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			opened.Add(1)
		}
	}
	server.Start()
	defer server.Close()

	attempter := &Attempter{Client: NewHTTPClient(nil), Signer: signing.Signer{Prefix: "Test"}}
	endpoint := attemptRoute("ns/a", server.URL, 4)
	event := &store.Event{ID: "evt_1", Type: "t"}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 25 {
				out := attempter.do(context.Background(), endpoint, event, []byte(`{}`), time.Unix(1_764_064_800, 0))
				if out.err != nil || out.status != http.StatusOK || out.response != "ok" {
					t.Errorf("attempt: status %d, response %q, error %v", out.status, out.response, out.err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := opened.Load(); n > 4 {
		t.Errorf("100 attempts, 4 at a time, opened %d connections; want at most 4", n)
	}

	pool := func(id string) *endpointPool {
		attempter.pools.mu.RLock()
		defer attempter.pools.mu.RUnlock()
		return attempter.pools.byEndpoint[id]
	}
	other := attemptRoute("ns/b", server.URL, 16)
	attempter.clientFor(other)
	if a, b := pool("ns/a"), pool("ns/b"); a == nil || b == nil || a.transport == b.transport ||
		a.transport.MaxIdleConnsPerHost != 4 || b.transport.MaxIdleConnsPerHost != 16 {
		t.Fatalf("pools: ns/a %+v, ns/b %+v; want one each, sized 4 and 16", a, b)
	}
	before := pool("ns/a")
	attempter.clientFor(attemptRoute("ns/a", server.URL, 8))
	if after := pool("ns/a"); after == before || after.transport.MaxIdleConnsPerHost != 8 {
		t.Errorf("a new maxInFlight kept the pool sized %d", after.transport.MaxIdleConnsPerHost)
	}
	attempter.forget(func(id string) bool { return id == "ns/b" })
	if pool("ns/a") != nil || pool("ns/b") == nil {
		t.Error("forget kept the pool of an endpoint not routed, or dropped a routed one's")
	}
}

// TestAttemptErrorNamesTheRequest: an attempt that gets no answer says so
// as Go's HTTP client does, with the method and the URL, and the URL's
// credentials left out: the error is stored, logged and shown in status.
func TestAttemptErrorNamesTheRequest(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	listener.Close() // nothing listens there now
	attempter := &Attempter{Client: NewHTTPClient(nil), Signer: signing.Signer{Prefix: "Test"}}
	endpoint := attemptRoute("ns/a", "http://user:hunter2@"+address+"/hook?token=hunter2", 1)
	out := attempter.do(context.Background(), endpoint, &store.Event{ID: "evt_1", Type: "t"}, []byte(`{}`), time.Unix(1_764_064_800, 0))
	if out.err == nil {
		t.Fatal("an attempt to a closed port succeeded")
	}
	message := out.err.Error()
	want := `Post "http://` + redact.Placeholder + "@" + address + "/hook?token=" + redact.Placeholder + `": `
	if !strings.HasPrefix(message, want) || strings.Contains(message, "hunter2") {
		t.Errorf("error %q, want it to start %q and to hold no credential", message, want)
	}
}

// TestAttemptAsksForNoCompression: an attempt does not ask the receiver to
// compress its answer (no Accept-Encoding), of which only a snippet is
// kept; an answer compressed anyway is kept as it came.
func TestAttemptAsksForNoCompression(t *testing.T) {
	var acceptEncoding atomic.Value
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acceptEncoding.Store(r.Header.Values("Accept-Encoding"))
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = io.WriteString(w, "not really gzip")
	}))
	t.Cleanup(server.Close)
	attempter := &Attempter{Client: NewHTTPClient(nil), Signer: signing.Signer{Prefix: "Test"}}
	out := attempter.do(context.Background(), attemptRoute("ns/a", server.URL, 1), &store.Event{ID: "evt_1", Type: "t"}, []byte(`{}`), time.Now())
	if out.err != nil || out.status != http.StatusOK {
		t.Fatalf("attempt: status %d, %v", out.status, out.err)
	}
	if got := acceptEncoding.Load().([]string); len(got) != 0 {
		t.Errorf("the attempt sent Accept-Encoding %q, want none", got)
	}
	if out.response != "not really gzip" {
		t.Errorf("response kept as %q, want it as it came", out.response)
	}
}

// TestReadSnippet: a response is kept up to responseSnippet bytes, read in
// pieces; the end of the body is no error, a truncated body is.
func TestReadSnippet(t *testing.T) {
	for _, test := range []struct {
		name    string
		body    io.Reader
		want    int
		wantErr error
	}{
		{name: "empty", body: strings.NewReader("")},
		{name: "short", body: iotest.OneByteReader(strings.NewReader("ok")), want: 2},
		{name: "long", body: iotest.HalfReader(strings.NewReader(strings.Repeat("x", 3*responseSnippet))), want: responseSnippet},
		{name: "truncated", body: io.MultiReader(strings.NewReader("ok"), iotest.ErrReader(io.ErrUnexpectedEOF)), want: 2, wantErr: io.ErrUnexpectedEOF},
	} {
		n, err := readSnippet(test.body, make([]byte, responseSnippet))
		if n != test.want || !errors.Is(err, test.wantErr) || (err == nil) != (test.wantErr == nil) {
			t.Errorf("%s: read %d, %v; want %d, %v", test.name, n, err, test.want, test.wantErr)
		}
	}
}

// BenchmarkAttempt is one signed attempt to a loopback receiver, as the
// engine makes it: body, signature, request, response.
func BenchmarkAttempt(b *testing.B) {
	server := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer server.Close()
	attempter := &Attempter{Client: NewHTTPClient(nil), Signer: signing.Signer{Prefix: "Bench"}}
	endpoint := attemptRoute("ns/bench", server.URL, 4)
	event := &store.Event{ID: "evt_bench_000001", Type: "bench.one", CreatedAt: time.Unix(1_764_064_800, 0),
		Data: []byte(`{"n":1,"user_id":"d1c9b98b-3190-479e-99db-04060ff3997f"}`)}
	b.ReportAllocs()
	for b.Loop() {
		body, err := Body(endpoint, event)
		if err != nil {
			b.Fatal(err)
		}
		if out := attempter.do(context.Background(), endpoint, event, body, time.Unix(1_764_064_800, 0)); out.err != nil {
			b.Fatal(out.err)
		}
	}
}
