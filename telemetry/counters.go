package telemetry

import (
	"fmt"
	"sync/atomic"
)

// DropReason is why a packet was dropped.
type DropReason uint8

// Drop reasons.
const (
	DropACL        DropReason = iota // refused by an ACL
	DropPolicy                       // refused by the destination policy
	DropRateLimit                    // over a rate limit
	DropSpoofed                      // source address not the sender's
	DropOversized                    // larger than the tunnel MTU
	DropNoRoute                      // no session or route for the destination
	DropMalformed                    // not a well-formed packet or frame
	DropQueueFull                    // a bounded queue was full
	NumDropReasons                   // the number of drop reasons, not one
)

var dropNames = [NumDropReasons]string{"acl", "policy", "rateLimit", "spoofed", "oversized", "noRoute", "malformed", "queueFull"}

// String returns the reason's name, as its JSON field in [Drops] spells it.
func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropNames[r]
	}
	return fmt.Sprintf("DropReason(%d)", uint8(r))
}

// Transport is the transport a session runs over.
type Transport uint8

// Transports.
const (
	TransportWebSocket Transport = iota
	TransportQUIC
	TransportWireGuard
	NumTransports // the number of transports, not one
)

var transportNames = [NumTransports]string{"websocket", "quic", "wireguard"}

// String returns "websocket", "quic" or "wireguard", as Warren's config spells them.
func (t Transport) String() string {
	if t < NumTransports {
		return transportNames[t]
	}
	return fmt.Sprintf("Transport(%d)", uint8(t))
}

// Counters counts a server's or a client's traffic. The zero value is ready to
// use; it is safe for concurrent use and its methods never allocate, so the data
// plane may call them per batch. Out-of-range reasons and transports are ignored.
// In is toward the engine (from the peer), Out toward the peer.
type Counters struct {
	bytesIn, bytesOut     atomic.Uint64
	packetsIn, packetsOut atomic.Uint64
	drops                 [NumDropReasons]atomic.Uint64
	active                [NumTransports]atomic.Int64
	opened                [NumTransports]atomic.Uint64
	handshakesOK          atomic.Uint64
	handshakesFailed      atomic.Uint64
}

// AddIn counts packets received from the peer, bytes their total IP length.
func (c *Counters) AddIn(packets, bytes uint64) {
	c.packetsIn.Add(packets)
	c.bytesIn.Add(bytes)
}

// AddOut counts packets sent to the peer, bytes their total IP length.
func (c *Counters) AddOut(packets, bytes uint64) {
	c.packetsOut.Add(packets)
	c.bytesOut.Add(bytes)
}

// Drop counts n packets dropped for reason r.
func (c *Counters) Drop(r DropReason, n uint64) {
	if r < NumDropReasons {
		c.drops[r].Add(n)
	}
}

// SessionOpened counts a session that started over t.
func (c *Counters) SessionOpened(t Transport) {
	if t < NumTransports {
		c.opened[t].Add(1)
		c.active[t].Add(1)
	}
}

// SessionClosed counts the end of a session over t that SessionOpened counted.
func (c *Counters) SessionClosed(t Transport) {
	if t < NumTransports {
		c.active[t].Add(-1)
	}
}

// Handshake counts one handshake that succeeded (ok) or failed.
func (c *Counters) Handshake(ok bool) {
	if ok {
		c.handshakesOK.Add(1)
	} else {
		c.handshakesFailed.Add(1)
	}
}

// Snapshot returns the counts. Each count is read atomically; the set is not
// one instant, only close to one.
func (c *Counters) Snapshot() Statistics {
	s := Statistics{
		BytesIn:          c.bytesIn.Load(),
		BytesOut:         c.bytesOut.Load(),
		PacketsIn:        c.packetsIn.Load(),
		PacketsOut:       c.packetsOut.Load(),
		HandshakesOK:     c.handshakesOK.Load(),
		HandshakesFailed: c.handshakesFailed.Load(),
	}
	for r := range NumDropReasons {
		s.Drops.Set(r, c.drops[r].Load())
	}
	for t := range NumTransports {
		s.Sessions.set(t, SessionCount{Active: c.active[t].Load(), Opened: c.opened[t].Load()})
	}
	return s
}

// Statistics is a snapshot of [Counters], for Server.Statistics and
// Client.Statistics.
type Statistics struct {
	BytesIn          uint64              `json:"bytesIn"`
	BytesOut         uint64              `json:"bytesOut"`
	PacketsIn        uint64              `json:"packetsIn"`
	PacketsOut       uint64              `json:"packetsOut"`
	Drops            Drops               `json:"drops"`
	Sessions         SessionsByTransport `json:"sessions"`
	HandshakesOK     uint64              `json:"handshakesOk"`
	HandshakesFailed uint64              `json:"handshakesFailed"`
	// HandshakeDrops counts a hub's dropped and refused handshakes by
	// reason (zero for a client).
	HandshakeDrops HandshakeDrops `json:"handshakeDrops"`
}

// HandshakeDrops counts handshakes a hub dropped before any cryptography
// (RateLimited, QueueFull) or whose message 1 its Noise responder refused
// (BadMAC, UnknownKey).
type HandshakeDrops struct {
	RateLimited uint64 `json:"rateLimited"`
	QueueFull   uint64 `json:"queueFull"`
	BadMAC      uint64 `json:"badMac"`
	UnknownKey  uint64 `json:"unknownKey"`
}

// Add adds o's counts to s, to sum clients into a server's total.
func (s *Statistics) Add(o Statistics) {
	s.BytesIn += o.BytesIn
	s.BytesOut += o.BytesOut
	s.PacketsIn += o.PacketsIn
	s.PacketsOut += o.PacketsOut
	for r := range NumDropReasons {
		s.Drops.Set(r, s.Drops.Get(r)+o.Drops.Get(r))
	}
	for t := range NumTransports {
		a, b := s.Sessions.Get(t), o.Sessions.Get(t)
		s.Sessions.set(t, SessionCount{Active: a.Active + b.Active, Opened: a.Opened + b.Opened})
	}
	s.HandshakesOK += o.HandshakesOK
	s.HandshakesFailed += o.HandshakesFailed
	s.HandshakeDrops.RateLimited += o.HandshakeDrops.RateLimited
	s.HandshakeDrops.QueueFull += o.HandshakeDrops.QueueFull
	s.HandshakeDrops.BadMAC += o.HandshakeDrops.BadMAC
	s.HandshakeDrops.UnknownKey += o.HandshakeDrops.UnknownKey
}

// Drops counts dropped packets by reason.
type Drops struct {
	ACL       uint64 `json:"acl"`
	Policy    uint64 `json:"policy"`
	RateLimit uint64 `json:"rateLimit"`
	Spoofed   uint64 `json:"spoofed"`
	Oversized uint64 `json:"oversized"`
	NoRoute   uint64 `json:"noRoute"`
	Malformed uint64 `json:"malformed"`
	QueueFull uint64 `json:"queueFull"`
}

func (d *Drops) field(r DropReason) *uint64 {
	switch r {
	case DropACL:
		return &d.ACL
	case DropPolicy:
		return &d.Policy
	case DropRateLimit:
		return &d.RateLimit
	case DropSpoofed:
		return &d.Spoofed
	case DropOversized:
		return &d.Oversized
	case DropNoRoute:
		return &d.NoRoute
	case DropMalformed:
		return &d.Malformed
	case DropQueueFull:
		return &d.QueueFull
	}
	return nil
}

// Get returns the count for r, zero for an unknown reason.
func (d Drops) Get(r DropReason) uint64 {
	if p := d.field(r); p != nil {
		return *p
	}
	return 0
}

// Set sets the count for r; an unknown reason is ignored.
func (d *Drops) Set(r DropReason, n uint64) {
	if p := d.field(r); p != nil {
		*p = n
	}
}

// Total returns the sum over all reasons.
func (d Drops) Total() uint64 {
	var n uint64
	for r := range NumDropReasons {
		n += d.Get(r)
	}
	return n
}

// SessionCount is the sessions of one transport: Active now, Opened since start.
type SessionCount struct {
	Active int64  `json:"active"`
	Opened uint64 `json:"opened"`
}

// SessionsByTransport counts sessions per transport.
type SessionsByTransport struct {
	WebSocket SessionCount `json:"websocket"`
	QUIC      SessionCount `json:"quic"`
	WireGuard SessionCount `json:"wireguard"`
}

// Get returns the count of transport t, zero for an unknown one.
func (s SessionsByTransport) Get(t Transport) SessionCount {
	switch t {
	case TransportWebSocket:
		return s.WebSocket
	case TransportQUIC:
		return s.QUIC
	case TransportWireGuard:
		return s.WireGuard
	}
	return SessionCount{}
}

func (s *SessionsByTransport) set(t Transport, c SessionCount) {
	switch t {
	case TransportWebSocket:
		s.WebSocket = c
	case TransportQUIC:
		s.QUIC = c
	case TransportWireGuard:
		s.WireGuard = c
	}
}
