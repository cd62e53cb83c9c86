package quic

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warrenvpn/warren/codec"
)

// streamless opens QUIC connections to l from the loopback address src that
// complete the handshake and never open their stream.
type streamless struct {
	t     testing.TB
	udp   *net.UDPConn
	tr    *quic.Transport
	conns []*quic.Conn
}

func newStreamless(t testing.TB, src string) *streamless {
	t.Helper()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)})
	if err != nil {
		t.Fatal(err)
	}
	s := &streamless{t: t, udp: udp, tr: &quic.Transport{Conn: udp}}
	t.Cleanup(func() {
		for _, qc := range s.conns {
			_ = qc.CloseWithError(0, "")
		}
		_ = s.tr.Close()
		_ = s.udp.Close()
	})
	return s
}

// dial completes one handshake, or returns the error.
func (s *streamless) dial(l *Listener) (*quic.Conn, error) {
	tlsConf, err := clientTLSConfig("127.0.0.1", DialConfig{ServerCertHash: testPin()})
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	qc, err := s.tr.Dial(ctx, l.Addr(), tlsConf, &quic.Config{EnableDatagrams: true, MaxIdleTimeout: time.Minute})
	if err != nil {
		return nil, err
	}
	s.conns = append(s.conns, qc)
	return qc, nil
}

// inBudget waits until l holds n connections in its pre-auth budget. A
// client's dial returns when the client has finished its handshake, before
// the server has (it still has to read the client's Finished), and the
// server finishes the handshakes of different connections concurrently; a
// test that needs the server to see connections in dial order waits for each
// to be in the budget before dialing the next.
func inBudget(t testing.TB, l *Listener, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.budget.Len() != n {
		if time.Now().After(deadline) {
			t.Fatalf("pre-auth budget holds %d connections after 10s, want %d", l.budget.Len(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// closedByServer waits for qc to be closed by the server.
func closedByServer(t testing.TB, qc *quic.Conn, within time.Duration) {
	t.Helper()
	select {
	case <-qc.Context().Done():
	case <-time.After(within):
		t.Fatal("server kept the connection open")
	}
}

// clientGetsIn dials l as a real client and returns once Accept has the
// connection.
func clientGetsIn(t testing.TB, l *Listener, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx := ctxTimeout(t, within)
	c, err := Dial(ctx, l.Addr().String(), DialConfig{ServerCertHash: testPin()})
	if err != nil {
		t.Fatalf("client could not connect: %v", err)
	}
	defer c.Close()
	if err := c.WriteMessage(frame(t, codec.HandshakeInit, nil)); err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatalf("client connected but did not reach Accept: %v", err)
	}
	s.Close()
	return time.Since(start)
}

// TestStreamlessConnectionsCannotStopAccept holds more connections that
// finish the QUIC handshake and never open a stream than the listener once
// took before it stopped accepting, and checks that a client still gets in.
func TestStreamlessConnectionsCannotStopAccept(t *testing.T) {
	if testing.Short() {
		t.Skip("makes hundreds of QUIC handshakes")
	}
	const (
		sources   = 30
		perSource = 10 // within the per-source budget: none is evicted
	)
	l := listen(t, ListenConfig{HandshakeTimeout: time.Minute})
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed int
	)
	for i := range sources {
		s := newStreamless(t, fmt.Sprintf("127.0.1.%d", i+1))
		wg.Go(func() {
			for range perSource {
				if _, err := s.dial(l); err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if failed > 0 {
		t.Logf("%d streamless connections were refused", failed)
	}
	took := clientGetsIn(t, l, 10*time.Second)
	t.Logf("client got in past %d streamless connections in %v", sources*perSource-failed, took)
	if got := l.Evicted(); got != 0 {
		t.Errorf("Evicted() = %d, want 0 within the budget", got)
	}
}

func TestFullPreAuthBudgetClosesOldestToLetClientIn(t *testing.T) {
	const max = 3
	l := listen(t, ListenConfig{MaxPreAuth: max, HandshakeTimeout: time.Minute})
	var conns []*quic.Conn
	for i := range max {
		qc, err := newStreamless(t, fmt.Sprintf("127.0.2.%d", i+1)).dial(l)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, qc)
		inBudget(t, l, i+1)
	}
	clientGetsIn(t, l, 10*time.Second)
	closedByServer(t, conns[0], 10*time.Second)
	for i, qc := range conns[1:] {
		if qc.Context().Err() != nil {
			t.Errorf("connection %d closed, want only the oldest", i+1)
		}
	}
	if got := l.Evicted(); got != 1 {
		t.Errorf("Evicted() = %d, want 1", got)
	}
}

func TestPreAuthPerSourceBoundClosesThatSourcesOldest(t *testing.T) {
	l := listen(t, ListenConfig{MaxPreAuthPerSource: 2, HandshakeTimeout: time.Minute})
	other, err := newStreamless(t, "127.0.3.1").dial(l)
	if err != nil {
		t.Fatal(err)
	}
	inBudget(t, l, 1)
	s := newStreamless(t, "127.0.3.2")
	var same []*quic.Conn
	for i := range 3 {
		qc, err := s.dial(l)
		if err != nil {
			t.Fatal(err)
		}
		same = append(same, qc)
		if i < 2 {
			// The third evicts the first: the budget stays at 3.
			inBudget(t, l, i+2)
		}
	}
	closedByServer(t, same[0], 10*time.Second)
	if same[1].Context().Err() != nil || same[2].Context().Err() != nil || other.Context().Err() != nil {
		t.Error("a connection other than the source's oldest was closed")
	}
	if got := l.Evicted(); got != 1 {
		t.Errorf("Evicted() = %d, want 1", got)
	}
}

func TestRetryProvesSourceAddressUnderLoad(t *testing.T) {
	// RetryAbove < 0: every attempt counts as under load.
	l := listen(t, ListenConfig{RetryAbove: -1})
	clientGetsIn(t, l, 10*time.Second)
	if got := l.Retries(); got == 0 {
		t.Error("Retries() = 0, want the client sent a Retry")
	}

	// The default: no Retry for a quiet listener, and no handshake left
	// counted in flight once they are done.
	l = listen(t, ListenConfig{})
	for range 3 {
		clientGetsIn(t, l, 10*time.Second)
	}
	if got := l.Retries(); got != 0 {
		t.Errorf("Retries() = %d on a quiet listener, want 0", got)
	}
	if got := l.handshaking.Load(); got != 0 {
		t.Errorf("%d handshakes counted in flight after all finished", got)
	}
}

func TestListenRefusesNegativeBudget(t *testing.T) {
	for _, cfg := range []ListenConfig{{MaxPreAuth: -1}, {MaxPreAuthPerSource: -1}} {
		cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCert()}}
		if l, err := Listen(context.Background(), "127.0.0.1:0", cfg); err == nil {
			l.Close()
			t.Errorf("Listen(%+v) succeeded", cfg)
		}
	}
}
