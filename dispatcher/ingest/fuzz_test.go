package ingest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-logr/logr"

	"github.com/hookrelay/hookrelay/dispatcher/delivery"
)

// cloudEventIDPattern is a CloudEvent's event id: its source's hash and a
// valid id.
var cloudEventIDPattern = regexp.MustCompile(`^ce_[0-9a-f]{16}_[A-Za-z0-9_.:-]{1,255}$`)

// checkAccepted fails unless an accepted event keeps the documented
// invariants: a valid type and id, data that is valid JSON in valid UTF-8,
// and a time whose year has four digits.
func checkAccepted(t *testing.T, in delivery.Incoming) {
	t.Helper()
	switch {
	case len(in.Type) > 253 || !typePattern.MatchString(in.Type):
		t.Fatalf("accepted type %q", in.Type)
	case !idPattern.MatchString(in.ID) && !cloudEventIDPattern.MatchString(in.ID):
		t.Fatalf("accepted id %q", in.ID)
	case !json.Valid(in.Data):
		t.Fatalf("accepted data that is not JSON: %q", in.Data)
	case !utf8.Valid(in.Data):
		t.Fatalf("accepted data that is not UTF-8: %q", in.Data)
	case in.CreatedAt.Year() < 0 || in.CreatedAt.Year() > 9999 || in.CreatedAt.Location() != time.UTC:
		t.Fatalf("accepted time %v", in.CreatedAt)
	}
	// The envelope is built from it; it must encode.
	if _, err := json.Marshal(map[string]any{"id": in.ID, "type": in.Type, "created_at": in.CreatedAt, "data": json.RawMessage(in.Data)}); err != nil {
		t.Fatalf("accepted an event whose envelope does not encode: %v", err)
	}
}

func FuzzDecodeJSONEvent(f *testing.F) {
	f.Add([]byte(`{"id":"evt_1","type":"user.created","data":{"a":1},"sandbox":true}`))
	f.Add([]byte(`{"type":"a","data":null}`))
	f.Add([]byte(`{"type":"a","created_at":"2026-11-25T10:46:30.5+01:00"}`))
	f.Add([]byte(`{"type":"a","created_at":"9999-12-31T23:59:59-23:59"}`))
	h := &Handler{Log: logr.Discard()}
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := h.decode(body)
		if err == nil {
			checkAccepted(t, in)
		}
	})
}

func FuzzDecodeCloudEventBinary(f *testing.F) {
	f.Add([]byte(`{"a":1}`), "ce-1", "com.example.a", "/s", "2026-11-25T10:00:00Z", "application/json", "true")
	f.Add([]byte(`{"a":1}`), "ce-2", "com.example.a", "/s", "9999-12-31T23:59:59-23:59", "application/json", "")
	h := &Handler{Log: logr.Discard()}
	f.Fuzz(func(t *testing.T, body []byte, id, eventType, source, eventTime, contentType, sandbox string) {
		request := httptest.NewRequest(http.MethodPost, "/v1/namespaces/palm/events", bytes.NewReader(body))
		for name, value := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Type": eventType, "Ce-Source": source,
			"Ce-Time": eventTime, "Content-Type": contentType, "Ce-Sandbox": sandbox} {
			if value != "" {
				request.Header.Set(name, value)
			}
		}
		in, err := h.decodeCloudEvent(request, body)
		if err == nil {
			checkAccepted(t, in)
		}
	})
}

func FuzzDecodeCloudEventStructured(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"ce-1","type":"com.example.a","source":"/s","time":"2026-11-25T10:00:00Z","datacontenttype":"application/json","data":{"a":1},"sandbox":true}`))
	f.Add([]byte(`{"specversion":"1.0","id":"ce-2","type":"a","source":"/s","data_base64":"/w=="}`))
	h := &Handler{Log: logr.Discard()}
	f.Fuzz(func(t *testing.T, body []byte) {
		request := httptest.NewRequest(http.MethodPost, "/v1/namespaces/palm/events", bytes.NewReader(body))
		request.Header.Set("Content-Type", "application/cloudevents+json")
		in, err := h.decodeCloudEvent(request, body)
		if err == nil {
			checkAccepted(t, in)
		}
	})
}
