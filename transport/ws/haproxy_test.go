package ws

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestProxyProtocolThroughHAProxy runs a real HAProxy in TCP mode with
// send-proxy-v2 in front of a Listener and checks that the server sees the
// client's own address, not HAProxy's.
func TestProxyProtocolThroughHAProxy(t *testing.T) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not installed: apt-get install haproxy")
	}
	l := listen(t, ListenConfig{ProxyProtocol: true})
	front := freeTCPPort(t)

	cfg := fmt.Sprintf(`global
    maxconn 64

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend warren
    bind 127.0.0.1:%d
    default_backend hub

backend hub
    server s1 %s send-proxy-v2
`, front, l.Addr())
	cfgPath := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(haproxy, "-f", cfgPath, "-db")
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out.String())
		}
	}()

	frontAddr := fmt.Sprintf("127.0.0.1:%d", front)
	waitListening(t, frontAddr)

	accepted := acceptOne(t, l)
	c, err := Dial(ctxTimeout(t, 10*time.Second), "wss://"+frontAddr, DialConfig{ServerCertHash: testPin()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	defer s.Close()

	client := mustAddrPort(t, c.raw.LocalAddr())
	if got := s.RemoteAddr(); got != client {
		t.Errorf("RemoteAddr through haproxy = %v, want the client's address %v", got, client)
	}
	if got, want := s.RemoteAddr().Addr(), netip.MustParseAddr("127.0.0.1"); got != want {
		t.Errorf("RemoteAddr address = %v, want %v", got, want)
	}
	exchangeOne(t, c, s)
}

// freeTCPPort returns a loopback port that was free a moment ago.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitListening waits until something accepts TCP connections on addr.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		cancel()
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy did not listen on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
