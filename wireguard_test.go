package warren

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/warrenvpn/warren/wgconfig"
)

// newWGHub starts a hub with WebSocket and WireGuard and the userspace NAT.
func newWGHub(t testing.TB) *Server {
	t.Helper()
	wgKeys, err := GenerateWGKeypair()
	if err != nil {
		t.Fatal(err)
	}
	return newNATHub(t, func(c *ServerConfig) { c.WGPrivateKey = wgKeys.PrivateKey })
}

// stockPeer is a plain wireguard-go device on tun/netstack, configured only
// from a .conf the way any WireGuard user would.
type stockPeer struct {
	dev *device.Device
	net *netstack.Net
}

func newStockPeer(t testing.TB, confText string) *stockPeer {
	t.Helper()
	conf, err := wgconfig.Parse([]byte(confText))
	if err != nil {
		t.Fatalf("bundle .conf does not parse: %v\n%s", err, confText)
	}
	var addrs []netip.Addr
	for _, p := range conf.Interface.Addresses {
		addrs = append(addrs, p.Addr())
	}
	tun, tnet, err := netstack.CreateNetTUN(addrs, conf.Interface.DNS, conf.Interface.MTU)
	if err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(tun, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	var uapi strings.Builder
	fmt.Fprintf(&uapi, "private_key=%s\n", hex.EncodeToString(conf.Interface.PrivateKey[:]))
	for _, p := range conf.Peers {
		fmt.Fprintf(&uapi, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
		ep, err := net.ResolveUDPAddr("udp", p.Endpoint)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&uapi, "endpoint=%s\n", ep)
		fmt.Fprintf(&uapi, "persistent_keepalive_interval=%d\n", p.PersistentKeepalive)
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&uapi, "allowed_ip=%s\n", a)
		}
	}
	if err := dev.IpcSet(uapi.String()); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.Close)
	return &stockPeer{dev: dev, net: tnet}
}

func TestStockWireGuardGoPeerPingsAndConnectsThroughHub(t *testing.T) {
	// The stock peer's own stack will not send to a loopback address, so it
	// asks for a documentation address that the hub forces to 127.0.0.1.
	wgKeys, err := GenerateWGKeypair()
	if err != nil {
		t.Fatal(err)
	}
	s := newNATHub(t, func(c *ServerConfig) {
		c.WGPrivateKey = wgKeys.PrivateKey
		c.DestinationPolicy = &DestinationPolicy{Default: PolicyForceTarget, Target: "127.0.0.1"}
	})
	events, cancel := s.Subscribe()
	defer cancel()
	b, err := s.CreateClient(context.Background(), ClientSpec{ClientID: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.WireGuardConfig, "[Peer]") || b.Config.WGEndpoint == "" {
		t.Fatalf("bundle has no WireGuard config:\n%s", b.WireGuardConfig)
	}
	// The bundle routes only the tunnel subnet (split tunnel); this peer
	// sends everything through the hub, as a phone's "all traffic" does.
	full := strings.Replace(b.WireGuardConfig, "AllowedIPs = 10.8.0.0/24", "AllowedIPs = 0.0.0.0/0", 1)
	if full == b.WireGuardConfig {
		t.Fatalf("no AllowedIPs line for the subnet:\n%s", b.WireGuardConfig)
	}
	peer := newStockPeer(t, full)

	// Ping the hub's tunnel address; the hub's netstack answers.
	ping, err := peer.net.DialPingAddr(netip.Addr{}, s.HubIP())
	if err != nil {
		t.Fatal(err)
	}
	defer ping.Close()
	ping.SetDeadline(time.Now().Add(10 * time.Second))
	req := []byte{8, 0, 0, 0, 0, 1, 0, 1, 'h', 'i'}
	if _, err := ping.Write(req); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 64)
	n, err := ping.Read(reply)
	if err != nil || n < 8 || reply[0] != 0 {
		t.Fatalf("ping reply %x, %v", reply[:n], err)
	}

	ev := waitEvent(t, events, func(e Event) bool {
		c, ok := e.(ClientConnected)
		return ok && c.Info.ClientID == "phone"
	}).(ClientConnected)
	if ev.Info.Transport != "wireguard" || !ev.Info.RemoteAddr.Addr().IsLoopback() && !ev.Info.RemoteAddr.Addr().IsUnspecified() {
		t.Fatalf("ClientConnected %+v", ev.Info)
	}

	// A TCP connection through the hub's NAT to a server on 127.0.0.1.
	ln := tcpEcho(t)
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	c, err := peer.net.DialContextTCPAddrPort(context.Background(), netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("through wireguard"))
	buf := make([]byte, 17)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "through wireguard" {
		t.Fatalf("echo %q %v", buf, err)
	}
	infos := s.ListClients()
	if len(infos) != 1 || infos[0].Transport != "wireguard" || infos[0].PacketsIn == 0 {
		t.Fatalf("ListClients %+v", infos)
	}
}

// wgClient connects a Warren client over WireGuard (netstack mode).
func wgClient(t testing.TB, b *ClientBundle) *Client {
	t.Helper()
	cfg := b.Config
	cfg.Transport = ClientWireGuard
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := c.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Transport != "wireguard" || info.AssignedIP.Addr() != b.Entry.AssignedIP {
		t.Fatalf("connect info %+v", info)
	}
	return c
}

func TestWireGuardPeerAndWebSocketClientReachEachOther(t *testing.T) {
	s := newWGHub(t)
	wsc := netClient(t, s, "laptop", nil)
	b, err := s.CreateClient(context.Background(), ClientSpec{ClientID: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	wgc := wgClient(t, b)

	ln, err := wsc.Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	httpServer(t, ln, "laptop")
	if body := httpGet(t, wgc.Dial, "http://10.8.0.2:9000/"); !strings.HasPrefix(body, "laptop from "+b.Entry.AssignedIP.String()) {
		t.Fatalf("wg -> ws: %q", body)
	}
	ln2, err := wgc.Listen("tcp", ":9001")
	if err != nil {
		t.Fatal(err)
	}
	httpServer(t, ln2, "phone")
	if body := httpGet(t, wsc.Dial, fmt.Sprintf("http://%s:9001/", b.Entry.AssignedIP)); !strings.HasPrefix(body, "phone from 10.8.0.2") {
		t.Fatalf("ws -> wg: %q", body)
	}
	// The hub's own Dial reaches the WireGuard peer too.
	if body := httpGet(t, s.Dial, fmt.Sprintf("http://%s:9001/", b.Entry.AssignedIP)); !strings.HasPrefix(body, "phone from 10.8.0.1") {
		t.Fatalf("hub -> wg: %q", body)
	}
}

func TestWireGuardPeerObeysACLAndDisable(t *testing.T) {
	s := newWGHub(t)
	wsc := netClient(t, s, "laptop", nil)
	ln, err := wsc.Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	httpServer(t, ln, "laptop")
	b, err := s.CreateClient(context.Background(), ClientSpec{ClientID: "phone", Security: &ClientSecurity{DestinationBlockList: []string{"10.8.0.2"}}})
	if err != nil {
		t.Fatal(err)
	}
	wgc := wgClient(t, b)
	dial := func(addr string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := wgc.Dial(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial("10.8.0.2:9000"); err == nil {
		t.Fatal("WireGuard peer reached a client its ACL blocks")
	}
	if s.Statistics().Drops.ACL == 0 {
		t.Fatal("ACL drop not counted")
	}
	hln, err := s.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	httpServer(t, hln, "hub")
	if err := dial("10.8.0.1:80"); err != nil {
		t.Fatalf("allowed destination: %v", err)
	}

	events, cancel := s.Subscribe()
	defer cancel()
	if err := s.DisableClient(context.Background(), "phone"); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, func(e Event) bool {
		d, ok := e.(ClientDisconnected)
		return ok && d.ClientID == "phone"
	})
	if err := dial("10.8.0.1:80"); err == nil {
		t.Fatal("disabled WireGuard peer still reaches the hub")
	}
	if err := s.EnableClient(context.Background(), "phone"); err != nil {
		t.Fatal(err)
	}
	// The peer still holds session keys the hub dropped; WireGuard starts a
	// new handshake when its data goes unanswered (REKEY_TIMEOUT + KEEPALIVE
	// = 15 s), so allow for that.
	waitFor(t, 40*time.Second, "re-enabled peer reaches the hub", func() bool { return dial("10.8.0.1:80") == nil })
}

func TestWireGuardKeyRotation(t *testing.T) {
	s := newWGHub(t)
	hln, err := s.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	httpServer(t, hln, "hub")
	b, err := s.CreateClient(context.Background(), ClientSpec{ClientID: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	old := newStockPeer(t, b.WireGuardConfig)
	get := func(p *stockPeer) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := p.net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(s.HubIP(), 80))
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := get(old); err != nil {
		t.Fatalf("before rotation: %v", err)
	}
	nb, err := s.RotateClientKey(context.Background(), "phone")
	if err != nil {
		t.Fatal(err)
	}
	if nb.WireGuardConfig == b.WireGuardConfig {
		t.Fatal("rotation kept the .conf")
	}
	if err := get(old); err == nil {
		t.Fatal("old WireGuard key still works after rotation")
	}
	old.dev.Close()
	fresh := newStockPeer(t, nb.WireGuardConfig)
	if err := get(fresh); err != nil {
		t.Fatalf("new .conf: %v", err)
	}
}

func TestWireGuardExportAndStaticPeers(t *testing.T) {
	s := newWGHub(t)
	b, err := s.CreateClient(context.Background(), ClientSpec{ClientID: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	exported, err := s.ExportClientConfig(context.Background(), "phone", ExportWireGuard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(exported, b.Secrets.WGPrivateKey.String()) || !strings.Contains(exported, "# PrivateKey") {
		t.Fatalf("export leaks or lacks the key line:\n%s", exported)
	}
	withKey := strings.Replace(exported, "[Interface]\n", "[Interface]\nPrivateKey = "+b.Secrets.WGPrivateKey.String()+"\n", 1)
	got, err := wgconfig.Parse([]byte(withKey))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := wgconfig.Parse([]byte(b.WireGuardConfig))
	gt, _ := got.MarshalText()
	wt, _ := want.MarshalText()
	if !bytes.Equal(gt, wt) {
		t.Fatalf("export + key:\n%s\nbundle:\n%s", gt, wt)
	}

	// A static peer gets its address's traffic like a client.
	kp, _ := GenerateWGKeypair()
	static := WGPeer{PublicKey: kp.PublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.200/32")}}
	if err := s.AddWGPeer(static); err != nil {
		t.Fatal(err)
	}
	if err := s.AddWGPeer(WGPeer{PublicKey: kp.PublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.0/24")}}); err == nil {
		t.Fatal("static peer with a subnet as its address accepted")
	}
	if err := s.AddWGPeer(WGPeer{PublicKey: kp.PublicKey, AllowedIPs: []netip.Prefix{netip.PrefixFrom(b.Entry.AssignedIP, 32)}}); err == nil {
		t.Fatal("static peer on a client's address accepted")
	}
	if peers := s.ListWGPeers(); len(peers) != 1 || peers[0].PublicKey != kp.PublicKey {
		t.Fatalf("ListWGPeers %+v", peers)
	}
	conf := fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = 10.8.0.200/32\nMTU = 1420\n\n[Peer]\nPublicKey = %s\nEndpoint = %s\nAllowedIPs = 10.8.0.0/24\nPersistentKeepalive = 25\n",
		kp.PrivateKey, b.Config.WGServerPublicKey, b.Config.WGEndpoint)
	p := newStockPeer(t, conf)
	hln, err := s.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	httpServer(t, hln, "hub")
	body := httpGet(t, p.net.DialContext, "http://10.8.0.1/")
	if !strings.HasPrefix(body, "hub from 10.8.0.200") {
		t.Fatalf("static peer got %q", body)
	}
	if err := s.RemoveWGPeer(kp.PublicKey); err != nil {
		t.Fatal(err)
	}
	if len(s.ListWGPeers()) != 0 {
		t.Fatal("static peer still listed")
	}
}

// TestWireGuardSessionBehindNewerSessionKeepsItsPackets: with MaxConnections
// 2, a WebSocket session that starts after a client's WireGuard session
// takes the route for its address; the WireGuard session is still found for
// the peer's packets (in the one session table, not a table of its own), so
// they are counted on it and start no new session that would replace the
// WebSocket one.
func TestWireGuardSessionBehindNewerSessionKeepsItsPackets(t *testing.T) {
	h := newWGTestHub(t, nil)
	ctx := context.Background()
	b, err := h.CreateClient(ctx, ClientSpec{ClientID: "dual", Security: &ClientSecurity{MaxConnections: 2}})
	if err != nil {
		t.Fatal(err)
	}
	wgc := wgTestClient(t, b)
	wgc.engine.Inject(udp(wgc.ip, h.HubIP(), "wg first"))
	if _, err := nextFrom(t, h.engine, wgc.ip, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	wsc := connectBundle(t, b)
	waitFor(t, 5*time.Second, "WebSocket and WireGuard sessions", func() bool { return sessionsOf(h.Server, "dual") == 2 })
	wgInfo := func() ClientInfo {
		for _, ci := range h.ListClients() {
			if ci.Transport == "wireguard" {
				return ci
			}
		}
		t.Fatal("no WireGuard session")
		return ClientInfo{}
	}
	before := wgInfo()
	const n = 20
	for i := range n {
		wgc.engine.Inject(udp(wgc.ip, h.HubIP(), fmt.Sprintf("wg %d", i)))
		if _, err := nextFrom(t, h.engine, wgc.ip, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	after := wgInfo()
	if !after.ConnectedSince.Equal(before.ConnectedSince) {
		t.Fatalf("a new WireGuard session started: since %v, was %v", after.ConnectedSince, before.ConnectedSince)
	}
	if got := after.PacketsIn - before.PacketsIn; got < n {
		t.Fatalf("WireGuard session counted %d packets in, want at least %d", got, n)
	}
	if wsc.Status() != StatusConnected || sessionsOf(h.Server, "dual") != 2 {
		t.Fatalf("WebSocket session %v, %d sessions: the WireGuard packets replaced it", wsc.Status(), sessionsOf(h.Server, "dual"))
	}
	// Packets to the address follow the route, the newest session.
	h.engine.Inject(udp(h.HubIP(), wgc.ip, "to the newest"))
	if _, err := next(t, wsc.engine, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
