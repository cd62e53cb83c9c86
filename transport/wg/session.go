package wg

import (
	"net/netip"
	"sync/atomic"
)

// Session is one peer of a Device seen as a session of the pipeline, the
// WireGuard counterpart of a WebSocket or QUIC session (package session):
// it sends batches of IP packets toward the peer, counts what passes in each
// direction, remembers the endpoint the peer was last heard from, and ends
// once (Close). Ending a Session changes nothing on the device: the peer
// stays until RemovePeer, and a new Session may be made for it.
//
// The Device does not know which Session a received packet belongs to: the
// caller finds it by the packet's source address (the peer's AllowedIPs)
// and counts the packets with Received. Its methods are safe for concurrent
// use.
type Session struct {
	dev    *Device
	pub    [32]byte
	remote atomic.Pointer[netip.AddrPort]
	closed atomic.Bool

	bytesIn, bytesOut, packetsIn, packetsOut atomic.Uint64
	oversized, dropped                       atomic.Uint64
}

// SessionCounters are a Session's counters. In is from the peer.
type SessionCounters struct {
	BytesIn, BytesOut, PacketsIn, PacketsOut uint64
	// Oversized counts packets Send refused for being larger than the MTU.
	Oversized uint64
	// Dropped counts other packets Send did not queue: the device's queue
	// was full, or the device or the Session was closed.
	Dropped uint64
}

// NewSession returns a Session for the peer with public key pub, last heard
// from remote (zero when unknown). The peer need not be on the device yet.
func (d *Device) NewSession(pub [32]byte, remote netip.AddrPort) *Session {
	s := &Session{dev: d, pub: pub}
	s.remote.Store(&remote)
	return s
}

// PublicKey returns the peer's public key.
func (s *Session) PublicKey() [32]byte { return s.pub }

// Send queues a batch of IP packets for the peer in one call to the device
// and returns how many it queued. The caller sends only packets whose
// destination is inside the peer's AllowedIPs: wireguard-go routes each by
// its destination. A packet larger than the MTU is counted in Oversized,
// one that finds the queue full in Dropped. Send never blocks, does not
// retain bufs, and queues nothing once the Session or the device is closed.
func (s *Session) Send(bufs [][]byte) int { return s.SendOffset(bufs, 0) }

// SendOffset is Send for packets at an offset in their buffers: packet i
// is bufs[i][offset:].
func (s *Session) SendOffset(bufs [][]byte, offset int) int {
	if s.closed.Load() || s.dev.closed.Load() {
		s.dropped.Add(uint64(len(bufs)))
		return 0
	}
	mtu := s.dev.bridge.mtu
	n, start, over := 0, 0, 0
	var bytes uint64
	for i, p := range bufs {
		p = p[offset:]
		if len(p) > mtu {
			// Queue the run before it; the queue drops nothing else
			// for its size.
			n += s.dev.bridge.enqueue(bufs[start:i], offset)
			start = i + 1
			over++
			continue
		}
		bytes += uint64(len(p))
	}
	n += s.dev.bridge.enqueue(bufs[start:], offset)
	if over > 0 {
		s.oversized.Add(uint64(over))
	}
	if fit := len(bufs) - over; n < fit {
		// The queue filled part way; bytes are counted at the mean size.
		s.dropped.Add(uint64(fit - n))
		bytes = bytes * uint64(n) / uint64(fit)
	}
	s.packetsOut.Add(uint64(n))
	s.bytesOut.Add(bytes)
	return n
}

// Received counts a batch of packets the peer sent, which the caller took
// from Config.Receive.
func (s *Session) Received(bufs [][]byte) { s.ReceivedOffset(bufs, 0) }

// ReceivedOffset is Received for a batch from Config.ReceiveOffset: packet
// i is bufs[i][offset:].
func (s *Session) ReceivedOffset(bufs [][]byte, offset int) {
	var bytes uint64
	for _, p := range bufs {
		bytes += uint64(len(p) - offset)
	}
	s.packetsIn.Add(uint64(len(bufs)))
	s.bytesIn.Add(bytes)
}

// Remote returns the peer's endpoint as last recorded, or zero.
func (s *Session) Remote() netip.AddrPort { return *s.remote.Load() }

// SetRemote records the peer's endpoint (from a PeerEvent).
func (s *Session) SetRemote(ap netip.AddrPort) { s.remote.Store(&ap) }

// Close ends the Session: Send queues nothing after it. It reports whether
// this call ended it; a second Close returns false.
func (s *Session) Close() bool { return !s.closed.Swap(true) }

// Closed reports whether Close has been called.
func (s *Session) Closed() bool { return s.closed.Load() }

// Counters returns the Session's counters.
func (s *Session) Counters() SessionCounters {
	return SessionCounters{
		BytesIn:    s.bytesIn.Load(),
		BytesOut:   s.bytesOut.Load(),
		PacketsIn:  s.packetsIn.Load(),
		PacketsOut: s.packetsOut.Load(),
		Oversized:  s.oversized.Load(),
		Dropped:    s.dropped.Load(),
	}
}
