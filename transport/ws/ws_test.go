package ws

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	proxyproto "github.com/pires/go-proxyproto"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCert is one self-signed certificate shared by the tests: key generation
// is cheap, but one pin makes failures easier to read.
var testCert = sync.OnceValue(func() tls.Certificate {
	c, err := SelfSignedCert()
	if err != nil {
		panic(err)
	}
	return c
})

func testPin() string { return CertHash(testCert().Leaf.Raw) }

// listen starts a Listener on loopback with the test certificate and closes it
// when the test ends.
func listen(t testing.TB, cfg ListenConfig) *Listener {
	t.Helper()
	if cfg.TLSConfig == nil {
		cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCert()}}
	}
	l, err := Listen(context.Background(), "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func wssURL(l *Listener) string { return "wss://" + l.Addr().String() + "/warren" }

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// acceptOne accepts one connection in the background.
func acceptOne(t testing.TB, l *Listener) <-chan *Conn {
	ch := make(chan *Conn, 1)
	go func() {
		c, err := l.Accept(ctxTimeout(t, 10*time.Second))
		if err != nil {
			t.Error(err)
			close(ch)
			return
		}
		ch <- c
	}()
	return ch
}

// dialPair returns a connected client and server Conn, both closed when the
// test ends.
func dialPair(t testing.TB, l *Listener) (client, server *Conn) {
	t.Helper()
	accepted := acceptOne(t, l)
	client, err := Dial(ctxTimeout(t, 10*time.Second), wssURL(l), DialConfig{ServerCertHash: testPin()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server = <-accepted
	if server == nil {
		t.FailNow()
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// pattern returns n bytes that depend on seed, so a mixed-up message shows.
func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + seed)
	}
	return b
}

func TestPinnedDialExchangesMessagesBothWays(t *testing.T) {
	l := listen(t, ListenConfig{})
	client, server := dialPair(t, l)

	if got, want := server.RemoteAddr(), mustAddrPort(t, client.raw.LocalAddr()); got != want {
		t.Errorf("server RemoteAddr = %v, want the client's address %v", got, want)
	}
	if got, want := client.RemoteAddr(), mustAddrPort(t, l.Addr()); got != want {
		t.Errorf("client RemoteAddr = %v, want %v", got, want)
	}

	// Sizes from 1 byte to 100 KiB, including both ends.
	const n = 300
	sizes := make([]int, n)
	for i := range sizes {
		sizes[i] = 1 + (i*7919)%(100<<10)
	}
	sizes[n-1] = 100 << 10

	// The server echoes every message with its bytes inverted.
	echoErr := make(chan error, 1)
	go func() {
		for range n {
			m, err := server.ReadMessage()
			if err != nil {
				echoErr <- err
				return
			}
			for i := range m {
				m[i] ^= 0xff
			}
			if err := server.WriteMessage(m); err != nil {
				echoErr <- err
				return
			}
		}
		echoErr <- nil
	}()
	writeErr := make(chan error, 1)
	go func() {
		for i, size := range sizes {
			if err := client.WriteMessage(pattern(size, i)); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	}()
	for i, size := range sizes {
		m, err := client.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		want := pattern(size, i)
		for j := range want {
			want[j] ^= 0xff
		}
		if !bytes.Equal(m, want) {
			t.Fatalf("message %d: got %d bytes, want %d bytes of the echo", i, len(m), size)
		}
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	if err := <-echoErr; err != nil {
		t.Fatal(err)
	}
}

func TestWrongPinFailsWithErrPinMismatch(t *testing.T) {
	l := listen(t, ListenConfig{})
	other := sha256.Sum256([]byte("another certificate"))
	pin := base64.StdEncoding.EncodeToString(other[:])
	_, err := Dial(ctxTimeout(t, 10*time.Second), wssURL(l), DialConfig{ServerCertHash: pin})
	if !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("Dial error = %v, want ErrPinMismatch", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "expected "+pin) || !strings.Contains(msg, "got "+testPin()) {
		t.Errorf("error %q does not say expected %s and got %s", msg, pin, testPin())
	}
}

func TestMalformedPinFailsBeforeDialing(t *testing.T) {
	for _, pin := range []string{"not base64!", base64.StdEncoding.EncodeToString([]byte("short"))} {
		_, err := Dial(context.Background(), "wss://127.0.0.1:1", DialConfig{ServerCertHash: pin})
		if err == nil || !strings.Contains(err.Error(), "ServerCertHash") {
			t.Errorf("pin %q: error = %v, want one naming ServerCertHash", pin, err)
		}
	}
}

func TestDialRejectsNonWSSURL(t *testing.T) {
	for _, u := range []string{"ws://127.0.0.1:1", "https://127.0.0.1:1", "wss://", "::bad"} {
		if _, err := Dial(context.Background(), u, DialConfig{}); err == nil {
			t.Errorf("Dial(%q) succeeded, want an error", u)
		}
	}
}

func TestWebPKIRejectsSelfSignedUnlessTrusted(t *testing.T) {
	l := listen(t, ListenConfig{})

	_, err := Dial(ctxTimeout(t, 10*time.Second), wssURL(l), DialConfig{})
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		t.Fatalf("Dial without pin or roots: error = %v, want a certificate verification error", err)
	}
	if errors.Is(err, ErrPinMismatch) {
		t.Errorf("WebPKI failure reported as a pin mismatch: %v", err)
	}

	roots := x509.NewCertPool()
	roots.AddCert(testCert().Leaf)
	accepted := acceptOne(t, l)
	c, err := Dial(ctxTimeout(t, 10*time.Second), wssURL(l), DialConfig{TLSConfig: &tls.Config{RootCAs: roots}})
	if err != nil {
		t.Fatalf("Dial with the certificate in RootCAs: %v", err)
	}
	defer c.Close()
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	defer s.Close()
	exchangeOne(t, c, s)
}

// exchangeOne sends one message each way.
func exchangeOne(t *testing.T, a, b *Conn) {
	t.Helper()
	for _, dir := range []struct{ from, to *Conn }{{a, b}, {b, a}} {
		if err := dir.from.WriteMessage([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		m, err := dir.to.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if string(m) != "hello" {
			t.Fatalf("got %q, want hello", m)
		}
	}
}

// countingTLS returns a server TLS config that counts ClientHellos it reads.
func countingTLS(hellos *atomic.Int64) *tls.Config {
	base := &tls.Config{Certificates: []tls.Certificate{testCert()}}
	return &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			hellos.Add(1)
			return base, nil
		},
	}
}

func TestRejectClosesBeforeTLSHandshake(t *testing.T) {
	var hellos atomic.Int64
	var seen atomic.Value
	l := listen(t, ListenConfig{
		TLSConfig: countingTLS(&hellos),
		Reject: func(a netip.Addr) bool {
			seen.Store(a)
			return true
		},
	})
	_, err := Dial(ctxTimeout(t, 10*time.Second), wssURL(l), DialConfig{ServerCertHash: testPin()})
	if err == nil {
		t.Fatal("Dial succeeded through a Reject that refuses everyone")
	}
	if got := l.Rejected(); got != 1 {
		t.Errorf("Rejected() = %d, want 1", got)
	}
	if got := hellos.Load(); got != 0 {
		t.Errorf("server read %d ClientHellos, want 0: Reject must run before TLS", got)
	}
	if got, want := seen.Load(), netip.MustParseAddr("127.0.0.1"); got != want {
		t.Errorf("Reject saw %v, want %v", got, want)
	}
}

func TestRejectFalseLetsConnectionThrough(t *testing.T) {
	l := listen(t, ListenConfig{Reject: func(netip.Addr) bool { return false }})
	c, s := dialPair(t, l)
	exchangeOne(t, c, s)
	if got := l.Rejected(); got != 0 {
		t.Errorf("Rejected() = %d, want 0", got)
	}
}

// dialWithProxyHeader connects to l over TCP, writes a PROXY header from src
// in the given version, then runs TLS and WebSocket over the same connection.
func dialWithProxyHeader(t *testing.T, l *Listener, version byte, src netip.AddrPort) (*websocket.Conn, error) {
	t.Helper()
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(src), l.Addr())
	if _, err := h.WriteTo(raw); err != nil {
		raw.Close()
		t.Fatal(err)
	}
	d := websocket.Dialer{
		NetDialContext: func(context.Context, string, string) (net.Conn, error) {
			return raw, nil
		},
		TLSClientConfig:  &tls.Config{InsecureSkipVerify: true},
		HandshakeTimeout: 10 * time.Second,
	}
	wc, _, err := d.Dial(wssURL(l), nil)
	if err != nil {
		raw.Close()
		return nil, err
	}
	t.Cleanup(func() { wc.Close() })
	return wc, nil
}

func TestProxyHeaderSourceIsRemoteAddr(t *testing.T) {
	src := netip.MustParseAddrPort("203.0.113.7:4242")
	for _, version := range []byte{2, 1} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			var seen atomic.Value
			l := listen(t, ListenConfig{
				ProxyProtocol:   true,
				ProxyProtocolV1: version == 1,
				Reject: func(a netip.Addr) bool {
					seen.Store(a)
					return false
				},
			})
			accepted := acceptOne(t, l)
			wc, err := dialWithProxyHeader(t, l, version, src)
			if err != nil {
				t.Fatal(err)
			}
			s := <-accepted
			if s == nil {
				t.FailNow()
			}
			defer s.Close()
			if got := s.RemoteAddr(); got != src {
				t.Errorf("RemoteAddr = %v, want the PROXY source %v", got, src)
			}
			if got := seen.Load(); got != src.Addr() {
				t.Errorf("Reject saw %v, want the PROXY source %v", got, src.Addr())
			}
			if err := wc.WriteMessage(websocket.BinaryMessage, []byte("via proxy")); err != nil {
				t.Fatal(err)
			}
			m, err := s.ReadMessage()
			if err != nil || string(m) != "via proxy" {
				t.Fatalf("ReadMessage = %q, %v", m, err)
			}
		})
	}
}

func TestProxyHeaderSourceIsCheckedByReject(t *testing.T) {
	var hellos atomic.Int64
	blocked := netip.MustParseAddr("203.0.113.7")
	l := listen(t, ListenConfig{
		TLSConfig:     countingTLS(&hellos),
		ProxyProtocol: true,
		Reject:        func(a netip.Addr) bool { return a == blocked },
	})
	if _, err := dialWithProxyHeader(t, l, 2, netip.AddrPortFrom(blocked, 4242)); err == nil {
		t.Fatal("dial from a blocked PROXY source succeeded")
	}
	if got := l.Rejected(); got != 1 {
		t.Errorf("Rejected() = %d, want 1", got)
	}
	if got := hellos.Load(); got != 0 {
		t.Errorf("server read %d ClientHellos, want 0", got)
	}
}

func TestBadProxyHeaderIsRejected(t *testing.T) {
	cases := map[string]func(t *testing.T, l *Listener) error{
		"no header": func(t *testing.T, l *Listener) error {
			_, err := Dial(ctxTimeout(t, 10*time.Second), wssURL(l), DialConfig{ServerCertHash: testPin()})
			return err
		},
		"garbage": func(t *testing.T, l *Listener) error {
			return rawExchange(t, l, []byte("PROXY NONSENSE 1 2 3\r\n"))
		},
		"bad v2 signature": func(t *testing.T, l *Listener) error {
			return rawExchange(t, l, []byte("\r\n\r\n\x00\r\nQUIT\n\x99\x11\x00\x0c"))
		},
	}
	for name, dial := range cases {
		t.Run(name, func(t *testing.T) {
			var hellos atomic.Int64
			l := listen(t, ListenConfig{TLSConfig: countingTLS(&hellos), ProxyProtocol: true})
			if err := dial(t, l); err == nil {
				t.Fatal("connection without a valid PROXY header got through")
			}
			if got := l.Rejected(); got != 1 {
				t.Errorf("Rejected() = %d, want 1", got)
			}
			if got := hellos.Load(); got != 0 {
				t.Errorf("server read %d ClientHellos, want 0", got)
			}
		})
	}
}

// rawExchange writes b on a new TCP connection to l and returns the error of
// reading the reply: the server should close the connection.
func rawExchange(t *testing.T, l *Listener, b []byte) error {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if err == nil {
		return fmt.Errorf("server replied %d bytes", n)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("server kept the connection open")
	}
	return err
}

func TestHandshakeTimeoutClosesSilentConnection(t *testing.T) {
	for _, proxy := range []bool{false, true} {
		t.Run(fmt.Sprintf("proxy=%v", proxy), func(t *testing.T) {
			l := listen(t, ListenConfig{HandshakeTimeout: 200 * time.Millisecond, ProxyProtocol: proxy})
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
			if !errors.Is(err, io.EOF) {
				t.Fatalf("Read = %v, want EOF when the server gives up", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("server closed a silent connection after %v, want about 200ms", d)
			}
			waitFor(t, "Silent() = 1", func() bool { return l.Silent() == 1 })
		})
	}
}

func TestPlainHTTPSRequestGetsBadRequest(t *testing.T) {
	l := listen(t, ListenConfig{})
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + l.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status = %s, want 400", resp.Status)
	}
}

func TestCloseUnblocksReadMessageAndIsIdempotent(t *testing.T) {
	l := listen(t, ListenConfig{})
	client, server := dialPair(t, l)

	readErr := make(chan error, 1)
	go func() {
		_, err := server.ReadMessage()
		readErr <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := server.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("ReadMessage after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock ReadMessage")
	}
	if err := server.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if _, err := server.ReadMessage(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadMessage after Close = %v, want net.ErrClosed", err)
	}
	if err := server.WriteMessage([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteMessage after Close = %v, want net.ErrClosed", err)
	}

	// The peer sees a normal close.
	if _, err := client.ReadMessage(); !errors.Is(err, io.EOF) {
		t.Errorf("peer ReadMessage = %v, want io.EOF", err)
	}
	// Repeated reads of a failed connection keep returning the error (gorilla
	// panics after 1000 of them if asked).
	for range 2000 {
		if _, err := client.ReadMessage(); err == nil {
			t.Fatal("ReadMessage succeeded on a closed connection")
		}
	}
}

func TestMessageSizeLimit(t *testing.T) {
	l := listen(t, ListenConfig{})
	client, server := dialPair(t, l)

	wrote := writeAsync(client, make([]byte, MaxMessageSize))
	m, err := server.ReadMessage()
	if err != nil || len(m) != MaxMessageSize {
		t.Fatalf("ReadMessage of %d bytes = %d bytes, %v", MaxMessageSize, len(m), err)
	}
	<-wrote

	wrote = writeAsync(client, make([]byte, MaxMessageSize+1))
	if _, err := server.ReadMessage(); !errors.Is(err, websocket.ErrReadLimit) {
		t.Fatalf("ReadMessage of %d bytes: error = %v, want ErrReadLimit", MaxMessageSize+1, err)
	}
	<-wrote
}

// writeAsync writes b on c in the background; the channel yields the result.
func writeAsync(c *Conn, b []byte) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- c.WriteMessage(b) }()
	return ch
}

func TestTextMessageIsAnError(t *testing.T) {
	l := listen(t, ListenConfig{})
	client, server := dialPair(t, l)
	if err := client.ws.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := server.ReadMessage(); err == nil || !strings.Contains(err.Error(), "text message") {
		t.Fatalf("ReadMessage = %v, want a text message error", err)
	}
}

func TestReadBufferDoesNotKeepLargeMessages(t *testing.T) {
	l := listen(t, ListenConfig{})
	client, server := dialPair(t, l)
	for _, size := range []int{MaxMessageSize, 10} {
		wrote := writeAsync(client, make([]byte, size))
		if _, err := server.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
	}
	if c := cap(server.buf); c > maxRetainedReadBuffer {
		t.Errorf("read buffer kept %d bytes after a small message, want at most %d", c, maxRetainedReadBuffer)
	}
}

func TestAcceptAfterCloseReturnsErrClosed(t *testing.T) {
	l := listen(t, ListenConfig{})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Accept(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
	if err := l.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
}

func TestAcceptHonorsContext(t *testing.T) {
	l := listen(t, ListenConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := l.Accept(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Accept = %v, want context.DeadlineExceeded", err)
	}
}

func TestCloseUnblocksAccept(t *testing.T) {
	l := listen(t, ListenConfig{})
	done := make(chan error, 1)
	go func() {
		_, err := l.Accept(context.Background())
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Accept")
	}
}

func TestListenerCloseClosesEverythingNotAccepted(t *testing.T) {
	l, err := Listen(context.Background(), "127.0.0.1:0", ListenConfig{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{testCert()}},
	})
	if err != nil {
		t.Fatal(err)
	}

	// One connection accepted (the caller's to close), two upgraded and
	// queued, one idle in TCP before TLS, one half through TLS.
	ctx := ctxTimeout(t, 10*time.Second)
	accepted := acceptOne(t, l)
	c1, err := Dial(ctx, wssURL(l), DialConfig{ServerCertHash: testPin()})
	if err != nil {
		t.Fatal(err)
	}
	s1 := <-accepted
	var queued []*Conn
	for range 2 {
		c, err := Dial(ctx, wssURL(l), DialConfig{ServerCertHash: testPin()})
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, c)
	}
	idle, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	half, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	halfTLS := tls.Client(half, &tls.Config{InsecureSkipVerify: true})
	go func() { _ = halfTLS.Handshake() }() // gets the ServerHello, then stalls on nothing
	time.Sleep(50 * time.Millisecond)

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	for i, c := range queued {
		if _, err := c.ReadMessage(); err == nil {
			t.Errorf("queued connection %d still open after Listener.Close", i)
		}
		c.Close()
	}
	for name, c := range map[string]net.Conn{"idle": idle, "half": half} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil && !errors.Is(err, net.ErrClosed) {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("%s connection still open after Listener.Close", name)
			}
		}
		c.Close()
	}

	// The accepted connection still works.
	exchangeOne(t, c1, s1)
	c1.Close()
	s1.Close()

	goleak.VerifyNone(t)
}

func TestAcceptQueueIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("dials many connections")
	}
	// A generous timeout: handshakes must not time out on a loaded machine.
	l := listen(t, ListenConfig{HandshakeTimeout: 3 * time.Second})
	const extra = 3
	n := acceptQueueLen + extra

	// Nobody accepts: the queue fills, and the connections that find it full
	// are closed after HandshakeTimeout. Dial a few at a time so that
	// handshakes finish within the timeout under the race detector.
	clients := make([]*Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for i := range clients {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := Dial(ctxTimeout(t, 10*time.Second), wssURL(l), DialConfig{ServerCertHash: testPin()})
			if err != nil {
				t.Error(err)
				return
			}
			clients[i] = c
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	if t.Failed() {
		return
	}

	var closed atomic.Int64
	for _, c := range clients {
		wg.Go(func() {
			_ = c.raw.SetReadDeadline(time.Now().Add(6 * time.Second))
			_, err := c.ReadMessage()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return
			}
			closed.Add(1)
		})
	}
	wg.Wait()
	if got := closed.Load(); got != extra {
		t.Errorf("%d connections closed while the accept queue was full, want %d", got, extra)
	}
	if got := len(l.queue); got != acceptQueueLen {
		t.Errorf("accept queue holds %d, want %d", got, acceptQueueLen)
	}
}

func TestSelfSignedCert(t *testing.T) {
	c, err := SelfSignedCert()
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.Leaf
	if leaf == nil {
		t.Fatal("Leaf not filled")
	}
	for _, h := range []string{"127.0.0.1", "::1", "localhost"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("default certificate: %v", err)
		}
	}
	if now := time.Now(); !leaf.NotBefore.Before(now.Add(-59*time.Minute)) || leaf.NotAfter.Before(now.AddDate(9, 11, 0)) {
		t.Errorf("validity %v to %v, want from an hour ago for ten years", leaf.NotBefore, leaf.NotAfter)
	}
	if CertHash(c.Certificate[0]) != CertHash(leaf.Raw) {
		t.Error("Leaf does not match Certificate[0]")
	}

	c, err = SelfSignedCert("vpn.example.com", "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"vpn.example.com", "192.0.2.1"} {
		if err := c.Leaf.VerifyHostname(h); err != nil {
			t.Error(err)
		}
	}
	if err := c.Leaf.VerifyHostname("localhost"); err == nil {
		t.Error("certificate for explicit hosts also covers localhost")
	}

	if _, err := SelfSignedCert(""); err == nil {
		t.Error("SelfSignedCert(\"\") succeeded")
	}
}

func TestCertHash(t *testing.T) {
	// sha256("abc"), base64 std.
	if got, want := CertHash([]byte("abc")), "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="; got != want {
		t.Errorf("CertHash = %s, want %s", got, want)
	}
}

func TestListenValidatesConfig(t *testing.T) {
	for name, cfg := range map[string]ListenConfig{
		"nil TLSConfig":  {},
		"no certificate": {TLSConfig: &tls.Config{}},
	} {
		if l, err := Listen(context.Background(), "127.0.0.1:0", cfg); err == nil {
			l.Close()
			t.Errorf("%s: Listen succeeded", name)
		}
	}
}

func mustAddrPort(t testing.TB, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, ok := addrPort(a)
	if !ok {
		t.Fatalf("%v is not a TCP address", a)
	}
	return ap
}

func BenchmarkConnRoundTrip(b *testing.B) {
	l := listen(b, ListenConfig{})
	client, server := dialPair(b, l)
	go func() {
		for {
			m, err := server.ReadMessage()
			if err != nil {
				return
			}
			if err := server.WriteMessage(m); err != nil {
				return
			}
		}
	}()
	msg := pattern(1400, 0)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := client.WriteMessage(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := client.ReadMessage(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	client.Close()
	server.Close()
}
