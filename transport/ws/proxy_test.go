package ws

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	proxyproto "github.com/pires/go-proxyproto"
)

// listenOn is listen on a given address; it skips the test if the address
// cannot be bound (no IPv6 on this host, say).
func listenOn(t testing.TB, addr string, cfg ListenConfig) *Listener {
	t.Helper()
	if cfg.TLSConfig == nil {
		cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCert()}}
	}
	l, err := Listen(context.Background(), addr, cfg)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// dialHeader connects to l over TCP from the local address from (the zero
// Addr: any), writes h, then runs TLS and the WebSocket upgrade over the same
// connection. It returns the TCP connection too, so a test can see its local
// address.
func dialHeader(t *testing.T, l *Listener, from netip.Addr, h *proxyproto.Header) (*websocket.Conn, net.Conn, error) {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if from.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))
	}
	raw, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if _, err := h.WriteTo(raw); err != nil {
		// The listener may close an untrusted peer before the header is
		// written; the upgrade below fails then.
		t.Logf("writing the PROXY header: %v", err)
	}
	wd := websocket.Dialer{
		NetDialContext: func(context.Context, string, string) (net.Conn, error) {
			return raw, nil
		},
		TLSClientConfig:  &tls.Config{InsecureSkipVerify: true},
		HandshakeTimeout: 10 * time.Second,
	}
	wc, _, err := wd.Dial(wssURL(l), nil)
	if err != nil {
		return nil, raw, err
	}
	t.Cleanup(func() { wc.Close() })
	return wc, raw, nil
}

// loudLogs is a slog handler that keeps every record at Warn level or above.
type loudLogs struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *loudLogs) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *loudLogs) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}

func (h *loudLogs) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *loudLogs) WithGroup(string) slog.Handler      { return h }

func (h *loudLogs) records() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.recs...)
}

// waitUntil polls cond until it holds, failing the test after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxyHeader is a PROXY v2 header from src to the listener.
func proxyHeader(l *Listener, src netip.AddrPort) *proxyproto.Header {
	return proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(src), l.Addr())
}

func TestUntrustedPeerIsRefusedBeforeItsHeaderIsRead(t *testing.T) {
	proxy := netip.MustParseAddr("127.0.0.2")
	src := netip.MustParseAddrPort("203.0.113.7:4242")
	var hellos atomic.Int64
	var asked sync.Map
	logs := &loudLogs{}
	l := listen(t, ListenConfig{
		TLSConfig:     countingTLS(&hellos),
		ProxyProtocol: true,
		TrustProxy: func(a netip.Addr) bool {
			asked.Store(a, true)
			return a == proxy
		},
		Logger: slog.New(logs),
	})

	// From 127.0.0.1, which is not the proxy: a valid header is no pass.
	if _, _, err := dialHeader(t, l, netip.MustParseAddr("127.0.0.1"), proxyHeader(l, src)); err == nil {
		t.Fatal("a PROXY header from an untrusted peer was accepted")
	}
	if got := l.Untrusted(); got != 1 {
		t.Errorf("Untrusted() = %d, want 1", got)
	}
	if got := l.Rejected(); got != 1 {
		t.Errorf("Rejected() = %d, want 1", got)
	}
	if got := hellos.Load(); got != 0 {
		t.Errorf("server read %d ClientHellos from an untrusted peer, want 0", got)
	}
	if _, ok := asked.Load(netip.MustParseAddr("127.0.0.1")); !ok {
		t.Error("TrustProxy was not asked about the peer 127.0.0.1")
	}
	recs := logs.records()
	if len(recs) != 1 || recs[0].Level != slog.LevelWarn {
		t.Fatalf("got %d records at Warn or above, want one Warn naming the peer", len(recs))
	}
	var peer string
	recs[0].Attrs(func(a slog.Attr) bool {
		if a.Key == "peer" {
			peer = a.Value.String()
		}
		return true
	})
	if ap, err := netip.ParseAddrPort(peer); err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("warning names peer %q, want 127.0.0.1:<port>", peer)
	}

	// From the proxy's address: the header's source is the client's.
	accepted := acceptOne(t, l)
	wc, _, err := dialHeader(t, l, proxy, proxyHeader(l, src))
	if err != nil {
		t.Fatalf("dial from the trusted proxy address: %v", err)
	}
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	defer s.Close()
	if got := s.RemoteAddr(); got != src {
		t.Errorf("RemoteAddr = %v, want the PROXY source %v", got, src)
	}
	if err := wc.WriteMessage(websocket.BinaryMessage, []byte("trusted")); err != nil {
		t.Fatal(err)
	}
	if m, err := s.ReadMessage(); err != nil || string(m) != "trusted" {
		t.Fatalf("ReadMessage = %q, %v", m, err)
	}
	if got := l.Untrusted(); got != 1 {
		t.Errorf("Untrusted() = %d after a trusted peer, want 1", got)
	}
}

func TestLocalHeaderIsTheProxysOwnConnection(t *testing.T) {
	logs := &loudLogs{}
	var rejectSaw atomic.Value
	l := listen(t, ListenConfig{
		ProxyProtocol: true,
		TrustProxy:    func(a netip.Addr) bool { return a.IsLoopback() },
		Reject: func(a netip.Addr) bool {
			rejectSaw.Store(a)
			return false
		},
		Logger: slog.New(logs),
	})
	local := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL}

	// A health check: LOCAL, then close. HAProxy closes its checks with a
	// reset; both ends are tried.
	for _, reset := range []bool{false, true} {
		// Read before the header is sent: the listener counts it
		// asynchronously, and may already have by the time WriteTo returns.
		before := l.Local()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := local.WriteTo(c); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "LOCAL header counted", func() bool { return l.Local() > before })
		if reset {
			_ = c.(*net.TCPConn).SetLinger(0)
		}
		c.Close()
	}
	waitUntil(t, "health checks leave the pre-auth phase", func() bool { return l.PreAuth() == 0 })
	if got := l.Rejected(); got != 0 {
		t.Errorf("Rejected() = %d after health checks, want 0", got)
	}
	if got := l.Silent(); got != 0 {
		t.Errorf("Silent() = %d after health checks, want 0", got)
	}

	// The proxy speaking for itself: LOCAL, then a WebSocket; the remote
	// address is the socket's peer.
	accepted := acceptOne(t, l)
	wc, raw, err := dialHeader(t, l, netip.Addr{}, local)
	if err != nil {
		t.Fatalf("dial with a LOCAL header: %v", err)
	}
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	defer s.Close()
	if got, want := s.RemoteAddr(), mustAddrPort(t, raw.LocalAddr()); got != want {
		t.Errorf("RemoteAddr after LOCAL = %v, want the socket's peer %v", got, want)
	}
	if got, want := rejectSaw.Load(), netip.MustParseAddr("127.0.0.1"); got != want {
		t.Errorf("Reject saw %v, want the proxy's own address %v", got, want)
	}
	if err := wc.WriteMessage(websocket.BinaryMessage, []byte("local")); err != nil {
		t.Fatal(err)
	}
	if m, err := s.ReadMessage(); err != nil || string(m) != "local" {
		t.Fatalf("ReadMessage = %q, %v", m, err)
	}
	if got := l.Local(); got != 3 {
		t.Errorf("Local() = %d, want 3", got)
	}
	if recs := logs.records(); len(recs) != 0 {
		t.Errorf("LOCAL connections logged %d records at Warn or above, first %q", len(recs), recs[0].Message)
	}
}

func TestProxyHeaderIPv6Source(t *testing.T) {
	var trustAsked, rejectSaw atomic.Value
	l := listenOn(t, "[::1]:0", ListenConfig{
		ProxyProtocol: true,
		TrustProxy: func(a netip.Addr) bool {
			trustAsked.Store(a)
			return a == netip.IPv6Loopback()
		},
		Reject: func(a netip.Addr) bool {
			rejectSaw.Store(a)
			return false
		},
	})
	for _, tc := range []struct{ send, want string }{
		{"[2001:db8::7]:4242", "[2001:db8::7]:4242"},
		{"[2001:db8:1:2:3:4:5:6]:65535", "[2001:db8:1:2:3:4:5:6]:65535"},
		// An IPv4 client of a dual-stack proxy, as some proxies write it.
		{"[::ffff:203.0.113.7]:4242", "203.0.113.7:4242"},
	} {
		t.Run(tc.send, func(t *testing.T) {
			want := netip.MustParseAddrPort(tc.want)
			accepted := acceptOne(t, l)
			wc, _, err := dialHeader(t, l, netip.Addr{}, proxyHeader(l, netip.MustParseAddrPort(tc.send)))
			if err != nil {
				t.Fatal(err)
			}
			s := <-accepted
			if s == nil {
				t.FailNow()
			}
			defer s.Close()
			if got := s.RemoteAddr(); got != want {
				t.Errorf("RemoteAddr = %v, want %v", got, want)
			}
			if got := rejectSaw.Load(); got != want.Addr() {
				t.Errorf("Reject saw %v, want %v", got, want.Addr())
			}
			if got := trustAsked.Load(); got != netip.IPv6Loopback() {
				t.Errorf("TrustProxy asked about %v, want ::1", got)
			}
			if err := wc.WriteMessage(websocket.BinaryMessage, []byte("v6")); err != nil {
				t.Fatal(err)
			}
			if m, err := s.ReadMessage(); err != nil || string(m) != "v6" {
				t.Fatalf("ReadMessage = %q, %v", m, err)
			}
		})
	}
}

func TestProxyHeaderWithUDPSourceIsRefused(t *testing.T) {
	var hellos atomic.Int64
	l := listen(t, ListenConfig{TLSConfig: countingTLS(&hellos), ProxyProtocol: true})
	h := proxyproto.HeaderProxyFromAddrs(2,
		net.UDPAddrFromAddrPort(netip.MustParseAddrPort("203.0.113.7:4242")),
		net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.1:443")))
	if _, _, err := dialHeader(t, l, netip.Addr{}, h); err == nil {
		t.Fatal("a PROXY header with a UDP source was accepted")
	} else if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial: %v (want the listener to close at once)", err)
	}
	if got := l.Rejected(); got != 1 {
		t.Errorf("Rejected() = %d, want 1", got)
	}
	if got := hellos.Load(); got != 0 {
		t.Errorf("server read %d ClientHellos, want 0", got)
	}
}
