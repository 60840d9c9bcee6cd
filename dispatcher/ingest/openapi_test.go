package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hookrelay/hookrelay/dispatcher/delivery"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// loadOpenAPI loads and validates the document the dispatcher serves.
func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(dispatcherapi.OpenAPI())
	if err != nil {
		t.Fatalf("loading pkg/dispatcherapi/openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("pkg/dispatcherapi/openapi.json is not a valid OpenAPI 3 document: %v", err)
	}
	return doc
}

// TestOpenAPIDocumentsEveryRoute: the document's operations are exactly the
// routes Register adds.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	doc := loadOpenAPI(t)
	var documented, served []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	for _, r := range (&Handler{}).routes() {
		served = append(served, r.pattern)
	}
	slices.Sort(documented)
	slices.Sort(served)
	if !slices.Equal(documented, served) {
		t.Fatalf("pkg/dispatcherapi/openapi.json documents\n\t%s\nbut the dispatcher serves\n\t%s",
			strings.Join(documented, "\n\t"), strings.Join(served, "\n\t"))
	}
}

// documentedTypes are the bodies of the API, by their schema's name.
var documentedTypes = map[string]reflect.Type{
	"PublishRequest":  reflect.TypeFor[dispatcherapi.PublishRequest](),
	"PublishResponse": reflect.TypeFor[dispatcherapi.PublishResponse](),
	"Error":           reflect.TypeFor[dispatcherapi.Error](),
	"Event":           reflect.TypeFor[dispatcherapi.Event](),
	"Delivery":        reflect.TypeFor[dispatcherapi.Delivery](),
	"Attempt":         reflect.TypeFor[dispatcherapi.Attempt](),
	"EventLog":        reflect.TypeFor[dispatcherapi.EventLog](),
	"DeliveryLog":     reflect.TypeFor[dispatcherapi.DeliveryLog](),
	"DeliveryPage":    reflect.TypeFor[dispatcherapi.DeliveryPage](),
	"ReplayResult":    reflect.TypeFor[dispatcherapi.ReplayResult](),
	"State":           reflect.TypeFor[dispatcherapi.State](),
}

// undocumentedSchemas have no Go type: the dispatcher reads CloudEvents
// with the CloudEvents SDK.
var undocumentedSchemas = []string{"CloudEvent"}

// TestOpenAPISchemasMatchTheTypes: each schema has the JSON fields of its Go
// type in dispatcherapi, of matching JSON types, required exactly when the
// field is always encoded (no omitempty or omitzero).
func TestOpenAPISchemasMatchTheTypes(t *testing.T) {
	doc := loadOpenAPI(t)
	for name := range doc.Components.Schemas {
		if _, ok := documentedTypes[name]; !ok && !slices.Contains(undocumentedSchemas, name) {
			t.Errorf("schema %s has no Go type in documentedTypes", name)
		}
	}
	for name, goType := range documentedTypes {
		schemaRef, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("dispatcherapi.%s has no schema %s", goType.Name(), name)
			continue
		}
		schema := schemaRef.Value
		if goType.Kind() != reflect.Struct {
			checkSchemaType(t, name, goType, schemaRef)
			continue
		}
		fields := jsonFields(goType)
		var required []string
		for field, info := range fields {
			if !info.optional {
				required = append(required, field)
			}
			property, ok := schema.Properties[field]
			if !ok {
				t.Errorf("schema %s has no property %q of dispatcherapi.%s", name, field, goType.Name())
				continue
			}
			checkSchemaType(t, name+"."+field, info.goType, property)
		}
		for field := range schema.Properties {
			if _, ok := fields[field]; !ok {
				t.Errorf("schema %s has a property %q that dispatcherapi.%s does not", name, field, goType.Name())
			}
		}
		slices.Sort(required)
		documented := slices.Sorted(slices.Values(schema.Required))
		if !slices.Equal(required, documented) {
			t.Errorf("schema %s requires %q; dispatcherapi.%s always encodes %q", name, documented, goType.Name(), required)
		}
	}
	states := []string{string(dispatcherapi.Pending), string(dispatcherapi.Held), string(dispatcherapi.Succeeded), string(dispatcherapi.Failed)}
	var enum []string
	for _, value := range doc.Components.Schemas["State"].Value.Enum {
		enum = append(enum, value.(string))
	}
	if !slices.Equal(enum, states) {
		t.Errorf("schema State lists %q, dispatcherapi has %q", enum, states)
	}
}

type jsonField struct {
	goType reflect.Type
	// optional fields are left out when empty.
	optional bool
}

// jsonFields are the fields encoding/json writes for t: by their tag's
// name, fields of untagged embedded structs promoted unless an outer field
// has the name.
func jsonFields(t reflect.Type) map[string]jsonField {
	fields := map[string]jsonField{}
	var embedded []reflect.Type
	for field := range t.Fields() {
		tag := field.Tag.Get("json")
		name, options, _ := strings.Cut(tag, ",")
		switch {
		case !field.IsExported() || tag == "-":
			continue
		case field.Anonymous && name == "" && field.Type.Kind() == reflect.Struct:
			embedded = append(embedded, field.Type)
			continue
		case name == "":
			name = field.Name
		}
		optional := slices.ContainsFunc(strings.Split(options, ","), func(o string) bool { return o == "omitempty" || o == "omitzero" })
		fields[name] = jsonField{goType: field.Type, optional: optional}
	}
	for _, inner := range embedded {
		for name, field := range jsonFields(inner) {
			if _, shadowed := fields[name]; !shadowed {
				fields[name] = field
			}
		}
	}
	return fields
}

// checkSchemaType fails unless schema is the JSON form of goType: a $ref to
// the schema of a named type of dispatcherapi, string date-time for a time,
// anything for raw JSON.
func checkSchemaType(t *testing.T, where string, goType reflect.Type, schema *openapi3.SchemaRef) {
	t.Helper()
	if goType.PkgPath() == reflect.TypeFor[dispatcherapi.State]().PkgPath() && schema.Ref != "" {
		if want := "#/components/schemas/" + goType.Name(); schema.Ref != want {
			t.Errorf("%s refers to %s; its Go type is %s", where, schema.Ref, goType)
		}
		return
	}
	var want, format string
	switch {
	case goType == reflect.TypeFor[json.RawMessage]():
		if !schema.Value.Type.IsEmpty() {
			t.Errorf("%s is of type %v; raw JSON is of any type", where, schema.Value.Type.Slice())
		}
		return
	case goType == reflect.TypeFor[time.Time]():
		want, format = openapi3.TypeString, "date-time"
	case goType.Kind() == reflect.Struct && goType.PkgPath() == reflect.TypeFor[dispatcherapi.State]().PkgPath():
		t.Errorf("%s is inline; refer to #/components/schemas/%s", where, goType.Name())
		return
	case goType.Kind() == reflect.String:
		// A string may be documented with a format it holds, such as
		// created_at's date-time.
		want, format = openapi3.TypeString, schema.Value.Format
	case goType.Kind() == reflect.Bool:
		want = openapi3.TypeBoolean
	case goType.Kind() >= reflect.Int && goType.Kind() <= reflect.Uint64:
		want = openapi3.TypeInteger
	case goType.Kind() == reflect.Float32 || goType.Kind() == reflect.Float64:
		want = openapi3.TypeNumber
	case goType.Kind() == reflect.Slice:
		if !schema.Value.Type.Is(openapi3.TypeArray) || schema.Value.Items == nil {
			t.Errorf("%s is not an array; its Go type is %s", where, goType)
			return
		}
		checkSchemaType(t, where+"[]", goType.Elem(), schema.Value.Items)
		return
	default:
		t.Errorf("%s: no JSON type known for Go type %s", where, goType)
		return
	}
	if !schema.Value.Type.Is(want) || schema.Value.Format != format {
		t.Errorf("%s is %v (format %q); its Go type %s is %s (format %q)", where, schema.Value.Type.Slice(), schema.Value.Format, goType, want, format)
	}
}

// TestOpenAPIIsServed: GET /openapi.json answers the document, without a
// token even when authentication is on.
func TestOpenAPIIsServed(t *testing.T) {
	mux := http.NewServeMux()
	(&Handler{Auth: &KubeAuth{}}).Register(mux)
	server := httptest.NewServer(mux)
	defer server.Close()
	response, err := http.Get(server.URL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		t.Fatal(err)
	}
	if response.StatusCode != http.StatusOK || response.Header.Get("Content-Type") != "application/json" || string(body) != string(dispatcherapi.OpenAPI()) {
		t.Fatalf("GET /openapi.json: %s %q, %d bytes", response.Status, response.Header.Get("Content-Type"), len(body))
	}
}

// TestAnswersFollowTheOpenAPIDocument sends requests to every route of a
// Handler on a real store and engine, and checks each request and answer
// (status, headers, body) against the document.
func TestAnswersFollowTheOpenAPIDocument(t *testing.T) {
	ctx := context.Background()
	doc := loadOpenAPI(t)
	// The router matches servers by host; the test's requests have none.
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
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
	var notReady atomic.Bool
	mux := http.NewServeMux()
	(&Handler{Publisher: engine, Store: db, MaxBody: 1 << 10, Log: logr.Discard(), Now: func() time.Time { return acceptTime }, Ready: func() error {
		if notReady.Load() {
			return errors.New("the dispatcher is starting")
		}
		return nil
	}}).Register(mux)

	type call struct {
		method, path, contentType, body string
		headers                         map[string]string
		status                          int
		// bodyUndocumented: a binary-mode CloudEvent's body is its data,
		// which the document cannot tie to the ce-* headers.
		bodyUndocumented bool
	}
	events := "/v1/namespaces/palm/events"
	calls := []call{
		{method: http.MethodPost, path: events, contentType: "application/json", body: `{"id":"evt_1","type":"order.paid","data":{"n":1}}`, status: http.StatusAccepted},
		{method: http.MethodPost, path: events, contentType: "application/json", body: `{"id":"evt_1","type":"order.paid"}`, status: http.StatusOK},
		{method: http.MethodPost, path: events, contentType: "application/cloudevents+json", status: http.StatusAccepted,
			body: `{"specversion":"1.0","id":"o-1","source":"/shop","type":"order.paid","sandbox":true,"data":{"n":1}}`},
		{method: http.MethodPost, path: events, contentType: "application/json", body: `{"n":1}`, status: http.StatusAccepted, bodyUndocumented: true,
			headers: map[string]string{"ce-specversion": "1.0", "ce-id": "o-2", "ce-source": "/shop", "ce-type": "order.paid"}},
		{method: http.MethodPost, path: events, contentType: "application/json", body: `{"type":"order.paid","data":"` + strings.Repeat("x", 2<<10) + `"}`, status: http.StatusRequestEntityTooLarge},
		{method: http.MethodPost, path: events, contentType: "text/plain", body: `hello`, status: http.StatusUnsupportedMediaType, bodyUndocumented: true},
		{method: http.MethodPost, path: events, contentType: "application/json", body: `{"type":"order paid"}`, status: http.StatusBadRequest},
		{method: http.MethodGet, path: events + "/evt_1", status: http.StatusOK},
		{method: http.MethodGet, path: events + "/evt_none", status: http.StatusNotFound},
		{method: http.MethodGet, path: "/v1/namespaces/palm/endpoints/orders/deliveries?state=failed&limit=10&since=2026-11-25T00:00:00Z", status: http.StatusOK},
		{method: http.MethodGet, path: "/v1/namespaces/palm/endpoints/orders/deliveries?state=lost", status: http.StatusBadRequest, bodyUndocumented: true},
		{method: http.MethodPost, path: "/v1/namespaces/palm/deliveries/dlv_none/retry", status: http.StatusNotFound},
		{method: http.MethodPost, path: "/v1/namespaces/palm/endpoints/orders/replay", status: http.StatusBadRequest, bodyUndocumented: true},
		// No endpoint is published here: the 2xx bodies of retry and replay
		// are checked against their types by TestOpenAPISchemasMatchTheTypes.
		{method: http.MethodPost, path: "/v1/namespaces/palm/endpoints/orders/replay?since=2026-11-25T00:00:00Z", status: http.StatusNotFound},
		{method: http.MethodGet, path: "/v1/namespaces/Not_A_Namespace/events/evt_1", status: http.StatusBadRequest, bodyUndocumented: true},
		{method: http.MethodGet, path: "/healthz", status: http.StatusOK},
		{method: http.MethodGet, path: "/readyz", status: http.StatusOK},
		{method: http.MethodGet, path: "/openapi.json", status: http.StatusOK},
	}
	send := func(c call) {
		t.Helper()
		where := c.method + " " + c.path
		request := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
		if c.contentType != "" {
			request.Header.Set("Content-Type", c.contentType)
		}
		for name, value := range c.headers {
			request.Header.Set(name, value)
		}
		route, pathParams, err := router.FindRoute(request)
		if err != nil {
			t.Fatalf("%s: no operation in the document: %v", where, err)
		}
		input := &openapi3filter.RequestValidationInput{Request: request, PathParams: pathParams, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}}
		// The request is checked too, where the document can describe it
		// (a refused one is not meant to conform).
		if !c.bodyUndocumented && c.status < 300 {
			if err := openapi3filter.ValidateRequest(ctx, input); err != nil {
				t.Errorf("%s: the request does not follow the document: %v", where, err)
			}
			request.Body = io.NopCloser(strings.NewReader(c.body))
		}
		response := httptest.NewRecorder()
		mux.ServeHTTP(response, request)
		if response.Code != c.status {
			t.Fatalf("%s answered %d %q, want %d", where, response.Code, response.Body, c.status)
		}
		err = openapi3filter.ValidateResponse(ctx, (&openapi3filter.ResponseValidationInput{RequestValidationInput: input,
			Status: response.Code, Header: response.Header(), Options: &openapi3filter.Options{MultiError: true, IncludeResponseStatus: true}}).SetBodyBytes(response.Body.Bytes()))
		if err != nil {
			t.Errorf("%s: the answer %d %q does not follow the document: %v", where, response.Code, response.Body, err)
		}
	}
	for _, c := range calls {
		send(c)
	}
	notReady.Store(true)
	send(call{method: http.MethodPost, path: events, contentType: "application/json", body: `{"type":"order.paid"}`, status: http.StatusServiceUnavailable})
	send(call{method: http.MethodGet, path: "/readyz", status: http.StatusServiceUnavailable})
}
