package netstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/warrenvpn/warren/forward"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	subnet   = netip.MustParsePrefix("10.8.0.0/24")
	hubIP    = netip.MustParseAddr("10.8.0.1")
	clientIP = netip.MustParseAddr("10.8.0.2")
)

func testLogger() *slog.Logger {
	if os.Getenv("NETSTACK_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newPair starts a hub engine (Forward, 10.8.0.1) and a client engine
// (10.8.0.2) wired to each other the way the hub pipeline wires them.
func newPair(tb testing.TB, hubOpts Options) (hub, client *Engine) {
	tb.Helper()
	return newPairOn(tb, hubOpts, subnet, hubIP, clientIP)
}

func newPairOn(tb testing.TB, hubOpts Options, subnet netip.Prefix, hubIP, clientIP netip.Addr) (hub, client *Engine) {
	tb.Helper()
	hubOpts.Forward = true
	hub = New(hubOpts)
	client = New(Options{})
	cfg := forward.Config{Subnet: subnet, HubIP: hubIP, MTU: 1420, Logger: testLogger()}

	hubCfg := cfg
	hubCfg.LocalIP = hubIP
	hubCfg.Deliver = func(bufs [][]byte, offset int) { client.Send(bufs, offset) }
	if err := hub.Start(hubCfg); err != nil {
		tb.Fatal(err)
	}
	clientCfg := cfg
	clientCfg.LocalIP = clientIP
	clientCfg.Deliver = func(bufs [][]byte, offset int) { hub.Send(bufs, offset) }
	if err := client.Start(clientCfg); err != nil {
		hub.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		// A test may have closed them already.
		if err := client.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			tb.Errorf("client close: %v", err)
		}
		if err := hub.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			tb.Errorf("hub close: %v", err)
		}
	})
	return hub, client
}

// serveTCP runs handle for every connection to a loopback listener until the
// test ends, and returns the listener's address.
func serveTCP(tb testing.TB, handle func(net.Conn)) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return serveListener(tb, ln, handle)
}

func serveListener(tb testing.TB, ln net.Listener, handle func(net.Conn)) netip.AddrPort {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return netip.MustParseAddrPort(ln.Addr().String())
}

// echo copies c back to itself, then half-closes.
func echo(c net.Conn) {
	io.Copy(c, c)
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// serveUDPEcho answers every datagram on a loopback socket with the same bytes.
func serveUDPEcho(tb testing.TB) netip.AddrPort {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], addr)
		}
	}()
	tb.Cleanup(func() {
		pc.Close()
		<-done
	})
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dial(tb testing.TB, e *Engine, network string, addr netip.AddrPort) net.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.DialContext(ctx, network, addr.String())
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// roundTrip writes msg on c and reads back as many bytes.
func roundTrip(tb testing.TB, c net.Conn, msg string) {
	tb.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		tb.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		tb.Fatal(err)
	}
	if string(got) != msg {
		tb.Fatalf("read %q, want %q", got, msg)
	}
}

func TestTCPBulkTransferThroughNATIsByteExact(t *testing.T) {
	const size = 64 << 20
	hub, client := newPair(t, Options{})
	srv := serveTCP(t, echo)

	c := dial(t, client, "tcp", srv)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))

	sent := sha256.New()
	writeErr := make(chan error, 1)
	go func() {
		src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{1}), size), sent)
		_, err := io.Copy(c, src)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		writeErr <- err
	}()
	got := sha256.New()
	n, err := io.Copy(got, c)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", n, err)
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if n != size {
		t.Fatalf("echoed %d bytes, want %d", n, size)
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatal("echoed data differs from sent data")
	}
	if s := hub.Stats(); s.TCPForwarded != 1 {
		t.Errorf("TCPForwarded = %d, want 1", s.TCPForwarded)
	}
}

func TestThousandShortTCPConnectionsLeaveNoFlows(t *testing.T) {
	const conns, workers = 1000, 8
	hub, client := newPair(t, Options{})
	srv := serveTCP(t, echo)

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < conns; i += workers {
				if err := shortConn(client, srv, fmt.Sprintf("hello %d", i)); err != nil {
					errs <- fmt.Errorf("conn %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, "ActiveTCP to return to 0", func() bool { return hub.Stats().ActiveTCP == 0 })
	if s := hub.Stats(); s.TCPForwarded != conns || s.Refused != 0 || s.DialFailed != 0 {
		t.Errorf("stats = %+v, want %d forwarded and nothing refused", s, conns)
	}
}

func shortConn(e *Engine, addr netip.AddrPort, msg string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("read %q, want %q", got, msg)
	}
	return nil
}

func TestIPv6ThroughNAT(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	srv := serveListener(t, ln, echo)
	hub, client := newPairOn(t, Options{}, netip.MustParsePrefix("fd00:8::/64"),
		netip.MustParseAddr("fd00:8::1"), netip.MustParseAddr("fd00:8::2"))

	c := dial(t, client, "tcp6", srv)
	defer c.Close()
	roundTrip(t, c, "over IPv6")

	hl, err := hub.Listen("tcp", "[fd00:8::1]:80")
	if err != nil {
		t.Fatal(err)
	}
	serveListener(t, hl, echo)
	hc := dial(t, client, "tcp", netip.MustParseAddrPort("[fd00:8::1]:80"))
	defer hc.Close()
	roundTrip(t, hc, "to the hub over IPv6")
	if s := hub.Stats(); s.TCPForwarded != 1 {
		t.Errorf("TCPForwarded = %d, want 1", s.TCPForwarded)
	}
}

func TestUDPRequestResponseThroughNAT(t *testing.T) {
	hub, client := newPair(t, Options{})
	srv := serveUDPEcho(t)

	c := dial(t, client, "udp", srv)
	defer c.Close()
	for i := range 10 {
		msg := fmt.Sprintf("datagram %d", i)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if string(buf[:n]) != msg {
			t.Fatalf("read %q, want %q", buf[:n], msg)
		}
	}
	if s := hub.Stats(); s.UDPForwarded != 1 || s.ActiveUDP != 1 {
		t.Errorf("UDPForwarded = %d, ActiveUDP = %d; want one flow for all datagrams", s.UDPForwarded, s.ActiveUDP)
	}
}

func TestUDPFlowClosesWhenIdle(t *testing.T) {
	hub, client := newPair(t, Options{UDPIdleTimeout: 100 * time.Millisecond})
	srv := serveUDPEcho(t)

	c := dial(t, client, "udp", srv)
	defer c.Close()
	roundTrip(t, c, "once")
	waitFor(t, "the idle UDP flow to close", func() bool { return hub.Stats().ActiveUDP == 0 })
	roundTrip(t, c, "again") // a new flow
	if s := hub.Stats(); s.UDPForwarded != 2 {
		t.Errorf("UDPForwarded = %d, want 2", s.UDPForwarded)
	}
}

func TestTCPFlowClosesWhenIdle(t *testing.T) {
	hub, client := newPair(t, Options{TCPIdleTimeout: 100 * time.Millisecond})
	srv := serveTCP(t, echo)

	c := dial(t, client, "tcp", srv)
	defer c.Close()
	roundTrip(t, c, "hello")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read succeeded on a flow that should have timed out")
	}
	waitFor(t, "ActiveTCP to return to 0", func() bool { return hub.Stats().ActiveTCP == 0 })
}

func TestPolicyForceTargetReachesRewrittenAddress(t *testing.T) {
	srv := serveTCP(t, echo)
	asked := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.10"), srv.Port())
	var gotSrc, gotDst netip.AddrPort
	var mu sync.Mutex
	hub, client := newPair(t, Options{Policy: func(proto Proto, src, dst netip.AddrPort) (netip.AddrPort, bool) {
		mu.Lock()
		gotSrc, gotDst = src, dst
		mu.Unlock()
		return netip.AddrPortFrom(srv.Addr(), dst.Port()), true
	}})

	c := dial(t, client, "tcp", asked)
	defer c.Close()
	roundTrip(t, c, "rewritten")
	mu.Lock()
	defer mu.Unlock()
	if gotDst != asked || gotSrc.Addr() != clientIP {
		t.Errorf("policy saw src %v dst %v; want src from %v, dst %v", gotSrc, gotDst, clientIP, asked)
	}
	if s := hub.Stats(); s.TCPForwarded != 1 {
		t.Errorf("TCPForwarded = %d, want 1", s.TCPForwarded)
	}
}

func TestPolicyRefusalResetsQuicklyAndCounts(t *testing.T) {
	srv := serveTCP(t, echo)
	hub, client := newPair(t, Options{Policy: func(Proto, netip.AddrPort, netip.AddrPort) (netip.AddrPort, bool) {
		return netip.AddrPort{}, false
	}})

	start := time.Now()
	_, err := client.DialContext(context.Background(), "tcp", srv.String())
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial: %v, want connection refused", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusal took %v", d)
	}
	if s := hub.Stats(); s.Refused != 1 || s.PolicyBlocked != 1 || s.TCPForwarded != 0 {
		t.Errorf("stats = %+v, want one refusal by policy", s)
	}
}

func TestPolicyRefusalOfUDPIsCounted(t *testing.T) {
	srv := serveUDPEcho(t)
	hub, client := newPair(t, Options{Policy: func(Proto, netip.AddrPort, netip.AddrPort) (netip.AddrPort, bool) {
		return netip.AddrPort{}, false
	}})
	c := dial(t, client, "udp", srv)
	defer c.Close()
	c.Write([]byte("blocked"))
	waitFor(t, "the refusal to be counted", func() bool { return hub.Stats().PolicyBlocked == 1 })
	// The stack answers port unreachable; the connected socket reports it.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 16)); err == nil {
		t.Error("read a reply from a blocked flow")
	}
}

func TestDialToClosedPortIsRefusedQuickly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	hub, client := newPair(t, Options{})

	start := time.Now()
	_, err = client.DialContext(context.Background(), "tcp", closed)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial: %v, want connection refused", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusal took %v", d)
	}
	if s := hub.Stats(); s.DialFailed != 1 {
		t.Errorf("DialFailed = %d, want 1", s.DialFailed)
	}
}

func TestProxyProtocolHeaderCarriesTunnelSource(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	remotes := make(chan net.Addr, 1)
	srv := serveListener(t, &proxyproto.Listener{Listener: ln}, func(c net.Conn) {
		remotes <- c.RemoteAddr()
		echo(c)
	})
	_, client := newPair(t, Options{ProxyProtocol: true})

	c := dial(t, client, "tcp", srv)
	defer c.Close()
	roundTrip(t, c, "proxied")
	want := c.LocalAddr().String()
	if got := (<-remotes).String(); got != want {
		t.Errorf("server saw source %s, want %s", got, want)
	}
	if ap := netip.MustParseAddrPort(want); ap.Addr() != clientIP {
		t.Errorf("client conn local address %s, want on %s", ap, clientIP)
	}
}

func TestHTTPToHubListener(t *testing.T) {
	hub, client := newPair(t, Options{})
	ln, err := hub.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	if got := ln.Addr().String(); got != "10.8.0.1:80" {
		t.Errorf("listener address %s, want 10.8.0.1:80", got)
	}
	testHTTP(t, ln, client, "http://10.8.0.1/hello")
}

func TestHTTPFromHubToClientListener(t *testing.T) {
	hub, client := newPair(t, Options{})
	ln, err := client.Listen("tcp", "10.8.0.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	testHTTP(t, ln, hub, "http://10.8.0.2:8080/hello")
}

func testHTTP(t *testing.T, ln net.Listener, from *Engine, url string) {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hi %s from %s", r.URL.Path, r.RemoteAddr)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	defer func() {
		srv.Close()
		<-done
	}()
	tr := &http.Transport{DialContext: from.DialContext}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for range 3 {
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("hi /hello from %s:", from.local)
		if !bytes.HasPrefix(body, []byte(want)) {
			t.Fatalf("body %q, want prefix %q", body, want)
		}
	}
}

func TestHubListenPacketAnswersFromItsPort(t *testing.T) {
	hub, client := newPair(t, Options{})
	pc, err := hub.ListenPacket("udp", ":53")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("re: "), buf[:n]...), addr)
		}
	}()
	defer func() {
		pc.Close()
		<-done
	}()

	cc, err := client.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hubDNS := net.UDPAddrFromAddrPort(netip.AddrPortFrom(hubIP, 53))
	for i := range 5 {
		msg := fmt.Sprintf("query %d", i)
		if _, err := cc.WriteTo([]byte(msg), hubDNS); err != nil {
			t.Fatal(err)
		}
		cc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		n, from, err := cc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:n]); got != "re: "+msg {
			t.Fatalf("reply %q, want %q", got, "re: "+msg)
		}
		if from.String() != "10.8.0.1:53" {
			t.Fatalf("reply from %s, want 10.8.0.1:53", from)
		}
	}
	if s := hub.Stats(); s.UDPForwarded != 0 {
		t.Errorf("UDPForwarded = %d: traffic to the hub's own address was forwarded", s.UDPForwarded)
	}
}

// echoRequest builds an IPv4 ICMP echo request by hand.
func echoRequest(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	pkt := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+len(payload))
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)),
		TTL:         64,
		Protocol:    uint8(header.ICMPv4ProtocolNumber),
		SrcAddr:     tcpipAddr(src),
		DstAddr:     tcpipAddr(dst),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(pkt[header.IPv4MinimumSize:])
	icmp.SetType(header.ICMPv4Echo)
	icmp.SetIdent(id)
	icmp.SetSequence(seq)
	copy(icmp.Payload(), payload)
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	return pkt
}

// captureEngine starts a hub engine whose delivered packets go to a channel.
func captureEngine(t *testing.T, opts Options) (*Engine, chan []byte) {
	t.Helper()
	out := make(chan []byte, 64)
	e := New(opts)
	err := e.Start(forward.Config{Subnet: subnet, HubIP: hubIP, LocalIP: hubIP, MTU: 1420, Logger: testLogger(),
		Deliver: func(bufs [][]byte, offset int) {
			for _, b := range bufs {
				select {
				case out <- bytes.Clone(b[offset:]):
				default:
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, out
}

func TestPingToHubIsAnswered(t *testing.T) {
	hub, out := captureEngine(t, Options{Forward: true})
	payload := []byte("warren ping payload")
	if err := hub.Send([][]byte{echoRequest(clientIP, hubIP, 0x1234, 7, payload)}, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case pkt := <-out:
		ip := header.IPv4(pkt)
		if !ip.IsValid(len(pkt)) || ip.TransportProtocol() != header.ICMPv4ProtocolNumber {
			t.Fatalf("reply is not an ICMP packet: %x", pkt)
		}
		if addrFrom(ip.SourceAddress()) != hubIP || addrFrom(ip.DestinationAddress()) != clientIP {
			t.Errorf("reply %s -> %s, want %s -> %s", ip.SourceAddress(), ip.DestinationAddress(), hubIP, clientIP)
		}
		icmp := header.ICMPv4(ip.Payload())
		if icmp.Type() != header.ICMPv4EchoReply || icmp.Ident() != 0x1234 || icmp.Sequence() != 7 || !bytes.Equal(icmp.Payload(), payload) {
			t.Errorf("reply type %d id %#x seq %d payload %q", icmp.Type(), icmp.Ident(), icmp.Sequence(), icmp.Payload())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no echo reply")
	}
	if s := hub.Stats(); s.ICMPEchoReplies != 1 {
		t.Errorf("ICMPEchoReplies = %d, want 1", s.ICMPEchoReplies)
	}
}

func TestPingToOtherAddressIsNotAnsweredButCounted(t *testing.T) {
	hub, out := captureEngine(t, Options{Forward: true})
	far := netip.MustParseAddr("198.51.100.7")
	if err := hub.Send([][]byte{echoRequest(clientIP, far, 1, 1, []byte("x"))}, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case pkt := <-out:
		t.Fatalf("got a packet for a ping that is not relayed: %x", pkt)
	case <-time.After(200 * time.Millisecond):
	}
	if s := hub.Stats(); s.Refused != 1 || s.ICMPEchoReplies != 0 {
		t.Errorf("stats = %+v, want one refusal and no reply", s)
	}
}

func TestFlowLimitPerClientRefusesThenRecovers(t *testing.T) {
	const limit = 10
	hub, client := newPair(t, Options{MaxFlowsPerClient: limit})
	srv := serveTCP(t, echo)

	var conns []net.Conn
	for i := range limit {
		c := dial(t, client, "tcp", srv)
		conns = append(conns, c)
		roundTrip(t, c, fmt.Sprintf("flow %d", i))
	}
	_, err := client.DialContext(context.Background(), "tcp", srv.String())
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial over the limit: %v, want connection refused", err)
	}
	if s := hub.Stats(); s.RefusedLimit != 1 || s.Refused != 1 || s.ActiveTCP != limit {
		t.Errorf("stats = %+v, want one refusal by limit and %d active", s, limit)
	}
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, "ActiveTCP to return to 0", func() bool { return hub.Stats().ActiveTCP == 0 })
	c := dial(t, client, "tcp", srv)
	defer c.Close()
	roundTrip(t, c, "after the limit")
}

func TestTrafficToHubClosedPortIsNotForwarded(t *testing.T) {
	hub, client := newPair(t, Options{})
	_, err := client.DialContext(context.Background(), "tcp", "10.8.0.1:81")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial: %v, want connection refused", err)
	}
	if s := hub.Stats(); s.TCPForwarded != 0 || s.DialFailed != 0 {
		t.Errorf("stats = %+v: the hub's own address was forwarded", s)
	}
}

func TestMalformedPacketsAreDropped(t *testing.T) {
	hub, out := captureEngine(t, Options{Forward: true})
	good := echoRequest(clientIP, hubIP, 1, 1, []byte("ok"))
	bad := [][]byte{
		nil, {}, {0x45}, {0x60}, {0xff, 0xff}, good[:10], good[:21],
		append([]byte{0x4f}, good[1:]...), // header length beyond the packet
		make([]byte, 70000),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, r.IntN(100))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if len(b) > 0 {
			b[0] = b[0]&0x0f | []byte{0x40, 0x60}[r.IntN(2)]
		}
		bad = append(bad, b)
	}
	if err := hub.Send(bad, 0); err != nil {
		t.Fatal(err)
	}
	// The engine still works.
	hub.Send([][]byte{good}, 0)
	waitFor(t, "the echo reply", func() bool { return hub.Stats().ICMPEchoReplies >= 1 })
	_ = out
}

func TestLifecycleErrors(t *testing.T) {
	e := New(Options{})
	if err := e.Send([][]byte{{0x45}}, 0); err == nil {
		t.Error("Send before Start succeeded")
	}
	if _, err := e.DialContext(context.Background(), "tcp", "10.8.0.1:80"); err == nil {
		t.Error("DialContext before Start succeeded")
	}
	if err := e.Start(forward.Config{LocalIP: clientIP}); err == nil {
		t.Error("Start without Deliver succeeded")
	}
	cfg := forward.Config{Subnet: subnet, LocalIP: clientIP, Deliver: func([][]byte, int) {}}
	if err := e.Start(cfg); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(cfg); err == nil {
		t.Error("second Start succeeded")
	}
	for _, addr := range []string{"example.com:80", "10.8.0.1", "10.8.0.1:http"} {
		if _, err := e.DialContext(context.Background(), "tcp", addr); err == nil {
			t.Errorf("DialContext(%q) succeeded", addr)
		}
	}
	if _, err := e.Listen("tcp", "10.9.9.9:80"); err == nil {
		t.Error("Listen on a foreign address succeeded")
	}
	if _, err := e.Listen("udp", ":80"); err == nil {
		t.Error("Listen udp succeeded")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
	if err := e.Send([][]byte{{0x45}}, 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close: %v, want net.ErrClosed", err)
	}
	if _, err := e.Listen("tcp", ":80"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Listen after Close: %v, want net.ErrClosed", err)
	}
}

// synPacket builds an IPv4 TCP SYN by hand.
func synPacket(src, dst netip.AddrPort) []byte {
	pkt := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)),
		TTL:         64,
		Protocol:    uint8(header.TCPProtocolNumber),
		SrcAddr:     tcpipAddr(src.Addr()),
		DstAddr:     tcpipAddr(dst.Addr()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(pkt[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{
		SrcPort:    src.Port(),
		DstPort:    dst.Port(),
		SeqNum:     1,
		DataOffset: header.TCPMinimumSize,
		Flags:      header.TCPFlagSyn,
		WindowSize: 65535,
	})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, tcpipAddr(src.Addr()), tcpipAddr(dst.Addr()), header.TCPMinimumSize)
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	return pkt
}

func TestSYNFloodIsBoundedByMaxHalfOpen(t *testing.T) {
	const halfOpen, syns = 16, 2000
	var mu sync.Mutex
	var inFlight, maxInFlight, dials int
	hub, out := captureEngine(t, Options{
		Forward:     true,
		MaxHalfOpen: halfOpen,
		DialTimeout: 200 * time.Millisecond,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			inFlight++
			dials++
			maxInFlight = max(maxInFlight, inFlight)
			mu.Unlock()
			<-ctx.Done() // a black hole
			mu.Lock()
			inFlight--
			mu.Unlock()
			return nil, ctx.Err()
		},
	})
	dst := netip.MustParseAddrPort("203.0.113.9:443")
	batch := make([][]byte, 0, syns)
	for i := range syns {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 8, 0, byte(2 + i%200)}), uint16(10000+i))
		batch = append(batch, synPacket(src, dst))
	}
	if err := hub.Send(batch, 0); err != nil {
		t.Fatal(err)
	}
	// The stack works through the batch asynchronously: wait until every SYN
	// was either dropped or dialed, and every dial has failed.
	waitFor(t, "the admitted SYNs to time out", func() bool {
		mu.Lock()
		defer mu.Unlock()
		dropped := hub.stack.Stats().TCP.ForwardMaxInFlightDrop.Value()
		return dials > 0 && inFlight == 0 && hub.Stats().DialFailed == uint64(dials) && dropped+uint64(dials) >= syns
	})
	mu.Lock()
	defer mu.Unlock()
	if maxInFlight > halfOpen {
		t.Errorf("%d dials in flight at once, want at most %d", maxInFlight, halfOpen)
	}
	if dropped := hub.stack.Stats().TCP.ForwardMaxInFlightDrop.Value(); dropped == 0 || dropped+uint64(dials) != syns {
		t.Errorf("%d SYNs dropped and %d dialed, want the %d SYNs split between them", dropped, dials, syns)
	}
	// Admitted SYNs are answered with a RST; the engine delivers them
	// asynchronously, so wait for the first.
	resets := 0
	deadline := time.After(10 * time.Second)
	for resets == 0 {
		select {
		case b := <-out:
			pkt := header.IPv4(b)
			if tcp := header.TCP(pkt.Payload()); pkt.TransportProtocol() == header.TCPProtocolNumber && tcp.Flags().Contains(header.TCPFlagRst) {
				resets++
			}
		case <-deadline:
			t.Fatal("no RST for the SYNs whose dial failed")
		}
	}
}

func TestCloseEndsActiveFlows(t *testing.T) {
	hub, client := newPair(t, Options{})
	tcpSrv := serveTCP(t, echo)
	udpSrv := serveUDPEcho(t)
	var conns []net.Conn
	for i := range 5 {
		c := dial(t, client, "tcp", tcpSrv)
		roundTrip(t, c, fmt.Sprintf("tcp %d", i))
		conns = append(conns, c)
		u := dial(t, client, "udp", udpSrv)
		roundTrip(t, u, fmt.Sprintf("udp %d", i))
		conns = append(conns, u)
	}
	if s := hub.Stats(); s.ActiveTCP != 5 || s.ActiveUDP != 5 {
		t.Fatalf("stats = %+v, want 5 active TCP and UDP flows", s)
	}
	if err := hub.Close(); err != nil {
		t.Fatal(err)
	}
	if s := hub.Stats(); s.ActiveTCP != 0 || s.ActiveUDP != 0 {
		t.Errorf("after Close: stats = %+v, want no active flows", s)
	}
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		if _, err := c.Write([]byte("x")); err == nil {
			c.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Error("conn still works after its engine closed")
			}
		}
		c.Close()
	}
}

// BenchmarkTCPThroughNAT copies bulk data from a client engine through the
// hub's NAT to a loopback server; compare with BenchmarkLoopbackTCP.
func BenchmarkTCPThroughNAT(b *testing.B) {
	_, client := newPair(b, Options{})
	benchCopy(b, func(addr netip.AddrPort) (net.Conn, error) {
		return client.DialContext(context.Background(), "tcp", addr.String())
	})
}

// BenchmarkLoopbackTCP is the baseline: the same copy over a host loopback
// connection.
func BenchmarkLoopbackTCP(b *testing.B) {
	benchCopy(b, func(addr netip.AddrPort) (net.Conn, error) {
		return net.Dial("tcp", addr.String())
	})
}

func benchCopy(b *testing.B, dial func(netip.AddrPort) (net.Conn, error)) {
	const chunk = 64 << 10
	received := make(chan int64, 1)
	srv := serveTCP(b, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		received <- n
	})
	c, err := dial(srv)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, chunk)
	binary.LittleEndian.PutUint64(buf, 42)
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	if n := <-received; n != int64(b.N)*chunk {
		b.Fatalf("server received %d bytes, want %d", n, int64(b.N)*chunk)
	}
}

func tcpipAddr(a netip.Addr) tcpip.Address { return tcpip.AddrFromSlice(a.AsSlice()) }
