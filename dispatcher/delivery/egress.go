package delivery

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// refusedRanges are the destinations a delivery never reaches unless
// allow-listed: a customer URL must not become a way into the cluster's
// network or the cloud's metadata service.
var refusedRanges = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private (RFC 1918)"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private (RFC 1918)"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private (RFC 1918)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared address space (RFC 6598)"},
	{netip.MustParsePrefix("169.254.169.254/32"), "cloud metadata"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("100.100.100.200/32"), "cloud metadata"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "cloud metadata"},
	{netip.MustParsePrefix("fc00::/7"), "private (RFC 4193)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// EgressPolicy decides which addresses deliveries may connect to.
type EgressPolicy struct {
	// Allow lists ranges that are reachable although refused by default,
	// such as 127.0.0.0/8 for development.
	Allow []netip.Prefix
}

// ParseCIDRs reads a comma-separated list of CIDRs, naming a bad one.
func ParseCIDRs(list string) ([]netip.Prefix, error) {
	var prefixes []netip.Prefix
	for _, field := range strings.Split(list, ",") {
		if field = strings.TrimSpace(field); field == "" {
			continue
		}
		prefix, err := netip.ParsePrefix(field)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR such as 127.0.0.0/8: %w", field, err)
		}
		prefixes = append(prefixes, prefix.Masked())
	}
	return prefixes, nil
}

// check says why an address is refused, or nil.
func (p EgressPolicy) check(addr netip.Addr) error {
	addr = addr.Unmap()
	for _, allowed := range p.Allow {
		if allowed.Contains(addr) {
			return nil
		}
	}
	for _, refused := range refusedRanges {
		if refused.prefix.Contains(addr) {
			return fmt.Errorf("egress refused: %s is a %s address (allow it with --egress-allow-cidr)", addr, refused.what)
		}
	}
	return nil
}

// control runs on the resolved address just before connect, so that no
// name, redirect or DNS answer can reach a refused address.
func (p EgressPolicy) control(_, address string, _ syscall.RawConn) error {
	addrPort, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("egress refused: cannot read address %q: %w", address, err)
	}
	return p.check(addrPort.Addr())
}

// Transport is an HTTP transport whose connections obey the policy.
func (p EgressPolicy) Transport() *http.Transport {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: p.control}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.DialContext = dialer.DialContext
	transport.Proxy = nil // a proxy would connect on our behalf, unchecked
	return transport
}
