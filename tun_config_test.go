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
		{"tunRoutes[1]", "not a prefix", func(c *ClientConfig) {
			c.TUNRoutes = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), {}}
		}},
		{"tunFwMark", "only by a full tunnel", func(c *ClientConfig) {
			c.TUNFwMark = 7
			c.TUNRoutes = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
		}},
		{"tunFwMark", "only by a full tunnel", func(c *ClientConfig) {
			c.TUNFwMark = 7
			c.ForwardingMode = ForwardNetstack
			c.TUNRoutes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		}},
		{"tunFwMark", "main and local tables", func(c *ClientConfig) {
			c.TUNFwMark = 254
			c.TUNRoutes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		}},
		{"tunHealthCheckMs", "100-86400000", func(c *ClientConfig) {
			c.TUNHealthCheckMs = 99
			c.TUNRoutes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		}},
		{"tunHealthCheckMs", "100-86400000", func(c *ClientConfig) {
			c.TUNHealthCheckMs = -1
			c.TUNRoutes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		}},
		{"tunHealthCheckMs", "only by a full tunnel", func(c *ClientConfig) {
			c.TUNHealthCheckMs = 500
			c.TUNRoutes = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
		}},
	}
	for _, tc := range bad {
		cfg := good
		tc.mutate(&cfg)
		_, err := NewClient(cfg)
		wantConfigError(t, err, tc.field, tc.words)
	}

	checked := good
	checked.TUNRoutes = []netip.Prefix{netip.MustParsePrefix("::/0")}
	checked.TUNHealthCheckMs = 100
	if c, err := NewClient(checked); err != nil {
		t.Fatalf("tunHealthCheckMs 100 with a full tunnel: %v", err)
	} else {
		c.Close()
	}

	// A default route makes a full tunnel: accepted, with the sockets to
	// the hub marked (0x5752 unless tunFwMark says otherwise); over
	// WireGuard a default route in wgAllowedIps does the same.
	wgFull := good
	wgFull.Transport = ClientWireGuard
	wgFull.WGPrivateKey = wg.PrivateKey
	wgFull.WGServerPublicKey = wg.PublicKey
	wgFull.WGEndpoint = "127.0.0.1:51820"
	wgFull.WGAddress = netip.MustParsePrefix("10.8.0.2/32")
	wgFull.WGAllowedIPs = []netip.Prefix{netip.MustParsePrefix("::/0")}
	full := good
	full.TUNRoutes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	marked := full
	marked.TUNFwMark = 0x77
	netstackDefault := full
	netstackDefault.ForwardingMode = ForwardNetstack
	for _, tc := range []struct {
		name string
		cfg  ClientConfig
		mark uint32
	}{
		{"tunRoutes /0", full, 0x5752},
		{"wgAllowedIps /0", wgFull, 0x5752},
		{"tunFwMark", marked, 0x77},
		{"split tunnel", good, 0},
		{"netstack", netstackDefault, 0},
	} {
		c, err := NewClient(tc.cfg)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := c.cfg.fwMark(); got != tc.mark {
			t.Errorf("%s: mark %#x, want %#x", tc.name, got, tc.mark)
		}
		if (c.dialControl() != nil) != (tc.mark != 0) {
			t.Errorf("%s: dial control set %v, want %v", tc.name, c.dialControl() != nil, tc.mark != 0)
		}
		if e, ok := c.engine.(*clientTUN); ok {
			if e.opts.FwMark != tc.mark {
				t.Errorf("%s: engine mark %#x, want %#x", tc.name, e.opts.FwMark, tc.mark)
			}
			// A full tunnel's rules are guarded by the health check (at its
			// default interval), with an event.
			if full := tc.mark != 0; (e.opts.HealthInterval == 0) != full || (e.opts.OnRepair != nil) != full {
				t.Errorf("%s: health interval %v, repair callback %v; want the default and a callback only with a full tunnel", tc.name, e.opts.HealthInterval, e.opts.OnRepair != nil)
			}
		}
		c.Close()
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
		ForwardingMode: ForwardTUN, TUNName: "wcli0", TUNRoutes: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, TUNHealthCheckMs: 250}
	path := t.TempDir() + "/client.json"
	if err := cc.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := LoadClientConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.TUNName != "wcli0" || len(back.TUNRoutes) != 1 || back.TUNRoutes[0] != cc.TUNRoutes[0] || back.ForwardingMode != ForwardTUN || back.TUNHealthCheckMs != 250 {
		t.Fatalf("round trip: %+v", back)
	}
}
