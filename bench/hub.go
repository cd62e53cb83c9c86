package bench

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/forward"
	fwdtesting "github.com/warrenvpn/warren/forward/testing"
)

// farAddr is the destination outside the tunnel that client → hub packets
// are sent to; the hub's engine receives them (EnableNAT).
var farAddr = netip.MustParseAddr("198.51.100.1")

// hubOptions say how newHub configures a hub.
type hubOptions struct {
	engine forward.Engine // nil: ForwardSocket (the userspace NAT)
	subnet string         // "": 10.8.0.0/24
}

// newHub starts a hub on loopback running WebSocket, QUIC and WireGuard,
// with NAT enabled and a policy allowing 127.0.0.1, and closes it when b
// ends.
func newHub(b testing.TB, o hubOptions) *warren.Server {
	b.Helper()
	kp, err := warren.GenerateKeypair()
	if err != nil {
		b.Fatal(err)
	}
	wgkp, err := warren.GenerateWGKeypair()
	if err != nil {
		b.Fatal(err)
	}
	if o.subnet == "" {
		o.subnet = "10.8.0.0/24"
	}
	cfg := warren.ServerConfig{
		ListenAddr:        "127.0.0.1:0",
		PrivateKey:        kp.PrivateKey,
		Subnet:            netip.MustParsePrefix(o.subnet),
		WGPrivateKey:      wgkp.PrivateKey,
		EnableNAT:         true,
		ForwardingMode:    warren.ForwardSocket,
		Forwarder:         o.engine,
		DestinationPolicy: &warren.DestinationPolicy{Default: warren.PolicyAllow, AllowList: []string{"127.0.0.1"}},
	}
	if o.engine != nil {
		cfg.DestinationPolicy = nil
	}
	s, err := warren.NewServer(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	track(s)
	return s
}

// newBundle registers a client.
func newBundle(b testing.TB, s *warren.Server, id string) *warren.ClientBundle {
	b.Helper()
	bundle, err := s.CreateClient(context.Background(), warren.ClientSpec{ClientID: id})
	if err != nil {
		b.Fatal(err)
	}
	return bundle
}

// clientConfig is bundle's config for transport tr with engine eng (nil:
// the netstack default), not reconnecting, with the WireGuard endpoint on
// 127.0.0.1 whatever host the hub advertises.
func clientConfig(s *warren.Server, bundle *warren.ClientBundle, tr string, eng forward.Engine) warren.ClientConfig {
	cfg := bundle.Config
	cfg.Transport = warren.ClientTransport(tr)
	cfg.Forwarder = eng
	cfg.Reconnect.Disabled = true
	if tr == "wireguard" {
		cfg.WGEndpoint = "127.0.0.1:" + strconv.Itoa(s.WGAddr().(*net.UDPAddr).Port)
		// Everything through the hub, as the other transports do: the
		// NAT case dials 127.0.0.1 on the hub's side.
		cfg.WGAllowedIPs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	}
	return cfg
}

// connectClient connects a Warren client over tr with engine eng and closes
// it when b ends.
func connectClient(b testing.TB, s *warren.Server, bundle *warren.ClientBundle, tr string, eng forward.Engine) (*warren.Client, warren.ConnectInfo) {
	b.Helper()
	c, err := warren.NewClient(clientConfig(s, bundle, tr, eng))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	track(c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := c.Connect(ctx)
	if err != nil {
		b.Fatalf("connect over %s: %v", tr, err)
	}
	return c, info
}

// stockPeer is a plain wireguard-go device on a channel TUN: packets written
// to tun.Outbound go into the tunnel, packets out of it arrive on
// tun.Inbound.
type stockPeer struct {
	dev *device.Device
	tun *tuntest.ChannelTUN
	ip  netip.Addr
}

// newStockPeer brings up a wireguard-go device configured from a bundle's
// WireGuard fields, routing allowed through the hub, and closes it when b
// ends. It waits for the handshake with the hub.
func newStockPeer(b testing.TB, s *warren.Server, bundle *warren.ClientBundle, allowed netip.Prefix) *stockPeer {
	b.Helper()
	cfg := bundle.Config
	ct := tuntest.NewChannelTUN()
	dev := device.NewDevice(ct.TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	b.Cleanup(dev.Close)
	uapi := fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=127.0.0.1:%d\npersistent_keepalive_interval=25\nallowed_ip=%s\n",
		hex.EncodeToString(cfg.WGPrivateKey[:]), hex.EncodeToString(cfg.WGServerPublicKey[:]),
		s.WGAddr().(*net.UDPAddr).Port, allowed)
	if err := dev.IpcSet(uapi); err != nil {
		b.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		b.Fatal(err)
	}
	p := &stockPeer{dev: dev, tun: ct, ip: cfg.WGAddress.Addr()}
	waitHandshake(b, dev)
	return p
}

// waitHandshake waits until dev has completed a handshake with its peer.
func waitHandshake(b testing.TB, dev *device.Device) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cfg, err := dev.IpcGet()
		if err != nil {
			b.Fatal(err)
		}
		if strings.Contains(cfg, "last_handshake_time_sec=") && !strings.Contains(cfg, "last_handshake_time_sec=0\n") {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("no WireGuard handshake within 30 s:\n%s", cfg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newEngine is a testing engine that keeps enough packets for the windows
// the benchmarks keep in flight.
func newEngine() *fwdtesting.Engine {
	return fwdtesting.New(fwdtesting.Options{Buffer: 8192})
}
