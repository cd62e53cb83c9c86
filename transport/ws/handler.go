package ws

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/warrenvpn/warren/transport/internal/preauth"

	"github.com/warrenvpn/warren/internal/hsguard"
)

// HandlerConfig configures NewHandler.
type HandlerConfig struct {
	// MaxPreAuth bounds the connections between the start of ServeHTTP and
	// Accept (the upgrade and the wait in the accept queue). When a new
	// request would exceed it, the oldest such connection is closed. If
	// zero, DefaultMaxPreAuth (1024).
	MaxPreAuth int

	// MaxPreAuthPerSource bounds those connections per source (an IPv4
	// address or an IPv6 /64 of the request's RemoteAddr). If zero,
	// DefaultMaxPreAuthPerSource (32).
	MaxPreAuthPerSource int

	// Reject is called with the address of the request's RemoteAddr before
	// the upgrade. If it returns true the request is answered 403 Forbidden
	// and counted in Rejected. A RemoteAddr that is not an IP address and
	// port (a Unix socket's) is refused too when Reject is set, since the
	// address it would check is unknown. If nil, every address is allowed.
	// It is called from many goroutines at once.
	Reject func(netip.Addr) bool

	// Guard, if set, charges each request, while the Guard is under load, to
	// its source's handshake rate
	// (the address of RemoteAddr) before the upgrade; a source over its rate
	// is answered 429 Too Many Requests, and the Guard counts it. The
	// handshake queue place is taken later, by the Noise responder. If nil,
	// no per-source rate applies.
	Guard *hsguard.Guard

	// HandshakeTimeout bounds the upgrade and the wait for room in the
	// accept queue, together, from the start of ServeHTTP. If zero,
	// DefaultHandshakeTimeout (10 s).
	HandshakeTimeout time.Duration

	// Logger receives debug logs about refused and failed upgrades. If nil,
	// logs are discarded.
	Logger *slog.Logger
}

// Handler accepts WebSocket connections that another HTTP server hands it as
// requests: it is an http.Handler to mount on a route of an HTTP server the
// program already runs (net/http's, Caddy's), so the hub shares that server's
// port and certificate. Accept returns the upgraded connections, as
// Listener's does.
//
// On this path the embedding server owns the connection until the request
// reaches ServeHTTP: TCP accept, the PROXY protocol header, TLS, the first
// byte and the request header are its job, under its own timeouts and limits
// (ListenConfig's FirstByteTimeout, ProxyHeaderTimeout and PROXY settings have
// no counterpart here). The real source address is the request's RemoteAddr
// as that server sets it: behind a proxy that sends PROXY headers, enable the
// PROXY protocol on that server's listener. Handler then applies, in order:
// Reject on RemoteAddr (before the upgrade and before any cryptography of
// Warren's), the pre-auth budget (MaxPreAuth, MaxPreAuthPerSource, from the
// start of ServeHTTP until the connection enters the accept queue, closing
// the oldest connection to make room, as Listener does), and HandshakeTimeout
// over the upgrade and the wait for room in the queue of 128.
//
// ServeHTTP hijacks the connection (HTTP/1.1 only: an HTTP/2 request is
// answered 400, as is any request that is not a WebSocket upgrade) and
// returns once the connection is queued for Accept or closed. Handler starts
// no goroutine of its own. Its methods are safe for concurrent use.
type Handler struct {
	cfg    HandlerConfig
	log    *slog.Logger
	up     websocket.Upgrader
	queue  chan *Conn
	budget *preauth.Budget

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc

	rejected atomic.Uint64
	evicted  atomic.Uint64

	mu       sync.Mutex
	closed   bool
	pending  map[*Conn]struct{} // upgraded, not handed out by Accept, not closed
	inflight sync.WaitGroup     // ServeHTTP calls past the closed check
}

// NewHandler returns a Handler. It opens nothing and starts no goroutine.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	lc := ListenConfig{
		HandshakeTimeout:    cfg.HandshakeTimeout,
		MaxPreAuth:          cfg.MaxPreAuth,
		MaxPreAuthPerSource: cfg.MaxPreAuthPerSource,
	}
	if err := lc.normalize(); err != nil {
		return nil, fmt.Errorf("%w (HandlerConfig)", err)
	}
	cfg.HandshakeTimeout, cfg.MaxPreAuth, cfg.MaxPreAuthPerSource = lc.HandshakeTimeout, lc.MaxPreAuth, lc.MaxPreAuthPerSource
	h := &Handler{
		cfg:     cfg,
		log:     cfg.Logger,
		queue:   make(chan *Conn, acceptQueueLen),
		budget:  preauth.New(cfg.MaxPreAuth, cfg.MaxPreAuthPerSource),
		pending: make(map[*Conn]struct{}),
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.up = websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		// Clients authenticate with Noise, not cookies: any Origin.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	return h, nil
}

// Rejected returns how many requests Reject refused.
func (h *Handler) Rejected() uint64 { return h.rejected.Load() }

// Evicted returns how many connections were closed to make room in the
// pre-auth budget.
func (h *Handler) Evicted() uint64 { return h.evicted.Load() }

// PreAuth returns the number of connections now between ServeHTTP and the
// accept queue.
func (h *Handler) PreAuth() int { return h.budget.Len() }

// ServeHTTP upgrades the request to a WebSocket connection and queues it for
// Accept. After Close it answers 503 Service Unavailable.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	remote, known := parseRemote(r.RemoteAddr)
	if h.cfg.Reject != nil && (!known || h.cfg.Reject(remote.Addr())) {
		h.rejected.Add(1)
		h.log.Debug("ws: rejected request", "remote", r.RemoteAddr)
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	if h.cfg.Guard != nil && known && !h.cfg.Guard.Charge(remote.Addr()) {
		h.log.Debug("ws: request over its source's handshake rate", "remote", r.RemoteAddr)
		http.Error(w, "too many handshakes", http.StatusTooManyRequests)
		return
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		http.Error(w, "closed", http.StatusServiceUnavailable)
		return
	}
	h.inflight.Add(1)
	h.mu.Unlock()
	defer h.inflight.Done()

	evicted := make(chan struct{})
	entry := h.budget.Add(remote.Addr(), func() {
		h.evicted.Add(1)
		close(evicted)
	})
	defer h.budget.Remove(entry)
	h.budget.Active(entry) // the request has arrived: not a silent connection

	if _, ok := w.(http.Hijacker); !ok {
		// A server that wraps its ResponseWriter (Caddy's, with access
		// logs) still reaches the connection through Unwrap.
		w = unwrapHijacker{w}
	}
	wc, err := h.up.Upgrade(w, r, nil)
	if err != nil {
		// Upgrade has answered with an HTTP error.
		h.log.Debug("ws: upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	raw := wc.NetConn()
	if tc, ok := raw.(*tls.Conn); ok {
		// Closing the socket under TLS unblocks everything above it and
		// skips close_notify, which could block on a peer that does not
		// read (see Conn.Close).
		raw = tc.NetConn()
	}
	c := newConn(wc, raw, remote)
	if !h.track(c) {
		c.Close()
		return
	}
	select {
	case <-evicted:
		h.log.Debug("ws: closed connection to make room", "remote", remote)
		h.forget(c)
		c.Close()
		return
	default:
	}
	t := time.NewTimer(time.Until(start.Add(h.cfg.HandshakeTimeout)))
	defer t.Stop()
	select {
	case h.queue <- c:
		return
	case <-t.C:
		h.log.Debug("ws: accept queue full, closing connection", "remote", remote)
	case <-evicted:
		h.log.Debug("ws: closed connection to make room", "remote", remote)
	case <-h.ctx.Done():
	}
	h.forget(c)
	c.Close()
}

// Accept waits for the next upgraded connection. After Close it returns an
// error wrapping net.ErrClosed; if ctx ends first, ctx's error.
func (h *Handler) Accept(ctx context.Context) (*Conn, error) {
	for {
		select {
		case c := <-h.queue:
			if h.claim(c) {
				return c, nil
			}
			// Close got to it first and closed it.
		case <-h.ctx.Done():
			return nil, fmt.Errorf("ws: accept: %w", net.ErrClosed)
		case <-ctx.Done():
			return nil, fmt.Errorf("ws: accept: %w", ctx.Err())
		}
	}
}

// Close stops accepting: later requests are answered 503, connections not yet
// returned by Accept are closed, and Close waits for every ServeHTTP call in
// progress to return. Connections returned by Accept belong to the caller
// and stay open. Closing twice returns an error wrapping net.ErrClosed.
func (h *Handler) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return fmt.Errorf("ws: close: %w", net.ErrClosed)
	}
	h.closed = true
	pending := h.pending
	h.pending = nil
	h.mu.Unlock()
	h.cancel()
	for c := range pending {
		c.Close()
	}
	h.inflight.Wait()
	return nil
}

// track records an upgraded connection so Close can close it. It reports
// false if the handler is closed.
func (h *Handler) track(c *Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.pending[c] = struct{}{}
	return true
}

// forget drops a connection closed before Accept returned it.
func (h *Handler) forget(c *Conn) {
	h.mu.Lock()
	delete(h.pending, c)
	h.mu.Unlock()
}

// claim hands c to the caller of Accept. It reports false if Close already
// closed it.
func (h *Handler) claim(c *Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	if _, ok := h.pending[c]; !ok {
		return false
	}
	delete(h.pending, c)
	return true
}

// parseRemote parses an http.Request's RemoteAddr, unmapping an IPv4-mapped
// address. It reports false if RemoteAddr is not an IP address and port.
func parseRemote(s string) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// unwrapHijacker hijacks through http.ResponseController, which follows a
// wrapped ResponseWriter's Unwrap method to the one that can hijack.
type unwrapHijacker struct{ http.ResponseWriter }

// Hijack hijacks the connection under the wrapped ResponseWriter.
func (u unwrapHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(u.ResponseWriter).Hijack()
}
