package wgconfig_test

import (
	"net/netip"

	"github.com/warrenvpn/warren/wgconfig"
)

// testKey returns a fixed, non-zero key that differs for each seed.
func testKey(seed byte) wgconfig.Key {
	var k wgconfig.Key
	for i := range k {
		k[i] = seed + byte(i)*7
	}
	return k
}

func ptr[T any](v T) *T { return &v }

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func netipPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
