package warren

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
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
	// ForwardTUN is a kernel TUN device.
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
	// picks a free port (Server.Addr says which). Required.
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
	// WGPrivateKey is the hub's WireGuard key. WireGuard runs when it is set
	// and TransportMode is all, both or wireguard (which requires it).
	WGPrivateKey Key `json:"wgPrivateKey"`
	// WGListenPort is the WireGuard UDP port (all addresses); 0 picks a free
	// port (Server.WGAddr says which). WireGuard's usual port is 51820.
	WGListenPort int `json:"wgListenPort,omitempty"`
	// WGPeers are extra static WireGuard peers.
	WGPeers []WGPeer `json:"wgPeers,omitempty"`
	// EnableNAT masquerades client traffic leaving a TUN device.
	EnableNAT bool `json:"enableNat,omitempty"`
	// DNS servers announced to clients.
	DNS []netip.Addr `json:"dns,omitempty"`
	// MTU is the tunnel MTU announced to clients; 0: 1420.
	MTU int `json:"mtu,omitempty"`
	// PublicEndpoint is the host[:port] written into client bundles; empty:
	// the bound listener address.
	PublicEndpoint string `json:"publicEndpoint,omitempty"`
	// ProxyProtocol reads a PROXY protocol header on every WebSocket connection.
	ProxyProtocol bool `json:"proxyProtocol,omitempty"`
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
	// ConnectionIPBlockList refuses connections from these sources before any
	// cryptography (ACL syntax).
	ConnectionIPBlockList []string `json:"connectionIpBlockList,omitempty"`
	// DestinationPolicy decides where traffic leaving the tunnel may go; nil
	// allows every destination except the hub's loopback addresses.
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
	// Store persists the registry; nil: memory only.
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
	// ForwardingMode: netstack (default) | testing | tun. Ignored when Forwarder is set.
	ForwardingMode ForwardingMode `json:"forwardingMode,omitempty"`
	// ClientDefinedClientTags are sent to the hub in the handshake.
	ClientDefinedClientTags []string `json:"clientDefinedClientTags,omitempty"`

	// WireGuard settings, used by transport wireguard.
	WGPrivateKey          Key            `json:"wgPrivateKey"`
	WGAddress             netip.Prefix   `json:"wgAddress,omitzero"`
	WGEndpoint            string         `json:"wgEndpoint,omitempty"`
	WGServerPublicKey     Key            `json:"wgServerPublicKey"`
	WGAllowedIPs          []netip.Prefix `json:"wgAllowedIps,omitempty"`
	WGPersistentKeepalive int            `json:"wgPersistentKeepalive,omitempty"`

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
	if c.ListenAddr == "" {
		return configErr("listenAddr", "", "required (host:port; port 0 picks a free port)")
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		return configErr("listenAddr", c.ListenAddr, err.Error())
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
		case ForwardTesting, ForwardSocket:
		case ForwardTUN:
			return configErr("forwardingMode", string(c.ForwardingMode), "the TUN engine is not built yet; use socket or testing")
		default:
			return configErr("forwardingMode", string(c.ForwardingMode), "must be tun, socket, netstack or testing")
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
	if _, err := compilePolicy(c.DestinationPolicy); err != nil {
		return err
	}
	if _, err := compileBlockList("connectionIpBlockList", c.ConnectionIPBlockList); err != nil {
		return err
	}
	if err := c.checkPreAuth(); err != nil {
		return err
	}
	return nil
}

func validSubnet(field string, p netip.Prefix) error {
	if !p.IsValid() {
		return configErr(field, "", "required (a CIDR prefix such as 10.8.0.0/24)")
	}
	if p != p.Masked() {
		return configErr(field, p.String(), "host bits set; did you mean "+p.Masked().String()+"?")
	}
	if p.Addr().Is4() && p.Bits() > 30 || p.Addr().Is6() && p.Bits() > 126 {
		return configErr(field, p.String(), "too small: needs room for the hub and at least one client")
	}
	return nil
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
		u, err := url.Parse(c.ServerURL)
		if err != nil {
			return configErr("serverUrl", c.ServerURL, err.Error())
		}
		if u.Scheme != "wss" || u.Host == "" {
			return configErr("serverUrl", c.ServerURL, "must be wss://host:port")
		}
	case ClientWireGuard:
		if err := c.checkWG(); err != nil {
			return err
		}
	case ClientQUIC:
		if c.ServerURL == "" && c.QUICAddr == "" {
			return configErr("quicAddr", "", "required with transport quic (host:port), or set serverUrl")
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
	if c.Forwarder == nil {
		switch c.ForwardingMode {
		case "", ForwardSocket:
			c.ForwardingMode = ForwardNetstack
		case ForwardTesting, ForwardNetstack:
		case ForwardTUN:
			return configErr("forwardingMode", string(c.ForwardingMode), "the TUN engine is not built yet; use netstack or testing")
		default:
			return configErr("forwardingMode", string(c.ForwardingMode), "must be tun, netstack or testing")
		}
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
	return nil
}

// LoadServerConfig reads a ServerConfig from a JSON file. Unknown fields are
// errors, so a misspelt name is not silently ignored.
func LoadServerConfig(path string) (ServerConfig, error) {
	var c ServerConfig
	err := loadJSON(path, &c)
	return c, err
}

// Save writes c to path as indented JSON, atomically.
func (c ServerConfig) Save(path string) error { return saveJSON(path, c) }

// LoadClientConfig reads a ClientConfig from a JSON file. Unknown fields are errors.
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
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("warren: config %s: %w", path, err)
	}
	return nil
}

func saveJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("warren: encoding config: %w", err)
	}
	return writeFileAtomic(path, append(b, '\n')) // os.CreateTemp makes it 0600
}
