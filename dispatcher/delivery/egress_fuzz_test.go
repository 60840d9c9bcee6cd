package delivery

import (
	"net/netip"
	"testing"
)

// FuzzEgressCheck: any address, as 4 or 16 bytes or as the host:port a
// dialer passes, is judged without panicking; an address that is or
// carries (mapped, IPv4-compatible, NAT64, 6to4, Teredo) a loopback,
// private or link-local IPv4 address is refused, with or without a zone;
// and allow-listing everything allows everything.
func FuzzEgressCheck(f *testing.F) {
	for _, seed := range []string{"127.0.0.1", "::1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::", "2001:0:5db8:d822::80ff:fffe", "fe80::1", "93.184.216.34"} {
		f.Add(netip.MustParseAddr(seed).AsSlice(), "["+seed+"%eth0]:443")
	}
	f.Fuzz(func(t *testing.T, raw []byte, address string) {
		refuseAll, allowAll := EgressPolicy{}, EgressPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}
		_ = refuseAll.control("tcp", address, nil)
		var addrs []netip.Addr
		if addrPort, err := netip.ParseAddrPort(address); err == nil {
			addrs = append(addrs, addrPort.Addr())
		}
		if addr, ok := netip.AddrFromSlice(raw); ok {
			addrs = append(addrs, addr)
			if addr.Is6() {
				addrs = append(addrs, addr.WithZone("eth0"))
			}
		}
		for _, addr := range addrs {
			if err := allowAll.check(addr); err != nil {
				t.Errorf("%s with everything allow-listed: %v", addr, err)
			}
			err := refuseAll.check(addr)
			for _, inner := range carriedIPv4(addr) {
				if (inner.IsLoopback() || inner.IsPrivate() || inner.IsLinkLocalUnicast()) && err == nil {
					t.Errorf("%s carries %s and was allowed", addr, inner)
				}
			}
			if bare := addr.WithZone("").Unmap(); (bare.IsLoopback() || bare.IsPrivate() || bare.IsLinkLocalUnicast() || bare.IsUnspecified()) && err == nil {
				t.Errorf("%s was allowed", addr)
			}
		}
	})
}

// carriedIPv4 decodes, independently of egress.go, the IPv4 addresses an
// address is or carries.
func carriedIPv4(addr netip.Addr) []netip.Addr {
	addr = addr.WithZone("")
	if addr.Is4() || addr.Is4In6() {
		return []netip.Addr{addr.Unmap()}
	}
	b := addr.As16()
	last := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	switch {
	case b == [16]byte{12: b[12], 13: b[13], 14: b[14], 15: b[15]}: // ::a.b.c.d
		return []netip.Addr{last}
	case b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4]|b[5]|b[6]|b[7]|b[8]|b[9]|b[10]|b[11] == 0: // 64:ff9b::/96
		return []netip.Addr{last}
	case b[0] == 0x20 && b[1] == 0x02: // 2002::/16
		return []netip.Addr{netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})}
	case b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0: // 2001::/32
		return []netip.Addr{netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]}), netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})}
	}
	return nil
}
