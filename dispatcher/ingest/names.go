package ingest

// Byte-level checks of the names a request carries, run on every publish: they
// accept exactly what the patterns in their comments match (names_test.go
// compares them), at a fraction of regexp's cost.

// validNamespace matches ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$, a
// Kubernetes namespace name (an RFC 1123 label).
func validNamespace(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !isLowerAlphanumeric(c) && c != '-' {
			return false
		}
	}
	return true
}

// validType matches ^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$: dot-separated
// names, none empty. The length is checked apart.
func validType(s string) bool {
	if len(s) == 0 || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := range len(s) {
		switch c := s[i]; {
		case c == '.':
			if s[i-1] == '.' {
				return false
			}
		case !isNameByte(c):
			return false
		}
	}
	return true
}

// validID matches ^[A-Za-z0-9_.:-]{1,255}$.
func validID(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !isNameByte(c) && c != '.' && c != ':' {
			return false
		}
	}
	return true
}

func isLowerAlphanumeric(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// isNameByte is [A-Za-z0-9_-].
func isNameByte(c byte) bool {
	return isLowerAlphanumeric(c) || 'A' <= c && c <= 'Z' || c == '_' || c == '-'
}
