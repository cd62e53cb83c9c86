package warren

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/warrenvpn/warren/wgconfig"
)

// WGServerConfigOptions chooses what WireGuardServerConfig writes besides
// the interface and its peers.
type WGServerConfigOptions struct {
	// NAT adds PostUp and PostDown lines that let the tunnel's traffic out
	// through Uplink and masquerade it (iptables, or ip6tables for an IPv6
	// subnet), and remove those rules again. It needs Uplink. IP forwarding
	// must be enabled on the host; the config does not change it.
	NAT bool `json:"nat,omitempty"`
	// Uplink is the host's interface toward the internet, such as "eth0":
	// 1 to 15 letters, digits, '_', '-' or '.'. Only with NAT.
	Uplink string `json:"uplink,omitempty"`
}

// WireGuardServerConfig returns a standard WireGuard server .conf (as
// wg-quick reads it) for the hub's WireGuard interface and the current
// registry: an [Interface] with the hub's WireGuard private key, its tunnel
// address with the subnet's length and the WireGuard port, and one [Peer]
// per registered client that is enabled, not expired and has a WireGuard
// key (AllowedIPs = its /32 or /128), plus one per static WireGuard peer,
// ordered by address. It is a snapshot: later registry changes are not in
// it.
//
// The text holds the hub's private key. The port is the running device's;
// before Start it is ServerConfig.WGListenPort, and an error when that is 0
// (a free port is picked at Start). On a hub that does not run WireGuard the
// error wraps ErrNotSupported; bad options give a *ConfigError.
func (s *Server) WireGuardServerConfig(ctx context.Context, opts WGServerConfigOptions) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if !s.cfg.runsWG() {
		return "", fmt.Errorf("warren: the hub does not run WireGuard (it needs wgPrivateKey and transportMode all, both or wireguard): %w", ErrNotSupported)
	}
	switch {
	case opts.NAT && opts.Uplink == "":
		return "", configErr("uplink", "", "required with nat: the host's interface toward the internet, e.g. eth0")
	case !opts.NAT && opts.Uplink != "":
		return "", configErr("uplink", opts.Uplink, "only with nat (it names the interface the NAT rules masquerade out of)")
	}
	port := s.cfg.WGListenPort
	if dev := s.wgDevice(); dev != nil {
		port = int(dev.Port())
	}
	if port == 0 {
		return "", fmt.Errorf("warren: the WireGuard port is not known yet (wgListenPort 0 picks one at Start): %w", ErrNotSupported)
	}

	reg := s.reg.load()
	now := time.Now()
	var peers []wgconfig.Peer
	for _, re := range reg.byID {
		e := &re.entry
		if !e.active(now) || e.WGPublicKey.IsZero() {
			continue
		}
		peers = append(peers, wgconfig.Peer{
			PublicKey:  wgconfig.Key(e.WGPublicKey),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(e.AssignedIP, e.AssignedIP.BitLen())},
		})
	}
	for _, p := range reg.static {
		peers = append(peers, wgconfig.Peer{
			PublicKey:           wgconfig.Key(p.PublicKey),
			Endpoint:            p.Endpoint,
			AllowedIPs:          slices.Clone(p.AllowedIPs),
			PersistentKeepalive: p.PersistentKeepalive,
		})
	}
	slices.SortFunc(peers, func(a, b wgconfig.Peer) int { return a.AllowedIPs[0].Addr().Compare(b.AllowedIPs[0].Addr()) })

	var nat string
	if opts.NAT {
		nat = opts.Uplink
	}
	conf, err := wgconfig.ServerConfig(wgconfig.ServerParams{
		PrivateKey:   wgconfig.Key(s.cfg.WGPrivateKey),
		Address:      netip.PrefixFrom(s.hubIP, s.cfg.Subnet.Bits()),
		ListenPort:   port,
		MTU:          s.cfg.MTU,
		Peers:        peers,
		NATInterface: nat,
	})
	if err != nil {
		var ce *wgconfig.ConfigError
		if errors.As(err, &ce) && ce.Field == "NATInterface" {
			return "", configErr("uplink", opts.Uplink, ce.Reason)
		}
		return "", fmt.Errorf("warren: rendering the WireGuard server config: %w", err)
	}
	text, err := conf.MarshalText()
	if err != nil {
		return "", fmt.Errorf("warren: rendering the WireGuard server config: %w", err)
	}
	return string(text), nil
}
