package redact

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	cases := []struct{ raw, want string }{
		{"https://example.com/hooks", "https://example.com/hooks"},
		{"https://example.com:8443/a/b", "https://example.com:8443/a/b"},
		{"https://example.com/hooks?token=s3cret", "https://example.com/hooks?token=REDACTED"},
		{"https://example.com/?a=1&b=2&a=3", "https://example.com/?a=REDACTED&b=REDACTED&a=REDACTED"},
		{"https://example.com/?token=", "https://example.com/?token=REDACTED"},
		{"https://example.com/?s3cret", "https://example.com/?REDACTED"},
		{"https://example.com/?a=1&&s3cret", "https://example.com/?a=REDACTED&&REDACTED"},
		{"https://example.com/?token=a%20b%3Dc", "https://example.com/?token=REDACTED"},
		{"https://user:pass@example.com/", "https://REDACTED@example.com/"},
		{"https://user@example.com/", "https://REDACTED@example.com/"},
		{"https://:pass@example.com/", "https://REDACTED@example.com/"},
		{"https://example.com/a@b", "https://example.com/a@b"},
		{"https://example.com/#access_token=s3cret", "https://example.com/#REDACTED"},
		{"http://[::1%25lo]:8080/?k=v", "http://[::1%25lo]:8080/?k=REDACTED"},
		{"mailto:s3cret@example.com", "mailto:REDACTED"},
		{"https://example.com/\x7f?token=s3cret", "REDACTED"}, // not a URL
	}
	for _, tc := range cases {
		if got := URL(tc.raw); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}

// TestError redacts the URL that a real HTTP client error quotes.
func TestError(t *testing.T) {
	request, err := http.NewRequestWithContext(context.Background(), http.MethodPost, "http://user:pw@127.0.0.1:1/x?token=s3cret", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Port 1 on loopback refuses the connection.
	_, err = http.DefaultClient.Do(request)
	if err == nil {
		t.Fatal("expected a connection error")
	}
	message := Error(err).Error()
	for _, secret := range []string{"s3cret", "user", "pw"} {
		if strings.Contains(message, secret) {
			t.Errorf("error %q shows %q", message, secret)
		}
	}
	if !strings.Contains(message, `"http://REDACTED@127.0.0.1:1/x?token=REDACTED"`) {
		t.Errorf("error %q does not show the redacted URL", message)
	}
	plain := errors.New("no URL here")
	if Error(plain) != plain {
		t.Error("Error changed an error without a URL")
	}
}
