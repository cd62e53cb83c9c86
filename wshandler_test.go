package warren

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// handlerHub is a hub with no listener of its own whose WebSocket endpoint is
// served on /warren of an httptest TLS server, as an embedding program would.
type handlerHub struct {
	*Server
	ts *httptest.Server
	ca string // PEM of ts's certificate, for ClientConfig.ServerCA
}

func newHandlerHub(t *testing.T, mutate func(*ServerConfig)) *handlerHub {
	t.Helper()
	var hub atomic.Pointer[Server]
	mux := http.NewServeMux()
	mux.HandleFunc("/warren", func(w http.ResponseWriter, r *http.Request) {
		hub.Load().WebSocketHandler().ServeHTTP(w, r)
	})
	ts := httptest.NewTLSServer(mux)
	t.Cleanup(ts.Close)
	kp, err := GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig{
		PrivateKey:     kp.PrivateKey,
		Subnet:         netip.MustParsePrefix("10.8.0.0/24"),
		TransportMode:  TransportWebSocket,
		ForwardingMode: ForwardSocket,
		PublicEndpoint: "wss://" + strings.TrimPrefix(ts.URL, "https://") + "/warren",
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hub.Store(s)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}))
	return &handlerHub{Server: s, ts: ts, ca: ca}
}

func TestWebSocketHandlerServesHubOnAnotherHTTPServer(t *testing.T) {
	h := newHandlerHub(t, nil)
	if h.Addr() != nil {
		t.Errorf("Addr = %v, want nil without listenAddr", h.Addr())
	}
	if st := h.Status(); !slices.Contains(st.Transports, "websocket") {
		t.Errorf("Status.Transports = %v, want websocket", st.Transports)
	}
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Config.ServerURL != h.cfg.PublicEndpoint || b.Config.ServerCertHash != "" {
		t.Fatalf("bundle serverUrl %q, serverCertHash %q; want %q and no pin", b.Config.ServerURL, b.Config.ServerCertHash, h.cfg.PublicEndpoint)
	}
	// The server's certificate is verified, not pinned: without its CA the
	// client cannot connect.
	noCA, err := NewClient(b.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := noCA.Connect(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Connect without the CA: err = %v, want a certificate error", err)
	}
	noCA.Close()

	cfg := b.Config
	cfg.ServerCA = h.ca
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info, err := c.Connect(ctx)
	if err != nil {
		t.Fatalf("Connect through the handler with serverCa: %v", err)
	}
	ln, err := c.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	httpServer(t, ln, "hello")
	got := httpGet(t, h.Dial, "http://"+netip.AddrPortFrom(info.AssignedIP.Addr(), 8080).String()+"/")
	if want := "hello from " + h.HubIP().String(); !strings.HasPrefix(got, want) {
		t.Errorf("service behind the client answered %q, want %q...", got, want)
	}
	list := h.ListClients()
	if len(list) != 1 || list[0].RemoteAddr.Addr() != netip.MustParseAddr("127.0.0.1") || list[0].Transport != "websocket" {
		t.Fatalf("ListClients = %+v, want alice over websocket from 127.0.0.1", list)
	}

	// Close ends the session that came through the handler, and the
	// handler refuses later upgrades; TestMain checks that nothing leaks.
	events, unsub := c.Subscribe()
	defer unsub()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, func(e Event) bool { _, ok := e.(StatusChanged); return ok && c.Status() != StatusConnected })
	resp, err := h.ts.Client().Get(h.ts.URL + "/warren")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("request after Close: status %d, want 503", resp.StatusCode)
	}
}

func TestWebSocketHandlerAppliesConnectionIPBlockList(t *testing.T) {
	h := newHandlerHub(t, func(c *ServerConfig) { c.ConnectionIPBlockList = []string{"127.0.0.0/8"} })
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	b.Config.ServerCA = h.ca
	c, err := NewClient(b.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("Connect from a blocked address: err = %v, want HTTP 403", err)
	}
	if n := h.Statistics().ConnectionsRejected; n != 1 {
		t.Errorf("ConnectionsRejected = %d, want 1", n)
	}
}

func TestWebSocketHandlerAnswers503BeforeStartAnd404WithoutWebSocket(t *testing.T) {
	kp, err := GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig{PrivateKey: kp.PrivateKey, Subnet: netip.MustParsePrefix("10.8.0.0/24"),
		TransportMode: TransportWebSocket, ForwardingMode: ForwardTesting, PublicEndpoint: "wss://example.com/warren"}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec := httptest.NewRecorder()
	s.WebSocketHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/warren", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("before Start: status %d, want 503", rec.Code)
	}

	cfg.TransportMode = TransportQUIC
	cfg.ListenAddr = "127.0.0.1:0"
	q, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	rec = httptest.NewRecorder()
	q.WebSocketHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/warren", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("transportMode quic: status %d, want 404", rec.Code)
	}
}

func TestServerConfigWithoutListenAddr(t *testing.T) {
	kp, err := GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	base := ServerConfig{PrivateKey: kp.PrivateKey, Subnet: netip.MustParsePrefix("10.8.0.0/24"), ForwardingMode: ForwardTesting}
	for _, tc := range []struct {
		name   string
		mutate func(*ServerConfig)
		field  string // "" means valid
	}{
		{"no publicEndpoint", func(c *ServerConfig) { c.TransportMode = TransportWebSocket }, "publicEndpoint"},
		{"websocket only", func(c *ServerConfig) {
			c.TransportMode, c.PublicEndpoint = TransportWebSocket, "wss://example.com/warren"
		}, ""},
		{"QUIC without quicListenAddr", func(c *ServerConfig) { c.PublicEndpoint = "wss://example.com/warren" }, "quicListenAddr"},
		{"QUIC without a certificate", func(c *ServerConfig) {
			c.PublicEndpoint, c.QUICListenAddr = "wss://example.com/warren", "127.0.0.1:0"
		}, "tlsCertFile"},
		{"publicEndpoint URL of another scheme", func(c *ServerConfig) {
			c.TransportMode, c.PublicEndpoint = TransportWebSocket, "https://example.com/warren"
		}, "publicEndpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.mutate(&cfg)
			s, err := NewServer(cfg)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("NewServer: %v", err)
				}
				s.Close()
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("NewServer: err = %v, want a ConfigError on %s", err, tc.field)
			}
		})
	}
}

func TestClientConfigServerCA(t *testing.T) {
	kp, err := GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	h := newHandlerHub(t, nil)
	base := ClientConfig{ServerURL: "wss://example.com/warren", ServerPublicKey: kp.PublicKey, PrivateKey: kp.PrivateKey}
	for _, tc := range []struct {
		name   string
		mutate func(*ClientConfig)
		ok     bool
	}{
		{"a certificate", func(c *ClientConfig) { c.ServerCA = h.ca }, true},
		{"not PEM", func(c *ClientConfig) { c.ServerCA = "hello" }, false},
		{"a key, not a certificate", func(c *ClientConfig) {
			c.ServerCA = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}))
		}, false},
		{"with a pin", func(c *ClientConfig) { c.ServerCA, c.ServerCertHash = h.ca, strings.Repeat("A", 43)+"=" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.mutate(&cfg)
			c, err := NewClient(cfg)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != "serverCa" {
				t.Fatalf("NewClient: err = %v, want a ConfigError on serverCa", err)
			}
		})
	}
}
