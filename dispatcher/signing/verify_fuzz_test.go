package signing

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hookrelay/hookrelay/internal/whsec"
)

// fuzzSecrets makes two well-formed whsec_ secrets (a rotation) from
// arbitrary bytes.
func fuzzSecrets(seed []byte) []string {
	return []string{
		whsec.Encode(seed),
		whsec.Encode(append([]byte("rotated"), seed...)),
	}
}

// validPrefix is what the dispatcher's --header-prefix admits. "Webhook" is
// left out: its Webhook-Signature header is the Standard Webhooks one.
func validPrefix(prefix string) bool {
	if prefix == "" || strings.EqualFold(prefix, "webhook") {
		return false
	}
	for _, r := range prefix {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// FuzzVerifyPrefixed: any <prefix>-Signature header, secret and body are
// verified without panicking, and what the Signer signs verifies with each
// of its secrets, and with no other secret or body.
func FuzzVerifyPrefixed(f *testing.F) {
	f.Add("Hookrelay", "t=1700000000,v1=00ff", "whsec_c2VjcmV0", []byte(`{"id":"evt_1"}`), []byte("secret"), int64(1700000000))
	f.Add("Palm", "t=,v1=,v1=zz, t=1", "", []byte{}, []byte{}, int64(-1))
	f.Fuzz(func(t *testing.T, prefix, header, secret string, body, secretSeed []byte, unix int64) {
		now := time.Unix(unix, 0)
		arbitrary := http.Header{}
		arbitrary.Set(prefix+"-Signature", header)
		_ = VerifyPrefixed(arbitrary, prefix, secret, body, now)

		if !validPrefix(prefix) {
			return
		}
		secrets := fuzzSecrets(secretSeed)
		signed := http.Header{}
		if err := (Signer{Prefix: prefix}).Sign(signed, Delivery{EventID: "evt_1", EventType: "t", EndpointID: "e", Timestamp: unix, Body: body}, secrets, Scheme{Prefixed: true}); err != nil {
			t.Fatalf("signing: %v", err)
		}
		for _, s := range secrets {
			if err := VerifyPrefixed(signed, prefix, s, body, now); err != nil {
				t.Errorf("a signed delivery does not verify: %v", err)
			}
		}
		if err := VerifyPrefixed(signed, prefix, secrets[0]+"x", body, now); err == nil {
			t.Error("verified with another secret")
		}
		if err := VerifyPrefixed(signed, prefix, secrets[0], append(body, 'x'), now); err == nil {
			t.Error("verified another body")
		}
	})
}

// FuzzVerifyStandard: any webhook-* headers, secret and body are verified
// without panicking, and what the Signer signs verifies with each of its
// secrets, and with no other body.
func FuzzVerifyStandard(f *testing.F) {
	f.Add("evt_1", "1700000000", "v1,c2lnbmF0dXJl v2,x", "whsec_c2VjcmV0", []byte(`{"id":"evt_1"}`), []byte("secret"), int64(1700000000))
	f.Add("", "-1", "v1, ,v1,", "whsec_!", []byte{}, []byte{}, int64(0))
	f.Fuzz(func(t *testing.T, id, timestamp, signature, secret string, body, secretSeed []byte, unix int64) {
		now := time.Unix(unix, 0)
		arbitrary := http.Header{}
		arbitrary.Set("webhook-id", id)
		arbitrary.Set("webhook-timestamp", timestamp)
		arbitrary.Set("webhook-signature", signature)
		_ = VerifyStandard(arbitrary, secret, body, now)

		if id == "" {
			return // webhook-id is required
		}
		secrets := fuzzSecrets(secretSeed)
		signed := http.Header{}
		if err := (Signer{Prefix: "Hookrelay"}).Sign(signed, Delivery{EventID: id, EventType: "t", EndpointID: "e", Timestamp: unix, Body: body}, secrets, BothSchemes); err != nil {
			t.Fatalf("signing: %v", err)
		}
		for _, s := range secrets {
			if err := VerifyStandard(signed, s, body, now); err != nil {
				t.Errorf("a signed delivery does not verify: %v", err)
			}
		}
		if err := VerifyStandard(signed, secrets[0], append(body, 'x'), now); err == nil {
			t.Error("verified another body")
		}
	})
}
