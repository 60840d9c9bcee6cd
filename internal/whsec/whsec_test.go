package whsec

import (
	"bytes"
	"strings"
	"testing"
)

func TestEncodeDecode(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	secret := Encode(key)
	if secret != "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" {
		t.Errorf("Encode = %q", secret)
	}
	decoded, err := Decode(secret)
	if err != nil || !bytes.Equal(decoded, key) {
		t.Errorf("Decode(Encode(key)) = %q, %v", decoded, err)
	}
	generated, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if decoded, err := Decode(generated); err != nil || len(decoded) != 32 {
		t.Errorf("Decode(New()) = %d bytes, %v; want 32", len(decoded), err)
	}
}

func TestDecodeRefuses(t *testing.T) {
	for _, secret := range []string{"", "MDEyMzQ1Njc4OQ==", "whsec_!!!!", "WHSEC_MDEyMzQ1Njc4OQ==", "whsec_MDEyMzQ1Njc4OQ"} {
		key, err := Decode(secret)
		if err == nil {
			t.Errorf("Decode(%q) = %q, want an error", secret, key)
			continue
		}
		if len(secret) > len(Prefix) && strings.Contains(err.Error(), secret[len(Prefix):]) {
			t.Errorf("Decode(%q) error %q repeats the value", secret, err)
		}
	}
}

func TestGeneratedSecretName(t *testing.T) {
	if got := GeneratedSecretName("palm"); got != "palm-whsec" {
		t.Errorf("GeneratedSecretName(palm) = %q", got)
	}
	long := strings.Repeat("a", 250)
	got := GeneratedSecretName(long)
	if len(got) != 253 || !strings.HasSuffix(got, "-whsec") || got == GeneratedSecretName(long+"b") {
		t.Errorf("GeneratedSecretName(250 a) = %q (%d characters), want 253, ending in -whsec, unique", got, len(got))
	}
}
