package warren

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"

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
		field := fmt.Sprintf("tunRoutes[%d]", i)
		if !p.IsValid() {
			return configErr(field, p.String(), "not a prefix")
		}
		if p.Bits() == 0 {
			return configErr(field, p.String(), "a default route into the TUN device would carry the connection to the hub too; full tunnel (policy routing) is not built yet")
		}
	}
	if c.Forwarder == nil && c.ForwardingMode == ForwardTUN && c.Transport == ClientWireGuard {
		for i, p := range c.WGAllowedIPs {
			if p.IsValid() && p.Bits() == 0 {
				return configErr(fmt.Sprintf("wgAllowedIps[%d]", i), p.String(), "forwardingMode tun routes wgAllowedIps into the TUN device, and a default route would carry the WireGuard endpoint too; full tunnel (policy routing) is not built yet")
			}
		}
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
	return &clientTUN{opts: fwdtun.Options{
		Name:   c.cfg.TUNName,
		Routes: routes,
		// The table holds no rules on a client: nothing to guard.
		HealthInterval: -1,
	}}
}

// clientTUN is the client's TUN engine. It makes the engine at Start, when
// the subnet's family is known, so routes of the other family (which an
// IPv4-only device cannot take) and routes the subnet already covers are
// left out. It also answers Client.Dial, Listen and ListenPacket with the
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
		if !r.IsValid() || r.Addr().Is4() != subnet.Addr().Is4() {
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
