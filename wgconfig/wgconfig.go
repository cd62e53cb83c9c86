// Package wgconfig writes and reads WireGuard configuration files, the .conf
// format that wg-quick and the WireGuard iOS, Android, macOS and Windows
// apps import.
//
// A [Config] is one [Interface] and its peers ([Peer]). [Config.MarshalText] writes
// the canonical text: the Interface section with its keys in a fixed order,
// then one Peer section per peer, no comments. [Parse] reads what people
// write by hand: keys and section names in any case, '#' comments anywhere
// on a line (as in wg-quick, a '#' always starts a comment), blank lines,
// spaces around '=' and ',', repeated Address, DNS and AllowedIPs lines that
// add to one list. [Config.StripForWG] writes what `wg-quick strip` prints,
// the subset `wg setconf` accepts. [ClientConfig] and [ServerConfig] build
// the two configs a hub hands out and runs.
//
// Parse is strict where a mistake would silently change what the tunnel
// does: a key it does not know, a section other than "Interface" and "Peer",
// a key given twice where only one value makes sense, an address or port
// that does not parse, and a key that is not 32 bytes of base64 are all a
// [*ParseError] naming the line and the key. The wg-quick keys that this
// package does not model (Table, PreUp, PreDown, SaveConfig, FwMark) are kept
// verbatim, in order, in [Interface.Extra]. For any config Parse accepts,
// Parse(MarshalText(cfg)) gives back an equal Config.
//
// The package uses only the standard library and nothing else of Warren
// (DESIGN §1): a line-oriented INI dialect needs nothing more, and a small
// parser is easy to fuzz.
package wgconfig

import (
	"fmt"
	"net/netip"
)

// DefaultListenPort is the UDP port [ServerConfig] uses when
// [ServerParams.ListenPort] is zero: WireGuard's customary port.
const DefaultListenPort = 51820

// Config is a whole WireGuard configuration file.
type Config struct {
	Interface Interface
	Peers     []Peer
}

// Interface is the Interface section of a file: the local end of the tunnel.
type Interface struct {
	// PrivateKey is the interface's private key. Required.
	PrivateKey Key

	// Addresses are the interface's own addresses with the prefix length of
	// the subnet they sit in (Address = 10.8.0.2/24, fd00::2/64). An address
	// written without a length is read as /32 or /128.
	Addresses []netip.Prefix

	// ListenPort is the UDP port to listen on. If 0, the line is omitted and
	// WireGuard picks a random port.
	ListenPort int

	// DNS are the resolvers to use while the tunnel is up. Written, with
	// DNSSearch, on one DNS line.
	DNS []netip.Addr

	// DNSSearch are DNS search domains: the non-address entries of the DNS
	// line, as wg-quick reads them.
	DNSSearch []string

	// MTU is the interface MTU, 68 to 65535. If 0, the line is omitted and
	// wg-quick or the app chooses (usually 1420).
	MTU int

	// Extra holds the wg-quick keys this package does not model, in the
	// order read: Table, PreUp, PreDown, SaveConfig and FwMark. Each value is
	// kept as written. MarshalText writes them after MTU.
	Extra []KV

	// PostUp and PostDown are shell commands wg-quick runs after bringing
	// the interface up or down, each on its own line, in order. wg-quick
	// replaces %i with the interface name. The mobile apps ignore them.
	PostUp   []string
	PostDown []string
}

// KV is one key = value line of [Interface.Extra]. Key is the canonical
// spelling (for example "FwMark"), Value the text after '=', trimmed.
type KV struct {
	Key   string
	Value string
}

// Peer is one Peer section of a file: a remote end of the tunnel.
type Peer struct {
	// PublicKey is the peer's public key. Required.
	PublicKey Key

	// PresharedKey is an optional symmetric key mixed into the handshake.
	// If nil, the line is omitted.
	PresharedKey *Key

	// Endpoint is where to send the first packet: host:port, where host is
	// an IPv4 address, a bracketed IPv6 address ([2001:db8::1]:51820) or a
	// DNS name, and port is 1 to 65535. If empty, the peer must reach us
	// first.
	Endpoint string

	// AllowedIPs are the addresses the peer may send from and that are
	// routed to it. Kept as written; an address without a length is read
	// as /32 or /128.
	AllowedIPs []netip.Prefix

	// PersistentKeepalive is the interval in seconds at which to send a
	// keepalive, 0 to 65535. If 0, the line is omitted (keepalive off).
	PersistentKeepalive int
}

// ParseError is the error [Parse] returns for input it does not accept.
type ParseError struct {
	// Line is the 1-based line number, or 0 if the error is about the
	// file as a whole (for example, no Interface section).
	Line int
	// Key is the canonical name of the key on that line (or the key as
	// written if it is unknown); empty for a section header or a line
	// that is not key = value.
	Key string
	// Value is the offending value, or the line itself when Key is empty.
	Value string
	// Reason says what is wrong.
	Reason string
	// Err is a sentinel such as [ErrInvalidKey], or nil.
	Err error
}

// Error returns a message of the form
// "wgconfig: line 7: Endpoint "vpn.example.com": missing port".
func (e *ParseError) Error() string {
	s := "wgconfig: "
	if e.Line > 0 {
		s += fmt.Sprintf("line %d: ", e.Line)
	}
	switch {
	case e.Key != "" && e.Value != "":
		s += fmt.Sprintf("%s %q: ", e.Key, e.Value)
	case e.Key != "":
		s += e.Key + ": "
	case e.Value != "":
		s += fmt.Sprintf("%q: ", e.Value)
	}
	return s + e.Reason
}

// Unwrap returns e.Err.
func (e *ParseError) Unwrap() error { return e.Err }

// ConfigError is the error validation returns ([Config.Validate],
// [Config.MarshalText], [ClientConfig], [ServerConfig]): Field names the
// field ("Peers[2].Endpoint" or, for the builders, "Endpoint"), Value the
// offending value, Reason why.
type ConfigError struct {
	Field  string
	Value  string
	Reason string
	// Err is a sentinel such as [ErrInvalidKey], or nil.
	Err error
}

// Error returns a message of the form
// "wgconfig: invalid Peers[0].Endpoint "vpn.example.com": missing port".
func (e *ConfigError) Error() string {
	if e.Value != "" {
		return fmt.Sprintf("wgconfig: invalid %s %q: %s", e.Field, e.Value, e.Reason)
	}
	return fmt.Sprintf("wgconfig: invalid %s: %s", e.Field, e.Reason)
}

// Unwrap returns e.Err.
func (e *ConfigError) Unwrap() error { return e.Err }
