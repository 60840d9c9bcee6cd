// Package signing signs a delivery in one or both header families: the
// "<prefix>-Signature: t=,v1=" family (Stripe and Palm style) and Standard
// Webhooks (webhook-id, webhook-timestamp, webhook-signature).
package signing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"

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
func (s Signer) Sign(h http.Header, d Delivery, secrets []string, scheme Scheme) error {
	if !scheme.Prefixed && !scheme.StandardWebhooks {
		return fmt.Errorf("signing: no signature scheme selected")
	}
	t := strconv.FormatInt(d.Timestamp, 10)
	if scheme.Prefixed {
		prefix := scheme.Prefix
		if prefix == "" {
			prefix = s.Prefix
		}
		if err := CheckPrefix(prefix, scheme.StandardWebhooks); err != nil {
			return fmt.Errorf("signing: %w", err)
		}
		prefixed := make([]string, 0, len(secrets)+1)
		prefixed = append(prefixed, "t="+t)
		for _, secret := range secrets {
			prefixed = append(prefixed, "v1="+hex.EncodeToString(PrefixedSignature(secret, t, d.Body)))
		}
		h.Set(prefix+"-Signature", strings.Join(prefixed, ","))
		h.Set(prefix+"-Webhook-Id", d.EndpointID)
		h.Set(prefix+"-Event-Type", d.EventType)
	}
	if scheme.StandardWebhooks {
		standard := make([]string, 0, len(secrets))
		for _, secret := range secrets {
			signature, err := StandardSignature(secret, d.EventID, t, d.Body)
			if err != nil {
				return err
			}
			standard = append(standard, "v1,"+base64.StdEncoding.EncodeToString(signature))
		}
		h.Set("webhook-id", d.EventID)
		h.Set("webhook-timestamp", t)
		h.Set("webhook-signature", strings.Join(standard, " "))
	}
	return nil
}

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
