package warren

import (
	"fmt"
	"slices"
	"time"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/handshake"
	wsession "github.com/warrenvpn/warren/session"
	"github.com/warrenvpn/warren/telemetry"
	"github.com/warrenvpn/warren/transport/quic"
)

// Telemetry (DESIGN §6). Each WebSocket and QUIC session runs a
// telemetry.Estimator in package session: the client measures RTT, jitter
// and loss from its keepalives and sends them at the interval health asks
// for (60 s healthy, 30 s degraded, 10 s critical, 30 s before health is
// known); the hub measures loss from the keepalives' sequence gaps. Both
// sides end a session whose peer has been silent for 180 s with the
// dead-peer reason code. These are the telemetry package's defaults; they
// are not configurable through ServerConfig or ClientConfig yet (tests set
// them through the unexported telemetry field of Server and Client).
//
// WireGuard sessions have no Warren keepalives: their quality is unknown,
// with the last handshake as LastHeard; nothing is invented for them.

// LinkHealthChanged: the link health of a session changed. A Client
// publishes it for its session to the hub (ClientID empty), a Server for
// each client session.
type LinkHealthChanged struct {
	EventTime
	ClientID  string
	Transport string
	From, To  telemetry.Health
}

// Per-packet overhead of the layers under Warren's framing that the code
// does not have at hand as constants of its own.
const (
	// tlsRecordOverhead is a TLS 1.3 record's header (5 bytes), inner
	// content type (1) and AEAD tag (16): the WebSocket transport is always
	// wss, and Go negotiates TLS 1.3 on both ends.
	tlsRecordHeader   = 5
	tlsInnerType      = 1
	tlsAEADTag        = 16
	tlsRecordOverhead = tlsRecordHeader + tlsInnerType + tlsAEADTag
	// wsClientFrameHeader is a client's WebSocket binary frame header for
	// a payload of 126 to 65535 bytes: 2 bytes, a 16-bit extended length
	// and the 4-byte mask key (RFC 6455 §5.2). The hub's frames carry no
	// mask: 4 bytes.
	wsBaseHeader        = 2
	wsExtLen16          = 2
	wsMaskKey           = 4
	wsClientFrameHeader = wsBaseHeader + wsExtLen16 + wsMaskKey
	// A QUIC 1-RTT packet carrying one DATAGRAM frame (RFC 9000 §17.3.1,
	// RFC 9221 §4): the short header's flags byte, the destination
	// connection ID (quic.ConnIDLen: transport/quic chooses a length with
	// which a datagram of the whole room fills its packet),
	// a packet number of 1 to 4 bytes (the longest counted), the packet
	// protection tag, and the frame's type and length (a 2-byte varint for
	// payloads of 64 to 16383 bytes; quic-go drops the length only when the
	// frame would not fit with it). An ACK frame bundled in the same packet
	// adds to this; it is not per tunnelled packet.
	quicFlags              = 1
	quicConnIDLen          = quic.ConnIDLen
	quicMaxPacketNumberLen = 4
	quicTag                = 16
	quicDatagramFrame      = 1 + 2
	quicPacketFraming      = quicFlags + quicConnIDLen + quicMaxPacketNumberLen + quicTag + quicDatagramFrame
	// wgDataHeader is a WireGuard transport data message's header: type,
	// receiver index and counter (16 bytes); its tag is handshake.Overhead
	// long (ChaCha20-Poly1305, as Warren's).
	wgDataHeader = 4 + 4 + 8
	// defaultPathMTU is the path MTU MTUInfo assumes: Ethernet.
	defaultPathMTU = 1500
)

// framings returns how each transport carries a tunnelled packet from the
// client to the hub, over IPv4.
func framings() []telemetry.Framing {
	return []telemetry.Framing{
		{Transport: string(ClientWebSocket), Stream: true, Layers: []telemetry.Layer{
			{Name: "ipv4", Bytes: telemetry.IPv4HeaderLen},
			{Name: "tcp", Bytes: telemetry.TCPHeaderLen},
			{Name: "tls record", Bytes: tlsRecordOverhead},
			{Name: "websocket frame header", Bytes: wsClientFrameHeader},
			{Name: "warren frame header", Bytes: codec.HeaderLen},
			{Name: "warren aead tag", Bytes: handshake.Overhead},
		}},
		{Transport: string(ClientQUIC), Layers: []telemetry.Layer{
			{Name: "ipv4", Bytes: telemetry.IPv4HeaderLen},
			{Name: "udp", Bytes: telemetry.UDPHeaderLen},
			{Name: "quic short header, tag and datagram frame", Bytes: quicPacketFraming},
			{Name: "warren datagram header", Bytes: wsession.DatagramHeaderLen},
			{Name: "warren aead tag", Bytes: handshake.Overhead},
		}},
		{Transport: string(ClientWireGuard), Layers: []telemetry.Layer{
			{Name: "ipv4", Bytes: telemetry.IPv4HeaderLen},
			{Name: "udp", Bytes: telemetry.UDPHeaderLen},
			{Name: "wireguard data header", Bytes: wgDataHeader},
			{Name: "wireguard aead tag", Bytes: handshake.Overhead},
		}},
	}
}

// MTUInfo describes a session's packet sizes and the overhead of each
// transport.
type MTUInfo struct {
	// TunnelMTU is the MTU the session announced: 1280 on QUIC, the hub's
	// MTU otherwise.
	TunnelMTU int `json:"tunnelMtu"`
	// MaxDatagram is the QUIC datagram payload room now (0 without QUIC).
	MaxDatagram int `json:"maxDatagram"`
	// DatagramsSent counts packets sent as QUIC datagrams.
	DatagramsSent uint64 `json:"datagramsSent"`
	// OversizedOnStream counts packets too large for a datagram that went on
	// the stream instead.
	OversizedOnStream uint64 `json:"oversizedOnStream"`
	// Replayed counts datagrams dropped by the replay window.
	Replayed uint64 `json:"replayed"`

	// Transport is the current session's transport.
	Transport string `json:"transport"`
	// Overhead is the bytes the current transport adds around each
	// tunnelled packet, outer IPv4 header included, and EffectiveMTU the
	// largest tunnelled packet that crosses a PathMTU path in one outer
	// packet (see telemetry.TransportMTU).
	Overhead     int `json:"overhead"`
	EffectiveMTU int `json:"effectiveMtu"`
	// PathMTU is the path MTU assumed: 1500.
	PathMTU int `json:"pathMtu"`
	// Transports is the overhead of every transport, layer by layer.
	Transports []telemetry.TransportMTU `json:"transports"`
	// OversizedPackets counts packets dropped for being larger than the
	// tunnel MTU, over the client's life.
	OversizedPackets uint64 `json:"oversizedPackets"`
}

// mtuInfo fills in the overhead of each transport for a tunnel of tunnelMTU
// and the current transport's.
func (m *MTUInfo) fill(transport string, tunnelMTU int) {
	t := telemetry.ComputeMTU(tunnelMTU, defaultPathMTU, framings()...)
	m.Transport, m.PathMTU, m.Transports = transport, t.PathMTU, t.Transports
	for _, tr := range t.Transports {
		if tr.Transport == transport {
			m.Overhead, m.EffectiveMTU = tr.Overhead, tr.EffectiveMTU
		}
	}
}

func mtuInfoOf(s *wsession.Session) MTUInfo {
	m := s.MTUInfo()
	info := MTUInfo{TunnelMTU: m.TunnelMTU, MaxDatagram: m.MaxDatagram, DatagramsSent: m.DatagramsSent, OversizedOnStream: m.OnStream, Replayed: m.Replayed}
	info.fill(s.Peer().Transport, m.TunnelMTU)
	return info
}

// MTUInfo describes the current session's packet sizes and each transport's
// overhead; zero but for the overhead table and OversizedPackets when not
// connected.
func (c *Client) MTUInfo() MTUInfo {
	var info MTUInfo
	if l := c.cur.Load(); l != nil {
		info = mtuInfoOf(l)
	} else {
		c.mu.Lock()
		tr, mtu := c.info.Transport, c.info.MTU
		c.mu.Unlock()
		info.fill(tr, mtu)
	}
	info.OversizedPackets = c.Statistics().Drops.Oversized
	return info
}

// ConnectionQuality returns the link quality of the current session: RTT,
// jitter, loss, health, keepalive interval. It is the zero Quality (health
// unknown) when not connected, and over WireGuard, which has no Warren
// keepalives, the unknown state with the last handshake as LastHeard.
func (c *Client) ConnectionQuality() telemetry.Quality {
	if l := c.cur.Load(); l != nil {
		return l.Quality()
	}
	if dev := c.wgDev.Load(); dev != nil {
		var q telemetry.Quality
		for _, p := range dev.Peers() {
			if p.PublicKey == c.cfg.ServerPublicKey {
				q.LastHeard = p.LastHandshake
			}
		}
		return q
	}
	return telemetry.Quality{}
}

// healthChanged publishes the session's health change (session.DialConfig).
func (c *Client) healthChanged(transport string) func(from, to telemetry.Health) {
	return func(from, to telemetry.Health) {
		c.log.Info("link health changed", "from", from, "to", to)
		c.events.publish(LinkHealthChanged{EventTime: EventTime{time.Now()}, Transport: transport, From: from, To: to})
	}
}

// SessionTelemetry is one live session of a client, as the hub sees it.
type SessionTelemetry struct {
	Transport      string               `json:"transport"`
	RemoteAddr     string               `json:"remoteAddr"`
	ConnectedSince time.Time            `json:"connectedSince"`
	Statistics     telemetry.Statistics `json:"statistics"`
	// Quality is the hub's view of the link: loss and health from the
	// client's keepalives, no RTT (the client measures that). Unknown for
	// WireGuard, with the last handshake as LastHeard.
	Quality telemetry.Quality `json:"quality"`
}

// ClientTelemetry returns the telemetry of each live session of a client,
// oldest first. It returns ErrNotConnected (wrapped) when the client has
// none.
func (s *Server) ClientTelemetry(id string) ([]SessionTelemetry, error) {
	list := s.clientSessions(id)
	if len(list) == 0 {
		return nil, fmt.Errorf("warren: client %q: %w", id, ErrNotConnected)
	}
	out := make([]SessionTelemetry, 0, len(list))
	for _, ss := range list {
		out = append(out, SessionTelemetry{
			Transport:      ss.transport,
			RemoteAddr:     ss.remoteAddr().String(),
			ConnectedSince: ss.since,
			Statistics:     ss.statistics(),
			Quality:        s.quality(ss),
		})
	}
	return out, nil
}

// quality is a session's link quality.
func (s *Server) quality(ss *session) telemetry.Quality {
	var q telemetry.Quality
	switch c := ss.c.(type) {
	case streamConduit:
		return c.s.Quality()
	case *wgPeer:
		// WireGuard has no keepalive of ours to measure: health stays
		// unknown, with the peer's last handshake as when it was heard.
		if dev := s.wgDevice(); dev != nil {
			for _, p := range dev.Peers() {
				if p.PublicKey == c.PublicKey() {
					q.LastHeard = p.LastHandshake
				}
			}
		}
	}
	return q
}

// statistics are one session's counters.
func (ss *session) statistics() telemetry.Statistics {
	n := ss.c.counts()
	st := telemetry.Statistics{BytesIn: n.bytesIn, BytesOut: n.bytesOut, PacketsIn: n.packetsIn, PacketsOut: n.packetsOut}
	st.Drops.Oversized = n.oversized
	st.Drops.Set(telemetry.DropQueueFull, n.queueFull)
	if t, ok := transportOf(ss.transport); ok {
		c := telemetry.SessionCount{Active: 1, Opened: 1}
		switch t {
		case telemetry.TransportWebSocket:
			st.Sessions.WebSocket = c
		case telemetry.TransportQUIC:
			st.Sessions.QUIC = c
		case telemetry.TransportWireGuard:
			st.Sessions.WireGuard = c
		}
	}
	return st
}

// transportOf maps a transport name to telemetry's.
func transportOf(name string) (telemetry.Transport, bool) {
	for t := range telemetry.NumTransports {
		if t.String() == name {
			return t, true
		}
	}
	return 0, false
}

// healthChanged publishes a client session's health change
// (session.AcceptConfig).
func (s *Server) healthChanged(id *string, transport string) func(from, to telemetry.Health) {
	return func(from, to telemetry.Health) {
		s.log.Info("client link health changed", "client", *id, "from", from, "to", to)
		s.events.publish(LinkHealthChanged{EventTime: EventTime{time.Now()}, ClientID: *id, Transport: transport, From: from, To: to})
	}
}

// TelemetrySnapshot is the server's telemetry at one moment, in the neutral
// types of package telemetry: what a metrics exporter such as
// telemetry/promexport reads (examples/metrics adapts it).
type TelemetrySnapshot struct {
	// Server holds the server-wide counters.
	Server telemetry.Statistics
	// Clients holds each connected client, sorted by ID.
	Clients []ClientSnapshot
}

// ClientSnapshot is one connected client in a TelemetrySnapshot: its
// sessions' counters summed, and the quality of its newest session.
type ClientSnapshot struct {
	ID         string
	Statistics telemetry.Statistics
	Quality    telemetry.Quality
}

// Telemetry returns the server's telemetry: Statistics in telemetry's
// types, and each connected client's counters and link quality.
func (s *Server) Telemetry() TelemetrySnapshot {
	snap := TelemetrySnapshot{Server: s.Statistics().Telemetry()}
	s.mu.Lock()
	ids := make([]string, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	slices.Sort(ids)
	for _, id := range ids {
		list := s.clientSessions(id)
		if len(list) == 0 {
			continue
		}
		c := ClientSnapshot{ID: id, Quality: s.quality(list[len(list)-1])}
		for _, ss := range list {
			c.Statistics.Add(ss.statistics())
		}
		snap.Clients = append(snap.Clients, c)
	}
	return snap
}

// Telemetry returns st in the types of package telemetry.
func (st Statistics) Telemetry() telemetry.Statistics {
	t := telemetry.Statistics{
		BytesIn: st.BytesIn, BytesOut: st.BytesOut, PacketsIn: st.PacketsIn, PacketsOut: st.PacketsOut,
		Sessions:         st.Sessions,
		HandshakesOK:     st.Handshakes,
		HandshakesFailed: st.HandshakesFailed,
		HandshakeDrops:   telemetry.HandshakeDrops(st.HandshakeDrops),
	}
	d := st.Drops
	t.Drops.Set(telemetry.DropACL, d.ACL)
	t.Drops.Set(telemetry.DropPolicy, d.Policy)
	t.Drops.Set(telemetry.DropRateLimit, d.RateLimit)
	t.Drops.Set(telemetry.DropSpoofed, d.Spoofed)
	t.Drops.Set(telemetry.DropOversized, d.Oversized)
	t.Drops.Set(telemetry.DropNoRoute, d.NoRoute)
	t.Drops.Set(telemetry.DropMalformed, d.Malformed)
	t.Drops.Set(telemetry.DropQueueFull, d.QueueFull)
	return t
}

// sessionsByTransport counts live sessions and those opened, per transport.
// Call with s.mu held.
func (s *Server) sessionsByTransport() telemetry.SessionsByTransport {
	var out telemetry.SessionsByTransport
	for _, list := range s.sessions {
		for _, ss := range list {
			switch t, _ := transportOf(ss.transport); t {
			case telemetry.TransportWebSocket:
				out.WebSocket.Active++
			case telemetry.TransportQUIC:
				out.QUIC.Active++
			case telemetry.TransportWireGuard:
				out.WireGuard.Active++
			}
		}
	}
	out.WebSocket.Opened = s.stats.opened[telemetry.TransportWebSocket].Load()
	out.QUIC.Opened = s.stats.opened[telemetry.TransportQUIC].Load()
	out.WireGuard.Opened = s.stats.opened[telemetry.TransportWireGuard].Load()
	return out
}
