package ws

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/warrenvpn/warren/transport"
)

const (
	// MaxMessageSize is the largest message a Conn reads: 1 MiB. A message
	// holds one or more Warren frames of at most 65540 bytes each; a peer that
	// sends more in one message gets its connection closed.
	MaxMessageSize = 1 << 20

	// minReadBuffer is the first size of a Conn's read buffer.
	minReadBuffer = 4 << 10

	// maxRetainedReadBuffer bounds the read buffer a Conn keeps between
	// messages. It holds a full batch of MTU-sized packets (64 × ~1.5 KB,
	// which a slice's doubling growth takes to 128-256 KiB) with room to
	// spare, so steady bulk traffic reuses one buffer; a larger message is
	// read into a buffer that is dropped at the next call, so one big message
	// does not pin a megabyte per connection.
	maxRetainedReadBuffer = 512 << 10

	// closeGrace bounds how long Close waits to send a WebSocket close frame
	// before it closes the socket anyway.
	closeGrace = 500 * time.Millisecond
)

var _ transport.Conn = (*Conn)(nil)

// writeBuffers lends the server's connections their WebSocket write
// buffers, one message at a time.
var writeBuffers sync.Pool

// readBuffers lends Conns their read buffers (*[]byte) while a message is
// read and until the next ReadMessage call, which returns the buffer
// before it waits: an idle connection holds none.
var readBuffers sync.Pool

// Conn is one WebSocket connection carrying Warren messages, each one binary
// WebSocket message. It implements transport.Conn: one goroutine may call
// ReadMessage while another calls WriteMessage, and Close may be called at any
// time from any goroutine.
type Conn struct {
	ws     *websocket.Conn
	raw    net.Conn // the TCP socket under TLS; closing it unblocks everything above
	remote netip.AddrPort

	// Owned by the reading goroutine: buf is the buffer of the last
	// message, borrowed from readBuffers in the holder bp (both nil
	// between messages).
	buf     []byte
	bp      *[]byte
	readErr error // sticky: gorilla/websocket panics on repeated reads after an error

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// newConn wraps an established WebSocket connection whose TCP socket is raw.
func newConn(c *websocket.Conn, raw net.Conn, remote netip.AddrPort) *Conn {
	c.SetReadLimit(MaxMessageSize)
	return &Conn{ws: c, raw: raw, remote: remote}
}

// ReadMessage returns the next message. The returned slice is valid until the
// next call: every message is read into one buffer that the Conn reuses.
//
// A text message is a protocol error. After the peer closes the connection
// normally the error wraps io.EOF; after Close it wraps net.ErrClosed. Once
// ReadMessage has failed it returns the same error on every later call.
func (c *Conn) ReadMessage() ([]byte, error) { return c.ReadMessageHeadroom(0) }

var _ transport.HeadroomReader = (*Conn)(nil)

// ReadMessageHeadroom is ReadMessage with n free bytes in front of the
// message (transport.HeadroomReader): the message is buf[n:].
func (c *Conn) ReadMessageHeadroom(n int) ([]byte, error) {
	if c.readErr != nil {
		return nil, c.readErr
	}
	if c.bp != nil {
		// The last message is no longer the caller's. A Conn that moves
		// bulk traffic keeps its buffer, so it neither regrows one nor
		// churns the pool; one whose last message was small (a keepalive
		// on an idle session) lends it back before it waits.
		switch {
		case cap(c.buf) > maxRetainedReadBuffer:
			c.buf, c.bp = nil, nil
		case len(c.buf) <= minReadBuffer:
			*c.bp = c.buf[:0]
			readBuffers.Put(c.bp)
			c.buf, c.bp = nil, nil
		}
	}
	r, err := c.nextBinary()
	if err != nil {
		return nil, err
	}
	bp := c.bp
	if bp == nil {
		bp, _ = readBuffers.Get().(*[]byte)
	}
	if bp == nil {
		bp = new([]byte)
	}
	if cap(*bp) < n {
		*bp = make([]byte, 0, max(n, minReadBuffer))
	}
	c.bp = bp
	b, err := readAll(r, (*bp)[:n])
	if err != nil {
		c.readErr = c.wrapReadErr(err)
		return nil, c.readErr
	}
	*bp = b
	c.buf = b
	return b, nil
}

// nextBinary returns the reader of the next message, which must be binary;
// an error is kept in readErr for the calls after.
func (c *Conn) nextBinary() (io.Reader, error) {
	typ, r, err := c.ws.NextReader()
	if err != nil {
		c.readErr = c.wrapReadErr(err)
		return nil, c.readErr
	}
	if typ != websocket.BinaryMessage {
		c.readErr = errors.New("ws: read: got a text message, want binary")
		return nil, c.readErr
	}
	return r, nil
}

var _ transport.BufferReader = (*Conn)(nil)

// ReadMessageBuffer is ReadMessageHeadroom into a buffer the caller supplies
// and keeps (transport.BufferReader): get is called once the next message
// has begun, so a connection waiting for traffic holds no buffer.
func (c *Conn) ReadMessageBuffer(n int, get func() []byte) ([]byte, error) {
	if c.readErr != nil {
		return nil, c.readErr
	}
	if c.bp != nil {
		// A ReadMessage before lent this Conn a buffer; this call does
		// not need it.
		*c.bp = c.buf[:0]
		readBuffers.Put(c.bp)
		c.buf, c.bp = nil, nil
	}
	r, err := c.nextBinary()
	if err != nil {
		return nil, err
	}
	b := get()
	if cap(b) < n {
		b = make([]byte, 0, max(n, minReadBuffer))
	}
	b, err = readAll(r, b[:n])
	if err != nil {
		c.readErr = c.wrapReadErr(err)
		return nil, c.readErr
	}
	return b, nil
}

// readAll appends what r has until io.EOF to b, growing it as needed.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, max(cap(b), minReadBuffer))
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// wrapReadErr turns an error from the WebSocket reader into the one
// ReadMessage reports.
func (c *Conn) wrapReadErr(err error) error {
	switch {
	case c.closed.Load():
		return fmt.Errorf("ws: read: %w", net.ErrClosed)
	case websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway):
		return fmt.Errorf("ws: read: connection closed by peer (%v): %w", err, io.EOF)
	default:
		return fmt.Errorf("ws: read: %w", err)
	}
}

// WriteMessage sends b as one binary WebSocket message. It does not retain b.
func (c *Conn) WriteMessage(b []byte) error {
	if c.closed.Load() {
		return fmt.Errorf("ws: write: %w", net.ErrClosed)
	}
	if err := c.ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
		if c.closed.Load() {
			return fmt.Errorf("ws: write: %w", net.ErrClosed)
		}
		return fmt.Errorf("ws: write: %w", err)
	}
	return nil
}

// RemoteAddr returns the peer's address: on the server side the PROXY
// protocol source when the listener reads PROXY headers, the socket's peer
// otherwise.
func (c *Conn) RemoteAddr() netip.AddrPort {
	return c.remote
}

// Close sends a WebSocket close frame (waiting at most half a second for it to
// go out) and closes the socket, which unblocks a pending ReadMessage or
// WriteMessage. It skips the TLS close_notify alert: the WebSocket close frame
// already marks a clean end, and the alert could block Close for seconds on a
// peer that does not read. Calling Close more than once returns the first
// call's result.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
		if err := c.raw.Close(); err != nil {
			c.closeErr = fmt.Errorf("ws: close: %w", err)
		}
	})
	return c.closeErr
}

// addrPort converts a TCP address to a netip.AddrPort with any IPv4-mapped
// IPv6 address unmapped.
func addrPort(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	if !ap.IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
