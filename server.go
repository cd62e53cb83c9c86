package warren

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go4.org/netipx"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/forward"
	"github.com/warrenvpn/warren/forward/netstack"
	fwdtesting "github.com/warrenvpn/warren/forward/testing"
	"github.com/warrenvpn/warren/handshake"
	"github.com/warrenvpn/warren/internal/hsguard"
	"github.com/warrenvpn/warren/internal/packet"
	wsession "github.com/warrenvpn/warren/session"
	"github.com/warrenvpn/warren/telemetry"
	"github.com/warrenvpn/warren/transport"
	"github.com/warrenvpn/warren/transport/quic"
	"github.com/warrenvpn/warren/transport/wg"
	"github.com/warrenvpn/warren/transport/ws"
)

// Version is sent in the client hello.
const Version = "0.1.0"

// Server is a Warren hub: it authenticates clients against its registry, runs
// their sessions and carries their packets through one pipeline to each other
// and to its forwarding engine.
type Server struct {
	cfg       ServerConfig
	log       *slog.Logger
	store     Store
	vstore    VersionedStore // store, when it is one; else nil
	wstore    WatchableStore // store, when it is one; else nil
	mesh      *mesh          // when store is a RouteDirectory (fleet_forward.go); else nil
	reg       *registry
	replay    handshake.TimestampGuard
	hubIP     netip.Addr
	connBlock *netipx.IPSet
	// proxyTrusted is proxyProtocolTrustedSources compiled; nil without
	// proxyProtocol.
	proxyTrusted *netipx.IPSet
	policy       *compiledPolicy
	tlsConf      *tls.Config
	certHash     string
	engine       forward.Engine
	pool         *wsession.Pool
	events       broker
	stats        counters
	// guard protects the WebSocket and QUIC handshakes from floods
	// (package hsguard); shared by both listeners and the Noise responder.
	guard *hsguard.Guard

	mu        sync.Mutex
	state     Status
	startedAt time.Time
	ln        *ws.Listener
	wsh       *ws.Handler // WebSocket upgrades from another HTTP server (WebSocketHandler)
	wshReady  atomic.Bool // Start has run and Close has not
	qln       *quic.Listener
	sessions  map[string][]*session // by client ID, oldest first
	routes    atomic.Pointer[map[netip.Addr]*session]
	stop      context.CancelFunc
	wg        sync.WaitGroup
	// fleet is the hub's membership of a FleetStore (fleet.go); nil
	// without one. Set by Start.
	fleet Fleet

	// expiryKick wakes the janitor to look at the registry's expiry times
	// again (expiryChanged).
	expiryKick chan struct{}
	// telemetry tunes each session's estimator (telemetry.go; set by tests,
	// the zero value is the default).
	telemetry telemetry.Config

	// WireGuard (wireguard.go). Static peers live in the registry
	// (reg.static), which reserves their addresses.
	//
	// wgMu serialises changes to the device's peers. Removing a peer waits
	// for the peer's receive goroutine, which runs the pipeline, so the data
	// path never takes wgMu, nor a lock that is held while taking it.
	wgMu  sync.Mutex
	wgDev atomic.Pointer[wg.Device]
	// wgRemoving is held for writing while the device waits for its
	// receive goroutines (removePeer, closeDevice).
	wgRemoving sync.RWMutex
	// wgSessMu serialises the start of WireGuard sessions and guards
	// wgEndpoints; it is taken before mu.
	wgSessMu    sync.Mutex
	wgEndpoints map[netip.Addr]netip.AddrPort // last endpoint heard, by tunnel address
	// wgKeysMu guards wgKeys, and is held for nothing else.
	wgKeysMu sync.Mutex
	wgKeys   map[string]Key // client ID -> WireGuard key installed

	// csMu guards clients, the state each client's sessions share (rate
	// limit, egress queue), kept while the client is registered.
	csMu    sync.Mutex
	clients map[string]*clientState
	egress  egress // priority scheduling toward the engine (qos.go)
}

// NewServer validates cfg and loads the registry from cfg.Store (adding
// cfg.Clients it does not hold yet). It opens no socket: Start does.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	s := &Server{
		guard:      hsguard.New(hsguard.Config{}),
		cfg:        cfg,
		log:        cfg.Logger,
		store:      cfg.Store,
		engine:     cfg.Forwarder,
		hubIP:      cfg.Subnet.Addr().Next(),
		sessions:   make(map[string][]*session),
		state:      StatusStopped,
		expiryKick: make(chan struct{}, 1),
		telemetry:  cfg.Keepalive.telemetryConfig(),
		clients:    make(map[string]*clientState),
	}
	s.egress.init(s)
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.store == nil {
		s.store = NewMemoryStore()
	}
	s.vstore, _ = s.store.(VersionedStore)
	s.wstore, _ = s.store.(WatchableStore)
	if rd, ok := s.store.(RouteDirectory); ok {
		s.mesh = newMesh(rd)
	}
	// normalize compiled both already; these cannot fail.
	s.connBlock, _ = compileBlockList("connectionIpBlockList", cfg.ConnectionIPBlockList)
	s.proxyTrusted, _ = cfg.checkProxyProtocol()
	s.policy, _ = compilePolicy(cfg.DestinationPolicy)
	routes := map[netip.Addr]*session{}
	s.routes.Store(&routes)
	s.wgKeys = make(map[string]Key)
	s.wgEndpoints = make(map[netip.Addr]netip.AddrPort)
	// Buffers for packets toward clients: the tunnel MTU is the largest packet
	// a client accepts.
	s.pool = wsession.NewPool(cfg.MTU)
	if cfg.needsTLS() {
		if err := s.setupTLS(); err != nil {
			return nil, err
		}
	}
	if cfg.runsWS() {
		h, err := ws.NewHandler(ws.HandlerConfig{
			Reject:           s.rejectConn,
			Guard:            s.guard,
			HandshakeTimeout: cfg.preAuthTimeout(),
			Logger:           s.log.With("component", "ws"),
		})
		if err != nil {
			return nil, fmt.Errorf("warren: %w", err)
		}
		s.wsh = h
	}
	if s.engine == nil {
		switch cfg.ForwardingMode {
		case ForwardTesting:
			s.engine = fwdtesting.New(fwdtesting.Options{})
		case ForwardTUN:
			s.engine = s.newTUNEngine()
		default:
			s.engine = netstack.New(netstack.Options{
				Forward:       true,
				Policy:        s.flowPolicy,
				ProxyProtocol: cfg.SocketForwardProxyProtocol,
			})
		}
	}
	if err := s.loadRegistry(context.Background()); err != nil {
		return nil, err
	}
	if err := s.loadStaticPeers(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) setupTLS() error {
	switch {
	case s.cfg.TLSConfig != nil:
		s.tlsConf = s.cfg.TLSConfig.Clone()
		if len(s.tlsConf.Certificates) > 0 && s.tlsConf.Certificates[0].Leaf != nil {
			s.certHash = ws.CertHash(s.tlsConf.Certificates[0].Leaf.Raw)
		}
	case s.cfg.TLSCertFile != "":
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCertFile, s.cfg.TLSKeyFile)
		if err != nil {
			return configErr("tlsCertFile", s.cfg.TLSCertFile, err.Error())
		}
		s.tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}}
	default:
		host, _, _ := net.SplitHostPort(s.cfg.ListenAddr)
		hosts := []string{"127.0.0.1", "::1", "localhost"}
		if ep := s.cfg.PublicEndpoint; ep != "" {
			if u, err := url.Parse(ep); err == nil && strings.Contains(ep, "://") {
				ep = u.Host
			}
			if h, _, err := net.SplitHostPort(ep); err == nil {
				hosts = append(hosts, h)
			} else {
				hosts = append(hosts, ep)
			}
		}
		if host != "" {
			hosts = append(hosts, host)
		}
		cert, err := ws.SelfSignedCert(hosts...)
		if err != nil {
			return fmt.Errorf("warren: making self-signed certificate: %w", err)
		}
		s.tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}}
		s.certHash = ws.CertHash(cert.Leaf.Raw)
	}
	return nil
}

// CertHash is the pin of the hub's self-signed certificate (empty with a
// certificate file), as written into bundles.
func (s *Server) CertHash() string { return s.certHash }

// HubIP is the hub's own tunnel address, the first host of Subnet.
func (s *Server) HubIP() netip.Addr { return s.hubIP }

// Start starts the forwarding engine and the listeners, and returns once they
// accept connections. ctx bounds only the start itself.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case StatusClosed:
		return fmt.Errorf("warren: server: %w", net.ErrClosed)
	case StatusRunning:
		return errors.New("warren: server already started")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.setState(StatusStarting)
	if err := s.joinFleet(); err != nil {
		s.setState(StatusStopped)
		return fmt.Errorf("warren: joining the fleet: %w", err)
	}
	err := s.engine.Start(forward.Config{
		Subnet:  s.cfg.Subnet,
		HubIP:   s.hubIP,
		LocalIP: s.hubIP,
		MTU:     s.cfg.MTU,
		Deliver: s.deliver,
		Logger:  s.log.With("component", "forward"),
	})
	if err != nil {
		s.leaveFleet()
		s.setState(StatusStopped)
		return fmt.Errorf("warren: starting forwarding engine: %w", err)
	}
	fail := func(err error) error {
		s.leaveFleet()
		s.stopWG()
		s.engine.Close()
		s.setState(StatusStopped)
		return fmt.Errorf("warren: %w", err)
	}
	if s.cfg.runsWG() {
		if err := s.startWG(); err != nil {
			return fail(err)
		}
	}
	runCtx, stop := context.WithCancel(context.Background())
	s.stop = stop
	if s.wsh != nil {
		s.wg.Add(1)
		go s.acceptLoop(runCtx, acceptFrom(s.wsh.Accept), "websocket")
	}
	if s.cfg.runsWS() && s.cfg.ListenAddr != "" {
		ln, err := ws.Listen(ctx, s.cfg.ListenAddr, ws.ListenConfig{
			TLSConfig:          s.tlsConf,
			ProxyProtocol:      s.cfg.ProxyProtocol,
			ProxyProtocolV1:    s.cfg.ProxyProtocolV1,
			TrustProxy:         s.trustProxy,
			ProxyHeaderTimeout: millis(s.cfg.ProxyHeaderTimeoutMs),
			FirstByteTimeout:   millis(s.cfg.FirstByteTimeoutMs),
			HandshakeTimeout:   s.cfg.preAuthTimeout(),
			Reject:             s.rejectConn,
			Guard:              s.guard,
			Logger:             s.log.With("component", "ws"),
		})
		if err != nil {
			stop()
			s.wg.Wait()
			return fail(err)
		}
		s.ln = ln
		s.wg.Add(1)
		go s.acceptLoop(runCtx, acceptFrom(ln.Accept), "websocket")
	}
	if s.cfg.runsQUIC() {
		addr := s.cfg.QUICListenAddr
		if addr == "" {
			// The WebSocket listener's host and port, over UDP.
			addr = s.cfg.ListenAddr
			if s.ln != nil {
				addr = s.ln.Addr().String()
			}
		}
		qln, err := quic.Listen(ctx, addr, quic.ListenConfig{
			TLSConfig:        s.tlsConf,
			Reject:           s.rejectConn,
			HandshakeTimeout: s.cfg.preAuthTimeout(),
			Guard:            s.guard,
			Logger:           s.log.With("component", "quic"),
		})
		if err != nil {
			stop()
			if s.ln != nil {
				s.ln.Close()
				s.ln = nil
			}
			s.wg.Wait()
			return fail(err)
		}
		s.qln = qln
		s.wg.Add(1)
		go s.acceptLoop(runCtx, acceptFrom(qln.Accept), "quic")
	}
	s.startedAt = time.Now()
	s.wg.Add(2)
	go s.janitor(runCtx)
	go s.egress.run(runCtx)
	if s.wstore != nil {
		s.wg.Add(1)
		go s.watchRegistry(runCtx)
	}
	if s.fleet != nil {
		s.wg.Add(1)
		go s.followFleet(runCtx)
	}
	if s.mesh != nil {
		s.wg.Add(1)
		go s.runMesh(runCtx)
	}
	s.setState(StatusRunning)
	s.wshReady.Store(s.wsh != nil)
	var addr net.Addr
	if s.ln != nil {
		addr = s.ln.Addr()
	}
	s.log.Info("hub started", "addr", addr, "subnet", s.cfg.Subnet, "hub", s.hubIP, "wireguard", s.wgDev.Load() != nil)
	return nil
}

// setState records and announces a new status. Call with s.mu held.
func (s *Server) setState(st Status) {
	s.state = st
	s.events.publish(StatusChanged{EventTime{time.Now()}, st})
}

// trustProxy reports whether a TCP peer may send PROXY headers: it is in
// proxyProtocolTrustedSources.
func (s *Server) trustProxy(a netip.Addr) bool {
	return s.proxyTrusted != nil && s.proxyTrusted.Contains(a.Unmap())
}

func (s *Server) rejectConn(a netip.Addr) bool {
	return s.connBlock != nil && s.connBlock.Contains(a.Unmap())
}

// WebSocketHandler returns an http.Handler that serves the hub's WebSocket
// endpoint on an HTTP server the program already runs, so the hub shares that
// server's port and certificate (and clients verify it through WebPKI, or
// ClientConfig.ServerCA, instead of a pin). Mount it on any route; clients
// connect to its URL (set PublicEndpoint to it, e.g.
// "wss://example.com/warren", so bundles name it). It works with or without
// a listener of the hub's own (ListenAddr), for transportMode all, both and
// websocket; with another transport mode it answers 404. Before Start and
// after Close it answers 503.
//
// The hub checks a connection on this path as on its own listener, except
// for what the embedding server does first (package transport/ws, Handler):
// TCP accept, TLS, any PROXY protocol header (enable it on that server's
// listener) and the request's header timeouts are that server's. The
// client's real address is the request's RemoteAddr as that server sets it;
// ConnectionIPBlockList refuses it with 403 before the upgrade and before any
// cryptography of the hub's. The upgrade and the wait for the accept queue
// are bounded by PreAuthTimeoutMs and by the pre-auth budget (1024
// connections, 32 per source), then the Noise handshake by PreAuthTimeoutMs
// again, as on the listener. FirstByteTimeoutMs, ProxyHeaderTimeoutMs,
// ProxyProtocol and ProxyProtocolV1 concern the hub's own listener only.
// Close ends the sessions that came through the handler like any other.
func (s *Server) WebSocketHandler() http.Handler {
	if s.wsh == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "warren: the hub does not run the WebSocket transport (transportMode "+string(s.cfg.TransportMode)+")", http.StatusNotFound)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.wshReady.Load() {
			http.Error(w, "warren: hub not running", http.StatusServiceUnavailable)
			return
		}
		s.wsh.ServeHTTP(w, r)
	})
}

// QUICAddr returns the QUIC listener's address, or nil when QUIC is not running.
func (s *Server) QUICAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.qln == nil {
		return nil
	}
	return s.qln.Addr()
}

// Addr returns the WebSocket listener's address, or nil before Start and
// when the hub has no listener of its own (ListenAddr empty).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close ends every session with a Disconnect, stops the listeners and the
// engine, and waits for every goroutine. A second Close returns net.ErrClosed.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.state == StatusClosed {
		s.mu.Unlock()
		return fmt.Errorf("warren: server: %w", net.ErrClosed)
	}
	started := s.stop != nil
	s.setState(StatusClosed)
	s.wshReady.Store(false)
	var all []*session
	for _, list := range s.sessions {
		all = append(all, list...)
	}
	s.mu.Unlock()

	var errs []error
	if started {
		s.stop()
	}
	if s.ln != nil {
		errs = append(errs, s.ln.Close())
	}
	if s.wsh != nil {
		// Waits for the requests it is upgrading; later ones get 503.
		_ = s.wsh.Close()
	}
	for _, ss := range all {
		ss.c.close(reasonShutdown, true)
	}
	if dev := s.wgDev.Load(); dev != nil {
		errs = append(errs, s.closeDevice(dev))
	}
	s.wg.Wait()
	s.leaveFleet()
	if s.qln != nil {
		// Closing the QUIC listener closes its connections, so it waits
		// until the sessions have sent their Disconnects and ended.
		errs = append(errs, s.qln.Close())
	}
	s.csMu.Lock()
	for _, cs := range s.clients {
		cs.stop()
	}
	s.csMu.Unlock()
	if started {
		errs = append(errs, s.engine.Close())
	}
	s.events.close()
	return errors.Join(errs...)
}

func acceptFrom[C transport.Conn](accept func(context.Context) (C, error)) func(context.Context) (transport.Conn, error) {
	return func(ctx context.Context) (transport.Conn, error) { return accept(ctx) }
}

func (s *Server) acceptLoop(ctx context.Context, accept func(context.Context) (transport.Conn, error), name string) {
	defer s.wg.Done()
	for {
		c, err := accept(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Error("accept failed", "err", err)
				s.events.publish(Error{EventTime{time.Now()}, err})
			}
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c, name)
		}()
	}
}

// janitorInterval is how often the janitor looks for dead peers, and looks
// at the registry's expiry times in case the wall clock was stepped.
const janitorInterval = 5 * time.Second

// janitor ends sessions whose peer has gone silent, and the access of clients
// that expired: a timer wakes it at the next ExpiresAt, so access ends within
// milliseconds of it (within janitorInterval after a step of the wall clock,
// which the timer, on the monotonic clock, does not see).
func (s *Server) janitor(ctx context.Context) {
	defer s.wg.Done()
	tick := time.NewTicker(janitorInterval)
	defer tick.Stop()
	expiry := time.NewTimer(0) // a registry loaded with clients already expired
	defer expiry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s.dropDeadPeers(now)
		case <-expiry.C:
		case <-s.expiryKick:
		}
		if next := s.expireClients(time.Now()); next.IsZero() {
			expiry.Stop()
		} else {
			expiry.Reset(time.Until(next))
		}
	}
}

// dropDeadPeers ends the sessions that have received nothing for the
// dead-peer timeout (WebSocket and QUIC sessions also watch it themselves).
func (s *Server) dropDeadPeers(now time.Time) {
	s.mu.Lock()
	var dead []*session
	for _, list := range s.sessions {
		for _, ss := range list {
			if now.Sub(ss.c.lastSeen()) > cmp.Or(s.telemetry.DeadAfter, deadPeerTimeout) {
				dead = append(dead, ss)
			}
		}
	}
	s.mu.Unlock()
	for _, ss := range dead {
		ss.c.close(reasonDeadPeer, true)
	}
}

// expireClients ends the access of every client whose ExpiresAt has come:
// its WireGuard peer leaves the device, so its handshakes fail, and its
// sessions end on every transport. It returns the earliest ExpiresAt still
// ahead, or the zero time.
func (s *Server) expireClients(now time.Time) time.Time {
	var due []string
	var next time.Time
	for id, re := range s.reg.load().byID {
		switch at := re.entry.ExpiresAt; {
		case at.IsZero():
		case expired(at, now):
			due = append(due, id)
		case next.IsZero() || at.Before(next):
			next = at
		}
	}
	for _, id := range due {
		s.wgSync(id) // a no-op once the peer is gone
		s.dropSessions(id, reasonExpired)
	}
	return next
}

// expiryChanged tells the janitor that an ExpiresAt was set or moved.
func (s *Server) expiryChanged() {
	select {
	case s.expiryKick <- struct{}{}:
	default:
	}
}

// session is one authenticated client session on the hub, on any
// transport: a WebSocket or QUIC connection, or a WireGuard peer.
type session struct {
	srv       *Server
	c         conduit // how packets reach the client
	id        string
	ip        netip.Addr
	key       Key
	transport string
	tags      []string
	since     time.Time
	static    bool   // a static WireGuard peer, not a registered client
	fleetID   string // its SessionRecord's SessionID (fleet.go)
	hub       bool   // a session to another hub of the fleet (fleet_forward.go)
	sec       atomic.Pointer[compiledSecurity]
	cs        atomic.Pointer[clientState] // set by register
	// Owned by the goroutine that runs the pipeline for the session: its
	// reader, or wireguard-go's receive goroutine for its peer.
	toEngine [][]byte
	toPeers  sendRun
	passed   [][]byte
}

// remoteAddr is the client's real address.
func (ss *session) remoteAddr() netip.AddrPort { return ss.c.remoteAddr() }

// Packets runs the pipeline on a batch the client sent (session.Handler).
func (ss *session) Packets(bufs [][]byte, offset int) { ss.srv.route(ss, bufs, offset, nil) }

// PacketsLeased runs the pipeline on a batch the client sent in a buffer
// that packets for other clients leave in, uncopied
// (session.LeaseHandler).
func (ss *session) PacketsLeased(bufs [][]byte, offset int, l *wsession.Lease) {
	ss.srv.route(ss, bufs, offset, l)
}

// Closed takes the session out of the table (session.Handler).
func (ss *session) Closed(r wsession.Reason) {
	if ss.hub {
		ss.srv.dropLink(ss)
	} else {
		ss.srv.removeSession(ss, fromReason(r))
	}
	ss.srv.wg.Done()
}

func (ss *session) info() ClientInfo {
	n := ss.c.counts()
	return ClientInfo{
		ClientID:                ss.id,
		AssignedIP:              ss.ip,
		Transport:               ss.transport,
		RemoteAddr:              ss.remoteAddr(),
		ConnectedSince:          ss.since,
		PublicKey:               ss.key,
		ClientDefinedClientTags: cloneStrings(ss.tags),
		BytesIn:                 n.bytesIn,
		BytesOut:                n.bytesOut,
		PacketsIn:               n.packetsIn,
		PacketsOut:              n.packetsOut,
	}
}

// errRefused marks a handshake that gets no answer.
var errRefused = errors.New("handshake refused")

// serveConn authenticates a new connection and runs its session.
func (s *Server) serveConn(conn transport.Conn, transportName string) {
	timer := time.AfterFunc(s.cfg.preAuthTimeout(), func() { conn.Close() })
	ss, st, err := s.accept(conn, transportName)
	timer.Stop()
	if err != nil {
		s.stats.handshakesFailed.Add(1)
		s.log.Debug("handshake failed", "remote", conn.RemoteAddr(), "err", err)
		conn.Close()
		return
	}
	s.stats.handshakes.Add(1)
	// The session is routable before the client learns its address (Start
	// sends the answer), so the first packet sent to it after its Connect
	// returns finds it.
	if ss.hub && !s.addLink(ss) || !ss.hub && !s.register(ss) {
		st.Abort(reasonShutdown.reason())
	}
	s.wg.Add(1) // done by ss.Closed
	st.Start(ss)
}

// accept runs the server side of the handshake (package session). A message
// 1 that does not authenticate, from an unknown key, or replayed, gets no
// answer; a known client that may not connect gets a sealed Disconnect with
// the reason.
func (s *Server) accept(conn transport.Conn, transportName string) (*session, *wsession.Session, error) {
	var re *regEntry
	var hub Key   // the peer's key, when it is another hub of the fleet
	var id string // the client's ID, once Authorize knows it
	st, hello, err := wsession.Accept(conn, wsession.AcceptConfig{
		PrivateKey: s.cfg.PrivateKey,
		PublicKey:  s.cfg.PublicKey,
		Transport:  transportName,
		Guard:      &s.replay,
		Pool:       s.pool,
		Admit: func() (func(), bool) {
			// The transport charged the source; this bounds the
			// Diffie-Hellman work in flight.
			return s.guard.Done, s.guard.Enter()
		},
		Authorize: func(peer [32]byte, _ handshake.ClientHello, remote netip.AddrPort) (wsession.Verdict, error) {
			r, ok := s.reg.lookupKey(peer)
			if !ok && s.isHub(peer) {
				hub, id = peer, "hub "+Key(peer).String()
				return s.hubVerdict(), nil
			}
			if !ok {
				s.guard.UnknownKey()
				return wsession.Verdict{}, fmt.Errorf("%w: unknown key %s", errRefused, Key(peer))
			}
			re = r
			e := r.entry
			id = e.ClientID
			var refuse closeReason
			switch {
			case !e.Enabled:
				refuse = reasonDisabled
			case expired(e.ExpiresAt, time.Now()):
				refuse = reasonExpired
			case r.sec != nil && !r.sec.remote.allows(remote.Addr().Unmap()):
				refuse = closeReason{codec.DisconnectRefused, "remote address " + remote.Addr().String() + " not allowed"}
			}
			return wsession.Verdict{
				Hello: handshake.ServerHello{
					AssignedPrefix:   netip.PrefixFrom(e.AssignedIP, s.cfg.Subnet.Bits()),
					Gateway:          s.hubIP,
					DNS:              s.cfg.DNS,
					MTU:              s.cfg.MTU,
					KeepaliveSeconds: int(keepaliveInterval / time.Second),
				},
				Refuse: refuse.reason(),
			}, nil
		},
		Telemetry:     s.telemetry,
		HealthChanged: s.healthChanged(&id, transportName),
	})
	if err != nil {
		switch {
		case errors.Is(err, wsession.ErrMalformed):
			s.stats.malformed.Add(1)
		case errors.Is(err, handshake.ErrDecrypt), errors.Is(err, handshake.ErrMalformed):
			s.guard.BadMAC()
		}
		if re != nil {
			return nil, nil, fmt.Errorf("client %s: %w", re.entry.ClientID, err)
		}
		return nil, nil, err
	}
	if !hub.IsZero() {
		return &session{srv: s, c: streamConduit{st}, id: id, ip: s.hubIP, key: hub, transport: transportName, since: time.Now(), hub: true}, st, nil
	}
	e := re.entry
	ss := &session{
		srv:       s,
		c:         streamConduit{st},
		id:        e.ClientID,
		ip:        e.AssignedIP,
		key:       e.PublicKey,
		transport: transportName,
		tags:      cloneStrings(hello.Tags),
		since:     time.Now(),
	}
	ss.sec.Store(re.sec)
	return ss, st, nil
}

// register adds a session to the table and routes. A client's sessions on
// every transport (its WireGuard peer is one session) count toward its
// MaxConnections; beyond it the oldest are ended, so a client that comes back
// on a new path before its old session timed out gets in. register reports
// false when the server is closing; a client changed during the handshake
// (disabled, expired, rotated or removed) is closed with a reason.
func (s *Server) register(ss *session) bool {
	ss.fleetID = newSessionID()
	s.mu.Lock()
	if s.state != StatusRunning {
		s.mu.Unlock()
		return false
	}
	s.sessions[ss.id] = append(slices.Clip(s.sessions[ss.id]), ss)
	s.stats.sessionOpened(ss.transport)
	s.setRoute(ss.ip, ss)
	s.meshTouch(ss.ip)
	s.mu.Unlock()
	cs := s.clientState(ss.id)
	if !ss.static {
		s.applyLimits(ss.id)
	}
	ss.cs.Store(cs)
	if ss.static {
		s.limitSessions(ss.id, 1, reasonReplaced)
		s.events.publish(ClientConnected{EventTime{time.Now()}, ss.info()})
		return true
	}
	// DisableClient, UpdateClient, RotateClientKey or RemoveClient may have
	// run between the registry lookup and the table insert: look again. They
	// change the registry before they look at the table, so one of the two
	// sees the other's change.
	re, ok := s.reg.lookupKey(ss.key)
	now := time.Now()
	switch {
	case !ok || re.entry.ClientID != ss.id:
		ss.c.close(s.changedReason(ss.id), true)
		return true
	case !re.entry.Enabled:
		ss.c.close(reasonDisabled, true)
		return true
	case expired(re.entry.ExpiresAt, now):
		ss.c.close(reasonExpired, true)
		return true
	}
	ss.sec.Store(re.sec)
	s.log.Info("client connected", "client", ss.id, "ip", ss.ip, "remote", ss.remoteAddr(), "transport", ss.transport)
	s.events.publish(ClientConnected{EventTime{now}, ss.info()})
	s.publishSession(ss)
	s.limitSessions(ss.id, re.maxConns(), reasonReplaced)
	return true
}

// changedReason is why a client whose registry entry changed during its
// handshake is refused: disabled, key rotated, or removed.
func (s *Server) changedReason(id string) closeReason {
	re, ok := s.reg.lookupID(id)
	switch {
	case !ok:
		return reasonRemoved
	case !re.entry.Enabled:
		return reasonDisabled
	default:
		return reasonKeyRotated
	}
}

// limitSessions ends a client's oldest live sessions beyond limit, telling
// them r. With a FleetStore the client's sessions on other hubs count too
// (excessSessions).
func (s *Server) limitSessions(id string, limit int, r closeReason) {
	s.mu.Lock()
	excess := s.excessSessions(id, s.sessions[id], limit)
	s.mu.Unlock()
	for _, ss := range excess {
		ss.c.close(r, true)
	}
}

// setRoute points ip at ss (nil removes it). Call with s.mu held. The route
// table is copied on write so the data path reads it without a lock.
func (s *Server) setRoute(ip netip.Addr, ss *session) {
	old := *s.routes.Load()
	m := make(map[netip.Addr]*session, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	if ss == nil {
		delete(m, ip)
	} else {
		m[ip] = ss
	}
	s.routes.Store(&m)
}

func (s *Server) removeSession(ss *session, r closeReason) {
	s.mu.Lock()
	list := s.sessions[ss.id]
	if i := slices.Index(list, ss); i >= 0 {
		list = slices.Delete(slices.Clone(list), i, i+1)
	}
	if len(list) == 0 {
		delete(s.sessions, ss.id)
	} else {
		s.sessions[ss.id] = list
	}
	if cur := (*s.routes.Load())[ss.ip]; cur == ss {
		if len(list) > 0 {
			s.setRoute(ss.ip, list[len(list)-1])
		} else {
			s.setRoute(ss.ip, nil)
			s.meshTouch(ss.ip)
		}
	}
	n := ss.c.counts()
	s.stats.oversized.Add(n.oversized)
	s.stats.queueFull.Add(n.queueFull)
	s.stats.replayed.Add(n.replayed)
	s.stats.onStream.Add(n.onStream)
	s.mu.Unlock()
	s.withdrawSession(ss)
	s.log.Info("client disconnected", "client", ss.id, "reason", r.text, "code", r.code)
	s.events.publish(ClientDisconnected{EventTime: EventTime{time.Now()}, ClientID: ss.id, Reason: r.text, Err: r.err()})
}

// clientSessions returns a client's live sessions.
func (s *Server) clientSessions(id string) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sessions[id])
}

// dropSessions ends a client's live sessions, telling it why.
func (s *Server) dropSessions(id string, r closeReason) {
	for _, ss := range s.clientSessions(id) {
		ss.c.close(r, true)
	}
}

// updateSessions gives a client's live sessions new security lists.
// A session whose remote address the new IPAllowList / IPBlockList refuse
// ends at once with DisconnectRefused, as it would have been refused at its
// handshake.
func (s *Server) updateSessions(id string, sec *compiledSecurity) {
	for _, ss := range s.clientSessions(id) {
		ss.sec.Store(sec)
		ss.c.checkRemote(sec)
	}
}

// route is the pipeline for a batch of packets a client sent: anti-spoofing,
// destination policy and ACL, the client's rate limit (ratelimit.go), then
// delivery to another client or, scheduled by priority (qos.go), to the
// engine. The rate limit comes after the policy and the ACL, so packets the
// hub drops anyway cost the client no tokens. Packets in l (nil: in no
// lease) go to other clients' sessions where they are (session.SendLeased).
func (s *Server) route(ss *session, bufs [][]byte, offset int, l *wsession.Lease) {
	if ss.hub {
		s.fromMesh(ss, bufs, offset, l)
		return
	}
	sec := ss.sec.Load()
	ok := ss.passed[:0]
	var n, bytes, spoofed, acl, policy, malformed uint64
	for _, b := range bufs {
		p := b[offset:]
		src, dst, valid := packet.Addrs(p)
		switch {
		case !valid:
			malformed++
			continue
		case src != ss.ip:
			spoofed++
			continue
		}
		if !s.cfg.Subnet.Contains(dst) {
			// Nothing leaves the subnet without enableNat. The engine
			// rewrites forceTarget flows; here only blocks count.
			if !s.cfg.EnableNAT {
				policy++
				continue
			}
			if v, _ := s.policy.decide(dst); v == verdictBlock {
				policy++
				continue
			}
		}
		if sec != nil && !sec.dest.allows(dst) {
			acl++
			continue
		}
		n++
		bytes += uint64(len(p))
		ok = append(ok, b)
	}
	cs := ss.cs.Load()
	k := len(ok)
	if cs != nil {
		k = cs.admit(ok, offset, false)
	}
	ss.toPeers.l = l
	ss.toEngine = s.dispatchUp(cs, ok[:k], offset, ss.toEngine, &ss.toPeers)
	ss.toPeers.l = nil
	clear(ok)
	ss.passed = ok[:0]
	s.stats.packetsIn.Add(n)
	s.stats.bytesIn.Add(bytes)
	addNonZero(&s.stats.spoofed, spoofed)
	addNonZero(&s.stats.acl, acl)
	addNonZero(&s.stats.policy, policy)
	addNonZero(&s.stats.malformed, malformed)
}

// dispatchUp sends on packets from client cs that passed the pipeline: to
// another client's session, consecutive packets for one session in one
// send (run, whose lease says where the packets are), or to the engine,
// headroom and all. Packet i is bufs[i][offset:]. scratch is a buffer for
// the engine's batch, returned emptied for reuse.
func (s *Server) dispatchUp(cs *clientState, bufs [][]byte, offset int, scratch [][]byte, run *sendRun) [][]byte {
	routes := *s.routes.Load()
	out := scratch[:0]
	var noRoute, full uint64
	run.offset = offset
	for _, b := range bufs {
		p := b[offset:]
		_, dst, _ := packet.Addrs(p)
		if s.cfg.Subnet.Contains(dst) && dst != s.hubIP {
			if peer := routes[dst]; peer != nil {
				full += run.add(peer, b)
			} else if link := s.meshRoute(dst); link != nil {
				full += run.add(link, b)
			} else if !s.wgDirect(dst, p) {
				noRoute++
			}
			continue
		}
		out = append(out, b)
	}
	full += run.flush()
	s.egress.send(cs, out, offset)
	clear(out)
	addNonZero(&s.stats.noRoute, noRoute)
	addNonZero(&s.stats.queueFull, full)
	return out[:0]
}

// deliver takes packets from the engine toward clients. Consecutive packets
// for one session go to it in one send; a rate-limited client's packets go
// through its bucket first.
func (s *Server) deliver(bufs [][]byte, offset int) {
	s.sendDown(bufs, offset, true, true, nil)
}

// dispatchDown sends on packets toward clients that waited for tokens.
func (s *Server) dispatchDown(bufs [][]byte, offset int) {
	s.sendDown(bufs, offset, false, true, nil)
}

// sendDown sends packets toward clients, grouping consecutive packets for one
// session into one send; with charge, each client's bucket admits its
// packets first (those it holds back are sent later by dispatchDown, or
// dropped and counted). With viaFleet, a packet for an address another hub
// serves goes to that hub. Packets in l (nil: in no lease) are handed over
// where they are.
func (s *Server) sendDown(bufs [][]byte, offset int, charge, viaFleet bool, l *wsession.Lease) {
	routes := *s.routes.Load()
	var n, bytes, noRoute, full uint64
	var cur *session // the session bufs[start:i] are for
	start := 0
	flush := func(end int) {
		if cur != nil && end > start {
			k, b := sendGroup(cur, bufs[start:end], offset, l)
			n, bytes, full = n+k, bytes+b, full+uint64(end-start)-k
		}
	}
	for i, b := range bufs {
		p := b[offset:]
		_, dst, ok := packet.Addrs(p)
		var peer *session
		if ok {
			peer = routes[dst]
			if peer == nil && viaFleet {
				peer = s.meshRoute(dst)
			}
		}
		if charge && peer != nil {
			if cs := peer.cs.Load(); cs != nil && cs.admit(bufs[i:i+1], offset, true) == 0 {
				// Waiting for tokens, or dropped and counted.
				flush(i)
				cur, start = nil, i+1
				continue
			}
		}
		if peer != cur {
			flush(i)
			cur, start = peer, i
		}
		if peer == nil {
			if ok && s.wgDirect(dst, p) {
				n++
				bytes += uint64(len(p))
			} else {
				noRoute++
			}
		}
	}
	flush(len(bufs))
	s.stats.packetsOut.Add(n)
	s.stats.bytesOut.Add(bytes)
	addNonZero(&s.stats.noRoute, noRoute)
	addNonZero(&s.stats.queueFull, full)
}

// sendGroup sends a group of packets to ss in one send and returns how many
// it took and their bytes (at the group's mean size when it took only some).
func sendGroup(ss *session, group [][]byte, offset int, l *wsession.Lease) (sent, bytes uint64) {
	k := ss.c.send(group, offset, l)
	for _, p := range group {
		bytes += uint64(len(p) - offset)
	}
	if k < len(group) {
		bytes = bytes * uint64(k) / uint64(len(group))
	}
	return uint64(k), bytes
}

func addNonZero(c *atomic.Uint64, n uint64) {
	if n != 0 {
		c.Add(n)
	}
}

// ListClients returns the live sessions, sorted by client ID. With a
// FleetStore (etcdstore) it lists the whole fleet's, each with the hub that
// serves it (ClientInfo.HubID; fleet.go); otherwise this hub's.
func (s *Server) ListClients() []ClientInfo {
	s.mu.Lock()
	var out []ClientInfo
	for _, list := range s.sessions {
		for _, ss := range list {
			out = append(out, ss.info())
		}
	}
	s.mu.Unlock()
	out = s.fleetClients(out)
	slices.SortFunc(out, func(a, b ClientInfo) int {
		if a.ClientID != b.ClientID {
			if a.ClientID < b.ClientID {
				return -1
			}
			return 1
		}
		return a.ConnectedSince.Compare(b.ConnectedSince)
	})
	return out
}

// DisconnectClient ends a client's live sessions, sending it reason, which
// is for people only: the client learns that it was kicked (ErrKicked) and
// reconnects. DisableClient is how to keep it out.
func (s *Server) DisconnectClient(id string, reason string) error {
	list := s.clientSessions(id)
	if len(list) == 0 {
		return fmt.Errorf("%w: client %q has no live session", ErrNotConnected, id)
	}
	if reason == "" {
		reason = "disconnected by the hub"
	}
	for _, ss := range list {
		ss.c.close(closeReason{codec.DisconnectKicked, reason}, true)
	}
	return nil
}

// Status describes the server now.
func (s *Server) Status() ServerStatus {
	s.mu.Lock()
	st := ServerStatus{
		Status:         s.state,
		StartedAt:      s.startedAt,
		ForwardingMode: string(s.cfg.ForwardingMode),
	}
	if s.ln != nil || s.wsh != nil && s.state == StatusRunning {
		st.Transports = append(st.Transports, "websocket")
	}
	if s.qln != nil {
		st.Transports = append(st.Transports, "quic")
	}
	if s.wgDev.Load() != nil {
		st.Transports = append(st.Transports, "wireguard")
	}
	if s.ln != nil {
		st.Addr = s.ln.Addr().String()
	}
	for _, list := range s.sessions {
		st.ConnectedClients += len(list)
	}
	s.mu.Unlock()
	if s.cfg.Forwarder != nil {
		st.ForwardingMode = "custom"
	}
	st.RegisteredClients = len(s.reg.load().byID)
	return st
}

// Statistics returns the server's cumulative counters.
func (s *Server) Statistics() Statistics {
	st := s.stats.snapshot()
	s.mu.Lock()
	ln, qln := s.ln, s.qln // Start sets them under the lock
	for _, list := range s.sessions {
		for _, ss := range list {
			n := ss.c.counts()
			st.Drops.Oversized += n.oversized
			st.Drops.QueueFull += n.queueFull
			st.Drops.Replayed += n.replayed
			st.OversizedOnStream += n.onStream
		}
	}
	st.Sessions = s.sessionsByTransport()
	s.mu.Unlock()
	if ln != nil {
		st.ConnectionsRejected = ln.Rejected()
		st.ProxyUntrusted = ln.Untrusted()
		st.ProxyLocal = ln.Local()
	}
	if s.wsh != nil {
		st.ConnectionsRejected += s.wsh.Rejected()
	}
	if qln != nil {
		st.ConnectionsRejected += qln.Rejected()
	}
	if dev := s.wgDevice(); dev != nil {
		st.ConnectionsRejected += dev.Rejected() // datagrams, not connections
	}
	st.EventsDropped = s.events.dropped.Load()
	g := s.guard.Stats()
	st.HandshakeDrops = HandshakeDrops{RateLimited: g.RateLimited, QueueFull: g.QueueFull, BadMAC: g.BadMAC, UnknownKey: g.UnknownKey}
	return st
}

// Subscribe returns a channel of the server's events and a func that ends the
// subscription. Events never block the data plane: a reader that falls more
// than 256 events behind loses events, counted in Statistics.EventsDropped.
func (s *Server) Subscribe() (<-chan Event, func()) { return s.events.subscribe() }

// flowPolicy is the netstack engine's per-flow policy: forceTarget's rewrite.
// The pipeline has already dropped blocked destinations, and everything
// outside the subnet without enableNat, and applied the client's ACL to the
// address the client asked for; enableNat is checked again here so no flow
// leaves without it.
func (s *Server) flowPolicy(proto netstack.Proto, src, dst netip.AddrPort) (netip.AddrPort, bool) {
	target, ok := s.policy.rewrite(dst)
	if !s.cfg.EnableNAT && !s.cfg.Subnet.Contains(dst.Addr()) {
		ok = false
	}
	if !ok {
		s.stats.policy.Add(1)
	}
	return target, ok
}

// hostEngine is an engine that is also a host on the tunnel.
type hostEngine interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	Listen(network, addr string) (net.Listener, error)
	ListenPacket(network, addr string) (net.PacketConn, error)
}

func (s *Server) host() (hostEngine, error) {
	s.mu.Lock()
	running := s.state == StatusRunning
	s.mu.Unlock()
	if !running {
		return nil, fmt.Errorf("warren: server not running: %w", ErrNotConnected)
	}
	h, ok := s.engine.(hostEngine)
	if !ok && s.cfg.Forwarder == nil && s.cfg.ForwardingMode == ForwardTUN {
		return nil, fmt.Errorf("warren: forwarding mode tun: the hub's tunnel address %s is on the kernel's TUN device, so use the net package (net.Listen, net.Dial) on it instead: %w", s.hubIP, ErrNotSupported)
	}
	if !ok {
		return nil, fmt.Errorf("warren: forwarding mode %q has no tunnel address of its own (use socket): %w", s.cfg.ForwardingMode, ErrNotSupported)
	}
	return h, nil
}

// Dial connects from the hub's tunnel address to addr, a service a client
// serves on its tunnel address ("tcp" or "udp"; addr is "10.8.0.2:80").
// It needs forwardingMode socket.
func (s *Server) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	h, err := s.host()
	if err != nil {
		return nil, err
	}
	if err := s.refuseFleetDial(addr); err != nil {
		return nil, err
	}
	return h.DialContext(ctx, network, addr)
}

// refuseFleetDial refuses a Dial to a tunnel address another hub of the
// fleet serves. Every hub's engine speaks from the subnet's one hub address,
// so the client's replies would reach its own hub's engine, not this one:
// the connection could never be made. Until hubs forward replies by flow,
// such a Dial fails at once with ErrNotSupported instead of timing out.
func (s *Server) refuseFleetDial(addr string) error {
	if s.mesh == nil {
		return nil
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil // a name, or an error the dialler reports
	}
	dst := ap.Addr().Unmap()
	if _, local := (*s.routes.Load())[dst]; local {
		return nil
	}
	if _, remote := (*s.mesh.remote.Load())[dst]; !remote {
		return nil
	}
	return fmt.Errorf("warren: dial %s: %s is served by another hub of the fleet; a hub dialling a client of another hub is not built yet: %w", addr, dst, ErrNotSupported)
}

// Listen serves clients on the hub's tunnel address: Listen("tcp", ":80")
// accepts connections clients make to 10.8.0.1:80. It needs forwardingMode socket.
func (s *Server) Listen(network, addr string) (net.Listener, error) {
	h, err := s.host()
	if err != nil {
		return nil, err
	}
	return h.Listen(network, addr)
}

// ListenPacket binds a UDP port of the hub's tunnel address; replies leave
// from that port. It needs forwardingMode socket.
func (s *Server) ListenPacket(network, addr string) (net.PacketConn, error) {
	h, err := s.host()
	if err != nil {
		return nil, err
	}
	return h.ListenPacket(network, addr)
}
