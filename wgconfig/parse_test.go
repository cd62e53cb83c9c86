package wgconfig_test

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/warrenvpn/warren/wgconfig"
)

func roundTripConfigs(t testing.TB) map[string]wgconfig.Config {
	return map[string]wgconfig.Config{
		"minimal":         {Interface: wgconfig.Interface{PrivateKey: testKey(1)}},
		"client":          goldenClient(t),
		"server":          goldenServer(t, ""),
		"server with NAT": goldenServer(t, "eth0"),
		"IPv6 only": {
			Interface: wgconfig.Interface{
				PrivateKey: testKey(20),
				Addresses:  prefixes("fd00::2/64", "2001:db8:1::2/128"),
				DNS:        addrs("2606:4700:4700::1111"),
				DNSSearch:  []string{"corp.example", "example.com."},
			},
			Peers: []wgconfig.Peer{{
				PublicKey:  testKey(21),
				Endpoint:   "[2001:db8::1]:443",
				AllowedIPs: prefixes("::/0"),
			}},
		},
		"every field": {
			Interface: wgconfig.Interface{
				PrivateKey: testKey(30),
				Addresses:  prefixes("10.0.0.2/24", "fd00::2/64"),
				ListenPort: 51000,
				DNS:        addrs("1.1.1.1", "::1"),
				DNSSearch:  []string{"lan"},
				MTU:        1280,
				Extra: []wgconfig.KV{
					{Key: "PreUp", Value: "echo one"},
					{Key: "Table", Value: "off"},
					{Key: "FwMark", Value: "0x1234"},
					{Key: "PreDown", Value: "echo a=b; echo c"},
					{Key: "PreUp", Value: "echo two"},
					{Key: "SaveConfig", Value: "false"},
				},
				PostUp:   []string{"ip rule add table 200", "ip route add default dev %i table 200"},
				PostDown: []string{"ip rule del table 200"},
			},
			Peers: []wgconfig.Peer{
				{PublicKey: testKey(31), PresharedKey: ptr(wgconfig.Key{}), Endpoint: "203.0.113.9:1", AllowedIPs: prefixes("10.0.0.0/24"), PersistentKeepalive: 65535},
				{PublicKey: testKey(32), Endpoint: "host-1.example_net.com.:65535"},
				{PublicKey: testKey(33), AllowedIPs: prefixes("192.168.0.1/24", "::ffff:10.1.2.3/128")},
			},
		},
	}
}

func TestParseMarshalTextRoundTrips(t *testing.T) {
	for name, want := range roundTripConfigs(t) {
		t.Run(name, func(t *testing.T) {
			text, err := want.MarshalText()
			if err != nil {
				t.Fatal(err)
			}
			got, err := wgconfig.Parse(text)
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, text)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse(MarshalText(x)) != x\ngot  %+v\nwant %+v\ntext:\n%s", got, want, text)
			}
			var u wgconfig.Config
			if err := u.UnmarshalText(text); err != nil || !reflect.DeepEqual(u, want) {
				t.Errorf("UnmarshalText: %v, or config differs", err)
			}
		})
	}
}

func TestParseReadsHandWrittenConfig(t *testing.T) {
	text := "\ufeff# Laptop config, written by hand\r\n" +
		"[interface]   # the local side\r\n" +
		"privatekey=" + testKey(1).String() + "\r\n" +
		"ADDRESS = 10.8.0.2/24,fd00::2/64\r\n" +
		"  Address   =   10.9.0.2 \r\n" +
		"dns = 1.1.1.1 8.8.8.8, corp.example\r\n" +
		"Dns=9.9.9.9\r\n" +
		"\r\n" +
		"mtu = 1380\r\n" +
		"Table = off\r\n" +
		"postup = echo up # not part of the command\r\n" +
		"PostUp = logger wg up\r\n" +
		"\r\n" +
		"    [PEER]\r\n" +
		"  # the hub\r\n" +
		"PublicKey = " + testKey(2).String() + "   \r\n" +
		"endpoint = vpn.example.com:51820\r\n" +
		"allowedips = 10.8.0.0/24 , 192.168.1.0/24\r\n" +
		"AllowedIps = ::/0\r\n" +
		"persistentKeepalive = off\r\n" +
		"[Peer]\r\n" +
		"PublicKey = " + testKey(3).String() + "\r\n" +
		"AllowedIPs =\r\n" +
		"PersistentKeepalive = 15"
	got, err := wgconfig.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	want := wgconfig.Config{
		Interface: wgconfig.Interface{
			PrivateKey: testKey(1),
			Addresses:  prefixes("10.8.0.2/24", "fd00::2/64", "10.9.0.2/32"),
			DNS:        addrs("1.1.1.1", "8.8.8.8", "9.9.9.9"),
			DNSSearch:  []string{"corp.example"},
			MTU:        1380,
			Extra:      []wgconfig.KV{{Key: "Table", Value: "off"}},
			PostUp:     []string{"echo up", "logger wg up"},
		},
		Peers: []wgconfig.Peer{
			{
				PublicKey:  testKey(2),
				Endpoint:   "vpn.example.com:51820",
				AllowedIPs: prefixes("10.8.0.0/24", "192.168.1.0/24", "::/0"),
			},
			{PublicKey: testKey(3), PersistentKeepalive: 15},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse:\ngot  %+v\nwant %+v", got, want)
	}
}

func TestParseRejectsBadLines(t *testing.T) {
	priv := "PrivateKey = " + testKey(1).String()
	pub := "PublicKey = " + testKey(2).String()
	tests := []struct {
		name     string
		text     string // lines joined by "\n"
		line     int
		key      string
		keyError bool // whether the error wraps ErrInvalidKey
	}{
		{"bad base64 key", "[Interface]\nPrivateKey = not*base64*at*all", 2, "PrivateKey", true},
		{"key of wrong length", "[Interface]\n" + priv + "\n[Peer]\nPublicKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==", 4, "PublicKey", true},
		{"short preshared key", "[Interface]\n" + priv + "\n[Peer]\n" + pub + "\nPresharedKey = AAAA", 5, "PresharedKey", true},
		{"all-zero private key", "[Interface]\nPrivateKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 2, "PrivateKey", true},
		{"bad CIDR", "[Interface]\n" + priv + "\nAddress = 10.0.0.1/33", 3, "Address", false},
		{"bad CIDR in AllowedIPs", "[Interface]\n" + priv + "\n[Peer]\n" + pub + "\nAllowedIPs = 10.0.0.0/8, 10.1.0/16", 5, "AllowedIPs", false},
		{"empty list entry", "[Interface]\n" + priv + "\n[Peer]\n" + pub + "\nAllowedIPs = 10.0.0.0/8,,10.1.0.0/16", 5, "AllowedIPs", false},
		{"bad port", "[Interface]\n" + priv + "\nListenPort = 70000", 3, "ListenPort", false},
		{"port with sign", "[Interface]\n" + priv + "\nListenPort = +5", 3, "ListenPort", false},
		{"bad MTU", "[Interface]\n" + priv + "\nMTU = 20", 3, "MTU", false},
		{"bad DNS", "[Interface]\n" + priv + "\nDNS = 1.1.1.300", 3, "DNS", false},
		{"endpoint without port", "[Interface]\n" + priv + "\n[Peer]\n" + pub + "\nEndpoint = vpn.example.com", 5, "Endpoint", false},
		{"endpoint port zero", "[Interface]\n" + priv + "\n[Peer]\n" + pub + "\nEndpoint = vpn.example.com:0", 5, "Endpoint", false},
		{"endpoint IPv6 without brackets", "[Interface]\n" + priv + "\n[Peer]\n" + pub + "\nEndpoint = 2001:db8::1:51820", 5, "Endpoint", false},
		{"keepalive out of range", "[Interface]\n" + priv + "\n[Peer]\n" + pub + "\nPersistentKeepalive = 65536", 5, "PersistentKeepalive", false},
		{"keepalive negative", "[Interface]\n" + priv + "\n[Peer]\n" + pub + "\nPersistentKeepalive = -1", 5, "PersistentKeepalive", false},
		{"unknown section", "[Interface]\n" + priv + "\n\n[Peers]\n" + pub, 4, "", false},
		{"malformed section", "[Interface\n" + priv, 1, "", false},
		{"second interface", "[Interface]\n" + priv + "\n[Interface]", 3, "", false},
		{"line outside a section", "# header\nPrivateKey = x\n[Interface]", 2, "PrivateKey", false},
		{"key without '='", "[Interface]\n" + priv + "\nListenPort 51820", 3, "ListenPort 51820", false},
		{"missing key", "[Interface]\n" + priv + "\n= 5", 3, "", false},
		{"unknown interface key", "[Interface]\n" + priv + "\nIncludedApplications = x", 3, "IncludedApplications", false},
		{"unknown peer key", "[Interface]\n" + priv + "\n[Peer]\n" + pub + "\nDNS = 1.1.1.1", 5, "DNS", false},
		{"duplicate key", "[Interface]\n" + priv + "\nListenPort = 1\nlistenport = 2", 4, "ListenPort", false},
		{"duplicate peer", "[Interface]\n" + priv + "\n[Peer]\n" + pub + "\n[Peer]\n" + pub, 6, "PublicKey", false},
		{"bad FwMark", "[Interface]\n" + priv + "\nFwMark = 0xZZ", 3, "FwMark", false},
		{"bad SaveConfig", "[Interface]\n" + priv + "\nSaveConfig = yes", 3, "SaveConfig", false},
		{"interface without private key", "\n[Interface]\nListenPort = 1\n[Peer]\n" + pub, 2, "PrivateKey", false},
		{"peer without public key", "[Interface]\n" + priv + "\n[Peer]\nEndpoint = 1.2.3.4:5", 3, "PublicKey", false},
		{"no interface", "[Peer]\n" + pub, 0, "", false},
		{"empty input", "", 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wgconfig.Parse([]byte(tt.text))
			var pe *wgconfig.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse error = %v, want a *ParseError", err)
			}
			if pe.Line != tt.line || pe.Key != tt.key {
				t.Errorf("ParseError line %d key %q, want line %d key %q (%v)", pe.Line, pe.Key, tt.line, tt.key, err)
			}
			if got := errors.Is(err, wgconfig.ErrInvalidKey); got != tt.keyError {
				t.Errorf("errors.Is(err, ErrInvalidKey) = %v, want %v (%v)", got, tt.keyError, err)
			}
			if !strings.HasPrefix(err.Error(), "wgconfig: ") {
				t.Errorf("error %q lacks the wgconfig: prefix", err)
			}
			if tt.line > 0 && !strings.Contains(err.Error(), "line ") {
				t.Errorf("error %q does not name the line", err)
			}
		})
	}
}

func TestParseErrorMessageNamesLineKeyAndValue(t *testing.T) {
	_, err := wgconfig.Parse([]byte("[Interface]\nPrivateKey = " + testKey(1).String() + "\n[Peer]\nPublicKey = " + testKey(2).String() + "\nEndpoint = vpn.example.com"))
	want := `wgconfig: line 5: Endpoint "vpn.example.com": missing port in address; want host:port`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

func TestStripForWGKeepsOnlySetconfKeys(t *testing.T) {
	c := roundTripConfigs(t)["every field"]
	text, err := c.StripForWG()
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{
		"PrivateKey": true, "ListenPort": true, "FwMark": true,
		"PublicKey": true, "PresharedKey": true, "Endpoint": true, "AllowedIPs": true, "PersistentKeepalive": true,
	}
	seen := map[string]bool{}
	for _, l := range strings.Split(string(text), "\n") {
		key, _, ok := strings.Cut(l, " = ")
		if !ok {
			continue
		}
		if !allowed[key] {
			t.Errorf("StripForWG wrote %q", l)
		}
		seen[key] = true
	}
	if !seen["FwMark"] || !seen["ListenPort"] || !seen["PresharedKey"] {
		t.Errorf("StripForWG left out keys wg setconf takes:\n%s", text)
	}
}

func TestMarshalTextRejectsInvalidConfig(t *testing.T) {
	base := func() wgconfig.Config {
		return wgconfig.Config{
			Interface: wgconfig.Interface{PrivateKey: testKey(1)},
			Peers:     []wgconfig.Peer{{PublicKey: testKey(2)}},
		}
	}
	tests := []struct {
		field  string
		modify func(*wgconfig.Config)
	}{
		{"Interface.PrivateKey", func(c *wgconfig.Config) { c.Interface.PrivateKey = wgconfig.Key{} }},
		{"Interface.Addresses[0]", func(c *wgconfig.Config) { c.Interface.Addresses = []netip.Prefix{{}} }},
		{"Interface.ListenPort", func(c *wgconfig.Config) { c.Interface.ListenPort = 65536 }},
		{"Interface.DNS[0]", func(c *wgconfig.Config) { c.Interface.DNS = addrs("fe80::1%eth0") }},
		{"Interface.DNSSearch[0]", func(c *wgconfig.Config) { c.Interface.DNSSearch = []string{"10.0.0.1"} }},
		{"Interface.DNSSearch[0]", func(c *wgconfig.Config) { c.Interface.DNSSearch = []string{"bad name"} }},
		{"Interface.MTU", func(c *wgconfig.Config) { c.Interface.MTU = -1 }},
		{"Interface.Extra[0]", func(c *wgconfig.Config) { c.Interface.Extra = []wgconfig.KV{{Key: "Foo", Value: "x"}} }},
		{"Interface.Extra[1]", func(c *wgconfig.Config) {
			c.Interface.Extra = []wgconfig.KV{{Key: "Table", Value: "off"}, {Key: "table", Value: "auto"}}
		}},
		{"Interface.PostUp[0]", func(c *wgconfig.Config) { c.Interface.PostUp = []string{"echo # hi"} }},
		{"Interface.PostDown[0]", func(c *wgconfig.Config) { c.Interface.PostDown = []string{"a\nb"} }},
		{"Peers[0].PublicKey", func(c *wgconfig.Config) { c.Peers[0].PublicKey = wgconfig.Key{} }},
		{"Peers[1].PublicKey", func(c *wgconfig.Config) { c.Peers = append(c.Peers, c.Peers[0]) }},
		{"Peers[0].Endpoint", func(c *wgconfig.Config) { c.Peers[0].Endpoint = "[fe80::1%a#b]:1" }},
		{"Peers[0].AllowedIPs[0]", func(c *wgconfig.Config) { c.Peers[0].AllowedIPs = []netip.Prefix{{}} }},
		{"Peers[0].PersistentKeepalive", func(c *wgconfig.Config) { c.Peers[0].PersistentKeepalive = 70000 }},
	}
	for _, tt := range tests {
		c := base()
		tt.modify(&c)
		_, err := c.MarshalText()
		var ce *wgconfig.ConfigError
		if !errors.As(err, &ce) || ce.Field != tt.field {
			t.Errorf("%s: MarshalText error = %v, want a *ConfigError for that field", tt.field, err)
		}
		if _, err := c.StripForWG(); err == nil {
			t.Errorf("%s: StripForWG accepted an invalid config", tt.field)
		}
	}
}
