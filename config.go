package warren

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/warrenvpn/warren/forward"
)

// TransportMode selects which transports a Server runs.
type TransportMode string

// Transport modes. TransportAll and TransportBoth run every transport this
// build has; the WebSocket transport is always among them.
const (
	TransportAll       TransportMode = "all"
	TransportBoth      TransportMode = "both"
	TransportWebSocket TransportMode = "websocket"
	TransportQUIC      TransportMode = "quic"
	TransportWireGuard TransportMode = "wireguard"
)

// ForwardingMode selects the forward.Engine that carries client packets onward.
type ForwardingMode string

// Forwarding modes.
const (
	// ForwardTesting counts packets and lets a test read and inject them
	// (forward/testing).
	ForwardTesting ForwardingMode = "testing"
	// ForwardSocket is the userspace NAT on gVisor netstack (forward/netstack):
	// client traffic leaves the hub as ordinary sockets, no root needed. It
	// is the hub's default.
	ForwardSocket ForwardingMode = "socket"
	// ForwardNetstack is an alias of ForwardSocket on the hub; on a client it
	// is a userspace stack on the client's tunnel address for Client.Dial and
	// Client.Listen. It is the client's default.
	ForwardNetstack ForwardingMode = "netstack"
	// ForwardTUN is a kernel TUN device (forward/tun): Linux, CAP_NET_ADMIN.
	// On the hub, the destination policy and enableNat's masquerade are
	// nftables rules in a table of Warren's own; on a client, the device
	// holds the assigned address and the hub's subnet (and tunRoutes) are
	// routed into it, so ordinary sockets of the host use the tunnel.
	ForwardTUN ForwardingMode = "tun"
)

// ClientTransport selects how a Client reaches its hub.
type ClientTransport string

// Client transports.
const (
	ClientAuto      ClientTransport = "auto"
	ClientWebSocket ClientTransport = "websocket"
	ClientQUIC      ClientTransport = "quic"
	ClientWireGuard ClientTransport = "wireguard"
)

// ExportFormat selects the form ExportClientConfig returns.
type ExportFormat string

// Export formats.
const (
	// ExportNative is the client's ClientConfig as JSON, without secrets.
	ExportNative ExportFormat = "native"
	// ExportWireGuard is a standard WireGuard .conf.
	ExportWireGuard ExportFormat = "wireguard"
)

// Defaults.
const (
	DefaultMTU = 1420
	// keepaliveInterval is announced to clients in the server hello.
	keepaliveInterval = 25 * time.Second
	// deadPeerTimeout drops a session that has sent nothing for this long.
	deadPeerTimeout = 180 * time.Second
	// handshakeTimeout bounds a connection's time from accept to an authenticated session.
	handshakeTimeout = 10 * time.Second
)

// WGPeer is a static WireGuard peer that is not a registered client.
type WGPeer struct {
	PublicKey           Key            `json:"publicKey"`
	AllowedIPs          []netip.Prefix `json:"allowedIps"`
	Endpoint            string         `json:"endpoint,omitempty"`
	PersistentKeepalive int            `json:"persistentKeepalive,omitempty"`
}

// DestinationPolicy decides, server-wide, where client traffic may go: the block
// list first, then the allow list passes untouched, then Default applies.
type DestinationPolicy struct {
	// Default is "allow", "block" or "forceTarget".
	Default string `json:"default"`
	// Target is the address forceTarget rewrites destinations to.
	Target    string   `json:"target,omitempty"`
	AllowList []string `json:"allowList,omitempty"`
	BlockList []string `json:"blockList,omitempty"`
}

// ServerConfig configures a Server. The zero value of every optional field
// selects its documented default.
type ServerConfig struct {
	// ListenAddr is the WebSocket/TLS listener, e.g. "0.0.0.0:443"; port 0
	// picks a free port (Server.Addr says which). Empty: the hub has no
	// listener of its own, and its WebSocket endpoint is served only by
	// another HTTP server through Server.WebSocketHandler; PublicEndpoint is
	// then required, and a transportMode that runs QUIC needs
	// QUICListenAddr and a certificate (TLSCertFile or TLSConfig).
	ListenAddr string `json:"listenAddr"`
	// QUICListenAddr is the QUIC listener; empty: ListenAddr's host and port.
	QUICListenAddr string `json:"quicListenAddr,omitempty"`
	// PrivateKey is the hub's Noise static key. Required.
	PrivateKey Key `json:"privateKey"`
	// PublicKey is derived from PrivateKey when empty; when set it must match.
	PublicKey Key `json:"publicKey"`
	// Subnet is the tunnel subnet, e.g. 10.8.0.0/24; the hub is its first host. Required.
	Subnet netip.Prefix `json:"subnet"`
	// TransportMode: all (default) | both | websocket | quic | wireguard.
	// all and both run WebSocket and QUIC, and WireGuard when WGPrivateKey
	// is set.
	TransportMode TransportMode `json:"transportMode,omitempty"`
	// ForwardingMode: socket (default; netstack is an alias) | testing | tun.
	// Ignored when Forwarder is set.
	ForwardingMode ForwardingMode `json:"forwardingMode,omitempty"`
	// TUNName is the TUN device's name in forwardingMode tun (at most 15
	// bytes of letters, digits, '_', '.' and '-'); empty: warren0. Give two
	// hubs or clients on one host different names. The nftables table is
	// "inet warren_<tunName>"; a leftover device or table of that name (a
	// killed run's) is replaced at Start.
	TUNName string `json:"tunName,omitempty"`
	// TUNHealthCheckMs is how often, in forwardingMode tun, the hub checks
	// that its nftables rules are all there and re-applies them (with an
	// Error event) if someone removed them; 0: 60000, otherwise 100-86400000.
	TUNHealthCheckMs int `json:"tunHealthCheckMs,omitempty"`
	// WGPrivateKey is the hub's WireGuard key. WireGuard runs when it is set
	// and TransportMode is all, both or wireguard (which requires it).
	WGPrivateKey Key `json:"wgPrivateKey"`
	// WGListenPort is the WireGuard UDP port (all addresses); 0 picks a free
	// port (Server.WGAddr says which). WireGuard's usual port is 51820.
	WGListenPort int `json:"wgListenPort,omitempty"`
	// WGPeers are extra static WireGuard peers.
	WGPeers []WGPeer `json:"wgPeers,omitempty"`
	// EnableNAT lets client traffic leave the tunnel subnet: in socket mode
	// the userspace NAT opens sockets from the hub's host to destinations
	// outside Subnet, subject to DestinationPolicy; in tun mode the kernel
	// masquerades the subnet out of the default route's interface and IP
	// forwarding is turned on (and back off at Close if it was off). false (the default):
	// nothing leaves the subnet, on every engine; packets to destinations
	// outside it are dropped and counted as policy drops. Clients still reach
	// each other and the hub's own address (Server.Listen) either way.
	EnableNAT bool `json:"enableNat,omitempty"`
	// DNS servers announced to clients.
	DNS []netip.Addr `json:"dns,omitempty"`
	// MTU is the tunnel MTU announced to clients; 0: 1420.
	MTU int `json:"mtu,omitempty"`
	// PublicEndpoint is the host[:port] written into client bundles; empty:
	// the bound listener address. It may also be a URL,
	// "wss://host[:port]/path", written into bundles as the serverUrl as it
	// is: the route of another HTTP server that serves
	// Server.WebSocketHandler. QUIC and WireGuard endpoints take its host.
	PublicEndpoint string `json:"publicEndpoint,omitempty"`
	// ProxyProtocol reads a PROXY protocol v2 header (HAProxy's
	// send-proxy-v2) on every WebSocket connection and takes its source,
	// IPv4 or IPv6, as the client's address for connectionIpBlockList, the
	// client's ipAllowList / ipBlockList and ClientInfo.RemoteAddr. It
	// requires ProxyProtocolTrustedSources, and a transportMode that runs
	// the WebSocket listener: QUIC and WireGuard are UDP, which the PROXY
	// protocol does not front (with transportMode all or both they take
	// clients directly). A header with the LOCAL command (HAProxy's
	// check-send-proxy health checks) is accepted as the proxy's own
	// connection and counted in Statistics.ProxyLocal, not as an error.
	// Default false.
	ProxyProtocol bool `json:"proxyProtocol,omitempty"`
	// ProxyProtocolTrustedSources are the proxies allowed to send PROXY
	// headers: IP addresses and CIDR prefixes (10.0.0.5, 10.0.1.0/24,
	// 2001:db8::/64). With ProxyProtocol, a connection from any other TCP
	// peer is refused at accept and counted in Statistics.ProxyUntrusted.
	// Required with ProxyProtocol (0.0.0.0/0 and ::/0 trust every peer, and
	// let anyone who reaches the port claim any address); refused without it.
	ProxyProtocolTrustedSources []string `json:"proxyProtocolTrustedSources,omitempty"`
	// Bounds on a connection before it authenticates, in milliseconds
	// (integers in JSON too): 0 selects the default, otherwise 100-60000.
	// See package transport/ws for the per-source and total budget that
	// closes the oldest unauthenticated connection to make room.
	//
	// ProxyProtocolV1 also accepts the text PROXY v1 header; false
	// (default): only v2, and a v1 header is refused.
	ProxyProtocolV1 bool `json:"proxyProtocolV1,omitempty"`
	// ProxyHeaderTimeoutMs: the PROXY header must arrive within this long
	// of TCP accept; 0: 5000.
	ProxyHeaderTimeoutMs int `json:"proxyHeaderTimeoutMs,omitempty"`
	// FirstByteTimeoutMs closes a WebSocket connection that sends nothing
	// within this long of TCP accept; 0: 3000.
	FirstByteTimeoutMs int `json:"firstByteTimeoutMs,omitempty"`
	// PreAuthTimeoutMs bounds each phase before a session exists: the TLS
	// handshake and WebSocket upgrade from TCP accept (or the QUIC
	// handshake, and the wait for the client's stream), then the Noise
	// handshake; 0: 10000.
	PreAuthTimeoutMs int `json:"preAuthTimeoutMs,omitempty"`
	// Keepalive tunes link measurement and dead-peer detection of every
	// WebSocket and QUIC session; the zero value takes the defaults.
	Keepalive KeepaliveConfig `json:"keepalive,omitzero"`
	// ConnectionIPBlockList refuses connections from these sources before any
	// cryptography (ACL syntax).
	ConnectionIPBlockList []string `json:"connectionIpBlockList,omitempty"`
	// DestinationPolicy decides where traffic leaving the tunnel may go (with
	// EnableNAT; without it nothing leaves); nil allows every destination
	// except the hub's loopback addresses.
	DestinationPolicy *DestinationPolicy `json:"destinationPolicy,omitempty"`
	// SocketForwardProxyProtocol starts each outbound TCP connection of the
	// userspace NAT with a PROXY v2 header.
	SocketForwardProxyProtocol bool `json:"socketForwardProxyProtocol,omitempty"`
	// Clients seed the registry: entries not yet in Store are added to it.
	Clients []ClientEntry `json:"clients,omitempty"`
	// TLSCertFile and TLSKeyFile name a PEM certificate and key; both or
	// neither. Neither: a self-signed certificate made at Start, pinned in
	// client bundles by its hash.
	TLSCertFile string `json:"tlsCertFile,omitempty"`
	TLSKeyFile  string `json:"tlsKeyFile,omitempty"`

	// TLSConfig, when set, is used as is for the listener (it must hold a certificate).
	TLSConfig *tls.Config `json:"-"`
	// BundleServerCA is PEM text of the CA certificate(s) that verify the
	// certificate clients are shown: the hub's TLSCertFile (or TLSConfig), or
	// that of the HTTP server that serves Server.WebSocketHandler, such as
	// Caddy's internal CA (tls internal). Every bundle carries it as
	// ClientConfig.ServerCA, so a client trusts that CA with nothing added by
	// hand. In a config file it may be "file:PATH" or "${NAME}", read as a
	// key reference is. Not with a self-signed certificate of the hub's own
	// (a listener or QUIC without tlsCertFile), which bundles pin instead.
	// Empty: bundles carry that pin, or nothing (the system roots verify).
	BundleServerCA string `json:"bundleServerCa,omitempty"`
	// Store persists the registry; nil: memory only. A store that several
	// hubs share (etcdstore, or one MemoryStore in one process) must be a
	// VersionedStore, so their writes never undo each other, and a
	// WatchableStore, so each hub follows the others' changes (see
	// registry_watch.go).
	Store Store `json:"-"`
	// Forwarder overrides ForwardingMode.
	Forwarder forward.Engine `json:"-"`
	// Logger receives the server's logs; nil: discarded.
	Logger *slog.Logger `json:"-"`
}

// ClientConfig configures a Client. CreateClient returns one ready to use.
type ClientConfig struct {
	// ServerURL is the hub: "wss://host:port" (WebSocket) or "host:port" (QUIC). Required.
	ServerURL string `json:"serverUrl"`
	// QUICAddr is the hub's QUIC address, for transport auto.
	QUICAddr string `json:"quicAddr,omitempty"`
	// ServerPublicKey is the hub's Noise static public key. Required.
	ServerPublicKey Key `json:"serverPublicKey"`
	// PrivateKey is the client's Noise static key. Required.
	PrivateKey Key `json:"privateKey"`
	// PublicKey is derived from PrivateKey when empty; when set it must match.
	PublicKey Key `json:"publicKey"`
	// Transport: websocket (default) | auto (QUIC, then WebSocket within 3 s)
	// | quic | wireguard.
	Transport ClientTransport `json:"transport,omitempty"`
	// ServerCertHash pins the hub's self-signed certificate:
	// base64(sha256(leaf DER)). Empty: WebPKI verification.
	ServerCertHash string `json:"serverCertHash,omitempty"`
	// ServerCA is PEM text of the CA certificate(s) that verify the hub's
	// certificate through WebPKI in place of the system roots: the root of
	// a private CA, such as Caddy's internal CA (tls internal) for a hub
	// served through Server.WebSocketHandler. Empty: TLSConfig's RootCAs,
	// or the system roots. Not with ServerCertHash (a pin replaces
	// verification) nor with TLSConfig.RootCAs. In a config file it may be
	// "file:PATH" or "${NAME}", read as a key reference is. Bundles carry
	// the hub's ServerConfig.BundleServerCA here.
	ServerCA string `json:"serverCa,omitempty"`
	// ForwardingMode: netstack (default) | testing | tun. Ignored when
	// Forwarder is set. tun (Linux, CAP_NET_ADMIN) puts the assigned
	// address on a kernel TUN device and routes the hub's subnet, TUNRoutes
	// and (with transport wireguard) WGAllowedIPs into it: the host's own
	// sockets reach the tunnel, and Dial, Listen and ListenPacket are not
	// available (use the net package).
	ForwardingMode ForwardingMode `json:"forwardingMode,omitempty"`
	// TUNName is the TUN device's name in forwardingMode tun, as
	// ServerConfig.TUNName; empty: warren0.
	TUNName string `json:"tunName,omitempty"`
	// TUNRoutes are further prefixes routed into the TUN device in
	// forwardingMode tun, on any transport: destinations the hub reaches
	// (with enableNat) beyond its subnet. A default route (0.0.0.0/0,
	// ::/0), here or with transport wireguard in WGAllowedIPs, makes a full
	// tunnel, built as wg-quick builds it: the default route goes into
	// routing table TUNFwMark, policy rules send every packet there except
	// those marked TUNFwMark (the client's own sockets to the hub carry
	// that mark, so the tunnel does not carry itself) and main's more
	// specific routes (the LAN) still apply. A default route of the family
	// the tunnel does not carry is made unreachable: that traffic fails
	// rather than leaving outside the tunnel. Close removes it all; a
	// killed run's rules are replaced at the next Connect. A prefix other
	// than /0 that holds the hub's own address would route the connection
	// to the hub into the tunnel: leave it out.
	TUNRoutes []netip.Prefix `json:"tunRoutes,omitempty"`
	// TUNFwMark is a full tunnel's firewall mark (SO_MARK on the sockets to
	// the hub) and the number of its routing table; 0: 0x5752. Set only
	// with a full tunnel (see TUNRoutes).
	TUNFwMark uint32 `json:"tunFwMark,omitempty"`
	// TUNHealthCheckMs is how often a full tunnel (see TUNRoutes) checks
	// that its policy rules, routes and nftables table are all there and
	// re-applies them (with an Error event) if someone removed them, as
	// ServerConfig.TUNHealthCheckMs does for the hub; 0: 60000, otherwise
	// 100-86400000. Set only with a full tunnel: without one the client
	// adds no rules to check.
	TUNHealthCheckMs int `json:"tunHealthCheckMs,omitempty"`
	// ClientDefinedClientTags are sent to the hub in the handshake.
	ClientDefinedClientTags []string `json:"clientDefinedClientTags,omitempty"`

	// WireGuard settings, used by transport wireguard.
	WGPrivateKey          Key            `json:"wgPrivateKey"`
	WGAddress             netip.Prefix   `json:"wgAddress,omitzero"`
	WGEndpoint            string         `json:"wgEndpoint,omitempty"`
	WGServerPublicKey     Key            `json:"wgServerPublicKey"`
	WGAllowedIPs          []netip.Prefix `json:"wgAllowedIps,omitempty"`
	WGPersistentKeepalive int            `json:"wgPersistentKeepalive,omitempty"`

	// Keepalive tunes link measurement and dead-peer detection; the zero
	// value takes the defaults.
	Keepalive KeepaliveConfig `json:"keepalive,omitzero"`

	// Reconnect says how the client comes back after losing its session.
	// The zero value reconnects forever with backoff from 500 ms to 30 s.
	Reconnect ReconnectConfig `json:"reconnect,omitzero"`

	// DNS and MTU the client expects; the hub's server hello overrides them.
	DNS []netip.Addr `json:"dns,omitempty"`
	MTU int          `json:"mtu,omitempty"`

	// TLSConfig is a base TLS configuration (RootCAs, ServerName) for WebPKI verification.
	TLSConfig *tls.Config `json:"-"`
	// Forwarder overrides ForwardingMode.
	Forwarder forward.Engine `json:"-"`
	// Logger receives the client's logs; nil: discarded.
	Logger *slog.Logger `json:"-"`
}

var clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// validClientID reports why id is not a valid client ID, or "".
func validClientID(id string) string {
	if id == "" {
		return "must not be empty"
	}
	if !clientIDPattern.MatchString(id) {
		return "must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
	}
	return ""
}

// runsWS reports whether the configuration runs the WebSocket transport.
func (c *ServerConfig) runsWS() bool {
	switch c.TransportMode {
	case TransportAll, TransportBoth, TransportWebSocket:
		return true
	}
	return false
}

// needsTLS reports whether the hub presents a certificate of its own: it
// runs a WebSocket listener or QUIC.
func (c *ServerConfig) needsTLS() bool {
	return c.ListenAddr != "" && c.runsWS() || c.runsQUIC()
}

// runsQUIC reports whether the configuration runs the QUIC transport.
func (c *ServerConfig) runsQUIC() bool {
	switch c.TransportMode {
	case TransportAll, TransportBoth, TransportQUIC:
		return true
	}
	return false
}

// normalize fills defaults and validates c.
func (c *ServerConfig) normalize() error {
	if c.ListenAddr != "" {
		if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
			return configErr("listenAddr", c.ListenAddr, err.Error())
		}
	}
	if c.QUICListenAddr != "" {
		if _, _, err := net.SplitHostPort(c.QUICListenAddr); err != nil {
			return configErr("quicListenAddr", c.QUICListenAddr, err.Error())
		}
	}
	if c.PrivateKey.IsZero() {
		return configErr("privateKey", "", "required (the hub's Noise static key; see GenerateKeypair)")
	}
	pub := c.PrivateKey.PublicKey()
	if c.PublicKey.IsZero() {
		c.PublicKey = pub
	} else if c.PublicKey != pub {
		return configErr("publicKey", c.PublicKey.String(), "does not match privateKey")
	}
	if err := validSubnet("subnet", c.Subnet); err != nil {
		return err
	}
	switch c.TransportMode {
	case "":
		c.TransportMode = TransportAll
	case TransportAll, TransportBoth, TransportWebSocket:
	case TransportWireGuard:
		if c.WGPrivateKey.IsZero() {
			return configErr("wgPrivateKey", "", "required with transportMode wireguard (see GenerateWGKeypair)")
		}
	case TransportQUIC:
	default:
		return configErr("transportMode", string(c.TransportMode), "must be all, both, websocket, quic or wireguard")
	}
	if c.Forwarder == nil {
		switch c.ForwardingMode {
		case "", ForwardNetstack:
			c.ForwardingMode = ForwardSocket
		case ForwardTesting, ForwardSocket, ForwardTUN:
		default:
			return configErr("forwardingMode", string(c.ForwardingMode), "must be tun, socket, netstack or testing")
		}
	}
	if err := validTUNName("tunName", c.TUNName); err != nil {
		return err
	}
	switch {
	case c.TUNHealthCheckMs == 0:
		c.TUNHealthCheckMs = defaultTUNHealthCheckMs
	case !validTUNHealthCheckMs(c.TUNHealthCheckMs):
		return configErr("tunHealthCheckMs", fmt.Sprint(c.TUNHealthCheckMs), tunHealthCheckRange)
	}
	if c.PublicEndpoint != "" {
		if strings.Contains(c.PublicEndpoint, "://") {
			if why := checkWSURL(c.PublicEndpoint); why != "" {
				return configErr("publicEndpoint", c.PublicEndpoint, why+" (host[:port] or wss://host[:port]/path written into bundles)")
			}
		} else if why := checkHostPort(c.PublicEndpoint, false); why != "" {
			return configErr("publicEndpoint", c.PublicEndpoint, why+" (host[:port] written into bundles, e.g. vpn.example.com:443)")
		}
	}
	if c.ListenAddr == "" {
		// The WebSocket endpoint, if any, is another HTTP server's
		// (Server.WebSocketHandler): only that server knows its address.
		if c.PublicEndpoint == "" {
			return configErr("publicEndpoint", "", "required when listenAddr is empty: the address clients reach the hub at (wss://host[:port]/path of the route that serves Server.WebSocketHandler)")
		}
		if c.runsQUIC() && c.QUICListenAddr == "" {
			return configErr("quicListenAddr", "", "required when listenAddr is empty and transportMode runs QUIC (or set transportMode websocket)")
		}
		if c.runsQUIC() && c.TLSCertFile == "" && c.TLSConfig == nil {
			return configErr("tlsCertFile", "", "required (or TLSConfig) when listenAddr is empty and transportMode runs QUIC: QUIC must present a certificate that clients verify like the WebSocket server's, not a pinned self-signed one (or set transportMode websocket)")
		}
	}
	if c.WGListenPort < 0 || c.WGListenPort > 65535 {
		return configErr("wgListenPort", strconv.Itoa(c.WGListenPort), "must be a port number 0-65535")
	}
	if err := validMTU("mtu", &c.MTU, c.Subnet.Addr().Is6()); err != nil {
		return err
	}
	for i, a := range c.DNS {
		if !a.IsValid() {
			return configErr(fmt.Sprintf("dns[%d]", i), a.String(), "not an IP address")
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return configErr("tlsCertFile", c.TLSCertFile, "tlsCertFile and tlsKeyFile must be set together")
	}
	if c.BundleServerCA != "" {
		if _, err := parseServerCA(c.BundleServerCA); err != nil {
			return configErr("bundleServerCa", leafText([]byte(c.BundleServerCA)), err.Error()+` ("file:PATH" and "${NAME}" are read only from a config file)`)
		}
		if c.needsTLS() && c.TLSCertFile == "" && c.TLSConfig == nil {
			return configErr("bundleServerCa", "", "the hub's own listener (listenAddr, or QUIC) has a self-signed certificate that bundles pin, which no CA verifies: set tlsCertFile to a certificate this CA signed, or serve the hub through Server.WebSocketHandler with no listenAddr")
		}
	}
	policy, err := compilePolicy(c.DestinationPolicy)
	if err != nil {
		return err
	}
	if err := policy.checkTarget(c.Subnet); err != nil {
		return err
	}
	if _, err := compileBlockList("connectionIpBlockList", c.ConnectionIPBlockList); err != nil {
		return err
	}
	if _, err := c.checkProxyProtocol(); err != nil {
		return err
	}
	if err := c.checkPreAuth(); err != nil {
		return err
	}
	if err := c.Keepalive.check("keepalive"); err != nil {
		return err
	}
	seen := make(map[string]int, len(c.Clients))
	for i, e := range c.Clients {
		if j, dup := seen[e.ClientID]; dup {
			return configErr(fmt.Sprintf("clients[%d].clientId", i), e.ClientID, fmt.Sprintf("already used by clients[%d]", j))
		}
		seen[e.ClientID] = i
	}
	return nil
}

// reservedPrefixes are ranges a tunnel subnet must not overlap: their
// addresses mean something else to every host, so the hub could neither own
// nor route them (and a subnet holding them all, such as 0.0.0.0/0, would
// make every destination "inside" and bypass the destination policy).
var reservedPrefixes = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "the unspecified (\"this network\") range"},
	{netip.MustParsePrefix("127.0.0.0/8"), "the loopback range"},
	{netip.MustParsePrefix("169.254.0.0/16"), "the link-local range"},
	{netip.MustParsePrefix("224.0.0.0/4"), "the multicast range"},
	{netip.MustParsePrefix("255.255.255.255/32"), "the broadcast address"},
	{netip.MustParsePrefix("::/128"), "the unspecified address"},
	{netip.MustParsePrefix("::1/128"), "the loopback address"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "the IPv4-mapped range"},
	{netip.MustParsePrefix("fe80::/10"), "the link-local range"},
	{netip.MustParsePrefix("ff00::/8"), "the multicast range"},
}

func validSubnet(field string, p netip.Prefix) error {
	if !p.IsValid() {
		return configErr(field, "", "required (a CIDR prefix such as 10.8.0.0/24)")
	}
	if p != p.Masked() {
		return configErr(field, p.String(), "host bits set; did you mean "+p.Masked().String()+"?")
	}
	if p.Addr().Is4In6() {
		return configErr(field, p.String(), "an IPv4-mapped prefix; write the IPv4 form")
	}
	if p.Addr().Is4() && p.Bits() > 30 || p.Addr().Is6() && p.Bits() > 126 {
		return configErr(field, p.String(), "too small: needs room for the hub and at least one client")
	}
	for _, r := range reservedPrefixes {
		if p.Overlaps(r.prefix) {
			return configErr(field, p.String(), "overlaps "+r.what+" "+r.prefix.String()+"; use a private unicast range such as 10.8.0.0/24 or fd00:8::/64")
		}
	}
	return nil
}

// checkHostPort says why s is not a host[:port] a client can dial, or "". A
// port, which needPort requires, must be a number 1-65535; an IPv6 address is
// written in brackets.
func checkHostPort(s string, needPort bool) string {
	form := "host[:port]"
	if needPort {
		form = "host:port"
	}
	if strings.Contains(s, "://") {
		return "must be " + form + ", without a scheme"
	}
	if strings.ContainsAny(s, "/?#@ \t\r\n") {
		return "must be " + form + ", without a path, query, user or spaces"
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if needPort {
			return "must be " + form + ": " + err.Error()
		}
		host = s
		if h, ok := strings.CutPrefix(s, "["); ok {
			if h, ok = strings.CutSuffix(h, "]"); !ok {
				return "unbalanced brackets"
			}
			if a, err := netip.ParseAddr(h); err != nil || !a.Is6() {
				return "brackets hold only an IPv6 address"
			}
			return checkHost(h)
		}
		if strings.Contains(s, ":") {
			return "an IPv6 address needs brackets, e.g. [2001:db8::1]:443"
		}
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "port must be a number 1-65535"
	}
	return checkHost(host)
}

// checkHost says why host is neither an IP address a client can dial nor a
// DNS name, or "".
func checkHost(host string) string {
	if host == "" {
		return "no host"
	}
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return "not an address a client can connect to"
		}
		return ""
	}
	name := strings.TrimSuffix(host, ".")
	if name == "" || len(name) > 253 {
		return "not a host name"
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "not a host name: labels are 1-63 characters and do not start or end with '-'"
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return "not a host name: letters, digits, '-' and '.' only"
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "not a valid IP address"
	}
	return ""
}

// checkWSURL says why s is not a WebSocket URL a client can dial, or "".
func checkWSURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "must be wss://host[:port][/path]"
	case u.Scheme != "wss" || u.Opaque != "":
		return "must be wss://host[:port][/path]"
	case u.User != nil:
		return "must not hold a user or password"
	case u.Host == "":
		return "no host: must be wss://host[:port][/path]"
	}
	return checkHostPort(u.Host, false)
}

func validMTU(field string, mtu *int, v6 bool) error {
	if *mtu == 0 {
		*mtu = DefaultMTU
	}
	lo := 576
	if v6 {
		lo = 1280
	}
	if *mtu < lo || *mtu > 65535 {
		return configErr(field, strconv.Itoa(*mtu), fmt.Sprintf("must be between %d and 65535", lo))
	}
	return nil
}

// normalize fills defaults and validates c.
func (c *ClientConfig) normalize() error {
	if c.Transport == "" {
		c.Transport = ClientWebSocket
	}
	switch c.Transport {
	case ClientWebSocket, ClientAuto:
		if c.ServerURL == "" {
			return configErr("serverUrl", "", "required (wss://host:port)")
		}
		if why := checkWSURL(c.ServerURL); why != "" {
			return configErr("serverUrl", c.ServerURL, why)
		}
		if c.Transport == ClientAuto && c.QUICAddr != "" {
			if why := checkHostPort(c.QUICAddr, true); why != "" {
				return configErr("quicAddr", c.QUICAddr, why)
			}
		}
	case ClientWireGuard:
		if err := c.checkWG(); err != nil {
			return err
		}
	case ClientQUIC:
		if c.ServerURL == "" && c.QUICAddr == "" {
			return configErr("quicAddr", "", "required with transport quic (host:port), or set serverUrl")
		}
		if c.QUICAddr != "" {
			if why := checkHostPort(c.QUICAddr, true); why != "" {
				return configErr("quicAddr", c.QUICAddr, why)
			}
		} else {
			// Without quicAddr, Client.quicAddr dials ServerURL's host and port.
			why := ""
			if strings.Contains(c.ServerURL, "://") {
				why = checkWSURL(c.ServerURL)
				if u, _ := url.Parse(c.ServerURL); why == "" && u.Port() == "" {
					why = "QUIC needs a port: write wss://host:port or set quicAddr"
				}
			} else {
				why = checkHostPort(c.ServerURL, true)
			}
			if why != "" {
				return configErr("serverUrl", c.ServerURL, why)
			}
		}
	default:
		return configErr("transport", string(c.Transport), "must be auto, websocket, quic or wireguard")
	}
	if c.Transport != ClientWireGuard {
		if c.ServerPublicKey.IsZero() {
			return configErr("serverPublicKey", "", "required (the hub's Noise public key)")
		}
		if c.PrivateKey.IsZero() {
			return configErr("privateKey", "", "required (the client's Noise static key)")
		}
		pub := c.PrivateKey.PublicKey()
		if c.PublicKey.IsZero() {
			c.PublicKey = pub
		} else if c.PublicKey != pub {
			return configErr("publicKey", c.PublicKey.String(), "does not match privateKey")
		}
	}
	if c.ServerCA != "" {
		if _, err := parseServerCA(c.ServerCA); err != nil {
			return configErr("serverCa", leafText([]byte(c.ServerCA)), err.Error())
		}
		if c.ServerCertHash != "" {
			return configErr("serverCa", "", "set serverCa or serverCertHash, not both (a pin replaces verification)")
		}
		if c.TLSConfig != nil && c.TLSConfig.RootCAs != nil {
			return configErr("serverCa", "", "set serverCa or TLSConfig.RootCAs, not both")
		}
	}
	if c.Forwarder == nil {
		switch c.ForwardingMode {
		case "", ForwardSocket:
			c.ForwardingMode = ForwardNetstack
		case ForwardTesting, ForwardNetstack, ForwardTUN:
		default:
			return configErr("forwardingMode", string(c.ForwardingMode), "must be tun, netstack or testing")
		}
	}
	if err := c.checkTUN(); err != nil {
		return err
	}
	if c.MTU != 0 {
		if err := validMTU("mtu", &c.MTU, false); err != nil {
			return err
		}
	}
	for i, a := range c.DNS {
		if !a.IsValid() {
			return configErr(fmt.Sprintf("dns[%d]", i), a.String(), "not an IP address")
		}
	}
	if err := c.Reconnect.check(); err != nil {
		return err
	}
	if len(c.ClientDefinedClientTags) > 32 {
		return configErr("clientDefinedClientTags", "", "at most 32 tags")
	}
	for i, t := range c.ClientDefinedClientTags {
		if t == "" || len(t) > 64 {
			return configErr(fmt.Sprintf("clientDefinedClientTags[%d]", i), t, "must be 1-64 bytes")
		}
	}
	if err := c.Keepalive.check("keepalive"); err != nil {
		return err
	}
	return nil
}

// parseServerCA parses ClientConfig.ServerCA and
// ServerConfig.BundleServerCA: PEM blocks of certificates,
// at least one, and nothing else.
func parseServerCA(text string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	rest := []byte(text)
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %q, want CERTIFICATE", n+1, b.Type)
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 || len(strings.TrimSpace(string(rest))) > 0 {
		return nil, errors.New("want PEM certificates (-----BEGIN CERTIFICATE-----) and nothing else")
	}
	return pool, nil
}

// LoadServerConfig reads a ServerConfig from a JSON file. It is strict at every
// level: an unknown (misspelt) field, a field given twice, a value of the wrong
// type or data after the object is a *ConfigError naming the field's path,
// such as "clients[3].security.ipBlockLst". NewServer validates the values.
//
// A key field may hold "${NAME}" or "file:PATH" instead of the key: the key
// is then read from that environment variable or file (a relative PATH is
// relative to the config file's directory), as the Key type describes. The
// returned config holds the key itself; Save writes it into the file.
func LoadServerConfig(path string) (ServerConfig, error) {
	var c ServerConfig
	err := loadJSON(path, &c)
	return c, err
}

// ParseServerConfig reads a ServerConfig from a JSON document as strictly as
// LoadServerConfig, for a program that holds the hub's config inside its own
// (the Caddy module's apps.warren). Key references ("${NAME}", "file:PATH")
// are resolved, a relative PATH against the working directory. NewServer
// validates the values.
func ParseServerConfig(data []byte) (ServerConfig, error) {
	var c ServerConfig
	err := decodeJSON("", data, &c, jsonWalk{keyRefs: true, dir: "."})
	return c, err
}

// Save writes c to path as indented JSON, atomically.
func (c ServerConfig) Save(path string) error { return saveJSON(path, c) }

// LoadClientConfig reads a ClientConfig from a JSON file, as strictly as
// LoadServerConfig, and resolves "${NAME}" and "file:PATH" key references
// as it does. NewClient validates the values.
func LoadClientConfig(path string) (ClientConfig, error) {
	var c ClientConfig
	err := loadJSON(path, &c)
	return c, err
}

// Save writes c to path as indented JSON, atomically. It holds the private key:
// the file is created with mode 0600.
func (c ClientConfig) Save(path string) error { return saveJSON(path, c) }

func loadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("warren: reading config: %w", err)
	}
	return decodeConfigFile(path, b, v)
}

func saveJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("warren: encoding config: %w", err)
	}
	return writeFileAtomic(path, append(b, '\n')) // os.CreateTemp makes it 0600
}
