package warren

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/warrenvpn/warren/forward"
	fwdtun "github.com/warrenvpn/warren/forward/tun"
)

// checkTUN validates the client's TUN settings: the device name always, and
// the routes the TUN engine would add.
func (c *ClientConfig) checkTUN() error {
	if err := validTUNName("tunName", c.TUNName); err != nil {
		return err
	}
	for i, p := range c.TUNRoutes {
		if !p.IsValid() {
			return configErr(fmt.Sprintf("tunRoutes[%d]", i), p.String(), "not a prefix")
		}
	}
	switch m := c.TUNFwMark; {
	case m == 0:
	case !c.fullTunnel():
		return configErr("tunFwMark", fmt.Sprint(m), "used only by a full tunnel: forwardingMode tun with a default route in tunRoutes (or, with transport wireguard, in wgAllowedIps)")
	case m >= 253 && m <= 255:
		return configErr("tunFwMark", fmt.Sprint(m), "is also the routing table's number, and 253-255 are the kernel's default, main and local tables")
	}
	switch ms := c.TUNHealthCheckMs; {
	case ms == 0:
	case !validTUNHealthCheckMs(ms):
		return configErr("tunHealthCheckMs", fmt.Sprint(ms), tunHealthCheckRange)
	case !c.fullTunnel():
		return configErr("tunHealthCheckMs", fmt.Sprint(ms), "used only by a full tunnel: forwardingMode tun with a default route in tunRoutes (or, with transport wireguard, in wgAllowedIps); without one the client adds no rules to check")
	}
	return nil
}

// fullTunnel reports whether the client routes a default route into its
// TUN device, which the TUN engine builds with policy routing.
func (c *ClientConfig) fullTunnel() bool {
	if c.Forwarder != nil || c.ForwardingMode != ForwardTUN {
		return false
	}
	routes := c.TUNRoutes
	if c.Transport == ClientWireGuard {
		routes = append(slices.Clone(routes), c.WGAllowedIPs...)
	}
	return slices.ContainsFunc(routes, func(p netip.Prefix) bool { return p.IsValid() && p.Bits() == 0 })
}

// fwMark is the mark the client's sockets to the hub carry: a full
// tunnel's, or 0.
func (c *ClientConfig) fwMark() uint32 {
	switch {
	case !c.fullTunnel():
		return 0
	case c.TUNFwMark != 0:
		return c.TUNFwMark
	}
	return fwdtun.DefaultFwMark
}

// dialControl is the Control of the client's sockets to the hub: SO_MARK
// with a full tunnel, so they stay outside it; nil otherwise.
func (c *Client) dialControl() func(network, address string, rc syscall.RawConn) error {
	if m := c.cfg.fwMark(); m != 0 {
		return fwdtun.MarkControl(m)
	}
	return nil
}

// newTUNEngine is the client's forwardingMode tun engine: a kernel TUN
// device with the assigned address, the hub's subnet (through the address),
// TUNRoutes and, with transport wireguard, WGAllowedIPs routed into it. It
// has no NAT and no policy: the hub applies those.
func (c *Client) newTUNEngine() forward.Engine {
	routes := slices.Clone(c.cfg.TUNRoutes)
	if c.cfg.Transport == ClientWireGuard {
		routes = append(routes, c.cfg.WGAllowedIPs...)
	}
	opts := fwdtun.Options{
		Name:   c.cfg.TUNName,
		Routes: routes,
		FwMark: c.cfg.fwMark(),
		// Without a full tunnel the table holds no rules: nothing to guard.
		HealthInterval: -1,
	}
	if opts.FwMark != 0 {
		// A full tunnel missing a rule would send traffic outside it (or
		// lose the hub's replies): check as often as the hub does.
		// 0 is the engine's default, 60 s.
		opts.HealthInterval = time.Duration(c.cfg.TUNHealthCheckMs) * time.Millisecond
		opts.OnRepair = func(what string) {
			c.events.publish(Error{EventTime{time.Now()}, fmt.Errorf("warren: tun engine: full tunnel re-applied (%s)", what)})
		}
	}
	return &clientTUN{opts: opts}
}

// clientTUN is the client's TUN engine. It makes the engine at Start, when
// the subnet's family is known, so routes of the other family (which an
// IPv4-only device cannot take) and routes the subnet already covers are
// left out, but for a default route: the engine makes that family
// unreachable rather than leave it outside the tunnel. It also answers Client.Dial, Listen and ListenPacket with the
// reason they are not there.
type clientTUN struct {
	opts  fwdtun.Options
	local netip.Addr
	eng   atomic.Pointer[fwdtun.Engine]
}

// Start creates the device.
func (t *clientTUN) Start(cfg forward.Config) error {
	opts := t.opts
	opts.Routes = nil
	subnet := cfg.Subnet.Masked()
	for _, r := range t.opts.Routes {
		r = r.Masked()
		if !r.IsValid() || (r.Addr().Is4() != subnet.Addr().Is4() && r.Bits() != 0) {
			continue
		}
		if r.Bits() >= subnet.Bits() && subnet.Contains(r.Addr()) {
			continue
		}
		if !slices.Contains(opts.Routes, r) {
			opts.Routes = append(opts.Routes, r)
		}
	}
	e := fwdtun.New(opts)
	if err := e.Start(cfg); err != nil {
		return err
	}
	t.local = cfg.LocalIP
	t.eng.Store(e)
	return nil
}

// Send writes packets from the hub to the device.
func (t *clientTUN) Send(bufs [][]byte, offset int) error {
	e := t.eng.Load()
	if e == nil {
		return fmt.Errorf("forward/tun: not started: %w", net.ErrClosed)
	}
	return e.Send(bufs, offset)
}

// Close removes the device.
func (t *clientTUN) Close() error {
	if e := t.eng.Load(); e != nil {
		return e.Close()
	}
	return nil
}

func (t *clientTUN) notHere() error {
	return fmt.Errorf("warren: forwarding mode tun: the client's tunnel address %s is on the kernel's TUN device, so use the net package (net.Dial, net.Listen) on it instead: %w", t.local, ErrNotSupported)
}

// DialContext says to use net.Dial: the kernel routes through the device.
func (t *clientTUN) DialContext(context.Context, string, string) (net.Conn, error) {
	return nil, t.notHere()
}

// Listen says to use net.Listen on the tunnel address.
func (t *clientTUN) Listen(string, string) (net.Listener, error) { return nil, t.notHere() }

// ListenPacket says to use net.ListenPacket on the tunnel address.
func (t *clientTUN) ListenPacket(string, string) (net.PacketConn, error) {
	return nil, t.notHere()
}
