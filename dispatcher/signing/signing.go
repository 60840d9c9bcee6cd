// Package signing signs a delivery in one or both header families: the
// "<prefix>-Signature: t=,v1=" family (Stripe and Palm style) and Standard
// Webhooks (webhook-id, webhook-timestamp, webhook-signature).
package signing

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/hookrelay/hookrelay/internal/whsec"
)

// Delivery is what one signed request says about itself.
type Delivery struct {
	// EventID is the event's id (webhook-id).
	EventID string
	// EventType goes in <prefix>-Event-Type.
	EventType string
	// EndpointID identifies the receiving endpoint (<prefix>-Webhook-Id).
	EndpointID string
	// Timestamp is the signing time, in Unix seconds.
	Timestamp int64
	// Body is the exact request body.
	Body []byte
}

// Scheme says which header families sign one endpoint's deliveries.
type Scheme struct {
	// Prefix names the Prefixed family's headers; empty means Signer.Prefix.
	Prefix string
	// Prefixed sends <prefix>-Signature, <prefix>-Webhook-Id and
	// <prefix>-Event-Type.
	Prefixed bool
	// StandardWebhooks sends webhook-id, webhook-timestamp and
	// webhook-signature.
	StandardWebhooks bool
}

// BothSchemes signs with both families and the Signer's prefix.
var BothSchemes = Scheme{Prefixed: true, StandardWebhooks: true}

// Signer adds the signature headers.
type Signer struct {
	// Prefix is the default prefix of the Prefixed family (the dispatcher's
	// --header-prefix), such as "Hookrelay".
	Prefix string
}

// CheckPrefix refuses a prefix that is not a header name part, or that would
// name the Standard Webhooks headers (Webhook-Signature) while both families
// are sent.
func CheckPrefix(prefix string, bothSchemes bool) error {
	if prefix == "" {
		return fmt.Errorf("header prefix is empty")
	}
	for _, r := range prefix {
		if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return fmt.Errorf("header prefix %q must be letters, digits and '-'", prefix)
		}
	}
	if bothSchemes && strings.EqualFold(prefix, "webhook") {
		return fmt.Errorf("header prefix %q would make %s-Signature collide with the Standard Webhooks header webhook-signature", prefix, prefix)
	}
	return nil
}

// Sign sets the signature headers of scheme on h, one signature per secret
// (several during a rotation grace period). Secrets are whole whsec_ strings.
// It reuses each key's HMAC state and builds each header value in a pooled
// buffer, so a delivery costs one allocation per header value.
func (s Signer) Sign(h http.Header, d Delivery, secrets []string, scheme Scheme) error {
	if !scheme.Prefixed && !scheme.StandardWebhooks {
		return fmt.Errorf("signing: no signature scheme selected")
	}
	buffer := buffers.Get().(*[]byte)
	defer buffers.Put(buffer)
	var timestamp [20]byte
	t := strconv.AppendInt(timestamp[:0], d.Timestamp, 10)
	// The values share one backing array: one allocation instead of six.
	values := make([]string, 0, 6)
	set := func(name, value string) {
		values = append(values, value)
		h[name] = values[len(values)-1 : len(values) : len(values)]
	}
	if scheme.Prefixed {
		prefix := scheme.Prefix
		if prefix == "" {
			prefix = s.Prefix
		}
		if err := CheckPrefix(prefix, scheme.StandardWebhooks); err != nil {
			return fmt.Errorf("signing: %w", err)
		}
		b := append(append((*buffer)[:0], "t="...), t...)
		for _, secret := range secrets {
			mac, err := macOf(prefixedFamily, secret)
			if err != nil {
				return err
			}
			b = mac.appendSum(append(b, ",v1="...), prefixedFamily, "", t, d.Body)
		}
		*buffer = b
		names := prefixedNames(prefix)
		set(names.signature, string(b))
		set(names.webhookID, d.EndpointID)
		set(names.eventType, d.EventType)
	}
	if scheme.StandardWebhooks {
		b := (*buffer)[:0]
		for i, secret := range secrets {
			mac, err := macOf(standardFamily, secret)
			if err != nil {
				return err
			}
			if i > 0 {
				b = append(b, ' ')
			}
			b = mac.appendSum(append(b, "v1,"...), standardFamily, d.EventID, t, d.Body)
		}
		*buffer = b
		// Set's canonical forms of webhook-id, webhook-timestamp and
		// webhook-signature, without canonicalizing them each time.
		set("Webhook-Id", d.EventID)
		set("Webhook-Timestamp", string(t))
		set("Webhook-Signature", string(b))
	}
	return nil
}

// buffers hold header values while they are built.
var buffers = sync.Pool{New: func() any { return new([]byte) }}

// PrefixedSignature is HMAC-SHA256 of "<t>.<body>" keyed by the whole secret
// string, as Palm documents.
func PrefixedSignature(secret, timestamp string, body []byte) []byte {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil)
}

// StandardSignature is HMAC-SHA256 of "<id>.<t>.<body>" keyed by the
// base64-decoded part of the secret after whsec_, as Standard Webhooks
// specifies.
func StandardSignature(secret, id, timestamp string, body []byte) ([]byte, error) {
	key, err := whsec.Decode(secret)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil), nil
}
