// Package transport holds what every Warren transport gives the hub: a Conn that
// carries frames (codec) reliably and in order for one client. The hub runs the
// Noise handshake and the session over a Conn, so WebSocket and QUIC share one
// session implementation; a transport only moves bytes and reports the peer's
// real address.
package transport

import (
	"context"
	"net/netip"
)

// Conn is a reliable, ordered carrier of Warren frames for one peer.
//
// ReadMessage may be called by one goroutine at a time and WriteMessage by one
// goroutine at a time; the two may run concurrently. Close may be called at any
// time from any goroutine and unblocks both.
type Conn interface {
	// ReadMessage returns the next message: one or more encoded frames. The
	// returned slice is valid only until the next call.
	ReadMessage() ([]byte, error)
	// WriteMessage sends b, one or more encoded frames, as one message.
	// It does not retain b after it returns.
	WriteMessage(b []byte) error
	// RemoteAddr is the peer's real address: the PROXY protocol source when
	// the listener reads PROXY headers, the socket's peer otherwise.
	RemoteAddr() netip.AddrPort
	// Close closes the connection.
	Close() error
}

// HeadroomReader is a Conn that can read a message with free room in front
// of it, so that a session opening frames in place can hand even the first
// packet of a message on with headroom for the next layer's header.
type HeadroomReader interface {
	// ReadMessageHeadroom is ReadMessage with n free bytes in front of the
	// message: it returns buf, the message being buf[n:]; the caller may
	// write into all of buf until the next call.
	ReadMessageHeadroom(n int) (buf []byte, err error)
}

// BufferReader is a Conn that reads each message into a buffer its caller
// supplies and keeps afterwards, so that a session can hand the frames it
// opens in place on to other sessions' writers instead of copying them out
// of a buffer that the next read reuses.
type BufferReader interface {
	// ReadMessageBuffer waits for the next message, then calls get once for
	// a buffer (len 0) and reads the message into it behind n free bytes:
	// it returns buf, the message being buf[n:]. buf is get's buffer, or a
	// larger one when the message did not fit. The caller owns buf, and
	// get's buffer, after the call; get is not called when no message
	// arrives.
	ReadMessageBuffer(n int, get func() []byte) (buf []byte, err error)
}

// DatagramConn is a Conn that can also carry unreliable datagrams next to its
// stream (QUIC). A session on such a Conn sends IP packets as datagrams and
// keeps the stream for the handshake, control frames and packets too large for
// a datagram.
type DatagramConn interface {
	Conn
	// SendDatagram sends b as one datagram; the transport copies b. It fails
	// when b does not fit the datagram room, or the connection has ended.
	SendDatagram(b []byte) error
	// ReceiveDatagram waits for the next datagram, a slice the caller owns,
	// until ctx ends or the connection closes.
	ReceiveDatagram(ctx context.Context) ([]byte, error)
	// MaxDatagramSize is the largest payload SendDatagram accepts now.
	MaxDatagramSize() int
}

// DatagramBatchReceiver is a DatagramConn that can hand over the datagrams
// waiting for the receiver in one call, so a session moves them on with one
// queue operation per batch rather than one per datagram.
type DatagramBatchReceiver interface {
	// ReceiveDatagrams waits for the next datagram, as ReceiveDatagram
	// does, and appends it and those already waiting behind it to bufs:
	// one, or up to cap(bufs) in all. Each is a slice the caller
	// owns.
	ReceiveDatagrams(ctx context.Context, bufs [][]byte) ([][]byte, error)
}

// DatagramPadder is a DatagramConn whose carrier puts a datagram of exactly
// MaxDatagramSize bytes in a packet that fills the path MTU, and sends runs
// of such full packets with one system call (UDP GSO), while a smaller
// datagram costs a system call of its own. A session pads a packet that
// nearly fills a datagram up to that size, inside the sealed payload.
type DatagramPadder interface {
	DatagramConn
	// PadDatagrams reports whether padding datagrams to MaxDatagramSize
	// pays.
	PadDatagrams() bool
}
