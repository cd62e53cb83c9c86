package session

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/handshake"
	"github.com/warrenvpn/warren/transport"
)

// On a datagram transport (QUIC) IP packets travel in datagrams as
// [0x10][counter:8][ciphertext], sealed with keys derived from the Noise
// handshake apart from the stream's (handshake.Session.DatagramCiphers), the
// counter as explicit nonce and a sliding replay window on receipt. On a
// transport.DatagramPadder a packet within an eighth of the datagram room is
// padded with zeros, inside the seal, to fill it, so that the carrier sends
// runs of them with one system call; the receiver cuts every packet to the
// length its IP header gives (a peer that does not pad loses nothing, and
// one that does not cut passes the zeros on to an IP stack that ignores
// them). A packet
// that does not fit the current datagram room (1243 bytes of payload before
// path MTU discovery, 1404 after, on loopback) goes on the stream as an
// ordinary sealed frame: never silently lost, and counted.

// datagramHeader is the type byte and the counter in front of the ciphertext.
const datagramHeader = 1 + 8

// datagramQueue is how many received datagrams wait for the handler.
// quic-go holds only 128 before it drops; a burst of a TCP window is more.
const datagramQueue = 2048

// roomRecheck is how often a packet that did not fit the datagram room asks
// the transport again (path MTU discovery grows the room), and how often a
// session that pads datagrams asks, at most; it looks at the clock once
// every roomRecheckEvery datagrams.
const (
	roomRecheck      = 100 * time.Millisecond
	roomRecheckEvery = 256
)

// padWaste bounds the padding: a packet is padded to fill the datagram room
// only if it is at least (1 - 1/padWaste) of it, so padding never adds more
// than an eighth to what goes on the wire. A bulk flow's packets, the size
// of the tunnel MTU, are; its acknowledgements are not.
const padWaste = 8

var errHeadroom = errors.New("session: Write needs offset of at least Headroom bytes")

// datagramPath is a session's datagram side.
type datagramPath struct {
	conn       transport.DatagramConn
	send, recv *handshake.DatagramCipher
	// Owned by the writer (under the session's wmu).
	counter   uint64 // next send counter
	room      int    // datagram payload room as last asked
	roomAsked time.Time
	pad       bool   // the transport is a transport.DatagramPadder that wants it
	padded    uint64 // datagrams sent since pad was set, to look at the clock now and then
	scratch   []byte
	// Owned by the datagram reader.
	window handshake.ReplayWindow

	ctx    context.Context
	cancel context.CancelFunc

	sent, onStream, replayed, bad, queueFull atomic.Uint64
}

func newDatagramPath(conn transport.DatagramConn, hs *handshake.Session) (*datagramPath, error) {
	send, recv, err := hs.DatagramCiphers()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &datagramPath{conn: conn, send: send, recv: recv, ctx: ctx, cancel: cancel, room: conn.MaxDatagramSize(), roomAsked: time.Now()}
	if p, ok := conn.(transport.DatagramPadder); ok {
		d.pad = p.PadDatagrams()
	}
	return d, nil
}

// trySend seals b[offset:] in place into a datagram, its header in the
// headroom and its tag behind it, and sends it. It reports false, with the
// packet restored, when the packet must go on the stream instead.
func (d *datagramPath) trySend(b []byte, offset int) bool {
	n := len(b) - offset
	if datagramHeader+n+handshake.Overhead > d.room {
		if now := time.Now(); now.Sub(d.roomAsked) >= roomRecheck {
			d.room, d.roomAsked = d.conn.MaxDatagramSize(), now
		}
		if datagramHeader+n+handshake.Overhead > d.room {
			d.onStream.Add(1)
			return false
		}
	}
	ctr := d.counter
	d.counter++ // a counter is never used twice, sent or not
	pt := b[offset:]
	inPlace := cap(pt)-len(pt) >= handshake.Overhead
	var dgram []byte
	if d.pad {
		if d.padded++; d.padded%roomRecheckEvery == 0 {
			if now := time.Now(); now.Sub(d.roomAsked) >= roomRecheck {
				// Path MTU discovery may have grown the room since.
				d.room, d.roomAsked = d.conn.MaxDatagramSize(), now
			}
		}
	}
	if full := d.room - datagramHeader - handshake.Overhead; d.pad && n < full && n >= full-full/padWaste {
		// Padded to fill its packet, so the transport batches it with
		// the packets around it (transport.DatagramPadder); sealed in
		// the scratch buffer, which has the room.
		inPlace = false
		if cap(d.scratch) < d.room {
			d.scratch = make([]byte, 0, d.room)
		}
		p := d.scratch[:datagramHeader+full]
		p[0] = byte(codec.IPPacket)
		binary.BigEndian.PutUint64(p[1:datagramHeader], ctr)
		clear(p[datagramHeader+copy(p[datagramHeader:], pt):])
		dgram = d.send.Seal(p[:datagramHeader], ctr, p[datagramHeader:])
		d.scratch = dgram
	} else if inPlace {
		h := b[offset-datagramHeader : offset]
		h[0] = byte(codec.IPPacket)
		binary.BigEndian.PutUint64(h[1:], ctr)
		ct := d.send.Seal(pt[:0], ctr, pt)
		dgram = b[offset-datagramHeader : offset+len(ct)]
	} else {
		// No tailroom: seal into the writer's scratch buffer.
		dgram = append(d.scratch[:0], byte(codec.IPPacket))
		dgram = binary.BigEndian.AppendUint64(dgram, ctr)
		dgram = d.send.Seal(dgram, ctr, pt)
		d.scratch = dgram
	}
	if err := d.conn.SendDatagram(dgram); err != nil {
		if inPlace {
			// Restore the packet for the stream: the AEAD key is
			// symmetric, so this side can open what it sealed.
			_, _ = d.send.Open(pt[:0], ctr, dgram[datagramHeader:])
		}
		d.room, d.roomAsked = d.conn.MaxDatagramSize(), time.Now()
		d.onStream.Add(1)
		return false
	}
	d.sent.Add(1)
	return true
}

// datagramLoop reads datagrams until the session ends and hands their
// packets to the handler in batches. One goroutine only drains the
// transport's small receive queue into a larger one, so a burst is not
// dropped while the handler works on the previous batch. It takes what the
// transport holds a batch at a time when the transport is a
// transport.DatagramBatchReceiver, and queues each batch with one lock and
// at most one wake of the handler's side. The queue is a ring that grows
// with traffic (an idle session holds a small one).
func (s *Session) datagramLoop() {
	d := s.dg
	q := &dgQueue{kick: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer q.close()
		br, _ := d.conn.(transport.DatagramBatchReceiver)
		var in [][]byte // made when the first datagram arrives: an idle session holds none
		for {
			var b []byte
			var err error
			switch {
			case in != nil && br != nil:
				in, err = br.ReceiveDatagrams(d.ctx, in[:0])
			case in != nil:
				if b, err = d.conn.ReceiveDatagram(d.ctx); err == nil {
					in = append(in[:0], b)
				}
			default:
				if b, err = d.conn.ReceiveDatagram(d.ctx); err == nil {
					in = append(make([][]byte, 0, BatchSize), b)
				}
			}
			if err != nil {
				return // the stream's reader sees the connection end and closes the session
			}
			if full := q.push(in); full > 0 {
				d.queueFull.Add(uint64(full))
			}
			clear(in)
		}
	}()
	defer func() { <-done }()

	var raw, bufs [][]byte
	for range q.kick {
		for {
			var closed bool
			raw, closed = q.take(raw[:0])
			if len(raw) > 0 {
				if bufs == nil {
					bufs = make([][]byte, 0, BatchSize)
				}
				bufs = bufs[:0]
				for _, b := range raw {
					bufs = s.openWithHeadroom(bufs, b)
				}
				clear(raw)
				if len(bufs) > 0 {
					s.lastRecv.Store(time.Now().UnixNano())
					s.deliver(bufs, datagramHeader)
					clear(bufs)
				}
				continue
			}
			if closed {
				return
			}
			break
		}
	}
}

// dgQueue holds received datagrams for the handler's side: a ring of at most
// datagramQueue, grown by doubling from minQueue.
type dgQueue struct {
	mu      sync.Mutex
	q       [][]byte // len a power of two, or 0
	head, n int
	closed  bool
	kick    chan struct{} // cap 1
}

// push queues the datagrams of bs, taking the lock and waking the handler's
// side once for all of them, and returns how many it dropped for want of
// room.
func (q *dgQueue) push(bs [][]byte) (full int) {
	q.mu.Lock()
	wake := q.n == 0
	for i, b := range bs {
		if q.n == datagramQueue {
			full = len(bs) - i
			break
		}
		if q.n == len(q.q) {
			nq := make([][]byte, max(minQueue, 2*len(q.q)))
			for i := range q.n {
				nq[i] = q.q[(q.head+i)&(len(q.q)-1)]
			}
			q.q, q.head = nq, 0
		}
		q.q[(q.head+q.n)&(len(q.q)-1)] = b
		q.n++
	}
	wake = wake && q.n > 0
	q.mu.Unlock()
	if wake {
		q.signal()
	}
	return full
}

// take moves up to BatchSize datagrams into raw and reports whether the
// receiving side has stopped.
func (q *dgQueue) take(raw [][]byte) ([][]byte, bool) {
	if raw == nil {
		raw = make([][]byte, 0, BatchSize)
	}
	q.mu.Lock()
	for q.n > 0 && len(raw) < BatchSize {
		raw = append(raw, q.q[q.head])
		q.q[q.head] = nil
		q.head = (q.head + 1) & (len(q.q) - 1)
		q.n--
	}
	closed := q.closed
	q.mu.Unlock()
	return raw, closed
}

// close marks the receiving side stopped and wakes the handler's side.
func (q *dgQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

func (q *dgQueue) signal() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// openWithHeadroom is openDatagram, the packet appended with its header's
// room in front of it: b[:datagramHeader+len(packet)].
func (s *Session) openWithHeadroom(bufs [][]byte, b []byte) [][]byte {
	n := len(bufs)
	bufs = s.openDatagram(bufs, b)
	if len(bufs) > n {
		end := datagramHeader + len(bufs[n])
		bufs[n] = b[:end:end]
	}
	return bufs
}

// openDatagram opens b, which the caller owns, in place and appends its
// packet to bufs, or counts why not.
func (s *Session) openDatagram(bufs [][]byte, b []byte) [][]byte {
	d := s.dg
	if len(b) < datagramHeader+handshake.Overhead || b[0] != byte(codec.IPPacket) {
		d.bad.Add(1)
		return bufs
	}
	ctr := binary.BigEndian.Uint64(b[1:datagramHeader])
	ct := b[datagramHeader:]
	pt, err := d.recv.Open(ct[:0], ctr, ct)
	if err != nil {
		d.bad.Add(1)
		return bufs
	}
	// The window is updated only for datagrams that authenticate, so a
	// forged counter cannot move it.
	if !d.window.Accept(ctr) {
		d.replayed.Add(1)
		return bufs
	}
	pt = trimPadding(pt)
	s.packetsIn.Add(1)
	s.bytesIn.Add(uint64(len(pt)))
	return append(bufs, pt)
}

// trimPadding cuts an IP packet to the length its header gives, dropping
// the zeros a sender that pads datagrams put behind it (as WireGuard does
// with its padding). Anything that does not parse as a longer IPv4 or IPv6
// packet is returned whole.
func trimPadding(p []byte) []byte {
	n := len(p)
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		n = int(binary.BigEndian.Uint16(p[2:4]))
		if n < 20 {
			return p
		}
	case len(p) >= 40 && p[0]>>4 == 6:
		n = 40 + int(binary.BigEndian.Uint16(p[4:6]))
	}
	if n < len(p) {
		return p[:n]
	}
	return p
}
