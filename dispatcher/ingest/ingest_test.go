package ingest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/hookrelay/hookrelay/dispatcher/delivery"
	"github.com/hookrelay/hookrelay/dispatcher/store"
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

func TestPublishDecodesAndRefuses(t *testing.T) {
	cases := []struct {
		name, contentType, body string
		headers                 map[string]string
		status                  int
		message                 string
		want                    delivery.Incoming
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
			status:  http.StatusAccepted, want: delivery.Incoming{ID: "ce-1", Type: "com.example.a", Data: []byte(`{"a":1}`), Sandbox: true}},
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
			(&Handler{Publisher: publisher, MaxBody: DefaultMaxBody, Log: logr.Discard()}).Register(mux)
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
				var answer Error
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
			if got.CreatedAt.IsZero() {
				t.Fatal("no created_at")
			}
		})
	}
}

func TestGeneratedEventIDs(t *testing.T) {
	h := &Handler{Now: func() time.Time { return time.UnixMilli(1704538200000) }}
	in, err := h.incoming("", "user.created", nil, false, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(in.ID, "evt_1704538200000_") || len(in.ID) != len("evt_1704538200000_")+12 {
		t.Fatalf("generated id %q, want evt_<unix ms>_<12 hex>", in.ID)
	}
}
