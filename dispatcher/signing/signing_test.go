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
	"sync"
	"testing"
	"time"

	"github.com/hookrelay/hookrelay/internal/whsec"
)

const (
	oldSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	newSecret = "whsec_dGhpcyBpcyB0aGUgbmV3IHNpZ25pbmcga2V5IQ=="
)

func TestSignAndVerifyBothFamilies(t *testing.T) {
	now := time.Unix(1_764_064_800, 0)
	body := []byte(`{"id":"evt_1","object":"event","type":"user.created","created_at":"2025-01-06T10:30:00Z","data":{}}`)
	h := http.Header{}
	err := Signer{Prefix: "Palm"}.Sign(h, Delivery{EventID: "evt_1", EventType: "user.created", EndpointID: "ns/palm", Timestamp: now.Unix(), Body: body},
		[]string{newSecret, oldSecret}, BothSchemes)
	if err != nil {
		t.Fatal(err)
	}

	// Palm's recipe, by hand: HMAC-SHA256 keyed by the whole secret string.
	mac := hmac.New(sha256.New, []byte(oldSecret))
	mac.Write([]byte("1764064800." + string(body)))
	if !strings.Contains(h.Get("Palm-Signature"), "v1="+hex.EncodeToString(mac.Sum(nil))) {
		t.Fatalf("Palm-Signature %q lacks the old key's signature", h.Get("Palm-Signature"))
	}
	if !strings.HasPrefix(h.Get("Palm-Signature"), "t=1764064800,v1=") {
		t.Fatalf("Palm-Signature = %q", h.Get("Palm-Signature"))
	}
	// Standard Webhooks, by hand: keyed by the decoded secret, over id.t.body.
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(newSecret, "whsec_"))
	mac = hmac.New(sha256.New, key)
	mac.Write([]byte("evt_1.1764064800." + string(body)))
	if !strings.HasPrefix(h.Get("webhook-signature"), "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil))+" v1,") {
		t.Fatalf("webhook-signature = %q", h.Get("webhook-signature"))
	}
	for _, secret := range []string{oldSecret, newSecret} {
		if err := VerifyPrefixed(h, "Palm", secret, body, now.Add(time.Minute)); err != nil {
			t.Errorf("VerifyPrefixed: %v", err)
		}
		if err := VerifyStandard(h, secret, body, now.Add(time.Minute)); err != nil {
			t.Errorf("VerifyStandard: %v", err)
		}
	}
	if h.Get("Palm-Webhook-Id") != "ns/palm" || h.Get("Palm-Event-Type") != "user.created" || h.Get("webhook-id") != "evt_1" {
		t.Fatalf("headers = %v", h)
	}

	other := whsec.Encode([]byte("an entirely different key......"))
	if VerifyPrefixed(h, "Palm", other, body, now) == nil || VerifyStandard(h, other, body, now) == nil {
		t.Fatal("a wrong key verified")
	}
	if VerifyPrefixed(h, "Palm", oldSecret, append(body, ' '), now) == nil {
		t.Fatal("a changed body verified")
	}
	if VerifyPrefixed(h, "Palm", oldSecret, body, now.Add(6*time.Minute)) == nil {
		t.Fatal("a stale timestamp verified")
	}
}

// TestSignSchemes: each endpoint gets only the families it asked for, with
// its own prefix; a prefix that would collide with Standard Webhooks is
// refused rather than sent.
func TestSignSchemes(t *testing.T) {
	d := Delivery{EventID: "evt_1", EventType: "login.created", EndpointID: "ns/e", Timestamp: 1_764_064_800, Body: []byte(`{}`)}
	signer := Signer{Prefix: "Hookrelay"}
	for _, test := range []struct {
		name    string
		scheme  Scheme
		present []string
		absent  []string
		err     string
	}{
		{name: "default prefix", scheme: BothSchemes, present: []string{"Hookrelay-Signature", "Hookrelay-Webhook-Id", "Hookrelay-Event-Type", "webhook-id", "webhook-timestamp", "webhook-signature"}},
		{name: "own prefix", scheme: Scheme{Prefix: "Palm", Prefixed: true, StandardWebhooks: true}, present: []string{"Palm-Signature", "Palm-Webhook-Id", "Palm-Event-Type", "webhook-signature"}, absent: []string{"Hookrelay-Signature"}},
		{name: "standard only", scheme: Scheme{StandardWebhooks: true}, present: []string{"webhook-id", "webhook-timestamp", "webhook-signature"}, absent: []string{"Hookrelay-Signature", "Hookrelay-Webhook-Id", "Hookrelay-Event-Type"}},
		{name: "prefixed only", scheme: Scheme{Prefix: "Palm", Prefixed: true}, present: []string{"Palm-Signature"}, absent: []string{"webhook-id", "webhook-timestamp", "webhook-signature"}},
		{name: "Webhook alone is fine", scheme: Scheme{Prefix: "Webhook", Prefixed: true}, present: []string{"Webhook-Signature"}},
		{name: "Webhook with both collides", scheme: Scheme{Prefix: "wEbHoOk", Prefixed: true, StandardWebhooks: true}, err: "collide"},
		{name: "none", scheme: Scheme{}, err: "no signature scheme"},
	} {
		t.Run(test.name, func(t *testing.T) {
			h := http.Header{}
			err := signer.Sign(h, d, []string{oldSecret}, test.scheme)
			if test.err != "" {
				if err == nil || !strings.Contains(err.Error(), test.err) {
					t.Fatalf("err = %v, want %q", err, test.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range test.present {
				if h.Get(name) == "" {
					t.Errorf("%s is missing: %v", name, h)
				}
			}
			for _, name := range test.absent {
				if h.Get(name) != "" {
					t.Errorf("%s = %q, want none", name, h.Get(name))
				}
			}
		})
	}
}

// TestSignReusesStatesSafely: signatures made with the reused HMAC states,
// one after another and at once from many goroutines, are those of a fresh
// HMAC for each.
func TestSignReusesStatesSafely(t *testing.T) {
	secrets := []string{newSecret, oldSecret}
	var wg sync.WaitGroup
	for worker := range 8 {
		wg.Go(func() {
			for i := range 50 {
				d := Delivery{EventID: fmt.Sprintf("evt_%d_%d", worker, i), EventType: "user.created", EndpointID: "ns/e",
					Timestamp: 1_764_064_800 + int64(i), Body: fmt.Appendf(nil, `{"n":%d}`, i)}
				h := http.Header{}
				if err := (Signer{Prefix: "Palm"}).Sign(h, d, secrets, BothSchemes); err != nil {
					t.Error(err)
					return
				}
				timestamp := strconv.FormatInt(d.Timestamp, 10)
				prefixed, standard := "t="+timestamp, ""
				for j, secret := range secrets {
					prefixed += ",v1=" + hex.EncodeToString(PrefixedSignature(secret, timestamp, d.Body))
					signature, err := StandardSignature(secret, d.EventID, timestamp, d.Body)
					if err != nil {
						t.Error(err)
						return
					}
					if j > 0 {
						standard += " "
					}
					standard += "v1," + base64.StdEncoding.EncodeToString(signature)
				}
				if got := h.Get("Palm-Signature"); got != prefixed {
					t.Errorf("Palm-Signature = %q, want %q", got, prefixed)
				}
				if got := h.Get("webhook-signature"); got != standard {
					t.Errorf("webhook-signature = %q, want %q", got, standard)
				}
				if h.Get("webhook-timestamp") != timestamp || h.Get("webhook-id") != d.EventID {
					t.Errorf("headers = %v", h)
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkSign(b *testing.B) {
	d := Delivery{EventID: "evt_1", EventType: "user.created", EndpointID: "ns/e", Timestamp: 1_764_064_800,
		Body: []byte(`{"id":"evt_1","object":"event","type":"user.created","created_at":"2025-01-06T10:30:00Z","data":{}}`)}
	b.ReportAllocs()
	for b.Loop() {
		if err := (Signer{Prefix: "Hookrelay"}).Sign(make(http.Header, 8), d, []string{newSecret}, BothSchemes); err != nil {
			b.Fatal(err)
		}
	}
}
