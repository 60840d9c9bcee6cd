// Package redact hides the credentials a receiver URL can carry (user info,
// query values, a fragment) wherever Hookrelay shows that URL: logs,
// Kubernetes Events, status messages and the delivery log. Both the
// controllers and the dispatcher use it, so a URL reads the same everywhere.
package redact

import (
	"errors"
	"net/url"
	"strings"
)

// Placeholder replaces each hidden part.
const Placeholder = "REDACTED"

// URL returns raw with its user info, each query value and its fragment
// replaced by Placeholder; scheme, host, path and query keys stay, so the
// URL can still be recognised. A query part without "=" is hidden whole,
// since it may be a bare token. A string that is not a URL is hidden whole.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return Placeholder
	}
	if u.Opaque != "" {
		u.Opaque = Placeholder
	}
	if u.User != nil {
		u.User = url.User(Placeholder)
	}
	if u.RawQuery != "" {
		parts := strings.Split(u.RawQuery, "&")
		for i, part := range parts {
			if key, _, found := strings.Cut(part, "="); found {
				parts[i] = key + "=" + Placeholder
			} else if part != "" {
				parts[i] = Placeholder
			}
		}
		u.RawQuery = strings.Join(parts, "&")
	}
	if u.Fragment != "" || u.RawFragment != "" {
		u.Fragment, u.RawFragment = Placeholder, ""
	}
	return u.String()
}

// Error hides the credentials in the URL that errors of Go's HTTP client
// quote (`Post "https://host/?token=…": dial tcp …`), and returns err.
func Error(err error) error {
	if urlErr, ok := errors.AsType[*url.Error](err); ok {
		urlErr.URL = URL(urlErr.URL)
	}
	return err
}
