package wgconfig_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/warrenvpn/warren/wgconfig"
)

func TestClientConfigRejectsBadParams(t *testing.T) {
	good := func() wgconfig.ClientParams {
		return wgconfig.ClientParams{
			PrivateKey:      testKey(1),
			Address:         prefixes("10.8.0.2/32"),
			ServerPublicKey: testKey(2),
			Endpoint:        "vpn.example.com:443",
			AllowedIPs:      prefixes("10.8.0.0/24"),
		}
	}
	if _, err := wgconfig.ClientConfig(good()); err != nil {
		t.Fatalf("good params: %v", err)
	}
	tests := []struct {
		field  string
		modify func(*wgconfig.ClientParams)
	}{
		{"PrivateKey", func(p *wgconfig.ClientParams) { p.PrivateKey = wgconfig.Key{} }},
		{"Address", func(p *wgconfig.ClientParams) { p.Address = nil }},
		{"Address[1]", func(p *wgconfig.ClientParams) { p.Address = append(p.Address, netip.Prefix{}) }},
		{"DNS[0]", func(p *wgconfig.ClientParams) { p.DNS = []netip.Addr{{}} }},
		{"MTU", func(p *wgconfig.ClientParams) { p.MTU = 65536 }},
		{"ServerPublicKey", func(p *wgconfig.ClientParams) { p.ServerPublicKey = wgconfig.Key{} }},
		{"Endpoint", func(p *wgconfig.ClientParams) { p.Endpoint = "" }},
		{"Endpoint", func(p *wgconfig.ClientParams) { p.Endpoint = "vpn.example.com" }},
		{"Endpoint", func(p *wgconfig.ClientParams) { p.Endpoint = "vpn example.com:1" }},
		{"AllowedIPs", func(p *wgconfig.ClientParams) { p.AllowedIPs = nil }},
		{"PersistentKeepalive", func(p *wgconfig.ClientParams) { p.PersistentKeepalive = -5 }},
	}
	for _, tt := range tests {
		p := good()
		tt.modify(&p)
		_, err := wgconfig.ClientConfig(p)
		var ce *wgconfig.ConfigError
		if !errors.As(err, &ce) || ce.Field != tt.field {
			t.Errorf("%s: ClientConfig error = %v, want a *ConfigError for that field", tt.field, err)
		}
	}
}

func TestClientConfigCopiesSlices(t *testing.T) {
	p := wgconfig.ClientParams{
		PrivateKey:      testKey(1),
		Address:         prefixes("10.8.0.2/32"),
		ServerPublicKey: testKey(2),
		Endpoint:        "192.0.2.1:51820",
		AllowedIPs:      prefixes("0.0.0.0/0"),
	}
	c, err := wgconfig.ClientConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	p.Address[0] = netip.MustParsePrefix("10.9.9.9/32")
	p.AllowedIPs[0] = netip.MustParsePrefix("10.0.0.0/8")
	if c.Interface.Addresses[0].String() != "10.8.0.2/32" || c.Peers[0].AllowedIPs[0].String() != "0.0.0.0/0" {
		t.Errorf("config shares slices with the params: %+v", c)
	}
}

func TestServerConfigRejectsBadParams(t *testing.T) {
	good := func() wgconfig.ServerParams {
		return wgconfig.ServerParams{
			PrivateKey: testKey(1),
			Address:    netip.MustParsePrefix("10.8.0.1/24"),
			Peers:      []wgconfig.Peer{{PublicKey: testKey(2), AllowedIPs: prefixes("10.8.0.2/32")}},
		}
	}
	if _, err := wgconfig.ServerConfig(good()); err != nil {
		t.Fatalf("good params: %v", err)
	}
	tests := []struct {
		field  string
		modify func(*wgconfig.ServerParams)
	}{
		{"PrivateKey", func(p *wgconfig.ServerParams) { p.PrivateKey = wgconfig.Key{} }},
		{"Address", func(p *wgconfig.ServerParams) { p.Address = netip.Prefix{} }},
		{"ListenPort", func(p *wgconfig.ServerParams) { p.ListenPort = -1 }},
		{"ListenPort", func(p *wgconfig.ServerParams) { p.ListenPort = 65536 }},
		{"MTU", func(p *wgconfig.ServerParams) { p.MTU = 10 }},
		{"Peers[0].AllowedIPs", func(p *wgconfig.ServerParams) { p.Peers[0].AllowedIPs = nil }},
		{"Peers[0].PublicKey", func(p *wgconfig.ServerParams) { p.Peers[0].PublicKey = wgconfig.Key{} }},
		{"Peers[1].PublicKey", func(p *wgconfig.ServerParams) { p.Peers = append(p.Peers, p.Peers[0]) }},
		{"Peers[0].Endpoint", func(p *wgconfig.ServerParams) { p.Peers[0].Endpoint = "1.2.3.4" }},
		{"NATInterface", func(p *wgconfig.ServerParams) { p.NATInterface = "eth0; rm -rf /" }},
		{"NATInterface", func(p *wgconfig.ServerParams) { p.NATInterface = "a-very-long-interface-name" }},
	}
	for _, tt := range tests {
		p := good()
		tt.modify(&p)
		_, err := wgconfig.ServerConfig(p)
		var ce *wgconfig.ConfigError
		if !errors.As(err, &ce) || ce.Field != tt.field {
			t.Errorf("%s: ServerConfig error = %v, want a *ConfigError for that field", tt.field, err)
		}
	}
}
