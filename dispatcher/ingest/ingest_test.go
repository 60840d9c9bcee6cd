package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hookrelay/hookrelay/dispatcher/delivery"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// recordingPublisher keeps what reaches the engine.
type recordingPublisher struct{ published []delivery.Incoming }

func (p *recordingPublisher) Publish(_ context.Context, namespace string, in delivery.Incoming) (store.Accepted, error) {
	p.published = append(p.published, in)
	return store.Accepted{Event: store.Event{Namespace: namespace, ID: in.ID, Deliveries: 1}}, nil
}

func (p *recordingPublisher) Retry(context.Context, string, string) (store.Delivery, error) {
	return store.Delivery{}, nil
}

func (p *recordingPublisher) Replay(context.Context, string, string, time.Time) (int, error) {
	return 0, nil
}

// acceptTime is the handler's clock in tests.
var acceptTime = time.Date(2026, 11, 25, 12, 0, 0, 500_000_000, time.FixedZone("CET", 3600))

func TestPublishDecodesAndRefuses(t *testing.T) {
	cases := []struct {
		name, contentType, body string
		headers                 map[string]string
		status                  int
		message                 string
		want                    delivery.Incoming
		// createdAt is the published created_at (RFC 3339); the clock's
		// time when empty.
		createdAt string
	}{
		{name: "JSON event", body: `{"id":"evt_1","type":"user.created","data":{"a":1},"sandbox":true}`, status: http.StatusAccepted,
			want: delivery.Incoming{ID: "evt_1", Type: "user.created", Data: []byte(`{"a":1}`), Sandbox: true}},
		{name: "no data is an empty object", body: `{"id":"evt_2","type":"user.created"}`, status: http.StatusAccepted,
			want: delivery.Incoming{ID: "evt_2", Type: "user.created", Data: []byte(`{}`)}},
		{name: "trailing JSON", body: `{"type":"a"} {"type":"b"}`, status: http.StatusBadRequest, message: "more than one JSON value"},
		{name: "malformed id", body: `{"id":"evt 1","type":"a"}`, status: http.StatusBadRequest, message: `id "evt 1" is malformed`},
		{name: "type with a trailing dot", body: `{"type":"user."}`, status: http.StatusBadRequest, message: `type "user." is malformed`},
		{name: "binary CloudEvent", body: `{"a":1}`, contentType: "application/json",
			headers: map[string]string{"ce-specversion": "1.0", "ce-id": "ce-1", "ce-type": "com.example.a", "ce-source": "/s", "ce-sandbox": "true"},
			status:  http.StatusAccepted, want: delivery.Incoming{ID: "ce_8e295f312d7e62d4_ce-1", Type: "com.example.a", Data: []byte(`{"a":1}`), Sandbox: true}},
		{name: "the same CloudEvent id from another source", body: `{"a":1}`, contentType: "application/json",
			headers: map[string]string{"ce-specversion": "1.0", "ce-id": "ce-1", "ce-type": "com.example.a", "ce-source": "/other"},
			status:  http.StatusAccepted, want: delivery.Incoming{ID: "ce_bf2faee259602662_ce-1", Type: "com.example.a", Data: []byte(`{"a":1}`)}},
		{name: "binary CloudEvent time is created_at", body: `{}`, contentType: "application/json",
			headers: map[string]string{"ce-specversion": "1.0", "ce-id": "ce-7", "ce-type": "a", "ce-source": "/s", "ce-time": "2026-11-25T11:00:00.75+01:00"},
			status:  http.StatusAccepted, want: delivery.Incoming{ID: "ce_8e295f312d7e62d4_ce-7", Type: "a", Data: []byte(`{}`)}, createdAt: "2026-11-25T10:00:00Z"},
		{name: "structured CloudEvent time is created_at", contentType: "application/cloudevents+json",
			body:   `{"specversion":"1.0","id":"ce-8","type":"a","source":"/s","time":"2020-02-29T23:59:59Z","data":{}}`,
			status: http.StatusAccepted, want: delivery.Incoming{ID: "ce_8e295f312d7e62d4_ce-8", Type: "a", Data: []byte(`{}`)}, createdAt: "2020-02-29T23:59:59Z"},
		{name: "CloudEvent id is checked before the source is added", body: `{}`, contentType: "application/json",
			headers: map[string]string{"ce-specversion": "1.0", "ce-id": "ce 9", "ce-type": "a", "ce-source": "/s"},
			status:  http.StatusBadRequest, message: `id "ce 9" is malformed`},
		{name: "JSON created_at", body: `{"id":"evt_5","type":"a","created_at":"2026-11-25T09:46:30Z"}`, status: http.StatusAccepted,
			want: delivery.Incoming{ID: "evt_5", Type: "a", Data: []byte(`{}`)}, createdAt: "2026-11-25T09:46:30Z"},
		{name: "JSON created_at with an offset and a fraction", body: `{"id":"evt_6","type":"a","created_at":"2026-11-25T04:46:30.999-05:00"}`, status: http.StatusAccepted,
			want: delivery.Incoming{ID: "evt_6", Type: "a", Data: []byte(`{}`)}, createdAt: "2026-11-25T09:46:30Z"},
		{name: "JSON created_at null is the accept time", body: `{"id":"evt_7","type":"a","created_at":null}`, status: http.StatusAccepted,
			want: delivery.Incoming{ID: "evt_7", Type: "a", Data: []byte(`{}`)}},
		{name: "JSON created_at the zero time is kept", body: `{"id":"evt_8","type":"a","created_at":"0001-01-01T00:00:00Z"}`, status: http.StatusAccepted,
			want: delivery.Incoming{ID: "evt_8", Type: "a", Data: []byte(`{}`)}, createdAt: "0001-01-01T00:00:00Z"},
		{name: "JSON created_at a date only", body: `{"type":"a","created_at":"2026-11-25"}`, status: http.StatusBadRequest,
			message: `created_at "2026-11-25" is not an RFC 3339 time`},
		{name: "JSON created_at without a zone", body: `{"type":"a","created_at":"2026-11-25T09:46:30"}`, status: http.StatusBadRequest,
			message: `created_at "2026-11-25T09:46:30" is not an RFC 3339 time`},
		{name: "JSON created_at in Unix seconds", body: `{"type":"a","created_at":1795599990}`, status: http.StatusBadRequest,
			message: "created_at"},
		{name: "JSON created_at past year 9999 in UTC", body: `{"type":"a","created_at":"9999-12-31T23:59:59-23:59"}`, status: http.StatusBadRequest,
			message: "created_at 9999-12-31T23:59:59-23:59 is outside the years 0 to 9999"},
		{name: "JSON created_at before year 0 in UTC", body: `{"type":"a","created_at":"0000-01-01T00:00:00+01:00"}`, status: http.StatusBadRequest,
			message: "created_at 0000-01-01T00:00:00+01:00 is outside the years 0 to 9999"},
		{name: "CloudEvent with XML data", body: `<a/>`, contentType: "application/xml",
			headers: map[string]string{"ce-specversion": "1.0", "ce-id": "ce-2", "ce-type": "com.example.a", "ce-source": "/s"},
			status:  http.StatusBadRequest, message: `datacontenttype "application/xml" is not JSON`},
		{name: "CloudEvent time past year 9999 in UTC", body: `{"a":1}`, contentType: "application/json",
			headers: map[string]string{"ce-specversion": "1.0", "ce-id": "ce-3", "ce-type": "com.example.a", "ce-source": "/s", "ce-time": "9999-12-31T23:59:59-23:59"},
			status:  http.StatusBadRequest, message: "outside the years 0 to 9999"},
		{name: "CloudEvent time before year 0 in UTC", body: `{"a":1}`, contentType: "application/json",
			headers: map[string]string{"ce-specversion": "1.0", "ce-id": "ce-4", "ce-type": "com.example.a", "ce-source": "/s", "ce-time": "0000-01-01T00:00:00+01:00"},
			status:  http.StatusBadRequest, message: "outside the years 0 to 9999"},
		{name: "structured CloudEvent time past year 9999", contentType: "application/cloudevents+json",
			body:   `{"specversion":"1.0","id":"ce-5","type":"com.example.a","source":"/s","time":"9999-12-31T23:00:00-02:00","data":{}}`,
			status: http.StatusBadRequest, message: "outside the years 0 to 9999"},
		{name: "invalid UTF-8 in JSON data", body: "{\"type\":\"a\",\"data\":{\"s\":\"\xff\"}}", status: http.StatusBadRequest, message: "data is not valid UTF-8"},
		{name: "invalid UTF-8 in CloudEvent data", body: "{\"s\":\"\xc3\x28\"}", contentType: "application/json",
			headers: map[string]string{"ce-specversion": "1.0", "ce-id": "ce-6", "ce-type": "com.example.a", "ce-source": "/s"},
			status:  http.StatusBadRequest, message: "data is not valid UTF-8"},
		{name: "JSON with parameters", contentType: "application/json; charset=utf-8", body: `{"id":"evt_3","type":"a"}`, status: http.StatusAccepted,
			want: delivery.Incoming{ID: "evt_3", Type: "a", Data: []byte(`{}`)}},
		{name: "a +json type", contentType: "application/vnd.palm.event+json", body: `{"id":"evt_4","type":"a"}`, status: http.StatusAccepted,
			want: delivery.Incoming{ID: "evt_4", Type: "a", Data: []byte(`{}`)}},
		{name: "form content type", contentType: "application/x-www-form-urlencoded", body: `{"type":"a"}`, status: http.StatusUnsupportedMediaType,
			message: `Content-Type "application/x-www-form-urlencoded" is not JSON`},
		{name: "text content type", contentType: "text/plain", body: `{"type":"a"}`, status: http.StatusUnsupportedMediaType, message: "is not JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			publisher := &recordingPublisher{}
			mux := http.NewServeMux()
			(&Handler{Publisher: publisher, MaxBody: DefaultMaxBody, Log: logr.Discard(), Now: func() time.Time { return acceptTime }}).Register(mux)
			request := httptest.NewRequest(http.MethodPost, "/v1/namespaces/palm/events", strings.NewReader(tc.body))
			request.Header.Set("Content-Type", tc.contentType)
			if tc.contentType == "" {
				request.Header.Set("Content-Type", "application/json")
			}
			for k, v := range tc.headers {
				request.Header.Set(k, v)
			}
			response := httptest.NewRecorder()
			mux.ServeHTTP(response, request)
			if response.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", response.Code, tc.status, response.Body)
			}
			if tc.message != "" {
				var answer dispatcherapi.Error
				if err := json.Unmarshal(response.Body.Bytes(), &answer); err != nil || !strings.Contains(answer.Error, tc.message) {
					t.Fatalf("answer %s, want an error containing %q", response.Body, tc.message)
				}
				if len(publisher.published) != 0 {
					t.Fatal("a refused event reached the engine")
				}
				return
			}
			got := publisher.published[0]
			if got.ID != tc.want.ID || got.Type != tc.want.Type || string(got.Data) != string(tc.want.Data) || got.Sandbox != tc.want.Sandbox {
				t.Fatalf("published %+v, want %+v", got, tc.want)
			}
			wantCreated := acceptTime.UTC().Truncate(time.Second)
			if tc.createdAt != "" {
				wantCreated, _ = time.Parse(time.RFC3339, tc.createdAt)
			}
			if !got.CreatedAt.Equal(wantCreated) || got.CreatedAt.Location() != time.UTC {
				t.Fatalf("created_at %s, want %s in UTC", got.CreatedAt, wantCreated)
			}
		})
	}
}

func TestGeneratedEventIDs(t *testing.T) {
	h := &Handler{Now: func() time.Time { return time.UnixMilli(1704538200000) }}
	in, err := h.incoming("", "user.created", nil, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(in.ID, "evt_1704538200000_") || len(in.ID) != len("evt_1704538200000_")+12 {
		t.Fatalf("generated id %q, want evt_<unix ms>_<12 hex>", in.ID)
	}
}

// TestPublishKeepsEveryEvent runs the API on a real engine and store: a
// namespace without endpoints takes events (202, no deliveries) and its
// delivery log shows them; the same CloudEvent id from two sources is two
// events, and from the same source again a duplicate.
func TestPublishKeepsEveryEvent(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenBolt(filepath.Join(t.TempDir(), "hookrelay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	engine, err := delivery.New(ctx, delivery.Options{Store: db, Metrics: delivery.NewMetrics(prometheus.NewRegistry()), Log: logr.Discard(),
		Clock: clocktesting.NewFakeClock(acceptTime)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = engine.Stop(ctx) }()
	mux := http.NewServeMux()
	(&Handler{Publisher: engine, Store: db, MaxBody: DefaultMaxBody, Log: logr.Discard(), Now: func() time.Time { return acceptTime }}).Register(mux)
	call := func(request *http.Request, answer any) int {
		t.Helper()
		response := httptest.NewRecorder()
		mux.ServeHTTP(response, request)
		if err := json.Unmarshal(response.Body.Bytes(), answer); err != nil {
			t.Fatalf("%s %s answered %d %q: %v", request.Method, request.URL, response.Code, response.Body, err)
		}
		return response.Code
	}
	publish := func(request *http.Request, wantStatus int, want dispatcherapi.PublishResponse) {
		t.Helper()
		var got dispatcherapi.PublishResponse
		if status := call(request, &got); status != wantStatus || got != want {
			t.Fatalf("publish answered %d %+v, want %d %+v", status, got, wantStatus, want)
		}
	}
	logged := func(id string, want store.Event) {
		t.Helper()
		var got dispatcherapi.EventLog
		if status := call(httptest.NewRequest(http.MethodGet, "/v1/namespaces/setting-up/events/"+id, nil), &got); status != http.StatusOK {
			t.Fatalf("GET event %s answered %d", id, status)
		}
		want.Namespace, want.AcceptedAt = "setting-up", acceptTime.UTC()
		if !got.Event.CreatedAt.Equal(want.CreatedAt) || !got.Event.AcceptedAt.Equal(want.AcceptedAt) {
			t.Fatalf("logged event %+v, want %+v", got.Event, want)
		}
		got.Event.CreatedAt, got.Event.AcceptedAt, want.CreatedAt, want.AcceptedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		got.Event.Data = nil
		if !reflect.DeepEqual(got.Event, want) || len(got.Deliveries) != 0 {
			t.Fatalf("logged %+v, want %+v and no deliveries", got, want)
		}
	}
	jsonEvent := func(body string) *http.Request {
		request := httptest.NewRequest(http.MethodPost, "/v1/namespaces/setting-up/events", strings.NewReader(body))
		request.Header.Set("Content-Type", "application/json")
		return request
	}
	cloudEvent := func(source, id string) *http.Request {
		request := httptest.NewRequest(http.MethodPost, "/v1/namespaces/setting-up/events", strings.NewReader(`{"n":1}`))
		request.Header.Set("Content-Type", "application/json")
		for name, value := range map[string]string{"ce-specversion": "1.0", "ce-id": id, "ce-source": source, "ce-type": "order.paid", "ce-time": "2026-11-25T09:00:00Z"} {
			request.Header.Set(name, value)
		}
		return request
	}
	created := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

	publish(jsonEvent(`{"id":"evt_early","type":"user.created","created_at":"2026-11-25T09:00:00Z"}`), http.StatusAccepted, dispatcherapi.PublishResponse{ID: "evt_early"})
	logged("evt_early", store.Event{ID: "evt_early", Type: "user.created", CreatedAt: created})
	publish(jsonEvent(`{"id":"evt_early","type":"user.created"}`), http.StatusOK, dispatcherapi.PublishResponse{ID: "evt_early", Duplicate: true})

	publish(cloudEvent("/shop-eu", "order-1"), http.StatusAccepted, dispatcherapi.PublishResponse{ID: "ce_" + sourceHash("/shop-eu") + "_order-1"})
	publish(cloudEvent("/shop-us", "order-1"), http.StatusAccepted, dispatcherapi.PublishResponse{ID: "ce_" + sourceHash("/shop-us") + "_order-1"})
	publish(cloudEvent("/shop-eu", "order-1"), http.StatusOK, dispatcherapi.PublishResponse{ID: "ce_" + sourceHash("/shop-eu") + "_order-1", Duplicate: true})
	for _, source := range []string{"/shop-eu", "/shop-us"} {
		id := "ce_" + sourceHash(source) + "_order-1"
		logged(id, store.Event{ID: id, Type: "order.paid", CreatedAt: created})
	}
}

func sourceHash(source string) string {
	sum := sha256.Sum256([]byte(source))
	return hex.EncodeToString(sum[:8])
}

// TestWritesWaitForReady: until the engine has recovered the stored
// deliveries, publish, retry and replay answer 503 with Retry-After and
// reach no engine; once it is ready, a publish is accepted.
func TestWritesWaitForReady(t *testing.T) {
	var ready atomic.Bool
	publisher := &recordingPublisher{}
	mux := http.NewServeMux()
	(&Handler{Publisher: publisher, MaxBody: DefaultMaxBody, Log: logr.Discard(), Now: func() time.Time { return acceptTime }, Ready: func() error {
		if !ready.Load() {
			return errors.New("the dispatcher is starting")
		}
		return nil
	}}).Register(mux)
	send := func(path, body string) *httptest.ResponseRecorder {
		request := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		request.Header.Set("Content-Type", "application/json")
		response := httptest.NewRecorder()
		mux.ServeHTTP(response, request)
		return response
	}
	for _, path := range []string{"/v1/namespaces/palm/events", "/v1/namespaces/palm/deliveries/dlv_1/retry", "/v1/namespaces/palm/endpoints/orders/replay"} {
		response := send(path, `{"id":"evt_1","type":"order.paid","data":{}}`)
		if response.Code != http.StatusServiceUnavailable || response.Header().Get("Retry-After") != "1" || !strings.Contains(response.Body.String(), "starting") {
			t.Fatalf("POST %s before ready answered %d, Retry-After %q, %q; want 503, 1 and a message saying it is starting",
				path, response.Code, response.Header().Get("Retry-After"), response.Body)
		}
	}
	if len(publisher.published) != 0 {
		t.Fatalf("published %v before ready", publisher.published)
	}
	ready.Store(true)
	if response := send("/v1/namespaces/palm/events", `{"id":"evt_1","type":"order.paid","data":{}}`); response.Code != http.StatusAccepted {
		t.Fatalf("publish once ready answered %d %q, want 202", response.Code, response.Body)
	}
}

// unreachableStore is a publisher whose store cannot be reached.
type unreachableStore struct{ recordingPublisher }

func (*unreachableStore) Publish(context.Context, string, delivery.Incoming) (store.Accepted, error) {
	return store.Accepted{}, errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")
}

// TestUnstoredEventAsksForARetry: an event the store did not take is
// answered 503 with Retry-After, so that a producer's client retries it
// (on this replica or another).
func TestUnstoredEventAsksForARetry(t *testing.T) {
	mux := http.NewServeMux()
	(&Handler{Publisher: &unreachableStore{}, MaxBody: DefaultMaxBody, Log: logr.Discard(), Now: func() time.Time { return acceptTime }}).Register(mux)
	request := httptest.NewRequest(http.MethodPost, "/v1/namespaces/palm/events", strings.NewReader(`{"id":"evt_1","type":"order.paid","data":{}}`))
	request.Header.Set("Content-Type", "application/json")
	response := httptest.NewRecorder()
	mux.ServeHTTP(response, request)
	if response.Code != http.StatusServiceUnavailable || response.Header().Get("Retry-After") != "1" || !strings.Contains(response.Body.String(), "publish it again") {
		t.Fatalf("publish with the store out of reach answered %d, Retry-After %q, %q; want 503, 1 and a message to publish again",
			response.Code, response.Header().Get("Retry-After"), response.Body)
	}
}

// TestPublishAnswerMatchesJSON: the publish answer written without
// reflection is byte for byte what writeJSON encodes, and ids it cannot
// write plainly go through writeJSON.
func TestPublishAnswerMatchesJSON(t *testing.T) {
	for _, test := range []struct {
		id         string
		deliveries int
		duplicate  bool
	}{
		{"evt_1", 0, false},
		{"evt_1764064800000_a1b2c3d4e5f6", 4, false},
		{"order:42.created-v2", 1, true},
		{`quo"te<&>\`, 2, false},
		{"ünï\x01", 3, true},
	} {
		recorder := httptest.NewRecorder()
		writeJSON(recorder, http.StatusAccepted, dispatcherapi.PublishResponse{ID: test.id, Deliveries: test.deliveries, Duplicate: test.duplicate})
		want := recorder.Body.String()
		if plainJSONString(test.id) {
			if got := string(appendResponse(nil, test.id, test.deliveries, test.duplicate)); got != want {
				t.Errorf("appendResponse(%q) = %q, writeJSON wrote %q", test.id, got, want)
			}
		} else if strings.Contains(want, `"id":"`+test.id+`"`) {
			t.Errorf("plainJSONString(%q) is false, yet writeJSON wrote it as is: %q", test.id, want)
		}
	}
}

// TestRefusalsCounted: each refused publish counts once under its status
// code; accepted ones and other routes' answers count nothing.
func TestRefusalsCounted(t *testing.T) {
	var ready atomic.Bool
	registry := prometheus.NewRegistry()
	refused := NewRefusedCounter(registry)
	mux := http.NewServeMux()
	(&Handler{Publisher: &recordingPublisher{}, MaxBody: 64, Log: logr.Discard(), Refused: refused, Ready: func() error {
		if !ready.Load() {
			return errors.New("the dispatcher is starting")
		}
		return nil
	}}).Register(mux)
	send := func(path, body string) int {
		response := httptest.NewRecorder()
		mux.ServeHTTP(response, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
		return response.Code
	}
	valid := `{"type":"order.paid"}`
	for _, c := range []struct {
		path, body string
		want       int
	}{
		{"/v1/namespaces/palm/events", valid, http.StatusServiceUnavailable},
		{"/v1/namespaces/palm/deliveries/dlv_1/retry", "", http.StatusServiceUnavailable}, // not a publish
	} {
		if got := send(c.path, c.body); got != c.want {
			t.Fatalf("POST %s answered %d, want %d", c.path, got, c.want)
		}
	}
	ready.Store(true)
	for _, c := range []struct {
		path, body string
		want       int
	}{
		{"/v1/namespaces/palm/events", valid, http.StatusAccepted},
		{"/v1/namespaces/palm/events", `{"type":""}`, http.StatusBadRequest},
		{"/v1/namespaces/Palm/events", valid, http.StatusBadRequest},
		{"/v1/namespaces/palm/events", `{"type":"order.paid","data":"` + strings.Repeat("x", 64) + `"}`, http.StatusRequestEntityTooLarge},
	} {
		if got := send(c.path, c.body); got != c.want {
			t.Fatalf("POST %s %s answered %d, want %d", c.path, c.body, got, c.want)
		}
	}
	want := map[string]float64{"400": 2, "401": 0, "403": 0, "413": 1, "429": 0, "503": 1}
	for code, count := range want {
		if got := testutil.ToFloat64(refused.WithLabelValues(code)); got != count {
			t.Errorf("hookrelay_publishes_refused_total{code=%q} = %g, want %g", code, got, count)
		}
	}
}
