package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/admin"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startHub runs a real hub on loopback with every transport and the testing
// engine.
func startHub(t *testing.T) *warren.Server {
	t.Helper()
	keys, err := warren.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	wgKeys, err := warren.GenerateWGKeypair()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := warren.NewServer(warren.ServerConfig{
		ListenAddr:     "127.0.0.1:0",
		PrivateKey:     keys.PrivateKey,
		WGPrivateKey:   wgKeys.PrivateKey,
		Subnet:         netip.MustParsePrefix("10.77.0.0/24"),
		ForwardingMode: warren.ForwardTesting,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// serveUnix serves the admin API of srv on a socket in a fresh directory.
func serveUnix(t *testing.T, srv *warren.Server) (path string, c *admin.Client) {
	t.Helper()
	dir := shortTempDir(t)
	path = filepath.Join(dir, "admin.sock")
	ln, err := admin.ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: admin.Handler(srv, nil)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.Serve(ln)
	}()
	c = admin.NewClient(path)
	t.Cleanup(func() {
		c.Close()
		hs.Close()
		<-done
	})
	return path, c
}

// shortTempDir is a directory with a short path (Unix socket paths are
// limited to about 100 bytes), removed at the end of the test.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wadm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func wantCode(t *testing.T, err error, code string, status int) *admin.Error {
	t.Helper()
	var ae *admin.Error
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want an *admin.Error with code %s", err, code)
	}
	if ae.Code != code || ae.Status != status {
		t.Fatalf("err = %s (HTTP %d), want %s (HTTP %d): %s", ae.Code, ae.Status, code, status, ae.Message)
	}
	return ae
}

// connect runs a real client from bundle until the test ends.
func connect(t *testing.T, b *warren.ClientBundle) *warren.Client {
	t.Helper()
	cl, err := warren.NewClient(b.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cl.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	return cl
}

func TestAdminServesEveryHubMethod(t *testing.T) {
	srv := startHub(t)
	_, c := serveUnix(t, srv)
	ctx := context.Background()

	var b warren.ClientBundle
	if err := c.Call(ctx, "CreateClient", warren.ClientSpec{ClientID: "laptop", Description: "one", ForwardingMode: warren.ForwardTesting}, &b); err != nil {
		t.Fatal(err)
	}
	if b.Entry.ClientID != "laptop" || b.Config.PrivateKey.IsZero() || b.WireGuardConfig == "" {
		t.Fatalf("bundle = %+v", b)
	}
	wantCode(t, c.Call(ctx, "CreateClient", warren.ClientSpec{ClientID: "laptop"}, nil), admin.CodeClientExists, 409)
	ae := wantCode(t, c.Call(ctx, "CreateClient", warren.ClientSpec{ClientID: "x", Priority: 9}, nil), admin.CodeInvalidConfig, 400)
	if ae.Field != "priority" || ae.Value != "9" {
		t.Fatalf("invalid_config field=%q value=%q", ae.Field, ae.Value)
	}

	var e warren.ClientEntry
	if err := c.Call(ctx, "GetClient", map[string]string{"clientId": "laptop"}, &e); err != nil || e.Description != "one" || e.AssignedIP != b.Entry.AssignedIP {
		t.Fatalf("GetClient = %+v, %v", e, err)
	}
	wantCode(t, c.Call(ctx, "GetClient", map[string]string{"clientId": "nobody"}, nil), admin.CodeUnknownClient, 404)

	if err := c.Call(ctx, "UpdateClient", map[string]any{"clientId": "laptop", "description": "two", "serverDefinedClientTags": []string{"a"}}, &e); err != nil || e.Description != "two" || len(e.ServerDefinedClientTags) != 1 {
		t.Fatalf("UpdateClient = %+v, %v", e, err)
	}
	got, err := srv.GetClient(ctx, "laptop")
	if err != nil || got.Description != "two" {
		t.Fatalf("hub has %+v, %v after UpdateClient", got, err)
	}

	var list []warren.ClientEntry
	if err := c.Call(ctx, "ListRegisteredClients", nil, &list); err != nil || len(list) != 1 || list[0].ClientID != "laptop" {
		t.Fatalf("ListRegisteredClients = %+v, %v", list, err)
	}

	var exp admin.ExportResult
	if err := c.Call(ctx, "ExportClientConfig", map[string]string{"clientId": "laptop"}, &exp); err != nil || exp.Format != warren.ExportNative {
		t.Fatalf("ExportClientConfig = %+v, %v", exp, err)
	}
	var cfg warren.ClientConfig
	if err := json.Unmarshal([]byte(exp.Config), &cfg); err != nil || cfg.ServerPublicKey != b.Config.ServerPublicKey || !cfg.PrivateKey.IsZero() {
		t.Fatalf("exported native config %s: %v", exp.Config, err)
	}
	if err := c.Call(ctx, "ExportClientConfig", map[string]string{"clientId": "laptop", "format": "wireguard"}, &exp); err != nil || !strings.Contains(exp.Config, "[Peer]") {
		t.Fatalf("ExportClientConfig wireguard = %+v, %v", exp, err)
	}
	wantCode(t, c.Call(ctx, "ExportClientConfig", map[string]string{"clientId": "laptop", "format": "xml"}, nil), admin.CodeInvalidConfig, 400)

	// Live sessions.
	wantCode(t, c.Call(ctx, "DisconnectClient", map[string]string{"clientId": "laptop"}, nil), admin.CodeNotConnected, 409)
	connect(t, &b)
	var live []warren.ClientInfo
	if err := c.Call(ctx, "ListClients", nil, &live); err != nil || len(live) != 1 || live[0].ClientID != "laptop" || live[0].AssignedIP != b.Entry.AssignedIP {
		t.Fatalf("ListClients = %+v, %v", live, err)
	}
	var st warren.ServerStatus
	if err := c.Call(ctx, "Status", nil, &st); err != nil || st.Status != warren.StatusRunning || st.ConnectedClients != 1 || st.RegisteredClients != 1 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	var stats warren.Statistics
	if err := c.Call(ctx, "Statistics", nil, &stats); err != nil || stats.Handshakes < 1 {
		t.Fatalf("Statistics = %+v, %v", stats, err)
	}
	if err := c.Call(ctx, "DisconnectClient", map[string]string{"clientId": "laptop", "reason": "test"}, nil); err != nil {
		t.Fatal(err)
	}

	if err := c.Call(ctx, "DisableClient", map[string]string{"clientId": "laptop"}, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := srv.GetClient(ctx, "laptop"); got.Enabled {
		t.Fatal("DisableClient left the client enabled")
	}
	if err := c.Call(ctx, "EnableClient", map[string]string{"clientId": "laptop"}, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := srv.GetClient(ctx, "laptop"); !got.Enabled {
		t.Fatal("EnableClient left the client disabled")
	}
	var rb warren.ClientBundle
	if err := c.Call(ctx, "RotateClientKey", map[string]string{"clientId": "laptop"}, &rb); err != nil || rb.Entry.PublicKey == b.Entry.PublicKey {
		t.Fatalf("RotateClientKey = %+v, %v", rb.Entry, err)
	}

	// Static WireGuard peers.
	peer, err := warren.GenerateWGKeypair()
	if err != nil {
		t.Fatal(err)
	}
	p := warren.WGPeer{PublicKey: peer.PublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.200/32")}}
	if err := c.Call(ctx, "AddWGPeer", p, nil); err != nil {
		t.Fatal(err)
	}
	var peers []warren.WGPeer
	if err := c.Call(ctx, "ListWGPeers", nil, &peers); err != nil || len(peers) != 1 || peers[0].PublicKey != peer.PublicKey {
		t.Fatalf("ListWGPeers = %+v, %v", peers, err)
	}
	p2 := warren.WGPeer{PublicKey: rb.Entry.WGPublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.201/32")}}
	wantCode(t, c.Call(ctx, "AddWGPeer", p2, nil), admin.CodeClientExists, 409)
	if err := c.Call(ctx, "RemoveWGPeer", map[string]warren.Key{"publicKey": peer.PublicKey}, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, c.Call(ctx, "RemoveWGPeer", map[string]warren.Key{"publicKey": peer.PublicKey}, nil), admin.CodeUnknownClient, 404)

	if err := c.Call(ctx, "RemoveClient", map[string]string{"clientId": "laptop"}, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, c.Call(ctx, "RemoveClient", map[string]string{"clientId": "laptop"}, nil), admin.CodeUnknownClient, 404)
	wantCode(t, c.Call(ctx, "NoSuchMethod", nil, nil), admin.CodeUnknownMethod, 404)
}

func TestAdminNotSupportedWithoutWireGuard(t *testing.T) {
	keys, err := warren.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := warren.NewServer(warren.ServerConfig{
		ListenAddr: "127.0.0.1:0", PrivateKey: keys.PrivateKey, TransportMode: warren.TransportWebSocket,
		Subnet: netip.MustParsePrefix("10.78.0.0/30"), ForwardingMode: warren.ForwardTesting,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, c := serveUnix(t, srv)
	ctx := context.Background()
	p := warren.WGPeer{PublicKey: keys.PublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.78.0.2/32")}}
	wantCode(t, c.Call(ctx, "AddWGPeer", p, nil), admin.CodeNotSupported, 501)
	// A /30 has one address for clients.
	if err := c.Call(ctx, "CreateClient", warren.ClientSpec{ClientID: "a"}, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, c.Call(ctx, "CreateClient", warren.ClientSpec{ClientID: "b"}, nil), admin.CodePoolExhausted, 409)
	wantCode(t, c.Call(ctx, "ExportClientConfig", map[string]string{"clientId": "a", "format": "wireguard"}, nil), admin.CodeNotSupported, 501)
}

// post sends body to method over the socket at path and returns the status
// and the decoded error code, if any.
func post(t *testing.T, path, method, body string) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("http://warren/v1/"+method, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Error admin.Error `json:"error"`
	}
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error.Code
}

func TestAdminRejectsMalformedJSONWithoutChange(t *testing.T) {
	srv := startHub(t)
	path, _ := serveUnix(t, srv)
	ctx := context.Background()
	if _, err := srv.CreateClient(ctx, warren.ClientSpec{ClientID: "keep", Description: "old"}); err != nil {
		t.Fatal(err)
	}
	before, _ := srv.ListRegisteredClients(ctx)
	for _, tc := range []struct{ method, body string }{
		{"CreateClient", `{"clientId": "new"`},
		{"CreateClient", `{"clientId": "new", "colour": "red"}`},
		{"CreateClient", `{"clientId": "new", "security": {"ipAlowList": []}}`},
		{"CreateClient", `{"clientId": "new"} {"clientId": "new2"}`},
		{"CreateClient", `{"clientId": 7}`},
		{"CreateClient", `[]`},
		{"UpdateClient", `{"clientId": "keep", "description": 5}`},
		{"UpdateClient", `{"clientId": "keep", "description": "new", "bogus": 1}`},
		{"RemoveClient", `{"clientId": "keep",}`},
		{"DisableClient", `nonsense`},
		{"Status", `{"verbose": true}`},
		{"AddWGPeer", `{"publicKey": "not a key", "allowedIps": ["10.77.0.9/32"]}`},
	} {
		status, code := post(t, path, tc.method, tc.body)
		if status != http.StatusBadRequest || code != admin.CodeBadRequest {
			t.Errorf("%s %s: HTTP %d %q, want 400 bad_request", tc.method, tc.body, status, code)
		}
	}
	after, _ := srv.ListRegisteredClients(ctx)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("registry changed:\n%v\n%v", before, after)
	}
	if len(srv.ListWGPeers()) != 0 {
		t.Fatal("a malformed AddWGPeer added a peer")
	}
}

func TestCurlUnixSocket(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed: skipping the curl --unix-socket check")
	}
	srv := startHub(t)
	path, _ := serveUnix(t, srv)
	out, err := exec.Command(curl, "-sS", "--fail-with-body", "--unix-socket", path, "http://warren/v1/Status").CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	var st warren.ServerStatus
	if err := json.Unmarshal(out, &st); err != nil || st.Status != warren.StatusRunning {
		t.Fatalf("curl Status = %s (%v)", out, err)
	}
	out, err = exec.Command(curl, "-sS", "--fail-with-body", "--unix-socket", path,
		"-H", "Content-Type: application/json", "-d", `{"clientId": "phone"}`, "http://warren/v1/CreateClient").CombinedOutput()
	if err != nil {
		t.Fatalf("curl CreateClient: %v\n%s", err, out)
	}
	if _, err := srv.GetClient(context.Background(), "phone"); err != nil {
		t.Fatalf("CreateClient by curl: %v\n%s", err, out)
	}
	out, _ = exec.Command(curl, "-sS", "-w", "\n%{http_code}", "--unix-socket", path, "-d", `{"clientId": "ghost"}`, "http://warren/v1/GetClient").CombinedOutput()
	if !strings.Contains(string(out), `"code":"unknown_client"`) || !strings.HasSuffix(strings.TrimSpace(string(out)), "404") {
		t.Fatalf("curl GetClient unknown: %s", out)
	}
}

func TestListenUnixSocketMode0600(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "a.sock")
	ln, err := admin.ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		t.Fatalf("socket owned by uid %d, want %d", st.Uid, os.Getuid())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("ListenUnix left %d entries in the directory, want only the socket", len(entries))
	}

	// Another listener on the same path is refused while this one lives.
	if ln2, err := admin.ListenUnix(path); err == nil {
		ln2.Close()
		t.Fatal("a second ListenUnix on a live socket succeeded")
	} else if !strings.Contains(err.Error(), "another process is listening") {
		t.Fatalf("second ListenUnix: %v", err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("Close left the socket file: %v", err)
	}

	// A stale socket (its listener gone, the file left) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err = admin.ListenUnix(path)
	if err != nil {
		t.Fatalf("ListenUnix over a stale socket: %v", err)
	}
	ln.Close()

	// A regular file is never removed.
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := admin.ListenUnix(path); err == nil {
		ln.Close()
		t.Fatal("ListenUnix replaced a regular file")
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Fatal("ListenUnix changed a regular file")
	}
}

// TestAdminSocketRefusesOtherUsers connects as another user (nobody), which
// needs root to arrange.
func TestAdminSocketRefusesOtherUsers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a connection attempt as another user")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	srv := startHub(t)
	path, _ := serveUnix(t, srv)
	// Everyone may reach the directory; only the socket's mode keeps them out.
	if err := os.Chmod(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	asNobody := func() error {
		cmd := exec.Command(curl, "-sS", "--fail", "--unix-socket", path, "http://warren/v1/Status")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
	err = asNobody()
	if err == nil {
		t.Fatal("user nobody reached the admin socket")
	}
	t.Logf("as nobody: %v", err)
	// The same attempt succeeds once the mode allows it: the refusal above
	// is the socket's mode, not something else in the way.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := asNobody(); err != nil {
		t.Fatalf("with mode 0666 nobody still failed, so the check proves nothing: %v", err)
	}
}

func TestStatusPage(t *testing.T) {
	srv := startHub(t)
	b, err := srv.CreateClient(context.Background(), warren.ClientSpec{ClientID: "desk", ForwardingMode: warren.ForwardTesting})
	if err != nil {
		t.Fatal(err)
	}
	connect(t, b)
	ts := httptest.NewServer(admin.RequireToken("s3cret", admin.StatusPage(srv)))
	defer ts.Close()
	defer ts.Client().CloseIdleConnections()
	get := func(url string) (int, string) {
		resp, err := ts.Client().Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	status, page := get(ts.URL + "/?token=s3cret")
	if status != 200 || !strings.Contains(page, "<title>warren hub</title>") || !strings.Contains(page, "<th>health</th>") || strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Fatalf("page: HTTP %d\n%s", status, page)
	}
	status, body := get(ts.URL + "/status.json?token=s3cret")
	var snap admin.StatusSnapshot
	if err := json.Unmarshal([]byte(body), &snap); status != 200 || err != nil {
		t.Fatalf("status.json: HTTP %d %v\n%s", status, err, body)
	}
	if len(snap.Clients) != 1 || snap.Clients[0].ClientID != "desk" || snap.Clients[0].AssignedIP != b.Entry.AssignedIP ||
		snap.Status.Status != warren.StatusRunning || len(snap.Status.Transports) == 0 {
		t.Fatalf("snapshot = %+v", snap)
	}
	// Each live client carries its link quality, as the hub sees it: the
	// same as ClientTelemetry says of that session.
	var raw struct {
		Clients []struct {
			Quality *struct {
				Health *string `json:"health"`
			} `json:"quality"`
		} `json:"clients"`
	}
	if err := json.Unmarshal([]byte(body), &raw); err != nil || len(raw.Clients) != 1 || raw.Clients[0].Quality == nil || raw.Clients[0].Quality.Health == nil {
		t.Fatalf("status.json has no quality.health for the live client (%v):\n%s", err, body)
	}
	tele, err := srv.ClientTelemetry("desk")
	if err != nil || len(tele) != 1 || snap.Clients[0].Quality.Health != tele[0].Quality.Health || *raw.Clients[0].Quality.Health != tele[0].Quality.Health.String() {
		t.Fatalf("status.json quality %+v, ClientTelemetry %+v, %v", snap.Clients[0].Quality, tele, err)
	}
	for _, url := range []string{ts.URL + "/", ts.URL + "/?token=wrong", ts.URL + "/status.json?token=s3cret2"} {
		if status, _ := get(url); status != http.StatusUnauthorized {
			t.Errorf("%s: HTTP %d, want 401", url, status)
		}
	}
	req, _ := http.NewRequest("GET", ts.URL+"/status.json", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("bearer token: HTTP %d", resp.StatusCode)
	}
}

func TestErrorForMapsHubErrors(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   string
		status int
	}{
		{fmt.Errorf("x: %w", warren.ErrUnknownClient), admin.CodeUnknownClient, 404},
		{fmt.Errorf("x: %w", warren.ErrClientExists), admin.CodeClientExists, 409},
		{warren.ErrClientDisabled, admin.CodeClientDisabled, 409},
		{warren.ErrPoolExhausted, admin.CodePoolExhausted, 409},
		{warren.ErrNotConnected, admin.CodeNotConnected, 409},
		{warren.ErrNotSupported, admin.CodeNotSupported, 501},
		{&warren.ConfigError{Field: "mtu", Value: "1", Reason: "too small"}, admin.CodeInvalidConfig, 400},
		{context.DeadlineExceeded, admin.CodeUnavailable, 503},
		{errors.New("disk full"), admin.CodeInternal, 500},
	} {
		e := admin.ErrorFor(tc.err)
		if e.Code != tc.code || e.Status != tc.status {
			t.Errorf("ErrorFor(%v) = %s %d, want %s %d", tc.err, e.Code, e.Status, tc.code, tc.status)
		}
	}
}

func TestAdminRateLimitAndTelemetry(t *testing.T) {
	srv := startHub(t)
	_, c := serveUnix(t, srv)
	ctx := context.Background()
	b, err := srv.CreateClient(ctx, warren.ClientSpec{ClientID: "meter", ForwardingMode: warren.ForwardTesting})
	if err != nil {
		t.Fatal(err)
	}

	if err := c.Call(ctx, "SetClientRateLimit", map[string]any{"clientId": "meter", "bytesPerSec": 1 << 20, "burstBytes": 1 << 16}, nil); err != nil {
		t.Fatal(err)
	}
	e, err := srv.GetClient(ctx, "meter")
	if err != nil || e.Security == nil || e.Security.RateLimit == nil || *e.Security.RateLimit != (warren.RateLimit{BytesPerSec: 1 << 20, BurstBytes: 1 << 16}) {
		t.Fatalf("after SetClientRateLimit the hub has %+v, %v", e.Security, err)
	}
	ae := wantCode(t, c.Call(ctx, "SetClientRateLimit", map[string]any{"clientId": "meter", "bytesPerSec": 1000, "burstBytes": 10}, nil), admin.CodeInvalidConfig, 400)
	if !strings.HasSuffix(ae.Field, "rateLimit.burstBytes") || ae.Value != "10" {
		t.Fatalf("invalid_config field=%q value=%q", ae.Field, ae.Value)
	}
	wantCode(t, c.Call(ctx, "SetClientRateLimit", map[string]any{"clientId": "meter", "bytesPerSec": 0}, nil), admin.CodeInvalidConfig, 400)
	wantCode(t, c.Call(ctx, "SetClientRateLimit", map[string]any{"clientId": "nobody", "bytesPerSec": 1000}, nil), admin.CodeUnknownClient, 404)
	wantCode(t, c.Call(ctx, "SetClientRateLimit", map[string]any{"bytesPerSec": 1000}, nil), admin.CodeBadRequest, 400)
	if e, _ := srv.GetClient(ctx, "meter"); e.Security.RateLimit.BytesPerSec != 1<<20 {
		t.Fatalf("a refused SetClientRateLimit changed the limit to %+v", e.Security.RateLimit)
	}
	if err := c.Call(ctx, "RemoveClientRateLimit", map[string]string{"clientId": "meter"}, nil); err != nil {
		t.Fatal(err)
	}
	if e, _ := srv.GetClient(ctx, "meter"); e.Security != nil && e.Security.RateLimit != nil {
		t.Fatalf("RemoveClientRateLimit left %+v", e.Security.RateLimit)
	}
	wantCode(t, c.Call(ctx, "RemoveClientRateLimit", map[string]string{"clientId": "nobody"}, nil), admin.CodeUnknownClient, 404)

	wantCode(t, c.Call(ctx, "ClientTelemetry", map[string]string{"clientId": "meter"}, nil), admin.CodeNotConnected, 409)
	var all admin.TelemetryResult
	if err := c.Call(ctx, "Telemetry", nil, &all); err != nil || all.Clients == nil || len(all.Clients) != 0 {
		t.Fatalf("Telemetry with nobody connected = %+v, %v", all, err)
	}
	connect(t, b)
	var sess []warren.SessionTelemetry
	if err := c.Call(ctx, "ClientTelemetry", map[string]string{"clientId": "meter"}, &sess); err != nil {
		t.Fatal(err)
	}
	live := srv.ListClients()
	if len(sess) != 1 || len(live) != 1 || sess[0].Transport != live[0].Transport || sess[0].RemoteAddr != live[0].RemoteAddr.String() ||
		!sess[0].ConnectedSince.Equal(live[0].ConnectedSince) {
		t.Fatalf("ClientTelemetry = %+v, live sessions %+v", sess, live)
	}
	if err := c.Call(ctx, "Telemetry", nil, &all); err != nil {
		t.Fatal(err)
	}
	if len(all.Clients) != 1 || all.Clients[0].ClientID != "meter" || all.Server.HandshakesOK < 1 {
		t.Fatalf("Telemetry = %+v", all)
	}
	// The JSON names are camelCase, as everywhere else in the API.
	var raw struct {
		Server  map[string]any   `json:"server"`
		Clients []map[string]any `json:"clients"`
	}
	if err := c.Call(ctx, "Telemetry", nil, &raw); err != nil || raw.Server == nil || len(raw.Clients) != 1 || raw.Clients[0]["clientId"] != "meter" || raw.Clients[0]["quality"] == nil {
		t.Fatalf("Telemetry JSON = %+v, %v", raw, err)
	}
	wantCode(t, c.Call(ctx, "ClientTelemetry", map[string]string{"clientId": "nobody"}, nil), admin.CodeNotConnected, 409)
}
