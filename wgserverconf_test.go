package warren

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenvpn/warren/wgconfig"
)

// wgServerConfHub is a started WireGuard hub with clients on, disabled and
// expired, and one static peer. It returns the hub, the WireGuard peers the
// server .conf must hold (by address) and the keys that must be absent.
func wgServerConfHub(t *testing.T) (s *Server, want map[netip.Addr]wgconfig.Peer, absent []Key) {
	t.Helper()
	ctx := context.Background()
	s = newWGHub(t)
	want = make(map[netip.Addr]wgconfig.Peer)
	for _, id := range []string{"on1", "on2", "off", "old"} {
		b, err := s.CreateClient(ctx, ClientSpec{ClientID: id})
		if err != nil {
			t.Fatal(err)
		}
		if b.Entry.WGPublicKey.IsZero() {
			t.Fatalf("client %s has no WireGuard key", id)
		}
		switch id {
		case "off":
			if err := s.DisableClient(ctx, id); err != nil {
				t.Fatal(err)
			}
			absent = append(absent, b.Entry.WGPublicKey)
		case "old":
			past := time.Now().Add(-time.Minute)
			if _, err := s.UpdateClient(ctx, id, ClientUpdate{ExpiresAt: &past}); err != nil {
				t.Fatal(err)
			}
			absent = append(absent, b.Entry.WGPublicKey)
		default:
			ip := b.Entry.AssignedIP
			want[ip] = wgconfig.Peer{PublicKey: wgconfig.Key(b.Entry.WGPublicKey), AllowedIPs: []netip.Prefix{netip.PrefixFrom(ip, 32)}}
		}
	}
	kp, err := GenerateWGKeypair()
	if err != nil {
		t.Fatal(err)
	}
	static := WGPeer{
		PublicKey:           kp.PublicKey,
		AllowedIPs:          []netip.Prefix{netip.MustParsePrefix("10.8.0.200/32")},
		Endpoint:            "192.0.2.7:51820",
		PersistentKeepalive: 30,
	}
	if err := s.AddWGPeer(static); err != nil {
		t.Fatal(err)
	}
	want[static.AllowedIPs[0].Addr()] = wgconfig.Peer{
		PublicKey: wgconfig.Key(kp.PublicKey), AllowedIPs: static.AllowedIPs,
		Endpoint: static.Endpoint, PersistentKeepalive: static.PersistentKeepalive,
	}
	return s, want, absent
}

// checkServerConf parses text as a WireGuard .conf and checks it is s's
// interface with exactly the peers of want.
func checkServerConf(t *testing.T, s *Server, text string, want map[netip.Addr]wgconfig.Peer, absent []Key) wgconfig.Config {
	t.Helper()
	conf, err := wgconfig.Parse([]byte(text))
	if err != nil {
		t.Fatalf("server .conf does not parse: %v\n%s", err, text)
	}
	if conf.Interface.PrivateKey != wgconfig.Key(s.cfg.WGPrivateKey) {
		t.Fatalf("PrivateKey is not the hub's WireGuard key:\n%s", text)
	}
	if !strings.Contains(text, "PrivateKey = "+s.cfg.WGPrivateKey.String()+"\n") {
		t.Fatalf("no PrivateKey line with the hub's key:\n%s", text)
	}
	if got := conf.Interface.Addresses; len(got) != 1 || got[0] != netip.MustParsePrefix("10.8.0.1/24") {
		t.Fatalf("Address = %v, want 10.8.0.1/24", got)
	}
	if port := s.WGAddr().(*net.UDPAddr).Port; conf.Interface.ListenPort != port {
		t.Fatalf("ListenPort = %d, want the device's %d", conf.Interface.ListenPort, port)
	}
	if conf.Interface.MTU != DefaultMTU {
		t.Fatalf("MTU = %d, want %d", conf.Interface.MTU, DefaultMTU)
	}
	if len(conf.Peers) != len(want) {
		t.Fatalf("%d peers, want %d:\n%s", len(conf.Peers), len(want), text)
	}
	for i, p := range conf.Peers {
		if len(p.AllowedIPs) == 0 {
			t.Fatalf("peer %d has no AllowedIPs", i)
		}
		w, ok := want[p.AllowedIPs[0].Addr()]
		if !ok || p.PublicKey != w.PublicKey || !slices.Equal(p.AllowedIPs, w.AllowedIPs) ||
			p.Endpoint != w.Endpoint || p.PersistentKeepalive != w.PersistentKeepalive || p.PresharedKey != nil {
			t.Fatalf("peer %d = %+v, want %+v", i, p, w)
		}
		if i > 0 && !conf.Peers[i-1].AllowedIPs[0].Addr().Less(p.AllowedIPs[0].Addr()) {
			t.Fatalf("peers not ordered by address:\n%s", text)
		}
	}
	for _, k := range absent {
		if strings.Contains(text, k.String()) {
			t.Fatalf("disabled or expired client's key %s is in the .conf:\n%s", k, text)
		}
	}
	return conf
}

func TestWireGuardServerConfig(t *testing.T) {
	ctx := context.Background()
	s, want, absent := wgServerConfHub(t)

	text, err := s.WireGuardServerConfig(ctx, WGServerConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conf := checkServerConf(t, s, text, want, absent)
	if len(conf.Interface.PostUp) != 0 || len(conf.Interface.PostDown) != 0 || strings.Contains(text, "iptables") {
		t.Fatalf("NAT lines without NAT:\n%s", text)
	}

	text, err = s.WireGuardServerConfig(ctx, WGServerConfigOptions{NAT: true, Uplink: "eth9"})
	if err != nil {
		t.Fatal(err)
	}
	conf = checkServerConf(t, s, text, want, absent)
	wantUp := []string{
		"iptables -I FORWARD -i %i -o eth9 -j ACCEPT",
		"iptables -I FORWARD -i eth9 -o %i -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"iptables -t nat -A POSTROUTING -s 10.8.0.0/24 -o eth9 -j MASQUERADE",
	}
	wantDown := []string{
		"iptables -t nat -D POSTROUTING -s 10.8.0.0/24 -o eth9 -j MASQUERADE",
		"iptables -D FORWARD -i eth9 -o %i -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"iptables -D FORWARD -i %i -o eth9 -j ACCEPT",
	}
	if !slices.Equal(conf.Interface.PostUp, wantUp) || !slices.Equal(conf.Interface.PostDown, wantDown) {
		t.Fatalf("NAT lines:\nPostUp %q\nPostDown %q", conf.Interface.PostUp, conf.Interface.PostDown)
	}

	// A registry change shows in the next call.
	if err := s.EnableClient(ctx, "off"); err != nil {
		t.Fatal(err)
	}
	text, err = s.WireGuardServerConfig(ctx, WGServerConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, absent[0].String()) {
		t.Fatalf("re-enabled client missing:\n%s", text)
	}
}

func TestWireGuardServerConfigRefusals(t *testing.T) {
	ctx := context.Background()
	s := newWGHub(t)
	for _, tc := range []struct {
		opts  WGServerConfigOptions
		field string
	}{
		{WGServerConfigOptions{NAT: true}, "uplink"},
		{WGServerConfigOptions{Uplink: "eth0"}, "uplink"},
		{WGServerConfigOptions{NAT: true, Uplink: "eth0; rm -rf /"}, "uplink"},
		{WGServerConfigOptions{NAT: true, Uplink: "averyveryverylongname"}, "uplink"},
	} {
		_, err := s.WireGuardServerConfig(ctx, tc.opts)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%+v: err = %v, want a *ConfigError on %s", tc.opts, err, tc.field)
		}
	}

	// A hub without WireGuard.
	plain := newTestHub(t, nil)
	if _, err := plain.WireGuardServerConfig(ctx, WGServerConfigOptions{}); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("hub without WireGuard: err = %v, want ErrNotSupported", err)
	}

	// Before Start with a port picked at Start, the port is not known; with
	// a fixed port it is.
	wgKeys, err := GenerateWGKeypair()
	if err != nil {
		t.Fatal(err)
	}
	cfg := serverConfig(t, "10.9.0.0/24")
	cfg.WGPrivateKey = wgKeys.PrivateKey
	unstarted, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer unstarted.Close()
	if _, err := unstarted.WireGuardServerConfig(ctx, WGServerConfigOptions{}); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("unstarted hub with wgListenPort 0: err = %v, want ErrNotSupported", err)
	}
	cfg.WGListenPort = 51999
	fixed, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer fixed.Close()
	text, err := fixed.WireGuardServerConfig(ctx, WGServerConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conf, err := wgconfig.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Interface.ListenPort != 51999 || conf.Interface.Addresses[0] != netip.MustParsePrefix("10.9.0.1/24") || len(conf.Peers) != 0 {
		t.Fatalf("unstarted hub's .conf:\n%s", text)
	}
}
