package warren

import (
	"time"

	wsession "github.com/warrenvpn/warren/session"
)

// quicMTU is the tunnel MTU a QUIC session announces (DESIGN §3).
const quicMTU = wsession.DatagramMTU

// conduit carries packets to one client's session, whatever its transport.
type conduit interface {
	// send queues a copy of an IP packet for the client; false if dropped.
	send(pkt []byte) bool
	// close ends the session; with notify the client is told why.
	close(r closeReason, notify, remote bool)
	// counts returns the session's counters.
	counts() linkCounts
	// lastSeen is when the client last sent anything.
	lastSeen() time.Time
}

// linkCounts are a session's counters. In is from the peer.
type linkCounts struct {
	bytesIn, bytesOut, packetsIn, packetsOut uint64
	oversized, queueFull                     uint64
	replayed, onStream                       uint64
}

// streamConduit is a WebSocket or QUIC session (package session) as a conduit.
type streamConduit struct{ s *wsession.Session }

func (c streamConduit) send(pkt []byte) bool { return c.s.Send(pkt) }

func (c streamConduit) close(r closeReason, notify, _ bool) {
	if notify {
		c.s.Close(r.reason())
	} else {
		c.s.Abort(r.reason())
	}
}

func (c streamConduit) counts() linkCounts { return countsOf(c.s) }

func (c streamConduit) lastSeen() time.Time { return c.s.LastReceive() }

func countsOf(s *wsession.Session) linkCounts {
	n := s.Counters()
	return linkCounts{
		bytesIn: n.BytesIn, bytesOut: n.BytesOut, packetsIn: n.PacketsIn, packetsOut: n.PacketsOut,
		oversized: n.Oversized, queueFull: n.QueueFull, replayed: n.Replayed, onStream: n.OnStream,
	}
}
