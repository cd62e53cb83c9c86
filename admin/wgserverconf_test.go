package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/admin"
	"github.com/warrenvpn/warren/wgconfig"
)

// TestAdminWireGuardServerConfig calls WireGuardServerConfig over HTTP
// (httptest) and over the Unix socket with admin.Client.
func TestAdminWireGuardServerConfig(t *testing.T) {
	srv := startHub(t)
	ctx := context.Background()
	on, err := srv.CreateClient(ctx, warren.ClientSpec{ClientID: "on"})
	if err != nil {
		t.Fatal(err)
	}
	off, err := srv.CreateClient(ctx, warren.ClientSpec{ClientID: "off"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.DisableClient(ctx, "off"); err != nil {
		t.Fatal(err)
	}

	ts := httptest.NewServer(admin.Handler(srv, nil))
	defer ts.Close()
	postJSON := func(body string) (int, []byte) {
		t.Helper()
		resp, err := ts.Client().Post(ts.URL+"/v1/WireGuardServerConfig", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}

	status, b := postJSON(`{"nat": true, "uplink": "eth0"}`)
	if status != http.StatusOK {
		t.Fatalf("HTTP %d: %s", status, b)
	}
	var res admin.ServerConfResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	conf, err := wgconfig.Parse([]byte(res.Config))
	if err != nil {
		t.Fatalf("%v\n%s", err, res.Config)
	}
	if len(conf.Peers) != 1 || conf.Peers[0].PublicKey != wgconfig.Key(on.Entry.WGPublicKey) ||
		conf.Peers[0].AllowedIPs[0] != netip.PrefixFrom(on.Entry.AssignedIP, 32) {
		t.Fatalf("peers: want only client on:\n%s", res.Config)
	}
	if strings.Contains(res.Config, off.Entry.WGPublicKey.String()) {
		t.Fatalf("disabled client in the .conf:\n%s", res.Config)
	}
	if len(conf.Interface.PostUp) != 3 || len(conf.Interface.PostDown) != 3 || !strings.Contains(res.Config, "-o eth0 -j MASQUERADE") {
		t.Fatalf("NAT lines missing:\n%s", res.Config)
	}
	if conf.Interface.Addresses[0] != netip.MustParsePrefix("10.77.0.1/24") {
		t.Fatalf("Address: %s", res.Config)
	}

	// Without NAT; then refusals: nat without uplink, an unknown field.
	status, b = postJSON(`{}`)
	if status != http.StatusOK || strings.Contains(string(b), "iptables") || !strings.Contains(string(b), "PrivateKey = ") {
		t.Fatalf("HTTP %d: %s", status, b)
	}
	status, b = postJSON(`{"nat": true}`)
	var e struct {
		Error admin.Error `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil || status != http.StatusBadRequest || e.Error.Code != admin.CodeInvalidConfig || e.Error.Field != "uplink" {
		t.Fatalf("nat without uplink: HTTP %d %s", status, b)
	}
	status, _ = postJSON(`{"nat": true, "uplink": "eth0", "natInterface": "x"}`)
	if status != http.StatusBadRequest {
		t.Fatalf("unknown field: HTTP %d, want 400", status)
	}

	// The same over the socket with admin.Client.
	_, c := serveUnix(t, srv)
	var viaSocket admin.ServerConfResult
	if err := c.Call(ctx, "WireGuardServerConfig", warren.WGServerConfigOptions{}, &viaSocket); err != nil {
		t.Fatal(err)
	}
	if _, err := wgconfig.Parse([]byte(viaSocket.Config)); err != nil {
		t.Fatal(err)
	}
	wantCode(t, c.Call(ctx, "WireGuardServerConfig", warren.WGServerConfigOptions{Uplink: "eth0"}, nil), admin.CodeInvalidConfig, 400)
}

func TestAdminWireGuardServerConfigNotSupported(t *testing.T) {
	keys, err := warren.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := warren.NewServer(warren.ServerConfig{
		ListenAddr: "127.0.0.1:0", PrivateKey: keys.PrivateKey, TransportMode: warren.TransportWebSocket,
		Subnet: netip.MustParsePrefix("10.78.0.0/24"), ForwardingMode: warren.ForwardTesting,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, c := serveUnix(t, srv)
	wantCode(t, c.Call(context.Background(), "WireGuardServerConfig", nil, nil), admin.CodeNotSupported, 501)
}
