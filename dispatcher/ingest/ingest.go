// Package ingest is the producers' HTTP API: POST
// /v1/namespaces/{namespace}/events. It answers 202 only once the event and
// its deliveries are on disk.
package ingest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hookrelay/hookrelay/dispatcher/delivery"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// DefaultMaxBody is the default cap on a request body.
const DefaultMaxBody = 256 << 10

// Publisher is the part of the delivery engine that the API uses.
type Publisher interface {
	Publish(ctx context.Context, namespace string, in delivery.Incoming) (store.Accepted, error)
	Retry(ctx context.Context, namespace, id string) (store.Delivery, error)
	Replay(ctx context.Context, namespace, endpoint string, since time.Time) (int, error)
}

// Handler serves the ingest API.
type Handler struct {
	Publisher Publisher
	// Store is read for the delivery log.
	Store store.Store
	// Auth checks every request's token and RBAC; nil lets everyone in
	// (--insecure-no-auth, for development only).
	Auth *KubeAuth
	// MaxBody caps a request body, in bytes.
	MaxBody int64
	Log     logr.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Ready says why writes are refused now, nil when they are not: until
	// the engine has recovered the stored deliveries (so that none is queued
	// ahead of older stored ones), and while the store is out of reach.
	// Nil: always ready.
	Ready func() error
	// Refused counts the publishes answered with one of RefusalCodes, by
	// code (NewRefusedCounter); nil counts none.
	Refused *prometheus.CounterVec
}

// RefusalCodes are the answers to a publish that hookrelay_publishes_refused_total
// counts: a malformed event, no or a refused token, no RBAC grant, a body
// over the limit, too many failed authentications, not ready.
var RefusalCodes = []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestEntityTooLarge,
	http.StatusTooManyRequests, http.StatusServiceUnavailable}

// NewRefusedCounter registers hookrelay_publishes_refused_total, with every
// code's series at zero, so that a rate over it exists before the first
// refusal.
func NewRefusedCounter(registerer prometheus.Registerer) *prometheus.CounterVec {
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hookrelay_publishes_refused_total", Help: "Publishes refused, by the HTTP status code answered (400, 401, 403, 413, 429, 503).",
	}, []string{"code"})
	for _, code := range RefusalCodes {
		refused.WithLabelValues(strconv.Itoa(code))
	}
	registerer.MustRegister(refused)
	return refused
}

// route is one operation the API serves: the document served at
// /openapi.json lists exactly these (a test checks it).
type route struct {
	// pattern is the method and path, as http.ServeMux reads them.
	pattern string
	handler http.HandlerFunc
}

// routes are the API's operations, the probes and the API's document.
func (h *Handler) routes() []route {
	return []route{
		{"POST /v1/namespaces/{namespace}/events", h.countRefusals(h.authorized("create", "events", h.whenReady(h.publish)))},
		{"GET /v1/namespaces/{namespace}/events/{id}", h.authorized("get", "deliveries", h.event)},
		{"GET /v1/namespaces/{namespace}/endpoints/{endpoint}/deliveries", h.authorized("list", "deliveries", h.endpointDeliveries)},
		{"POST /v1/namespaces/{namespace}/deliveries/{id}/retry", h.authorized("update", "deliveries", h.whenReady(h.retry))},
		{"POST /v1/namespaces/{namespace}/endpoints/{endpoint}/replay", h.authorized("update", "deliveries", h.whenReady(h.replay))},
		{"GET /healthz", healthz},
		{"GET /readyz", h.readyz},
		{"GET /openapi.json", serveOpenAPI},
	}
}

// Register adds the API's routes, /healthz, /readyz and /openapi.json to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	for _, r := range h.routes() {
		mux.HandleFunc(r.pattern, r.handler)
	}
}

func healthz(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }

// readyz answers 200 while Ready says nothing, else 503 with why.
func (h *Handler) readyz(w http.ResponseWriter, _ *http.Request) {
	if h.Ready != nil {
		if err := h.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	_, _ = w.Write([]byte("ok\n"))
}

// openAPIDocument is served as it is: read once, never written.
var openAPIDocument = dispatcherapi.OpenAPI()

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPIDocument)
}

// whenReady answers 503 with Retry-After while Ready says why.
func (h *Handler) whenReady(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.Ready == nil {
			next(w, r)
			return
		}
		if err := h.Ready(); err != nil {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, err.Error()+"; retry shortly")
			return
		}
		next(w, r)
	}
}

// authorized runs next only for a caller whose token RBAC allows verb on
// resource in the request's namespace; without Auth, for anyone.
func (h *Handler) authorized(verb, resource string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		namespace := r.PathValue("namespace")
		if !validNamespace(namespace) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("namespace %q is not a valid namespace name", namespace))
			return
		}
		if h.Auth != nil {
			if denied := h.Auth.check(r.Context(), r, namespace, verb, resource); denied != nil {
				switch denied.status {
				case http.StatusUnauthorized:
					w.Header().Set("WWW-Authenticate", `Bearer realm="hookrelay"`)
				case http.StatusTooManyRequests:
					w.Header().Set("Retry-After", strconv.Itoa(int(denied.retryAfter/time.Second)))
				}
				writeError(w, denied.status, denied.message)
				return
			}
		}
		next(w, r)
	}
}

// countRefusals counts the answers of next that are refusals (Refused).
func (h *Handler) countRefusals(next http.HandlerFunc) http.HandlerFunc {
	if h.Refused == nil {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		recorder := &statusRecorder{ResponseWriter: w}
		next(recorder, r)
		if slices.Contains(RefusalCodes, recorder.status) {
			h.Refused.WithLabelValues(strconv.Itoa(recorder.status)).Inc()
		}
	}
}

// statusRecorder remembers the status code written through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (h *Handler) publish(w http.ResponseWriter, r *http.Request) {
	namespace := r.PathValue("namespace")
	// The server's own writer: over the limit, MaxBytesReader has it close
	// the connection, which it cannot do through a wrapper.
	server := w
	if wrapped, ok := w.(*statusRecorder); ok {
		server = wrapped.ResponseWriter
	}
	body, err := io.ReadAll(http.MaxBytesReader(server, r.Body, h.MaxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is over the %d-byte limit", h.MaxBody))
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return
	}
	decode := h.decode
	if isCloudEvent(r) {
		decode = func(body []byte) (delivery.Incoming, error) { return h.decodeCloudEvent(r, body) }
	} else if contentType := r.Header.Get("Content-Type"); contentType != "" && !isJSON(contentType) {
		// Without a Content-Type the body is read as JSON, as curl -d sends it.
		writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not JSON: send application/json (or a +json type), or a CloudEvent", contentType))
		return
	}
	in, err := decode(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	h.accept(r.Context(), w, namespace, in)
}

// decode checks a JSON event and fills in its id and time.
func (h *Handler) decode(body []byte) (delivery.Incoming, error) {
	decoder := json.NewDecoder(bytes.NewReader(body))
	decoder.DisallowUnknownFields()
	var req dispatcherapi.PublishRequest
	if err := decoder.Decode(&req); err != nil {
		return delivery.Incoming{}, fmt.Errorf("body is not a valid event: %v", err)
	}
	if decoder.More() {
		return delivery.Incoming{}, fmt.Errorf("body holds more than one JSON value")
	}
	var createdAt *time.Time
	if req.CreatedAt != "" {
		parsed, err := time.Parse(time.RFC3339, req.CreatedAt)
		if err != nil {
			return delivery.Incoming{}, fmt.Errorf("created_at %q is not an RFC 3339 time, such as \"2026-11-25T10:00:00Z\"", req.CreatedAt)
		}
		if err := checkYears("created_at", parsed); err != nil {
			return delivery.Incoming{}, err
		}
		createdAt = &parsed
	}
	return h.incoming(req.ID, req.Type, req.Data, req.Sandbox, createdAt)
}

// checkYears refuses a time whose UTC year the envelope's created_at, RFC
// 3339 with four-digit years, cannot carry. field names it in the message.
func checkYears(field string, t time.Time) error {
	if year := t.UTC().Year(); year < 0 || year > 9999 {
		return fmt.Errorf("%s %s is outside the years 0 to 9999 in UTC", field, t.Format(time.RFC3339))
	}
	return nil
}

// incoming validates an event's fields, whatever the encoding; without a
// createdAt (the decoder checked one it got), the event was created now.
func (h *Handler) incoming(id, eventType string, data []byte, sandbox bool, createdAt *time.Time) (delivery.Incoming, error) {
	switch {
	case eventType == "":
		return delivery.Incoming{}, fmt.Errorf(`type is required, such as "user.verification.completed"`)
	case len(eventType) > 253 || !validType(eventType):
		return delivery.Incoming{}, fmt.Errorf("type %q is malformed: use dot-separated names of letters, digits, '_' and '-', such as user.created", eventType)
	case id != "" && !validID(id):
		return delivery.Incoming{}, fmt.Errorf("id %q is malformed: use 1 to 255 letters, digits, '_', '.', ':' or '-'", id)
	}
	if id == "" {
		id = newEventID(h.now())
	}
	if len(bytes.TrimSpace(data)) == 0 {
		data = []byte("{}")
	}
	// JSON decoders accept invalid UTF-8 in strings; receivers' may not, and
	// the stored bytes are sent as they are.
	if !utf8.Valid(data) {
		return delivery.Incoming{}, fmt.Errorf("data is not valid UTF-8")
	}
	created := h.now()
	if createdAt != nil {
		created = *createdAt
	}
	// The envelope's created_at has whole seconds.
	return delivery.Incoming{ID: id, Type: eventType, Data: data, Sandbox: sandbox, CreatedAt: created.UTC().Truncate(time.Second)}, nil
}

// accept publishes a valid event and writes the answer.
func (h *Handler) accept(ctx context.Context, w http.ResponseWriter, namespace string, in delivery.Incoming) {
	accepted, err := h.Publisher.Publish(ctx, namespace, in)
	if err != nil {
		h.Log.Error(err, "publishing an event", "namespace", namespace, "id", in.ID)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "the event could not be stored; publish it again")
		return
	}
	status := http.StatusAccepted
	if accepted.Duplicate {
		status = http.StatusOK
	}
	if !plainJSONString(accepted.Event.ID) {
		writeJSON(w, status, dispatcherapi.PublishResponse{ID: accepted.Event.ID, Deliveries: accepted.Event.Deliveries, Duplicate: accepted.Duplicate})
		return
	}
	buffer := responses.Get().(*[]byte)
	defer responses.Put(buffer)
	*buffer = appendResponse((*buffer)[:0], accepted.Event.ID, accepted.Event.Deliveries, accepted.Duplicate)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(*buffer)
}

// responses are the buffers publish answers are built in.
var responses = sync.Pool{New: func() any { return new([]byte) }}

// appendResponse appends the publish answer as writeJSON encodes
// dispatcherapi.PublishResponse{ID: id, Deliveries: deliveries, Duplicate: duplicate}, for an id
// that plainJSONString admits, without reflection: it is written once per
// event.
func appendResponse(dst []byte, id string, deliveries int, duplicate bool) []byte {
	dst = append(append(append(dst, `{"id":"`...), id...), '"')
	dst = strconv.AppendInt(append(dst, `,"deliveries":`...), int64(deliveries), 10)
	if duplicate {
		dst = append(dst, `,"duplicate":true`...)
	}
	return append(dst, "}\n"...)
}

// plainJSONString reports whether encoding/json writes s between quotes as
// it is: printable ASCII without the characters it escapes (", \\ and, for
// HTML, <, > and &). Event ids are, as ingest admits them.
func plainJSONString(s string) bool {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// newEventID is "evt_" + the time in milliseconds + 12 random hex digits.
func newEventID(now time.Time) string {
	random := make([]byte, 6)
	_, _ = rand.Read(random)
	return fmt.Sprintf("evt_%d_%s", now.UnixMilli(), hex.EncodeToString(random))
}

func writeJSON(w http.ResponseWriter, status int, value any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(value)
}

func writeError(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, dispatcherapi.Error{Error: message})
}
