package warren

import (
	"context"
	"crypto/tls"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	fwdtesting "github.com/warrenvpn/warren/forward/testing"
	"github.com/warrenvpn/warren/internal/packet"
	"github.com/warrenvpn/warren/transport/ws"
)

// TestClientReconnectsAfterHubRestart stops the hub and starts a new one on
// the same address, store, keys and certificate: the client comes back by
// itself with the same address, and traffic flows again.
func TestClientReconnectsAfterHubRestart(t *testing.T) {
	for _, tr := range []ClientTransport{ClientWebSocket, ClientQUIC} {
		t.Run(string(tr), func(t *testing.T) {
			cert, err := ws.SelfSignedCert("127.0.0.1")
			if err != nil {
				t.Fatal(err)
			}
			store, err := NewFileStore(filepath.Join(t.TempDir(), "registry.json"))
			if err != nil {
				t.Fatal(err)
			}
			kp, _ := GenerateKeypair()
			start := func(addr string) (*Server, *fwdtesting.Engine) {
				eng := fwdtesting.New(fwdtesting.Options{EchoICMP: true})
				s, err := NewServer(ServerConfig{
					ListenAddr: addr,
					PrivateKey: kp.PrivateKey,
					Subnet:     netip.MustParsePrefix("10.8.0.0/24"),
					TLSConfig:  &tls.Config{Certificates: []tls.Certificate{cert}},
					Store:      store,
					Forwarder:  eng,
				})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Start(context.Background()); err != nil {
					t.Fatal(err)
				}
				return s, eng
			}
			s1, _ := start("127.0.0.1:0")
			addr := s1.Addr().String()
			b, err := s1.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
			if err != nil {
				t.Fatal(err)
			}
			cfg := b.Config
			cfg.Transport = tr
			cfg.Reconnect = ReconnectConfig{InitialBackoffMs: 50, MaxBackoffMs: 400}
			eng := fwdtesting.New(fwdtesting.Options{})
			cfg.Forwarder = eng
			c, err := NewClient(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			events, cancel := c.Subscribe()
			defer cancel()
			ctx, cancelc := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancelc()
			first, err := c.Connect(ctx)
			if err != nil {
				t.Fatal(err)
			}

			s1.Close()
			waitEvent(t, events, func(e Event) bool { _, ok := e.(ClientDisconnected); return ok })
			s2, eng2 := start(addr)
			defer s2.Close()
			ev := waitEvent(t, events, func(e Event) bool { _, ok := e.(Reconnected); return ok }).(Reconnected)
			if ev.Info.AssignedIP != first.AssignedIP || c.Status() != StatusConnected {
				t.Fatalf("reconnected with %v (was %v), status %v", ev.Info.AssignedIP, first.AssignedIP, c.Status())
			}
			if ev.Info.Transport != string(tr) {
				t.Fatalf("reconnected over %s", ev.Info.Transport)
			}
			eng.Inject(packet.BuildICMPEcho(first.AssignedIP.Addr(), s2.HubIP(), 1, 1, []byte("back")))
			if _, err := next(t, eng2, 5*time.Second); err != nil {
				t.Fatalf("no traffic after reconnect: %v", err)
			}
			if _, err := next(t, eng, 5*time.Second); err != nil {
				t.Fatalf("no echo after reconnect: %v", err)
			}
		})
	}
}

// TestDeliberateDisconnectNeverReconnects: Disconnect and Close end the
// session for good.
func TestDeliberateDisconnectNeverReconnects(t *testing.T) {
	h := newTestHub(t, nil)
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := b.Config
	cfg.Reconnect = ReconnectConfig{InitialBackoffMs: 10, MaxBackoffMs: 20}
	cfg.Forwarder = fwdtesting.New(fwdtesting.Options{})
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // ten times the backoff
	if c.Status() != StatusDisconnected || len(h.ListClients()) != 0 {
		t.Fatalf("status %v, hub sessions %d after Disconnect", c.Status(), len(h.ListClients()))
	}
	// A hub-side disconnect is a loss: the client comes back.
	if _, err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.DisconnectClient("alice", "maintenance"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "client back after a hub-side disconnect", func() bool {
		return c.Status() == StatusConnected && len(h.ListClients()) == 1
	})
}
