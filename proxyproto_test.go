package warren

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

func TestProxyProtocolConfigValidation(t *testing.T) {
	wg, _ := GenerateWGKeypair()
	for _, tc := range []struct {
		name   string
		mutate func(*ServerConfig)
		field  string
		words  []string
	}{
		{"no trusted sources", func(c *ServerConfig) { c.ProxyProtocol = true },
			"proxyProtocolTrustedSources", []string{"required with proxyProtocol"}},
		{"trusted sources without proxyProtocol", func(c *ServerConfig) { c.ProxyProtocolTrustedSources = []string{"10.0.0.5"} },
			"proxyProtocolTrustedSources", []string{"10.0.0.5", "without proxyProtocol"}},
		{"v1 without proxyProtocol", func(c *ServerConfig) { c.ProxyProtocolV1 = true },
			"proxyProtocolV1", []string{"without proxyProtocol"}},
		{"quic only", func(c *ServerConfig) {
			c.TransportMode = TransportQUIC
			c.ProxyProtocol, c.ProxyProtocolTrustedSources = true, []string{"10.0.0.5"}
		}, "proxyProtocol", []string{"quic", "QUIC", "UDP"}},
		{"wireguard only", func(c *ServerConfig) {
			c.TransportMode, c.WGPrivateKey = TransportWireGuard, wg.PrivateKey
			c.ProxyProtocol, c.ProxyProtocolTrustedSources = true, []string{"10.0.0.5"}
		}, "proxyProtocol", []string{"wireguard", "UDP"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := serverConfig(t, "10.8.0.0/24")
			tc.mutate(&cfg)
			_, err := NewServer(cfg)
			wantConfigError(t, err, tc.field, tc.words...)
		})
	}

	for _, tc := range []struct{ entry, why string }{
		{"10.0.0.300", "not an IP address or CIDR prefix"},
		{"proxy.example.com", "host names are not resolved"},
		{"", "not an IP address or CIDR prefix"},
		{"10.0.0.7/8", "host bits set: write 10.0.0.0/8"},
		{"2001:db8::1/64", "host bits set: write 2001:db8::/64"},
		{"10.0.0.0/33", "not an IP address or CIDR prefix"},
		{"fe80::1%eth0", "zone"},
		{"0.0.0.0", "unspecified"},
		{"::", "unspecified"},
		{"10.0.0.1-10.0.0.9", "not an IP address or CIDR prefix"},
	} {
		t.Run("entry "+tc.entry, func(t *testing.T) {
			cfg := serverConfig(t, "10.8.0.0/24")
			cfg.ProxyProtocol = true
			cfg.ProxyProtocolTrustedSources = []string{"10.0.0.5", tc.entry}
			_, err := NewServer(cfg)
			wantConfigError(t, err, "proxyProtocolTrustedSources[1]", tc.why)
			if ce := (*ConfigError)(nil); errors.As(err, &ce) && ce.Value != tc.entry {
				t.Errorf("ConfigError.Value = %q, want the entry %q", ce.Value, tc.entry)
			}
		})
	}

	// From a file too: the JSON name is the field path.
	hub, _ := GenerateKeypair()
	path := writeConfig(t, fmt.Sprintf(`{"listenAddr": "127.0.0.1:0", "privateKey": %q, "subnet": "10.8.0.0/24",
		"proxyProtocol": true, "proxyProtocolTrustedSources": ["10.0.0.5", "10.0.0.0/24", "lb.internal"]}`, hub.PrivateKey))
	loaded, err := LoadServerConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewServer(loaded)
	wantConfigError(t, err, "proxyProtocolTrustedSources[2]", "lb.internal")

	// Valid: addresses and prefixes of both families, and the explicit
	// trust-everyone prefixes; transportMode all pairs PROXY on WebSocket
	// with QUIC and WireGuard taken directly.
	cfg := serverConfig(t, "10.8.0.0/24")
	cfg.WGPrivateKey = wg.PrivateKey
	cfg.ProxyProtocol = true
	cfg.ProxyProtocolTrustedSources = []string{"192.0.2.7", " 10.0.1.0/24 ", "2001:db8::/64", "::ffff:198.51.100.9", "::ffff:203.0.113.0/120"}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for addr, want := range map[string]bool{
		"192.0.2.7": true, "192.0.2.8": false, "10.0.1.200": true, "10.0.2.1": false,
		"2001:db8::42": true, "2001:db8:1::1": false,
		"198.51.100.9": true, "::ffff:198.51.100.9": true, "::ffff:192.0.2.7": true,
		"203.0.113.77": true, "::ffff:10.0.1.1": true,
	} {
		if got := s.trustProxy(netip.MustParseAddr(addr)); got != want {
			t.Errorf("trustProxy(%s) = %v, want %v", addr, got, want)
		}
	}
	cfg.ProxyProtocolTrustedSources = []string{"0.0.0.0/0", "::/0"}
	if _, err := NewServer(cfg); err != nil {
		t.Errorf("trusted sources 0.0.0.0/0 and ::/0 refused: %v", err)
	}
}

// logRecorder is a slog handler that keeps every record at Warn level or
// above.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecorder) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}

func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

// take returns the records kept so far and forgets them.
func (h *logRecorder) take() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.recs
	h.recs = nil
	return r
}

// attr returns the value of r's attribute key, or "".
func attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// freeLoopbackPort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// haproxy is a running HAProxy started by a test.
type haproxy struct {
	sock string // its stats socket
	out  *lockedBuffer
}

// lockedBuffer is a bytes.Buffer safe for HAProxy's output and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startHAProxy runs HAProxy in the foreground with one TCP frontend per
// backend address in hubs, each on a free loopback port (returned in the same
// order). Each backend sends PROXY v2 headers and health-checks its hub every
// 200 ms with a LOCAL header, from the source address src. It skips the test
// if HAProxy is not installed, and stops HAProxy when the test ends.
func startHAProxy(t *testing.T, src netip.Addr, hubs ...net.Addr) (*haproxy, []string) {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/haproxy"); serr != nil {
			t.Skip("haproxy not installed (Debian: apt-get install haproxy); this end-to-end test needs it")
		}
		bin = "/usr/sbin/haproxy"
	}
	// A short directory: a Unix socket path is limited to 108 bytes.
	dir, err := os.MkdirTemp("", "warren-haproxy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &haproxy{sock: filepath.Join(dir, "stats.sock"), out: &lockedBuffer{}}

	var cfg strings.Builder
	fmt.Fprintf(&cfg, `global
    maxconn 256
    stats socket %s mode 600 level user

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout check 2s
`, h.sock)
	var fronts []string
	for i, hub := range hubs {
		front := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
		fronts = append(fronts, front)
		fmt.Fprintf(&cfg, `
frontend f%d
    bind %s
    default_backend b%d

backend b%d
    server hub %s send-proxy-v2 check check-send-proxy inter 200ms rise 1 fall 2 source %s
`, i, front, i, i, hub, src)
	}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", cfgPath, "-db")
	cmd.Stdout, cmd.Stderr = h.out, h.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy config:\n%s\nhaproxy output:\n%s", cfg.String(), h.out.String())
		}
	})
	// Ready when its stats socket answers: it binds its frontends before.
	// (A probe through a frontend would reach a hub as a client would.)
	waitFor(t, 10*time.Second, "haproxy's stats socket answers", func() bool {
		_, err := h.serverStatus()
		return err == nil
	})
	return h, fronts
}

// serverStatus returns HAProxy's view of each backend's server "hub" (UP,
// DOWN, ...), read from its stats socket, by backend name.
func (h *haproxy) serverStatus() (map[string]string, error) {
	c, err := net.DialTimeout("unix", h.sock, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(c)
	status := -1
	out := map[string]string{}
	for sc.Scan() {
		f := strings.Split(strings.TrimPrefix(sc.Text(), "# "), ",")
		if status < 0 {
			for i, name := range f {
				if name == "status" {
					status = i
				}
			}
			if status < 0 {
				return nil, fmt.Errorf("no status column in %q", sc.Text())
			}
			continue
		}
		if len(f) > status && f[1] == "hub" {
			out[f[0]] = f[status]
		}
	}
	return out, sc.Err()
}

// connectThrough connects a client of b over WebSocket to front (a proxy),
// and gives up after 15 s.
func connectThrough(b *ClientBundle, front string) (*Client, error) {
	cfg := b.Config
	cfg.Transport, cfg.ServerURL, cfg.QUICAddr = ClientWebSocket, "wss://"+front, ""
	c, _, err := startClient(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// TestHAProxyInFrontOfHub runs Debian's HAProxy in TCP mode with
// send-proxy-v2 and PROXY health checks in front of two hubs. HAProxy
// connects to the hubs from 127.0.0.2, its clients from 127.0.0.1, so the
// real address differs from the proxy's. It checks that the real address is
// what the hub shows and what its ACLs judge, that LOCAL health checks are
// accepted quietly, and that a header from a peer not in
// proxyProtocolTrustedSources is refused.
func TestHAProxyInFrontOfHub(t *testing.T) {
	proxyAddr := netip.MustParseAddr("127.0.0.2")
	clientAddr := netip.MustParseAddr("127.0.0.1")
	logsA, logsB := &logRecorder{}, &logRecorder{}
	behindProxy := func(logs *logRecorder, connBlock ...string) func(*ServerConfig) {
		return func(c *ServerConfig) {
			c.TransportMode = TransportWebSocket
			c.ProxyProtocol = true
			c.ProxyProtocolTrustedSources = []string{proxyAddr.String()}
			c.ConnectionIPBlockList = connBlock
			c.Logger = slog.New(logs)
		}
	}
	hubA := newTestHub(t, behindProxy(logsA))
	// hubB refuses the client's real address before any cryptography; the
	// proxy's own address is not blocked, so its health checks pass.
	hubB := newTestHub(t, behindProxy(logsB, clientAddr.String()))
	events, unsubscribe := hubA.Subscribe()
	defer unsubscribe()

	hap, fronts := startHAProxy(t, proxyAddr, hubA.Addr(), hubB.Addr())
	frontA, frontB := fronts[0], fronts[1]

	// LOCAL health checks: HAProxy sees both hubs UP, and the hubs count
	// them without a failure, a rejection or a loud log line.
	waitFor(t, 20*time.Second, "haproxy reports both hubs UP", func() bool {
		st, err := hap.serverStatus()
		return err == nil && st["b0"] == "UP" && st["b1"] == "UP"
	})
	waitFor(t, 20*time.Second, "both hubs counted 3 LOCAL health checks", func() bool {
		return hubA.Statistics().ProxyLocal >= 3 && hubB.Statistics().ProxyLocal >= 3
	})
	for name, h := range map[string]*testHub{"A": hubA, "B": hubB} {
		st := h.Statistics()
		if st.ConnectionsRejected != 0 || st.HandshakesFailed != 0 || st.ProxyUntrusted != 0 {
			t.Errorf("hub %s after health checks: rejected %d, handshakes failed %d, untrusted %d; want 0",
				name, st.ConnectionsRejected, st.HandshakesFailed, st.ProxyUntrusted)
		}
	}
	for name, logs := range map[string]*logRecorder{"A": logsA, "B": logsB} {
		for _, r := range logs.take() {
			t.Errorf("hub %s logged %s %q during health checks", name, r.Level, r.Message)
		}
	}

	// The real address is the client's, on every API that shows it.
	ctx := context.Background()
	alice, err := hubA.CreateClient(ctx, ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := connectThrough(alice, frontA)
	if err != nil {
		t.Fatalf("alice through haproxy: %v", err)
	}
	defer c.Close()
	list := hubA.ListClients()
	if len(list) != 1 || list[0].RemoteAddr.Addr() != clientAddr || list[0].RemoteAddr.Port() == 0 {
		t.Fatalf("ListClients = %+v, want alice at %v (not haproxy's %v)", list, clientAddr, proxyAddr)
	}
	realAddr := list[0].RemoteAddr
	tel, err := hubA.ClientTelemetry("alice")
	if err != nil || len(tel) != 1 || tel[0].RemoteAddr != realAddr.String() {
		t.Errorf("ClientTelemetry = %+v, %v; want remote address %v", tel, err, realAddr)
	}
	deadline := time.After(10 * time.Second)
	for connected := false; !connected; {
		select {
		case ev := <-events:
			if cc, ok := ev.(ClientConnected); ok {
				connected = true
				if cc.Info.RemoteAddr != realAddr {
					t.Errorf("ClientConnected.Info.RemoteAddr = %v, want %v", cc.Info.RemoteAddr, realAddr)
				}
			}
		case <-deadline:
			t.Fatal("no ClientConnected event")
		}
	}

	// A client's ipBlockList judges the real address: blocking the proxy's
	// address does not refuse carol, blocking the client's refuses bob.
	carol, err := hubA.CreateClient(ctx, ClientSpec{ClientID: "carol", Security: &ClientSecurity{IPBlockList: []string{proxyAddr.String()}}})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := connectThrough(carol, frontA)
	if err != nil {
		t.Fatalf("carol, whose ipBlockList holds only haproxy's address, refused: %v", err)
	}
	cc.Close()
	bob, err := hubA.CreateClient(ctx, ClientSpec{ClientID: "bob", Security: &ClientSecurity{IPBlockList: []string{"127.0.0.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	if bc, err := connectThrough(bob, frontA); err == nil {
		bc.Close()
		t.Fatal("bob connected from a blocked real address")
	} else if !errors.Is(err, ErrClientRefused) {
		t.Fatalf("bob: %v, want ErrClientRefused", err)
	}
	for _, ci := range hubA.ListClients() {
		if ci.ClientID == "bob" {
			t.Fatal("bob is listed as connected")
		}
	}

	// connectionIpBlockList judges the real address too, before any
	// cryptography, while the proxy's health checks still pass.
	dave, err := hubB.CreateClient(ctx, ClientSpec{ClientID: "dave"})
	if err != nil {
		t.Fatal(err)
	}
	if dc, err := connectThrough(dave, frontB); err == nil {
		dc.Close()
		t.Fatal("dave connected from an address in connectionIpBlockList")
	}
	if st := hubB.Statistics(); st.ConnectionsRejected != 1 || st.Handshakes+st.HandshakesFailed != 0 {
		t.Errorf("hub B: rejected %d, handshakes %d/%d; want 1 and none", st.ConnectionsRejected, st.Handshakes, st.HandshakesFailed)
	}
	if st, err := hap.serverStatus(); err != nil || st["b1"] != "UP" {
		t.Errorf("haproxy's view of hub B after the refusal: %v, %v; want UP", st, err)
	}

	// A header straight from 127.0.0.1, which is not a trusted source, is
	// refused (and counted, and logged with the peer's address), however
	// innocent the source it claims.
	before := hubA.Statistics()
	raw, err := net.Dial("tcp", hubA.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	h := proxyproto.HeaderProxyFromAddrs(2,
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.20:4242")), hubA.Addr())
	_, _ = h.WriteTo(raw) // the hub may close first
	serverClosesWithin(t, raw, 10*time.Second)
	after := hubA.Statistics()
	if after.ProxyUntrusted != before.ProxyUntrusted+1 || after.ConnectionsRejected != before.ConnectionsRejected+1 {
		t.Errorf("untrusted header: ProxyUntrusted %d -> %d, ConnectionsRejected %d -> %d; want +1 each",
			before.ProxyUntrusted, after.ProxyUntrusted, before.ConnectionsRejected, after.ConnectionsRejected)
	}
	var warned bool
	for _, r := range logsA.take() {
		if strings.Contains(r.Message, "not a trusted PROXY") {
			peer, err := netip.ParseAddrPort(attr(r, "peer"))
			warned = err == nil && peer.Addr() == clientAddr && peer.Port() == mustAddrPort(t, raw.LocalAddr()).Port()
		}
	}
	if !warned {
		t.Errorf("no warning naming the untrusted peer %v", raw.LocalAddr())
	}
}

// mustAddrPort converts a TCP address.
func mustAddrPort(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		t.Fatalf("%v is not a TCP address", a)
	}
	return ta.AddrPort()
}

// proxyRelay is a minimal TCP proxy for a test: it accepts on [::1], connects
// to the hub, writes a PROXY v2 header naming src as the client, and copies
// bytes both ways.
type proxyRelay struct {
	ln  net.Listener
	wg  sync.WaitGroup
	mu  sync.Mutex
	all []net.Conn
}

func startRelay(t *testing.T, hub net.Addr, src netip.AddrPort) *proxyRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &proxyRelay{ln: ln}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go r.relay(c, hub, src)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for _, c := range r.all {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *proxyRelay) relay(c net.Conn, hub net.Addr, src netip.AddrPort) {
	defer r.wg.Done()
	defer c.Close()
	up, err := net.Dial("tcp", hub.String())
	if err != nil {
		return
	}
	defer up.Close()
	r.mu.Lock()
	r.all = append(r.all, c, up)
	r.mu.Unlock()
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(src), hub)
	if _, err := h.WriteTo(up); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, c)
		up.Close()
		close(done)
	}()
	_, _ = io.Copy(c, up)
	c.Close()
	<-done
}

// TestProxyHeaderIPv6SourceIsTheClientsAddress runs a hub on [::1] behind a
// relay that sends PROXY v2 headers with an IPv6 source, and checks that the
// hub shows that address and judges it with a client's ipBlockList.
func TestProxyHeaderIPv6SourceIsTheClientsAddress(t *testing.T) {
	probe, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	probe.Close()
	hub := newTestHub(t, func(c *ServerConfig) {
		c.ListenAddr = "[::1]:0"
		c.TransportMode = TransportWebSocket
		c.ProxyProtocol = true
		c.ProxyProtocolTrustedSources = []string{"::1"}
		c.ConnectionIPBlockList = []string{"2001:db8:dead::/48"}
	})
	ctx := context.Background()

	src := netip.MustParseAddrPort("[2001:db8::7]:4242")
	relay := startRelay(t, hub.Addr(), src)
	alice, err := hub.CreateClient(ctx, ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := connectThrough(alice, relay.ln.Addr().String())
	if err != nil {
		t.Fatalf("alice through the relay: %v", err)
	}
	defer c.Close()
	if list := hub.ListClients(); len(list) != 1 || list[0].RemoteAddr != src {
		t.Fatalf("ListClients = %+v, want alice at %v", list, src)
	}
	if tel, err := hub.ClientTelemetry("alice"); err != nil || tel[0].RemoteAddr != src.String() {
		t.Errorf("ClientTelemetry = %+v, %v; want remote address %v", tel, err, src)
	}

	// A client's ipBlockList with an IPv6 prefix refuses that source.
	bob, err := hub.CreateClient(ctx, ClientSpec{ClientID: "bob", Security: &ClientSecurity{IPBlockList: []string{"2001:db8::/64"}}})
	if err != nil {
		t.Fatal(err)
	}
	if bc, err := connectThrough(bob, relay.ln.Addr().String()); err == nil {
		bc.Close()
		t.Fatal("bob connected from an IPv6 source in its ipBlockList")
	} else if !errors.Is(err, ErrClientRefused) {
		t.Fatalf("bob: %v, want ErrClientRefused", err)
	}

	// connectionIpBlockList with an IPv6 prefix refuses before any
	// cryptography.
	blocked := startRelay(t, hub.Addr(), netip.MustParseAddrPort("[2001:db8:dead::9]:5555"))
	if cc, err := connectThrough(alice, blocked.ln.Addr().String()); err == nil {
		cc.Close()
		t.Fatal("a source in connectionIpBlockList connected")
	}
	if st := hub.Statistics(); st.ConnectionsRejected != 1 {
		t.Errorf("ConnectionsRejected = %d, want 1", st.ConnectionsRejected)
	}
}

// TestREADMEProxyProtocolConfigIsValid loads the README's PROXY protocol
// example, with the fields every hub needs, and starts a hub from it.
func TestREADMEProxyProtocolConfigIsValid(t *testing.T) {
	blocks := fencedBlocks(readmeSection(t, "## Behind a load balancer: PROXY protocol"), "json")
	if len(blocks) != 1 {
		t.Fatalf("found %d json blocks, want 1", len(blocks))
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(blocks[0]), &m); err != nil {
		t.Fatal(err)
	}
	hub, _ := GenerateKeypair()
	m["listenAddr"], m["privateKey"], m["subnet"] = "127.0.0.1:0", hub.PrivateKey.String(), "10.8.0.0/24"
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadServerConfig(writeConfig(t, string(b)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if !cfg.ProxyProtocol || !s.trustProxy(netip.MustParseAddr("10.0.1.7")) {
		t.Errorf("README config: proxyProtocol %v, 10.0.1.7 trusted %v", cfg.ProxyProtocol, s.trustProxy(netip.MustParseAddr("10.0.1.7")))
	}
}
