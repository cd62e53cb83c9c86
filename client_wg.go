package warren

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/forward"
	"github.com/warrenvpn/warren/transport/wg"
)

// A Client with transport wireguard runs a wireguard-go device toward the hub
// (transport/wg) instead of a WebSocket session, with the same forwarding
// engine behind it. The hub is the device's one peer.

// checkWG validates the WireGuard fields of a ClientConfig.
func (c *ClientConfig) checkWG() error {
	switch {
	case c.WGPrivateKey.IsZero():
		return configErr("wgPrivateKey", "", "required with transport wireguard")
	case c.WGServerPublicKey.IsZero():
		return configErr("wgServerPublicKey", "", "required with transport wireguard")
	case c.WGEndpoint == "":
		return configErr("wgEndpoint", "", "required with transport wireguard (host:port)")
	case !c.WGAddress.IsValid():
		return configErr("wgAddress", "", "required with transport wireguard (the client's tunnel address, e.g. 10.8.0.2/32)")
	}
	if why := checkHostPort(c.WGEndpoint, true); why != "" {
		return configErr("wgEndpoint", c.WGEndpoint, why)
	}
	for i, p := range c.WGAllowedIPs {
		if !p.IsValid() {
			return configErr(fmt.Sprintf("wgAllowedIps[%d]", i), p.String(), "not a CIDR prefix")
		}
	}
	if c.WGPersistentKeepalive < 0 || c.WGPersistentKeepalive > 65535 {
		return configErr("wgPersistentKeepalive", fmt.Sprint(c.WGPersistentKeepalive), "must be 0-65535 seconds")
	}
	return nil
}

// connectWG brings up a device and waits for its first handshake with the
// hub. It returns the device and what the forwarding engine needs; connect
// installs them.
func (c *Client) connectWG(ctx context.Context) (*wg.Device, ConnectInfo, forward.Config, error) {
	fail := func(err error) (*wg.Device, ConnectInfo, forward.Config, error) {
		return nil, ConnectInfo{}, forward.Config{}, err
	}
	ua, err := net.DefaultResolver.LookupNetIP(ctx, "ip", hostOf(c.cfg.WGEndpoint))
	if err != nil || len(ua) == 0 {
		return fail(fmt.Errorf("warren: resolving wgEndpoint %s: %w", c.cfg.WGEndpoint, err))
	}
	_, portText, _ := net.SplitHostPort(c.cfg.WGEndpoint)
	port, err := net.LookupPort("udp", portText)
	if err != nil {
		return fail(fmt.Errorf("warren: wgEndpoint %s: %w", c.cfg.WGEndpoint, err))
	}
	endpoint := netip.AddrPortFrom(ua[0].Unmap(), uint16(port))

	mtu := c.cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	allowed := c.cfg.WGAllowedIPs
	if len(allowed) == 0 {
		allowed = []netip.Prefix{c.cfg.WGAddress.Masked()}
	}
	keepalive := c.cfg.WGPersistentKeepalive
	if keepalive == 0 {
		keepalive = wgKeepalive
	}
	up := make(chan struct{}, 1)
	dev, err := wg.New(wg.Config{
		PrivateKey:    c.cfg.WGPrivateKey,
		FwMark:        c.cfg.fwMark(),
		MTU:           mtu,
		ReceiveOffset: c.wgReceive,
		PeerEvent: func(ev wg.PeerEvent) {
			if ev.Up {
				select {
				case up <- struct{}{}:
				default:
				}
				return
			}
			c.wgLost()
		},
		PollInterval:    100 * time.Millisecond,
		DeadPeerTimeout: deadPeerTimeout,
		Logger:          c.log.With("component", "wireguard"),
	})
	if err != nil {
		return fail(fmt.Errorf("warren: %w", err))
	}
	// A persistent keepalive makes wireguard-go handshake at once.
	err = dev.AddPeer(wg.Peer{PublicKey: c.cfg.WGServerPublicKey, AllowedIPs: allowed, Endpoint: endpoint, PersistentKeepalive: keepalive})
	if err != nil {
		dev.Close()
		return fail(fmt.Errorf("warren: %w", err))
	}
	select {
	case <-up:
	case <-ctx.Done():
		dev.Close()
		return fail(fmt.Errorf("warren: no WireGuard handshake with %s: %w", endpoint, ctx.Err()))
	}

	// The tunnel's subnet is the first AllowedIP that holds the address,
	// but never a default route (a full tunnel's): the hub is not 0.0.0.1.
	subnet := c.cfg.WGAddress.Masked()
	for _, p := range allowed {
		if p.Bits() > 0 && p.Contains(c.cfg.WGAddress.Addr()) {
			subnet = p.Masked()
			break
		}
	}
	info := ConnectInfo{
		AssignedIP: netip.PrefixFrom(c.cfg.WGAddress.Addr(), subnet.Bits()),
		Gateway:    subnet.Addr().Next(),
		Transport:  string(ClientWireGuard),
		MTU:        mtu,
		DNS:        c.cfg.DNS,
	}
	eng := forward.Config{Subnet: subnet, HubIP: info.Gateway, LocalIP: info.AssignedIP.Addr(), MTU: mtu}
	return dev, info, eng, nil
}

func hostOf(hostport string) string {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	return h
}

// wgReceive hands packets from the hub to the engine.
func (c *Client) wgReceive(bufs [][]byte, offset int) {
	c.stats.packetsIn.Add(uint64(len(bufs)))
	for _, b := range bufs {
		c.stats.bytesIn.Add(uint64(len(b) - offset))
	}
	if err := c.engine.Send(bufs, offset); err != nil {
		c.log.Debug("engine send failed", "err", err)
	}
}

// wgLost marks the client disconnected when the hub has gone silent.
func (c *Client) wgLost() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shut || c.wgDev.Load() == nil {
		return
	}
	c.setStatus(StatusDisconnected)
	r := closeReason{codec.DisconnectDeadPeer, "dead peer: the hub has been silent"}
	c.events.publish(ClientDisconnected{EventTime: EventTime{time.Now()}, Reason: r.text, Err: r.err()})
}

// disconnectWG closes the device, if any. It reports whether there was one.
func (c *Client) disconnectWG() bool {
	dev := c.wgDev.Swap(nil)
	if dev == nil {
		return false
	}
	dev.Close()
	return true
}
