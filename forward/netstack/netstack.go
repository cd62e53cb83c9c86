// Package netstack is Warren's userspace forwarding engine: a gVisor network
// stack fed with the IP packets clients send through the tunnel.
//
// On the hub (Options.Forward) the stack's NIC is promiscuous and may spoof
// source addresses, so it accepts TCP connections and UDP flows to any address
// and answers as that address. Each accepted flow is relayed to the real
// destination with an ordinary host socket: this is the hub's NAT, and it needs
// no root, no TUN device and no kernel NAT rules. Without Forward the stack only
// owns Config.LocalIP; that is a client's netstack mode.
//
// In both modes the engine is also a host on the tunnel: DialContext, Listen and
// ListenPacket give net.Conn, net.Listener and net.PacketConn values bound to
// LocalIP, in the manner of gVisor's adapters/gonet (which they wrap).
//
// Choices:
//
//   - TCP: new connections go through gVisor's tcp.Forwarder, whose cap on
//     connection attempts in progress is Options.MaxHalfOpen; SYNs beyond it are
//     dropped, so a SYN flood costs bounded memory. For each attempt the engine
//     checks the flow limits and Options.Policy, then dials the target before it
//     completes the handshake with the client: a refused flow, a closed port or
//     an unreachable target gives the client a RST, not an accepted connection
//     that closes at once. The relay copies both ways, passes half-closes on
//     (CloseWrite) and closes the flow after Options.TCPIdleTimeout with no bytes
//     in either direction.
//   - UDP: a flow is keyed by (client address and port, destination address and
//     port), which is the 4-tuple of the gVisor endpoint created for it. Its
//     first datagram checks limits and Policy and opens a connected host socket
//     to the target; the flow closes after Options.UDPIdleTimeout with no
//     datagram either way. A refused datagram gets ICMP port unreachable.
//   - ICMP echo: requests to LocalIP are answered by the stack. Requests to any
//     other address are not relayed (that would need raw sockets or the
//     unprivileged ping socket, neither of which is always available): they get
//     no answer and are counted in Stats.Refused (and Stats.PolicyBlocked when
//     Policy refused them), so a ping through the NAT times out rather than
//     lying about reachability.
//   - Loopback: the hub forwards to loopback destinations like any other; that
//     reaches services on the hub's own host. Options.Policy is where an
//     embedding program forbids it.
//   - Traffic from the tunnel to LocalIP never reaches a host socket: a port
//     with no listener gets a RST (TCP) or port unreachable (UDP).
//   - In Forward mode the stack does not loop traffic to its own address
//     internally (gVisor's HandleLocal: a promiscuous NIC owns every address,
//     so HandleLocal would make it drop every inbound packet as its own); the
//     hub's DialContext to its own LocalIP leaves through Config.Deliver like
//     any other packet.
//   - Flow limits (MaxFlows, MaxFlowsPerClient) count TCP and UDP flows
//     together, TCP dials in progress included, so one client cannot hold the
//     whole table.
//
// Why gVisor: it is the userspace TCP/IP stack that wireguard-go's tun/netstack
// and Tailscale already run in production, it has a forwarder API built for
// exactly this use (bounded in-flight connection attempts included), and it
// keeps Warren free of cgo, root and kernel state.
package netstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/warrenvpn/warren/forward"
)

// Proto is an IP protocol number, as Options.Policy sees it.
type Proto uint8

// The protocols the engine forwards or answers.
const (
	ICMP Proto = 1
	TCP  Proto = 6
	UDP  Proto = 17
)

// String returns the protocol's lower-case name.
func (p Proto) String() string {
	switch p {
	case ICMP:
		return "icmp"
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// Defaults for the zero values of Options.
const (
	DefaultMaxFlows          = 65536
	DefaultMaxFlowsPerClient = 4096
	DefaultMaxHalfOpen       = 1024
	// DefaultMaxHalfOpenPerClient keeps one client's unanswered handshakes
	// from holding every one of the MaxHalfOpen slots.
	DefaultMaxHalfOpenPerClient = 64
	// synRetries bounds how long a handshake the client never completes
	// holds its slot: SYN-ACK retransmits at 1, 2, 4 s, then give up (~15 s
	// instead of gVisor's default of 6 retries, ~2 min).
	synRetries            = 3
	DefaultTCPIdleTimeout = 2 * time.Hour
	DefaultUDPIdleTimeout = 60 * time.Second
	DefaultDialTimeout    = 10 * time.Second
	DefaultMTU            = 1420
)

const (
	nicID = 1
	// queueLen is how many outbound packets the link endpoint holds before
	// the stack's writes fail (TCP then retransmits). It bounds memory at
	// queueLen packets of at most MTU bytes.
	queueLen = 2048
	// batchSize is the most packets handed to Config.Deliver in one call.
	batchSize = 64
)

// Options configures an Engine. The zero value is a client-mode engine with
// the documented defaults.
type Options struct {
	// Forward installs TCP and UDP forwarders: flows to any address that is
	// not LocalIP are accepted (promiscuous, spoofing NIC) and relayed to the
	// real destination with host sockets (the hub's NAT). Without it the stack
	// only owns LocalIP (a client's netstack mode).
	Forward bool
	// Policy is consulted for every new forwarded flow (TCP SYN, first UDP
	// datagram of a flow, ICMP echo to a non-local address). It returns the
	// address to dial, possibly rewritten (forceTarget), or ok=false to refuse
	// the flow (TCP RST, ICMP unreachable for UDP; counted). If nil, every
	// flow is allowed to its original destination. It must be safe for
	// concurrent use and fast: it runs in the packet path for UDP.
	Policy func(proto Proto, src, dst netip.AddrPort) (target netip.AddrPort, ok bool)
	// ProxyProtocol makes every outbound forwarded TCP connection start with
	// a PROXY protocol v2 header whose source is the client's tunnel address
	// and port and whose destination is the address the client asked for.
	ProxyProtocol bool
	// MaxFlows caps concurrent forwarded flows (TCP and UDP, including TCP
	// dials in progress). If zero, DefaultMaxFlows.
	MaxFlows int
	// MaxFlowsPerClient caps concurrent forwarded flows per tunnel source
	// address. If zero, DefaultMaxFlowsPerClient.
	MaxFlowsPerClient int
	// MaxHalfOpen caps TCP connection attempts in progress (gVisor's
	// tcp.Forwarder maxInFlight); further SYNs are dropped. If zero,
	// DefaultMaxHalfOpen.
	MaxHalfOpen int
	// MaxHalfOpenPerClient caps one tunnel source's TCP connection attempts
	// in progress; beyond it new SYNs get a RST at once, so a client that
	// floods SYNs cannot starve the others. An attempt the client never
	// completes holds its slot for gVisor's SYN-ACK backoff (1 s doubling up
	// to its 60 s maximum RTO, about 2 minutes), which this gVisor version
	// does not let the engine shorten. If zero, DefaultMaxHalfOpenPerClient.
	MaxHalfOpenPerClient int
	// TCPIdleTimeout closes a forwarded TCP connection that moved no bytes in
	// either direction for this long. If zero, DefaultTCPIdleTimeout.
	TCPIdleTimeout time.Duration
	// UDPIdleTimeout closes a UDP flow (its NAT entry and host socket) that
	// saw no datagram in either direction for this long. If zero,
	// DefaultUDPIdleTimeout.
	UDPIdleTimeout time.Duration
	// DialTimeout bounds each outbound dial. If zero, DefaultDialTimeout.
	DialTimeout time.Duration
	// Dial opens outbound connections to forwarded destinations. If nil,
	// (&net.Dialer{}).DialContext.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Stats are an Engine's counters. Active values are gauges; the rest only grow.
type Stats struct {
	// ActiveTCP and ActiveUDP are forwarded flows relaying now.
	ActiveTCP, ActiveUDP int64
	// HandshakingTCP are TCP connection attempts in progress (half-open).
	HandshakingTCP int64
	// TCPForwarded and UDPForwarded count flows that reached their target.
	TCPForwarded, UDPForwarded uint64
	// Refused counts flows turned away by the engine: RefusedLimit (a flow
	// limit was reached), PolicyBlocked (Options.Policy said no) and ICMP
	// echo requests to non-local addresses, which are never relayed.
	Refused, RefusedLimit, PolicyBlocked uint64
	// DialFailed counts flows whose target could not be reached.
	DialFailed uint64
	// ICMPEchoReplies counts echo replies the stack sent toward the tunnel.
	ICMPEchoReplies uint64
}

// Engine is a forward.Engine on a gVisor stack. Create it with New, then
// Start it. Its methods are safe for concurrent use.
type Engine struct {
	opts Options

	mu      sync.Mutex
	started bool
	closed  bool
	ctx     context.Context // canceled by Close; parent of every dial
	cancel  context.CancelFunc
	wg      sync.WaitGroup // goroutines the engine started

	// Set by Start, read-only afterwards.
	stack   *stack.Stack
	ep      *channel.Endpoint
	local   netip.Addr
	localV4 bool
	deliver forward.DeliverFunc
	log     *slog.Logger

	running atomic.Bool // between Start and Close

	flowMu    sync.Mutex
	flows     int
	perClient map[netip.Addr]int
	halfOpen  map[netip.Addr]int // TCP attempts in progress per source

	activeTCP, activeUDP                 atomic.Int64
	tcpForwarded, udpForwarded           atomic.Uint64
	refused, refusedLimit, policyBlocked atomic.Uint64
	dialFailed, echoReplies              atomic.Uint64
}

var _ forward.Engine = (*Engine)(nil)

// New returns an engine with opts, defaults filled in. It opens nothing until
// Start.
func New(opts Options) *Engine {
	if opts.MaxFlows <= 0 {
		opts.MaxFlows = DefaultMaxFlows
	}
	if opts.MaxFlowsPerClient <= 0 {
		opts.MaxFlowsPerClient = DefaultMaxFlowsPerClient
	}
	if opts.MaxHalfOpen <= 0 {
		opts.MaxHalfOpen = DefaultMaxHalfOpen
	}
	if opts.MaxHalfOpenPerClient <= 0 {
		opts.MaxHalfOpenPerClient = DefaultMaxHalfOpenPerClient
	}
	if opts.TCPIdleTimeout <= 0 {
		opts.TCPIdleTimeout = DefaultTCPIdleTimeout
	}
	if opts.UDPIdleTimeout <= 0 {
		opts.UDPIdleTimeout = DefaultUDPIdleTimeout
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.Dial == nil {
		opts.Dial = (&net.Dialer{}).DialContext
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Engine{
		opts:      opts,
		ctx:       ctx,
		cancel:    cancel,
		perClient: make(map[netip.Addr]int),
		halfOpen:  make(map[netip.Addr]int),
	}
}

// Start builds the stack: one NIC with cfg.LocalIP (in cfg.Subnet), default
// IPv4 and IPv6 routes through it, MTU cfg.MTU (DefaultMTU if zero). Packets
// the stack emits go to cfg.Deliver in batches from one goroutine; while
// Deliver blocks, up to 2048 more packets queue, then the stack's writes fail
// (TCP retransmits, UDP datagrams are lost).
func (e *Engine) Start(cfg forward.Config) error {
	if !cfg.LocalIP.IsValid() {
		return errors.New("netstack: config: LocalIP is not set")
	}
	if cfg.Deliver == nil {
		return errors.New("netstack: config: Deliver is nil")
	}
	if cfg.MTU < 0 || cfg.MTU > 65535 {
		return fmt.Errorf("netstack: config: MTU %d out of range", cfg.MTU)
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	local := cfg.LocalIP.Unmap()
	prefixLen := local.BitLen()
	if cfg.Subnet.IsValid() && cfg.Subnet.Contains(local) {
		prefixLen = cfg.Subnet.Bits()
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("netstack: start: %w", net.ErrClosed)
	}
	if e.started {
		return errors.New("netstack: start: already started")
	}

	// Packets from the tunnel may carry loopback addresses (a client reaching
	// the hub's own 127.0.0.1 through the NAT, and the replies); gVisor drops
	// those as martians on a non-loopback NIC unless told otherwise.
	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: true}),
			ipv6.NewProtocolWithOptions(ipv6.Options{AllowExternalLoopbackTraffic: true}),
		},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		// HandleLocal loops traffic to our own address inside the stack. A
		// promiscuous NIC owns every address, so with HandleLocal it would
		// drop every inbound packet as coming from itself.
		HandleLocal: !e.opts.Forward,
	})
	fail := func(what string, err tcpip.Error) error {
		s.Destroy()
		return fmt.Errorf("netstack: start: %s: %w", what, tcpipError{err})
	}
	sack := tcpip.TCPSACKEnabled(true)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fail("enable SACK", err)
	}
	ep := channel.New(queueLen, uint32(cfg.MTU), "")
	if err := s.CreateNIC(nicID, ep); err != nil {
		return fail("create NIC", err)
	}
	proto := ipv4.ProtocolNumber
	if local.Is6() {
		proto = ipv6.ProtocolNumber
	}
	addr := tcpip.ProtocolAddress{
		Protocol:          proto,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(local.AsSlice()), PrefixLen: prefixLen},
	}
	if err := s.AddProtocolAddress(nicID, addr, stack.AddressProperties{}); err != nil {
		return fail("add address", err)
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})

	e.stack = s
	e.ep = ep
	e.local = local
	e.localV4 = local.Is4()
	e.deliver = cfg.Deliver
	e.log = cfg.Logger
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}

	if e.opts.Forward {
		if err := s.SetPromiscuousMode(nicID, true); err != nil {
			return fail("promiscuous mode", err)
		}
		if err := s.SetSpoofing(nicID, true); err != nil {
			return fail("spoofing", err)
		}
		fwd := tcp.NewForwarder(s, 0, e.opts.MaxHalfOpen, e.forwardTCP)
		s.SetTransportProtocolHandler(tcp.ProtocolNumber, func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
			if e.isLocal(id.LocalAddress) {
				return false // no listener: the stack answers RST
			}
			return fwd.HandlePacket(id, pkt)
		})
		s.SetTransportProtocolHandler(udp.ProtocolNumber, e.handleUDP)
	}

	e.started = true
	e.running.Store(true)
	e.wg.Add(1)
	go e.deliverLoop()
	e.log.Debug("netstack: started", "localIP", local, "mtu", cfg.MTU, "forward", e.opts.Forward)
	return nil
}

// Send injects packets from the tunnel, bufs[i][offset:], into the stack. It
// copies them, so the caller may reuse bufs. Malformed packets are dropped
// (gVisor counts them).
func (e *Engine) Send(bufs [][]byte, offset int) error {
	if !e.running.Load() {
		if e.isClosed() {
			return fmt.Errorf("netstack: send: %w", net.ErrClosed)
		}
		return errors.New("netstack: send: engine not started")
	}
	for _, b := range bufs {
		b = b[offset:]
		if len(b) == 0 || len(b) > 65535 {
			continue
		}
		var proto tcpip.NetworkProtocolNumber
		switch b[0] >> 4 {
		case 4:
			proto = ipv4.ProtocolNumber
		case 6:
			proto = ipv6.ProtocolNumber
		default:
			continue
		}
		if e.opts.Forward && e.filterEcho(b) {
			continue
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
		e.ep.InjectInbound(proto, pkt)
		pkt.DecRef()
	}
	return nil
}

// Close stops the stack, closes every forwarded flow, listener and conn of the
// engine, and waits for the engine's goroutines. Closing twice returns an
// error wrapping net.ErrClosed.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return fmt.Errorf("netstack: close: %w", net.ErrClosed)
	}
	e.closed = true
	started := e.started
	e.mu.Unlock()

	e.running.Store(false)
	e.cancel() // aborts dials, closes relays, stops deliverLoop
	if started {
		e.stack.Close() // aborts every endpoint: gonet conns and listeners fail
		e.ep.Close()
	}
	e.wg.Wait()
	if started {
		e.stack.Wait()
		e.stack.Destroy()
	}
	return nil
}

// Stats returns a snapshot of the engine's counters.
func (e *Engine) Stats() Stats {
	e.flowMu.Lock()
	var handshaking int64
	for _, n := range e.halfOpen {
		handshaking += int64(n)
	}
	e.flowMu.Unlock()
	return Stats{
		HandshakingTCP:  handshaking,
		ActiveTCP:       e.activeTCP.Load(),
		ActiveUDP:       e.activeUDP.Load(),
		TCPForwarded:    e.tcpForwarded.Load(),
		UDPForwarded:    e.udpForwarded.Load(),
		Refused:         e.refused.Load(),
		RefusedLimit:    e.refusedLimit.Load(),
		PolicyBlocked:   e.policyBlocked.Load(),
		DialFailed:      e.dialFailed.Load(),
		ICMPEchoReplies: e.echoReplies.Load(),
	}
}

func (e *Engine) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// goAdd reserves a slot in e.wg for a goroutine the engine is about to start,
// or reports false once Close has begun (wg.Add must not race with wg.Wait).
func (e *Engine) goAdd() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.wg.Add(1)
	return true
}

// deliverLoop moves packets the stack emits to Config.Deliver, a batch at a
// time: it blocks for one packet, then takes whatever else is queued.
func (e *Engine) deliverLoop() {
	defer e.wg.Done()
	bufs := make([][]byte, batchSize)
	out := make([][]byte, 0, batchSize)
	for {
		pkt := e.ep.ReadContext(e.ctx)
		if pkt == nil {
			return // Close: context canceled or queue closed
		}
		out = out[:0]
		for pkt != nil {
			i := len(out)
			if n := forward.Headroom + pkt.Size() + forward.Tailroom; cap(bufs[i]) < n {
				bufs[i] = make([]byte, n, max(n, forward.Headroom+int(e.ep.MTU())+forward.Tailroom))
			}
			b := appendPacket(bufs[i][:forward.Headroom], pkt)
			pkt.DecRef()
			if isEchoReply(b[forward.Headroom:]) {
				e.echoReplies.Add(1)
			}
			out = append(out, b)
			if len(out) == batchSize {
				break
			}
			pkt = e.ep.Read()
		}
		e.deliver(out, forward.Headroom)
	}
}

// appendPacket appends the bytes of pkt to b. It walks the packet's views
// rather than calling AsSlices, which allocates.
func appendPacket(b []byte, pkt *stack.PacketBuffer) []byte {
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		b = append(b, s[off:]...)
		off = 0
	}
	return b
}

// isEchoReply reports whether b is an ICMP or ICMPv6 echo reply (without
// IPv6 extension headers, which the stack does not add to replies).
func isEchoReply(b []byte) bool {
	switch b[0] >> 4 {
	case 4:
		if len(b) < header.IPv4MinimumSize {
			return false
		}
		ihl := int(b[0]&0x0f) * 4
		return len(b) > ihl && b[9] == uint8(header.ICMPv4ProtocolNumber) && b[ihl] == uint8(header.ICMPv4EchoReply)
	case 6:
		return len(b) > header.IPv6MinimumSize && b[6] == uint8(header.ICMPv6ProtocolNumber) && b[header.IPv6MinimumSize] == uint8(header.ICMPv6EchoReply)
	}
	return false
}

// isLocal reports whether a is the engine's own tunnel address.
func (e *Engine) isLocal(a tcpip.Address) bool {
	return addrFrom(a) == e.local
}

func addrFrom(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip
}

func addrPortFrom(a tcpip.Address, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(addrFrom(a), port)
}
