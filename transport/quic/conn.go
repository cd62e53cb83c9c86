package quic

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"reflect"
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
	// DATAGRAM frame's own header. With quic-go before v0.65 it is two bytes
	// less (see lengthSlack).
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
	// the stream and not yet returned, and fill keeps hroom bytes (the
	// most headroom asked for) free in front of them when it moves them;
	// rerr is the error that ended the stream.
	rbuf  []byte
	roff  int
	hroom int
	rerr  error

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
	return c.read(false)
}

var _ transport.HeadroomReader = (*Conn)(nil)

// ReadMessageHeadroom is ReadMessage with n free bytes in front of the
// message (transport.HeadroomReader), the message being buf[n:], and with
// every whole frame the read buffer holds in the one message rather than one
// frame per call, so a session opens a batch of frames per call. Nothing is
// copied to make the room: the Conn keeps n bytes free in front of its read
// buffer, and in front of a later frame lie the bytes of frames already
// returned. The caller may write into all of buf until the next call. Errors
// are ReadMessage's; frames before a malformed one are returned first.
func (c *Conn) ReadMessageHeadroom(n int) ([]byte, error) {
	if n < 0 || n > MaxReadHeadroom {
		return nil, fmt.Errorf("quic: read: headroom %d not in [0, %d]", n, MaxReadHeadroom)
	}
	if n > c.hroom {
		// The first call, or a larger headroom than before: from now on
		// fill keeps this much room in front of the unread bytes.
		c.hroom = n
		c.settle(0)
	}
	b, err := c.read(true)
	if err != nil {
		return nil, err
	}
	// Every frame lies at least c.hroom bytes into the buffer, behind the
	// room or frames already returned.
	off := c.roff - len(b)
	return c.rbuf[off-n : c.roff : c.roff], nil
}

// MaxReadHeadroom is the most headroom ReadMessageHeadroom gives.
const MaxReadHeadroom = 64

// read returns the next frame, or with all set every whole frame the buffer
// holds, as a slice of the read buffer; c.roff is just past it.
func (c *Conn) read(all bool) ([]byte, error) {
	if c.rerr == nil {
		b, err := c.nextFrames(all)
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

// maxReadBuf bounds the read-ahead buffer: the largest headroom, the largest
// frame and a chunk.
const maxReadBuf = MaxReadHeadroom + codec.HeaderLen + codec.MaxPayload + readChunk

// frameLen returns the length of the frame at the front of b, header and
// payload, or 0 if b does not hold its header yet.
func frameLen(b []byte) (int, error) {
	if len(b) < codec.HeaderLen {
		return 0, nil
	}
	t := codec.Type(b[0])
	if !t.Valid() {
		return 0, fmt.Errorf("%w %v", codec.ErrUnknownType, t)
	}
	n := binary.BigEndian.Uint32(b[1:codec.HeaderLen])
	if n > codec.MaxPayload {
		return 0, fmt.Errorf("%w: %v claims %d bytes, max %d", codec.ErrTooLong, t, n, codec.MaxPayload)
	}
	return codec.HeaderLen + int(n), nil
}

// nextFrames returns the next whole frame from the read-ahead buffer, and
// with all set the whole frames behind it too, reading the stream when the
// buffer does not hold one. At a clean end of the stream, between frames,
// it returns io.EOF itself. A malformed frame behind whole ones is left for
// the next call.
func (c *Conn) nextFrames(all bool) ([]byte, error) {
	for {
		avail := c.rbuf[c.roff:]
		need, err := frameLen(avail)
		if err != nil {
			return nil, err
		}
		if need > 0 && len(avail) >= need {
			end := need
			for all {
				m, err := frameLen(avail[end:])
				if err != nil || m == 0 || end+m > len(avail) {
					break
				}
				end += m
			}
			c.roff += end
			return avail[:end:end], nil
		}
		need = max(need, codec.HeaderLen)
		if err := c.fill(need); err != nil {
			switch {
			case err == io.EOF && len(c.rbuf) == c.roff:
				return nil, io.EOF
			case err == io.EOF:
				return nil, fmt.Errorf("%w: %d of %d frame bytes: %w", codec.ErrTruncated, len(c.rbuf)-c.roff, need, io.ErrUnexpectedEOF)
			}
			return nil, err
		}
	}
}

// fill makes room (see settle) and reads what the stream has into it. It
// returns the read's error only when the read brought no bytes.
func (c *Conn) fill(need int) error {
	c.settle(need)
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

// settle moves the unread bytes to c.hroom bytes from the front of the
// buffer and makes room behind them for a frame of need bytes in all. The
// buffer grows only when it is full of bytes that have arrived, at least
// doubling, so large frames settle on one buffer.
func (c *Conn) settle(need int) {
	unread := len(c.rbuf) - c.roff
	if c.roff != c.hroom && c.hroom+unread <= cap(c.rbuf) {
		copy(c.rbuf[c.hroom:c.hroom+unread], c.rbuf[c.roff:])
		c.rbuf, c.roff = c.rbuf[:c.hroom+unread], c.hroom
	}
	if c.roff == c.hroom && len(c.rbuf) < cap(c.rbuf) {
		return
	}
	size := min(max(2*cap(c.rbuf), readChunk), maxReadBuf)
	size = max(size, c.hroom+need, c.hroom+unread) // past maxReadBuf: unreachable, it holds any frame
	nb := make([]byte, c.hroom+unread, size)
	copy(nb[c.hroom:], c.rbuf[c.roff:])
	c.rbuf, c.roff = nb, c.hroom
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
	if lengthSlack > 0 && len(b)+lengthSlack > int(c.room.Load()) {
		// Within the last bytes of the room quic-go last reported, which
		// its packer would drop (see lengthSlack): ask again, path MTU
		// discovery may have grown it.
		if room := c.MaxDatagramSize(); len(b) > room {
			return fmt.Errorf("quic: send datagram: %w: %d bytes, room for %d", ErrDatagramTooLarge, len(b), room)
		}
	}
	err := c.qc.SendDatagram(b)
	if err == nil {
		return nil
	}
	if tl, ok := errors.AsType[*quic.DatagramTooLargeError](err); ok {
		c.room.Store(tl.MaxDatagramPayloadSize)
		return fmt.Errorf("quic: send datagram: %w: %d bytes, room for %d", ErrDatagramTooLarge, len(b), tl.MaxDatagramPayloadSize-int64(lengthSlack))
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

var _ transport.DatagramBatchReceiver = (*Conn)(nil)

// ReceiveDatagrams waits for the next datagram as ReceiveDatagram does and
// appends it to bufs, then appends the datagrams already waiting behind it
// without waiting for more, while bufs has capacity: one, or up to cap(bufs)
// in all. Each is a
// new slice the caller owns. It returns ReceiveDatagram's errors, and bufs
// unchanged with them.
//
// quic-go hands out one datagram per call and has no call that does not
// wait, so the ones behind the first are taken with pollContext, a context
// that is already done: quic-go returns a waiting datagram, or nothing.
func (c *Conn) ReceiveDatagrams(ctx context.Context, bufs [][]byte) ([][]byte, error) {
	limit := cap(bufs)
	b, err := c.ReceiveDatagram(ctx)
	if err != nil {
		return bufs, err
	}
	bufs = append(bufs, b)
	for len(bufs) < limit {
		b, err := c.qc.ReceiveDatagram(pollContext{})
		if err != nil || b == nil {
			// Empty, or the connection has ended, which the next
			// ReceiveDatagram reports.
			break
		}
		bufs = append(bufs, b)
	}
	return bufs, nil
}

// pollContext is a context that is done but reports no error: quic-go's
// ReceiveDatagram (v0.63 to v0.65) checks the context's error, then its
// queue, and then, with the queue empty, returns (nil, ctx.Err()) as soon as
// ctx is done, so with this context it never waits. A standard canceled
// context would not do: v0.65 fails on its error before it looks at the
// queue. TestReceiveDatagramsTakesWhatIsWaiting holds quic-go to this.
type pollContext struct{}

// closedChan is pollContext's Done channel.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

func (pollContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (pollContext) Done() <-chan struct{}       { return closedChan }
func (pollContext) Err() error                  { return nil }
func (pollContext) Value(any) any               { return nil }

// MaxDatagramSize returns the largest payload SendDatagram accepts now. It
// starts at InitialDatagramRoom (1243 bytes; two less with quic-go before
// v0.65) and grows as quic-go's path MTU discovery finds that larger packets
// reach the peer.
func (c *Conn) MaxDatagramSize() int {
	// quic-go reports its limit only in a DatagramTooLargeError, so ask it
	// to send a payload no packet can hold; it checks the size first and
	// sends nothing.
	err := c.qc.SendDatagram(oversized[:])
	if tl, ok := errors.AsType[*quic.DatagramTooLargeError](err); ok {
		c.room.Store(tl.MaxDatagramPayloadSize)
	}
	return int(c.room.Load()) - lengthSlack
}

// lengthSlack is how much less than quic-go's datagram room MaxDatagramSize
// reports. quic-go from v0.65 packs a DATAGRAM frame that fits only without
// its length field without it; earlier versions (v0.63, which Caddy builds
// with) always write the two-byte length and silently drop a frame that then
// does not fit, which with ConnIDLen-byte connection IDs is one in the last
// two bytes of the room. v0.65 is told apart by a field it added to Config.
var lengthSlack = func() int {
	if _, ok := reflect.TypeFor[quic.Config]().FieldByName("RequireStreamCreditRelease"); ok {
		return 0
	}
	return 2
}()

var _ transport.DatagramPadder = (*Conn)(nil)

// PadDatagrams reports true: both ends of a Warren QUIC connection choose
// connection IDs of ConnIDLen bytes, so a datagram of exactly
// MaxDatagramSize bytes fills its QUIC packet to the path MTU (with any
// quic-go version, given lengthSlack), and quic-go sends a run of full
// packets with one GSO sendmsg.
func (c *Conn) PadDatagrams() bool { return true }

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
