// Package quic is Warren's QUIC transport: a Listener that accepts clients on
// a UDP port and a Dial that connects to one, both giving a Conn that carries
// Warren's two kinds of traffic the way each wants to travel (DESIGN §3):
//
//   - The handshake and control frames (HandshakeInit, HandshakeResp,
//     Keepalive, Disconnect, ...) go on the connection's first bidirectional
//     stream, which the client opens. They need to arrive, in order, so the
//     stream gives them QUIC's retransmission and flow control. Conn
//     implements transport.Conn over that stream, so the hub runs the same
//     Noise handshake and session code over QUIC as over WebSocket.
//   - IP packets go in QUIC DATAGRAM frames (RFC 9221), one sealed packet per
//     datagram, through SendDatagram and ReceiveDatagram. Datagrams are never
//     retransmitted, so a lost packet is lost as it would be on the wire and
//     TCP inside the tunnel does its own recovery without head-of-line
//     blocking behind a stream.
//
// A datagram must fit in one QUIC packet. The room for its payload starts at
// 1243 bytes (quic-go's first packets are 1280 bytes) and grows to about 1400
// as path MTU discovery finds larger packets get through; MaxDatagramSize
// reports the current figure. SendDatagram does not fragment or truncate a
// payload that does not fit: it fails with an error wrapping
// ErrDatagramTooLarge, and the session above decides what to do with the
// packet, which DESIGN §3 says is to carry it on the stream (WriteMessage)
// instead, or to answer with ICMP "packet too big". This package only moves
// bytes: sealing, counters and replay protection belong to the session.
//
// Performance: both ends give quic-go a *net.UDPConn, so on Linux it sends
// with GSO (UDP_SEGMENT) and reads with recvmmsg; QUIC_GO_DISABLE_GSO=1 turns
// GSO off. quic-go batches only full-size packets into one GSO sendmsg, and
// its datagram room assumes a 20-byte connection ID, so with its default of
// 4 a datagram never fills its packet and each costs a sendmsg. Both ends
// therefore choose 17-byte connection IDs, with which a datagram of exactly
// MaxDatagramSize bytes fills its packet, and Conn is a
// transport.DatagramPadder: the session pads a packet that nearly fills a
// datagram (a bulk flow's, at the tunnel MTU) so that runs of them go out
// with one sendmsg. quic-go copies every datagram on send and on receipt
// and queues at most 32 to send and 128 received; ReceiveDatagrams hands the
// received ones over a batch at a time, and the session drains them into a
// larger queue at once, but a burst of more than 128 that arrives while that
// goroutine waits for a CPU is dropped. The listener's socket, shared by all
// its clients, asks for a 32 MiB receive buffer (past net.core.rmem_max
// where the process may). ReadMessageHeadroom reads the stream into one
// buffer with room kept in front of it and hands out every whole frame in
// it at once, so nothing is copied to make room for the next header.
//
// Both sides negotiate the ALPN protocol "warren/1" and require DATAGRAM
// support from the peer. A client verifies the server by certificate pin
// (transport.VerifyPin, the same pin as the WebSocket transport; the server
// reuses the WebSocket listener's certificate) or through WebPKI.
//
// The listener refuses addresses for which ListenConfig.Reject returns true
// when their first packet arrives, before any cryptography, by answering with
// CONNECTION_REFUSED (DESIGN §4, the first phase of the ACL).
//
// Like the WebSocket listener it never stops taking connections, since one
// that does can be shut by a few hundred peers that connect and stay silent.
// Before a connection reaches Accept it is held to these bounds:
//
//   - The QUIC handshake: quic-go keeps no cap on handshakes in flight, so
//     when more than RetryAbove (128) are, a new attempt is first sent a
//     Retry and must echo its token (RFC 9000 §8.1.2): a spoofed source
//     address then costs the listener no state, and one real address costs
//     it a round trip. quic-go aborts a handshake that hears nothing for
//     half of HandshakeTimeout, or that is not done within HandshakeTimeout.
//     With ListenConfig.Guard set (the hub sets one, package hsguard), an
//     attempt also takes a place in the hub's bounded handshake queue when
//     its first packet arrives; while the Guard is under load it is sent a
//     Retry too, and once its token proves its address it is charged to
//     that address's handshake rate.
//   - From the end of the handshake to the client's stream and the accept
//     queue: HandshakeTimeout (10 s), and a budget of MaxPreAuth (1024)
//     connections in all and MaxPreAuthPerSource (32) per source (an IPv4
//     address or IPv6 /64; the handshake has proved the address). A
//     connection past a bound closes the oldest one waiting (of that
//     source, for the per-source bound), so a new client always gets in.
//   - The accept queue holds 128; quic-go's own queue in front of it (32)
//     never fills, since the listener drains it at once.
//
// Dependency: github.com/quic-go/quic-go is the QUIC implementation because it
// is the complete, maintained QUIC stack for Go: RFC 9000/9001/9002, DATAGRAM
// frames (RFC 9221) and path MTU discovery (RFC 8899), with a small public
// surface (a Transport over any net.PacketConn, Conn, Stream) and fuzzed
// parsers. Go's standard library has no QUIC of its own to use instead.
package quic

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warrenvpn/warren/internal/hsguard"
	"github.com/warrenvpn/warren/transport/internal/preauth"
)

// ALPN is the application protocol both sides negotiate in the TLS handshake.
const ALPN = "warren/1"

// ConnIDLen is the length of the connection IDs both ends choose, and so of
// the one in the header of every 1-RTT packet sent to them (the hub's MTUInfo
// counts it in the QUIC overhead). quic-go allows a
// datagram room of the packet size less 37 bytes (a type byte, the longest
// connection ID, 20 bytes, and the 16-byte AEAD tag); a packet that carries
// only a DATAGRAM frame spends 1 + ConnIDLen + 2 (packet number) + 1 (frame
// type) + 16 bytes besides the payload. With 17 the two agree: a datagram
// of exactly MaxDatagramSize bytes fills its packet to the path MTU, and
// quic-go batches runs of full-size packets into one GSO sendmsg (it ends a
// batch at the first packet short of full size). With quic-go's default of 4
// every datagram packet is 13 bytes short and costs a sendmsg of its own.
const ConnIDLen = 17

const (
	// DefaultHandshakeTimeout is the handshake timeout when a config leaves
	// HandshakeTimeout zero.
	DefaultHandshakeTimeout = 10 * time.Second

	// DefaultMaxIdleTimeout is the idle timeout when a config leaves
	// MaxIdleTimeout zero: quic-go's default.
	DefaultMaxIdleTimeout = 30 * time.Second

	// DefaultMaxPreAuth bounds connections between the end of the QUIC
	// handshake and the accept queue: those waiting for the client's stream.
	DefaultMaxPreAuth = 1024

	// DefaultMaxPreAuthPerSource bounds those connections per IPv4
	// address or IPv6 /64.
	DefaultMaxPreAuthPerSource = 32

	// DefaultRetryAbove is the number of QUIC handshakes in flight above
	// which a new connection attempt must first prove its source address.
	DefaultRetryAbove = 128

	// acceptQueueLen bounds connections waiting for Accept.
	acceptQueueLen = 128

	// maxRecentRejects bounds the sources remembered so that Rejected counts
	// an attempt once, not once per Initial packet.
	maxRecentRejects = 1024

	// listenReadBuffer is the receive buffer the listener asks for on its
	// socket, which every client's packets share. quic-go asks for 7 MiB,
	// enough for one connection; with a hundred clients on loopback, each
	// keeping a few packets in flight while the hub waits for a CPU, that
	// overflowed (the kernel's RcvbufErrors) and each lost datagram
	// stalled a TCP flow inside the tunnel. The kernel charges it only for
	// packets waiting in it.
	listenReadBuffer = 32 << 20
)

// Application error codes sent in CONNECTION_CLOSE frames.
const (
	// closeNormal ends a connection that is done.
	closeNormal quic.ApplicationErrorCode = 0
	// closeProtocolError ends a connection whose peer broke the rules of
	// this transport: no DATAGRAM support, or no stream in time.
	closeProtocolError quic.ApplicationErrorCode = 1
	// closeBusy ends a connection closed to make room for a newer one, or
	// that found the accept queue full.
	closeBusy quic.ApplicationErrorCode = 2
)

// ListenConfig configures Listen.
type ListenConfig struct {
	// TLSConfig holds the server's certificate(s): the same as the
	// WebSocket listener's, so one pin serves both. Required. It is cloned,
	// not modified. NextProtos is replaced with ALPN, and the minimum
	// version is TLS 1.3, which QUIC requires.
	TLSConfig *tls.Config

	// Reject is called with the source address of every connection attempt
	// when its first packet arrives, before the TLS handshake, so refusing a
	// peer costs no cryptography. If it returns true the attempt is refused
	// with CONNECTION_REFUSED and counted in Rejected. The address is not
	// yet verified and could be spoofed, which is harmless for a block list:
	// a spoofer gains nothing by being refused. If nil, every address is
	// allowed. It is called from quic-go's packet-handling goroutine, so it
	// must be quick.
	Reject func(netip.Addr) bool

	// HandshakeTimeout bounds the QUIC handshake (quic-go aborts one that
	// hears nothing from the client for half this long, or that takes this
	// long in all) and then, separately, the wait for the client to open
	// its stream and for room in the accept queue. If zero,
	// DefaultHandshakeTimeout (10 s).
	HandshakeTimeout time.Duration

	// MaxPreAuth bounds the connections that have finished the QUIC
	// handshake but not yet reached the accept queue. When a new one would
	// exceed it, the oldest is closed. If zero, DefaultMaxPreAuth (1024).
	MaxPreAuth int

	// MaxPreAuthPerSource bounds those connections per source: an IPv4
	// address or an IPv6 /64. When a new one would exceed it, the oldest of
	// that source is closed. If zero, DefaultMaxPreAuthPerSource (32).
	MaxPreAuthPerSource int

	// RetryAbove is the number of QUIC handshakes in flight above which a
	// new connection attempt is sent a Retry and must prove its source
	// address (one more round trip) before the listener keeps any state for
	// it. If zero, DefaultRetryAbove (128); if negative, every attempt is.
	RetryAbove int

	// Guard, if set, admits each connection attempt into the hub's
	// handshake queue when its first packet arrives, before the TLS
	// handshake, and holds its place until the QUIC handshake is done or
	// fails. While the Guard is under load, an attempt must first prove its
	// source address with a Retry (as past RetryAbove), and is then charged
	// to that source's rate. An attempt the Guard refuses is answered with
	// CONNECTION_REFUSED; the Guard counts it. If nil, no handshake is
	// limited.
	Guard *hsguard.Guard

	// MaxIdleTimeout closes a connection that has received nothing for this
	// long; the smaller of the two sides' values applies. Clients send QUIC
	// keepalives well within it. If zero, DefaultMaxIdleTimeout.
	MaxIdleTimeout time.Duration

	// Logger receives debug logs about refused and failed connections.
	// If nil, logs are discarded.
	Logger *slog.Logger
}

// Listener accepts QUIC connections. Its methods are safe for concurrent use.
//
// All of a listener's connections share its UDP socket, so closing the
// listener closes them too, including those returned by Accept.
type Listener struct {
	udp *net.UDPConn
	tr  *quic.Transport
	ln  *quic.Listener
	cfg ListenConfig
	log *slog.Logger

	queue  chan *Conn      // set up, waiting for Accept
	budget *preauth.Budget // handshake done, not yet queued

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc

	rejected    atomic.Uint64
	evicted     atomic.Uint64
	retries     atomic.Uint64
	handshaking atomic.Int64 // QUIC handshakes in flight
	recent      recentRejects

	mu     sync.Mutex
	closed bool
	conns  map[*quic.Conn]*Conn // every open connection; nil until set up

	wg sync.WaitGroup // accept loop and per-connection setup
}

// Listen listens on the UDP address addr (e.g. "0.0.0.0:443", "[::]:443",
// ":0" for both families). ctx bounds the listen call only; the Listener runs
// until Close.
func Listen(ctx context.Context, addr string, cfg ListenConfig) (*Listener, error) {
	if cfg.TLSConfig == nil {
		return nil, errors.New("quic: ListenConfig.TLSConfig is required")
	}
	tc := cfg.TLSConfig
	if len(tc.Certificates) == 0 && tc.GetCertificate == nil && tc.GetConfigForClient == nil {
		return nil, errors.New("quic: ListenConfig.TLSConfig has no certificate")
	}
	tlsConf := tc.Clone()
	tlsConf.MinVersion = tls.VersionTLS13
	tlsConf.NextProtos = []string{ALPN}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxIdleTimeout <= 0 {
		cfg.MaxIdleTimeout = DefaultMaxIdleTimeout
	}
	if cfg.MaxPreAuth < 0 || cfg.MaxPreAuthPerSource < 0 {
		return nil, fmt.Errorf("quic: ListenConfig.MaxPreAuth (%d) and MaxPreAuthPerSource (%d) must not be negative", cfg.MaxPreAuth, cfg.MaxPreAuthPerSource)
	}
	if cfg.MaxPreAuth == 0 {
		cfg.MaxPreAuth = DefaultMaxPreAuth
	}
	if cfg.MaxPreAuthPerSource == 0 {
		cfg.MaxPreAuthPerSource = DefaultMaxPreAuthPerSource
	}
	if cfg.RetryAbove == 0 {
		cfg.RetryAbove = DefaultRetryAbove
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("quic: listen: %w", err)
	}
	udp := pc.(*net.UDPConn) // "udp" always gives a *net.UDPConn
	growReadBuffer(udp, listenReadBuffer)

	l := &Listener{
		udp:    udp,
		cfg:    cfg,
		log:    log,
		queue:  make(chan *Conn, acceptQueueLen),
		budget: preauth.New(cfg.MaxPreAuth, cfg.MaxPreAuthPerSource),
		conns:  make(map[*quic.Conn]*Conn),
	}
	l.tr = &quic.Transport{
		Conn:                udp,
		ConnectionIDLength:  ConnIDLen,
		ConnContext:         l.connContext,
		VerifySourceAddress: l.verifySourceAddress,
	}
	connConf := &quic.Config{
		// quic-go allows twice this for the whole handshake.
		HandshakeIdleTimeout: max(cfg.HandshakeTimeout/2, time.Millisecond),
		MaxIdleTimeout:       cfg.MaxIdleTimeout,
		// One stream from the client, none from anyone else.
		MaxIncomingStreams:    1,
		MaxIncomingUniStreams: -1,
		EnableDatagrams:       true,
	}
	qconf := connConf.Clone()
	if cfg.Reject != nil || cfg.Guard != nil {
		qconf.GetConfigForClient = func(info *quic.ClientInfo) (*quic.Config, error) {
			ap, _ := addrPort(info.RemoteAddr)
			if cfg.Reject != nil && cfg.Reject(ap.Addr()) {
				if l.recent.add(ap, time.Now(), cfg.HandshakeTimeout) {
					l.rejected.Add(1)
					l.log.Debug("quic: rejected connection", "remote", ap)
				}
				return nil, errRejected
			}
			if cfg.Guard != nil && !cfg.Guard.Admit(ap.Addr(), info.AddrVerified) {
				l.log.Debug("quic: handshake dropped: queue full or source over its rate", "remote", ap, "verified", info.AddrVerified)
				return nil, errRejected
			}
			// connContext runs next, and always: it gives the place
			// back when the handshake ends.
			return connConf, nil
		}
	}
	l.ln, err = l.tr.Listen(tlsConf, qconf)
	if err != nil {
		_ = l.tr.Close()
		_ = udp.Close()
		return nil, fmt.Errorf("quic: listen: %w", err)
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())

	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// errRejected tells quic-go to refuse a connection attempt.
var errRejected = errors.New("quic: rejected")

// Addr returns the listener's UDP address.
func (l *Listener) Addr() net.Addr {
	return l.udp.LocalAddr()
}

// Evicted returns how many connections waiting for their stream were closed
// to make room for newer ones (see MaxPreAuth).
func (l *Listener) Evicted() uint64 {
	return l.evicted.Load()
}

// Retries returns how many connection attempts were sent a Retry because
// more than RetryAbove handshakes were in flight.
func (l *Listener) Retries() uint64 {
	return l.retries.Load()
}

// Rejected returns how many connection attempts were refused because Reject
// returned true for their address. A client's first flight can span several
// packets, each refused, so packets from one source address and port within
// HandshakeTimeout count once.
func (l *Listener) Rejected() uint64 {
	return l.rejected.Load()
}

// Accept waits for the next connection whose client has completed the QUIC
// handshake and opened its stream. A QUIC stream becomes visible to the peer
// with its first bytes, so this is when the client's first message (its
// HandshakeInit) has started to arrive. After Close it returns an error
// wrapping net.ErrClosed; if ctx ends first, ctx's error.
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	select {
	case <-l.ctx.Done():
		return nil, fmt.Errorf("quic: accept: %w", net.ErrClosed)
	default:
	}
	select {
	case c := <-l.queue:
		return c, nil
	case <-l.ctx.Done():
		return nil, fmt.Errorf("quic: accept: %w", net.ErrClosed)
	case <-ctx.Done():
		return nil, fmt.Errorf("quic: accept: %w", ctx.Err())
	}
}

// Close stops accepting, closes every connection (those returned by Accept
// too, since they share the listener's socket) and the UDP socket, and waits
// for the listener's goroutines to finish. Connections returned by Accept are
// closed as by Conn.Close, so data they have written still gets a short grace
// to reach the peer. Closing twice returns an error wrapping net.ErrClosed.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return fmt.Errorf("quic: close: %w", net.ErrClosed)
	}
	l.closed = true
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()

	l.cancel()
	_ = l.ln.Close()
	var wg sync.WaitGroup
	for qc, c := range conns {
		wg.Go(func() {
			if c != nil {
				_ = c.Close()
			} else {
				_ = qc.CloseWithError(closeNormal, "listener closed")
			}
		})
	}
	wg.Wait()
	l.wg.Wait()
	// Connections still handshaking are destroyed by the transport.
	_ = l.tr.Close()
	if err := l.udp.Close(); err != nil {
		return fmt.Errorf("quic: close: %w", err)
	}
	return nil
}

// track records a connection so Close can close it, or c's *Conn once it is
// set up. It reports false if the listener is closed.
func (l *Listener) track(qc *quic.Conn, c *Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[qc] = c
	return true
}

// forget drops a connection that has been closed.
func (l *Listener) forget(qc *quic.Conn) {
	l.mu.Lock()
	delete(l.conns, qc) // a no-op on the nil map after Close
	l.mu.Unlock()
}

// handshakeKey is the context key under which a connection's context holds
// its *handshakeCount.
type handshakeKey struct{}

// handshakeCount counts one handshake in flight until done is called, once
// the handshake completes or the connection ends.
type handshakeCount struct {
	l    *Listener
	once sync.Once
}

func (h *handshakeCount) done() {
	h.once.Do(func() {
		h.l.handshaking.Add(-1)
		if h.l.cfg.Guard != nil {
			h.l.cfg.Guard.Done()
		}
	})
}

// connContext is quic-go's ConnContext: it counts the new connection's
// handshake as in flight until it completes or fails.
func (l *Listener) connContext(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	h := &handshakeCount{l: l}
	l.handshaking.Add(1)
	context.AfterFunc(ctx, h.done)
	return context.WithValue(ctx, handshakeKey{}, h), nil
}

// verifySourceAddress is quic-go's VerifySourceAddress: past RetryAbove
// handshakes in flight, or while the Guard is under load, a new attempt must
// prove its address first.
func (l *Listener) verifySourceAddress(net.Addr) bool {
	if l.cfg.RetryAbove >= 0 && l.handshaking.Load() < int64(l.cfg.RetryAbove) &&
		(l.cfg.Guard == nil || !l.cfg.Guard.UnderLoad()) {
		return false
	}
	l.retries.Add(1)
	return true
}

// acceptLoop takes connections that finished the QUIC handshake from quic-go
// and starts the setup of each. It never waits for room: the pre-auth budget
// makes room by closing the oldest connection in it.
func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	for {
		qc, err := l.ln.Accept(l.ctx)
		if err != nil {
			// quic-go's Accept fails only once the listener is closed.
			return
		}
		if h, ok := qc.Context().Value(handshakeKey{}).(*handshakeCount); ok {
			h.done()
		}
		if !l.track(qc, nil) {
			_ = qc.CloseWithError(closeNormal, "listener closed")
			return
		}
		remote, _ := addrPort(qc.RemoteAddr())
		// The whole wait for the stream and the queue, cut short if the
		// connection is evicted to make room.
		ctx, cancel := context.WithTimeout(l.ctx, l.cfg.HandshakeTimeout)
		entry := l.budget.Add(remote.Addr(), cancel)
		l.wg.Add(1)
		go l.setup(ctx, cancel, qc, remote, entry)
	}
}

// setup waits for the client's stream on a new connection and queues the
// connection for Accept, within ctx.
func (l *Listener) setup(ctx context.Context, cancel context.CancelFunc, qc *quic.Conn, remote netip.AddrPort, entry *preauth.Entry) {
	defer l.wg.Done()
	defer cancel()
	defer l.budget.Remove(entry)

	fail := func(code quic.ApplicationErrorCode, reason string) {
		_ = qc.CloseWithError(code, reason)
		l.forget(qc)
	}
	if !qc.ConnectionState().SupportsDatagrams.Remote {
		l.log.Debug("quic: refused connection without DATAGRAM support", "remote", remote)
		fail(closeProtocolError, "DATAGRAM support required")
		return
	}
	st, err := qc.AcceptStream(ctx)
	if err != nil {
		switch {
		case l.ctx.Err() != nil:
			// Close has closed it, or will.
		case l.budget.Evicted(entry):
			l.evicted.Add(1)
			l.log.Debug("quic: closed connection to make room", "remote", remote)
			fail(closeBusy, "server busy")
		default:
			l.log.Debug("quic: no stream from client", "remote", remote, "err", err)
			fail(closeProtocolError, "no stream opened in time")
		}
		return
	}
	c := newConn(qc, st, nil)
	c.release = func() { l.forget(qc) }
	if !l.track(qc, c) {
		_ = qc.CloseWithError(closeNormal, "listener closed")
		return
	}
	select {
	case l.queue <- c:
		return
	case <-ctx.Done():
	}
	switch {
	case l.ctx.Err() != nil:
		// Close has closed it, or will.
	case l.budget.Evicted(entry):
		l.evicted.Add(1)
		l.log.Debug("quic: closed connection to make room", "remote", remote)
		fail(closeBusy, "server busy")
	default:
		l.log.Debug("quic: accept queue full, closing connection", "remote", remote)
		fail(closeBusy, "server busy")
	}
}

// recentRejects remembers recently refused sources. It is safe for
// concurrent use; its zero value is ready to use.
type recentRejects struct {
	mu   sync.Mutex
	seen map[netip.AddrPort]time.Time // source -> when first refused
}

// add records a refusal of src at now and reports whether it starts a new
// attempt: src was not refused within the last window.
func (r *recentRejects) add(src netip.AddrPort, now time.Time, window time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.seen[src]; ok && now.Sub(t) < window {
		return false
	}
	if len(r.seen) >= maxRecentRejects {
		// Bounded by construction: forgetting early only overcounts.
		clear(r.seen)
	}
	if r.seen == nil {
		r.seen = make(map[netip.AddrPort]time.Time)
	}
	r.seen[src] = now
	return true
}

// addrPort converts a UDP address to a netip.AddrPort with any IPv4-mapped
// IPv6 address unmapped (a listener on ":0" is dual-stack).
func addrPort(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	if !ap.IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
