package dispatcherapi

import (
	"bytes"
	_ "embed"
)

// openAPI is the OpenAPI 3 document of the API; a test in dispatcher/ingest
// fails when it and the handlers or the types here disagree.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the OpenAPI 3 document of the dispatcher's HTTP API, as
// the dispatcher serves it at GET /openapi.json.
func OpenAPI() []byte { return bytes.Clone(openAPI) }
