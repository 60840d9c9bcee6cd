package delivery

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

func TestEgressPolicy(t *testing.T) {
	allowLoopback, err := ParseCIDRs("127.0.0.0/8, ::1/128")
	if err != nil {
		t.Fatal(err)
	}
	allowPrivate, err := ParseCIDRs("10.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		address string
		allow   []netip.Prefix
		refused string // empty: the address is reachable
	}{
		// Public addresses, and translation forms that carry one.
		{address: "93.184.216.34"},
		{address: "2606:2800:220:1:248:1893:25c8:1946"},
		{address: "::ffff:93.184.216.34"},
		{address: "64:ff9b::93.184.216.34"},
		{address: "2002:5db8:d822::1"},                       // 6to4 of 93.184.216.34
		{address: "2001:0:5db8:d822:0:0:a247:27dd"},          // Teredo: server and client 93.184.216.34
		{address: "2606:2800:220:1:248:1893:25c8:1946%eth0"}, // a zone only picks the interface

		// IPv4 special-purpose ranges.
		{address: "0.0.0.0", refused: "an unspecified address"},
		{address: "0.1.2.3", refused: "unspecified"},
		{address: "127.0.0.1", refused: "a loopback address"},
		{address: "10.0.0.1", refused: "private (RFC 1918)"},
		{address: "172.20.1.1", refused: "private (RFC 1918)"},
		{address: "192.168.1.1", refused: "private (RFC 1918)"},
		{address: "100.64.0.1", refused: "shared address space"},
		{address: "169.254.10.1", refused: "link-local"},
		{address: "192.0.0.8", refused: "IETF protocol assignment"},
		{address: "192.0.2.1", refused: "documentation"},
		{address: "198.51.100.1", refused: "documentation"},
		{address: "203.0.113.1", refused: "documentation"},
		{address: "198.18.0.1", refused: "benchmarking"},
		{address: "198.19.255.255", refused: "benchmarking"},
		{address: "224.0.0.1", refused: "multicast"},
		{address: "240.0.0.1", refused: "reserved"},
		{address: "255.255.255.255", refused: "a broadcast address"},

		// Cloud metadata services.
		{address: "169.254.169.254", refused: "cloud metadata"}, // AWS, GCP, Azure
		{address: "168.63.129.16", refused: "cloud metadata"},   // Azure wireserver
		{address: "100.100.100.200", refused: "cloud metadata"}, // Alibaba Cloud
		{address: "fd00:ec2::254", refused: "cloud metadata"},   // AWS over IPv6
		{address: "::ffff:169.254.169.254", refused: "cloud metadata"},

		// IPv6 special-purpose ranges.
		{address: "::", refused: "unspecified"},
		{address: "::1", refused: "loopback"},
		{address: "fd12:3456::1", refused: "private (RFC 4193)"},
		{address: "fe80::1", refused: "link-local"},
		{address: "fec0::1", refused: "site-local"},
		{address: "ff02::1", refused: "multicast"},
		{address: "2001:db8::1", refused: "documentation"},
		{address: "2001:2::1", refused: "benchmarking"},
		{address: "100::1", refused: "non-global IPv6"}, // discard-only
		{address: "4000::1", refused: "non-global IPv6"},

		// Zones: the address is judged without its zone.
		{address: "::1%lo", refused: "::1%lo is a loopback address"},
		{address: "fd00::2%eth0", refused: "fd00::2%eth0 is a private (RFC 4193) address"},
		{address: "fe80::1%eth0", refused: "fe80::1%eth0 is a link-local address"},
		{address: "fe80::1%1", refused: "link-local"},
		{address: "::ffff:127.0.0.1%lo", refused: "loopback"},

		// Embedded IPv4 addresses.
		{address: "::ffff:127.0.0.1", refused: "loopback"},
		{address: "::ffff:10.1.2.3", refused: "private (RFC 1918)"},
		{address: "::127.0.0.1", refused: "IPv4-compatible"},
		{address: "::93.184.216.34", refused: "IPv4-compatible"},
		{address: "64:ff9b::127.0.0.1", refused: "a NAT64 address embedding 127.0.0.1, a loopback address"},
		{address: "64:ff9b::10.0.0.1", refused: "embedding 10.0.0.1, a private (RFC 1918) address"},
		{address: "64:ff9b::169.254.169.254", refused: "cloud metadata"},
		{address: "64:ff9b:1::a00:1", refused: "local-use NAT64"},
		{address: "64:ff9b:1:5db8:d8:2200::", refused: "local-use NAT64"},
		{address: "2002:7f00:1::1", refused: "a 6to4 address embedding 127.0.0.1, a loopback address"},
		{address: "2002:a00:1::", refused: "6to4 address embedding 10.0.0.1, a private"},
		{address: "2002:c0a8:101::1", refused: "embedding 192.168.1.1"},
		{address: "2002:a9fe:a9fe::", refused: "cloud metadata"},
		{address: "2001:0:5db8:d822:0:0:80ff:fffe", refused: "a Teredo address embedding 127.0.0.1, a loopback address"}, // client 127.0.0.1
		{address: "2001:0:5db8:d822:0:0:f5ff:fffe", refused: "embedding 10.0.0.1"},                                       // client 10.0.0.1
		{address: "2001:0:a00:1:0:0:a247:27dd", refused: "embedding 10.0.0.1"},                                           // server 10.0.0.1
		{address: "2001:0:5db8:d822:0:0:5601:5601", refused: "cloud metadata"},                                           // client 169.254.169.254

		// The allow-list opens a range, also when embedded, and only that range.
		{address: "127.0.0.1", allow: allowLoopback},
		{address: "::1", allow: allowLoopback},
		{address: "::1%lo", allow: allowLoopback},
		{address: "::ffff:127.0.0.1", allow: allowLoopback},
		{address: "10.0.0.1", allow: allowLoopback, refused: "private"},
		{address: "2002:7f00:1::1", allow: allowLoopback},
		{address: "64:ff9b::10.0.0.1", allow: allowPrivate},
		{address: "64:ff9b::127.0.0.1", allow: allowPrivate, refused: "loopback"},
		{address: "2001:0:a00:1:0:0:80ff:fffe", allow: allowPrivate, refused: "embedding 127.0.0.1"}, // server allowed, client not
	}
	for _, tc := range cases {
		err := EgressPolicy{Allow: tc.allow}.check(netip.MustParseAddr(tc.address))
		switch {
		case tc.refused == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.address, err)
		case tc.refused != "" && err == nil:
			t.Errorf("%s: allowed, want refused as %q", tc.address, tc.refused)
		case tc.refused != "" && !strings.Contains(err.Error(), tc.refused):
			t.Errorf("%s: error %q, want one saying %q", tc.address, err, tc.refused)
		case err != nil && !strings.Contains(err.Error(), "allow it with --egress-allow-cidr"):
			t.Errorf("%s: error %q does not say how to allow it", tc.address, err)
		}
	}
	if _, err := ParseCIDRs("127.0.0.1"); err == nil || !strings.Contains(err.Error(), `"127.0.0.1"`) {
		t.Errorf("ParseCIDRs of a bare address: %v", err)
	}
}

// TestEgressRefusesZonedAddressesWhenDialing checks the connect-time path:
// a zone in the dialed address does not get it past the check.
func TestEgressRefusesZonedAddressesWhenDialing(t *testing.T) {
	policy := EgressPolicy{}
	for _, address := range []string{"[::1%lo]:443", "[fd00::2%eth0]:443", "[fe80::1%eth0]:443", "[::ffff:127.0.0.1%lo]:80"} {
		if err := policy.control("tcp6", address, nil); err == nil || !strings.Contains(err.Error(), "egress refused") {
			t.Errorf("dialing %s: %v, want egress refused", address, err)
		}
	}

	// End to end through the delivery transport: a receiver on [::1] is
	// not reached through http://[::1%25lo]:port/.
	listener, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	var connections atomic.Int32
	server := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	server.Listener.Close()
	server.Listener = listener
	server.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			connections.Add(1)
		}
	}
	server.Start()
	defer server.Close()
	port := listener.Addr().(*net.TCPAddr).Port
	client := NewHTTPClient(policy.Transport())
	for _, url := range []string{
		"http://[::1%25lo]:" + strconv.Itoa(port) + "/",
		"http://[::1]:" + strconv.Itoa(port) + "/",
		"http://[::ffff:127.0.0.1%25lo]:" + strconv.Itoa(port) + "/",
	} {
		request, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		response, err := client.Do(request)
		if err == nil {
			response.Body.Close()
			t.Errorf("POST %s: got %s, want egress refused", url, response.Status)
			continue
		}
		if !strings.Contains(err.Error(), "egress refused") {
			t.Errorf("POST %s: %v, want egress refused", url, err)
		}
	}
	if n := connections.Load(); n != 0 {
		t.Errorf("the receiver on [::1] got %d connections", n)
	}

	// Allow-listed, the same zoned URL is delivered to.
	allowed := NewHTTPClient(EgressPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("::1/128")}}.Transport())
	response, err := allowed.Post("http://[::1%25lo]:"+strconv.Itoa(port)+"/", "application/json", nil)
	if err != nil {
		t.Fatalf("allow-listed ::1: %v", err)
	}
	response.Body.Close()
}
