// Package ws is Warren's WebSocket-over-TLS transport: a Listener that
// accepts clients on a TCP port and a Dial that connects to one, both giving a
// Conn (a transport.Conn) that carries one message of Warren frames per binary
// WebSocket message. WebSocket over TLS on port 443 passes through networks,
// proxies and firewalls that block UDP, so it is the transport of last resort
// when QUIC and WireGuard cannot get through.
//
// The listener checks a connection in the order that spends the least on a
// peer it will refuse: TCP accept, then, if the PROXY protocol is enabled,
// ListenConfig.TrustProxy on the TCP peer (nothing is read from a peer that
// may not send a header) and the PROXY header (which gives the real source
// address, IPv4 or IPv6; a LOCAL header, a proxy's health check, leaves the
// proxy's own), then ListenConfig.Reject on that address before any
// cryptography (DESIGN §4, the first phase of the ACL), then the TLS
// handshake and the HTTP upgrade.
//
// The listener never stops accepting: a listener that does can be shut by a
// few hundred sockets that connect and say nothing. Instead, every connection
// between TCP accept and the accept queue (the pre-auth phase) is held to
// these bounds, all set in ListenConfig:
//
//   - FirstByteTimeout (3 s): a connection that sends nothing for this long
//     after accept is closed.
//   - ProxyHeaderTimeout (5 s): the PROXY header, when enabled, must have
//     arrived this long after accept.
//   - HandshakeTimeout (10 s): the whole pre-auth phase, TLS handshake and
//     WebSocket upgrade included, ends this long after accept.
//   - MaxPreAuth (1024) connections in the pre-auth phase in all, and
//     MaxPreAuthPerSource (32) from one source (an IPv4 address or an IPv6
//     /64; behind a PROXY header, once the header has named it). When a new
//     connection would exceed a bound, the oldest connection that has sent
//     nothing yet is closed to make room, else the oldest one (of that
//     source, for the per-source bound). The newcomer always gets in, so a
//     client is locked out only by an attacker who opens connections faster
//     than the budget divided by the client's handshake time, and for the
//     per-source bound only by one at the client's own address.
//
// With ListenConfig.Guard set (the hub sets one, package hsguard), each
// connection is also charged, under load, to its source's handshake rate at accept (after
// the PROXY header, if any) and takes a place in the hub's bounded handshake
// queue once it has sent its first byte; one over its rate or that finds the
// queue full is closed before the TLS handshake.
//
// A program that already runs an HTTP server (net/http's, Caddy's) can serve
// the upgrades on one of its routes instead, with Handler: that server then
// owns TCP accept, the PROXY header, TLS and the request's timeouts, and
// Handler applies Reject and the Guard's per-source rate to the request's
// RemoteAddr, the pre-auth budget and
// HandshakeTimeout from there on (see Handler).
//
// Upgraded connections wait for Accept in a queue of 128; one that finds the
// queue full waits out its pre-auth deadline and is then closed. Memory is
// therefore bounded by the budget and the queue, whatever the peers do.
//
// Dependencies: github.com/gorilla/websocket is the WebSocket implementation
// because it is small, RFC 6455 complete, stable for years, and exposes the
// message reader (NextReader) that lets Conn read every message into one
// reused buffer; it also runs over any net.Conn, so the server can do TLS
// itself and reject before it. github.com/pires/go-proxyproto parses PROXY
// protocol v1 and v2 headers: it is the widely used Go implementation of
// both versions, has fuzz tests, and bounds the header read with a timeout.
package ws

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/time/rate"

	"github.com/warrenvpn/warren/internal/hsguard"
	"github.com/warrenvpn/warren/transport/internal/preauth"
)

// Defaults for ListenConfig's pre-auth bounds.
const (
	// DefaultFirstByteTimeout closes a connection that has sent nothing
	// this long after TCP accept.
	DefaultFirstByteTimeout = 3 * time.Second

	// DefaultProxyHeaderTimeout bounds the PROXY header's arrival, from TCP
	// accept.
	DefaultProxyHeaderTimeout = 5 * time.Second

	// DefaultMaxPreAuth bounds connections in the pre-auth phase.
	DefaultMaxPreAuth = 1024

	// DefaultMaxPreAuthPerSource bounds connections in the pre-auth phase
	// from one IPv4 address or IPv6 /64.
	DefaultMaxPreAuthPerSource = 32
)

const (
	// acceptQueueLen bounds upgraded connections waiting for Accept.
	acceptQueueLen = 128

	// maxHeaderBytes bounds the HTTP upgrade request's header.
	maxHeaderBytes = 16 << 10
)

// ListenConfig configures Listen.
type ListenConfig struct {
	// TLSConfig holds the server's certificate(s). Required. It is cloned,
	// not modified. If its MinVersion is zero, TLS 1.2 is the minimum.
	// NextProtos is replaced with "http/1.1": the upgrade is HTTP/1.1 only.
	TLSConfig *tls.Config

	// ProxyProtocol makes the listener read a PROXY protocol v2 header (and
	// v1, if ProxyProtocolV1) at the start of every TCP connection, as sent
	// by HAProxy's send-proxy-v2 or a cloud load balancer. A connection
	// without a valid header is closed and counted in Rejected.
	// Conn.RemoteAddr is then the header's source address, IPv4 or IPv6.
	// A header with the LOCAL command (a proxy's health check, which
	// relays no client) is accepted and counted in Local; the connection is
	// then the proxy's own, and RemoteAddr the socket's peer. A header
	// whose source is not TCP over IPv4 or IPv6 (UDP, a Unix socket) is
	// refused. Enable it only behind a proxy, and set TrustProxy: without
	// it any peer that can reach the port can claim any source address.
	ProxyProtocol bool

	// TrustProxy reports whether a TCP peer (its address unmapped: an
	// IPv4 peer of a dual-stack listener is IPv4) may send PROXY headers.
	// With ProxyProtocol, a connection from a peer it refuses is closed at
	// TCP accept, before a byte is read or a pre-auth place taken, and
	// counted in Untrusted and Rejected: such a peer may not name a source,
	// and the port speaks nothing but the PROXY protocol, so it has nothing
	// to say. If nil, every peer is trusted. It is called from the accept
	// loop, so it must be quick.
	TrustProxy func(netip.Addr) bool

	// ProxyProtocolV1 also accepts the text PROXY protocol v1 header. If
	// false, a v1 header is refused like a missing one: proxies that can
	// send v2 should, since v2 is binary, fixed-size and cheaper to parse.
	ProxyProtocolV1 bool

	// ProxyHeaderTimeout is how long after TCP accept the PROXY header must
	// have arrived; a connection whose header is late is closed and counted
	// in Rejected. It never extends HandshakeTimeout. If zero,
	// DefaultProxyHeaderTimeout (5 s).
	ProxyHeaderTimeout time.Duration

	// FirstByteTimeout closes a connection that has sent nothing this long
	// after TCP accept (a real client sends its TLS ClientHello, or a
	// proxy its PROXY header, at once). It never extends HandshakeTimeout.
	// If zero, DefaultFirstByteTimeout (3 s).
	FirstByteTimeout time.Duration

	// MaxPreAuth bounds the connections between TCP accept and the accept
	// queue. When a new connection would exceed it, the oldest connection
	// that has sent nothing is closed, else the oldest one. If zero,
	// DefaultMaxPreAuth (1024).
	MaxPreAuth int

	// MaxPreAuthPerSource bounds those connections per source: an IPv4
	// address or an IPv6 /64, the PROXY header's source when ProxyProtocol
	// is set. When a new connection would exceed it, the oldest connection
	// of that source that has sent nothing is closed, else the oldest one
	// of that source. If zero, DefaultMaxPreAuthPerSource (32).
	MaxPreAuthPerSource int

	// Reject is called with the real source address of every connection
	// after TCP accept (and the PROXY header), before the TLS handshake, so
	// refusing a peer costs no cryptography. If it returns true the
	// connection is closed and counted in Rejected. If nil, every address is
	// allowed. It is called from many goroutines at once.
	Reject func(netip.Addr) bool

	// HandshakeTimeout bounds the whole pre-auth phase: the PROXY header
	// read, the TLS handshake, the WebSocket upgrade and the wait for room
	// in the accept queue, together, from TCP accept. If zero,
	// DefaultHandshakeTimeout (10 s).
	HandshakeTimeout time.Duration

	// Guard, if set, limits handshakes per source and in all (package
	// hsguard): each connection is charged to its source (the TCP peer,
	// which the TCP handshake has proven, or the PROXY header's source) at
	// accept or once the header is read, and takes a place in the hub's
	// handshake queue once it has sent its first byte, before the TLS
	// handshake; it holds the place until it is queued for Accept or
	// closed. A connection over its source's rate, or that finds the queue
	// full, is closed at once, and the Guard counts it. If nil, no
	// handshake is limited.
	Guard *hsguard.Guard

	// Logger receives debug logs about refused and failed connections.
	// If nil, logs are discarded.
	Logger *slog.Logger
}

// normalize fills in defaults and refuses negative values.
func (cfg *ListenConfig) normalize() error {
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"HandshakeTimeout", &cfg.HandshakeTimeout, DefaultHandshakeTimeout},
		{"FirstByteTimeout", &cfg.FirstByteTimeout, DefaultFirstByteTimeout},
		{"ProxyHeaderTimeout", &cfg.ProxyHeaderTimeout, DefaultProxyHeaderTimeout},
	} {
		if *d.v < 0 {
			return fmt.Errorf("ws: ListenConfig.%s is negative (%v)", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	for _, n := range []struct {
		name string
		v    *int
		def  int
	}{
		{"MaxPreAuth", &cfg.MaxPreAuth, DefaultMaxPreAuth},
		{"MaxPreAuthPerSource", &cfg.MaxPreAuthPerSource, DefaultMaxPreAuthPerSource},
	} {
		if *n.v < 0 {
			return fmt.Errorf("ws: ListenConfig.%s is negative (%d)", n.name, *n.v)
		}
		if *n.v == 0 {
			*n.v = n.def
		}
	}
	return nil
}

// Listener accepts WebSocket connections over TLS. Its methods are safe for
// concurrent use.
type Listener struct {
	tcp     net.Listener
	tlsConf *tls.Config
	cfg     ListenConfig
	log     *slog.Logger
	srv     *http.Server
	handoff *handoffListener // TLS connections on their way to srv
	queue   chan *Conn       // upgraded, waiting for Accept
	budget  *preauth.Budget  // connections between TCP accept and queue

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc

	rejected  atomic.Uint64
	evicted   atomic.Uint64
	silent    atomic.Uint64
	untrusted atomic.Uint64
	local     atomic.Uint64

	untrustedLog rate.Sometimes // Warn about untrusted peers, not too often

	mu      sync.Mutex
	closed  bool
	pending map[*serverConn]struct{} // accepted, not handed out by Accept, not closed

	wg     sync.WaitGroup // accept loop, HTTP serve loop, per-connection setup
	httpWG sync.WaitGroup // connections inside srv
}

// Listen listens on the TCP address addr (e.g. "0.0.0.0:443", ":0") and
// serves WebSocket upgrades on any path. ctx bounds the listen call only; the
// Listener runs until Close.
func Listen(ctx context.Context, addr string, cfg ListenConfig) (*Listener, error) {
	if cfg.TLSConfig == nil {
		return nil, errors.New("ws: ListenConfig.TLSConfig is required")
	}
	tc := cfg.TLSConfig
	if len(tc.Certificates) == 0 && tc.GetCertificate == nil && tc.GetConfigForClient == nil {
		return nil, errors.New("ws: ListenConfig.TLSConfig has no certificate")
	}
	tlsConf := tc.Clone()
	if tlsConf.MinVersion == 0 {
		tlsConf.MinVersion = tls.VersionTLS12
	}
	tlsConf.NextProtos = []string{"http/1.1"}
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	var lc net.ListenConfig
	tcp, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ws: listen: %w", err)
	}

	l := &Listener{
		tcp:     tcp,
		tlsConf: tlsConf,
		cfg:     cfg,
		log:     log,
		queue:   make(chan *Conn, acceptQueueLen),
		budget:  preauth.New(cfg.MaxPreAuth, cfg.MaxPreAuthPerSource),
		pending: make(map[*serverConn]struct{}),

		untrustedLog: rate.Sometimes{First: 1, Interval: time.Minute},
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.handoff = &handoffListener{addr: tcp.Addr(), conns: make(chan net.Conn), done: l.ctx.Done(), wg: &l.httpWG}
	up := &websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		// A write buffer is taken from the pool for each message and
		// returned once it is flushed, so an idle connection holds none.
		WriteBufferPool: &writeBuffers,
		// Clients authenticate with Noise, not cookies, so a cross-origin
		// page gains nothing: accept any Origin.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	l.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { l.upgrade(up, w, r) }),
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, serverConnKey{}, c)
		},
		ConnState: func(c net.Conn, s http.ConnState) {
			// A hijacked connection leaves srv inside the handler, which
			// then owns it; any other ends here.
			sc := c.(*serverConn)
			switch s {
			case http.StateHijacked:
				sc.hijacked.Store(true)
			case http.StateClosed:
				l.forget(sc)
				l.release(sc)
				l.httpWG.Done()
			}
		},
	}
	// One request per connection: a non-upgrade request is answered and
	// the connection closed.
	l.srv.SetKeepAlivesEnabled(false)

	l.wg.Add(2)
	go l.acceptLoop()
	go func() {
		defer l.wg.Done()
		_ = l.srv.Serve(l.handoff)
	}()
	return l, nil
}

// Addr returns the listener's TCP address.
func (l *Listener) Addr() net.Addr {
	return l.tcp.Addr()
}

// Rejected returns how many connections were closed before the TLS handshake
// because Reject refused their address or their PROXY header was missing,
// invalid, late or of a refused version.
func (l *Listener) Rejected() uint64 {
	return l.rejected.Load()
}

// Untrusted returns how many connections were closed at TCP accept because
// ProxyProtocol is set and TrustProxy refused their peer. They are counted in
// Rejected too.
func (l *Listener) Untrusted() uint64 {
	return l.untrusted.Load()
}

// Local returns how many connections began with a PROXY header with the LOCAL
// command (a proxy's health check, or a connection of the proxy's own).
func (l *Listener) Local() uint64 {
	return l.local.Load()
}

// Evicted returns how many connections in the pre-auth phase were closed to
// make room for newer ones (see MaxPreAuth).
func (l *Listener) Evicted() uint64 {
	return l.evicted.Load()
}

// Silent returns how many connections were closed because they sent nothing
// within FirstByteTimeout.
func (l *Listener) Silent() uint64 {
	return l.silent.Load()
}

// PreAuth returns the number of connections now in the pre-auth phase.
func (l *Listener) PreAuth() int {
	return l.budget.Len()
}

// Accept waits for the next upgraded connection. After Close it returns an
// error wrapping net.ErrClosed; if ctx ends first, ctx's error.
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	for {
		select {
		case <-l.ctx.Done():
			return nil, fmt.Errorf("ws: accept: %w", net.ErrClosed)
		default:
		}
		select {
		case c := <-l.queue:
			if l.claim(c) {
				return c, nil
			}
			// Close got to it first and closed it.
		case <-l.ctx.Done():
			return nil, fmt.Errorf("ws: accept: %w", net.ErrClosed)
		case <-ctx.Done():
			return nil, fmt.Errorf("ws: accept: %w", ctx.Err())
		}
	}
}

// Close stops accepting, closes every connection not yet returned by Accept,
// and waits for the listener's goroutines to finish. Connections returned by
// Accept belong to the caller and stay open. Closing twice returns an error
// wrapping net.ErrClosed.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return fmt.Errorf("ws: close: %w", net.ErrClosed)
	}
	l.closed = true
	pending := l.pending
	l.pending = nil
	l.mu.Unlock()

	l.cancel()
	err := l.tcp.Close()
	for sc := range pending {
		sc.raw.Close()
	}
	_ = l.srv.Close()
	l.wg.Wait()     // no more connections enter srv after this
	l.httpWG.Wait() // handlers and srv's connection goroutines are done
	if err != nil {
		return fmt.Errorf("ws: close: %w", err)
	}
	return nil
}

// track records a newly accepted connection so Close can close it. It reports
// false if the listener is closed.
func (l *Listener) track(sc *serverConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.pending[sc] = struct{}{}
	return true
}

// forget drops a connection that was closed before Accept returned it.
func (l *Listener) forget(sc *serverConn) {
	l.mu.Lock()
	delete(l.pending, sc)
	l.mu.Unlock()
}

// claim hands c to the caller of Accept, so Close no longer closes it. It
// reports false if Close already did, or if c was evicted from the pre-auth
// budget as it entered the queue (and so is closed).
func (l *Listener) claim(c *Conn) bool {
	sc := c.ws.NetConn().(*serverConn)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	delete(l.pending, sc)
	return !l.budget.Evicted(sc.entry)
}

// acceptLoop accepts TCP connections and starts the setup of each. It never
// waits for room: the pre-auth budget makes room by closing the oldest
// connection in it.
func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.tcp.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or similar: back off as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("ws: accept failed", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-l.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		sc := &serverConn{raw: c, accepted: time.Now(), evicted: make(chan struct{})}
		var src netip.Addr
		if l.cfg.ProxyProtocol && l.cfg.TrustProxy != nil {
			peer, _ := addrPort(c.RemoteAddr())
			if !l.cfg.TrustProxy(peer.Addr()) {
				l.refuseUntrusted(peer)
				c.Close()
				continue
			}
		}
		if !l.cfg.ProxyProtocol {
			// The socket's peer is the source: refuse it before it can
			// take a place in the budget.
			remote, _ := addrPort(c.RemoteAddr())
			if l.cfg.Reject != nil && l.cfg.Reject(remote.Addr()) {
				l.rejected.Add(1)
				l.log.Debug("ws: rejected connection", "remote", remote)
				c.Close()
				continue
			}
			if l.cfg.Guard != nil && !l.cfg.Guard.Charge(remote.Addr()) {
				l.log.Debug("ws: handshake dropped: source over its rate", "remote", remote)
				c.Close()
				continue
			}
			sc.remote, src = remote, remote.Addr()
		}
		if !l.track(sc) {
			c.Close()
			return
		}
		sc.entry = l.budget.Add(src, func() {
			l.evicted.Add(1)
			close(sc.evicted)
			sc.raw.Close()
		})
		l.wg.Add(1)
		go l.setup(sc)
	}
}

// setup takes a TCP connection through its first byte, the PROXY header,
// Reject and the TLS handshake, then hands it to the HTTP server for the
// upgrade.
func (l *Listener) setup(sc *serverConn) {
	defer l.wg.Done()
	ok := false
	defer func() {
		if !ok {
			sc.raw.Close()
			l.forget(sc)
			l.release(sc)
		}
	}()

	if tc, isTCP := sc.raw.(*net.TCPConn); isTCP {
		_ = tc.SetNoDelay(true)
	}
	sc.deadline = sc.accepted.Add(l.cfg.HandshakeTimeout)
	_ = sc.raw.SetDeadline(earliest(sc.accepted.Add(l.cfg.FirstByteTimeout), sc.deadline))
	first := make([]byte, 1)
	if _, err := io.ReadFull(sc.raw, first); err != nil {
		if l.budget.Evicted(sc.entry) {
			l.log.Debug("ws: closed connection to make room", "peer", sc.raw.RemoteAddr())
		} else if l.ctx.Err() == nil {
			l.silent.Add(1)
			l.log.Debug("ws: closed connection: nothing received", "peer", sc.raw.RemoteAddr(), "err", err)
		}
		return
	}
	if !l.budget.Active(sc.entry) {
		return // evicted, and closed
	}
	_ = sc.raw.SetDeadline(sc.deadline)
	var conn net.Conn = &peekedConn{Conn: sc.raw, first: first}
	if l.cfg.ProxyProtocol {
		wait := time.Until(earliest(sc.accepted.Add(l.cfg.ProxyHeaderTimeout), sc.deadline))
		if wait <= 0 {
			l.rejected.Add(1)
			l.log.Debug("ws: rejected connection: PROXY header late", "peer", sc.raw.RemoteAddr())
			return
		}
		pc := proxyproto.NewConn(conn,
			proxyproto.WithPolicy(proxyproto.REQUIRE),
			proxyproto.SetReadHeaderTimeout(wait),
			proxyproto.ValidateHeader(l.checkProxyVersion),
		)
		// Through pc, so the header read keeps within the deadline.
		_ = pc.SetDeadline(sc.deadline)
		if pc.ProxyHeader() == nil {
			l.rejected.Add(1)
			l.log.Debug("ws: rejected connection: missing, invalid or late PROXY header", "peer", sc.raw.RemoteAddr())
			return
		}
		if pc.ProxyHeader().Command.IsLocal() {
			// A health check, or the proxy speaking for itself: the
			// source is the socket's peer.
			sc.local = true
			l.local.Add(1)
		}
		remote, valid := addrPort(pc.RemoteAddr())
		if !valid {
			l.rejected.Add(1)
			l.log.Debug("ws: rejected connection: PROXY header source is not TCP over IP", "peer", sc.raw.RemoteAddr(), "source", pc.RemoteAddr())
			return
		}
		sc.remote = remote
		if l.cfg.Reject != nil && l.cfg.Reject(remote.Addr()) {
			l.rejected.Add(1)
			l.log.Debug("ws: rejected connection", "remote", remote)
			return
		}
		if !l.budget.SetSource(sc.entry, remote.Addr()) {
			return // evicted, and closed
		}
		conn = pc
	}
	if !l.admit(sc) {
		return
	}

	tc := tls.Server(conn, l.tlsConf)
	if err := tc.HandshakeContext(l.ctx); err != nil {
		if sc.local {
			// Most likely a proxy's health check: it connects, sends
			// LOCAL, and closes (HAProxy with a reset). Not a failure.
			l.log.Debug("ws: PROXY LOCAL connection ended before TLS (a health check)", "peer", sc.remote, "err", err)
			return
		}
		l.log.Debug("ws: TLS handshake failed", "remote", sc.remote, "err", err)
		return
	}
	sc.Conn = tc
	select {
	case l.handoff.conns <- sc:
		ok = true
	case <-l.ctx.Done():
	}
}

// admit takes a place in the Guard's handshake queue for sc, if there is a
// Guard, and reports whether sc may go on to its TLS handshake. Behind a
// PROXY header it first charges the header's source (acceptLoop charged the
// socket's peer otherwise).
func (l *Listener) admit(sc *serverConn) bool {
	g := l.cfg.Guard
	if g == nil {
		return true
	}
	if l.cfg.ProxyProtocol && !g.Charge(sc.remote.Addr()) {
		l.log.Debug("ws: handshake dropped: source over its rate", "remote", sc.remote)
		return false
	}
	if !g.Enter() {
		l.log.Debug("ws: handshake dropped: handshake queue full", "remote", sc.remote)
		return false
	}
	sc.guarded.Store(true)
	return true
}

// release takes sc out of the pre-auth budget and gives back its place in
// the Guard's queue. Calling it more than once is harmless.
func (l *Listener) release(sc *serverConn) {
	l.budget.Remove(sc.entry)
	if sc.guarded.CompareAndSwap(true, false) {
		l.cfg.Guard.Done()
	}
}

// refuseUntrusted counts and logs a connection from a peer that may not
// send PROXY headers. The first is logged at Warn level, as it usually means
// a proxy missing from the trusted list, then at most one a minute, with the
// count so far, so a flood from an untrusted peer cannot flood the log; every
// one is logged at Debug level.
func (l *Listener) refuseUntrusted(peer netip.AddrPort) {
	l.rejected.Add(1)
	n := l.untrusted.Add(1)
	l.untrustedLog.Do(func() {
		l.log.Warn("ws: refused connection: peer is not a trusted PROXY protocol source", "peer", peer, "refused_so_far", n)
	})
	l.log.Debug("ws: refused connection: peer is not a trusted PROXY protocol source", "peer", peer)
}

// errProxyV1 refuses a PROXY v1 header when ListenConfig.ProxyProtocolV1 is
// not set.
var errProxyV1 = errors.New("ws: PROXY protocol v1 header not accepted")

// checkProxyVersion refuses a v1 header unless v1 is enabled.
func (l *Listener) checkProxyVersion(h *proxyproto.Header) error {
	if h.Version == 1 && !l.cfg.ProxyProtocolV1 {
		return errProxyV1
	}
	return nil
}

// upgrade is the HTTP handler: it upgrades any request to a WebSocket and
// queues the connection for Accept.
func (l *Listener) upgrade(up *websocket.Upgrader, w http.ResponseWriter, r *http.Request) {
	sc := r.Context().Value(serverConnKey{}).(*serverConn)
	wc, err := up.Upgrade(w, r, nil)
	if sc.hijacked.Load() {
		// srv has let go of the connection; this handler now ends it.
		defer l.httpWG.Done()
	}
	if err != nil {
		// Upgrade has answered with an HTTP error, or closed a hijacked
		// connection.
		l.log.Debug("ws: upgrade failed", "remote", sc.remote, "err", err)
		if sc.hijacked.Load() {
			l.forget(sc)
			l.release(sc)
		}
		return
	}
	sc.upgraded.Store(true)
	_ = sc.SetDeadline(time.Time{})
	c := newConn(wc, sc.raw, sc.remote)

	select {
	case l.queue <- c:
		l.release(sc)
		return
	default:
	}
	t := time.NewTimer(time.Until(sc.deadline))
	defer t.Stop()
	select {
	case l.queue <- c:
		// Out of the pre-auth phase. If it was evicted on the way in, it
		// is closed and Accept skips it.
		l.release(sc)
		return
	case <-t.C:
		l.log.Debug("ws: accept queue full, closing connection", "remote", sc.remote)
	case <-sc.evicted:
	case <-l.ctx.Done():
	}
	sc.raw.Close()
	l.forget(sc)
	l.release(sc)
}

// serverConnKey is the context key under which the HTTP server's request
// context holds the *serverConn.
type serverConnKey struct{}

// serverConn is a server-side TLS connection on its way through the HTTP
// server. It reports the real remote address, keeps every deadline within the
// pre-auth deadline until the upgrade is done, and holds a place in the
// pre-auth budget until it is queued for Accept or closed.
type serverConn struct {
	net.Conn // *tls.Conn, set after the TLS handshake

	raw      net.Conn // the accepted TCP connection
	remote   netip.AddrPort
	accepted time.Time
	deadline time.Time // end of the pre-auth phase

	local    bool // began with a PROXY LOCAL header
	entry    *preauth.Entry
	evicted  chan struct{} // closed when evicted from the budget
	hijacked atomic.Bool
	upgraded atomic.Bool
	guarded  atomic.Bool // holds a place in the Guard's queue
}

// RemoteAddr returns the real remote address (the PROXY source, if any).
func (c *serverConn) RemoteAddr() net.Addr {
	return net.TCPAddrFromAddrPort(c.remote)
}

// SetDeadline sets both deadlines, no later than the handshake deadline
// until the upgrade is done.
func (c *serverConn) SetDeadline(t time.Time) error {
	return c.Conn.SetDeadline(c.clamp(t))
}

// SetReadDeadline sets the read deadline, no later than the handshake
// deadline until the upgrade is done.
func (c *serverConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.clamp(t))
}

// SetWriteDeadline sets the write deadline, no later than the handshake
// deadline until the upgrade is done.
func (c *serverConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.clamp(t))
}

// earliest returns the earlier of a and b.
func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// peekedConn gives back the first byte, read to see that the peer speaks,
// before the rest of the connection.
type peekedConn struct {
	net.Conn
	first []byte // nil once returned
}

// Read returns the first byte, then reads from the connection.
func (c *peekedConn) Read(b []byte) (int, error) {
	if c.first != nil && len(b) > 0 {
		b[0] = c.first[0]
		c.first = nil
		return 1, nil
	}
	return c.Conn.Read(b)
}

func (c *serverConn) clamp(t time.Time) time.Time {
	if !c.upgraded.Load() && (t.IsZero() || t.After(c.deadline)) {
		return c.deadline
	}
	return t
}

// handoffListener is the net.Listener the HTTP server serves: it yields the
// TLS connections that setup has finished.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  <-chan struct{}
	wg    *sync.WaitGroup // counts connections given to the HTTP server
}

// Accept returns the next TLS connection.
func (h *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		// Called from the serve goroutine, which Listener.Close waits for
		// before it waits on wg, so this Add never races with that Wait.
		h.wg.Add(1)
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

// Close does nothing: the Listener's context ends Accept.
func (h *handoffListener) Close() error { return nil }

// Addr returns the TCP listener's address.
func (h *handoffListener) Addr() net.Addr { return h.addr }
