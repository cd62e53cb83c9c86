package quic

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/transport"
)

const (
	// InitialDatagramRoom is the datagram payload room of a new connection,
	// measured with quic-go v0.65 (DESIGN §3): a 1280-byte first packet less
	// a short header with the longest connection ID, the AEAD tag and the
	// DATAGRAM frame's own header.
	InitialDatagramRoom = 1243

	// closeGrace bounds how long Close waits for the peer to take the last
	// stream data before it closes the connection anyway.
	closeGrace = 500 * time.Millisecond

	// maxUDPPayload is larger than any UDP datagram can be, so no QUIC
	// packet has room for a payload this long.
	maxUDPPayload = 1 << 16
)

// ErrDatagramTooLarge reports that a payload does not fit in one QUIC
// datagram. The error SendDatagram returns wraps it and gives the current
// limit, which MaxDatagramSize then also reports.
var ErrDatagramTooLarge = errors.New("quic: datagram too large")

// oversized is a payload no QUIC packet can carry. MaxDatagramSize offers it
// to quic-go, which reports its current limit in the DatagramTooLargeError
// and never reads the bytes.
var oversized [maxUDPPayload]byte

var _ transport.DatagramConn = (*Conn)(nil)

// Conn is one QUIC connection to a Warren peer: a reliable stream of frames
// (transport.Conn) and unreliable datagrams beside it.
//
// One goroutine may call ReadMessage while another calls WriteMessage;
// SendDatagram and ReceiveDatagram may be called from any goroutines; Close
// may be called at any time from any goroutine and unblocks all of them.
type Conn struct {
	qc     *quic.Conn
	stream *quic.Stream
	remote netip.AddrPort

	// release frees what the Conn holds besides the QUIC connection: the
	// client's socket, or the server's entry in its listener.
	release func()

	// Owned by the reading goroutine: rbuf[roff:] holds bytes read from
	// the stream and not yet returned; rerr is the error that ended it.
	rbuf []byte
	roff int
	rerr error

	wmu sync.Mutex // serializes stream writes with the FIN that Close sends

	room atomic.Int64 // last datagram payload room quic-go reported

	closing   atomic.Bool // Close has been called
	peerDone  atomic.Bool // the peer finished its stream; abort closed the connection
	closeOnce sync.Once
}

// newConn wraps an established QUIC connection and its stream. release, if
// not nil, runs once the connection is closed.
func newConn(qc *quic.Conn, st *quic.Stream, release func()) *Conn {
	remote, _ := addrPort(qc.RemoteAddr())
	c := &Conn{
		qc:      qc,
		stream:  st,
		remote:  remote,
		release: release,
	}
	c.room.Store(InitialDatagramRoom)
	return c
}

// ReadMessage returns the next frame from the stream, header and payload, as
// one message. The returned slice is valid until the next call: the Conn
// reads the stream ahead into one buffer that it reuses and hands each frame
// out of it as it came, with no copy. The buffer starts at readChunk bytes
// and grows only when it is full of bytes that have arrived, up to one
// frame of the largest size and a read ahead, so a header claiming
// codec.MaxPayload bytes followed by nothing costs one small chunk.
//
// A malformed frame is an error wrapping codec's ErrUnknownType, ErrTooLong or
// ErrTruncated. When the peer has finished its stream or closed the connection
// normally, the error wraps io.EOF, and ReadMessage closes the connection:
// the peer is done with it. After Close the error wraps net.ErrClosed. Once
// ReadMessage has failed it returns the same kind of error on every later call.
func (c *Conn) ReadMessage() ([]byte, error) {
	if c.rerr == nil {
		b, err := c.nextFrame()
		if err == nil {
			return b, nil
		}
		c.rerr = err
	}
	if c.rerr == io.EOF {
		// The peer sent its FIN from Close and waits for this side to
		// end the connection; nothing more can arrive.
		c.abort()
		return nil, fmt.Errorf("quic: read: stream finished by peer: %w", io.EOF)
	}
	return nil, c.wrapErr("read", c.rerr)
}

// readChunk is the read-ahead buffer's first size. A stream of small
// frames is read a chunk at a time; the buffer doubles when a read fills it.
const readChunk = 4096

// maxReadBuf bounds the read-ahead buffer: the largest frame and a chunk.
const maxReadBuf = codec.HeaderLen + codec.MaxPayload + readChunk

// nextFrame returns the next whole frame from the read-ahead buffer,
// reading the stream when the buffer does not hold one. At a clean end of
// the stream, between frames, it returns io.EOF itself.
func (c *Conn) nextFrame() ([]byte, error) {
	for {
		avail := c.rbuf[c.roff:]
		need := codec.HeaderLen
		if len(avail) >= codec.HeaderLen {
			t := codec.Type(avail[0])
			if !t.Valid() {
				return nil, fmt.Errorf("%w %v", codec.ErrUnknownType, t)
			}
			n := binary.BigEndian.Uint32(avail[1:codec.HeaderLen])
			if n > codec.MaxPayload {
				return nil, fmt.Errorf("%w: %v claims %d bytes, max %d", codec.ErrTooLong, t, n, codec.MaxPayload)
			}
			need += int(n)
			if len(avail) >= need {
				c.roff += need
				return avail[:need:need], nil
			}
		}
		if err := c.fill(need); err != nil {
			switch {
			case err == io.EOF && len(c.rbuf) == 0:
				return nil, io.EOF
			case err == io.EOF:
				return nil, fmt.Errorf("%w: %d of %d frame bytes: %w", codec.ErrTruncated, len(c.rbuf), need, io.ErrUnexpectedEOF)
			}
			return nil, err
		}
	}
}

// fill moves the unread bytes to the front of the buffer, makes room for a
// frame of need bytes in all, and reads what the stream has. It returns the
// read's error only when the read brought no bytes.
func (c *Conn) fill(need int) error {
	if c.roff > 0 {
		n := copy(c.rbuf, c.rbuf[c.roff:])
		c.rbuf, c.roff = c.rbuf[:n], 0
	}
	if len(c.rbuf) == cap(c.rbuf) {
		// Full of bytes that have arrived (or empty at the start): grow,
		// at least doubling so large frames settle on one buffer.
		size := min(max(2*cap(c.rbuf), readChunk), maxReadBuf)
		if size < need {
			size = need // unreachable: maxReadBuf holds any frame
		}
		nb := make([]byte, len(c.rbuf), size)
		copy(nb, c.rbuf)
		c.rbuf = nb
	}
	m, err := c.stream.Read(c.rbuf[len(c.rbuf):cap(c.rbuf)])
	c.rbuf = c.rbuf[:len(c.rbuf)+m]
	if m > 0 {
		return nil
	}
	if err == nil {
		return nil // quic-go's Read never returns 0, nil; try again
	}
	return err
}

// WriteMessage writes b, one or more encoded frames, to the stream. It
// returns once quic-go has taken the bytes, blocking while the peer's flow
// control window is full. It does not retain b.
func (c *Conn) WriteMessage(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closing.Load() {
		return fmt.Errorf("quic: write: %w", net.ErrClosed)
	}
	if _, err := c.stream.Write(b); err != nil {
		return c.wrapErr("write", err)
	}
	return nil
}

// SendDatagram sends b as one QUIC DATAGRAM frame. Delivery is not
// guaranteed. It blocks only while quic-go's small send queue is full, which
// paces a sender to the connection's congestion window. quic-go copies b, so
// the caller may reuse it at once.
//
// If b does not fit in one datagram, SendDatagram sends nothing and returns
// an error wrapping ErrDatagramTooLarge that gives the current limit; the
// caller should carry the packet on the stream instead (DESIGN §3). After
// Close the error wraps net.ErrClosed.
func (c *Conn) SendDatagram(b []byte) error {
	if c.closing.Load() {
		// Not left to quic-go: some of its versions (v0.63, which Caddy
		// builds with) queue a datagram on a closed connection silently.
		return fmt.Errorf("quic: send datagram: %w", net.ErrClosed)
	}
	err := c.qc.SendDatagram(b)
	if err == nil {
		return nil
	}
	if tl, ok := errors.AsType[*quic.DatagramTooLargeError](err); ok {
		c.room.Store(tl.MaxDatagramPayloadSize)
		return fmt.Errorf("quic: send datagram: %w: %d bytes, room for %d", ErrDatagramTooLarge, len(b), tl.MaxDatagramPayloadSize)
	}
	return c.wrapErr("send datagram", err)
}

// ReceiveDatagram waits for the next datagram from the peer and returns its
// payload, a new slice the caller owns. quic-go queues up to 128 datagrams
// that have arrived but not been received; it drops those that arrive when
// the queue is full. If ctx ends first, ReceiveDatagram returns ctx's error;
// after Close, an error wrapping net.ErrClosed; when the peer has closed the
// connection normally, one wrapping io.EOF.
func (c *Conn) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	b, err := c.qc.ReceiveDatagram(ctx)
	if err != nil {
		if ctx.Err() != nil && !c.closing.Load() {
			return nil, fmt.Errorf("quic: receive datagram: %w", err)
		}
		return nil, c.wrapErr("receive datagram", err)
	}
	return b, nil
}

// MaxDatagramSize returns the largest payload SendDatagram accepts now. It
// starts at InitialDatagramRoom (1243 bytes) and grows as quic-go's path MTU
// discovery finds that larger packets reach the peer.
func (c *Conn) MaxDatagramSize() int {
	// quic-go reports its limit only in a DatagramTooLargeError, so ask it
	// to send a payload no packet can hold; it checks the size first and
	// sends nothing.
	err := c.qc.SendDatagram(oversized[:])
	if tl, ok := errors.AsType[*quic.DatagramTooLargeError](err); ok {
		c.room.Store(tl.MaxDatagramPayloadSize)
	}
	return int(c.room.Load())
}

// RemoteAddr returns the peer's UDP address as it was when the connection was
// established.
func (c *Conn) RemoteAddr() netip.AddrPort {
	return c.remote
}

// Close ends the connection. It first finishes the stream after any data
// written so far and gives the peer up to half a second to take it (the peer's
// ReadMessage sees the end of the stream and closes the connection, which ends
// the wait early), so a Disconnect frame written just before Close arrives.
// Then it closes the QUIC connection, sending CONNECTION_CLOSE, and frees the
// socket. ReadMessage, WriteMessage, SendDatagram and ReceiveDatagram are
// unblocked: the stream at once, datagrams when the connection closes.
// Calling Close more than once does nothing and returns nil.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closing.Store(true)
		// Stop reading now: this side will read nothing more, and a
		// blocked ReadMessage returns.
		c.stream.CancelRead(0)
		// A WriteMessage blocked on flow control would hold wmu forever:
		// a deadline in the past ends it. One that has not started yet
		// fails without writing anything, so no half frame goes out.
		_ = c.stream.SetWriteDeadline(time.Now())
		c.wmu.Lock()
		finErr := c.stream.Close()
		c.wmu.Unlock()
		if finErr == nil {
			t := time.NewTimer(closeGrace)
			select {
			case <-c.qc.Context().Done():
			case <-t.C:
			}
			t.Stop()
		}
		_ = c.qc.CloseWithError(closeNormal, "")
		if c.release != nil {
			c.release()
		}
	})
	return nil
}

// abort closes the connection at once, without the grace Close gives the
// stream, once the peer has finished its stream. A later Close still frees
// the socket.
func (c *Conn) abort() {
	c.peerDone.Store(true)
	_ = c.qc.CloseWithError(closeNormal, "")
}

// wrapErr turns an error from quic-go into the one this package reports for
// op. Every quic-go connection error wraps net.ErrClosed, so it tells apart
// this side's Close (net.ErrClosed), the peer's normal end of the stream or
// the connection (io.EOF) and
// everything else (the quic-go error: idle timeout, protocol error, the
// peer's application error).
func (c *Conn) wrapErr(op string, err error) error {
	if c.closing.Load() {
		return fmt.Errorf("quic: %s: %w", op, net.ErrClosed)
	}
	if c.peerDone.Load() {
		return fmt.Errorf("quic: %s: stream finished by peer: %w", op, io.EOF)
	}
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && ae.Remote && ae.ErrorCode == closeNormal {
		return fmt.Errorf("quic: %s: connection closed by peer (%v): %w", op, ae, io.EOF)
	}
	return fmt.Errorf("quic: %s: %w", op, err)
}
