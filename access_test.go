package warren

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	fwdtesting "github.com/warrenvpn/warren/forward/testing"
)

// newWGTestHub is newTestHub with WireGuard running too.
func newWGTestHub(t testing.TB, mutate func(*ServerConfig)) *testHub {
	t.Helper()
	wgKeys, err := GenerateWGKeypair()
	if err != nil {
		t.Fatal(err)
	}
	return newTestHub(t, func(c *ServerConfig) {
		c.WGPrivateKey = wgKeys.PrivateKey
		if mutate != nil {
			mutate(c)
		}
	})
}

// hasWGPeer reports whether the hub's WireGuard device has a peer with key k,
// and its AllowedIPs.
func hasWGPeer(s *Server, k Key) (bool, []netip.Prefix) {
	for _, p := range s.wgDevice().Peers() {
		if Key(p.PublicKey) == k {
			return true, p.AllowedIPs
		}
	}
	return false, nil
}

// wgTestClient connects a bundle over WireGuard with a testing engine.
func wgTestClient(t testing.TB, b *ClientBundle) *testClient {
	t.Helper()
	c, eng, err := startClient(withTransport(b.Config, ClientWireGuard))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := c.Connect(ctx)
	if err != nil {
		t.Fatalf("client %s over WireGuard: %v", b.Entry.ClientID, err)
	}
	return &testClient{Client: c, engine: eng, ip: info.AssignedIP.Addr(), bundle: b}
}

// sessionsOf counts a client's live sessions on the hub.
func sessionsOf(s *Server, id string) int {
	n := 0
	for _, ci := range s.ListClients() {
		if ci.ClientID == id {
			n++
		}
	}
	return n
}

// nextFrom waits for the next packet the engine receives from src, skipping others.
func nextFrom(t testing.TB, e *fwdtesting.Engine, src netip.Addr, within time.Duration) ([]byte, error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		p, err := next(t, e, time.Until(deadline))
		if err != nil {
			return nil, err
		}
		if from, _, _, ok := fwdtesting.ParseUDP(p); ok && from.Addr() == src {
			return p, nil
		}
	}
}

// waitDisconnected waits for the hub's ClientDisconnected events of every
// id, in any order, and returns them by client ID.
func waitDisconnected(t testing.TB, events <-chan Event, within time.Duration, ids ...string) map[string]ClientDisconnected {
	t.Helper()
	got := map[string]ClientDisconnected{}
	timeout := time.After(within)
	for len(got) < len(ids) {
		select {
		case e := <-events:
			if d, ok := e.(ClientDisconnected); ok && slices.Contains(ids, d.ClientID) {
				if _, seen := got[d.ClientID]; !seen {
					got[d.ClientID] = d
				}
			}
		case <-timeout:
			t.Fatalf("ClientDisconnected within %v: got %v of %v", within, slices.Collect(maps.Keys(got)), ids)
		}
	}
	return got
}

// TestExpiryEndsAccessOnEveryTransport: at ExpiresAt the WebSocket, QUIC and
// WireGuard sessions end, the WireGuard peer leaves the device, and packets
// the WireGuard client sends afterwards start no new session.
func TestExpiryEndsAccessOnEveryTransport(t *testing.T) {
	h := newWGTestHub(t, nil)
	events, cancel := h.Subscribe()
	defer cancel()
	ctx := context.Background()
	// Room for three connects on a loaded machine before the deadline.
	expires := time.Now().Add(6 * time.Second)
	clients := map[ClientTransport]*testClient{}
	for _, tr := range []ClientTransport{ClientWebSocket, ClientQUIC, ClientWireGuard} {
		b, err := h.CreateClient(ctx, ClientSpec{ClientID: "c-" + string(tr), ExpiresAt: expires})
		if err != nil {
			t.Fatal(err)
		}
		if tr == ClientWireGuard {
			clients[tr] = wgTestClient(t, b)
		} else {
			clients[tr] = clientWith(t, b, tr)
		}
	}
	// Every session carries traffic before the deadline.
	for tr, c := range clients {
		c.engine.Inject(udp(c.ip, h.HubIP(), "before"))
		if _, err := nextFrom(t, h.engine, c.ip, 10*time.Second); err != nil {
			t.Fatalf("%s before expiry: %v", tr, err)
		}
	}
	if time.Now().After(expires) {
		t.Fatal("connecting took longer than the expiry margin")
	}

	var ids []string
	for tr := range clients {
		ids = append(ids, "c-"+string(tr))
	}
	for id, d := range waitDisconnected(t, events, 30*time.Second, ids...) {
		if d.At.Before(expires) {
			t.Fatalf("%s ended at %v, before ExpiresAt %v (%s)", id, d.At, expires, d.Reason)
		}
		t.Logf("%s: session ended %v after ExpiresAt (%s)", id, d.At.Sub(expires), d.Reason)
	}
	for _, tr := range []ClientTransport{ClientWebSocket, ClientQUIC} {
		c := clients[tr]
		waitFor(t, 10*time.Second, string(tr)+" client sees its session end", func() bool { return c.Status() == StatusDisconnected })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Connect(ctx)
		cancel()
		if !errors.Is(err, ErrClientExpired) {
			t.Fatalf("%s reconnect after expiry: %v, want ErrClientExpired", tr, err)
		}
	}

	wgc := clients[ClientWireGuard]
	if ok, _ := hasWGPeer(h.Server, wgc.bundle.Entry.WGPublicKey); ok {
		t.Fatal("expired client's WireGuard peer is still on the device")
	}
	// The WireGuard client keeps sending; before the fix its next packet
	// started a new session. Give it a few seconds to try.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		wgc.engine.Inject(udp(wgc.ip, h.HubIP(), "after"))
		if p, err := nextFrom(t, h.engine, wgc.ip, 200*time.Millisecond); err == nil {
			t.Fatalf("expired WireGuard client's packet reached the hub: %x", p)
		}
		if n := sessionsOf(h.Server, "c-wireguard"); n != 0 {
			t.Fatalf("expired WireGuard client has %d sessions again", n)
		}
	}
}

// TestUpdateClientExpiryAppliesToLiveSessions: an ExpiresAt moved into the
// past ends live sessions and removes the WireGuard peer at once; one set or
// moved into the future ends them then, not at the old time; a renewed client
// gets its peer back.
func TestUpdateClientExpiryAppliesToLiveSessions(t *testing.T) {
	h := newWGTestHub(t, nil)
	events, cancel := h.Subscribe()
	defer cancel()
	ctx := context.Background()

	// Past: at once, on WebSocket and WireGuard.
	wb, err := h.CreateClient(ctx, ClientSpec{ClientID: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	ws := connectBundle(t, wb)
	pb, err := h.CreateClient(ctx, ClientSpec{ClientID: "phone", Security: &ClientSecurity{MaxConnections: 2}})
	if err != nil {
		t.Fatal(err)
	}
	phone := wgTestClient(t, pb)
	phone.engine.Inject(udp(phone.ip, h.HubIP(), "hello"))
	if _, err := nextFrom(t, h.engine, phone.ip, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Minute)
	for _, id := range []string{"laptop", "phone"} {
		if _, err := h.UpdateClient(ctx, id, ClientUpdate{ExpiresAt: &past}); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := hasWGPeer(h.Server, pb.Entry.WGPublicKey); ok {
		t.Fatal("WireGuard peer still on the device after UpdateClient expired it")
	}
	waitDisconnected(t, events, 5*time.Second, "laptop", "phone")
	waitFor(t, 5*time.Second, "laptop sees its session end", func() bool { return ws.Status() == StatusDisconnected })

	// Renewed: the peer comes back and the client connects again.
	later := time.Now().Add(time.Hour)
	if _, err := h.UpdateClient(ctx, "phone", ClientUpdate{ExpiresAt: &later}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := hasWGPeer(h.Server, pb.Entry.WGPublicKey); !ok {
		t.Fatal("renewed client has no WireGuard peer")
	}
	if _, err := h.UpdateClient(ctx, "laptop", ClientUpdate{ExpiresAt: &later}); err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if _, err := ws.Connect(cctx); err != nil {
		t.Fatalf("renewed client: %v", err)
	}

	// Future: set on a client that had none, then moved later; the session
	// ends at the later time.
	bb, err := h.CreateClient(ctx, ClientSpec{ClientID: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	bob := connectBundle(t, bb)
	t1 := time.Now().Add(2 * time.Second)
	if _, err := h.UpdateClient(ctx, "bob", ClientUpdate{ExpiresAt: &t1}); err != nil {
		t.Fatal(err)
	}
	t2 := time.Now().Add(4 * time.Second)
	if _, err := h.UpdateClient(ctx, "bob", ClientUpdate{ExpiresAt: &t2}); err != nil {
		t.Fatal(err)
	}
	d := waitDisconnected(t, events, 20*time.Second, "bob")["bob"]
	if d.At.Before(t2) {
		t.Fatalf("bob ended at %v, before the moved ExpiresAt %v", d.At, t2)
	}
	t.Logf("bob ended %v after ExpiresAt", d.At.Sub(t2))
	waitFor(t, 5*time.Second, "bob sees its session end", func() bool { return bob.Status() == StatusDisconnected })
}

// TestMaxConnectionsReplacesOldest: with MaxConnections 2 a third session
// ends the oldest, which is told; the two newest stay, both send, and packets
// toward the client's address go to the newest (then, when it leaves, to the
// one before).
func TestMaxConnectionsReplacesOldest(t *testing.T) {
	h := newTestHub(t, nil)
	ctx := context.Background()
	b, err := h.CreateClient(ctx, ClientSpec{ClientID: "roamer", Security: &ClientSecurity{MaxConnections: 2}})
	if err != nil {
		t.Fatal(err)
	}
	c1 := connectBundle(t, b)
	ev1, cancel1 := c1.Subscribe()
	defer cancel1()
	c2 := connectBundle(t, b)
	if c1.Status() != StatusConnected || sessionsOf(h.Server, "roamer") != 2 {
		t.Fatalf("two sessions within the limit: c1 %v, %d sessions", c1.Status(), sessionsOf(h.Server, "roamer"))
	}
	c3 := connectBundle(t, b)

	d := waitEvent(t, ev1, func(e Event) bool { _, ok := e.(ClientDisconnected); return ok }).(ClientDisconnected)
	if !strings.Contains(d.Reason, "replaced") {
		t.Fatalf("oldest session told %q", d.Reason)
	}
	waitFor(t, 5*time.Second, "oldest session ends", func() bool { return c1.Status() == StatusDisconnected })
	waitFor(t, 5*time.Second, "two sessions left", func() bool { return sessionsOf(h.Server, "roamer") == 2 })
	if c2.Status() != StatusConnected || c3.Status() != StatusConnected {
		t.Fatalf("newest sessions: %v %v", c2.Status(), c3.Status())
	}
	for i, c := range []*testClient{c2, c3} {
		c.engine.Inject(udp(c.ip, h.HubIP(), "from "+string(rune('2'+i))))
		p, err := nextFrom(t, h.engine, c.ip, 5*time.Second)
		if err != nil {
			t.Fatalf("c%d: %v", i+2, err)
		}
		if _, _, payload, _ := fwdtesting.ParseUDP(p); string(payload) != "from "+string(rune('2'+i)) {
			t.Fatalf("c%d sent %q", i+2, payload)
		}
	}
	h.engine.Inject(udp(h.HubIP(), b.Entry.AssignedIP, "to newest"))
	if _, err := next(t, c3.engine, 5*time.Second); err != nil {
		t.Fatalf("newest session gets the client's packets: %v", err)
	}
	if err := c3.Disconnect(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "one session left", func() bool { return sessionsOf(h.Server, "roamer") == 1 })
	h.engine.Inject(udp(h.HubIP(), b.Entry.AssignedIP, "to c2"))
	if _, err := next(t, c2.engine, 5*time.Second); err != nil {
		t.Fatalf("remaining session gets the client's packets: %v", err)
	}
}

// TestUpdateClientLowerMaxConnectionsEndsOldest: lowering MaxConnections
// ends the oldest live sessions beyond it at once.
func TestUpdateClientLowerMaxConnectionsEndsOldest(t *testing.T) {
	h := newTestHub(t, nil)
	ctx := context.Background()
	b, err := h.CreateClient(ctx, ClientSpec{ClientID: "roamer", Security: &ClientSecurity{MaxConnections: 3}})
	if err != nil {
		t.Fatal(err)
	}
	c1, c2, c3 := connectBundle(t, b), connectBundle(t, b), connectBundle(t, b)
	if n := sessionsOf(h.Server, "roamer"); n != 3 {
		t.Fatalf("%d sessions, want 3", n)
	}
	if _, err := h.UpdateClient(ctx, "roamer", ClientUpdate{Security: &ClientSecurity{MaxConnections: 1}}); err != nil {
		t.Fatal(err)
	}
	// The clients learn it from the Disconnect; the hub's table lets go of
	// a session when its reader has ended, a moment later.
	waitFor(t, 5*time.Second, "the two oldest end", func() bool {
		return c1.Status() == StatusDisconnected && c2.Status() == StatusDisconnected && sessionsOf(h.Server, "roamer") == 1
	})
	if n := sessionsOf(h.Server, "roamer"); n != 1 || c3.Status() != StatusConnected {
		t.Fatalf("after lowering: %d sessions, newest %v", n, c3.Status())
	}
	c3.engine.Inject(udp(c3.ip, h.HubIP(), "still here"))
	if _, err := nextFrom(t, h.engine, c3.ip, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestWireGuardSessionCountsTowardMaxConnections: a client's WireGuard peer
// is one of its sessions. With room for two, a WebSocket session and the
// WireGuard one coexist; a second WebSocket session then replaces the oldest,
// the first WebSocket one, and the WireGuard session stays.
func TestWireGuardSessionCountsTowardMaxConnections(t *testing.T) {
	h := newWGTestHub(t, nil)
	ctx := context.Background()
	b, err := h.CreateClient(ctx, ClientSpec{ClientID: "dual", Security: &ClientSecurity{MaxConnections: 2}})
	if err != nil {
		t.Fatal(err)
	}
	ws1 := connectBundle(t, b)
	wgc := wgTestClient(t, b)
	wgc.engine.Inject(udp(wgc.ip, h.HubIP(), "wg"))
	if _, err := nextFrom(t, h.engine, wgc.ip, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "WebSocket and WireGuard sessions", func() bool { return sessionsOf(h.Server, "dual") == 2 })
	if ws1.Status() != StatusConnected {
		t.Fatal("WireGuard session replaced a WebSocket session within the limit")
	}
	connectBundle(t, b)
	waitFor(t, 5*time.Second, "oldest (WebSocket) session ends", func() bool { return ws1.Status() == StatusDisconnected })
	var transports []string
	for _, ci := range h.ListClients() {
		transports = append(transports, ci.Transport)
	}
	if len(transports) != 2 || !strings.Contains(strings.Join(transports, ","), "wireguard") {
		t.Fatalf("sessions after the third: %v", transports)
	}
}
