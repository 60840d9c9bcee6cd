package delivery

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// A delivery may reach only public unicast addresses: a customer URL must
// not become a way into the cluster's network or the cloud's metadata
// service. The rules are few on purpose: IPv6 translation forms are decoded
// and the IPv4 address they carry is checked as well, an IPv6 address must
// otherwise be global unicast (2000::/3), and the ranges below are refused
// unless allow-listed.

// addressRule is one range, first match wins. A rule without embedded
// refuses the range, naming its kind; a rule with embedded names a
// translation form whose embedded IPv4 addresses are checked in its place.
type addressRule struct {
	prefix   netip.Prefix
	kind     string
	embedded func(addr [16]byte) []netip.Addr
}

//nolint:goconst // a table: each row spells out its kind
var addressRules = []addressRule{
	// Metadata services answer on otherwise public or link-local addresses:
	// AWS, GCP (metadata.google.internal), Azure and OpenStack on
	// 169.254.169.254, the Azure wireserver on 168.63.129.16, Alibaba Cloud
	// on 100.100.100.200, AWS over IPv6 on fd00:ec2::254.
	{prefix: netip.MustParsePrefix("169.254.169.254/32"), kind: "cloud metadata"},
	{prefix: netip.MustParsePrefix("168.63.129.16/32"), kind: "cloud metadata"},
	{prefix: netip.MustParsePrefix("100.100.100.200/32"), kind: "cloud metadata"},
	{prefix: netip.MustParsePrefix("fd00:ec2::254/128"), kind: "cloud metadata"},

	{prefix: netip.MustParsePrefix("0.0.0.0/8"), kind: "unspecified"},
	{prefix: netip.MustParsePrefix("127.0.0.0/8"), kind: "loopback"},
	{prefix: netip.MustParsePrefix("10.0.0.0/8"), kind: "private (RFC 1918)"},
	{prefix: netip.MustParsePrefix("172.16.0.0/12"), kind: "private (RFC 1918)"},
	{prefix: netip.MustParsePrefix("192.168.0.0/16"), kind: "private (RFC 1918)"},
	{prefix: netip.MustParsePrefix("100.64.0.0/10"), kind: "shared address space (RFC 6598)"},
	{prefix: netip.MustParsePrefix("169.254.0.0/16"), kind: "link-local"},
	{prefix: netip.MustParsePrefix("192.0.0.0/24"), kind: "IETF protocol assignment (RFC 6890)"},
	{prefix: netip.MustParsePrefix("192.0.2.0/24"), kind: "documentation (RFC 5737)"},
	{prefix: netip.MustParsePrefix("198.51.100.0/24"), kind: "documentation (RFC 5737)"},
	{prefix: netip.MustParsePrefix("203.0.113.0/24"), kind: "documentation (RFC 5737)"},
	{prefix: netip.MustParsePrefix("198.18.0.0/15"), kind: "benchmarking (RFC 2544)"},
	{prefix: netip.MustParsePrefix("224.0.0.0/4"), kind: "multicast"},
	{prefix: netip.MustParsePrefix("255.255.255.255/32"), kind: "broadcast"},
	{prefix: netip.MustParsePrefix("240.0.0.0/4"), kind: "reserved (RFC 1112)"},

	{prefix: netip.MustParsePrefix("::/128"), kind: "unspecified"},
	{prefix: netip.MustParsePrefix("::1/128"), kind: "loopback"},
	{prefix: netip.MustParsePrefix("::/96"), kind: "IPv4-compatible (deprecated)"},
	{prefix: netip.MustParsePrefix("64:ff9b::/96"), kind: "NAT64", embedded: nat64IPv4},
	// The local-use NAT64 prefix embeds its IPv4 address at a position
	// only the local network knows.
	{prefix: netip.MustParsePrefix("64:ff9b:1::/48"), kind: "local-use NAT64 (RFC 8215)"},
	{prefix: netip.MustParsePrefix("2001::/32"), kind: "Teredo", embedded: teredoIPv4},
	{prefix: netip.MustParsePrefix("2002::/16"), kind: "6to4", embedded: sixToFourIPv4},
	{prefix: netip.MustParsePrefix("2001:2::/48"), kind: "benchmarking (RFC 5180)"},
	{prefix: netip.MustParsePrefix("2001:db8::/32"), kind: "documentation (RFC 3849)"},
	{prefix: netip.MustParsePrefix("fc00::/7"), kind: "private (RFC 4193)"},
	{prefix: netip.MustParsePrefix("fe80::/10"), kind: "link-local"},
	{prefix: netip.MustParsePrefix("fec0::/10"), kind: "site-local (deprecated)"},
	{prefix: netip.MustParsePrefix("ff00::/8"), kind: "multicast"},
}

// globalUnicastIPv6 is where IANA allocates global unicast IPv6 addresses.
var globalUnicastIPv6 = netip.MustParsePrefix("2000::/3")

// nat64IPv4 reads the IPv4 address of 64:ff9b::a.b.c.d (RFC 6052).
func nat64IPv4(addr [16]byte) []netip.Addr {
	return []netip.Addr{netip.AddrFrom4([4]byte(addr[12:16]))}
}

// teredoIPv4 reads the server address and the client's address, which is
// stored inverted (RFC 4380).
func teredoIPv4(addr [16]byte) []netip.Addr {
	client := [4]byte(addr[12:16])
	for i := range client {
		client[i] ^= 0xff
	}
	return []netip.Addr{netip.AddrFrom4([4]byte(addr[4:8])), netip.AddrFrom4(client)}
}

// sixToFourIPv4 reads the IPv4 address of 2002:AABB:CCDD:: (RFC 3056).
func sixToFourIPv4(addr [16]byte) []netip.Addr {
	return []netip.Addr{netip.AddrFrom4([4]byte(addr[2:6]))}
}

// classifyAddress names the kind of a refused address (without zone, IPv4 unmapped),
// or returns the IPv4 addresses a translation form carries, which decide in
// its place. An empty kind and no embedded addresses means public.
func classifyAddress(addr netip.Addr) (kind string, translation string, embedded []netip.Addr) {
	for _, rule := range addressRules {
		if !rule.prefix.Contains(addr) {
			continue
		}
		if rule.embedded == nil {
			return rule.kind, "", nil
		}
		return "", rule.kind, rule.embedded(addr.As16())
	}
	switch {
	case addr.Is6() && !globalUnicastIPv6.Contains(addr):
		return "non-global IPv6 (outside 2000::/3)", "", nil
	case !addr.IsGlobalUnicast() || addr.IsPrivate():
		// Unreachable with the rules above; kept so that a forgotten range
		// fails closed.
		return "non-global", "", nil
	}
	return "", "", nil
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
	for field := range strings.SplitSeq(list, ",") {
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

func (p EgressPolicy) allowed(addr netip.Addr) bool {
	for _, allowed := range p.Allow {
		if allowed.Contains(addr) {
			return true
		}
	}
	return false
}

// check says why an address is refused, or nil. A zone only picks the
// interface, so the address is judged without it (a prefix never contains
// a zoned address, which would otherwise pass every rule).
func (p EgressPolicy) check(addr netip.Addr) error {
	bare := addr.WithZone("").Unmap()
	if p.allowed(bare) {
		return nil
	}
	kind, translation, embedded := classifyAddress(bare)
	if kind != "" {
		return fmt.Errorf("%w: %s is %s address (allow it with --egress-allow-cidr)", errEgressRefused, addr, withArticle(kind))
	}
	for _, inner := range embedded {
		if p.allowed(inner) {
			continue
		}
		if innerKind, _, _ := classifyAddress(inner); innerKind != "" {
			return fmt.Errorf("%w: %s is %s address embedding %s, %s address (allow it with --egress-allow-cidr)",
				errEgressRefused, addr, withArticle(translation), inner, withArticle(innerKind))
		}
	}
	return nil
}

func withArticle(kind string) string {
	if strings.ContainsRune("aeiouAEIOU", rune(kind[0])) {
		return "an " + kind
	}
	return "a " + kind
}

// errEgressRefused starts every refusal of the policy, so that an attempt
// it stopped is told from a network failure.
var errEgressRefused = errors.New("egress refused")

// control runs on the resolved address just before connect, so that no
// name, redirect or DNS answer can reach a refused address.
func (p EgressPolicy) control(_, address string, _ syscall.RawConn) error {
	addrPort, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot read address %q: %w", errEgressRefused, address, err)
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
