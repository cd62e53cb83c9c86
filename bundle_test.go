package warren

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	fwdtesting "github.com/warrenvpn/warren/forward/testing"
)

// connectAndFetch connects cfg as it is (netstack mode) and fetches the
// hub's page over the tunnel; it returns the transport used.
func connectAndFetch(t *testing.T, s *Server, cfg ClientConfig, wantFrom netip.Addr) string {
	t.Helper()
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient(bundle.Config): %v", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := c.Connect(ctx)
	if err != nil {
		t.Fatalf("Connect with the bundle's config (transport %q, serverUrl %q, quicAddr %q, wgEndpoint %q): %v",
			cfg.Transport, cfg.ServerURL, cfg.QUICAddr, cfg.WGEndpoint, err)
	}
	body := httpGet(t, c.Dial, fmt.Sprintf("http://%s/", s.HubIP()))
	if want := "hub from " + wantFrom.String() + ":"; !strings.HasPrefix(body, want) {
		t.Fatalf("page %q, want prefix %q", body, want)
	}
	return info.Transport
}

// TestBundleConnectsInEveryTransportMode: for every transportMode, the
// bundle CreateClient returns connects as it is and carries traffic, over a
// transport the hub runs; the native export is the same config without
// secrets; RotateClientKey's bundle connects too.
func TestBundleConnectsInEveryTransportMode(t *testing.T) {
	for _, tc := range []struct {
		mode   TransportMode
		wg     bool // the hub has a WireGuard key
		want   string
		wantWG bool // the bundle has a WireGuard .conf
	}{
		{TransportAll, true, "websocket", true},
		{TransportBoth, false, "websocket", false},
		{TransportWebSocket, true, "websocket", false}, // a key, but WireGuard does not run
		{TransportQUIC, false, "quic", false},
		{TransportWireGuard, true, "wireguard", true},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			s := newNATHub(t, func(c *ServerConfig) {
				c.TransportMode = tc.mode
				if tc.wg {
					kp, err := GenerateWGKeypair()
					if err != nil {
						t.Fatal(err)
					}
					c.WGPrivateKey = kp.PrivateKey
				}
			})
			ln, err := s.Listen("tcp", ":80")
			if err != nil {
				t.Fatal(err)
			}
			httpServer(t, ln, "hub")
			ctx := context.Background()
			b, err := s.CreateClient(ctx, ClientSpec{ClientID: "dev"})
			if err != nil {
				t.Fatal(err)
			}
			// WireGuard settings only when the hub runs WireGuard.
			if got := (b.WireGuardConfig != ""); got != tc.wantWG {
				t.Fatalf("bundle has a .conf: %v, want %v", got, tc.wantWG)
			}
			if got := (b.Config.WGEndpoint != ""); got != tc.wantWG {
				t.Fatalf("bundle has wgEndpoint %q, want one: %v", b.Config.WGEndpoint, tc.wantWG)
			}
			if got := connectAndFetch(t, s, b.Config, b.Entry.AssignedIP); got != tc.want {
				t.Fatalf("connected over %q, want %q", got, tc.want)
			}

			native, err := s.ExportClientConfig(ctx, "dev", ExportNative)
			if err != nil {
				t.Fatal(err)
			}
			want := b.Config
			want.PrivateKey, want.WGPrivateKey = Key{}, Key{}
			wantJSON, err := json.MarshalIndent(want, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			if native != string(wantJSON) {
				t.Fatalf("native export:\n%s\nbundle without secrets:\n%s", native, wantJSON)
			}

			if tc.mode == TransportQUIC || tc.mode == TransportWireGuard {
				// The old session ends with the rotation; the new bundle connects.
				nb, err := s.RotateClientKey(ctx, "dev")
				if err != nil {
					t.Fatal(err)
				}
				if got := connectAndFetch(t, s, nb.Config, nb.Entry.AssignedIP); got != tc.want {
					t.Fatalf("rotated bundle connected over %q, want %q", got, tc.want)
				}
			}
		})
	}
}

// TestStaticPeerAddressIsReserved: CreateClient never hands out a static
// peer's address (from the config or AddWGPeer) until the peer is removed.
func TestStaticPeerAddressIsReserved(t *testing.T) {
	kp1, _ := GenerateWGKeypair()
	kp2, _ := GenerateWGKeypair()
	h := newWGTestHub(t, func(c *ServerConfig) {
		c.WGPeers = []WGPeer{{PublicKey: kp1.PublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.2/32")}}}
	})
	ctx := context.Background()
	a, err := h.CreateClient(ctx, ClientSpec{ClientID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Entry.AssignedIP != netip.MustParseAddr("10.8.0.3") {
		t.Fatalf("first client got %v; 10.8.0.2 is a static peer's", a.Entry.AssignedIP)
	}
	if err := h.AddWGPeer(WGPeer{PublicKey: kp2.PublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.4/32")}}); err != nil {
		t.Fatal(err)
	}
	b, err := h.CreateClient(ctx, ClientSpec{ClientID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Entry.AssignedIP != netip.MustParseAddr("10.8.0.5") {
		t.Fatalf("second client got %v; 10.8.0.4 is a static peer's", b.Entry.AssignedIP)
	}
	if err := h.RemoveWGPeer(kp1.PublicKey); err != nil {
		t.Fatal(err)
	}
	c, err := h.CreateClient(ctx, ClientSpec{ClientID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Entry.AssignedIP != netip.MustParseAddr("10.8.0.2") {
		t.Fatalf("after RemoveWGPeer the freed 10.8.0.2 is not reused: got %v", c.Entry.AssignedIP)
	}
}

// TestAddWGPeerRefusesTakenKeyOrAddress: a static peer with a client's
// WireGuard key or address, or another static peer's, is refused with an
// error that is a *ConfigError and ErrClientExists, and the client's peer
// keeps its address.
func TestAddWGPeerRefusesTakenKeyOrAddress(t *testing.T) {
	h := newWGTestHub(t, nil)
	ctx := context.Background()
	b, err := h.CreateClient(ctx, ClientSpec{ClientID: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := GenerateWGKeypair()
	third, _ := GenerateWGKeypair()
	free := netip.MustParsePrefix("10.8.0.100/32")
	if err := h.AddWGPeer(WGPeer{PublicKey: third.PublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.101/32")}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		peer  WGPeer
		field string
	}{
		{"client's key", WGPeer{PublicKey: b.Entry.WGPublicKey, AllowedIPs: []netip.Prefix{free}}, "wgPeer.publicKey"},
		{"client's address", WGPeer{PublicKey: other.PublicKey, AllowedIPs: []netip.Prefix{netip.PrefixFrom(b.Entry.AssignedIP, 32)}}, "wgPeer.allowedIps[0]"},
		{"static peer's address", WGPeer{PublicKey: other.PublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.101/32")}}, "wgPeer.allowedIps[0]"},
		{"static peer's key", WGPeer{PublicKey: third.PublicKey, AllowedIPs: []netip.Prefix{free}}, "wgPeer.publicKey"},
	} {
		err := h.AddWGPeer(tc.peer)
		var ce *ConfigError
		if !errors.Is(err, ErrClientExists) || !errors.As(err, &ce) || ce.Field != tc.field {
			t.Fatalf("%s: %v, want ErrClientExists and a *ConfigError on %s", tc.name, err, tc.field)
		}
		if strings.Count(err.Error(), "warren:") != 1 {
			t.Fatalf("%s: message %q", tc.name, err)
		}
	}
	ok, allowed := hasWGPeer(h.Server, b.Entry.WGPublicKey)
	if want := netip.PrefixFrom(b.Entry.AssignedIP, 32); !ok || len(allowed) != 1 || allowed[0] != want {
		t.Fatalf("client's peer: present %v, AllowedIPs %v, want [%v]", ok, allowed, want)
	}
	if peers := h.ListWGPeers(); len(peers) != 1 || peers[0].PublicKey != third.PublicKey {
		t.Fatalf("static peers %+v", peers)
	}
	// The client still reaches the hub over WireGuard.
	phone := wgTestClient(t, b)
	phone.engine.Inject(udp(phone.ip, h.HubIP(), "still mine"))
	if _, err := nextFrom(t, h.engine, phone.ip, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestNewServerChecksStaticPeers: every static-peer check runs in NewServer
// and names the peer by its index, with one "warren:" prefix.
func TestNewServerChecksStaticPeers(t *testing.T) {
	hubWG, _ := GenerateWGKeypair()
	k1, _ := GenerateWGKeypair()
	k2, _ := GenerateWGKeypair()
	seedNoise, _ := GenerateKeypair()
	seedWG, _ := GenerateWGKeypair()
	p := func(k Key, addr string) WGPeer {
		return WGPeer{PublicKey: k, AllowedIPs: []netip.Prefix{netip.MustParsePrefix(addr)}}
	}
	ok1 := p(k1.PublicKey, "10.8.0.50/32")
	for _, tc := range []struct {
		name     string
		mutate   func(*ServerConfig)
		field    string
		conflict bool
	}{
		{"endpoint", func(c *ServerConfig) {
			bad := p(k2.PublicKey, "10.8.0.51/32")
			bad.Endpoint = "vpn.example.com:51820"
			c.WGPeers = []WGPeer{ok1, bad}
		}, "wgPeers[1].endpoint", false},
		{"endpoint port 0", func(c *ServerConfig) {
			bad := p(k2.PublicKey, "10.8.0.51/32")
			bad.Endpoint = "192.0.2.1:0"
			c.WGPeers = []WGPeer{ok1, bad}
		}, "wgPeers[1].endpoint", false},
		{"address outside the subnet", func(c *ServerConfig) {
			c.WGPeers = []WGPeer{ok1, p(k2.PublicKey, "10.9.0.5/32")}
		}, "wgPeers[1].allowedIps[0]", false},
		{"second AllowedIP", func(c *ServerConfig) {
			two := p(k2.PublicKey, "10.8.0.51/32")
			two.AllowedIPs = append(two.AllowedIPs, netip.MustParsePrefix("192.168.5.0/24"))
			c.WGPeers = []WGPeer{ok1, two}
		}, "wgPeers[1].allowedIps[1]", false},
		{"hub's own key", func(c *ServerConfig) {
			c.WGPeers = []WGPeer{ok1, p(hubWG.PublicKey, "10.8.0.51/32")}
		}, "wgPeers[1].publicKey", false},
		{"duplicate address", func(c *ServerConfig) {
			c.WGPeers = []WGPeer{ok1, p(k2.PublicKey, "10.8.0.50/32")}
		}, "wgPeers[1].allowedIps[0]", true},
		{"duplicate key", func(c *ServerConfig) {
			c.WGPeers = []WGPeer{ok1, p(k1.PublicKey, "10.8.0.51/32")}
		}, "wgPeers[1].publicKey", true},
		{"seed client's address", func(c *ServerConfig) {
			c.Clients = []ClientEntry{{ClientID: "seed", PublicKey: seedNoise.PublicKey, WGPublicKey: seedWG.PublicKey, AssignedIP: netip.MustParseAddr("10.8.0.51"), Enabled: true}}
			c.WGPeers = []WGPeer{ok1, p(k2.PublicKey, "10.8.0.51/32")}
		}, "wgPeers[1].allowedIps[0]", true},
		{"seed client's key", func(c *ServerConfig) {
			c.Clients = []ClientEntry{{ClientID: "seed", PublicKey: seedNoise.PublicKey, WGPublicKey: seedWG.PublicKey, AssignedIP: netip.MustParseAddr("10.8.0.9"), Enabled: true}}
			c.WGPeers = []WGPeer{ok1, p(seedWG.PublicKey, "10.8.0.51/32")}
		}, "wgPeers[1].publicKey", true},
		{"WireGuard not running", func(c *ServerConfig) {
			c.TransportMode = TransportWebSocket
			c.WGPeers = []WGPeer{ok1}
		}, "wgPeers", false},
	} {
		cfg := serverConfig(t, "10.8.0.0/24")
		cfg.WGPrivateKey = hubWG.PrivateKey
		tc.mutate(&cfg)
		s, err := NewServer(cfg)
		if err == nil {
			s.Close()
			t.Fatalf("%s: NewServer accepted it", tc.name)
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Fatalf("%s: %v, want a *ConfigError on %s", tc.name, err, tc.field)
		}
		if errors.Is(err, ErrClientExists) != tc.conflict {
			t.Fatalf("%s: errors.Is(err, ErrClientExists) = %v", tc.name, !tc.conflict)
		}
		if strings.Count(err.Error(), "warren:") != 1 {
			t.Fatalf("%s: message %q", tc.name, err)
		}
	}
}

// TestSeedClientsSharingAWireGuardKeyAreRefused: two clients cannot share a
// WireGuard key, which would give one the other's address on the device.
func TestSeedClientsSharingAWireGuardKeyAreRefused(t *testing.T) {
	n1, _ := GenerateKeypair()
	n2, _ := GenerateKeypair()
	w, _ := GenerateWGKeypair()
	cfg := serverConfig(t, "10.8.0.0/24")
	cfg.Clients = []ClientEntry{
		{ClientID: "a", PublicKey: n1.PublicKey, WGPublicKey: w.PublicKey, AssignedIP: netip.MustParseAddr("10.8.0.2"), Enabled: true},
		{ClientID: "b", PublicKey: n2.PublicKey, WGPublicKey: w.PublicKey, AssignedIP: netip.MustParseAddr("10.8.0.3"), Enabled: true},
	}
	s, err := NewServer(cfg)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "clients[1].wgPublicKey" {
		if err == nil {
			s.Close()
		}
		t.Fatalf("shared WireGuard key: %v", err)
	}
}

// TestStartWithRegisteredClientsRunsWireGuard: a hub that starts with
// clients in its registry (a restart) comes up and its WireGuard clients
// connect. Start used to deadlock installing their peers.
func TestStartWithRegisteredClientsRunsWireGuard(t *testing.T) {
	wgKeys, _ := GenerateWGKeypair()
	cfg := serverConfig(t, "10.8.0.0/24")
	cfg.WGPrivateKey = wgKeys.PrivateKey
	cfg.Store = NewMemoryStore()
	eng := newEngineForTest()
	cfg.Forwarder = eng
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	b, err := s.CreateClient(context.Background(), ClientSpec{ClientID: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- s.Start(context.Background()) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Start with a registered client and WireGuard did not return")
	}
	// The bundle was made before Start, when the port was not known yet;
	// the export knows it now.
	native, err := s.ExportClientConfig(context.Background(), "phone", ExportNative)
	if err != nil {
		t.Fatal(err)
	}
	var exported ClientConfig
	if err := json.Unmarshal([]byte(native), &exported); err != nil {
		t.Fatal(err)
	}
	b.Config.WGEndpoint = exported.WGEndpoint
	c := wgTestClient(t, b)
	c.engine.Inject(udp(c.ip, s.HubIP(), "after restart"))
	if _, err := nextFrom(t, eng, c.ip, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

func newEngineForTest() *fwdtesting.Engine {
	return fwdtesting.New(fwdtesting.Options{EchoICMP: true})
}
