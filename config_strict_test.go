package warren

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeConfig writes text to a file of its own and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// wantConfigError fails t unless err is a *ConfigError on field whose text
// names the field and holds every one of the words.
func wantConfigError(t *testing.T, err error, field string, words ...string) {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a ConfigError on %s", err, field)
	}
	if ce.Field != field {
		t.Fatalf("got ConfigError on %q (%v), want %q", ce.Field, err, field)
	}
	if !strings.Contains(err.Error(), field) {
		t.Fatalf("error %q does not name %s", err, field)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q lacks %q", err, w)
		}
	}
}

// serverJSON is a valid hub config with two seed clients; %s is spliced into
// the first client's security object.
func serverJSON(t *testing.T, clientSecurity string) string {
	t.Helper()
	hub, _ := GenerateKeypair()
	a, _ := GenerateKeypair()
	b, _ := GenerateKeypair()
	return fmt.Sprintf(`{
  "listenAddr": "127.0.0.1:0",
  "privateKey": %q,
  "subnet": "10.8.0.0/24",
  "destinationPolicy": {"default": "allow", "blockList": ["192.0.2.0/24"]},
  "clients": [
    {"clientId": "alice", "publicKey": %q, "assignedIp": "10.8.0.2", "enabled": true,
     "security": {"ipBlockList": ["198.51.100.1"], "rateLimit": {"bytesPerSec": 1000, "burstBytes": 2000}%s}},
    {"clientId": "bob", "publicKey": %q, "assignedIp": "10.8.0.3", "enabled": true}
  ]
}`, hub.PrivateKey, a.PublicKey, clientSecurity, b.PublicKey)
}

func TestLoadServerConfigAcceptsValidNestedConfig(t *testing.T) {
	cfg, err := LoadServerConfig(writeConfig(t, serverJSON(t, "")))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Clients) != 2 || cfg.Clients[0].Security.RateLimit.BurstBytes != 2000 || !cfg.Clients[1].Enabled {
		t.Fatalf("loaded %+v", cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// What Save writes, Load reads back, bundles included.
	wgKeys, _ := GenerateWGKeypair()
	peer, _ := GenerateWGKeypair()
	cfg.WGPrivateKey = wgKeys.PrivateKey
	cfg.WGPeers = []WGPeer{{PublicKey: peer.PublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.200/32")}, PersistentKeepalive: 25}}
	cfg.EnableNAT = true
	cfg.PublicEndpoint = "vpn.example.com:8443"
	path := filepath.Join(t.TempDir(), "saved.json")
	if err := cfg.Save(path); err != nil {
		t.Fatal(err)
	}
	again, err := LoadServerConfig(path)
	if err != nil {
		t.Fatalf("a saved config does not load: %v", err)
	}
	if len(again.WGPeers) != 1 || !again.EnableNAT || again.Clients[0].Security.IPBlockList[0] != "198.51.100.1" {
		t.Fatalf("round trip: %+v", again)
	}
	b, err := s.CreateClient(context.Background(), ClientSpec{ClientID: "carol", Security: &ClientSecurity{MaxConnections: 2}})
	if err != nil {
		t.Fatal(err)
	}
	b.Config.Reconnect = ReconnectConfig{MaxAttempts: 2}
	if err := b.Config.Save(path); err != nil {
		t.Fatal(err)
	}
	cc, err := LoadClientConfig(path)
	if err != nil {
		t.Fatalf("a saved bundle config does not load: %v", err)
	}
	if cc.PrivateKey != b.Config.PrivateKey || cc.Reconnect.MaxAttempts != 2 {
		t.Fatalf("round trip: %+v", cc)
	}
	raw, _ := json.Marshal(b)
	var back ClientBundle
	if err := json.Unmarshal(raw, &back); err != nil || back.Entry.Security.MaxConnections != 2 {
		t.Fatalf("bundle JSON round trip: %+v %v", back, err)
	}
}

func TestLoadServerConfigRefusesUnknownFieldsAtEveryLevel(t *testing.T) {
	base := serverJSON(t, "")
	cases := []struct {
		name, old, new, field string
	}{
		{"top level", `"listenAddr"`, `"listenAddress"`, "listenAddress"},
		{"client", `"clientId": "bob", `, `"clientId": "bob", "enabeld": true, `, "clients[1].enabeld"},
		{"security", `"ipBlockList"`, `"ipBlockLst"`, "clients[0].security.ipBlockLst"},
		{"rateLimit", `"burstBytes"`, `"burst"`, "clients[0].security.rateLimit.burst"},
		{"destinationPolicy", `"blockList"`, `"blocklst"`, "destinationPolicy.blocklst"},
		{"wgPeers", `"subnet"`, `"wgPeers": [{"publicKey": "", "allowedIp": ["10.8.0.9/32"]}], "subnet"`, "wgPeers[0].allowedIp"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text := strings.Replace(base, tc.old, tc.new, 1)
			if text == base {
				t.Fatal("test case does not change the config")
			}
			_, err := LoadServerConfig(writeConfig(t, text))
			wantConfigError(t, err, tc.field, "unknown field")
		})
	}
	// The error suggests the field that was meant.
	_, err := LoadServerConfig(writeConfig(t, strings.Replace(base, `"ipBlockList"`, `"ipBlockLst"`, 1)))
	wantConfigError(t, err, "clients[0].security.ipBlockLst", `"ipBlockList"`)
}

func TestLoadServerConfigRefusesFieldGivenTwice(t *testing.T) {
	base := serverJSON(t, "")
	text := strings.Replace(base, `"clientId": "bob", `, `"clientId": "bob", "enabled": false, `, 1)
	_, err := LoadServerConfig(writeConfig(t, text))
	wantConfigError(t, err, "clients[1].enabled", "more than once")

	// "tags" is serverDefinedClientTags: both at once is one field twice.
	text = strings.Replace(base, `"clientId": "bob", `, `"clientId": "bob", "tags": ["a"], "serverDefinedClientTags": ["b"], `, 1)
	_, err = LoadServerConfig(writeConfig(t, text))
	wantConfigError(t, err, "clients[1].serverDefinedClientTags", "more than once")
}

func TestLoadServerConfigReadsTagsAlias(t *testing.T) {
	text := strings.Replace(serverJSON(t, ""), `"clientId": "bob", `, `"clientId": "bob", "tags": ["ops"], `, 1)
	cfg, err := LoadServerConfig(writeConfig(t, text))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Clients[1].ServerDefinedClientTags; len(got) != 1 || got[0] != "ops" {
		t.Fatalf("tags alias: %q", got)
	}
}

func TestLoadServerConfigRefusesTrailingData(t *testing.T) {
	base := serverJSON(t, "")
	for _, tail := range []string{"}", "{}", `{"listenAddr": "x"}`, "x", "[]"} {
		_, err := LoadServerConfig(writeConfig(t, base+"\n"+tail))
		if err == nil || !strings.Contains(err.Error(), "after the JSON object") {
			t.Errorf("tail %q: got %v", tail, err)
		}
	}
	// Trailing white space is fine.
	if _, err := LoadServerConfig(writeConfig(t, base+"\n\n \t\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadServerConfig(writeConfig(t, "")); err == nil {
		t.Error("empty file accepted")
	}
	if _, err := LoadServerConfig(writeConfig(t, "[]")); err == nil {
		t.Error("array accepted as a config")
	}
	_, err := LoadServerConfig(writeConfig(t, "{\n  \"listenAddr\": \"x\",\n  oops\n}"))
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("syntax error does not say where: %v", err)
	}
}

func TestServerConfigRefusesRepeatedClientID(t *testing.T) {
	text := strings.Replace(serverJSON(t, ""), `"clientId": "bob"`, `"clientId": "alice"`, 1)
	cfg, err := LoadServerConfig(writeConfig(t, text))
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewServer(cfg)
	wantConfigError(t, err, "clients[1].clientId", "clients[0]")
}

func TestConfigKeyErrorNamesField(t *testing.T) {
	base := serverJSON(t, "")
	var doc map[string]any
	if err := json.Unmarshal([]byte(base), &doc); err != nil {
		t.Fatal(err)
	}
	priv := doc["privateKey"].(string)
	_, err := LoadServerConfig(writeConfig(t, strings.Replace(base, priv, "AAAA", 1)))
	wantConfigError(t, err, "privateKey", "key is 3 bytes, want 32")
	if strings.Contains(err.Error(), "AAAA") {
		t.Errorf("a key field's value is echoed: %v", err)
	}

	pub := doc["clients"].([]any)[0].(map[string]any)["publicKey"].(string)
	_, err = LoadServerConfig(writeConfig(t, strings.Replace(base, pub, "not base64!", 1)))
	wantConfigError(t, err, "clients[0].publicKey", "base64")

	_, err = LoadServerConfig(writeConfig(t, strings.Replace(base, `"10.8.0.3"`, `"10.8.0.300"`, 1)))
	wantConfigError(t, err, "clients[1].assignedIp", "10.8.0.300")

	_, err = LoadServerConfig(writeConfig(t, strings.Replace(base, `"bytesPerSec": 1000`, `"bytesPerSec": "fast"`, 1)))
	wantConfigError(t, err, "clients[0].security.rateLimit.bytesPerSec", "integer")
}

func clientJSON(t *testing.T) string {
	t.Helper()
	hub, _ := GenerateKeypair()
	c, _ := GenerateKeypair()
	return fmt.Sprintf(`{
  "serverUrl": "wss://127.0.0.1:4443",
  "serverPublicKey": %q,
  "privateKey": %q,
  "reconnect": {"maxAttempts": 3, "initialBackoffMs": 100}
}`, hub.PublicKey, c.PrivateKey)
}

func TestLoadClientConfigIsStrict(t *testing.T) {
	base := clientJSON(t)
	cfg, err := LoadClientConfig(writeConfig(t, base))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Reconnect.MaxAttempts != 3 {
		t.Fatalf("loaded %+v", cfg)
	}
	if _, err := NewClient(cfg); err != nil {
		t.Fatal(err)
	}
	_, err = LoadClientConfig(writeConfig(t, strings.Replace(base, `"serverUrl"`, `"serverURl2"`, 1)))
	wantConfigError(t, err, "serverURl2", "unknown field", `"serverUrl"`)
	_, err = LoadClientConfig(writeConfig(t, strings.Replace(base, `"maxAttempts"`, `"maxAtempts"`, 1)))
	wantConfigError(t, err, "reconnect.maxAtempts", "unknown field")
	_, err = LoadClientConfig(writeConfig(t, strings.Replace(base, `"maxAttempts": 3`, `"maxAttempts": 3.5`, 1)))
	wantConfigError(t, err, "reconnect.maxAttempts", "integer")
	_, err = LoadClientConfig(writeConfig(t, base+"{}"))
	if err == nil || !strings.Contains(err.Error(), "after the JSON object") {
		t.Errorf("trailing data: %v", err)
	}
	var doc map[string]any
	json.Unmarshal([]byte(base), &doc)
	_, err = LoadClientConfig(writeConfig(t, strings.Replace(base, doc["serverPublicKey"].(string), "AAAA", 1)))
	wantConfigError(t, err, "serverPublicKey", "key is 3 bytes, want 32")
}

func TestClientEntryUnmarshalIsStrict(t *testing.T) {
	var e ClientEntry
	if err := json.Unmarshal([]byte(`{"clientId":"a","enabeld":true}`), &e); err == nil {
		t.Fatal("unknown field in a ClientEntry accepted")
	}
	if err := json.Unmarshal([]byte(`{"clientId":"a","security":{"ipBlockLst":["1.1.1.1"]}}`), &e); err == nil {
		t.Fatal("unknown field in a ClientEntry's security accepted")
	}
	if err := json.Unmarshal([]byte(`{"clientId":"a","tags":["x"],"serverDefinedClientTags":["y"]}`), &e); err == nil {
		t.Fatal("tags and serverDefinedClientTags together accepted")
	}
	e = ClientEntry{}
	if err := json.Unmarshal([]byte(`{"clientId":"a","tags":["x"]}`), &e); err != nil || len(e.ServerDefinedClientTags) != 1 {
		t.Fatalf("tags alias: %+v %v", e, err)
	}
}

func TestFileStoreIsStrictAndRoundTrips(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "registry.json")
	st, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := GenerateKeypair()
	wg, _ := GenerateWGKeypair()
	now := time.Now().UTC().Truncate(time.Second)
	full := ClientEntry{
		ClientID: "alice", PublicKey: kp.PublicKey, WGPublicKey: wg.PublicKey,
		AssignedIP: netip.MustParseAddr("10.8.0.2"),
		Security: &ClientSecurity{
			IPAllowList: []string{"203.0.113.0/24"}, IPBlockList: []string{"203.0.113.9"},
			DestinationAllowList: []string{"10.0.0.0/8"}, DestinationBlockList: []string{"10.0.0.1"},
			MaxConnections: 2, RateLimit: &RateLimit{BytesPerSec: 10, BurstBytes: 20},
		},
		Priority: 3, ServerDefinedClientTags: []string{"ops"}, ClientDefinedClientTags: []string{"laptop"},
		Description: "Alice", Enabled: true, ExpiresAt: now.Add(time.Hour), CreatedAt: now, UpdatedAt: now,
	}
	if err := st.Put(context.Background(), full); err != nil {
		t.Fatal(err)
	}
	again, err := NewFileStore(path)
	if err != nil {
		t.Fatalf("a registry file the store wrote does not load: %v", err)
	}
	got, _ := again.Load(context.Background())
	if len(got) != 1 {
		t.Fatalf("loaded %d entries", len(got))
	}
	a, _ := json.Marshal(got[0])
	b, _ := json.Marshal(full)
	if string(a) != string(b) {
		t.Fatalf("round trip changed the entry:\n%s\n%s", a, b)
	}

	text, _ := os.ReadFile(path)
	bad := strings.Replace(string(text), `"ipBlockList"`, `"ipBlockLst"`, 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = NewFileStore(path)
	wantConfigError(t, err, "clients[0].security.ipBlockLst", path, "unknown field")
}

func TestServerConfigRefusesDegenerateSubnets(t *testing.T) {
	for _, bad := range []string{
		"0.0.0.0/0", "::/0", "0.0.0.0/1", "128.0.0.0/1", "0.0.0.0/24",
		"127.0.0.0/8", "127.0.0.0/24", "224.0.0.0/24", "239.1.0.0/16", "169.254.0.0/16",
		"fe80::/64", "ff02::/120", "::/120", "::ffff:10.8.0.0/120", "10.8.0.0/31", "fd00::/127",
	} {
		cfg := serverConfig(t, "10.8.0.0/24")
		cfg.Subnet = netip.MustParsePrefix(bad)
		_, err := NewServer(cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != "subnet" {
			t.Errorf("subnet %s: got %v", bad, err)
		}
	}
	for _, good := range []string{"10.8.0.0/24", "10.8.0.0/30", "100.64.0.0/10", "192.168.0.0/16", "fd00:8::/64", "fd00::/126"} {
		cfg := serverConfig(t, good)
		s, err := NewServer(cfg)
		if err != nil {
			t.Errorf("subnet %s refused: %v", good, err)
			continue
		}
		s.Close()
	}
}

func TestServerConfigValidatesPublicEndpoint(t *testing.T) {
	for _, bad := range []string{
		"http://x", "ws://x/warren", "wss://user@x/warren", "wss:///warren", "x/path", "x:0", "x:70000", "x:", "x:https", ":443",
		"2001:db8::1", "a b", "user@x", "x?y", "-x", "x..y",
	} {
		cfg := serverConfig(t, "10.8.0.0/24")
		cfg.PublicEndpoint = bad
		_, err := NewServer(cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != "publicEndpoint" {
			t.Errorf("publicEndpoint %q: got %v", bad, err)
		}
	}
	for _, good := range []string{"vpn.example.com", "vpn.example.com:443", "x", "203.0.113.7:8443", "[2001:db8::1]:443", "localhost:1",
		"wss://x:443", "wss://vpn.example.com/warren", // a route of another HTTP server (WebSocketHandler)
	} {
		cfg := serverConfig(t, "10.8.0.0/24")
		cfg.PublicEndpoint = good
		s, err := NewServer(cfg)
		if err != nil {
			t.Errorf("publicEndpoint %q refused: %v", good, err)
			continue
		}
		s.Close()
	}
}

func TestClientConfigValidatesAddresses(t *testing.T) {
	kp, _ := GenerateKeypair()
	wgk, _ := GenerateWGKeypair()
	ws := ClientConfig{ServerURL: "wss://127.0.0.1:1", ServerPublicKey: kp.PublicKey, PrivateKey: kp.PrivateKey}
	quicCfg := ws
	quicCfg.Transport = ClientQUIC
	wgCfg := ClientConfig{Transport: ClientWireGuard, WGPrivateKey: wgk.PrivateKey, WGServerPublicKey: wgk.PublicKey,
		WGEndpoint: "127.0.0.1:51820", WGAddress: netip.MustParsePrefix("10.8.0.2/32")}
	cases := []struct {
		base   ClientConfig
		mutate func(*ClientConfig)
		field  string
	}{
		{ws, func(c *ClientConfig) { c.ServerURL = "wss://http://x" }, "serverUrl"},
		{ws, func(c *ClientConfig) { c.ServerURL = "wss://" }, "serverUrl"},
		{ws, func(c *ClientConfig) { c.ServerURL = "wss://x:0" }, "serverUrl"},
		{ws, func(c *ClientConfig) { c.ServerURL = "wss://x:99999" }, "serverUrl"},
		{ws, func(c *ClientConfig) { c.ServerURL = "wss://x:" }, "serverUrl"},
		{ws, func(c *ClientConfig) { c.ServerURL = "wss://user:pw@x:443" }, "serverUrl"},
		{ws, func(c *ClientConfig) { c.ServerURL = "127.0.0.1:443" }, "serverUrl"},
		{ws, func(c *ClientConfig) { c.Transport = ClientAuto; c.QUICAddr = "x" }, "quicAddr"},
		{quicCfg, func(c *ClientConfig) { c.QUICAddr = "x:0" }, "quicAddr"},
		{quicCfg, func(c *ClientConfig) { c.QUICAddr = "wss://x:443" }, "quicAddr"},
		{quicCfg, func(c *ClientConfig) { c.ServerURL = "wss://x" }, "serverUrl"},
		{quicCfg, func(c *ClientConfig) { c.ServerURL = "x" }, "serverUrl"},
		{wgCfg, func(c *ClientConfig) { c.WGEndpoint = "x:0" }, "wgEndpoint"},
		{wgCfg, func(c *ClientConfig) { c.WGEndpoint = "x" }, "wgEndpoint"},
		{wgCfg, func(c *ClientConfig) { c.WGEndpoint = "udp://x:51820" }, "wgEndpoint"},
	}
	for _, tc := range cases {
		cfg := tc.base
		tc.mutate(&cfg)
		_, err := NewClient(cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%+v: got %v, want a ConfigError on %s", cfg, err, tc.field)
		}
	}
	goods := []ClientConfig{ws, quicCfg, wgCfg}
	for _, mutate := range []func(*ClientConfig){
		func(c *ClientConfig) { c.ServerURL = "wss://vpn.example.com" },
		func(c *ClientConfig) { c.ServerURL = "wss://[::1]:443/warren" },
		func(c *ClientConfig) { c.Transport = ClientAuto; c.QUICAddr = "vpn.example.com:443" },
	} {
		cfg := ws
		mutate(&cfg)
		goods = append(goods, cfg)
	}
	q := quicCfg
	q.ServerURL = "vpn.example.com:443"
	goods = append(goods, q)
	q.ServerURL, q.QUICAddr = "", "[::1]:4433"
	goods = append(goods, q)
	for _, cfg := range goods {
		c, err := NewClient(cfg)
		if err != nil {
			t.Errorf("%+v refused: %v", cfg, err)
			continue
		}
		c.Close()
	}
}

func TestServerConfigRefusesUnusableForceTarget(t *testing.T) {
	cases := []struct {
		subnet, target string
		ok             bool
	}{
		{"10.8.0.0/24", "10.8.0.1", false},    // the hub itself
		{"10.8.0.0/24", "10.8.0.7", false},    // inside the tunnel
		{"10.8.0.0/24", "2001:db8::1", false}, // IPv4 clients send only IPv4
		{"10.8.0.0/24", "0.0.0.0", false},
		{"10.8.0.0/24", "224.0.0.1", false},
		{"10.8.0.0/24", "255.255.255.255", false},
		{"fd00:8::/64", "127.0.0.1", false},
		{"fd00:8::/64", "fd00:8::1", false},
		{"10.8.0.0/24", "127.0.0.1", true},
		{"10.8.0.0/24", "192.0.2.1", true},
		{"10.8.0.0/24", "::ffff:192.0.2.1", true},
		{"fd00:8::/64", "::1", true},
		{"fd00:8::/64", "2001:db8::1", true},
	}
	for _, tc := range cases {
		cfg := serverConfig(t, tc.subnet)
		cfg.DestinationPolicy = &DestinationPolicy{Default: PolicyForceTarget, Target: tc.target}
		s, err := NewServer(cfg)
		if tc.ok {
			if err != nil {
				t.Errorf("target %s on %s refused: %v", tc.target, tc.subnet, err)
			} else {
				s.Close()
			}
			continue
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != "destinationPolicy.target" {
			t.Errorf("target %s on %s: got %v", tc.target, tc.subnet, err)
		}
	}
}

// FuzzDecodeStrict checks that the strict reader never panics, and that what
// it accepts encoding/json accepts too, with the same result.
func FuzzDecodeStrict(f *testing.F) {
	f.Add([]byte(`{"listenAddr":"127.0.0.1:0","subnet":"10.8.0.0/24","clients":[{"clientId":"a","tags":["x"],"security":{"rateLimit":{"bytesPerSec":1}}}]}`))
	f.Add([]byte(`{"wgPeers":[{"publicKey":"","allowedIps":["10.8.0.9/32"]}],"destinationPolicy":{"default":"block"}}`))
	f.Add([]byte(`{"clients":[{"ClientID":"a","enabled":true,"Enabled":false}]} {}`))
	f.Add([]byte(`{"mtu":1e99,"dns":[null,"1.1.1.1"],"clients":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var strict ServerConfig
		if err := decodeStrict("fuzz.json", data, &strict); err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error is not a ConfigError: %v", err)
			}
			return
		}
		var plain ServerConfig
		if err := json.Unmarshal(data, &plain); err != nil {
			t.Fatalf("strict accepted what encoding/json refuses: %v", err)
		}
		a, _ := json.Marshal(strict)
		b, _ := json.Marshal(plain)
		if string(a) != string(b) {
			t.Fatalf("strict and plain decode differ:\n%s\n%s", a, b)
		}
	})
}
