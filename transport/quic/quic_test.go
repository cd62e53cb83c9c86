package quic

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/transport/ws"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCert is one self-signed certificate shared by the tests, made the way
// the WebSocket listener's is, since the hub serves both with one.
var testCert = sync.OnceValue(func() tls.Certificate {
	c, err := ws.SelfSignedCert()
	if err != nil {
		panic(err)
	}
	return c
})

func testPin() string { return ws.CertHash(testCert().Leaf.Raw) }

// listenOn starts a Listener on addr with the test certificate and closes it
// when the test ends.
func listenOn(t testing.TB, addr string, cfg ListenConfig) *Listener {
	t.Helper()
	if cfg.TLSConfig == nil {
		cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCert()}}
	}
	l, err := Listen(context.Background(), addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func listen(t testing.TB, cfg ListenConfig) *Listener {
	t.Helper()
	return listenOn(t, "127.0.0.1:0", cfg)
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// frame encodes one frame or fails the test.
func frame(t testing.TB, typ codec.Type, payload []byte) []byte {
	t.Helper()
	b, err := codec.AppendFrame(nil, typ, payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// connect dials l with the test pin, sends hello as the client's first
// message (which is what makes the stream, and so the connection, reach
// Accept), and returns both ends, closed when the test ends.
func connect(t testing.TB, l *Listener, hello []byte) (client, server *Conn) {
	t.Helper()
	ctx := ctxTimeout(t, 10*time.Second)
	client, err := Dial(ctx, l.Addr().String(), DialConfig{ServerCertHash: testPin()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if err := client.WriteMessage(hello); err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

func TestStreamCarriesFramesBothWays(t *testing.T) {
	l := listen(t, ListenConfig{})
	hello := frame(t, codec.HandshakeInit, bytes.Repeat([]byte{1}, 96))
	client, server := connect(t, l, hello)

	got, err := server.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, hello) {
		t.Fatalf("server read % x, want % x", got, hello)
	}
	if want := netip.MustParseAddr("127.0.0.1"); server.RemoteAddr().Addr() != want {
		t.Errorf("server RemoteAddr = %v, want %v", server.RemoteAddr(), want)
	}
	if client.RemoteAddr().String() != l.Addr().String() {
		t.Errorf("client RemoteAddr = %v, want %v", client.RemoteAddr(), l.Addr())
	}

	// Two frames in one message come out as two messages; a maximum-size
	// frame comes out whole.
	resp := frame(t, codec.HandshakeResp, []byte("server hello"))
	big := frame(t, codec.IPPacket, bytes.Repeat([]byte{0xab}, codec.MaxPayload))
	batch := append(append([]byte{}, resp...), big...)
	if err := server.WriteMessage(batch); err != nil {
		t.Fatal(err)
	}
	for _, want := range [][]byte{resp, big} {
		got, err := client.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("client read %d bytes starting % x, want %d starting % x", len(got), got[:min(8, len(got))], len(want), want[:8])
		}
	}

	ka := frame(t, codec.Keepalive, []byte("0123456789abcdef"))
	if err := client.WriteMessage(ka); err != nil {
		t.Fatal(err)
	}
	if got, err := server.ReadMessage(); err != nil || !bytes.Equal(got, ka) {
		t.Fatalf("server read % x, %v; want % x", got, err, ka)
	}
}

// datagramWindow is how far sendDatagrams lets the sender run ahead of the
// receiver: half of quic-go's 128-datagram receive queue, which drops what
// arrives while it is full.
const datagramWindow = 64

// sendDatagrams sends n datagrams of size bytes from c, each starting with
// its sequence number. It keeps at most datagramWindow datagrams ahead of
// received (the receiver's count), waiting up to 50 ms for it to catch up
// before going on regardless, so a lost datagram cannot stall it. The test
// then measures what the transport loses, not what a receiver starved of CPU
// (two shared CPUs, the race detector, other packages' tests) fails to take
// from quic-go's queue in time; BenchmarkDatagramThroughput reports that.
func sendDatagrams(c *Conn, n, size int, received *atomic.Int64) error {
	b := make([]byte, size)
	for i := range n {
		for wait := 0; int64(i)-received.Load() > datagramWindow && wait < 500; wait++ {
			time.Sleep(100 * time.Microsecond)
		}
		b[0], b[1] = byte(i>>8), byte(i)
		if err := c.SendDatagram(b); err != nil {
			return fmt.Errorf("datagram %d: %w", i, err)
		}
	}
	return nil
}

// countDatagrams receives datagrams of size bytes on c until n have arrived
// or ctx ends, counting them in received.
func countDatagrams(ctx context.Context, t testing.TB, c *Conn, n, size int, received *atomic.Int64) {
	for received.Load() < int64(n) {
		b, err := c.ReceiveDatagram(ctx)
		if err != nil {
			if ctx.Err() == nil {
				t.Errorf("ReceiveDatagram: %v", err)
			}
			return
		}
		if len(b) != size {
			t.Errorf("datagram of %d bytes, want %d", len(b), size)
		}
		received.Add(1)
	}
}

func TestDatagramsArriveBothWays(t *testing.T) {
	const n, size = 1000, 1200
	l := listen(t, ListenConfig{})
	client, server := connect(t, l, frame(t, codec.HandshakeInit, nil))

	for _, dir := range []struct {
		name     string
		from, to *Conn
	}{
		{"client to server", client, server},
		{"server to client", server, client},
	} {
		t.Run(dir.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var received atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				countDatagrams(ctx, t, dir.to, n, size, &received)
			}()
			start := time.Now()
			err := sendDatagrams(dir.from, n, size, &received)
			// Whatever has not arrived a second after the last send is lost.
			stop := time.AfterFunc(time.Second, cancel)
			defer stop.Stop()
			<-done
			arrived := int(received.Load())
			t.Logf("sent in %v", time.Since(start))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d of %d datagrams of %d bytes arrived", arrived, n, size)
			if arrived < n*95/100 {
				t.Errorf("%d of %d datagrams arrived, want at least 95%%", arrived, n)
			}
		})
	}
}

func TestWrongPinFailsWithErrPinMismatch(t *testing.T) {
	l := listen(t, ListenConfig{})
	other := sha256.Sum256([]byte("another certificate"))
	pin := base64.StdEncoding.EncodeToString(other[:])
	_, err := Dial(ctxTimeout(t, 10*time.Second), l.Addr().String(), DialConfig{ServerCertHash: pin})
	if !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("Dial error = %v, want ErrPinMismatch", err)
	}
	if !errors.Is(err, ws.ErrPinMismatch) {
		t.Errorf("Dial error = %v, want ws.ErrPinMismatch too: the transports share it", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "expected "+pin) || !strings.Contains(msg, "got "+testPin()) {
		t.Errorf("error %q does not say expected %s and got %s", msg, pin, testPin())
	}
}

func TestMalformedPinFailsBeforeDialing(t *testing.T) {
	for _, pin := range []string{"not base64!", base64.StdEncoding.EncodeToString([]byte("short"))} {
		_, err := Dial(context.Background(), "127.0.0.1:1", DialConfig{ServerCertHash: pin})
		if err == nil || !strings.Contains(err.Error(), "ServerCertHash") {
			t.Errorf("pin %q: error = %v, want one naming ServerCertHash", pin, err)
		}
	}
}

func TestDialWithoutListenerFailsWithinHandshakeTimeout(t *testing.T) {
	// A port that was free a moment ago.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()

	const timeout = time.Second
	start := time.Now()
	c, err := Dial(context.Background(), addr, DialConfig{ServerCertHash: testPin(), HandshakeTimeout: timeout})
	elapsed := time.Since(start)
	if err == nil {
		c.Close()
		t.Fatal("Dial succeeded with no listener")
	}
	t.Logf("Dial failed after %v: %v", elapsed, err)
	if elapsed > timeout+500*time.Millisecond {
		t.Errorf("Dial took %v, want about %v at most", elapsed, timeout)
	}
}

func TestOversizedDatagramFailsWithErrDatagramTooLarge(t *testing.T) {
	l := listen(t, ListenConfig{})
	client, server := connect(t, l, frame(t, codec.HandshakeInit, nil))

	room := client.MaxDatagramSize()
	if room < 1200 {
		t.Fatalf("MaxDatagramSize = %d, want at least 1200", room)
	}
	err := client.SendDatagram(make([]byte, room+1))
	if !errors.Is(err, ErrDatagramTooLarge) {
		t.Fatalf("SendDatagram(%d bytes) = %v, want ErrDatagramTooLarge", room+1, err)
	}
	if !strings.Contains(err.Error(), fmt.Sprint(room)) {
		t.Errorf("error %q does not give the limit %d", err, room)
	}
	if got := client.MaxDatagramSize(); got != room {
		t.Errorf("MaxDatagramSize after the failure = %d, want %d", got, room)
	}

	if err := client.SendDatagram(make([]byte, room)); err != nil {
		t.Fatalf("SendDatagram(%d bytes) = %v, want it sent", room, err)
	}
	b, err := server.ReceiveDatagram(ctxTimeout(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != room {
		t.Errorf("server received %d bytes, want %d", len(b), room)
	}
}

// TestDatagramRoomStartsAt1243AndGrowsWithPMTUDiscovery measures the figures
// DESIGN §3 quotes, on IPv4 and IPv6 loopback.
func TestDatagramRoomStartsAt1243AndGrowsWithPMTUDiscovery(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			if pc, err := net.ListenPacket("udp", addr); err != nil {
				t.Skipf("no loopback for %s: %v", addr, err)
			} else {
				pc.Close()
			}
			l := listenOn(t, addr, ListenConfig{})
			client, server := connect(t, l, frame(t, codec.HandshakeInit, nil))
			start := client.MaxDatagramSize()
			t.Logf("%s: datagram room at start: client %d, server %d", addr, start, server.MaxDatagramSize())
			if start != InitialDatagramRoom-lengthSlack {
				t.Errorf("room at start = %d, want %d", start, InitialDatagramRoom-lengthSlack)
			}

			// Traffic both ways for a few seconds gives PMTU discovery
			// acknowledged packets to probe between.
			done := make(chan struct{})
			var wg sync.WaitGroup
			for _, c := range []*Conn{client, server} {
				wg.Go(func() {
					for {
						if _, err := c.ReceiveDatagram(context.Background()); err != nil {
							return
						}
					}
				})
			}
			wg.Go(func() {
				tick := time.NewTicker(5 * time.Millisecond)
				defer tick.Stop()
				b := make([]byte, 1000)
				for {
					select {
					case <-done:
						return
					case <-tick.C:
					}
					_ = client.SendDatagram(b)
					_ = server.SendDatagram(b)
				}
			})
			time.Sleep(3 * time.Second)
			close(done)
			end, serverEnd := client.MaxDatagramSize(), server.MaxDatagramSize()
			t.Logf("%s: datagram room after 3s of traffic: client %d, server %d", addr, end, serverEnd)
			if end < start {
				t.Errorf("room shrank from %d to %d", start, end)
			}
			client.Close()
			server.Close()
			wg.Wait()
		})
	}
}

func TestRejectRefusesBeforeHandshakeAndCounts(t *testing.T) {
	var asked atomic.Value
	l := listen(t, ListenConfig{Reject: func(a netip.Addr) bool {
		asked.Store(a)
		return true
	}})
	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept(ctxTimeout(t, time.Second))
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()

	_, err := Dial(ctxTimeout(t, 5*time.Second), l.Addr().String(), DialConfig{ServerCertHash: testPin()})
	if err == nil {
		t.Fatal("Dial succeeded, want the connection refused")
	}
	t.Logf("Dial error: %v", err)
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Errorf("Dial error = %v, want CONNECTION_REFUSED", err)
	}
	if got := l.Rejected(); got != 1 {
		t.Errorf("Rejected = %d, want 1", got)
	}
	// A second attempt is another connection.
	if _, err := Dial(ctxTimeout(t, 5*time.Second), l.Addr().String(), DialConfig{ServerCertHash: testPin()}); err == nil {
		t.Fatal("second Dial succeeded, want the connection refused")
	}
	if got := l.Rejected(); got != 2 {
		t.Errorf("Rejected after a second attempt = %d, want 2", got)
	}
	if a, _ := asked.Load().(netip.Addr); a != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("Reject was asked about %v, want 127.0.0.1", a)
	}
	if err := <-accepted; err == nil {
		t.Error("Accept returned a rejected connection")
	}
}

func TestCloseUnblocksReadsAndIsIdempotent(t *testing.T) {
	l := listen(t, ListenConfig{})
	client, _ := connect(t, l, frame(t, codec.HandshakeInit, nil))

	readErr := make(chan error, 1)
	dgramErr := make(chan error, 1)
	go func() {
		_, err := client.ReadMessage()
		readErr <- err
	}()
	go func() {
		_, err := client.ReceiveDatagram(context.Background())
		dgramErr <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan error{"ReadMessage": readErr, "ReceiveDatagram": dgramErr} {
		select {
		case err := <-ch:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s after Close = %v, want net.ErrClosed", name, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("%s still blocked after Close", name)
		}
	}
	if err := client.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := client.WriteMessage(frame(t, codec.Keepalive, nil)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteMessage after Close = %v, want net.ErrClosed", err)
	}
	if err := client.SendDatagram([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SendDatagram after Close = %v, want net.ErrClosed", err)
	}
}

// TestLastFrameBeforeCloseArrives checks the graceful end: a Disconnect
// written just before Close reaches the peer, which then sees io.EOF, and the
// closing side does not wait out its grace period because the peer's read
// ends the connection.
func TestLastFrameBeforeCloseArrives(t *testing.T) {
	l := listen(t, ListenConfig{})
	client, server := connect(t, l, frame(t, codec.HandshakeInit, nil))
	if _, err := server.ReadMessage(); err != nil {
		t.Fatal(err)
	}

	bye := frame(t, codec.Disconnect, []byte("client disabled"))
	reads := make(chan error, 1)
	go func() {
		got, err := client.ReadMessage()
		if err == nil && !bytes.Equal(got, bye) {
			err = fmt.Errorf("read % x, want % x", got, bye)
		}
		if err == nil {
			_, err = client.ReadMessage()
			if !errors.Is(err, io.EOF) {
				err = fmt.Errorf("read after Disconnect = %v, want io.EOF", err)
			} else {
				err = nil
			}
		}
		reads <- err
	}()
	if err := server.WriteMessage(bye); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	server.Close()
	if d := time.Since(start); d >= closeGrace {
		t.Errorf("Close took %v: the peer's read did not end it early", d)
	}
	if err := <-reads; err != nil {
		t.Error(err)
	}
	if _, err := client.ReceiveDatagram(ctxTimeout(t, 2*time.Second)); !errors.Is(err, io.EOF) {
		t.Errorf("ReceiveDatagram after the peer's close = %v, want io.EOF", err)
	}
}

func TestMalformedFrameIsAnError(t *testing.T) {
	l := listen(t, ListenConfig{})
	_, server := connect(t, l, []byte{0xff, 0, 0, 0, 1, 0})
	_, err := server.ReadMessage()
	if !errors.Is(err, codec.ErrUnknownType) {
		t.Errorf("ReadMessage = %v, want codec.ErrUnknownType", err)
	}
}

// TestClientWithoutStreamIsClosed: a client that completes the QUIC
// handshake but never opens its stream is closed after the handshake timeout
// and never reaches Accept.
func TestClientWithoutStreamIsClosed(t *testing.T) {
	l := listen(t, ListenConfig{HandshakeTimeout: 300 * time.Millisecond})
	tlsConf, err := clientTLSConfig("127.0.0.1", DialConfig{ServerCertHash: testPin()})
	if err != nil {
		t.Fatal(err)
	}
	qc, err := quic.DialAddr(ctxTimeout(t, 5*time.Second), l.Addr().String(), tlsConf, &quic.Config{EnableDatagrams: true})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	select {
	case <-qc.Context().Done():
		t.Logf("closed by server: %v", context.Cause(qc.Context()))
	case <-time.After(3 * time.Second):
		t.Fatal("server kept a connection without a stream open")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if c, err := l.Accept(ctx); err == nil {
		c.Close()
		t.Error("Accept returned a connection without a stream")
	}
}

func TestListenerCloseClosesConnectionsWithoutLeaks(t *testing.T) {
	l, err := Listen(context.Background(), "127.0.0.1:0", ListenConfig{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{testCert()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var clients []*Conn
	for range 3 {
		c, _ := connect(t, l, frame(t, codec.HandshakeInit, nil))
		clients = append(clients, c)
	}
	// One more that has opened its stream but not been accepted.
	pending, err := Dial(ctxTimeout(t, 5*time.Second), l.Addr().String(), DialConfig{ServerCertHash: testPin()})
	if err != nil {
		t.Fatal(err)
	}
	if err := pending.WriteMessage(frame(t, codec.HandshakeInit, nil)); err != nil {
		t.Fatal(err)
	}
	clients = append(clients, pending)
	time.Sleep(100 * time.Millisecond)

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if _, err := l.Accept(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
	for i, c := range clients {
		_, err := c.ReceiveDatagram(ctxTimeout(t, 3*time.Second))
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("client %d: connection still open after the listener closed", i)
		}
		c.Close()
	}
	goleak.VerifyNone(t)
}
