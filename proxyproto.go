package warren

import (
	"fmt"
	"net/netip"
	"strings"

	"go4.org/netipx"
)

// The PROXY protocol on the hub's WebSocket listener.
//
// Behind a TCP load balancer (HAProxy's send-proxy-v2, an AWS NLB, nginx
// stream with proxy_protocol) every connection reaches the hub from the
// proxy, and the client's own address travels in a PROXY header in front of
// the TLS handshake. With proxyProtocol on, the hub reads that header and
// uses its source, IPv4 or IPv6, everywhere a client's address matters:
// connectionIpBlockList (before any cryptography), each client's ipAllowList
// and ipBlockList, ClientInfo.RemoteAddr (ListClients, the ClientConnected
// event), ClientTelemetry and the logs.
//
// A header is believed only from the proxies named in
// proxyProtocolTrustedSources (IP addresses and CIDR prefixes). A connection
// whose TCP peer is not among them is closed at accept, before a byte of it
// is read, counted in Statistics.ProxyUntrusted and ConnectionsRejected, and
// logged with the peer's address (Warn for the first, then at most once a
// minute; Debug for each). The list is required with proxyProtocol: an empty
// list is a configuration error rather than "trust everyone", because a hub
// that believes any peer's header lets anyone who can reach its port claim
// any source address, and so walk past every IP-based ACL. A deployment that
// really cannot name its proxies can write 0.0.0.0/0 and ::/0, and own that
// choice in its config.
//
// A header with the LOCAL command is what HAProxy sends with health checks
// (check-send-proxy): it relays no client. It is accepted, counted in
// Statistics.ProxyLocal, and the connection is then the proxy's own (its
// remote address is the proxy's); a health check that closes after its
// header is not an error and is logged at Debug level only.
//
// The PROXY protocol fronts TCP only here: QUIC and WireGuard run over UDP,
// where no proxy header is sent, so their clients' addresses are the UDP
// peers the hub sees. proxyProtocol with a transportMode that runs no
// WebSocket listener (quic, wireguard) is refused as a configuration error;
// with all or both, the WebSocket listener reads headers while QUIC and
// WireGuard take clients directly (a UDP load balancer in front of them
// would hide the clients' addresses, with no header to recover them).

// checkProxyProtocol validates proxyProtocol, proxyProtocolV1 and
// proxyProtocolTrustedSources, and returns the trusted sources compiled (nil
// when proxyProtocol is off).
func (c *ServerConfig) checkProxyProtocol() (*netipx.IPSet, error) {
	if !c.ProxyProtocol {
		switch {
		case len(c.ProxyProtocolTrustedSources) > 0:
			return nil, configErr("proxyProtocolTrustedSources", strings.Join(c.ProxyProtocolTrustedSources, ","),
				"set without proxyProtocol: there is no PROXY header to trust (turn proxyProtocol on, or drop the list)")
		case c.ProxyProtocolV1:
			return nil, configErr("proxyProtocolV1", "true", "set without proxyProtocol, which it extends")
		}
		return nil, nil
	}
	if !c.runsWS() {
		return nil, configErr("proxyProtocol", "true", fmt.Sprintf(
			"transportMode %s runs no WebSocket listener, and only that one reads PROXY headers: QUIC and WireGuard are UDP, which the PROXY protocol does not front",
			c.TransportMode))
	}
	if len(c.ProxyProtocolTrustedSources) == 0 {
		return nil, configErr("proxyProtocolTrustedSources", "",
			"required with proxyProtocol: list the addresses or CIDR prefixes the proxies connect from (e.g. 10.0.0.5, 10.0.1.0/24); "+
				"a header from any other peer is refused. 0.0.0.0/0 and ::/0 trust every peer, which lets anyone who reaches the port claim any source address")
	}
	var b netipx.IPSetBuilder
	for i, entry := range c.ProxyProtocolTrustedSources {
		p, why := parseTrustedSource(entry)
		if why != "" {
			return nil, configErr(fmt.Sprintf("proxyProtocolTrustedSources[%d]", i), entry, why)
		}
		b.AddPrefix(p)
	}
	set, err := b.IPSet()
	if err != nil {
		// parseTrustedSource returns valid prefixes only: a bug, not bad input.
		return nil, fmt.Errorf("warren: compiling proxyProtocolTrustedSources: %w", err)
	}
	return set, nil
}

// parseTrustedSource parses one proxyProtocolTrustedSources entry, an IP
// address or a CIDR prefix with no host bits set, into a prefix. IPv4-mapped
// IPv6 entries become IPv4, as peers are unmapped before the lookup. It
// returns why the entry is refused, or "".
func parseTrustedSource(s string) (netip.Prefix, string) {
	s = strings.TrimSpace(s)
	const want = "not an IP address or CIDR prefix (e.g. 10.0.0.5, 10.0.1.0/24, 2001:db8::/64; host names are not resolved)"
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, want
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if m := p.Masked(); m != p {
			return netip.Prefix{}, fmt.Sprintf("host bits set: write %s for the prefix, or the address alone", m)
		}
		return p, ""
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Prefix{}, want
	case a.Zone() != "":
		return netip.Prefix{}, "an IPv6 zone is not allowed"
	case a.IsUnspecified():
		return netip.Prefix{}, "the unspecified address is no peer's address (0.0.0.0/0 and ::/0 trust every peer)"
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), ""
}
