package signing

import (
	"crypto/hmac"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Tolerance is how far a signature's timestamp may be from now.
const Tolerance = 5 * time.Minute

// VerifyPrefixed checks the <prefix>-Signature header by the five steps
// Palm documents: split t and v1, check t is within Tolerance, build
// "<t>.<body>", HMAC it with the secret, compare in constant time.
func VerifyPrefixed(h http.Header, prefix, secret string, body []byte, now time.Time) error {
	header := h.Get(prefix + "-Signature")
	var timestamp string
	var signatures [][]byte
	for part := range strings.SplitSeq(header, ",") {
		key, value, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch key {
		case "t":
			timestamp = value
		case "v1":
			if raw, err := hex.DecodeString(value); err == nil {
				signatures = append(signatures, raw)
			}
		}
	}
	if timestamp == "" || len(signatures) == 0 {
		return fmt.Errorf("%s-Signature %q has no t= or no v1=", prefix, header)
	}
	if err := checkTimestamp(timestamp, now); err != nil {
		return err
	}
	want := PrefixedSignature(secret, timestamp, body)
	for _, signature := range signatures {
		if hmac.Equal(signature, want) {
			return nil
		}
	}
	return fmt.Errorf("%s-Signature: no v1 signature matches", prefix)
}

// VerifyStandard checks webhook-signature as Standard Webhooks specifies.
func VerifyStandard(h http.Header, secret string, body []byte, now time.Time) error {
	id, timestamp := h.Get("webhook-id"), h.Get("webhook-timestamp")
	if id == "" || timestamp == "" {
		return fmt.Errorf("webhook-id or webhook-timestamp is missing")
	}
	if err := checkTimestamp(timestamp, now); err != nil {
		return err
	}
	want, err := StandardSignature(secret, id, timestamp, body)
	if err != nil {
		return err
	}
	for part := range strings.FieldsSeq(h.Get("webhook-signature")) {
		version, value, _ := strings.Cut(part, ",")
		if version != "v1" {
			continue
		}
		if signature, err := base64.StdEncoding.DecodeString(value); err == nil && hmac.Equal(signature, want) {
			return nil
		}
	}
	return fmt.Errorf("webhook-signature: no v1 signature matches")
}

func checkTimestamp(timestamp string, now time.Time) error {
	seconds, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("timestamp %q is not Unix seconds", timestamp)
	}
	if age := now.Sub(time.Unix(seconds, 0)); age > Tolerance || age < -Tolerance {
		return fmt.Errorf("timestamp %s is %s away from now, more than %s", timestamp, age.Round(time.Second), Tolerance)
	}
	return nil
}
