package warren

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"

	fwdtesting "github.com/warrenvpn/warren/forward/testing"
	"github.com/warrenvpn/warren/internal/packet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testHub is a started hub on loopback with the testing engine.
type testHub struct {
	*Server
	engine *fwdtesting.Engine
}

func newTestHub(t testing.TB, mutate func(*ServerConfig)) *testHub {
	t.Helper()
	kp, err := GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	eng := fwdtesting.New(fwdtesting.Options{EchoICMP: true})
	cfg := ServerConfig{
		ListenAddr: "127.0.0.1:0",
		PrivateKey: kp.PrivateKey,
		Subnet:     netip.MustParsePrefix("10.8.0.0/24"),
		Forwarder:  eng,
		EnableNAT:  true, // tests send to outside addresses and read them off the engine
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &testHub{Server: s, engine: eng}
}

// testClient is a connected client with its own testing engine.
type testClient struct {
	*Client
	engine *fwdtesting.Engine
	ip     netip.Addr
	bundle *ClientBundle
}

func (h *testHub) newClient(t testing.TB, id string, sec *ClientSecurity) *testClient {
	t.Helper()
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: id, Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	return connectBundle(t, b)
}

func connectBundle(t testing.TB, b *ClientBundle) *testClient {
	t.Helper()
	c, eng, err := startClient(b.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := c.Connect(ctx)
	if err != nil {
		t.Fatalf("client %s: connect: %v", b.Entry.ClientID, err)
	}
	if info.AssignedIP.Addr() != b.Entry.AssignedIP {
		t.Fatalf("client %s: assigned %v, registry says %v", b.Entry.ClientID, info.AssignedIP, b.Entry.AssignedIP)
	}
	return &testClient{Client: c, engine: eng, ip: info.AssignedIP.Addr(), bundle: b}
}

func startClient(cfg ClientConfig) (*Client, *fwdtesting.Engine, error) {
	eng := fwdtesting.New(fwdtesting.Options{EchoICMP: true})
	cfg.Forwarder = eng
	// Tests that lose sessions on purpose look at the loss itself; the
	// reconnect tests turn this back on.
	cfg.Reconnect.Disabled = true
	c, err := NewClient(cfg)
	return c, eng, err
}

// next waits for the next packet an engine received.
func next(t testing.TB, e *fwdtesting.Engine, within time.Duration) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	return e.Next(ctx)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func udp(src, dst netip.Addr, payload string) []byte {
	return packet.BuildUDP(netip.AddrPortFrom(src, 4000), netip.AddrPortFrom(dst, 5000), []byte(payload))
}

func TestTwoClientsExchangePacketsThroughHub(t *testing.T) {
	h := newTestHub(t, nil)
	a := h.newClient(t, "alice", nil)
	b := h.newClient(t, "bob", nil)

	for i := range 50 {
		if err := a.engine.Inject(udp(a.ip, b.ip, "hello bob")); err != nil {
			t.Fatal(err)
		}
		got, err := next(t, b.engine, 5*time.Second)
		if err != nil {
			t.Fatalf("packet %d: bob got nothing: %v", i, err)
		}
		src, dst, payload, ok := packet.ParseUDP(got)
		if !ok || src.Addr() != a.ip || dst.Addr() != b.ip || string(payload) != "hello bob" {
			t.Fatalf("bob got %v -> %v %q (ok=%v)", src, dst, payload, ok)
		}
		if err := b.engine.Inject(udp(b.ip, a.ip, "hello alice")); err != nil {
			t.Fatal(err)
		}
		got, err = next(t, a.engine, 5*time.Second)
		if err != nil {
			t.Fatalf("packet %d: alice got nothing: %v", i, err)
		}
		if _, _, payload, _ := packet.ParseUDP(got); string(payload) != "hello alice" {
			t.Fatalf("alice got %q", payload)
		}
	}
	if n := h.engine.Stats().SentPackets; n != 0 {
		t.Errorf("client-to-client packets reached the engine: %d", n)
	}
	// The hub counts a batch after delivering it, so the count may trail the
	// last delivery by a moment.
	waitFor(t, time.Second, "hub PacketsIn = 100", func() bool { return h.Statistics().PacketsIn == 100 })
	infos := h.ListClients()
	if len(infos) != 2 || infos[0].ClientID != "alice" || infos[1].ClientID != "bob" {
		t.Fatalf("ListClients = %+v", infos)
	}
	if infos[0].PacketsIn != 50 || infos[0].PacketsOut != 50 || infos[0].Transport != "websocket" {
		t.Errorf("alice counters: %+v", infos[0])
	}
	if !infos[0].RemoteAddr.Addr().IsLoopback() {
		t.Errorf("alice remote = %v", infos[0].RemoteAddr)
	}
}

func TestPingHubThroughEngine(t *testing.T) {
	h := newTestHub(t, nil)
	a := h.newClient(t, "alice", nil)
	start := time.Now()
	if err := a.engine.Inject(packet.BuildICMPEcho(a.ip, h.HubIP(), 7, 1, []byte("ping"))); err != nil {
		t.Fatal(err)
	}
	got, err := next(t, a.engine, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	typ, id, seq, payload, ok := packet.ParseICMPEcho(got)
	if !ok || typ != 0 || id != 7 || seq != 1 || string(payload) != "ping" {
		t.Fatalf("reply: type %d id %d seq %d %q ok=%v", typ, id, seq, payload, ok)
	}
	t.Logf("echo through the hub in %v", time.Since(start))
}

func TestSpoofedSourceIsDroppedAndCounted(t *testing.T) {
	h := newTestHub(t, nil)
	a := h.newClient(t, "alice", nil)
	b := h.newClient(t, "bob", nil)
	// alice claims bob's address, and an address outside the subnet.
	a.engine.Inject(udp(b.ip, b.ip, "spoof"))
	a.engine.Inject(udp(netip.MustParseAddr("192.0.2.9"), b.ip, "spoof"))
	a.engine.Inject(udp(a.ip, b.ip, "real"))
	got, err := next(t, b.engine, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, p, _ := packet.ParseUDP(got); string(p) != "real" {
		t.Fatalf("bob got %q first; spoofed packets got through", p)
	}
	waitFor(t, time.Second, "spoofed count 2", func() bool { return h.Statistics().Drops.Spoofed == 2 })
	if _, err := next(t, b.engine, 100*time.Millisecond); err == nil {
		t.Fatal("bob got a further packet")
	}
}

func TestDestinationBlockListStopsClientToClient(t *testing.T) {
	h := newTestHub(t, nil)
	b := h.newClient(t, "bob", nil)
	c := h.newClient(t, "carol", nil)
	a := h.newClient(t, "alice", &ClientSecurity{DestinationBlockList: []string{b.ip.String()}})

	a.engine.Inject(udp(a.ip, b.ip, "to bob"))
	a.engine.Inject(udp(a.ip, c.ip, "to carol"))
	got, err := next(t, c.engine, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, p, _ := packet.ParseUDP(got); string(p) != "to carol" {
		t.Fatalf("carol got %q", p)
	}
	if _, err := next(t, b.engine, 200*time.Millisecond); err == nil {
		t.Fatal("bob got a packet alice's block list forbids")
	}
	if n := h.Statistics().Drops.ACL; n != 1 {
		t.Fatalf("ACL drops = %d, want 1", n)
	}
	// Lifting the block list applies to the live session.
	if _, err := h.UpdateClient(context.Background(), "alice", ClientUpdate{Security: &ClientSecurity{}}); err != nil {
		t.Fatal(err)
	}
	a.engine.Inject(udp(a.ip, b.ip, "to bob again"))
	if _, err := next(t, b.engine, 5*time.Second); err != nil {
		t.Fatalf("after update bob still unreachable: %v", err)
	}
}

func TestDestinationAllowListLimitsEngineTraffic(t *testing.T) {
	h := newTestHub(t, nil)
	a := h.newClient(t, "alice", &ClientSecurity{DestinationAllowList: []string{"198.51.100.0/24"}, DestinationBlockList: []string{"198.51.100.7"}})
	a.engine.Inject(udp(a.ip, netip.MustParseAddr("198.51.100.5"), "ok"))
	a.engine.Inject(udp(a.ip, netip.MustParseAddr("198.51.100.7"), "blocked"))
	a.engine.Inject(udp(a.ip, netip.MustParseAddr("203.0.113.1"), "not allowed"))
	got, err := next(t, h.engine, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, dst, _, _ := packet.ParseUDP(got); dst.Addr().String() != "198.51.100.5" {
		t.Fatalf("engine got a packet to %v", dst)
	}
	waitFor(t, time.Second, "2 ACL drops", func() bool { return h.Statistics().Drops.ACL == 2 })
}

func TestDisableClientDropsSessionAndRefusesIt(t *testing.T) {
	h := newTestHub(t, nil)
	a := h.newClient(t, "alice", nil)
	events, cancel := h.Subscribe()
	defer cancel()
	start := time.Now()
	if err := h.DisableClient(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "alice's session ends", func() bool {
		return a.Status() == StatusDisconnected && len(h.ListClients()) == 0
	})
	t.Logf("session dropped %v after DisableClient", time.Since(start))
	waitEvent(t, events, func(e Event) bool {
		d, ok := e.(ClientDisconnected)
		return ok && d.ClientID == "alice" && d.Reason == "client disabled"
	})
	ctx, cancelc := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelc()
	_, err := a.Connect(ctx)
	if !errors.Is(err, ErrClientDisabled) {
		t.Fatalf("reconnect of a disabled client: %v, want ErrClientDisabled", err)
	}
	if err := h.EnableClient(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Connect(ctx); err != nil {
		t.Fatalf("reconnect after EnableClient: %v", err)
	}
}

func waitEvent(t testing.TB, events <-chan Event, match func(Event) bool) Event {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e := <-events:
			if match(e) {
				return e
			}
		case <-timeout:
			t.Fatal("expected event did not come")
		}
	}
}

func TestRotateClientKeyDropsSessionAndRefusesOldKey(t *testing.T) {
	h := newTestHub(t, nil)
	a := h.newClient(t, "alice", nil)
	b := h.newClient(t, "bob", nil)
	nb, err := h.RotateClientKey(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if nb.Config.PrivateKey == a.bundle.Config.PrivateKey || nb.Entry.AssignedIP != a.ip {
		t.Fatalf("rotated bundle: same key or new address %v", nb.Entry.AssignedIP)
	}
	waitFor(t, time.Second, "old session ends", func() bool { return a.Status() == StatusDisconnected })

	old, _, err := startClient(a.bundle.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := old.Connect(ctx); !errors.Is(err, ErrHandshakeRefused) {
		t.Fatalf("old key: %v, want ErrHandshakeRefused", err)
	}
	n := connectBundle(t, nb)
	n.engine.Inject(udp(n.ip, b.ip, "new key"))
	if _, err := next(t, b.engine, 5*time.Second); err != nil {
		t.Fatalf("traffic with the new key: %v", err)
	}
}

func TestUnknownKeyGetsNoAnswer(t *testing.T) {
	h := newTestHub(t, nil)
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := b.Config
	stranger, _ := GenerateKeypair()
	cfg.PrivateKey, cfg.PublicKey = stranger.PrivateKey, stranger.PublicKey
	c, _, err := startClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); !errors.Is(err, ErrHandshakeRefused) {
		t.Fatalf("unknown key: %v, want ErrHandshakeRefused", err)
	}
	if n := h.Statistics().HandshakesFailed; n != 1 {
		t.Fatalf("HandshakesFailed = %d", n)
	}
}

func TestRemoteAddressBlockListRefusesClient(t *testing.T) {
	h := newTestHub(t, nil)
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice", Security: &ClientSecurity{IPBlockList: []string{"127.0.0.0/8"}}})
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := startClient(b.Config)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.Connect(ctx)
	if err == nil || errors.Is(err, ErrHandshakeRefused) {
		t.Fatalf("blocked remote: %v, want a refusal with a reason", err)
	}
	t.Logf("refusal: %v", err)
	// An allow list that holds loopback lets it in.
	if _, err := h.UpdateClient(ctx, "alice", ClientUpdate{Security: &ClientSecurity{IPAllowList: []string{"127.0.0.1"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestConnectionIPBlockListRejectsBeforeHandshake(t *testing.T) {
	h := newTestHub(t, func(c *ServerConfig) { c.ConnectionIPBlockList = []string{"127.0.0.*"} })
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := startClient(b.Config)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err == nil {
		t.Fatal("blocked source connected")
	}
	// The QUIC listener refuses before its handshake too.
	q, _, _ := startClient(withTransport(b.Config, ClientQUIC))
	defer q.Close()
	if _, err := q.Connect(ctx); err == nil {
		t.Fatal("blocked source connected over QUIC")
	}
	st := h.Statistics()
	if st.ConnectionsRejected != 2 || st.Handshakes+st.HandshakesFailed != 0 {
		t.Fatalf("rejected %d, handshakes %d/%d", st.ConnectionsRejected, st.Handshakes, st.HandshakesFailed)
	}
}

func TestDisconnectClientAndEvents(t *testing.T) {
	h := newTestHub(t, nil)
	events, cancel := h.Subscribe()
	defer cancel()
	a := h.newClient(t, "alice", nil)
	ev := waitEvent(t, events, func(e Event) bool { _, ok := e.(ClientConnected); return ok })
	if info := ev.(ClientConnected).Info; info.ClientID != "alice" || info.AssignedIP != a.ip {
		t.Fatalf("ClientConnected %+v", info)
	}
	if err := h.DisconnectClient("alice", "maintenance"); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, func(e Event) bool {
		d, ok := e.(ClientDisconnected)
		return ok && d.Reason == "maintenance"
	})
	if err := h.DisconnectClient("alice", ""); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("second disconnect: %v", err)
	}
	// The client may come back.
	ctx, cancelc := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelc()
	if _, err := a.Connect(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestClientDisconnectAndClose(t *testing.T) {
	h := newTestHub(t, nil)
	a := h.newClient(t, "alice", nil)
	if err := a.Disconnect(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "hub sees the disconnect", func() bool { return len(h.ListClients()) == 0 })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err == nil {
		t.Fatal("second Close returned nil")
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err == nil {
		t.Fatal("second server Close returned nil")
	}
}

func TestServerCloseDisconnectsClients(t *testing.T) {
	h := newTestHub(t, nil)
	a := h.newClient(t, "alice", nil)
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "client sees the hub go", func() bool { return a.Status() == StatusDisconnected })
}

func withTransport(cfg ClientConfig, tr ClientTransport) ClientConfig {
	cfg.Transport = tr
	return cfg
}
