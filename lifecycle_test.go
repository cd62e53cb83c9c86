package warren

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenvpn/warren/codec"
	fwdtesting "github.com/warrenvpn/warren/forward/testing"
)

// reconnectingClient connects a new client of h with fast reconnects and
// returns it with a subscription to its events.
func reconnectingClient(t *testing.T, h *testHub, id string, tr ClientTransport) (*Client, <-chan Event) {
	t.Helper()
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: id, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := withTransport(b.Config, tr)
	cfg.Reconnect = ReconnectConfig{InitialBackoffMs: 20, MaxBackoffMs: 50}
	cfg.Forwarder = fwdtesting.New(fwdtesting.Options{})
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	events, cancel := c.Subscribe()
	t.Cleanup(cancel)
	ctx, cancelc := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelc()
	if _, err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	return c, events
}

func disconnectedEvent(t *testing.T, events <-chan Event) ClientDisconnected {
	t.Helper()
	return waitEvent(t, events, func(e Event) bool { _, ok := e.(ClientDisconnected); return ok }).(ClientDisconnected)
}

// TestDisconnectReasonTextDoesNotDecide: the words of DisconnectClient's
// reason are for people; the code says "kicked", so the client comes back.
func TestDisconnectReasonTextDoesNotDecide(t *testing.T) {
	for _, tr := range []ClientTransport{ClientWebSocket, ClientQUIC} {
		t.Run(string(tr), func(t *testing.T) {
			h := newTestHub(t, nil)
			c, events := reconnectingClient(t, h, "alice", tr)
			if err := h.DisconnectClient("alice", "client disabled for maintenance"); err != nil {
				t.Fatal(err)
			}
			d := disconnectedEvent(t, events)
			if !errors.Is(d.Err, ErrKicked) || !strings.Contains(d.Reason, "client disabled for maintenance") {
				t.Fatalf("ClientDisconnected{Reason: %q, Err: %v}, want ErrKicked with the hub's words", d.Reason, d.Err)
			}
			waitEvent(t, events, func(e Event) bool { _, ok := e.(Reconnected); return ok })
			waitFor(t, 5*time.Second, "alice connected again", func() bool {
				return c.Status() == StatusConnected && len(h.ListClients()) == 1
			})
		})
	}
}

// TestPermanentDisconnectStopsReconnecting: a client the hub ends for good
// learns why (errors.Is on the event's Err) and makes no further attempt.
func TestPermanentDisconnectStopsReconnecting(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		do   func(*testHub) error
		want error
	}{
		{"disable", func(h *testHub) error { return h.DisableClient(ctx, "alice") }, ErrClientDisabled},
		{"rotate", func(h *testHub) error { _, err := h.RotateClientKey(ctx, "alice"); return err }, ErrKeyRotated},
		{"remove", func(h *testHub) error { return h.RemoveClient(ctx, "alice") }, ErrClientRemoved},
		{"expire", func(h *testHub) error {
			past := time.Now().Add(-time.Second)
			_, err := h.UpdateClient(ctx, "alice", ClientUpdate{ExpiresAt: &past})
			return err
		}, ErrClientExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHub(t, nil)
			hubEvents, cancel := h.Subscribe()
			defer cancel()
			c, events := reconnectingClient(t, h, "alice", ClientWebSocket)
			before := h.Statistics()
			if err := tc.do(h); err != nil {
				t.Fatal(err)
			}
			d := disconnectedEvent(t, events)
			if !errors.Is(d.Err, tc.want) {
				t.Fatalf("client's ClientDisconnected{Reason: %q, Err: %v}, want %v", d.Reason, d.Err, tc.want)
			}
			hd := disconnectedEvent(t, hubEvents)
			if !errors.Is(hd.Err, tc.want) {
				t.Fatalf("hub's ClientDisconnected{Reason: %q, Err: %v}, want %v", hd.Reason, hd.Err, tc.want)
			}
			// What must hold is an absence: no attempt in 50 backoffs.
			time.Sleep(time.Second)
			after := h.Statistics()
			if n := after.Handshakes + after.HandshakesFailed - before.Handshakes - before.HandshakesFailed; n != 0 || c.Status() != StatusDisconnected {
				t.Fatalf("%d handshakes after the hub ended the client for good; status %v", n, c.Status())
			}
		})
	}
}

// TestRefusedConnectNamesTheCause: a hub that refuses a known client at the
// handshake says why, and Connect's error matches the cause.
func TestRefusedConnectNamesTheCause(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := newTestHub(t, nil)
	for _, tc := range []struct {
		id   string
		sec  *ClientSecurity
		prep func(id string) error
		want error
	}{
		{"disabled", nil, func(id string) error { return h.DisableClient(ctx, id) }, ErrClientDisabled},
		{"expired", nil, func(id string) error {
			past := time.Now().Add(-time.Second)
			_, err := h.UpdateClient(ctx, id, ClientUpdate{ExpiresAt: &past})
			return err
		}, ErrClientExpired},
		{"blocked", &ClientSecurity{IPBlockList: []string{"127.0.0.0/8"}}, func(string) error { return nil }, ErrClientRefused},
	} {
		b, err := h.CreateClient(ctx, ClientSpec{ClientID: tc.id, Security: tc.sec, ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if err := tc.prep(tc.id); err != nil {
			t.Fatal(err)
		}
		c, _, err := startClient(b.Config)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Connect(ctx)
		c.Close()
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Connect: %v, want %v", tc.id, err, tc.want)
		}
		code, ok := disconnectCode(err)
		if !ok || !permanentCode(code) {
			t.Errorf("%s: Connect's error carries code %v (%v): a reconnect would try again", tc.id, code, ok)
		}
	}
}

// TestHubSeesClientDisconnectAsPeerClosed: a client's Disconnect reaches the
// hub with its code.
func TestHubSeesClientDisconnectAsPeerClosed(t *testing.T) {
	h := newTestHub(t, nil)
	a := h.newClient(t, "alice", nil)
	events, cancel := h.Subscribe()
	defer cancel()
	if err := a.Disconnect(); err != nil {
		t.Fatal(err)
	}
	d := disconnectedEvent(t, events)
	if !errors.Is(d.Err, ErrPeerClosed) {
		t.Fatalf("hub's ClientDisconnected{Reason: %q, Err: %v}, want ErrPeerClosed", d.Reason, d.Err)
	}
}

// TestDisconnectCodesDecideReconnect: the reconnect policy per code, and a
// code from a newer peer (or none at all) counts as unspecified: transient.
func TestDisconnectCodesDecideReconnect(t *testing.T) {
	permanent := map[codec.DisconnectCode]error{
		codec.DisconnectDisabled:   ErrClientDisabled,
		codec.DisconnectKeyRotated: ErrKeyRotated,
		codec.DisconnectExpired:    ErrClientExpired,
		codec.DisconnectRemoved:    ErrClientRemoved,
		codec.DisconnectRefused:    ErrClientRefused,
		codec.DisconnectReplaced:   ErrSessionReplaced,
	}
	transient := map[codec.DisconnectCode]error{
		codec.DisconnectShuttingDown:    ErrServerShutdown,
		codec.DisconnectKicked:          ErrKicked,
		codec.DisconnectDeadPeer:        ErrDeadPeer,
		codec.DisconnectProtocolError:   ErrProtocol,
		codec.DisconnectConnectionLimit: ErrConnectionLimit,
		codec.DisconnectClosed:          ErrPeerClosed,
	}
	for code := codec.DisconnectCode(0); code.Known(); code++ {
		want, perm := permanent[code]
		if !perm {
			want = transient[code]
		}
		if want == nil && code != codec.DisconnectUnspecified {
			t.Errorf("code %v has no sentinel in this test", code)
		}
		r := parseDisconnect(codec.AppendDisconnect(nil, code, "words"))
		if r.code != code || r.text != "words" || permanentCode(code) != perm {
			t.Errorf("code %v: parsed %+v, permanent %v, want %v", code, r, permanentCode(code), perm)
		}
		if got := errors.Unwrap(r.err()); got != want {
			t.Errorf("code %v: error unwraps to %v, want %v", code, got, want)
		}
	}
	for _, p := range [][]byte{nil, {200, 'n', 'e', 'w'}, {byte(codec.DisconnectClosed) + 1}} {
		r := parseDisconnect(p)
		if r.code != codec.DisconnectUnspecified || permanentCode(r.code) || errors.Unwrap(r.err()) != nil {
			t.Errorf("payload %v: %+v, want unspecified and transient", p, r)
		}
	}
}

// within runs f and fails the test if it has not returned after d. f must
// not use t: it may outlive the test.
func within(t *testing.T, d time.Duration, what string, f func()) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(d):
		t.Fatalf("%s: still blocked after %v", what, d)
		return 0
	}
}

// silentTCP accepts connections, reads whatever comes and never answers: a
// hub that hangs in the middle of the TLS handshake. accepted gets a value
// per connection.
func silentTCP(t *testing.T) (addr string, accepted <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			ch <- struct{}{}
			wg.Add(1)
			go func() { defer wg.Done(); _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), ch
}

// silentUDP is a UDP port that reads and never answers: a QUIC or WireGuard
// hub that is not there. sent gets a value per datagram received.
func silentUDP(t *testing.T) (addr string, sent <-chan struct{}) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().String(), ch
}

// TestCloseCancelsConnect: Close does not wait for a Connect that has no
// deadline and a hub that never answers; it cancels it and returns at once,
// and that Connect returns net.ErrClosed.
func TestCloseCancelsConnect(t *testing.T) {
	hub, _ := GenerateKeypair()
	me, _ := GenerateKeypair()
	wgHub, _ := GenerateWGKeypair()
	wgMe, _ := GenerateWGKeypair()
	for _, tr := range []ClientTransport{ClientWebSocket, ClientQUIC, ClientWireGuard} {
		t.Run(string(tr), func(t *testing.T) {
			cfg := ClientConfig{
				Transport:       tr,
				ServerPublicKey: hub.PublicKey,
				PrivateKey:      me.PrivateKey,
				ServerCertHash:  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
				Forwarder:       fwdtesting.New(fwdtesting.Options{}),
			}
			var attempted <-chan struct{}
			switch tr {
			case ClientWebSocket:
				var addr string
				addr, attempted = silentTCP(t)
				cfg.ServerURL = "wss://" + addr
			case ClientQUIC:
				cfg.QUICAddr, attempted = silentUDP(t)
			case ClientWireGuard:
				cfg.WGEndpoint, attempted = silentUDP(t)
				cfg.WGPrivateKey, cfg.WGServerPublicKey = wgMe.PrivateKey, wgHub.PublicKey
				cfg.WGAddress = netip.MustParsePrefix("10.8.0.2/32")
			}
			c, err := NewClient(cfg)
			if err != nil {
				t.Fatal(err)
			}
			connected := make(chan error, 1)
			go func() {
				_, err := c.Connect(context.Background())
				connected <- err
			}()
			select {
			case <-attempted:
			case <-time.After(10 * time.Second):
				t.Fatal("Connect sent nothing to the hub")
			}
			var st Status
			within(t, 2*time.Second, "Status during Connect", func() { st = c.Status() })
			if st != StatusConnecting && st != StatusHandshaking {
				t.Errorf("status %v during Connect", st)
			}
			var cerr error
			took := within(t, 5*time.Second, "Close during Connect", func() { cerr = c.Close() })
			t.Logf("Close took %v", took)
			if cerr != nil || took > 2*time.Second {
				t.Errorf("Close with a Connect in progress: %v after %v", cerr, took)
			}
			select {
			case err := <-connected:
				if !errors.Is(err, net.ErrClosed) || !errors.Is(err, context.Canceled) {
					t.Fatalf("Connect after Close: %v, want net.ErrClosed and context.Canceled", err)
				}
				t.Logf("Connect: %v", err)
			case <-time.After(2 * time.Second):
				t.Fatal("Connect did not return after Close")
			}
		})
	}
}

// TestDisconnectCancelsConnect: Disconnect during a Connect ends the attempt;
// the Client stays usable.
func TestDisconnectCancelsConnect(t *testing.T) {
	hub, _ := GenerateKeypair()
	me, _ := GenerateKeypair()
	addr, attempted := silentTCP(t)
	c, err := NewClient(ClientConfig{
		ServerURL:       "wss://" + addr,
		ServerPublicKey: hub.PublicKey,
		PrivateKey:      me.PrivateKey,
		ServerCertHash:  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		Forwarder:       fwdtesting.New(fwdtesting.Options{}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	connected := make(chan error, 1)
	go func() {
		_, err := c.Connect(context.Background())
		connected <- err
	}()
	select {
	case <-attempted:
	case <-time.After(10 * time.Second):
		t.Fatal("Connect sent nothing to the hub")
	}
	var derr error
	within(t, 2*time.Second, "Disconnect during Connect", func() { derr = c.Disconnect() })
	if derr != nil {
		t.Fatalf("Disconnect during Connect: %v", derr)
	}
	select {
	case err := <-connected:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Connect after Disconnect: %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Connect did not return after Disconnect")
	}
	if st := c.Status(); st != StatusDisconnected {
		t.Fatalf("status %v", st)
	}
}

// TestServerAccessorsDuringStartAndClose calls the read-only methods while
// Start and Close run; under -race it catches a field read outside the lock
// (Statistics read the QUIC listener after unlocking while Start set it).
func TestServerAccessorsDuringStartAndClose(t *testing.T) {
	kp, _ := GenerateKeypair()
	wgKeys, _ := GenerateWGKeypair()
	accessors := []func(s *Server) bool{
		func(s *Server) bool { _ = s.Statistics(); return false },
		func(s *Server) bool { return s.Status().Status == StatusRunning },
		func(s *Server) bool { return s.Addr() != nil },
		func(s *Server) bool { return s.QUICAddr() != nil },
		func(s *Server) bool { return s.WGAddr() != nil },
		func(s *Server) bool { _ = s.ListClients(); return false },
	}
	for range 5 {
		s, err := NewServer(ServerConfig{
			ListenAddr:    "127.0.0.1:0",
			PrivateKey:    kp.PrivateKey,
			Subnet:        netip.MustParsePrefix("10.8.0.0/24"),
			TransportMode: TransportAll,
			WGPrivateKey:  wgKeys.PrivateKey,
			Forwarder:     fwdtesting.New(fwdtesting.Options{}),
		})
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg, running sync.WaitGroup
		var saw [6]atomic.Bool
		for i, f := range accessors {
			wg.Add(1)
			running.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; ; n++ {
					if n == 10 {
						running.Done()
					}
					select {
					case <-stop:
						return
					default:
					}
					if f(s) {
						saw[i].Store(true)
					}
				}
			}()
		}
		// Start contends for the lock with the accessors in their loops.
		running.Wait()
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the accessors see the started hub", func() bool {
			return saw[1].Load() && saw[2].Load() && saw[3].Load() && saw[4].Load()
		})
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		close(stop)
		wg.Wait()
	}
}
