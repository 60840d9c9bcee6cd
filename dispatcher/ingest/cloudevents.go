package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/hookrelay/hookrelay/dispatcher/delivery"
)

// sandboxExtension marks a CloudEvent as a sandbox event.
const sandboxExtension = "sandbox"

// isCloudEvent reports whether a request carries a CloudEvent, in binary mode
// (ce-* headers) or structured mode (application/cloudevents+json).
func isCloudEvent(r *http.Request) bool {
	if r.Header.Get("Ce-Specversion") != "" {
		return true
	}
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mediaType == "application/cloudevents+json"
}

// decodeCloudEvent reads a CloudEvent with the CloudEvents SDK: ce-source and
// ce-id make the event id (and so the idempotency key, see cloudEventID),
// ce-type is the type, ce-time the created_at, the data must be JSON, and the
// extension "sandbox" marks a sandbox event.
func (h *Handler) decodeCloudEvent(r *http.Request, body []byte) (delivery.Incoming, error) {
	request := r.Clone(r.Context())
	request.Body = io.NopCloser(bytes.NewReader(body))
	event, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(request))
	if err != nil {
		return delivery.Incoming{}, fmt.Errorf("body is not a valid CloudEvent: %v", err)
	}
	if err := event.Validate(); err != nil {
		return delivery.Incoming{}, fmt.Errorf("CloudEvent is invalid: %v", err)
	}
	data := event.Data()
	if contentType := event.DataContentType(); contentType != "" && !isJSON(contentType) {
		return delivery.Incoming{}, fmt.Errorf("CloudEvent datacontenttype %q is not JSON; send application/json data", contentType)
	}
	if len(bytes.TrimSpace(data)) > 0 && !json.Valid(data) {
		return delivery.Incoming{}, fmt.Errorf("CloudEvent data is not valid JSON")
	}
	sandbox := false
	if value, ok := event.Extensions()[sandboxExtension]; ok {
		if sandbox, err = types.ToBool(value); err != nil {
			if text, isText := value.(string); isText && (text == "true" || text == "false") {
				sandbox, err = text == "true", nil
			}
		}
		if err != nil {
			return delivery.Incoming{}, fmt.Errorf("CloudEvent extension %q must be true or false, not %v", sandboxExtension, value)
		}
	}
	var createdAt *time.Time
	if event.Context.AsV1().Time != nil {
		created := event.Time()
		if err := checkYears("CloudEvent time", created); err != nil {
			return delivery.Incoming{}, err
		}
		createdAt = &created
	}
	in, err := h.incoming(event.ID(), event.Type(), data, sandbox, createdAt)
	if err != nil {
		return delivery.Incoming{}, err
	}
	in.ID = cloudEventID(event.Source(), in.ID)
	return in, nil
}

// cloudEventID is the event id of a CloudEvent: "ce_", 16 hex digits of the
// SHA-256 of its source, "_", and its id. CloudEvents are unique by source
// and id, so the same id from two sources is two events, each with its own
// id in the delivery log, the envelope and webhook-id; one source's events
// share the prefix.
func cloudEventID(source, id string) string {
	sum := sha256.Sum256([]byte(source))
	return "ce_" + hex.EncodeToString(sum[:8]) + "_" + id
}

func isJSON(contentType string) bool {
	mediaType, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mediaType == "application/json" || strings.HasSuffix(mediaType, "+json"))
}
