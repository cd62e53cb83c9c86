package warren

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/handshake"
	"github.com/warrenvpn/warren/transport/ws"
)

func serverConfig(t testing.TB, subnet string) ServerConfig {
	t.Helper()
	kp, err := GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	return ServerConfig{ListenAddr: "127.0.0.1:0", PrivateKey: kp.PrivateKey, Subnet: netip.MustParsePrefix(subnet)}
}

func TestRegistrySurvivesRestartOnFileStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.json")
	store, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := serverConfig(t, "10.9.0.0/20")
	cfg.Store = store
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := map[string]netip.Addr{}
	for i := range 1000 {
		b, err := s.CreateClient(ctx, ClientSpec{ClientID: fmt.Sprintf("client-%04d", i), ServerDefinedClientTags: []string{"bulk"}})
		if err != nil {
			t.Fatal(err)
		}
		want[b.Entry.ClientID] = b.Entry.AssignedIP
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	store2, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store = store2
	s2, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.ListRegisteredClients(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1000 {
		t.Fatalf("after restart: %d clients, want 1000", len(got))
	}
	seen := map[netip.Addr]bool{}
	for _, e := range got {
		if want[e.ClientID] != e.AssignedIP {
			t.Fatalf("%s: address %v after restart, was %v", e.ClientID, e.AssignedIP, want[e.ClientID])
		}
		if seen[e.AssignedIP] {
			t.Fatalf("address %v assigned twice", e.AssignedIP)
		}
		seen[e.AssignedIP] = true
		if len(e.ServerDefinedClientTags) != 1 || !e.Enabled {
			t.Fatalf("%s lost fields: %+v", e.ClientID, e)
		}
	}
	// RemoveClient frees the address for the next client.
	if err := s2.RemoveClient(ctx, "client-0000"); err != nil {
		t.Fatal(err)
	}
	b, err := s2.CreateClient(ctx, ClientSpec{ClientID: "newcomer"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Entry.AssignedIP != want["client-0000"] {
		t.Fatalf("newcomer got %v, want the freed %v", b.Entry.AssignedIP, want["client-0000"])
	}
}

func TestPoolExhaustion(t *testing.T) {
	s, err := NewServer(serverConfig(t, "10.7.0.0/29")) // .1 hub, .2-.6 clients, .7 broadcast
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for i := range 5 {
		b, err := s.CreateClient(ctx, ClientSpec{ClientID: fmt.Sprint("c", i)})
		if err != nil {
			t.Fatal(err)
		}
		if want := netip.AddrFrom4([4]byte{10, 7, 0, byte(2 + i)}); b.Entry.AssignedIP != want {
			t.Fatalf("client %d got %v, want %v", i, b.Entry.AssignedIP, want)
		}
	}
	_, err = s.CreateClient(ctx, ClientSpec{ClientID: "one-too-many"})
	if !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("sixth client: %v, want ErrPoolExhausted", err)
	}
	if _, err := s.GetClient(ctx, "one-too-many"); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("failed create left a record: %v", err)
	}
}

func TestInvalidSpecsChangeNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.json")
	store, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := serverConfig(t, "10.8.0.0/24")
	cfg.Store = store
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.CreateClient(ctx, ClientSpec{ClientID: "alice"}); err != nil {
		t.Fatal(err)
	}
	before, _ := store.Load(ctx)

	cases := []struct {
		name  string
		spec  ClientSpec
		is    error
		field string
	}{
		{"duplicate id", ClientSpec{ClientID: "alice"}, ErrClientExists, ""},
		{"empty id", ClientSpec{}, nil, "clientId"},
		{"bad id", ClientSpec{ClientID: "has space"}, nil, "clientId"},
		{"bad CIDR in ipAllowList", ClientSpec{ClientID: "bob", Security: &ClientSecurity{IPAllowList: []string{"10.0.0.0/33"}}}, nil, "security.ipAllowList[0]"},
		{"bad entry in destinationBlockList", ClientSpec{ClientID: "bob", Security: &ClientSecurity{DestinationBlockList: []string{"1.1.1.1", "nonsense"}}}, nil, "security.destinationBlockList[1]"},
		{"backwards range", ClientSpec{ClientID: "bob", Security: &ClientSecurity{IPBlockList: []string{"1.1.1.9-1.1.1.1"}}}, nil, "security.ipBlockList[0]"},
		{"priority", ClientSpec{ClientID: "bob", Priority: 9}, nil, "priority"},
		{"expired", ClientSpec{ClientID: "bob", ExpiresAt: time.Now().Add(-time.Hour)}, nil, "expiresAt"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.CreateClient(ctx, tc.spec)
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("err %v, want %v", err, tc.is)
			}
			if tc.field != "" {
				var ce *ConfigError
				if !errors.As(err, &ce) || ce.Field != tc.field {
					t.Fatalf("err %v, want a ConfigError for %s", err, tc.field)
				}
			}
		})
	}
	if _, err := s.UpdateClient(ctx, "alice", ClientUpdate{Security: &ClientSecurity{DestinationAllowList: []string{"10.0.0.1-10.0.0"}}}); err == nil {
		t.Fatal("UpdateClient accepted a bad range")
	}
	after, _ := store.Load(ctx)
	list, _ := s.ListRegisteredClients(ctx)
	if !reflect.DeepEqual(before, after) || len(list) != 1 {
		t.Fatalf("bad input changed the registry:\nbefore %+v\nafter  %+v", before, after)
	}
}

func TestSeedClientsAndBadSeeds(t *testing.T) {
	kp, _ := GenerateKeypair()
	cfg := serverConfig(t, "10.8.0.0/24")
	cfg.Clients = []ClientEntry{{ClientID: "seeded", PublicKey: kp.PublicKey, AssignedIP: netip.MustParseAddr("10.8.0.50"), Enabled: true}}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e, err := s.GetClient(context.Background(), "seeded")
	if err != nil || e.AssignedIP.String() != "10.8.0.50" {
		t.Fatalf("seeded client: %+v %v", e, err)
	}
	bad := []struct {
		entry ClientEntry
		field string
	}{
		{ClientEntry{ClientID: "x", PublicKey: kp.PublicKey, AssignedIP: netip.MustParseAddr("10.9.0.5")}, "clients[0].assignedIp"},
		{ClientEntry{ClientID: "x", PublicKey: kp.PublicKey, AssignedIP: netip.MustParseAddr("10.8.0.1")}, "clients[0].assignedIp"},
		{ClientEntry{ClientID: "x", AssignedIP: netip.MustParseAddr("10.8.0.5")}, "clients[0].publicKey"},
		{ClientEntry{ClientID: "x", PublicKey: kp.PublicKey, AssignedIP: netip.MustParseAddr("10.8.0.5"), Security: &ClientSecurity{IPBlockList: []string{"300.1.1.1"}}}, "clients[0].security.ipBlockList[0]"},
	}
	for _, tc := range bad {
		cfg := serverConfig(t, "10.8.0.0/24")
		cfg.Clients = []ClientEntry{tc.entry}
		_, err := NewServer(cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("seed %+v: %v, want ConfigError on %s", tc.entry, err, tc.field)
		}
	}
}

func TestServerConfigValidation(t *testing.T) {
	cases := []struct {
		field  string
		mutate func(*ServerConfig)
	}{
		// Without a listener of its own the hub needs to be told where
		// clients reach it (WebSocketHandler on another server).
		{"publicEndpoint", func(c *ServerConfig) { c.ListenAddr = "" }},
		{"listenAddr", func(c *ServerConfig) { c.ListenAddr = "nonsense" }},
		{"privateKey", func(c *ServerConfig) { c.PrivateKey = Key{} }},
		{"publicKey", func(c *ServerConfig) { c.PublicKey = Key{1} }},
		{"subnet", func(c *ServerConfig) { c.Subnet = netip.Prefix{} }},
		{"subnet", func(c *ServerConfig) { c.Subnet = netip.MustParsePrefix("10.8.0.1/24") }},
		{"subnet", func(c *ServerConfig) { c.Subnet = netip.MustParsePrefix("10.8.0.0/31") }},
		{"transportMode", func(c *ServerConfig) { c.TransportMode = "carrier-pigeon" }},
		{"forwardingMode", func(c *ServerConfig) { c.ForwardingMode = "teleport" }},
		{"mtu", func(c *ServerConfig) { c.MTU = 100 }},
		{"wgListenPort", func(c *ServerConfig) { c.WGListenPort = 70000 }},
		{"connectionIpBlockList[1]", func(c *ServerConfig) { c.ConnectionIPBlockList = []string{"1.2.3.4", "1.2.3"} }},
		{"tlsCertFile", func(c *ServerConfig) { c.TLSCertFile = "cert.pem" }},
	}
	for _, tc := range cases {
		cfg := serverConfig(t, "10.8.0.0/24")
		tc.mutate(&cfg)
		_, err := NewServer(cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%s: got %v", tc.field, err)
		}
	}
}

func TestClientConfigValidation(t *testing.T) {
	kp, _ := GenerateKeypair()
	good := ClientConfig{ServerURL: "wss://127.0.0.1:1", ServerPublicKey: kp.PublicKey, PrivateKey: kp.PrivateKey}
	if _, err := NewClient(good); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		field  string
		mutate func(*ClientConfig)
	}{
		{"serverUrl", func(c *ClientConfig) { c.ServerURL = "" }},
		{"serverUrl", func(c *ClientConfig) { c.ServerURL = "http://x" }},
		{"serverPublicKey", func(c *ClientConfig) { c.ServerPublicKey = Key{} }},
		{"privateKey", func(c *ClientConfig) { c.PrivateKey = Key{} }},
		{"publicKey", func(c *ClientConfig) { c.PublicKey = Key{9} }},
		{"transport", func(c *ClientConfig) { c.Transport = "smoke-signals" }},
		{"mtu", func(c *ClientConfig) { c.MTU = 10 }},
		{"clientDefinedClientTags[0]", func(c *ClientConfig) { c.ClientDefinedClientTags = []string{""} }},
	}
	for _, tc := range cases {
		cfg := good
		tc.mutate(&cfg)
		_, err := NewClient(cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%s: got %v", tc.field, err)
		}
	}
}

func TestConfigJSONRoundTrip(t *testing.T) {
	dir := t.TempDir()
	cfg := serverConfig(t, "10.8.0.0/24")
	cfg.DNS = []netip.Addr{netip.MustParseAddr("1.1.1.1")}
	cfg.ConnectionIPBlockList = []string{"192.0.2.0/24"}
	if err := cfg.Save(filepath.Join(dir, "server.json")); err != nil {
		t.Fatal(err)
	}
	got, err := LoadServerConfig(filepath.Join(dir, "server.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got.PrivateKey != cfg.PrivateKey || got.Subnet != cfg.Subnet || got.DNS[0] != cfg.DNS[0] || got.ConnectionIPBlockList[0] != "192.0.2.0/24" {
		t.Fatalf("round trip: %+v", got)
	}
	raw, _ := json.Marshal(cfg)
	for _, name := range []string{`"listenAddr"`, `"privateKey"`, `"subnet"`, `"connectionIpBlockList"`} {
		if !strings.Contains(string(raw), name) {
			t.Errorf("JSON lacks %s: %s", name, raw)
		}
	}
	// A misspelt field is an error, not silently ignored.
	bad := filepath.Join(dir, "bad.json")
	if err := writeFileAtomic(bad, []byte(`{"listenAddress":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadServerConfig(bad); err == nil {
		t.Fatal("unknown field accepted")
	}
	// "tags" is read as serverDefinedClientTags.
	var e ClientEntry
	if err := json.Unmarshal([]byte(`{"clientId":"a","tags":["x"]}`), &e); err != nil || len(e.ServerDefinedClientTags) != 1 {
		t.Fatalf("tags alias: %+v %v", e, err)
	}
}

func TestKeyTextForm(t *testing.T) {
	kp, err := GenerateWGKeypair()
	if err != nil {
		t.Fatal(err)
	}
	text, _ := kp.PrivateKey.MarshalText()
	var k Key
	if err := k.UnmarshalText(text); err != nil || k != kp.PrivateKey {
		t.Fatalf("round trip: %v", err)
	}
	if kp.PrivateKey[0]&7 != 0 || kp.PrivateKey[31]&0x80 != 0 || kp.PrivateKey[31]&0x40 == 0 {
		t.Fatal("WireGuard private key not clamped")
	}
	for _, bad := range []string{"not base64!", "AAAA"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
	var cfg ServerConfig
	err = json.Unmarshal([]byte(`{"privateKey":"AAAA"}`), &cfg)
	if err == nil {
		t.Fatal("bad key in JSON accepted")
	}
}

func TestExportClientConfig(t *testing.T) {
	h := newTestHub(t, nil)
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	native, err := h.ExportClientConfig(context.Background(), "alice", ExportNative)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(native, b.Secrets.NoisePrivateKey.String()) || strings.Contains(native, b.Secrets.WGPrivateKey.String()) {
		t.Fatal("native export holds a secret")
	}
	var cfg ClientConfig
	if err := json.Unmarshal([]byte(native), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.ServerURL != b.Config.ServerURL || cfg.ServerCertHash != h.CertHash() || cfg.PublicKey != b.Entry.PublicKey {
		t.Fatalf("export %+v", cfg)
	}
	if _, err := h.ExportClientConfig(context.Background(), "alice", "yaml"); err == nil {
		t.Fatal("unknown format accepted")
	}
	if _, err := h.ExportClientConfig(context.Background(), "nobody", ExportNative); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("unknown client: %v", err)
	}
}

// TestReplayedHandshakeIsRefused sends a captured message 1 a second time: the
// hub must not answer it.
func TestReplayedHandshakeIsRefused(t *testing.T) {
	h := newTestHub(t, nil)
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	ini, err := handshake.NewInitiator(b.Config.PrivateKey, b.Config.PublicKey, b.Config.ServerPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	msg1, err := ini.WriteInit(handshake.ClientHello{Timestamp: time.Now().UnixNano(), Version: Version})
	if err != nil {
		t.Fatal(err)
	}
	frame, _ := codec.AppendFrame(nil, codec.HandshakeInit, msg1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	send := func() ([]byte, error) {
		conn, err := ws.Dial(ctx, b.Config.ServerURL, ws.DialConfig{ServerCertHash: b.Config.ServerCertHash})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.WriteMessage(frame); err != nil {
			t.Fatal(err)
		}
		m, err := conn.ReadMessage()
		return append([]byte(nil), m...), err
	}
	first, err := send()
	if err != nil {
		t.Fatalf("first message 1: %v", err)
	}
	if ty, _, _, err := codec.Parse(first); err != nil || ty != codec.HandshakeResp {
		t.Fatalf("first answer: %v %v", ty, err)
	}
	if resp, err := send(); err == nil {
		t.Fatalf("replayed message 1 was answered with %d bytes", len(resp))
	}
	waitFor(t, time.Second, "failed handshake counted", func() bool { return h.Statistics().HandshakesFailed == 1 })
}

func TestCreateClientCarriesTUNForwardingMode(t *testing.T) {
	s, err := NewServer(serverConfig(t, "10.8.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateClient(context.Background(), ClientSpec{ClientID: "t", ForwardingMode: ForwardTUN})
	if err != nil {
		t.Fatal(err)
	}
	if b.Config.ForwardingMode != ForwardTUN {
		t.Fatalf("bundle forwarding mode %q, want tun", b.Config.ForwardingMode)
	}
	if _, err := NewClient(b.Config); err != nil {
		t.Fatalf("the bundle's config: %v", err)
	}
	_, err = s.CreateClient(context.Background(), ClientSpec{ClientID: "u", ForwardingMode: "teleport"})
	wantConfigError(t, err, "forwardingMode", "must be")
	if list, _ := s.ListRegisteredClients(context.Background()); len(list) != 1 {
		t.Fatalf("refused spec registered a client: %+v", list)
	}
}
