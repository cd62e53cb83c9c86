package ws

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// waitFor polls cond until it holds, failing the test after 20 seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dialFrom opens a TCP connection to l from the loopback address src.
func dialFrom(t testing.TB, l *Listener, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reports how long it took the server to close c, reading until
// it does; it fails the test if that takes longer than limit.
func closedWithin(t testing.TB, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	d := time.Since(start)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("server kept the connection open for %v", limit)
	}
	return d
}

// isOpen reports whether the server still holds c open: a short read times out.
func isOpen(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, os.ErrDeadlineExceeded)
}

func TestListenConfigDefaults(t *testing.T) {
	var cfg ListenConfig
	if err := cfg.normalize(); err != nil {
		t.Fatal(err)
	}
	want := ListenConfig{
		HandshakeTimeout:    10 * time.Second,
		FirstByteTimeout:    3 * time.Second,
		ProxyHeaderTimeout:  5 * time.Second,
		MaxPreAuth:          1024,
		MaxPreAuthPerSource: 32,
	}
	if cfg.HandshakeTimeout != want.HandshakeTimeout || cfg.FirstByteTimeout != want.FirstByteTimeout ||
		cfg.ProxyHeaderTimeout != want.ProxyHeaderTimeout || cfg.MaxPreAuth != want.MaxPreAuth ||
		cfg.MaxPreAuthPerSource != want.MaxPreAuthPerSource || cfg.ProxyProtocolV1 {
		t.Errorf("normalized zero config = %+v, want %+v", cfg, want)
	}
	for name, bad := range map[string]ListenConfig{
		"HandshakeTimeout":    {HandshakeTimeout: -1},
		"FirstByteTimeout":    {FirstByteTimeout: -time.Second},
		"ProxyHeaderTimeout":  {ProxyHeaderTimeout: -time.Second},
		"MaxPreAuth":          {MaxPreAuth: -1},
		"MaxPreAuthPerSource": {MaxPreAuthPerSource: -1},
	} {
		bad.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCert()}}
		if l, err := Listen(context.Background(), "127.0.0.1:0", bad); err == nil {
			l.Close()
			t.Errorf("negative %s accepted", name)
		}
	}
}

func TestSilentConnectionClosedAfterFirstByteTimeout(t *testing.T) {
	l := listen(t, ListenConfig{FirstByteTimeout: 300 * time.Millisecond, HandshakeTimeout: time.Minute})
	c := dialFrom(t, l, "127.0.0.1")
	d := closedWithin(t, c, 10*time.Second)
	if d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("silent connection closed after %v, want about 300ms", d)
	}
	waitFor(t, "Silent() = 1", func() bool { return l.Silent() == 1 })

	// A connection that has spoken is held to HandshakeTimeout instead.
	l2 := listen(t, ListenConfig{FirstByteTimeout: 100 * time.Millisecond, HandshakeTimeout: 800 * time.Millisecond})
	c2 := dialFrom(t, l2, "127.0.0.1")
	if _, err := c2.Write([]byte{0x16}); err != nil { // the start of a TLS record
		t.Fatal(err)
	}
	d = closedWithin(t, c2, 10*time.Second)
	if d < 600*time.Millisecond {
		t.Errorf("connection that sent a byte closed after %v, want HandshakeTimeout (800ms)", d)
	}
	if got := l2.Silent(); got != 0 {
		t.Errorf("Silent() = %d, want 0", got)
	}
}

func TestFullPreAuthBudgetClosesOldestToLetClientIn(t *testing.T) {
	const max = 4
	l := listen(t, ListenConfig{MaxPreAuth: max, FirstByteTimeout: time.Minute, HandshakeTimeout: time.Minute})
	var silent []net.Conn
	for i := range max {
		silent = append(silent, dialFrom(t, l, fmt.Sprintf("127.0.0.%d", 10+i)))
		waitFor(t, "connection in the budget", func() bool { return l.PreAuth() == i+1 })
	}
	accepted := acceptOne(t, l)
	start := time.Now()
	c, err := Dial(ctxTimeout(t, 10*time.Second), wssURL(l), DialConfig{ServerCertHash: testPin()})
	if err != nil {
		t.Fatalf("client locked out by %d silent connections: %v", max, err)
	}
	defer c.Close()
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	defer s.Close()
	t.Logf("client connected in %v with the budget full", time.Since(start))
	exchangeOne(t, c, s)

	// The oldest silent connection made room; the others are still open.
	closedWithin(t, silent[0], 10*time.Second)
	for i, sc := range silent[1:] {
		if !isOpen(sc) {
			t.Errorf("silent connection %d closed, want only the oldest", i+1)
		}
	}
	if got := l.Evicted(); got != 1 {
		t.Errorf("Evicted() = %d, want 1", got)
	}
}

func TestPreAuthPerSourceBoundClosesThatSourcesOldest(t *testing.T) {
	l := listen(t, ListenConfig{MaxPreAuthPerSource: 2, FirstByteTimeout: time.Minute, HandshakeTimeout: time.Minute})
	other := dialFrom(t, l, "127.0.0.20")
	var same []net.Conn
	for i := range 3 {
		same = append(same, dialFrom(t, l, "127.0.0.21"))
		if i < 2 {
			waitFor(t, "connection in the budget", func() bool { return l.PreAuth() == i+2 })
		}
	}
	closedWithin(t, same[0], 10*time.Second)
	if !isOpen(same[1]) || !isOpen(same[2]) || !isOpen(other) {
		t.Error("a connection other than the source's oldest was closed")
	}
	if got := l.Evicted(); got != 1 {
		t.Errorf("Evicted() = %d, want 1", got)
	}
}

func TestProxyV1HeaderRefusedUnlessEnabled(t *testing.T) {
	src := netip.MustParseAddrPort("203.0.113.7:4242")
	for _, enabled := range []bool{false, true} {
		t.Run(fmt.Sprintf("v1=%v", enabled), func(t *testing.T) {
			var hellos atomic.Int64
			l := listen(t, ListenConfig{TLSConfig: countingTLS(&hellos), ProxyProtocol: true, ProxyProtocolV1: enabled})
			_, err := dialWithProxyHeader(t, l, 1, src)
			if enabled {
				if err != nil {
					t.Fatalf("v1 header refused with ProxyProtocolV1 set: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("v1 header accepted by default")
			}
			if got := l.Rejected(); got != 1 {
				t.Errorf("Rejected() = %d, want 1", got)
			}
			if got := hellos.Load(); got != 0 {
				t.Errorf("server read %d ClientHellos, want 0", got)
			}
			// v2 still works.
			if _, err := dialWithProxyHeader(t, l, 2, src); err != nil {
				t.Fatalf("v2 header refused: %v", err)
			}
		})
	}
}

func TestProxyHeaderTimeoutClosesSlowHeader(t *testing.T) {
	l := listen(t, ListenConfig{
		ProxyProtocol:      true,
		ProxyHeaderTimeout: 300 * time.Millisecond,
		FirstByteTimeout:   time.Minute,
		HandshakeTimeout:   time.Minute,
	})
	c := dialFrom(t, l, "127.0.0.1")
	// The first bytes of a v2 signature, then nothing.
	if _, err := c.Write([]byte("\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	d := closedWithin(t, c, 10*time.Second)
	if d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("slow PROXY header closed after %v, want about 300ms", d)
	}
	waitFor(t, "Rejected() = 1", func() bool { return l.Rejected() == 1 })
}

// TestClientGetsInDuringSilentAndJunkFlood holds 1,000 silent connections
// and 100 that send junk against the listener, each re-opened as soon as the
// server closes it, and checks that a client still connects in under 2 s,
// every time; that the server closes silent connections within their
// deadline; and that the heap (with goroutine stacks) stays bounded.
func TestClientGetsInDuringSilentAndJunkFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("opens over a thousand connections")
	}
	const (
		silentN       = 1000
		junkN         = 100
		silentSources = 200 // 127.0.1.x and 127.0.2.x
		junkSources   = 10  // 127.0.3.x
		clientTries   = 5
		clientLimit   = 2 * time.Second
		heapBound     = 256 << 20
	)
	raiseFDLimit(t, 2*(silentN+junkN)+1024)

	// Defaults, except a generous pre-auth deadline: the silent ones must
	// be closed by FirstByteTimeout (3 s), not by it.
	l := listen(t, ListenConfig{})
	accepted := make(chan *Conn)
	acceptCtx, stopAccept := context.WithCancel(context.Background())
	var acceptWG sync.WaitGroup
	acceptWG.Go(func() {
		for {
			c, err := l.Accept(acceptCtx)
			if err != nil {
				return
			}
			select {
			case accepted <- c:
			case <-acceptCtx.Done():
				c.Close()
				return
			}
		}
	})

	var (
		stop        atomic.Bool
		wg          sync.WaitGroup
		live        atomic.Int64 // attacker connections open now
		opened      atomic.Int64
		maxLifetime atomic.Int64 // of a silent connection, in ns
		dialErrs    atomic.Int64
	)
	attack := func(src string, junk bool) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		buf := make([]byte, 512)
		for !stop.Load() {
			c, err := d.Dial("tcp", l.Addr().String())
			if err != nil {
				dialErrs.Add(1)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			opened.Add(1)
			live.Add(1)
			start := time.Now()
			if junk {
				_, _ = c.Write([]byte("\x16\x03\x01\x00\x05junk!GET / HTTP/1.1\r\n\r\n"))
			}
			for {
				if _, err := c.Read(buf); err != nil {
					break
				}
			}
			if !junk && !stop.Load() {
				life := int64(time.Since(start))
				for cur := maxLifetime.Load(); life > cur && !maxLifetime.CompareAndSwap(cur, life); cur = maxLifetime.Load() {
				}
			}
			live.Add(-1)
			c.Close()
		}
	}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapAlloc + ms.StackInuse

	for i := range silentN {
		wg.Go(func() { attack(fmt.Sprintf("127.0.%d.%d", 1+i%silentSources/100, 1+i%100), false) })
	}
	for i := range junkN {
		wg.Go(func() { attack(fmt.Sprintf("127.0.3.%d", 1+i%junkSources), true) })
	}
	stopFlood := func() {
		if stop.Swap(true) {
			return
		}
		stopAccept()
		l.Close() // closes every attacker connection the server holds
		wg.Wait()
		acceptWG.Wait()
	}
	defer stopFlood()

	var heapMax atomic.Uint64
	sampleDone := make(chan struct{})
	var sampleWG sync.WaitGroup
	sampleWG.Go(func() {
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-sampleDone:
				return
			case <-tk.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if m := ms.HeapAlloc + ms.StackInuse; m > heapMax.Load() {
					heapMax.Store(m)
				}
			}
		}
	})
	defer func() {
		close(sampleDone)
		sampleWG.Wait()
	}()

	waitFor(t, "the flood to open its connections", func() bool { return live.Load() >= silentN })
	time.Sleep(500 * time.Millisecond) // let the churn settle in

	for i := range clientTries {
		start := time.Now()
		c, err := Dial(ctxTimeout(t, 10*time.Second), wssURL(l), DialConfig{ServerCertHash: testPin()})
		took := time.Since(start)
		if err != nil {
			t.Fatalf("try %d: client could not connect during the flood (after %v): %v", i, took, err)
		}
		var s *Conn
		select {
		case s = <-accepted:
		case <-time.After(10 * time.Second):
			t.Fatalf("try %d: client connected but Accept did not return it", i)
		}
		exchangeOne(t, c, s)
		c.Close()
		s.Close()
		t.Logf("try %d: client connected in %v (attacker connections live %d, opened %d so far)", i, took, live.Load(), opened.Load())
		if took > clientLimit {
			t.Errorf("try %d: client took %v to connect, want under %v", i, took, clientLimit)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Stay long enough for the first silent connections to reach their
	// deadline.
	time.Sleep(DefaultFirstByteTimeout)

	open := live.Load()
	stopFlood()
	life := time.Duration(maxLifetime.Load())
	t.Logf("attacker connections opened: %d (dial errors %d); longest-lived silent connection: %v; heap and stacks before %d KiB, max during %d KiB",
		opened.Load(), dialErrs.Load(), life, heapBefore>>10, heapMax.Load()>>10)
	t.Logf("listener: evicted %d, silent %d; attacker connections open at the end: %d", l.Evicted(), l.Silent(), open)
	if life > DefaultFirstByteTimeout+3*time.Second {
		t.Errorf("a silent connection lived %v, want at most FirstByteTimeout (%v) and some slack", life, DefaultFirstByteTimeout)
	}
	if grow := int64(heapMax.Load()) - int64(heapBefore); grow > heapBound {
		t.Errorf("heap and stacks grew by %d MiB during the flood, want under %d MiB", grow>>20, heapBound>>20)
	}
}

// raiseFDLimit raises the soft limit on open files to at least n (up to the
// hard limit), or skips the test.
func raiseFDLimit(t testing.TB, n uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur >= n {
		return
	}
	if rl.Max < n {
		t.Skipf("open file limit is %d, need %d", rl.Max, n)
	}
	old := rl.Cur
	rl.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Skipf("cannot raise the open file limit to %d: %v", n, err)
	}
	t.Cleanup(func() {
		rl.Cur = old
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	})
}
