// Package session runs the Warren protocol (DESIGN §3) over a frame carrier,
// a [transport.Conn]: the Noise IK initiator ([Dial], the client) and
// responder ([Accept], the hub) of package handshake, then one authenticated
// session with its reader and writer loops, the QUIC datagram path,
// keepalives and their acknowledgements, and the Disconnect reason codes.
// It imports codec, handshake and transport, never the root package: the hub
// passes its registry in as a func ([AcceptConfig.Authorize]) and the replay
// guard as an interface ([Guard]). Because a Conn is only a carrier of
// messages, the whole protocol runs over an in-memory pipe in tests.
//
// # The seam
//
// A [Session] has the shape of wireguard-go's tun.Device, batch in and batch
// out, with one deliberate difference on the read side:
//
//   - Writing: [Session.Write] takes a batch of IP packets, each at offset in
//     its buffer with [Headroom] bytes free in front and [Tailroom] behind it,
//     and seals them with no copy: a QUIC datagram is sealed in place in its
//     buffer (counter in the headroom, tag in the tailroom); a stream frame is
//     sealed straight from the packet into the one message that goes to the
//     transport (which copies it anyway, into TLS records or QUIC stream
//     frames). [Session.Send] and [Session.SendBatch] are the non-blocking
//     form the hub's pipeline uses toward a client: they copy each packet
//     into a buffer from a bounded [Pool] with that headroom and queue it
//     for the session's writer (one lock and one wake per batch), which
//     seals queued packets in batches the same way; a full queue drops,
//     counted. The queue is a ring that grows with traffic, so an idle
//     session holds little.
//   - Handing over: on a transport that is a [transport.BufferReader]
//     (WebSocket), the reader reads each message into a buffer from the
//     Pool, a [Lease], and a [LeaseHandler] may pass packets from it to
//     another session with [Session.SendLeased]: ownership moves, not
//     bytes. The reader takes a fresh buffer for its next message; the
//     destination's writer seals each packet in place in its frame, where
//     it arrived (its header and tag are where the arriving frame's were),
//     so a run of packets that came in one message leaves in one message
//     without being copied; the buffer goes back to the Pool after the
//     last write. Packets that cannot move (another owner's buffers, a
//     session that sends datagrams) take SendBatch's copy.
//   - Reading is push-style: the session's reader opens each message's
//     frames in place, in the transport's receive buffer, and hands the
//     batch to [Handler.Packets] on its own goroutine, each packet at an
//     offset with free headroom in front of it ([ReadHeadroom] when the
//     transport is a [transport.HeadroomReader]), so the next layer writes
//     its header in place. The hub's pipeline is
//     push-style (route, then another session's Send or the engine's Send),
//     and a QUIC session has two readers, the stream and the datagrams; a
//     tun.Device-style Read(bufs, sizes, offset) would need a copy into the
//     caller's buffers, or a handoff between goroutines, for every packet.
//
// Everything else a caller needs is on the Session: the peer's identity
// ([Session.Peer]), its MTU ([Session.MTUInfo]), counters, the last
// keepalive's RTT, [Session.Close] with a [Reason] the peer receives, and
// [Session.Done] / [Session.Err] for why it ended.
package session

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/handshake"
	"github.com/warrenvpn/warren/transport"
)

// Sizes of a session's queue and batches.
const (
	// QueueLen bounds the frames waiting for a session's writer; beyond it
	// Send drops and counts (the sender's TCP backs off).
	QueueLen = 1024
	// BatchSize is the most packets sealed into one transport message, and
	// the most handed to Handler.Packets at once.
	BatchSize = 64

	// Headroom is the room Write needs in front of each packet: the larger
	// of a stream frame's header and a datagram's type and counter.
	Headroom = max(codec.HeaderLen, datagramHeader)
	// Tailroom is the room behind each packet that sealing in place needs:
	// the AEAD tag. Without it Write still works but allocates.
	Tailroom = handshake.Overhead

	// ReadHeadroom is the headroom in front of each packet the stream
	// reader hands to Handler.Packets when the transport is a
	// transport.HeadroomReader: forward.Headroom, so an engine writes its
	// header in place. Without one it is codec.HeaderLen; datagrams have
	// their header's room, datagramHeader.
	ReadHeadroom = 16

	// DatagramMTU is the tunnel MTU a session on a datagram transport
	// announces: the IPv6 minimum, which fits a QUIC datagram once path MTU
	// discovery has run (DESIGN §3).
	DatagramMTU = 1280

	// closeGrace bounds how long a peer that does not read can hold up a
	// Close that sends a Disconnect.
	closeGrace = 2 * time.Second

	// PoolBuffers bounds the packet buffers out of one Pool at once (queued
	// copies); beyond it Send and SendBatch drop, counted as QueueFull.
	PoolBuffers = 16384
	// PoolMessages bounds the message buffers ([Lease]) out of one Pool at
	// once; beyond it a reader reads into a buffer of its own, whose
	// packets are copied when they are sent on.
	PoolMessages = 256

	// minRun is the shortest run of packets sealed in place that the
	// writer sends as a message of its own rather than sealing it into a
	// message with what is queued around it.
	minRun = 8
	// idleMessage: after a message this short (a keepalive) a reader
	// reading into a buffer of its own drops it before it waits.
	idleMessage = 4 << 10
)

// Handler receives what a session reads. Its methods run on the session's
// goroutines.
type Handler interface {
	// Packets takes a batch of opened IP packets, packet i at
	// bufs[i][offset:]. It may write into each packet and its headroom
	// bufs[i][:offset] (at least ReadHeadroom bytes on a transport that
	// is a transport.HeadroomReader), never past len(bufs[i]). It must
	// not retain bufs or the packets after it returns. Calls never overlap.
	Packets(bufs [][]byte, offset int)
	// Closed is called once, after every goroutine of the session has
	// stopped, with why it ended.
	Closed(r Reason)
}

// A LeaseHandler is a Handler that can keep packets it is handed: a
// session whose transport is a [transport.BufferReader] calls PacketsLeased
// instead of Packets for a batch read into a Pool's buffer, l.
type LeaseHandler interface {
	Handler
	// PacketsLeased is Packets for a batch in l: the handler may pass
	// packets, as it was handed them, to [Session.SendLeased] with l, which
	// keeps them without a copy. Everything else is as for Packets: it
	// must not keep bufs or the other packets, nor write into packets it
	// passes on or their headroom.
	PacketsLeased(bufs [][]byte, offset int, l *Lease)
}

// Peer is who is at the other end of a session.
type Peer struct {
	// PublicKey is the peer's Noise static key (the hub's, on a client).
	PublicKey [32]byte
	// Addr is the peer's tunnel address: the client's assigned address on
	// the hub, the hub's gateway address on a client.
	Addr netip.Addr
	// Transport names the carrier, e.g. "websocket" or "quic".
	Transport string
	// Remote is the peer's real address as the transport reports it.
	Remote netip.AddrPort
}

// Counters are a session's counters; In is from the peer.
type Counters struct {
	BytesIn, BytesOut, PacketsIn, PacketsOut uint64
	// Oversized counts packets Send refused for being longer than the MTU.
	Oversized uint64
	// QueueFull counts frames and datagrams dropped for queue space.
	QueueFull uint64
	// Replayed counts datagrams the replay window dropped.
	Replayed uint64
	// OnStream counts packets that did not fit a datagram and went on the
	// stream instead.
	OnStream uint64
	// HandedOver counts packets SendLeased queued where they arrived,
	// without a copy.
	HandedOver uint64
}

// MTUInfo describes a session's packet sizes.
type MTUInfo struct {
	// TunnelMTU is the MTU the session announced.
	TunnelMTU int
	// MaxDatagram is the datagram payload room now (0 without datagrams).
	MaxDatagram int
	// DatagramsSent counts packets sent as datagrams.
	DatagramsSent uint64
	// OnStream counts packets too large for a datagram that went on the
	// stream instead.
	OnStream uint64
	// Replayed counts datagrams dropped by the replay window.
	Replayed uint64
}

// item is a frame waiting for the writer: its type and plaintext at
// Headroom in a pooled buffer, or an IP packet in a Lease.
type item struct {
	typ codec.Type
	// place: the packet's frame around it in l (header in front, tag
	// behind) is the writer's, so it may be sealed in place.
	place   bool
	at, end int32   // the packet is l.b[at:end]
	buf     *[]byte // the pooled copy, or nil
	l       *Lease  // the lease the packet is in, or nil
}

// release gives the item's buffer back.
func (it *item) release(p *Pool) {
	if it.l != nil {
		it.l.release()
	} else if it.buf != nil {
		p.put(it.buf)
	}
}

// Pool hands out buffers, with Headroom and Tailroom around packets of up
// to a size, and message buffers for readers ([Lease]). It is bounded, as
// wireguard-go's device.WaitPool is, by PoolBuffers and PoolMessages; it
// fails rather than waits when all are out, since a hub's reader must not
// wait on another session's writer. Sessions may share one.
type Pool struct {
	size    int
	msgSize int
	bufs    bounded // *[]byte
	msgs    bounded // *Lease
}

// bounded is a sync.Pool with a cap on what is out of it at once.
type bounded struct {
	max  int64
	out  atomic.Int64
	pool sync.Pool
}

func (b *bounded) get() any {
	if b.out.Add(1) > b.max {
		b.out.Add(-1)
		return nil
	}
	return b.pool.Get()
}

func (b *bounded) put(x any) {
	b.pool.Put(x)
	b.out.Add(-1)
}

// NewPool returns a Pool for packets of up to size bytes.
func NewPool(size int) *Pool {
	// A message buffer holds a batch of full-sized frames as a peer's
	// writer sends them, and the reader's headroom.
	msgSize := ReadHeadroom + BatchSize*(codec.HeaderLen+size+handshake.Overhead)
	msgSize = (msgSize + 4<<10 - 1) &^ (4<<10 - 1)
	p := &Pool{size: size, msgSize: msgSize}
	p.bufs.max, p.msgs.max = PoolBuffers, PoolMessages
	p.bufs.pool.New = func() any {
		b := make([]byte, Headroom, Headroom+size+Tailroom)
		return &b
	}
	p.msgs.pool.New = func() any {
		return &Lease{pool: p, b: make([]byte, 0, msgSize), pk: make([]span, 0, BatchSize)}
	}
	return p
}

// get returns a buffer, or nil when PoolBuffers are out.
func (p *Pool) get() *[]byte {
	b, _ := p.bufs.get().(*[]byte)
	return b
}

func (p *Pool) put(b *[]byte) {
	*b = (*b)[:Headroom]
	p.bufs.put(b)
}

// lease returns a message buffer held once, or nil when PoolMessages are
// out.
func (p *Pool) lease() *Lease {
	l, _ := p.msgs.get().(*Lease)
	if l != nil {
		l.refs.Store(1)
		l.end = 0
		l.pk, l.next = l.pk[:0], 0
	}
	return l
}

// A Lease is a buffer from a [Pool] that a session's reader read a message
// into and opened in place: the packets handed to
// [LeaseHandler.PacketsLeased] are in it. It goes back to the Pool when the
// reader and every writer that took a packet from it ([Session.SendLeased])
// are done with it.
type Lease struct {
	pool *Pool
	b    []byte       // len 0; the message is in b[:end]
	refs atomic.Int32 // the reader's, and one per queued packet
	// Set by the reader before it delivers a batch, read by SendLeased
	// on the reader's goroutine: the end of the message, where the
	// batch's packets are, and where locate looks first.
	end  int
	pk   []span
	next int
}

// span is where a packet is in a lease: l.b[at:end].
type span struct{ at, end int32 }

// release drops one hold on l.
func (l *Lease) release() {
	if l.refs.Add(-1) == 0 {
		l.pool.msgs.put(l)
	}
}

// locate returns where the packet b[offset:] of the batch being delivered
// is in l, and whether it is one of them. Packets are looked for in order
// from the last one found, so a handler that passes them on in order finds
// each at once.
func (l *Lease) locate(b []byte, offset int) (at, end int, ok bool) {
	if len(b) <= offset {
		return 0, 0, false
	}
	for range len(l.pk) {
		if l.next == len(l.pk) {
			l.next = 0
		}
		sp := l.pk[l.next]
		l.next++
		if &l.b[:cap(l.b)][sp.at] == &b[offset] && int(sp.end-sp.at) == len(b)-offset {
			return int(sp.at), int(sp.end), true
		}
	}
	return 0, 0, false
}

// A Session is one authenticated Warren session over a transport.Conn, made
// by [Dial] or [Accept] and run by [Session.Start].
type Session struct {
	conn      transport.Conn
	hs        *handshake.Session
	dg        *datagramPath // nil without datagrams
	peer      Peer
	mtu       int
	pool      *Pool
	telemetry *keepaliveRun // keepalives, estimator, dead peer
	pending   []byte        // the responder's answer, sent by Start

	h Handler
	// The writer's queue: a ring of at most QueueLen items that starts
	// small and doubles as traffic needs, so an idle session holds little;
	// kick wakes the writer once per batch, not once per packet.
	qmu     sync.Mutex
	q       []item // len is a power of two, or 0
	qhead   int
	qn      int
	kick    chan struct{} // cap 1
	done    chan struct{} // closed by Close
	stopped chan struct{} // closed when every goroutine has returned

	closeOnce sync.Once
	// grace is the timer that closes the conn closeGrace after Close; it
	// is stopped once the session has stopped, so an ended session is not
	// held for that long.
	grace   atomic.Pointer[time.Timer]
	mu      sync.Mutex
	reason  Reason
	notify  bool // send a Disconnect with reason before closing
	remote  bool
	started bool
	aborted bool // ended without a word before Start: the answer is not sent

	// wmu serialises sealing and writing: the writer goroutine and Write.
	wmu sync.Mutex
	// msg is Write's message buffer, and the writer's when the Pool has
	// none to lend; guarded by wmu.
	msg []byte
	// deliverMu serialises Handler.Packets: the stream and datagram
	// readers both deliver.
	deliverMu sync.Mutex

	lastRecv                                 atomic.Int64 // unix nanoseconds
	rtt                                      atomic.Int64 // nanoseconds
	bytesIn, bytesOut, packetsIn, packetsOut atomic.Uint64
	queueFull, oversized, handedOver         atomic.Uint64
}

func newSession(conn transport.Conn, hs *handshake.Session, mtu int, pool *Pool) (*Session, error) {
	if pool == nil || pool.size < mtu {
		pool = NewPool(mtu)
	}
	s := &Session{
		conn:    conn,
		hs:      hs,
		mtu:     mtu,
		pool:    pool,
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	s.lastRecv.Store(time.Now().UnixNano())
	if dc, ok := conn.(transport.DatagramConn); ok {
		dg, err := newDatagramPath(dc, hs)
		if err != nil {
			return nil, err
		}
		s.dg = dg
	}
	return s, nil
}

// Start sends the hub's pending answer, if any, and runs the session's
// goroutines until it ends; h then learns why. Call it once, also after a
// Close or Abort that came first: the session then ends at once (after a
// Close the peer gets the answer and then the Disconnect; after an Abort,
// nothing).
func (s *Session) Start(h Handler) {
	s.mu.Lock()
	s.h = h
	s.started = true
	s.mu.Unlock()
	if s.pending != nil {
		s.mu.Lock()
		aborted := s.aborted
		s.mu.Unlock()
		if !aborted {
			if err := s.conn.WriteMessage(s.pending); err != nil {
				s.close(Reason{codec.DisconnectUnspecified, "connection lost: " + err.Error()}, false, true)
			}
		}
		s.pending = nil
	}
	var all sync.WaitGroup
	all.Add(2)
	go func() { defer all.Done(); s.readLoop() }()
	go func() { defer all.Done(); s.writeLoop() }()
	if s.dg != nil {
		all.Add(1)
		go func() { defer all.Done(); s.datagramLoop() }()
	}
	if s.telemetry.est != nil {
		all.Add(1)
		go func() { defer all.Done(); s.keepaliveLoop() }()
	}
	go func() {
		all.Wait()
		s.drain()
		if t := s.grace.Load(); t != nil && t.Stop() {
			// The writer has sent the Disconnect and closed the conn,
			// or given up; make sure of the latter.
			s.conn.Close()
		}
		close(s.stopped)
		s.mu.Lock()
		r := s.reason
		s.mu.Unlock()
		h.Closed(r)
	}()
}

// Close ends the session; the peer first gets a sealed Disconnect carrying r. Only the first call's reason counts. Close does not
// wait: see Done.
func (s *Session) Close(r Reason) { s.close(r, true, false) }

// Abort ends the session without telling the peer. Only the first Close or
// Abort counts.
func (s *Session) Abort(r Reason) { s.close(r, false, false) }

func (s *Session) close(r Reason, notify, remote bool) {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.aborted = !notify && !s.started
		s.reason, s.notify, s.remote = r, notify, remote
		s.mu.Unlock()
		close(s.done)
		if s.dg != nil {
			s.dg.cancel()
		}
		if !notify {
			s.conn.Close()
			return
		}
		// The writer sends the Disconnect and closes the conn; this bounds
		// how long a peer that does not read can hold it up.
		s.grace.Store(time.AfterFunc(closeGrace, func() { s.conn.Close() }))
	})
}

// Done is closed when the session has ended and its goroutines have
// returned (just before Handler.Closed is called).
func (s *Session) Done() <-chan struct{} { return s.stopped }

// Err is why the session ended, a *CloseError, or nil while it runs.
func (s *Session) Err() error {
	select {
	case <-s.done:
	default:
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &CloseError{Reason: s.reason, Remote: s.remote}
}

// Peer returns who is at the other end.
func (s *Session) Peer() Peer { return s.peer }

// Conn returns the carrier the session runs on.
func (s *Session) Conn() transport.Conn { return s.conn }

// Datagrams reports whether the session sends packets as datagrams where
// they fit (a QUIC session).
func (s *Session) Datagrams() bool { return s.dg != nil }

// MTU is the tunnel MTU the session announced.
func (s *Session) MTU() int { return s.mtu }

// LastReceive is when anything last arrived from the peer.
func (s *Session) LastReceive() time.Time { return time.Unix(0, s.lastRecv.Load()) }

// RTT is the round-trip time of the last acknowledged keepalive (a client's
// session), or 0.
func (s *Session) RTT() time.Duration { return time.Duration(s.rtt.Load()) }

// Counters returns the session's counters.
func (s *Session) Counters() Counters {
	n := Counters{
		BytesIn:    s.bytesIn.Load(),
		BytesOut:   s.bytesOut.Load(),
		PacketsIn:  s.packetsIn.Load(),
		PacketsOut: s.packetsOut.Load(),
		Oversized:  s.oversized.Load(),
		QueueFull:  s.queueFull.Load(),
		HandedOver: s.handedOver.Load(),
	}
	if d := s.dg; d != nil {
		n.Replayed = d.replayed.Load()
		n.OnStream = d.onStream.Load()
		n.QueueFull += d.queueFull.Load()
	}
	return n
}

// MTUInfo reports the session's packet sizes.
func (s *Session) MTUInfo() MTUInfo {
	info := MTUInfo{TunnelMTU: s.mtu}
	if d := s.dg; d != nil {
		info.MaxDatagram = d.conn.MaxDatagramSize()
		info.DatagramsSent = d.sent.Load()
		info.OnStream = d.onStream.Load()
		info.Replayed = d.replayed.Load()
	}
	return info
}

// Send queues a copy of an IP packet for the peer. It never blocks: a packet
// longer than the MTU, a full queue or an ended session drops it, counted,
// and Send reports false.
func (s *Session) Send(pkt []byte) bool {
	if len(pkt) > s.pool.size {
		s.oversized.Add(1)
		return false
	}
	return s.enqueue(codec.IPPacket, pkt)
}

// SendBatch is Send for a batch, packet i at bufs[i][offset:], taking the
// queue's lock and waking the writer once for the whole batch. It returns
// how many packets it queued.
func (s *Session) SendBatch(bufs [][]byte, offset int) int {
	select {
	case <-s.done:
		return 0
	default:
	}
	n, over := 0, 0
	s.qmu.Lock()
	wake := s.qn == 0
	for _, b := range bufs {
		p := b[offset:]
		if len(p) > s.pool.size {
			over++
			continue
		}
		if s.qn == QueueLen {
			break
		}
		pb := s.pool.get()
		if pb == nil {
			break
		}
		*pb = append(*pb, p...)
		s.pushLocked(item{typ: codec.IPPacket, buf: pb})
		n++
	}
	wake = wake && s.qn > 0
	s.qmu.Unlock()
	s.queued(len(bufs), n, over, wake)
	return n
}

// queued counts what a send of a batch of size packets left out (over
// oversized, the rest of those not queued for a full queue) and wakes the
// writer if the queue was empty before.
func (s *Session) queued(size, n, over int, wake bool) {
	if over > 0 {
		s.oversized.Add(uint64(over))
	}
	if full := size - n - over; full > 0 {
		s.queueFull.Add(uint64(full))
	}
	if wake {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// SendLeased is SendBatch for packets a LeaseHandler was handed with l,
// passed as it was handed them: each is queued where it is, holding l until
// the writer has sent it, instead of being copied. A packet that is not in
// l, or any packet for a session that sends datagrams, is copied as
// SendBatch copies. Call it from PacketsLeased, before that returns; the
// caller must not touch the packets it queued, nor their headroom, after.
func (s *Session) SendLeased(l *Lease, bufs [][]byte, offset int) int {
	if l == nil || s.dg != nil {
		return s.SendBatch(bufs, offset)
	}
	select {
	case <-s.done:
		return 0
	default:
	}
	if len(bufs) == 0 {
		return 0
	}
	n, over, moved := 0, 0, 0
	s.qmu.Lock()
	wake := s.qn == 0
	// next is where the next packet in bufs is in l, when it is.
	nextAt, nextEnd, nextOK := l.locate(bufs[0], offset)
	for i, b := range bufs {
		at, end, ok := nextAt, nextEnd, nextOK
		if i+1 < len(bufs) {
			nextAt, nextEnd, nextOK = l.locate(bufs[i+1], offset)
		} else {
			nextOK = false
		}
		p := b[offset:]
		if len(p) > s.pool.size {
			over++
			continue
		}
		if s.qn == QueueLen {
			break
		}
		it := item{typ: codec.IPPacket}
		if ok {
			// The frame's tag goes where the arriving frame's was; that
			// room is the writer's if the packet behind it is queued
			// here too, or if nothing is behind it.
			tail := end + handshake.Overhead
			it.l, it.at, it.end = l, int32(at), int32(end)
			it.place = nextOK && nextAt-codec.HeaderLen == tail || !nextOK && i+1 == len(bufs) && tail == l.end
			l.refs.Add(1)
			moved++
		} else {
			if it.buf = s.pool.get(); it.buf == nil {
				break
			}
			*it.buf = append(*it.buf, p...)
		}
		s.pushLocked(it)
		n++
	}
	wake = wake && s.qn > 0
	s.qmu.Unlock()
	if moved > 0 {
		s.handedOver.Add(uint64(moved))
	}
	s.queued(len(bufs), n, over, wake)
	return n
}

// pushLocked appends it to the queue, which has room; qmu is held.
func (s *Session) pushLocked(it item) {
	if s.qn == len(s.q) {
		s.growLocked()
	}
	s.q[(s.qhead+s.qn)&(len(s.q)-1)] = it
	s.qn++
}

func (s *Session) enqueue(t codec.Type, payload []byte) bool {
	select {
	case <-s.done:
		return false
	default:
	}
	s.qmu.Lock()
	var b *[]byte
	if s.qn < QueueLen {
		b = s.pool.get()
	}
	if b == nil {
		s.qmu.Unlock()
		s.queueFull.Add(1)
		return false
	}
	*b = append(*b, payload...)
	s.pushLocked(item{typ: t, buf: b})
	wake := s.qn == 1
	s.qmu.Unlock()
	if wake {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// minQueue is the writer queue's first size.
const minQueue = 16

// growLocked doubles the queue's ring (up to QueueLen); qmu is held.
func (s *Session) growLocked() {
	q := make([]item, max(minQueue, 2*len(s.q)))
	for i := range s.qn {
		q[i] = s.q[(s.qhead+i)&(len(s.q)-1)]
	}
	s.q, s.qhead = q, 0
}

// takeBatch moves up to BatchSize queued items into batch: a run of at
// least minRun packets that may be sealed in place in one lease alone (it
// goes out as it came in, uncopied), or else what is queued up to the next
// such run.
func (s *Session) takeBatch(batch []item) []item {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if k := s.runLocked(BatchSize); k >= minRun {
		for range k {
			batch = s.popLocked(batch)
		}
		return batch
	}
	for s.qn > 0 && len(batch) < BatchSize {
		if len(batch) > 0 && s.runLocked(minRun) >= minRun {
			break
		}
		batch = s.popLocked(batch)
	}
	return batch
}

// popLocked moves the item at the head of the queue to batch; qmu is held.
func (s *Session) popLocked(batch []item) []item {
	i := s.qhead
	batch = append(batch, s.q[i])
	s.q[i] = item{}
	s.qhead = (i + 1) & (len(s.q) - 1)
	s.qn--
	return batch
}

// runLocked is the length, up to limit, of the run of packets at the head
// of the queue that may be sealed in place as one message; qmu is held.
func (s *Session) runLocked(limit int) int {
	k := 0
	for k < s.qn && k < limit {
		it := &s.q[(s.qhead+k)&(len(s.q)-1)]
		if k > 0 && !continues(&s.q[(s.qhead+k-1)&(len(s.q)-1)], it) || k == 0 && !it.place {
			break
		}
		k++
	}
	return k
}

// continues reports whether it may be sealed in place in the message of
// prev, which may be: its frame begins where prev's ends, in one lease.
func continues(prev, it *item) bool {
	return it.place && it.l == prev.l && int(it.at)-codec.HeaderLen == int(prev.end)+handshake.Overhead
}

// inPlace reports whether batch is one run that may be sealed in place.
func inPlace(batch []item) bool {
	if len(batch) == 0 || !batch[0].place {
		return false
	}
	for i := 1; i < len(batch); i++ {
		if !continues(&batch[i-1], &batch[i]) {
			return false
		}
	}
	return true
}

// Write seals a batch of IP packets, bufs[i][offset:], and sends them: as
// datagrams where the transport has them and a packet fits, the rest as one
// stream message. offset must be at least Headroom, and each buffer should
// have Tailroom spare capacity behind its packet so datagrams seal in place.
// Write may modify bufs[i][offset-Headroom:cap]. It blocks while the
// transport does, and returns how many packets it took.
func (s *Session) Write(bufs [][]byte, offset int) (int, error) {
	if offset < Headroom {
		return 0, errHeadroom
	}
	select {
	case <-s.done:
		return 0, ErrClosed
	default:
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	msg := s.msg[:0]
	var err error
	for _, b := range bufs {
		msg, err = s.sealPacket(msg, b, offset)
		if err != nil {
			break
		}
	}
	if err == nil && len(msg) > 0 {
		err = s.conn.WriteMessage(msg)
	}
	s.msg = msg
	if err != nil {
		s.close(Reason{codec.DisconnectUnspecified, "connection lost: " + err.Error()}, false, true)
		return 0, err
	}
	return len(bufs), nil
}

// sealPacket sends b[offset:] as a datagram if it can, or else appends it to
// msg as a sealed stream frame. Call with wmu held.
func (s *Session) sealPacket(msg, b []byte, offset int) ([]byte, error) {
	n := len(b) - offset
	s.packetsOut.Add(1)
	s.bytesOut.Add(uint64(n))
	if s.dg != nil && s.dg.trySend(b, offset) {
		return msg, nil
	}
	return s.sealFrame(msg, codec.IPPacket, b[offset:])
}

// sealFrame appends one sealed frame to msg.
func (s *Session) sealFrame(msg []byte, t codec.Type, plaintext []byte) ([]byte, error) {
	msg, err := codec.AppendHeader(msg, t, len(plaintext)+handshake.Overhead)
	if err != nil {
		return msg, err
	}
	return s.hs.Seal(msg, plaintext)
}

// drain returns queued buffers to the pool once the writer has stopped.
func (s *Session) drain() {
	s.qmu.Lock()
	for s.qn > 0 {
		i := s.qhead
		s.q[i].release(s.pool)
		s.q[i] = item{}
		s.qhead = (i + 1) & (len(s.q) - 1)
		s.qn--
	}
	s.qmu.Unlock()
}

func (s *Session) writeLoop() {
	var batch []item // made when traffic first flows
	for {
		select {
		case <-s.kick:
			if batch == nil {
				batch = make([]item, 0, BatchSize)
			}
			for {
				batch = s.takeBatch(batch[:0])
				if len(batch) == 0 {
					break
				}
				err := s.writeBatch(batch)
				clear(batch)
				if err != nil {
					s.close(Reason{codec.DisconnectUnspecified, "connection lost: " + err.Error()}, false, true)
					return
				}
			}
		case <-s.done:
			s.mu.Lock()
			notify, r := s.notify, s.reason
			s.mu.Unlock()
			if notify {
				var p [1 + codec.MaxDisconnectReason]byte
				s.wmu.Lock()
				if m, err := s.sealFrame(s.msg[:0], codec.Disconnect, codec.AppendDisconnect(p[:0], r.Code, r.Text)); err == nil {
					_ = s.conn.WriteMessage(m)
				}
				s.wmu.Unlock()
				s.conn.Close()
			}
			return
		}
	}
}

// writeBatch seals queued items into one message and sends it, then gives
// their buffers back. A batch that is one run in a lease is sealed in
// place and sent from the lease; otherwise leased packets are sealed from
// where they are into a message buffer, which is no copy either: one
// borrowed from the Pool for the batch, so that an idle session holds none.
func (s *Session) writeBatch(batch []item) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var err error
	if inPlace(batch) {
		var m []byte
		if m, err = s.sealInPlace(batch); err == nil {
			err = s.conn.WriteMessage(m)
		}
	} else {
		msg := s.msg[:0]
		var ml *Lease
		if cap(msg) == 0 {
			if ml = s.pool.lease(); ml != nil {
				msg = ml.b
			}
		}
		for _, it := range batch {
			if err != nil {
				break
			}
			switch {
			case it.l != nil:
				p := it.l.b[it.at:it.end]
				s.packetsOut.Add(1)
				s.bytesOut.Add(uint64(len(p)))
				msg, err = s.sealFrame(msg, codec.IPPacket, p)
			case it.typ == codec.IPPacket:
				msg, err = s.sealPacket(msg, *it.buf, Headroom)
			default:
				msg, err = s.sealFrame(msg, it.typ, (*it.buf)[Headroom:])
			}
		}
		if err == nil && len(msg) > 0 {
			err = s.conn.WriteMessage(msg)
		}
		if ml != nil {
			// What outgrew the borrowed buffer is dropped.
			ml.release()
		} else {
			s.msg = msg
		}
	}
	for i := range batch {
		batch[i].release(s.pool)
	}
	return err
}

// sealInPlace seals a run of leased packets where they are, each frame's
// header and tag where the arriving frame's were, and returns the message
// they make. Call with wmu held.
func (s *Session) sealInPlace(run []item) ([]byte, error) {
	full := run[0].l.b[:cap(run[0].l.b)]
	var bytes uint64
	for _, it := range run {
		at, end := int(it.at), int(it.end)
		if _, err := codec.AppendHeader(full[at-codec.HeaderLen:at-codec.HeaderLen], codec.IPPacket, end-at+handshake.Overhead); err != nil {
			return nil, err
		}
		if _, err := s.hs.Seal(full[at:at], full[at:end]); err != nil {
			return nil, err
		}
		bytes += uint64(end - at)
	}
	s.packetsOut.Add(uint64(len(run)))
	s.bytesOut.Add(bytes)
	return full[int(run[0].at)-codec.HeaderLen : int(run[len(run)-1].end)+handshake.Overhead], nil
}

func (s *Session) readLoop() {
	bufs := make([][]byte, 0, BatchSize)
	// The first frame's packet has the frame header and what the
	// transport leaves in front of the message; a later one has the
	// previous frame's tag and its own header too.
	hr, _ := s.conn.(transport.HeadroomReader)
	br, _ := s.conn.(transport.BufferReader)
	room, offset := 0, codec.HeaderLen
	if hr != nil || br != nil {
		room, offset = ReadHeadroom-codec.HeaderLen, ReadHeadroom
	}
	// With a BufferReader, each message is read into a lease, l, taken
	// once the message has begun and given back after it (writers that
	// took packets from it hold it until they have sent them), so an idle
	// session holds none. own is the reader's buffer when the Pool has
	// none to lend.
	var l *Lease
	var own []byte
	defer func() {
		if l != nil {
			l.release()
		}
	}()
	get := func() []byte {
		if l == nil {
			l = s.pool.lease()
		}
		if l != nil {
			return l.b
		}
		return own[:0]
	}
	for {
		var msg []byte
		var err error
		switch {
		case br != nil:
			msg, err = br.ReadMessageBuffer(room, get)
		case hr != nil:
			msg, err = hr.ReadMessageHeadroom(room)
		default:
			msg, err = s.conn.ReadMessage()
		}
		if err != nil {
			s.close(Reason{codec.DisconnectUnspecified, "connection lost: " + err.Error()}, false, true)
			return
		}
		// cur is the lease the message is in, if it is in one (it is
		// not when it outgrew the lease's buffer).
		var cur *Lease
		if br != nil {
			if l != nil && cap(msg) == cap(l.b) && &msg[:1][0] == &l.b[:1][0] {
				cur = l
				cur.end = len(msg)
			} else if l == nil && cap(msg) <= s.pool.msgSize {
				own = msg
			}
		}
		s.lastRecv.Store(time.Now().UnixNano())
		s.heard()
		bufs = bufs[:0]
		pos := room // msg[pos:] is still to parse
		for pos < len(msg) {
			t, payload, rest, err := codec.Parse(msg[pos:])
			if err != nil {
				s.close(Reason{codec.DisconnectProtocolError, "protocol error: " + err.Error()}, false, false)
				return
			}
			start := pos + codec.HeaderLen // payload is msg[start:]
			pos = len(msg) - len(rest)
			// The message is ours until the next read: open in place.
			body, err := s.hs.Open(payload[:0], payload)
			if err != nil {
				s.close(Reason{codec.DisconnectProtocolError, "protocol error: " + t.String() + ": " + err.Error()}, false, false)
				return
			}
			switch t {
			case codec.IPPacket:
				s.packetsIn.Add(1)
				s.bytesIn.Add(uint64(len(body)))
				end := start + len(body)
				bufs = append(bufs, msg[start-offset:end:end])
				if cur != nil {
					cur.pk = append(cur.pk, span{int32(start), int32(end)})
				}
				if len(bufs) == BatchSize {
					s.deliverFrom(cur, bufs, offset)
					bufs = bufs[:0]
				}
			case codec.Keepalive:
				s.enqueue(codec.KeepaliveAck, body)
				s.keepaliveReceived(body)
			case codec.KeepaliveAck:
				s.keepaliveAcked(body)
			case codec.Disconnect:
				if len(bufs) > 0 {
					s.deliverFrom(cur, bufs, offset)
				}
				r := ParseReason(body)
				r.Text = "peer disconnected: " + r.Text
				s.close(r, false, true)
				return
			default:
				s.close(Reason{codec.DisconnectProtocolError, "protocol error: unexpected " + t.String() + " frame"}, false, false)
				return
			}
		}
		if len(bufs) > 0 {
			s.deliverFrom(cur, bufs, offset)
			clear(bufs)
		}
		if l != nil {
			l.release()
			l = nil
		}
		if len(msg) <= idleMessage {
			own = nil
		}
	}
}

// deliver hands opened packets to the handler, one reader at a time.
func (s *Session) deliver(bufs [][]byte, offset int) {
	s.deliverMu.Lock()
	s.h.Packets(bufs, offset)
	s.deliverMu.Unlock()
}

// deliverFrom is deliver for packets in l (nil: in no lease), whose
// spans the reader has recorded in l.pk.
func (s *Session) deliverFrom(l *Lease, bufs [][]byte, offset int) {
	lh, ok := s.h.(LeaseHandler)
	if l == nil || !ok {
		s.deliver(bufs, offset)
	} else {
		l.next = 0
		s.deliverMu.Lock()
		lh.PacketsLeased(bufs, offset, l)
		s.deliverMu.Unlock()
	}
	if l != nil {
		l.pk = l.pk[:0]
	}
}
