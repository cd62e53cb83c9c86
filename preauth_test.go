package warren

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/warrenvpn/warren/transport/ws"
)

func TestPreAuthConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		field  string
		mutate func(*ServerConfig)
	}{
		{"proxyHeaderTimeoutMs", func(c *ServerConfig) { c.ProxyHeaderTimeoutMs = -1 }},
		{"firstByteTimeoutMs", func(c *ServerConfig) { c.FirstByteTimeoutMs = -5 }},
		{"preAuthTimeoutMs", func(c *ServerConfig) { c.PreAuthTimeoutMs = -1 }},
		{"preAuthTimeoutMs", func(c *ServerConfig) { c.PreAuthTimeoutMs = 3_600_000 }},
		{"firstByteTimeoutMs", func(c *ServerConfig) { c.FirstByteTimeoutMs = 5 }},
	} {
		cfg := serverConfig(t, "10.8.0.0/24")
		tc.mutate(&cfg)
		_, err := NewServer(cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%s: got %v, want a *ConfigError naming it", tc.field, err)
		}
	}
	cfg := serverConfig(t, "10.8.0.0/24")
	cfg.ProxyHeaderTimeoutMs, cfg.FirstByteTimeoutMs, cfg.PreAuthTimeoutMs = 5000, 2000, 8000
	if _, err := NewServer(cfg); err != nil {
		t.Errorf("valid pre-auth timeouts refused: %v", err)
	}
}

// serverClosesWithin reads c until the hub closes it and returns how long
// that took, failing the test if it takes longer than limit.
func serverClosesWithin(t *testing.T, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("hub kept the connection open for %v", limit)
	}
	return time.Since(start)
}

func dialHub(t *testing.T, h *testHub) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", h.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestFirstByteTimeoutReachesWebSocketListener(t *testing.T) {
	h := newTestHub(t, func(c *ServerConfig) {
		c.TransportMode = TransportWebSocket
		c.FirstByteTimeoutMs = 300
		c.PreAuthTimeoutMs = 60_000
	})
	d := serverClosesWithin(t, dialHub(t, h), 10*time.Second)
	if d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("silent connection closed after %v, want about 300ms", d)
	}
}

func TestProxyProtocolV1AndHeaderTimeoutReachWebSocketListener(t *testing.T) {
	const v1 = "PROXY TCP4 203.0.113.7 192.0.2.1 4242 443\r\n"
	// v1 refused by default: closed at once, long before any timeout.
	h := newTestHub(t, func(c *ServerConfig) {
		c.TransportMode = TransportWebSocket
		c.ProxyProtocol = true
		c.ProxyProtocolTrustedSources = []string{"127.0.0.1"}
		c.PreAuthTimeoutMs = 60_000
	})
	c := dialHub(t, h)
	if _, err := c.Write([]byte(v1)); err != nil {
		t.Fatal(err)
	}
	if d := serverClosesWithin(t, c, 10*time.Second); d > 2*time.Second {
		t.Errorf("v1 header closed after %v, want at once", d)
	}

	// v1 enabled: the header is taken and the hub waits for TLS, until
	// the configured pre-auth deadline.
	h = newTestHub(t, func(c *ServerConfig) {
		c.TransportMode = TransportWebSocket
		c.ProxyProtocol = true
		c.ProxyProtocolTrustedSources = []string{"127.0.0.1"}
		c.ProxyProtocolV1 = true
		c.PreAuthTimeoutMs = 700
	})
	c = dialHub(t, h)
	if _, err := c.Write([]byte(v1)); err != nil {
		t.Fatal(err)
	}
	if d := serverClosesWithin(t, c, 10*time.Second); d < 500*time.Millisecond {
		t.Errorf("accepted v1 header closed after %v, want the 700ms pre-auth deadline", d)
	}

	// A header that does not finish within proxyHeaderTimeoutMs.
	h = newTestHub(t, func(c *ServerConfig) {
		c.TransportMode = TransportWebSocket
		c.ProxyProtocol = true
		c.ProxyProtocolTrustedSources = []string{"127.0.0.1"}
		c.ProxyHeaderTimeoutMs = 300
		c.PreAuthTimeoutMs = 60_000
	})
	c = dialHub(t, h)
	if _, err := c.Write([]byte("\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if d := serverClosesWithin(t, c, 10*time.Second); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("slow PROXY header closed after %v, want about 300ms", d)
	}
}

func TestPreAuthTimeoutBoundsNoiseHandshake(t *testing.T) {
	h := newTestHub(t, func(c *ServerConfig) {
		c.TransportMode = TransportWebSocket
		c.PreAuthTimeoutMs = 500
	})
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// TLS and the upgrade, then no HandshakeInit.
	c, err := ws.Dial(ctx, b.Config.ServerURL, ws.DialConfig{ServerCertHash: b.Config.ServerCertHash})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := c.ReadMessage()
		done <- err
	}()
	select {
	case <-done:
	case <-time.After(8 * time.Second):
		t.Fatal("hub held an unauthenticated connection past preAuthTimeoutMs (500ms)")
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("hub closed the connection after %v, before the 500ms pre-auth deadline", d)
	}
}
