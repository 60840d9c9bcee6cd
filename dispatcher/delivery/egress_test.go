package delivery

import (
	"net/netip"
	"strings"
	"testing"
)

func TestEgressPolicy(t *testing.T) {
	allowLoopback, err := ParseCIDRs("127.0.0.0/8, ::1/128")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		address string
		allow   []netip.Prefix
		refused string
	}{
		{address: "93.184.216.34"},
		{address: "2606:2800:220:1:248:1893:25c8:1946"},
		{address: "127.0.0.1", refused: "loopback"},
		{address: "::1", refused: "loopback"},
		{address: "::ffff:127.0.0.1", refused: "loopback"},
		{address: "10.0.0.1", refused: "private (RFC 1918)"},
		{address: "172.20.1.1", refused: "private (RFC 1918)"},
		{address: "192.168.1.1", refused: "private (RFC 1918)"},
		{address: "fd12:3456::1", refused: "private (RFC 4193)"},
		{address: "169.254.169.254", refused: "cloud metadata"},
		{address: "169.254.10.1", refused: "link-local"},
		{address: "fe80::1", refused: "link-local"},
		{address: "fd00:ec2::254", refused: "cloud metadata"},
		{address: "127.0.0.1", allow: allowLoopback},
		{address: "::1", allow: allowLoopback},
		{address: "10.0.0.1", allow: allowLoopback, refused: "private"},
	}
	for _, tc := range cases {
		err := EgressPolicy{Allow: tc.allow}.check(netip.MustParseAddr(tc.address))
		switch {
		case tc.refused == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.address, err)
		case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused)):
			t.Errorf("%s: error %v, want one saying %q", tc.address, err, tc.refused)
		}
	}
	if _, err := ParseCIDRs("127.0.0.1"); err == nil || !strings.Contains(err.Error(), `"127.0.0.1"`) {
		t.Errorf("ParseCIDRs of a bare address: %v", err)
	}
}
