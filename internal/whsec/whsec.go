// Package whsec is the format of a signing secret, "whsec_" followed by the
// standard base64 of the key, and the name of an endpoint's generated
// Secret. The controller generates and checks secrets in this format, and the
// dispatcher signs with them: both use these functions.
package whsec

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Prefix starts every signing secret.
const Prefix = "whsec_"

// generatedBytes is the entropy of a generated signing secret.
const generatedBytes = 32

// Encode returns the signing secret of key.
func Encode(key []byte) string {
	return Prefix + base64.StdEncoding.EncodeToString(key)
}

// New returns a signing secret with a random key of 32 bytes.
func New() (string, error) {
	key := make([]byte, generatedBytes)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("generating signing secret: %w", err)
	}
	return Encode(key), nil
}

// errFormat says what a signing secret looks like, never what the refused
// value holds: the reader of the error may not be allowed to read it.
var errFormat = errors.New("a signing secret is " + Prefix + " followed by standard base64")

// Decode returns the key of a signing secret.
func Decode(secret string) ([]byte, error) {
	encoded, ok := strings.CutPrefix(secret, Prefix)
	if !ok {
		return nil, errFormat
	}
	key, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return nil, errFormat
	}
	return key, nil
}

// GeneratedSecretName is the Secret the controller generates for an
// endpoint, "<endpoint>-whsec", shortened with a hash when that would pass
// the 253-character name limit.
func GeneratedSecretName(endpointName string) string {
	const suffix, limit = "-whsec", 253
	if len(endpointName)+len(suffix) <= limit {
		return endpointName + suffix
	}
	sum := sha256.Sum256([]byte(endpointName))
	return endpointName[:limit-len(suffix)-9] + "-" + hex.EncodeToString(sum[:4]) + suffix
}
