// Package transport holds what every Warren transport gives the hub: a Conn that
// carries frames (codec) reliably and in order for one client. The hub runs the
// Noise handshake and the session over a Conn, so WebSocket and QUIC share one
// session implementation; a transport only moves bytes and reports the peer's
// real address.
package transport

import "net/netip"

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
