package warren

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/handshake"
	"github.com/warrenvpn/warren/transport"
)

// Sizes of a link's queues and batches.
const (
	// outQueueLen bounds the packets waiting for a link's writer; beyond it
	// packets are dropped and counted (the sender's TCP backs off).
	outQueueLen = 1024
	// writeBatch is the most packets sealed into one transport message.
	writeBatch = 64
)

// outItem is a frame waiting for the writer: its type and plaintext in a pooled buffer.
type outItem struct {
	typ codec.Type
	buf *[]byte
}

// bufPool hands out packet buffers of one capacity.
type bufPool struct {
	size int
	pool sync.Pool
}

func newBufPool(size int) *bufPool {
	p := &bufPool{size: size}
	p.pool.New = func() any {
		b := make([]byte, 0, size)
		return &b
	}
	return p
}

func (p *bufPool) get() *[]byte { return p.pool.Get().(*[]byte) }
func (p *bufPool) put(b *[]byte) {
	*b = (*b)[:0]
	p.pool.Put(b)
}

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

// linkHandler receives what a link reads. Its methods run on the link's reader goroutine.
type linkHandler interface {
	// packets takes a batch of opened IP packets; it must not retain bufs.
	packets(bufs [][]byte)
	// control takes an opened Keepalive or KeepaliveAck payload.
	control(t codec.Type, payload []byte)
	// closed is called once, when the link has ended, with the reason.
	closed(r closeReason, remote bool)
}

// link runs an authenticated session over a transport.Conn: a reader that
// opens frames and hands them to its handler in batches, and a writer that
// seals queued frames into batched messages. Both sides of the tunnel use it.
type link struct {
	conn    transport.Conn
	hs      *handshake.Session
	pool    *bufPool
	h       linkHandler
	out     chan outItem
	done    chan struct{}
	stopped chan struct{} // closed when both goroutines have returned

	closeOnce sync.Once
	mu        sync.Mutex
	reason    closeReason
	notify    bool // send a Disconnect with reason before closing
	remote    bool // the peer ended it

	// keepaliveEvery is how often the client side sends a Keepalive.
	keepaliveEvery time.Duration
	// mtu is the tunnel MTU the session announced.
	mtu int
	// dg is the QUIC datagram path, nil on other transports.
	dg *datagramPath
	// deliverMu serialises the handler's packets calls: the stream and
	// datagram readers both deliver.
	deliverMu sync.Mutex

	lastRecv                                 atomic.Int64 // unix nanoseconds
	bytesIn, bytesOut, packetsIn, packetsOut atomic.Uint64
	queueFull, oversized                     atomic.Uint64
}

func newLink(conn transport.Conn, hs *handshake.Session, pool *bufPool, h linkHandler) *link {
	l := &link{
		conn:    conn,
		hs:      hs,
		pool:    pool,
		h:       h,
		out:     make(chan outItem, outQueueLen),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	l.lastRecv.Store(time.Now().UnixNano())
	return l
}

// start runs the reader and writer; wg tracks both.
func (l *link) start(wg *sync.WaitGroup) {
	var both sync.WaitGroup
	both.Add(2)
	wg.Add(3)
	go func() { defer wg.Done(); defer both.Done(); l.readLoop() }()
	go func() { defer wg.Done(); defer both.Done(); l.writeLoop() }()
	if l.dg != nil {
		both.Add(1)
		wg.Add(1)
		go func() { defer wg.Done(); defer both.Done(); l.datagramLoop() }()
	}
	go func() {
		defer wg.Done()
		both.Wait()
		l.drain()
		close(l.stopped)
		l.mu.Lock()
		reason, remote := l.reason, l.remote
		l.mu.Unlock()
		l.h.closed(reason, remote)
	}()
}

// close ends the link. With notify, the peer gets a sealed Disconnect carrying
// r first. Only the first call's reason counts.
func (l *link) close(r closeReason, notify, remote bool) {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.reason, l.notify, l.remote = r, notify, remote
		l.mu.Unlock()
		close(l.done)
		if l.dg != nil {
			l.dg.cancel()
		}
		if !notify {
			l.conn.Close()
			return
		}
		// The writer sends the Disconnect and closes the conn; this bounds
		// how long a peer that does not read can hold it up.
		time.AfterFunc(2*time.Second, func() { l.conn.Close() })
	})
}

func (l *link) counts() linkCounts {
	n := linkCounts{
		bytesIn:    l.bytesIn.Load(),
		bytesOut:   l.bytesOut.Load(),
		packetsIn:  l.packetsIn.Load(),
		packetsOut: l.packetsOut.Load(),
		oversized:  l.oversized.Load(),
		queueFull:  l.queueFull.Load(),
	}
	if l.dg != nil {
		n.replayed = l.dg.replayed.Load()
		n.onStream = l.dg.onStream.Load()
	}
	return n
}

func (l *link) lastSeen() time.Time { return time.Unix(0, l.lastRecv.Load()) }

// mtuInfo reports the session's packet sizes.
func (l *link) mtuInfo() MTUInfo {
	info := MTUInfo{TunnelMTU: l.mtu}
	if d := l.dg; d != nil {
		info.MaxDatagram = d.conn.MaxDatagramSize()
		info.DatagramsSent = d.sent.Load()
		info.OversizedOnStream = d.onStream.Load()
		info.Replayed = d.replayed.Load()
	}
	return info
}

// send queues a copy of an IP packet for the peer. It never blocks: a full
// queue or an ended link drops the packet, counted.
func (l *link) send(pkt []byte) bool {
	if len(pkt) > l.pool.size {
		l.oversized.Add(1)
		return false
	}
	return l.enqueue(codec.IPPacket, pkt)
}

func (l *link) enqueue(t codec.Type, payload []byte) bool {
	select {
	case <-l.done:
		return false
	default:
	}
	b := l.pool.get()
	*b = append(*b, payload...)
	select {
	case l.out <- outItem{typ: t, buf: b}:
		return true
	default:
		l.pool.put(b)
		l.queueFull.Add(1)
		return false
	}
}

// drain returns queued buffers to the pool once the writer has stopped.
func (l *link) drain() {
	for {
		select {
		case it := <-l.out:
			l.pool.put(it.buf)
		default:
			return
		}
	}
}

func (l *link) readLoop() {
	var plain []byte
	bufs := make([][]byte, 0, writeBatch)
	for {
		msg, err := l.conn.ReadMessage()
		if err != nil {
			l.close(closeReason{codec.DisconnectUnspecified, "connection lost: " + err.Error()}, false, true)
			return
		}
		l.lastRecv.Store(time.Now().UnixNano())
		// Plaintext is never longer than its ciphertext, so one buffer of
		// the message's size holds every packet without moving.
		if cap(plain) < len(msg) {
			plain = make([]byte, 0, len(msg))
		}
		plain = plain[:0]
		bufs = bufs[:0]
		for len(msg) > 0 {
			t, payload, rest, err := codec.Parse(msg)
			if err != nil {
				l.close(closeReason{codec.DisconnectProtocolError, "protocol error: " + err.Error()}, false, false)
				return
			}
			msg = rest
			start := len(plain)
			plain, err = l.hs.Open(plain, payload)
			if err != nil {
				l.close(closeReason{codec.DisconnectProtocolError, "protocol error: " + t.String() + ": " + err.Error()}, false, false)
				return
			}
			body := plain[start:]
			switch t {
			case codec.IPPacket:
				l.packetsIn.Add(1)
				l.bytesIn.Add(uint64(len(body)))
				bufs = append(bufs, body)
			case codec.Keepalive, codec.KeepaliveAck:
				l.h.control(t, body)
			case codec.Disconnect:
				if len(bufs) > 0 {
					l.deliver(bufs)
				}
				r := parseDisconnect(body)
				r.text = "peer disconnected: " + r.text
				l.close(r, false, true)
				return
			default:
				l.close(closeReason{codec.DisconnectProtocolError, "protocol error: unexpected " + t.String() + " frame"}, false, false)
				return
			}
		}
		if len(bufs) > 0 {
			l.deliver(bufs)
		}
	}
}

// deliver hands opened packets to the handler, one reader at a time.
func (l *link) deliver(bufs [][]byte) {
	l.deliverMu.Lock()
	l.h.packets(bufs)
	l.deliverMu.Unlock()
}

func (l *link) writeLoop() {
	msg := make([]byte, 0, 64<<10)
	batch := make([]outItem, 0, writeBatch)
	for {
		select {
		case it := <-l.out:
			batch = append(batch[:0], it)
		more:
			for len(batch) < writeBatch {
				select {
				case it := <-l.out:
					batch = append(batch, it)
				default:
					break more
				}
			}
			var err error
			msg, err = l.sealBatch(msg[:0], batch)
			if err == nil && len(msg) > 0 {
				err = l.conn.WriteMessage(msg)
			}
			if err != nil {
				l.close(closeReason{codec.DisconnectUnspecified, "connection lost: " + err.Error()}, false, true)
				return
			}
		case <-l.done:
			l.mu.Lock()
			notify, reason := l.notify, l.reason
			l.mu.Unlock()
			if notify {
				if m, err := l.sealFrame(msg[:0], codec.Disconnect, codec.AppendDisconnect(nil, reason.code, reason.text)); err == nil {
					_ = l.conn.WriteMessage(m)
				}
				l.conn.Close()
			}
			return
		}
	}
}

// sealBatch seals every queued item into msg, returning the buffers to the pool.
func (l *link) sealBatch(msg []byte, batch []outItem) ([]byte, error) {
	var err error
	for _, it := range batch {
		if err == nil {
			if it.typ == codec.IPPacket {
				l.packetsOut.Add(1)
				l.bytesOut.Add(uint64(len(*it.buf)))
			}
			if it.typ != codec.IPPacket || l.dg == nil || !l.dg.trySend(*it.buf) {
				msg, err = l.sealFrame(msg, it.typ, *it.buf)
			}
		}
		l.pool.put(it.buf)
	}
	return msg, err
}

// sealFrame appends one sealed frame to msg.
func (l *link) sealFrame(msg []byte, t codec.Type, plaintext []byte) ([]byte, error) {
	msg, err := codec.AppendHeader(msg, t, len(plaintext)+handshake.Overhead)
	if err != nil {
		return msg, err
	}
	return l.hs.Seal(msg, plaintext)
}

// closeReason is why a session ended: the code the peer acts on (codec
// DisconnectCode, sent in the Disconnect frame) and text for people.
type closeReason struct {
	code codec.DisconnectCode
	text string
}

// Reasons the hub gives, with their codes.
var (
	reasonShutdown     = closeReason{codec.DisconnectShuttingDown, "server shutting down"}
	reasonDisabled     = closeReason{codec.DisconnectDisabled, "client disabled"}
	reasonKeyRotated   = closeReason{codec.DisconnectKeyRotated, "client key rotated"}
	reasonExpired      = closeReason{codec.DisconnectExpired, "client expired"}
	reasonRemoved      = closeReason{codec.DisconnectRemoved, "client removed"}
	reasonPeerRemoved  = closeReason{codec.DisconnectRemoved, "peer removed"}
	reasonReplaced     = closeReason{codec.DisconnectReplaced, "replaced by a newer session"}
	reasonLimitLowered = closeReason{codec.DisconnectReplaced, "connection limit lowered"}
	reasonDeadPeer     = closeReason{codec.DisconnectDeadPeer, "dead peer: nothing received for " + deadPeerTimeout.String()}
)

// parseDisconnect reads a peer's Disconnect payload. A code this version
// does not know, or a payload without one, is unspecified.
func parseDisconnect(p []byte) closeReason {
	code, text, err := codec.ParseDisconnect(p)
	if err != nil {
		return closeReason{codec.DisconnectUnspecified, "no reason given"}
	}
	if !code.Known() {
		code = codec.DisconnectUnspecified
	}
	return closeReason{code, sanitizeReason(text)}
}

// err is r as an error that matches (errors.Is) the sentinel of its code.
func (r closeReason) err() error { return &disconnectError{r} }

// disconnectError is a session's end, or a hub's refusal, as an error.
type disconnectError struct{ r closeReason }

func (e *disconnectError) Error() string { return e.r.text }

// Unwrap returns the sentinel error of the code, nil for unspecified.
func (e *disconnectError) Unwrap() error {
	switch e.r.code {
	case codec.DisconnectShuttingDown:
		return ErrServerShutdown
	case codec.DisconnectKicked:
		return ErrKicked
	case codec.DisconnectDisabled:
		return ErrClientDisabled
	case codec.DisconnectKeyRotated:
		return ErrKeyRotated
	case codec.DisconnectExpired:
		return ErrClientExpired
	case codec.DisconnectRemoved:
		return ErrClientRemoved
	case codec.DisconnectReplaced:
		return ErrSessionReplaced
	case codec.DisconnectDeadPeer:
		return ErrDeadPeer
	case codec.DisconnectProtocolError:
		return ErrProtocol
	case codec.DisconnectRefused:
		return ErrClientRefused
	case codec.DisconnectConnectionLimit:
		return ErrConnectionLimit
	case codec.DisconnectClosed:
		return ErrPeerClosed
	}
	return nil
}

// disconnectCode is the code of the disconnect err holds, if it holds one.
func disconnectCode(err error) (codec.DisconnectCode, bool) {
	var d *disconnectError
	if errors.As(err, &d) {
		return d.r.code, true
	}
	return codec.DisconnectUnspecified, false
}

// sanitizeReason bounds a peer-supplied reason and keeps it printable.
func sanitizeReason(b []byte) string {
	const max = 200
	if len(b) > max {
		b = b[:max]
	}
	r := []rune(string(b))
	for i, c := range r {
		if c < 0x20 || c == 0x7f {
			r[i] = '?'
		}
	}
	return string(r)
}

// keepalive payload: sequence u32, send time u64 (ns).
const keepaliveLen = 12

func putKeepalive(b []byte, seq uint32, t time.Time) []byte {
	b = binary.BigEndian.AppendUint32(b, seq)
	return binary.BigEndian.AppendUint64(b, uint64(t.UnixNano()))
}

func parseKeepalive(b []byte) (seq uint32, sent time.Time, err error) {
	if len(b) != keepaliveLen {
		return 0, time.Time{}, fmt.Errorf("keepalive payload is %d bytes, want %d", len(b), keepaliveLen)
	}
	return binary.BigEndian.Uint32(b), time.Unix(0, int64(binary.BigEndian.Uint64(b[4:]))), nil
}
