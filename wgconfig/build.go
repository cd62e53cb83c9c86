package wgconfig

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
)

// ClientParams describes a client's tunnel to a hub, for [ClientConfig].
type ClientParams struct {
	// PrivateKey is the client's private key. Required.
	PrivateKey Key
	// Address are the client's tunnel addresses, such as 10.8.0.2/32.
	// At least one is required.
	Address []netip.Prefix
	// DNS are resolvers for the client while the tunnel is up. Optional.
	DNS []netip.Addr
	// MTU is the tunnel MTU, 68 to 65535. If 0, the app chooses.
	MTU int
	// ServerPublicKey is the hub's WireGuard public key. Required.
	ServerPublicKey Key
	// PresharedKey is an optional preshared key shared with the hub.
	PresharedKey *Key
	// Endpoint is the hub's host:port (see [Peer.Endpoint]). Required.
	Endpoint string
	// AllowedIPs are the destinations routed through the hub: the hub's
	// subnet for a split tunnel, 0.0.0.0/0 and ::/0 for all traffic.
	// At least one is required.
	AllowedIPs []netip.Prefix
	// PersistentKeepalive is in seconds, 0 to 65535; 25 keeps NAT mappings
	// open. If 0, keepalive is off.
	PersistentKeepalive int
}

// ClientConfig builds a client's configuration: an Interface section with
// no ListenPort and no hooks, and the hub as its only peer. It uses only keys
// every WireGuard app imports. It checks p and returns a [*ConfigError]
// whose Field is the name of the ClientParams field at fault.
func ClientConfig(p ClientParams) (Config, error) {
	if p.PrivateKey.IsZero() {
		return Config{}, &ConfigError{Field: "PrivateKey", Reason: "required", Err: ErrInvalidKey}
	}
	if len(p.Address) == 0 {
		return Config{}, &ConfigError{Field: "Address", Reason: "at least one address is required"}
	}
	if err := checkPrefixes("Address", p.Address); err != nil {
		return Config{}, err
	}
	for i, a := range p.DNS {
		if r := dnsAddrReason(a); r != "" {
			return Config{}, &ConfigError{Field: fmt.Sprintf("DNS[%d]", i), Value: a.String(), Reason: r}
		}
	}
	if r := mtuReason(p.MTU); r != "" {
		return Config{}, &ConfigError{Field: "MTU", Value: strconv.Itoa(p.MTU), Reason: r}
	}
	if p.ServerPublicKey.IsZero() {
		return Config{}, &ConfigError{Field: "ServerPublicKey", Reason: "required", Err: ErrInvalidKey}
	}
	if p.Endpoint == "" {
		return Config{}, &ConfigError{Field: "Endpoint", Reason: "required"}
	}
	if r := endpointReason(p.Endpoint); r != "" {
		return Config{}, &ConfigError{Field: "Endpoint", Value: p.Endpoint, Reason: r}
	}
	if len(p.AllowedIPs) == 0 {
		return Config{}, &ConfigError{Field: "AllowedIPs", Reason: "at least one prefix is required (0.0.0.0/0 and ::/0 for all traffic)"}
	}
	if err := checkPrefixes("AllowedIPs", p.AllowedIPs); err != nil {
		return Config{}, err
	}
	if r := keepaliveReason(p.PersistentKeepalive); r != "" {
		return Config{}, &ConfigError{Field: "PersistentKeepalive", Value: strconv.Itoa(p.PersistentKeepalive), Reason: r}
	}
	c := Config{
		Interface: Interface{
			PrivateKey: p.PrivateKey,
			Addresses:  slices.Clone(p.Address),
			DNS:        slices.Clone(p.DNS),
			MTU:        p.MTU,
		},
		Peers: []Peer{{
			PublicKey:           p.ServerPublicKey,
			PresharedKey:        cloneKey(p.PresharedKey),
			Endpoint:            p.Endpoint,
			AllowedIPs:          slices.Clone(p.AllowedIPs),
			PersistentKeepalive: p.PersistentKeepalive,
		}},
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// ServerParams describes a hub's WireGuard interface, for [ServerConfig].
type ServerParams struct {
	// PrivateKey is the hub's private key. Required.
	PrivateKey Key
	// Address is the hub's tunnel address with the length of the clients'
	// subnet, such as 10.8.0.1/24. Required.
	Address netip.Prefix
	// ListenPort is the UDP port, 1 to 65535. If 0, [DefaultListenPort].
	ListenPort int
	// MTU is the tunnel MTU, 68 to 65535. If 0, wg-quick chooses.
	MTU int
	// Peers are the clients. Each needs a PublicKey and at least one
	// AllowedIPs entry (usually the client's /32 or /128); see [Peer].
	Peers []Peer
	// NATInterface, if set, is the host's uplink (such as "eth0"): the
	// config then gets PostUp lines that let the tunnel's traffic through
	// the FORWARD chain and masquerade it out of that interface, and
	// PostDown lines that undo them, using iptables for an IPv4 Address and
	// ip6tables for an IPv6 one. IP forwarding must be enabled on the host
	// (sysctl net.ipv4.ip_forward=1); the config does not change it.
	NATInterface string
}

// ServerConfig builds a hub's configuration: an Interface section with the
// hub's address and port, and one Peer section per client. It checks p and returns a
// [*ConfigError] whose Field is the name of the ServerParams field at fault
// ("Peers[3].AllowedIPs").
func ServerConfig(p ServerParams) (Config, error) {
	if p.PrivateKey.IsZero() {
		return Config{}, &ConfigError{Field: "PrivateKey", Reason: "required", Err: ErrInvalidKey}
	}
	if !p.Address.IsValid() {
		return Config{}, &ConfigError{Field: "Address", Reason: "required"}
	}
	port := p.ListenPort
	if port == 0 {
		port = DefaultListenPort
	}
	if port < 1 || port > 65535 {
		return Config{}, &ConfigError{Field: "ListenPort", Value: strconv.Itoa(p.ListenPort), Reason: "want a port number from 1 to 65535"}
	}
	if r := mtuReason(p.MTU); r != "" {
		return Config{}, &ConfigError{Field: "MTU", Value: strconv.Itoa(p.MTU), Reason: r}
	}
	peers := make([]Peer, len(p.Peers))
	for i, peer := range p.Peers {
		if len(peer.AllowedIPs) == 0 {
			return Config{}, &ConfigError{Field: fmt.Sprintf("Peers[%d].AllowedIPs", i), Reason: "at least one prefix is required"}
		}
		peers[i] = peer
		peers[i].PresharedKey = cloneKey(peer.PresharedKey)
		peers[i].AllowedIPs = slices.Clone(peer.AllowedIPs)
	}
	if len(peers) == 0 {
		peers = nil
	}
	c := Config{
		Interface: Interface{
			PrivateKey: p.PrivateKey,
			Addresses:  []netip.Prefix{p.Address},
			ListenPort: port,
			MTU:        p.MTU,
		},
		Peers: peers,
	}
	if p.NATInterface != "" {
		if r := ifnameReason(p.NATInterface); r != "" {
			return Config{}, &ConfigError{Field: "NATInterface", Value: p.NATInterface, Reason: r}
		}
		c.Interface.PostUp, c.Interface.PostDown = natRules(p.Address, p.NATInterface)
	}
	// Peers' fields are named as in Config, so Validate's errors name the
	// ServerParams field too.
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// natRules returns PostUp and PostDown commands that forward between the
// tunnel (%i, which wg-quick fills in) and uplink and masquerade the
// tunnel's subnet out of uplink. PostDown deletes the rules in reverse.
func natRules(addr netip.Prefix, uplink string) (up, down []string) {
	cmd := "iptables"
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		cmd = "ip6tables"
	}
	fwdOut := "FORWARD -i %i -o " + uplink + " -j ACCEPT"
	fwdIn := "FORWARD -i " + uplink + " -o %i -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
	masq := "POSTROUTING -s " + addr.Masked().String() + " -o " + uplink + " -j MASQUERADE"
	// -I puts the FORWARD rules ahead of a distribution's catch-all DROP.
	up = []string{
		cmd + " -I " + fwdOut,
		cmd + " -I " + fwdIn,
		cmd + " -t nat -A " + masq,
	}
	down = []string{
		cmd + " -t nat -D " + masq,
		cmd + " -D " + fwdIn,
		cmd + " -D " + fwdOut,
	}
	return up, down
}

// ifnameReason checks a Linux interface name that goes into a shell
// command: 1 to 15 bytes of letters, digits, '_', '-' and '.'.
func ifnameReason(s string) string {
	if len(s) > 15 {
		return "longer than 15 characters"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return "an interface name has only letters, digits, '_', '-' and '.'"
		}
	}
	return ""
}

func checkPrefixes(field string, ps []netip.Prefix) error {
	for i, p := range ps {
		if r := prefixReason(p); r != "" {
			return &ConfigError{Field: fmt.Sprintf("%s[%d]", field, i), Value: p.String(), Reason: r}
		}
	}
	return nil
}

func cloneKey(k *Key) *Key {
	if k == nil {
		return nil
	}
	c := *k
	return &c
}
