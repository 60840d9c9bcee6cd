// Package signing signs a delivery in both header families: the
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
)

// SecretPrefix starts every signing secret.
const SecretPrefix = "whsec_"

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

// Signer adds the signature headers, with the operator-wide prefix.
type Signer struct {
	// Prefix names the first family's headers, such as "Hookrelay" or "Palm".
	Prefix string
}

// Sign sets every signature header on h, one signature per secret (several
// during a rotation grace period). Secrets are whole whsec_ strings.
func (s Signer) Sign(h http.Header, d Delivery, secrets []string) error {
	t := strconv.FormatInt(d.Timestamp, 10)
	prefixed := make([]string, 0, len(secrets)+1)
	prefixed = append(prefixed, "t="+t)
	standard := make([]string, 0, len(secrets))
	for _, secret := range secrets {
		prefixed = append(prefixed, "v1="+hex.EncodeToString(PrefixedSignature(secret, t, d.Body)))
		signature, err := StandardSignature(secret, d.EventID, t, d.Body)
		if err != nil {
			return err
		}
		standard = append(standard, "v1,"+base64.StdEncoding.EncodeToString(signature))
	}
	h.Set(s.Prefix+"-Signature", strings.Join(prefixed, ","))
	h.Set(s.Prefix+"-Webhook-Id", d.EndpointID)
	h.Set(s.Prefix+"-Event-Type", d.EventType)
	h.Set("webhook-id", d.EventID)
	h.Set("webhook-timestamp", t)
	h.Set("webhook-signature", strings.Join(standard, " "))
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
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil {
		return nil, fmt.Errorf("signing: secret is not whsec_ + base64: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil), nil
}
