package netstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Relay buffer sizes. A flow holds two buffers while it relays, so these
// bound the engine's copy memory at 2*size per flow.
const (
	tcpBufSize = 32 << 10
	udpBufSize = 64 << 10 // the largest UDP datagram
)

var (
	tcpBufPool = sync.Pool{New: func() any { b := make([]byte, tcpBufSize); return &b }}
	udpBufPool = sync.Pool{New: func() any { b := make([]byte, udpBufSize); return &b }}
)

// forwardTCP handles one connection attempt to a non-local address. gVisor's
// tcp.Forwarder runs it on a goroutine of its own, at most MaxHalfOpen at once.
func (e *Engine) forwardTCP(r *tcp.ForwarderRequest) {
	if !e.goAdd() {
		r.Complete(false)
		return
	}
	defer e.wg.Done()

	id := r.ID()
	src := addrPortFrom(id.RemoteAddress, id.RemotePort)
	dst := addrPortFrom(id.LocalAddress, id.LocalPort)
	if !e.startHandshake(src.Addr()) {
		r.Complete(true)
		return
	}
	handshaking := true
	defer func() {
		if handshaking {
			e.endHandshake(src.Addr())
		}
	}()
	target, ok := e.admit(TCP, src, dst)
	if !ok {
		r.Complete(true)
		return
	}
	defer e.release(src.Addr())

	// Dial before the handshake: the client sees the target's answer (RST
	// for a closed port) instead of a connection that closes at once.
	out, err := e.dial("tcp", src, dst, target)
	if err != nil {
		e.dialFailed.Add(1)
		e.log.Debug("netstack: tcp dial failed", "src", src, "dst", dst, "target", target, "err", err)
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	r.Complete(false)
	if terr != nil {
		out.Close()
		e.log.Debug("netstack: tcp handshake failed", "src", src, "dst", dst, "err", tcpipError{terr})
		return
	}
	in := gonet.NewTCPConn(&wq, ep)
	handshaking = false
	e.endHandshake(src.Addr())

	e.tcpForwarded.Add(1)
	e.activeTCP.Add(1)
	defer e.activeTCP.Add(-1)
	e.relay(in, out, e.opts.TCPIdleTimeout, true)
}

// handleUDP is the stack's handler for UDP datagrams no endpoint claimed: the
// first datagram of a new flow. It runs in the packet path, so the dial and
// the relay happen on a goroutine; later datagrams of the flow queue in the
// flow's endpoint meanwhile. Returning false makes the stack answer ICMP port
// unreachable.
func (e *Engine) handleUDP(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	if e.isLocal(id.LocalAddress) {
		return false // no socket bound on our own address
	}
	src := addrPortFrom(id.RemoteAddress, id.RemotePort)
	dst := addrPortFrom(id.LocalAddress, id.LocalPort)
	target, ok := e.admit(UDP, src, dst)
	if !ok {
		return false
	}
	if !e.goAdd() {
		e.release(src.Addr())
		return true
	}

	// udp.ForwarderRequest is the only way to build an endpoint that owns
	// this 4-tuple and receives this first datagram; its handler runs
	// synchronously inside HandlePacket.
	var req *udp.ForwarderRequest
	udp.NewForwarder(e.stack, func(r *udp.ForwarderRequest) { req = r }).HandlePacket(id, pkt)
	var wq waiter.Queue
	ep, terr := req.CreateEndpoint(&wq)
	if terr != nil {
		e.release(src.Addr())
		e.wg.Done()
		e.log.Debug("netstack: udp endpoint", "src", src, "dst", dst, "err", tcpipError{terr})
		return true
	}
	go e.relayUDP(gonet.NewUDPConn(&wq, ep), src, dst, target)
	return true
}

// relayUDP dials the target of a UDP flow and relays until the flow is idle.
func (e *Engine) relayUDP(in *gonet.UDPConn, src, dst, target netip.AddrPort) {
	defer e.wg.Done()
	defer e.release(src.Addr())
	out, err := e.dial("udp", src, dst, target)
	if err != nil {
		e.dialFailed.Add(1)
		e.log.Debug("netstack: udp dial failed", "src", src, "dst", dst, "target", target, "err", err)
		in.Close()
		return
	}
	e.udpForwarded.Add(1)
	e.activeUDP.Add(1)
	defer e.activeUDP.Add(-1)
	e.relay(in, out, e.opts.UDPIdleTimeout, false)
}

// filterEcho reports whether b is an ICMP echo request to an address other
// than LocalIP, which the engine does not relay. It consults Policy only to
// count the refusal as a policy block.
func (e *Engine) filterEcho(b []byte) bool {
	var src, dst netip.Addr
	switch b[0] >> 4 {
	case 4:
		ihl := int(b[0]&0x0f) * 4
		if len(b) < header.IPv4MinimumSize || ihl < header.IPv4MinimumSize || len(b) <= ihl ||
			b[9] != uint8(header.ICMPv4ProtocolNumber) || b[ihl] != uint8(header.ICMPv4Echo) {
			return false
		}
		src = netip.AddrFrom4([4]byte(b[12:16]))
		dst = netip.AddrFrom4([4]byte(b[16:20]))
	case 6:
		if len(b) <= header.IPv6MinimumSize || b[6] != uint8(header.ICMPv6ProtocolNumber) ||
			b[header.IPv6MinimumSize] != uint8(header.ICMPv6EchoRequest) {
			return false
		}
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
	default:
		return false
	}
	if dst == e.local {
		return false
	}
	e.refused.Add(1)
	if e.opts.Policy != nil {
		if _, ok := e.opts.Policy(ICMP, netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)); !ok {
			e.policyBlocked.Add(1)
		}
	}
	return true
}

// admit applies Policy and the flow limits to a new flow. On success the flow
// holds a slot that the caller gives back with release(src.Addr()).
func (e *Engine) admit(proto Proto, src, dst netip.AddrPort) (netip.AddrPort, bool) {
	target := dst
	if e.opts.Policy != nil {
		t, ok := e.opts.Policy(proto, src, dst)
		if !ok || !t.IsValid() {
			e.refused.Add(1)
			e.policyBlocked.Add(1)
			e.log.Debug("netstack: flow blocked by policy", "proto", proto, "src", src, "dst", dst)
			return netip.AddrPort{}, false
		}
		target = netip.AddrPortFrom(t.Addr().Unmap(), t.Port())
	}

	e.flowMu.Lock()
	n := e.perClient[src.Addr()]
	ok := e.flows < e.opts.MaxFlows && n < e.opts.MaxFlowsPerClient
	if ok {
		e.flows++
		e.perClient[src.Addr()] = n + 1
	}
	e.flowMu.Unlock()
	if !ok {
		e.refused.Add(1)
		e.refusedLimit.Add(1)
		e.log.Debug("netstack: flow limit reached", "proto", proto, "src", src, "dst", dst)
		return netip.AddrPort{}, false
	}
	return target, true
}

// startHandshake takes one of a source's MaxHalfOpenPerClient slots for a
// TCP connection attempt; false means the source has none left (counted).
func (e *Engine) startHandshake(client netip.Addr) bool {
	e.flowMu.Lock()
	n := e.halfOpen[client]
	ok := n < e.opts.MaxHalfOpenPerClient
	if ok {
		e.halfOpen[client] = n + 1
	}
	e.flowMu.Unlock()
	if !ok {
		e.refused.Add(1)
		e.refusedLimit.Add(1)
	}
	return ok
}

// endHandshake gives back a slot taken by startHandshake.
func (e *Engine) endHandshake(client netip.Addr) {
	e.flowMu.Lock()
	defer e.flowMu.Unlock()
	if n := e.halfOpen[client] - 1; n > 0 {
		e.halfOpen[client] = n
	} else {
		delete(e.halfOpen, client)
	}
}

// release gives back a flow slot taken by admit.
func (e *Engine) release(client netip.Addr) {
	e.flowMu.Lock()
	defer e.flowMu.Unlock()
	e.flows--
	if n := e.perClient[client] - 1; n > 0 {
		e.perClient[client] = n
	} else {
		delete(e.perClient, client)
	}
}

// dial opens the outbound side of a flow within DialTimeout, and writes the
// PROXY header on TCP when the engine is configured to.
func (e *Engine) dial(network string, src, dst, target netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(e.ctx, e.opts.DialTimeout)
	defer cancel()
	c, err := e.opts.Dial(ctx, network, target.String())
	if err != nil {
		return nil, fmt.Errorf("netstack: dial %s %s: %w", network, target, err)
	}
	if network != "tcp" || !e.opts.ProxyProtocol {
		return c, nil
	}
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
	if d, ok := ctx.Deadline(); ok {
		c.SetWriteDeadline(d)
	}
	if _, err := h.WriteTo(c); err != nil {
		c.Close()
		return nil, fmt.Errorf("netstack: write PROXY header to %s: %w", target, err)
	}
	c.SetWriteDeadline(time.Time{})
	return c, nil
}

// relay copies between the tunnel side in and the outbound side out until
// both directions end, one fails, the flow is idle for idle, or the engine
// closes. Then it closes both.
func (e *Engine) relay(in, out net.Conn, idle time.Duration, stream bool) {
	f := &flow{in: in, out: out, idle: idle, start: time.Now()}
	f.mu.Lock()
	f.timer = time.AfterFunc(idle, f.checkIdle)
	f.mu.Unlock()
	stop := context.AfterFunc(e.ctx, f.close)

	done := make(chan struct{})
	go func() {
		defer close(done)
		f.pipe(out, in, stream)
	}()
	f.pipe(in, out, stream)
	<-done

	stop()
	f.mu.Lock()
	f.stopped = true
	f.timer.Stop()
	f.mu.Unlock()
	f.close()
}

// flow is one relayed connection or UDP flow.
type flow struct {
	in, out net.Conn
	idle    time.Duration
	start   time.Time
	last    atomic.Int64 // time of the last read, as nanoseconds since start

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool

	closeOnce sync.Once
}

func (f *flow) close() {
	f.closeOnce.Do(func() {
		f.in.Close()
		f.out.Close()
	})
}

// checkIdle runs on the idle timer: it closes the flow if nothing was read
// for f.idle, else re-arms for the rest of the period.
func (f *flow) checkIdle() {
	quiet := time.Since(f.start) - time.Duration(f.last.Load())
	if quiet >= f.idle {
		f.close()
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.timer.Reset(f.idle - quiet)
	}
}

// pipe copies src to dst. For a stream, EOF on src is passed on as a
// half-close of dst; for datagrams, a failed write drops that datagram.
func (f *flow) pipe(dst, src net.Conn, stream bool) {
	pool := &udpBufPool
	if stream {
		pool = &tcpBufPool
	}
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.last.Store(int64(time.Since(f.start)))
			if _, werr := dst.Write(buf[:n]); werr != nil && stream {
				f.close()
				return
			}
		}
		switch {
		case err == nil:
		case stream && errors.Is(err, io.EOF):
			closeWrite(dst)
			return
		case !stream && errors.Is(err, syscall.ECONNREFUSED):
			// The target answered an earlier datagram with port
			// unreachable; keep the flow, as a NAT does.
		default:
			f.close()
			return
		}
	}
}

// closeWrite half-closes c, or closes it if it cannot half-close.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}
