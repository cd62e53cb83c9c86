package warren

import (
	"net/netip"
	"strings"
	"testing"
)

func TestTUNConfigFieldsAreValidated(t *testing.T) {
	bad := []struct {
		field, words string
		mutate       func(*ServerConfig)
	}{
		{"tunName", "1-15 bytes", func(c *ServerConfig) { c.TUNName = "sixteen-bytes-xx" }},
		{"tunName", "interface name", func(c *ServerConfig) { c.TUNName = "has space" }},
		{"tunName", "interface name", func(c *ServerConfig) { c.TUNName = "a/b" }},
		{"tunName", "interface name", func(c *ServerConfig) { c.TUNName = "-x" }},
		{"tunHealthCheckMs", "100-86400000", func(c *ServerConfig) { c.TUNHealthCheckMs = 50 }},
		{"tunHealthCheckMs", "100-86400000", func(c *ServerConfig) { c.TUNHealthCheckMs = -1 }},
	}
	for _, tc := range bad {
		cfg := serverConfig(t, "10.8.0.0/24")
		cfg.ForwardingMode = ForwardTUN
		tc.mutate(&cfg)
		_, err := NewServer(cfg)
		wantConfigError(t, err, tc.field, tc.words)
	}

	cfg := serverConfig(t, "10.8.0.0/24")
	cfg.ForwardingMode = ForwardTUN
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.cfg.TUNHealthCheckMs; got != 60000 {
		t.Errorf("default tunHealthCheckMs %d, want 60000", got)
	}
	s.Close()
	cfg.TUNName, cfg.TUNHealthCheckMs = "whub_1.a-b", 200
	if s, err = NewServer(cfg); err != nil {
		t.Fatalf("a valid tunName and tunHealthCheckMs: %v", err)
	}
	if e := s.newTUNEngine(); e.Name() != "whub_1.a-b" || e.Table() != "warren_whub_1.a-b" {
		t.Errorf("engine device %q table %q, want whub_1.a-b and warren_whub_1.a-b", e.Name(), e.Table())
	}
	s.Close()
}

func TestClientTUNConfigFieldsAreValidated(t *testing.T) {
	kp, _ := GenerateKeypair()
	wg, _ := GenerateWGKeypair()
	good := ClientConfig{ServerURL: "wss://127.0.0.1:1", ServerPublicKey: kp.PublicKey, PrivateKey: kp.PrivateKey, ForwardingMode: ForwardTUN}
	c, err := NewClient(good)
	if err != nil {
		t.Fatalf("forwardingMode tun: %v", err)
	}
	c.Close()
	bad := []struct {
		field, words string
		mutate       func(*ClientConfig)
	}{
		{"tunName", "interface name", func(c *ClientConfig) { c.TUNName = "x:y" }},
		{"tunRoutes[1]", "not built yet", func(c *ClientConfig) {
			c.TUNRoutes = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("0.0.0.0/0")}
		}},
		{"wgAllowedIps[0]", "not built yet", func(c *ClientConfig) {
			c.Transport = ClientWireGuard
			c.WGPrivateKey = wg.PrivateKey
			c.WGServerPublicKey = wg.PublicKey
			c.WGEndpoint = "127.0.0.1:51820"
			c.WGAddress = netip.MustParsePrefix("10.8.0.2/32")
			c.WGAllowedIPs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		}},
	}
	for _, tc := range bad {
		cfg := good
		tc.mutate(&cfg)
		_, err := NewClient(cfg)
		wantConfigError(t, err, tc.field, tc.words)
	}
}

func TestTUNConfigFieldsLoadFromJSON(t *testing.T) {
	base := serverJSON(t, "")
	text := strings.Replace(base, `"subnet"`, `"forwardingMode": "tun", "tunName": "whub0", "tunHealthCheckMs": 250, "subnet"`, 1)
	cfg, err := LoadServerConfig(writeConfig(t, text))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TUNName != "whub0" || cfg.TUNHealthCheckMs != 250 {
		t.Fatalf("loaded tunName %q tunHealthCheckMs %d", cfg.TUNName, cfg.TUNHealthCheckMs)
	}
	_, err = LoadServerConfig(writeConfig(t, strings.Replace(text, `"tunName"`, `"tunNmae"`, 1)))
	wantConfigError(t, err, "tunNmae", "unknown field")

	kp, _ := GenerateKeypair()
	cc := ClientConfig{ServerURL: "wss://127.0.0.1:1", ServerPublicKey: kp.PublicKey, PrivateKey: kp.PrivateKey,
		ForwardingMode: ForwardTUN, TUNName: "wcli0", TUNRoutes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	path := t.TempDir() + "/client.json"
	if err := cc.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := LoadClientConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.TUNName != "wcli0" || len(back.TUNRoutes) != 1 || back.TUNRoutes[0] != cc.TUNRoutes[0] || back.ForwardingMode != ForwardTUN {
		t.Fatalf("round trip: %+v", back)
	}
}
