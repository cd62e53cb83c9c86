package warren

import (
	"context"
	"errors"
	"github.com/warrenvpn/warren/internal/packet"
	"github.com/warrenvpn/warren/telemetry"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/warrenvpn/warren/transport/wg"
)

// TestWireGuardConnectionIPBlockListRejectsBeforeHandshake: a WireGuard
// client whose source address ConnectionIPBlockList names gets no
// handshake; its datagrams are counted in ConnectionsRejected.
func TestWireGuardConnectionIPBlockListRejectsBeforeHandshake(t *testing.T) {
	h := newWGTestHub(t, func(c *ServerConfig) { c.ConnectionIPBlockList = []string{"127.0.0.0/8"} })
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "blocked"})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := startClient(withTransport(b.Config, ClientWireGuard))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect from a blocked source: %v, want no handshake (deadline exceeded)", err)
	}
	if n := h.Statistics().ConnectionsRejected; n == 0 {
		t.Fatal("ConnectionsRejected = 0, want the blocked client's datagrams counted")
	}
	for _, p := range h.wgDevice().Peers() {
		if !p.LastHandshake.IsZero() || p.RxBytes != 0 {
			t.Fatalf("blocked source reached wireguard-go: %+v", p)
		}
	}
	if n := sessionsOf(h.Server, "blocked"); n != 0 {
		t.Fatalf("blocked client has %d sessions", n)
	}
}

// TestWireGuardClientIPBlockListRefusesPeerEndpoint: a client whose
// IPBlockList names the address its WireGuard peer sends from starts no
// session, and its packets are ACL drops; UpdateClient lifting the list
// lets the next packet in.
func TestWireGuardClientIPBlockListRefusesPeerEndpoint(t *testing.T) {
	h := newWGTestHub(t, nil)
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "phone", Security: &ClientSecurity{IPBlockList: []string{"127.0.0.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	// The handshake is wireguard-go's and completes; the session does not.
	c := wgTestClient(t, b)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		c.engine.Inject(udp(c.ip, h.HubIP(), "blocked"))
		if p, err := nextFrom(t, h.engine, c.ip, 200*time.Millisecond); err == nil {
			t.Fatalf("packet from a blocked endpoint reached the hub: %x", p)
		}
		if n := sessionsOf(h.Server, "phone"); n != 0 {
			t.Fatalf("client has %d sessions from a blocked endpoint", n)
		}
	}
	if h.Statistics().Drops.ACL == 0 {
		t.Fatal("packets from a blocked endpoint not counted as ACL drops")
	}

	if _, err := h.UpdateClient(context.Background(), "phone", ClientUpdate{Security: &ClientSecurity{IPAllowList: []string{"127.0.0.1"}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "allowed endpoint's packet reaches the hub", func() bool {
		c.engine.Inject(udp(c.ip, h.HubIP(), "allowed"))
		_, err := nextFrom(t, h.engine, c.ip, 200*time.Millisecond)
		return err == nil
	})
	if n := sessionsOf(h.Server, "phone"); n != 1 {
		t.Fatalf("client has %d sessions, want 1", n)
	}
}

// TestUpdateClientIPBlockListEndsLiveWireGuardSession: a live WireGuard
// session whose client's new IPBlockList names its endpoint ends at once,
// and nothing passes either way afterwards.
func TestUpdateClientIPBlockListEndsLiveWireGuardSession(t *testing.T) {
	h := newWGTestHub(t, nil)
	events, cancel := h.Subscribe()
	defer cancel()
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	c := wgTestClient(t, b)
	c.engine.Inject(udp(c.ip, h.HubIP(), "before"))
	if _, err := nextFrom(t, h.engine, c.ip, 10*time.Second); err != nil {
		t.Fatalf("before the update: %v", err)
	}

	if _, err := h.UpdateClient(context.Background(), "phone", ClientUpdate{Security: &ClientSecurity{IPBlockList: []string{"127.0.0.1"}}}); err != nil {
		t.Fatal(err)
	}
	d := waitDisconnected(t, events, 5*time.Second, "phone")["phone"]
	if !strings.Contains(d.Reason, "not allowed") {
		t.Fatalf("session ended with %q, want the remote address refused", d.Reason)
	}
	acl := h.Statistics().Drops.ACL
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		c.engine.Inject(udp(c.ip, h.HubIP(), "after"))
		if p, err := nextFrom(t, h.engine, c.ip, 200*time.Millisecond); err == nil {
			t.Fatalf("packet from a now blocked endpoint reached the hub: %x", p)
		}
	}
	if h.Statistics().Drops.ACL == acl {
		t.Fatal("packets after the update not counted as ACL drops")
	}
	if n := sessionsOf(h.Server, "phone"); n != 0 {
		t.Fatalf("client has %d sessions after its endpoint was blocked", n)
	}
}

// TestWireGuardPeerRoamingToBlockedEndpointEndsSession: a WireGuard peer
// whose session is live and that roams to an address its client's
// IPBlockList names loses its session within the device's poll; its later
// packets are ACL drops; roaming back to an allowed address starts a new
// session.
func TestWireGuardPeerRoamingToBlockedEndpointEndsSession(t *testing.T) {
	h := newWGTestHub(t, nil)
	events, cancel := h.Subscribe()
	defer cancel()
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "roamer", Security: &ClientSecurity{IPBlockList: []string{"127.0.0.3"}}})
	if err != nil {
		t.Fatal(err)
	}
	ip := b.Entry.AssignedIP
	bind := newSourceBind("127.0.0.2", "127.0.0.3")
	peer, err := wg.New(wg.Config{PrivateKey: b.Config.WGPrivateKey, Receive: func([][]byte) {}, Bind: bind})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	hubWG := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), h.wgDevice().Port())
	err = peer.AddPeer(wg.Peer{PublicKey: b.Config.WGServerPublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.0/24")}, Endpoint: hubWG})
	if err != nil {
		t.Fatal(err)
	}
	send := func(payload string) { peer.Send([][]byte{udp(ip, h.HubIP(), payload)}) }

	waitFor(t, 20*time.Second, "peer from 127.0.0.2 reaches the hub", func() bool {
		send("from .2")
		_, err := nextFrom(t, h.engine, ip, 200*time.Millisecond)
		return err == nil
	})
	if got := sessionRemote(h.Server, "roamer"); got.Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("session remote %v, want 127.0.0.2", got)
	}

	bind.use(1)
	send("from .3")
	d := waitDisconnected(t, events, 10*time.Second, "roamer")["roamer"]
	if !strings.Contains(d.Reason, "127.0.0.3 not allowed") {
		t.Fatalf("session ended with %q, want 127.0.0.3 refused", d.Reason)
	}
	// Drain what passed before the poll noticed the roam.
	for {
		if _, err := nextFrom(t, h.engine, ip, 300*time.Millisecond); err != nil {
			break
		}
	}
	acl := h.Statistics().Drops.ACL
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		send("blocked")
		if p, err := nextFrom(t, h.engine, ip, 200*time.Millisecond); err == nil {
			t.Fatalf("packet from the blocked endpoint reached the hub: %x", p)
		}
		if n := sessionsOf(h.Server, "roamer"); n != 0 {
			t.Fatalf("roamer has %d sessions from a blocked endpoint", n)
		}
	}
	if h.Statistics().Drops.ACL == acl {
		t.Fatal("packets from the blocked endpoint not counted as ACL drops")
	}

	bind.use(0)
	waitFor(t, 10*time.Second, "peer back on 127.0.0.2 reaches the hub", func() bool {
		send("back")
		_, err := nextFrom(t, h.engine, ip, 200*time.Millisecond)
		return err == nil
	})
	if got := sessionRemote(h.Server, "roamer"); got.Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("new session remote %v, want 127.0.0.2", got)
	}
}

// sessionRemote is the remote address of a client's one live session.
func sessionRemote(s *Server, id string) netip.AddrPort {
	for _, ci := range s.ListClients() {
		if ci.ClientID == id {
			return ci.RemoteAddr
		}
	}
	return netip.AddrPort{}
}

// sourceBind is a conn.Bind with one UDP socket per local address, so a
// test picks the address a WireGuard peer sends from (and makes it roam).
type sourceBind struct {
	addrs []netip.Addr
	cur   atomic.Int32

	mu    sync.Mutex
	conns []*net.UDPConn
}

func newSourceBind(addrs ...string) *sourceBind {
	b := &sourceBind{}
	for _, a := range addrs {
		b.addrs = append(b.addrs, netip.MustParseAddr(a))
	}
	return b
}

// use makes packets leave from the i-th address.
func (b *sourceBind) use(i int) { b.cur.Store(int32(i)) }

func (b *sourceBind) Open(uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conns != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	var fns []conn.ReceiveFunc
	for _, a := range b.addrs {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
		if err != nil {
			for _, c := range b.conns {
				c.Close()
			}
			b.conns = nil
			return nil, 0, err
		}
		b.conns = append(b.conns, c)
		fns = append(fns, func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			n, from, err := c.ReadFromUDPAddrPort(packets[0])
			if err != nil {
				return 0, err
			}
			sizes[0] = n
			eps[0] = &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(from.Addr().Unmap(), from.Port())}
			return 1, nil
		})
	}
	return fns, uint16(b.conns[0].LocalAddr().(*net.UDPAddr).Port), nil
}

func (b *sourceBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, c := range b.conns {
		errs = append(errs, c.Close())
	}
	b.conns = nil
	return errors.Join(errs...)
}

func (b *sourceBind) SetMark(uint32) error { return nil }

func (b *sourceBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	b.mu.Lock()
	if b.conns == nil {
		b.mu.Unlock()
		return net.ErrClosed
	}
	c := b.conns[b.cur.Load()]
	b.mu.Unlock()
	for _, p := range bufs {
		if _, err := c.WriteToUDPAddrPort(p, ep.(*conn.StdNetEndpoint).AddrPort); err != nil {
			return err
		}
	}
	return nil
}

func (b *sourceBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return &conn.StdNetEndpoint{AddrPort: ap}, nil
}

func (b *sourceBind) BatchSize() int { return 1 }

// TestUpdateClientIPBlockListEndsLiveStreamSessions: a WebSocket or QUIC
// session from an address the client's new IPBlockList names ends at once,
// and the client learns it was refused.
func TestUpdateClientIPBlockListEndsLiveStreamSessions(t *testing.T) {
	for _, tr := range []ClientTransport{ClientWebSocket, ClientQUIC} {
		t.Run(string(tr), func(t *testing.T) {
			h := newTestHub(t, nil)
			events, cancel := h.Subscribe()
			defer cancel()
			b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "laptop"})
			if err != nil {
				t.Fatal(err)
			}
			b.Config.Transport = tr
			if tr == ClientQUIC {
				b.Config.ServerURL = h.QUICAddr().String()
			}
			c := connectBundle(t, b)
			clientEvents, cancelClient := c.Subscribe()
			defer cancelClient()

			if _, err := h.UpdateClient(context.Background(), "laptop", ClientUpdate{Security: &ClientSecurity{IPBlockList: []string{"127.0.0.1"}}}); err != nil {
				t.Fatal(err)
			}
			d := waitDisconnected(t, events, 5*time.Second, "laptop")["laptop"]
			if !errors.Is(d.Err, ErrClientRefused) {
				t.Fatalf("hub: session ended with %q (%v), want ErrClientRefused", d.Reason, d.Err)
			}
			timeout := time.After(5 * time.Second)
			for {
				select {
				case e := <-clientEvents:
					if cd, ok := e.(ClientDisconnected); ok {
						if !errors.Is(cd.Err, ErrClientRefused) {
							t.Fatalf("client: disconnected with %q (%v), want ErrClientRefused", cd.Reason, cd.Err)
						}
						return
					}
				case <-timeout:
					t.Fatal("client saw no ClientDisconnected")
				}
			}
		})
	}
}

// TestPacketReachesWireGuardPeerWithoutSession: a packet for a WireGuard
// client whose hub session has ended (or not yet started) while its peer is
// installed goes to the peer through the device, not to Drops.NoRoute.
func TestPacketReachesWireGuardPeerWithoutSession(t *testing.T) {
	h := newWGTestHub(t, nil)
	events, cancel := h.Subscribe()
	defer cancel()
	mk := func(id string) *testClient {
		b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: id})
		if err != nil {
			t.Fatal(err)
		}
		return wgTestClient(t, b)
	}
	a, b := mk("a"), mk("b")
	// b says something so its session certainly exists, then the hub ends
	// that session; b's peer stays installed and b sends nothing more.
	b.engine.Inject(udp(b.ip, h.HubIP(), "hello"))
	if _, err := nextFrom(t, h.engine, b.ip, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b's session", func() bool { return sessionsOf(h.Server, "b") == 1 })
	if err := h.DisconnectClient("b", "test"); err != nil {
		t.Fatal(err)
	}
	waitDisconnected(t, events, 5*time.Second, "b")
	if n := sessionsOf(h.Server, "b"); n != 0 {
		t.Fatalf("b has %d sessions after DisconnectClient", n)
	}

	noRoute := h.Statistics().Drops.NoRoute
	if err := a.engine.Inject(udp(a.ip, b.ip, "to b")); err != nil {
		t.Fatal(err)
	}
	got, err := next(t, b.engine, 5*time.Second)
	if err != nil {
		t.Fatalf("b got nothing (no-route drops %d -> %d): %v", noRoute, h.Statistics().Drops.NoRoute, err)
	}
	if _, _, payload, ok := packet.ParseUDP(got); !ok || string(payload) != "to b" {
		t.Fatalf("b got %x", got)
	}
}

// TestWireGuardTelemetryIsUnknownWithLastHandshake: a WireGuard session has
// no keepalives of Warren's to measure, so its health is unknown, never
// invented, and it was last heard at the peer's last handshake.
func TestWireGuardTelemetryIsUnknownWithLastHandshake(t *testing.T) {
	h := newWGTestHub(t, nil)
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	c := wgTestClient(t, b)
	c.engine.Inject(udp(c.ip, h.HubIP(), "hello"))
	if _, err := nextFrom(t, h.engine, c.ip, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	var q telemetry.Quality
	waitFor(t, 5*time.Second, "the peer's handshake time", func() bool {
		ts, err := h.ClientTelemetry("phone")
		if err != nil || len(ts) != 1 {
			return false
		}
		q = ts[0].Quality
		return !q.LastHeard.IsZero()
	})
	if q.Health != telemetry.HealthUnknown || q.RTT.Samples != 0 {
		t.Fatalf("WireGuard quality %+v, want health unknown and no RTT samples", q)
	}
}
