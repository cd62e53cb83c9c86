package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// DialContext connects from LocalIP to addr through the tunnel. network is
// "tcp", "tcp4", "tcp6", "udp", "udp4" or "udp6". The host in addr must be an
// IP address (the stack has no resolver); an empty host means LocalIP.
// Errors unwrap to the matching syscall.Errno where there is one, so
// errors.Is(err, syscall.ECONNREFUSED) works as with package net.
func (e *Engine) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := e.ready(); err != nil {
		return nil, fmt.Errorf("netstack: dial %s %s: %w", network, addr, err)
	}
	ap, err := e.parseAddr(network, addr, false)
	if err != nil {
		return nil, fmt.Errorf("netstack: dial %s %s: %w", network, addr, err)
	}
	fa, proto := fullAddr(ap)
	switch network {
	case "tcp", "tcp4", "tcp6":
		c, err := e.dialTCP(ctx, fa, proto)
		if err != nil {
			return nil, fmt.Errorf("netstack: dial %s %s: %w", network, addr, err)
		}
		return c, nil
	default: // udp, checked by parseAddr
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("netstack: dial %s %s: %w", network, addr, err)
		}
		c, err := gonet.DialUDP(e.stack, nil, &fa, proto)
		if err != nil {
			return nil, fmt.Errorf("netstack: dial %s %s: %w", network, addr, err)
		}
		return c, nil
	}
}

// dialTCP is gonet.DialContextTCP, keeping the tcpip.Error so that callers
// can tell a refused connection from a timeout.
func (e *Engine) dialTCP(ctx context.Context, fa tcpip.FullAddress, proto tcpip.NetworkProtocolNumber) (*gonet.TCPConn, error) {
	var wq waiter.Queue
	ep, terr := e.stack.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, tcpipError{terr}
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	terr = ep.Connect(fa)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, tcpipError{terr}
	}
	return gonet.NewTCPConn(&wq, ep), nil
}

// Listen listens for TCP connections on LocalIP. addr is ":port" or
// "LocalIP:port"; an unspecified host ("0.0.0.0", "::") also means LocalIP,
// because a wildcard bind on a promiscuous stack would capture forwarded
// traffic meant for other hosts.
func (e *Engine) Listen(network, addr string) (net.Listener, error) {
	if err := e.ready(); err != nil {
		return nil, fmt.Errorf("netstack: listen %s %s: %w", network, addr, err)
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("netstack: listen %s %s: %w", network, addr, net.UnknownNetworkError(network))
	}
	ap, err := e.parseAddr(network, addr, true)
	if err != nil {
		return nil, fmt.Errorf("netstack: listen %s %s: %w", network, addr, err)
	}
	fa, proto := fullAddr(ap)
	l, err := gonet.ListenTCP(e.stack, fa, proto)
	if err != nil {
		return nil, fmt.Errorf("netstack: listen %s %s: %w", network, addr, err)
	}
	return l, nil
}

// ListenPacket opens a UDP socket on LocalIP, on the port of addr (":53",
// "LocalIP:53"; port 0 picks one). Replies sent with WriteTo leave from that
// port.
func (e *Engine) ListenPacket(network, addr string) (net.PacketConn, error) {
	if err := e.ready(); err != nil {
		return nil, fmt.Errorf("netstack: listen %s %s: %w", network, addr, err)
	}
	switch network {
	case "udp", "udp4", "udp6":
	default:
		return nil, fmt.Errorf("netstack: listen %s %s: %w", network, addr, net.UnknownNetworkError(network))
	}
	ap, err := e.parseAddr(network, addr, true)
	if err != nil {
		return nil, fmt.Errorf("netstack: listen %s %s: %w", network, addr, err)
	}
	fa, proto := fullAddr(ap)
	c, err := gonet.DialUDP(e.stack, &fa, nil, proto)
	if err != nil {
		return nil, fmt.Errorf("netstack: listen %s %s: %w", network, addr, err)
	}
	return c, nil
}

// ready reports whether the engine is between Start and Close.
func (e *Engine) ready() error {
	if e.running.Load() {
		return nil
	}
	if e.isClosed() {
		return net.ErrClosed
	}
	return errors.New("engine not started")
}

// parseAddr parses "host:port" for network. An empty host means LocalIP; for
// a local bind (listen) the host must be LocalIP or unspecified.
func (e *Engine) parseAddr(network, addr string, listen bool) (netip.AddrPort, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
	default:
		return netip.AddrPort{}, net.UnknownNetworkError(network)
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("invalid port %q", portStr)
	}
	ip := e.local
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("host %q is not an IP address (the tunnel has no resolver)", host)
		}
		ip = a.Unmap()
	}
	if listen {
		if ip.IsUnspecified() {
			ip = e.local
		}
		if ip != e.local {
			return netip.AddrPort{}, fmt.Errorf("can only bind the local tunnel address %s", e.local)
		}
	}
	switch network[len(network)-1] {
	case '4':
		if !ip.Is4() {
			return netip.AddrPort{}, fmt.Errorf("%s is not an IPv4 address", ip)
		}
	case '6':
		if !ip.Is6() {
			return netip.AddrPort{}, fmt.Errorf("%s is not an IPv6 address", ip)
		}
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

// fullAddr converts ap to gVisor's form, on the engine's NIC: naming the NIC
// lets a dial to a loopback address leave through the tunnel.
func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv4.ProtocolNumber
	if ap.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}, proto
}

// tcpipError adapts a tcpip.Error to error. It unwraps to the syscall.Errno
// that package net would report, where there is one.
type tcpipError struct{ err tcpip.Error }

func (t tcpipError) Error() string { return t.err.String() }

func (t tcpipError) Unwrap() error {
	switch t.err.(type) {
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted:
		return syscall.ECONNABORTED
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT
	case *tcpip.ErrNetworkUnreachable:
		return syscall.ENETUNREACH
	case *tcpip.ErrHostUnreachable:
		return syscall.EHOSTUNREACH
	case *tcpip.ErrPortInUse:
		return syscall.EADDRINUSE
	case *tcpip.ErrBadLocalAddress:
		return syscall.EADDRNOTAVAIL
	}
	return nil
}
