package signing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"net/http"
	"sync"

	"k8s.io/utils/lru"

	"github.com/hookrelay/hookrelay/internal/whsec"
)

// family is a signature family, which decides how a secret makes a key.
type family uint8

const (
	// prefixedFamily keys HMAC with the whole secret string.
	prefixedFamily family = iota
	// standardFamily keys HMAC with the secret's decoded bytes.
	standardFamily
)

// cacheSize bounds the keys (and prefixes) whose state is kept: a secret
// has one key per family, and two secrets sign during a rotation. Past it,
// the least recently used goes, and comes back at the cost of one HMAC
// setup; a pooled state costs a few hundred bytes, and the pools let go of
// their states at each garbage collection.
const cacheSize = 8192

// cache holds keyed MACs by macKey and header names by prefix.
var cache = lru.New(cacheSize)

type macKey struct {
	family family
	secret string
}

// keyedMAC hands out HMAC-SHA256 states of one key. The key's padded
// blocks are computed once; Reset brings a state back to them, so a state
// serves one signature at a time and goes back to the pool after it.
type keyedMAC struct {
	states sync.Pool
}

// macState is a pooled HMAC state with the buffer it hashes from.
type macState struct {
	mac    hash.Hash
	buffer []byte
}

// macOf is the keyed MAC of a secret in a family.
func macOf(f family, secret string) (*keyedMAC, error) {
	id := macKey{family: f, secret: secret}
	if cached, ok := cache.Get(id); ok {
		return cached.(*keyedMAC), nil
	}
	key := []byte(secret)
	if f == standardFamily {
		decoded, err := whsec.Decode(secret)
		if err != nil {
			return nil, fmt.Errorf("signing: %w", err)
		}
		key = decoded
	}
	mac := &keyedMAC{states: sync.Pool{New: func() any { return &macState{mac: hmac.New(sha256.New, key)} }}}
	cache.Add(id, mac)
	return mac, nil
}

// appendSum appends to dst the HMAC of "<id>.<timestamp>.<body>", or of
// "<timestamp>.<body>" when id is empty, in hex for the Prefixed family and
// in base64 for Standard Webhooks.
func (m *keyedMAC) appendSum(dst []byte, f family, id string, timestamp, body []byte) []byte {
	state := m.states.Get().(*macState)
	defer m.states.Put(state)
	state.mac.Reset()
	head := state.buffer[:0]
	if id != "" {
		head = append(append(head, id...), '.')
	}
	head = append(append(head, timestamp...), '.')
	state.mac.Write(head)
	state.mac.Write(body)
	state.buffer = state.mac.Sum(head[:0])
	if f == standardFamily {
		return base64.StdEncoding.AppendEncode(dst, state.buffer)
	}
	return hex.AppendEncode(dst, state.buffer)
}

// headerNames are the Prefixed family's header names for one prefix, in
// the canonical form http.Header.Set would give them.
type headerNames struct {
	signature, webhookID, eventType string
}

type prefixKey string

func prefixedNames(prefix string) headerNames {
	if cached, ok := cache.Get(prefixKey(prefix)); ok {
		return cached.(headerNames)
	}
	names := headerNames{
		signature: http.CanonicalHeaderKey(prefix + "-Signature"),
		webhookID: http.CanonicalHeaderKey(prefix + "-Webhook-Id"),
		eventType: http.CanonicalHeaderKey(prefix + "-Event-Type"),
	}
	cache.Add(prefixKey(prefix), names)
	return names
}
