package warren

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/forward"
	"github.com/warrenvpn/warren/forward/netstack"
	fwdtesting "github.com/warrenvpn/warren/forward/testing"
	wsession "github.com/warrenvpn/warren/session"
	"github.com/warrenvpn/warren/telemetry"
	"github.com/warrenvpn/warren/transport"
	"github.com/warrenvpn/warren/transport/quic"
	"github.com/warrenvpn/warren/transport/wg"
	"github.com/warrenvpn/warren/transport/ws"
)

// ErrHandshakeRefused: the hub closed the connection without answering the
// handshake: it does not know the client's key, the handshake was a replay,
// or the hub's public key in the config is wrong.
var ErrHandshakeRefused = errors.New("warren: handshake refused")

// Client is a Warren VPN client: it connects to a hub, and carries packets
// between the hub and its forwarding engine.
type Client struct {
	cfg    ClientConfig
	log    *slog.Logger
	engine forward.Engine
	events broker
	stats  counters

	// connecting holds a token while a connect runs: one at a time.
	connecting chan struct{}

	mu            sync.Mutex
	status        Status
	shut          bool
	engineStarted bool
	sess          *wsession.Session // the current session, nil when disconnected
	info          ConnectInfo
	cur           atomic.Pointer[wsession.Session] // sess, for the data path
	wgDev         atomic.Pointer[wg.Device]        // transport wireguard
	wg            sync.WaitGroup

	// closing is cancelled by Close; a reconnect in progress stops.
	closing     context.Context
	stopClosing context.CancelFunc
	// deliberate is set by Disconnect: the lost session is not reconnected.
	deliberate bool
	// cancelConnect cancels the connect in progress, nil when none is.
	cancelConnect context.CancelFunc

	lastRTT atomic.Int64 // nanoseconds: the last session's last keepalive RTT

	// wrapConn, if set (by tests), wraps each transport connection.
	wrapConn func(transport.Conn) transport.Conn
	// telemetry tunes each session's estimator (set by tests; the zero
	// value is the default).
	telemetry telemetry.Config
}

// NewClient validates cfg. It opens nothing: Connect does.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if cfg.ServerCA != "" {
		pool, _ := parseServerCA(cfg.ServerCA) // normalize checked it
		tc := &tls.Config{}
		if cfg.TLSConfig != nil {
			tc = cfg.TLSConfig.Clone()
		}
		tc.RootCAs = pool
		cfg.TLSConfig = tc
	}
	c := &Client{cfg: cfg, log: cfg.Logger, engine: cfg.Forwarder, status: StatusDisconnected, connecting: make(chan struct{}, 1)}
	c.telemetry = cfg.Keepalive.telemetryConfig()
	c.closing, c.stopClosing = context.WithCancel(context.Background())
	if c.log == nil {
		c.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.engine == nil {
		switch cfg.ForwardingMode {
		case ForwardTesting:
			c.engine = fwdtesting.New(fwdtesting.Options{})
		case ForwardTUN:
			c.engine = c.newTUNEngine()
		default:
			c.engine = netstack.New(netstack.Options{})
		}
	}
	return c, nil
}

// Connect dials the hub, runs the handshake and starts the session. It returns
// the address the hub assigned. Connect on a connected Client returns the
// current session's info; concurrent Connects make one session.
//
// ctx bounds the attempt (over WireGuard, with no deadline, Connect waits for
// the hub's handshake for ever). Close cancels an attempt in progress: Connect
// then returns an error wrapping net.ErrClosed (and context.Canceled). A
// Disconnect cancels it too: the error wraps context.Canceled. A hub that
// refuses the client says why with a code: the error wraps ErrClientDisabled,
// ErrClientExpired, ErrClientRefused, ... (see errors.go).
func (c *Client) Connect(ctx context.Context) (ConnectInfo, error) {
	return c.connect(ctx, false)
}

// connect is Connect; auto marks a reconnect, which gives way to a
// Disconnect made meanwhile. One attempt runs at a time (connecting is its
// token). c.mu is not held while dialing, so Close, Disconnect and Status
// never wait for the hub.
func (c *Client) connect(ctx context.Context, auto bool) (ConnectInfo, error) {
	select {
	case c.connecting <- struct{}{}:
	case <-ctx.Done():
		return ConnectInfo{}, fmt.Errorf("warren: connect: %w", ctx.Err())
	case <-c.closing.Done():
		return ConnectInfo{}, fmt.Errorf("warren: client: %w", net.ErrClosed)
	}
	defer func() { <-c.connecting }()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.closing, cancel) // Close cancels the attempt
	defer stop()

	c.mu.Lock()
	switch {
	case c.shut:
		c.mu.Unlock()
		return ConnectInfo{}, fmt.Errorf("warren: client: %w", net.ErrClosed)
	case auto && c.deliberate:
		c.mu.Unlock()
		return ConnectInfo{}, errDeliberate
	case c.status == StatusConnected:
		info := c.info
		c.mu.Unlock()
		return info, nil
	}
	c.deliberate = false
	c.cancelConnect = cancel // Disconnect cancels the attempt
	if auto {
		c.setStatus(StatusReconnecting)
	} else {
		c.setStatus(StatusConnecting)
	}
	c.mu.Unlock()

	var (
		info ConnectInfo
		l    *wsession.Session
		dev  *wg.Device
		eng  forward.Config
		err  error
	)
	if c.cfg.Transport == ClientWireGuard {
		c.disconnectWG() // a device left by a lost session
		dev, info, eng, err = c.connectWG(ctx)
	} else {
		info, l, err = c.dial(ctx)
		eng = forward.Config{Subnet: info.AssignedIP.Masked(), HubIP: info.Gateway, LocalIP: info.AssignedIP.Addr(), MTU: info.MTU}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.cancelConnect = nil
	switch {
	case c.shut:
		err = fmt.Errorf("warren: client closed during Connect: %w (%w)", net.ErrClosed, errOr(err, context.Canceled))
	case c.deliberate:
		err = fmt.Errorf("%w during Connect: %w", errDeliberate, errOr(err, context.Canceled))
	case err == nil && !c.engineStarted:
		eng.Deliver = c.deliver
		eng.Logger = c.log.With("component", "forward")
		if err = c.engine.Start(eng); err != nil {
			err = fmt.Errorf("warren: starting forwarding engine: %w", err)
		} else {
			c.engineStarted = true
		}
	}
	if err != nil {
		if l != nil {
			l.Conn().Close()
		}
		if dev != nil {
			dev.Close()
		}
		if !c.shut {
			c.setStatus(StatusDisconnected)
		}
		return ConnectInfo{}, err
	}
	c.info = info
	if dev != nil {
		c.wgDev.Store(dev)
	} else {
		c.sess = l
		c.cur.Store(l)
		c.wg.Add(1) // done by clientHandler.Closed
		l.Start((*clientHandler)(c))
	}
	c.setStatus(StatusConnected)
	c.log.Info("connected", "ip", info.AssignedIP, "transport", info.Transport)
	return info, nil
}

// errOr is err, or def when err is nil.
func errOr(err, def error) error {
	if err == nil {
		return def
	}
	return err
}

// autoQUICTimeout bounds how long transport auto tries QUIC before it falls
// back to WebSocket (UDP blocked or nothing listening).
const autoQUICTimeout = 3 * time.Second

// quicAddr is the hub's QUIC address: QUICAddr, or ServerURL's host and port.
func (c *Client) quicAddr() string {
	if c.cfg.QUICAddr != "" {
		return c.cfg.QUICAddr
	}
	if u, err := url.Parse(c.cfg.ServerURL); err == nil && u.Host != "" {
		return u.Host
	}
	return c.cfg.ServerURL
}

// dialConn opens a transport connection to the hub, trying QUIC first with
// transport auto.
func (c *Client) dialConn(ctx context.Context) (transport.Conn, ClientTransport, error) {
	if c.cfg.Transport == ClientQUIC || c.cfg.Transport == ClientAuto {
		qctx, cancel := ctx, context.CancelFunc(func() {})
		if c.cfg.Transport == ClientAuto {
			qctx, cancel = context.WithTimeout(ctx, autoQUICTimeout)
		}
		conn, err := quic.Dial(qctx, c.quicAddr(), quic.DialConfig{
			ServerCertHash: c.cfg.ServerCertHash,
			TLSConfig:      c.cfg.TLSConfig,
			Control:        c.dialControl(),
		})
		cancel()
		if err == nil {
			return conn, ClientQUIC, nil
		}
		if c.cfg.Transport == ClientQUIC || ctx.Err() != nil {
			return nil, "", fmt.Errorf("warren: connecting to %s over QUIC: %w", c.quicAddr(), err)
		}
		c.log.Info("QUIC unavailable, falling back to WebSocket", "addr", c.quicAddr(), "err", err)
	}
	conn, err := ws.Dial(ctx, c.cfg.ServerURL, ws.DialConfig{
		ServerCertHash: c.cfg.ServerCertHash,
		TLSConfig:      c.cfg.TLSConfig,
		Control:        c.dialControl(),
	})
	if err != nil {
		return nil, "", fmt.Errorf("warren: connecting to %s: %w", c.cfg.ServerURL, err)
	}
	return conn, ClientWebSocket, nil
}

// dial connects and authenticates, returning a session not yet started.
func (c *Client) dial(ctx context.Context) (ConnectInfo, *wsession.Session, error) {
	conn, kind, err := c.dialConn(ctx)
	if err != nil {
		return ConnectInfo{}, nil, err
	}
	if c.wrapConn != nil {
		conn = c.wrapConn(conn)
	}
	c.mu.Lock()
	if c.status == StatusConnecting || c.status == StatusReconnecting {
		c.setStatus(StatusHandshaking)
	}
	c.mu.Unlock()
	// The handshake's reads honour ctx: cancelling it closes the conn.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	sess, hello, err := wsession.Dial(conn, wsession.DialConfig{
		PrivateKey:      c.cfg.PrivateKey,
		PublicKey:       c.cfg.PublicKey,
		ServerPublicKey: c.cfg.ServerPublicKey,
		Version:         Version,
		Tags:            c.cfg.ClientDefinedClientTags,
		Transport:       string(kind),
		Telemetry:       c.telemetry,
		HealthChanged:   c.healthChanged(string(kind)),
	})
	if err != nil {
		conn.Close()
		if ctx.Err() == nil {
			c.stats.handshakesFailed.Add(1) // refused, unanswered or malformed
		}
		var ce *wsession.CloseError
		switch {
		case errors.As(err, &ce):
			err = fmt.Errorf("warren: hub refused the client: %w", fromReason(ce.Reason).err())
		case errors.Is(err, wsession.ErrNoAnswer):
			err = fmt.Errorf("%w: the hub closed the connection without answering (unknown client key, replayed handshake, or wrong serverPublicKey): %w", ErrHandshakeRefused, err)
		default:
			err = fmt.Errorf("warren: handshake: %w", err)
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return ConnectInfo{}, nil, err
	}
	c.stats.handshakes.Add(1)
	info := ConnectInfo{
		AssignedIP: hello.AssignedPrefix,
		Gateway:    hello.Gateway,
		Transport:  string(kind),
		MTU:        hello.MTU,
		DNS:        hello.DNS,
	}
	return info, sess, nil
}

// clientHandler is the Client seen by its session.
type clientHandler Client

// Packets hands what the hub sent to the engine (session.Handler).
func (h *clientHandler) Packets(bufs [][]byte, offset int) {
	c := (*Client)(h)
	if err := c.engine.Send(bufs, offset); err != nil {
		c.log.Debug("engine send failed", "err", err)
	}
}

// Closed records the end of the session and reconnects if it should
// (session.Handler).
func (h *clientHandler) Closed(sr wsession.Reason) {
	c := (*Client)(h)
	defer c.wg.Done()
	r := fromReason(sr)
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.sess; l != nil {
		n := l.Counters()
		c.stats.bytesIn.Add(n.BytesIn)
		c.stats.bytesOut.Add(n.BytesOut)
		c.stats.packetsIn.Add(n.PacketsIn)
		c.stats.packetsOut.Add(n.PacketsOut)
		c.stats.oversized.Add(n.Oversized)
		c.stats.queueFull.Add(n.QueueFull)
		if rtt := l.RTT(); rtt > 0 {
			c.lastRTT.Store(int64(rtt))
		}
		c.sess = nil
		c.cur.Store(nil)
	}
	if c.shut {
		return
	}
	c.setStatus(StatusDisconnected)
	c.log.Info("disconnected", "reason", r.text, "code", r.code)
	c.events.publish(ClientDisconnected{EventTime: EventTime{time.Now()}, Reason: r.text, Err: r.err()})
	if !c.deliberate && !c.cfg.Reconnect.Disabled && !permanentCode(r.code) {
		c.wg.Add(1)
		go c.reconnect()
	}
}

// deliver sends packets from the engine, bufs[i][offset:], to the hub. On
// a session with datagrams (QUIC) each packet is sealed in place, in the
// engine's buffer, and sent from the engine's goroutine: no copy and no
// handoff. On a stream the packets are copied into the session's queue,
// whose writer seals whatever has gathered into one message.
func (c *Client) deliver(bufs [][]byte, offset int) {
	if dev := c.wgDev.Load(); dev != nil {
		c.stats.packetsOut.Add(uint64(len(bufs)))
		for _, b := range bufs {
			c.stats.bytesOut.Add(uint64(len(b) - offset))
		}
		dev.SendOffset(bufs, offset)
		return
	}
	l := c.cur.Load()
	if l == nil {
		c.stats.noRoute.Add(uint64(len(bufs)))
		return
	}
	if offset >= wsession.Headroom && l.Datagrams() {
		_, _ = l.Write(bufs, offset) // an error ends the session, which reports it
		return
	}
	l.SendBatch(bufs, offset) // what it drops it counts
}

// setStatus records and announces a status. Call with c.mu held.
func (c *Client) setStatus(st Status) {
	if c.status == st {
		return
	}
	c.status = st
	c.events.publish(StatusChanged{EventTime{time.Now()}, st})
}

// Disconnect ends the session, telling the hub, or cancels a Connect in
// progress. The Client may Connect again.
func (c *Client) Disconnect() error {
	c.mu.Lock()
	c.deliberate = true
	l := c.sess
	if c.disconnectWG() {
		c.setStatus(StatusDisconnected)
		c.mu.Unlock()
		return nil
	}
	cancel := c.cancelConnect
	c.mu.Unlock()
	if l == nil {
		if cancel != nil {
			cancel()
			return nil
		}
		return ErrNotConnected
	}
	l.Close(closeReason{codec.DisconnectClosed, "client disconnected"}.reason())
	<-l.Done()
	return nil
}

// Close disconnects, cancels a Connect in progress, stops the forwarding
// engine and waits for every goroutine. A second Close returns net.ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.shut {
		c.mu.Unlock()
		return fmt.Errorf("warren: client: %w", net.ErrClosed)
	}
	c.shut = true
	c.deliberate = true
	c.stopClosing()
	c.setStatus(StatusClosed)
	c.mu.Unlock()
	// Wait for a connect in progress to see the cancellation; from then on
	// none starts, and link and engineStarted are final.
	c.connecting <- struct{}{}
	c.mu.Lock()
	l := c.sess
	started := c.engineStarted
	c.mu.Unlock()
	if l != nil {
		l.Close(closeReason{codec.DisconnectClosed, "client closed"}.reason())
	}
	c.disconnectWG()
	c.wg.Wait()
	var err error
	if started {
		err = c.engine.Close()
	}
	c.events.close()
	return err
}

// Status returns the client's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Statistics returns the client's counters: In is from the hub, Out toward it.
func (c *Client) Statistics() Statistics {
	st := c.stats.snapshot()
	c.mu.Lock()
	l := c.sess
	c.mu.Unlock()
	if l != nil {
		n := l.Counters()
		st.BytesIn += n.BytesIn
		st.BytesOut += n.BytesOut
		st.PacketsIn += n.PacketsIn
		st.PacketsOut += n.PacketsOut
		st.Drops.Oversized += n.Oversized
		st.Drops.QueueFull += n.QueueFull
	}
	st.EventsDropped = c.events.dropped.Load()
	return st
}

// RTT is the round-trip time of the last keepalive, or 0 before the first.
func (c *Client) RTT() time.Duration {
	if l := c.cur.Load(); l != nil {
		if rtt := l.RTT(); rtt > 0 {
			return rtt
		}
	}
	return time.Duration(c.lastRTT.Load())
}

// Subscribe returns a channel of the client's events and a func that ends the
// subscription; see Server.Subscribe.
func (c *Client) Subscribe() (<-chan Event, func()) { return c.events.subscribe() }

func (c *Client) host() (hostEngine, error) {
	c.mu.Lock()
	started := c.engineStarted
	c.mu.Unlock()
	if !started {
		return nil, fmt.Errorf("warren: client has no tunnel address before Connect: %w", ErrNotConnected)
	}
	h, ok := c.engine.(hostEngine)
	if !ok {
		return nil, fmt.Errorf("warren: forwarding mode %q has no tunnel address of its own (use netstack): %w", c.cfg.ForwardingMode, ErrNotSupported)
	}
	return h, nil
}

// Dial connects from the client's tunnel address through the hub: to another
// client, to the hub's own address, or (through the hub's NAT) to anywhere
// the hub's policy allows. It needs forwardingMode netstack and Connect first.
func (c *Client) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	h, err := c.host()
	if err != nil {
		return nil, err
	}
	return h.DialContext(ctx, network, addr)
}

// Listen serves on the client's tunnel address: the hub (Server.Dial) and
// other clients reach it there. It needs forwardingMode netstack and Connect first.
func (c *Client) Listen(network, addr string) (net.Listener, error) {
	h, err := c.host()
	if err != nil {
		return nil, err
	}
	return h.Listen(network, addr)
}

// ListenPacket binds a UDP port of the client's tunnel address. It needs
// forwardingMode netstack and Connect first.
func (c *Client) ListenPacket(network, addr string) (net.PacketConn, error) {
	h, err := c.host()
	if err != nil {
		return nil, err
	}
	return h.ListenPacket(network, addr)
}
