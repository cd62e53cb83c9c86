package warren

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/warrenvpn/warren/telemetry"
)

// Status is the state of a Server or Client.
type Status string

// Statuses.
const (
	StatusStopped      Status = "stopped"
	StatusStarting     Status = "starting"
	StatusRunning      Status = "running"
	StatusConnecting   Status = "connecting"
	StatusHandshaking  Status = "handshaking"
	StatusReconnecting Status = "reconnecting"
	StatusConnected    Status = "connected"
	StatusDisconnected Status = "disconnected"
	StatusClosed       Status = "closed"
)

// ServerStatus describes a Server at one moment.
type ServerStatus struct {
	Status            Status    `json:"status"`
	Addr              string    `json:"addr,omitempty"`
	StartedAt         time.Time `json:"startedAt,omitzero"`
	ConnectedClients  int       `json:"connectedClients"`
	RegisteredClients int       `json:"registeredClients"`
	Transports        []string  `json:"transports,omitempty"`
	ForwardingMode    string    `json:"forwardingMode"`
}

// ClientInfo describes one live session.
type ClientInfo struct {
	ClientID                string         `json:"clientId"`
	AssignedIP              netip.Addr     `json:"assignedIp"`
	Transport               string         `json:"transport"`
	RemoteAddr              netip.AddrPort `json:"remoteAddr"`
	ConnectedSince          time.Time      `json:"connectedSince"`
	PublicKey               Key            `json:"publicKey"`
	ClientDefinedClientTags []string       `json:"clientDefinedClientTags,omitempty"`
	BytesIn                 uint64         `json:"bytesIn"`
	BytesOut                uint64         `json:"bytesOut"`
	PacketsIn               uint64         `json:"packetsIn"`
	PacketsOut              uint64         `json:"packetsOut"`
	// HubID is the hub that serves the session, when the hub's Store is
	// a FleetStore (etcdstore: its Config.HubID); empty otherwise. A
	// session another hub serves is listed from that hub's record: its
	// byte and packet counters and tags are not shared, and read zero.
	HubID string `json:"hubId,omitempty"`
}

// ConnectInfo is what a Client learns from the hub when it connects.
type ConnectInfo struct {
	AssignedIP netip.Prefix `json:"assignedIp"`
	Gateway    netip.Addr   `json:"gateway"`
	Transport  string       `json:"transport"`
	MTU        int          `json:"mtu"`
	DNS        []netip.Addr `json:"dns,omitempty"`
}

// Drops counts packets dropped, by reason.
type Drops struct {
	Spoofed   uint64 `json:"spoofed"`
	ACL       uint64 `json:"acl"`
	Policy    uint64 `json:"policy"`
	RateLimit uint64 `json:"rateLimit"`
	Oversized uint64 `json:"oversized"`
	NoRoute   uint64 `json:"noRoute"`
	Malformed uint64 `json:"malformed"`
	QueueFull uint64 `json:"queueFull"`
	// Replayed counts QUIC datagrams dropped by the replay window.
	Replayed uint64 `json:"replayed"`
}

// Statistics are cumulative counters. In means from clients (or from the hub,
// on a Client: toward the tunnel is Out).
type Statistics struct {
	BytesIn    uint64 `json:"bytesIn"`
	BytesOut   uint64 `json:"bytesOut"`
	PacketsIn  uint64 `json:"packetsIn"`
	PacketsOut uint64 `json:"packetsOut"`
	Drops      Drops  `json:"drops"`
	// Handshakes counts completed handshakes; HandshakesFailed those refused
	// (unknown key, replay, malformed, disabled, remote address not allowed;
	// on a Client, handshakes the hub refused or did not answer).
	Handshakes       uint64 `json:"handshakes"`
	HandshakesFailed uint64 `json:"handshakesFailed"`
	// ConnectionsRejected counts WebSocket and QUIC connections, and
	// WireGuard datagrams, refused by connectionIpBlockList or a bad PROXY
	// header, before any cryptography.
	ConnectionsRejected uint64 `json:"connectionsRejected"`
	// ProxyUntrusted counts WebSocket connections refused at accept because
	// proxyProtocol is on and their TCP peer is not in
	// proxyProtocolTrustedSources (counted in ConnectionsRejected too).
	ProxyUntrusted uint64 `json:"proxyUntrusted"`
	// ProxyLocal counts WebSocket connections that began with a PROXY
	// header with the LOCAL command: a proxy's health checks, which are
	// not errors, or connections the proxy makes for itself.
	ProxyLocal uint64 `json:"proxyLocal"`
	// EventsDropped counts events lost to subscribers that fell behind.
	EventsDropped uint64 `json:"eventsDropped"`
	// OversizedOnStream counts packets too large for a QUIC datagram that
	// were carried on the session's stream instead.
	OversizedOnStream uint64 `json:"oversizedOnStream"`
	// Sessions counts sessions by transport: live ones and those opened
	// since start (a Server's; zero on a Client).
	Sessions telemetry.SessionsByTransport `json:"sessions"`
	// HandshakeDrops counts WebSocket and QUIC handshakes the hub dropped
	// or refused, by reason (a Server's; zero on a Client). WireGuard's
	// handshakes are protected by wireguard-go's own cookies and rate
	// limiter, which keep no counters.
	HandshakeDrops HandshakeDrops `json:"handshakeDrops"`
}

// HandshakeDrops counts handshakes dropped by the hub's flood protection
// (README, "Handshake floods") or refused by its Noise responder, by reason.
// The first two cost the hub no cryptography; the last two cost it the two
// Diffie-Hellman operations of reading a handshake message 1.
type HandshakeDrops struct {
	// RateLimited counts handshakes dropped because their source (an IPv4
	// address or IPv6 /64) had started more than 20 a second (burst 5):
	// WebSocket connections at any time, QUIC attempts while the hub is
	// under load (once a Retry has proven their address; one whose first
	// flight spans two Initial packets counts once per packet).
	RateLimited uint64 `json:"rateLimited"`
	// QueueFull counts handshakes dropped because 1024 were in progress.
	QueueFull uint64 `json:"queueFull"`
	// BadMAC counts handshake messages 1 that did not authenticate: sent
	// to another hub key, corrupted, or made up.
	BadMAC uint64 `json:"badMac"`
	// UnknownKey counts handshake messages 1 that authenticated but came
	// from a key the registry does not hold.
	UnknownKey uint64 `json:"unknownKey"`
}

// counters are the atomic form of Statistics.
type counters struct {
	bytesIn, bytesOut, packetsIn, packetsOut atomic.Uint64
	spoofed, acl, policy, rateLimit          atomic.Uint64
	oversized, noRoute, malformed, queueFull atomic.Uint64
	replayed, onStream                       atomic.Uint64
	handshakes, handshakesFailed             atomic.Uint64
	opened                                   [telemetry.NumTransports]atomic.Uint64
}

// sessionOpened counts a session that started over the named transport.
func (c *counters) sessionOpened(transport string) {
	if t, ok := transportOf(transport); ok {
		c.opened[t].Add(1)
	}
}

func (c *counters) snapshot() Statistics {
	return Statistics{
		BytesIn:    c.bytesIn.Load(),
		BytesOut:   c.bytesOut.Load(),
		PacketsIn:  c.packetsIn.Load(),
		PacketsOut: c.packetsOut.Load(),
		Drops: Drops{
			Spoofed:   c.spoofed.Load(),
			ACL:       c.acl.Load(),
			Policy:    c.policy.Load(),
			RateLimit: c.rateLimit.Load(),
			Oversized: c.oversized.Load(),
			NoRoute:   c.noRoute.Load(),
			Malformed: c.malformed.Load(),
			QueueFull: c.queueFull.Load(),
			Replayed:  c.replayed.Load(),
		},
		OversizedOnStream: c.onStream.Load(),
		Handshakes:        c.handshakes.Load(),
		HandshakesFailed:  c.handshakesFailed.Load(),
	}
}
