package warren

import (
	"net/netip"
	"time"

	"github.com/warrenvpn/warren/codec"

	wsession "github.com/warrenvpn/warren/session"
)

// quicMTU is the tunnel MTU a QUIC session announces (DESIGN §3).
const quicMTU = wsession.DatagramMTU

// conduit is how the hub reaches one client's session, whatever its
// transport: streamConduit for WebSocket and QUIC (package session), wgPeer
// for WireGuard (transport/wg). The session table holds one session type
// with one conduit, so nothing else in the pipeline asks which transport a
// session runs on.
type conduit interface {
	// send queues a batch of IP packets, all for this client, packet i
	// at bufs[i][offset:], and returns how many it took; the rest are
	// dropped and counted. Packets in l (a client session's read buffer,
	// or nil) may be queued where they are, without a copy; the others
	// are copied.
	send(bufs [][]byte, offset int, l *wsession.Lease) int
	// close ends the session; with notify the client is told why where
	// the transport can say it.
	close(r closeReason, notify bool)
	// counts returns the session's counters.
	counts() linkCounts
	// lastSeen is when the client last sent anything; a transport that
	// reports dead peers itself returns the present.
	lastSeen() time.Time
	// remoteAddr is the client's real address: where the session's
	// connection comes from, or where a WireGuard peer was last heard.
	remoteAddr() netip.AddrPort
	// checkRemote ends the session if sec's IPAllowList / IPBlockList
	// refuse its remote address, and reports whether they allow it.
	checkRemote(sec *compiledSecurity) bool
}

// linkCounts are a session's counters. In is from the peer.
type linkCounts struct {
	bytesIn, bytesOut, packetsIn, packetsOut uint64
	oversized, queueFull                     uint64
	replayed, onStream                       uint64
}

// streamConduit is a WebSocket or QUIC session (package session) as a conduit.
type streamConduit struct{ s *wsession.Session }

func (c streamConduit) send(bufs [][]byte, offset int, l *wsession.Lease) int {
	return c.s.SendLeased(l, bufs, offset)
}

func (c streamConduit) close(r closeReason, notify bool) {
	if notify {
		c.s.Close(r.reason())
	} else {
		c.s.Abort(r.reason())
	}
}

func (c streamConduit) counts() linkCounts { return countsOf(c.s) }

func (c streamConduit) lastSeen() time.Time { return c.s.LastReceive() }

func (c streamConduit) remoteAddr() netip.AddrPort { return c.s.Peer().Remote }

// checkRemote: the handshake checked the address; this is for lists that
// changed since (UpdateClient), and tells the client.
func (c streamConduit) checkRemote(sec *compiledSecurity) bool {
	remote := c.remoteAddr()
	if sec == nil || sec.remote.allows(remote.Addr()) {
		return true
	}
	c.close(closeReason{codec.DisconnectRefused, "remote address " + remote.Addr().String() + " no longer allowed"}, true)
	return false
}

// sendRun collects consecutive packets for one session so that each group
// goes to its conduit in one send. Its buffer is reused from run to run.
// The packets are at offset in their buffers, in lease l or in none (nil),
// as set by the caller for a batch.
type sendRun struct {
	peer   *session
	bufs   [][]byte
	offset int
	l      *wsession.Lease
}

// add queues b for peer, first flushing the packets for another session.
// It returns how many packets that flush dropped.
func (r *sendRun) add(peer *session, b []byte) (dropped uint64) {
	if peer != r.peer {
		dropped = r.flush()
		r.peer = peer
	}
	r.bufs = append(r.bufs, b)
	return dropped
}

// flush sends the packets collected and returns how many were dropped.
func (r *sendRun) flush() uint64 {
	if len(r.bufs) == 0 {
		return 0
	}
	n := r.peer.c.send(r.bufs, r.offset, r.l)
	dropped := uint64(len(r.bufs) - n)
	clear(r.bufs)
	r.bufs = r.bufs[:0]
	r.peer = nil
	return dropped
}

func countsOf(s *wsession.Session) linkCounts {
	n := s.Counters()
	return linkCounts{
		bytesIn: n.BytesIn, bytesOut: n.BytesOut, packetsIn: n.PacketsIn, packetsOut: n.PacketsOut,
		oversized: n.Oversized, queueFull: n.QueueFull, replayed: n.Replayed, onStream: n.OnStream,
	}
}
