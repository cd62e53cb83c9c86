package warren

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/warrenvpn/warren/internal/packet"
	"github.com/warrenvpn/warren/transport"
)

// clientWith connects a bundle's config with a transport and a testing engine.
func clientWith(t testing.TB, b *ClientBundle, tr ClientTransport) *testClient {
	t.Helper()
	cfg := b.Config
	cfg.Transport = tr
	c, eng, err := startClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := c.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &testClient{Client: c, engine: eng, ip: info.AssignedIP.Addr(), bundle: b}
}

func TestQUICSessionCarriesPacketsBothWays(t *testing.T) {
	h := newTestHub(t, func(c *ServerConfig) { c.TransportMode = TransportQUIC })
	if h.Addr() != nil || h.QUICAddr() == nil {
		t.Fatalf("transportMode quic: ws %v, quic %v", h.Addr(), h.QUICAddr())
	}
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	a := clientWith(t, b, ClientQUIC)
	if a.MTUInfo().TunnelMTU != quicMTU {
		t.Fatalf("QUIC tunnel MTU %d", a.MTUInfo().TunnelMTU)
	}
	dst := netip.MustParseAddr("198.51.100.1")
	// Datagrams are unreliable (quic-go drops what its receive queue cannot
	// hold), as IP is; pacing one at a time makes every one count.
	const n = 200
	for i := range n {
		a.engine.Inject(udp(a.ip, dst, fmt.Sprint("up ", i)))
		if _, err := next(t, h.engine, 5*time.Second); err != nil {
			t.Fatalf("hub got %d of %d: %v", i, n, err)
		}
		h.engine.Inject(udp(dst, a.ip, fmt.Sprint("down ", i)))
		if _, err := next(t, a.engine, 5*time.Second); err != nil {
			t.Fatalf("client got %d of %d: %v", i, n, err)
		}
	}
	waitFor(t, time.Second, "counters settle", func() bool { return h.Statistics().PacketsIn == n })
	cs, hs := a.Statistics(), h.Statistics()
	if cs.PacketsOut != n || cs.PacketsIn != n || hs.PacketsOut != n {
		t.Fatalf("client out %d in %d; hub in %d out %d", cs.PacketsOut, cs.PacketsIn, hs.PacketsIn, hs.PacketsOut)
	}
	if info := h.ListClients()[0]; info.Transport != "quic" {
		t.Fatalf("transport %q", info.Transport)
	}
	if m := a.MTUInfo(); m.DatagramsSent != n || m.MaxDatagram < 1200 {
		t.Fatalf("datagram path not used: %+v", m)
	}
}

// capturingConn stands between a client's session and its QUIC connection
// and, while hold is set, keeps the datagrams the session sends instead of
// sending them: what an attacker on the path records, to re-send later.
type capturingConn struct {
	transport.DatagramConn
	mu   sync.Mutex
	hold bool
	held [][]byte
}

func (c *capturingConn) SendDatagram(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold {
		c.held = append(c.held, bytes.Clone(b))
		return nil
	}
	return c.DatagramConn.SendDatagram(b)
}

func TestQUICReplayedDatagramsDroppedReorderedAccepted(t *testing.T) {
	h := newTestHub(t, nil)
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := b.Config
	cfg.Transport = ClientQUIC
	c, eng, err := startClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var capture *capturingConn
	c.wrapConn = func(conn transport.Conn) transport.Conn {
		capture = &capturingConn{DatagramConn: conn.(transport.DatagramConn), hold: true}
		return capture
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := c.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := &testClient{Client: c, engine: eng, ip: info.AssignedIP.Addr(), bundle: b}
	dst := netip.MustParseAddr("198.51.100.1")
	const n = 6
	for i := range n {
		a.engine.Inject(udp(a.ip, dst, fmt.Sprint("reordered ", i)))
	}
	var held [][]byte
	waitFor(t, 5*time.Second, "the datagrams captured", func() bool {
		capture.mu.Lock()
		defer capture.mu.Unlock()
		held = slices.Clone(capture.held)
		return len(held) == n
	})
	capture.mu.Lock()
	capture.hold = false
	capture.mu.Unlock()
	// Sent out of order: all inside the window, all accepted.
	for _, i := range []int{5, 3, 4, 0, 2, 1} {
		if err := capture.DatagramConn.SendDatagram(held[i]); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if _, err := next(t, h.engine, 5*time.Second); err != nil {
			t.Fatalf("reordered datagram %d not accepted: %v", i, err)
		}
	}
	// The same bytes again (a captured datagram re-sent): dropped, counted.
	for range 3 {
		capture.DatagramConn.SendDatagram(held[3])
	}
	waitFor(t, 2*time.Second, "3 replays counted", func() bool { return h.Statistics().Drops.Replayed == 3 })
	if _, err := next(t, h.engine, 200*time.Millisecond); err == nil {
		t.Fatal("a replayed datagram reached the engine")
	}
}

func TestAutoPicksQUICAndFallsBackToWebSocket(t *testing.T) {
	h := newTestHub(t, nil)
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Config.Transport != ClientWebSocket || b.Config.QUICAddr == "" {
		t.Fatalf("bundle transport %q quicAddr %q", b.Config.Transport, b.Config.QUICAddr)
	}
	c := clientWith(t, b, ClientAuto)
	if c.MTUInfo().MaxDatagram == 0 || h.ListClients()[0].Transport != "quic" {
		t.Fatal("auto did not pick QUIC with both up")
	}
	c.Close()

	// A UDP socket that swallows everything stands where QUIC should be.
	hole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := hole.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	cfg := b.Config
	cfg.QUICAddr = hole.LocalAddr().String()
	nb := *b
	nb.Config = cfg
	start := time.Now()
	ws := clientWith(t, &nb, ClientAuto)
	took := time.Since(start)
	if ws.MTUInfo().MaxDatagram != 0 {
		t.Fatal("connected over QUIC to a black hole")
	}
	if took > autoQUICTimeout+5*time.Second {
		t.Fatalf("fallback took %v", took)
	}
	t.Logf("fell back to WebSocket in %v", took)
	ws.engine.Inject(packet.BuildICMPEcho(ws.ip, h.HubIP(), 1, 1, nil))
	if _, err := next(t, ws.engine, 5*time.Second); err != nil {
		t.Fatalf("no traffic after fallback: %v", err)
	}
}

func TestQUICOversizedPacketGoesOnStream(t *testing.T) {
	h := newTestHub(t, func(c *ServerConfig) { c.MTU = 1500 })
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	a := clientWith(t, b, ClientQUIC)
	payload := make([]byte, 1500-28)
	big := udp(netip.MustParseAddr("198.51.100.1"), a.ip, string(payload))
	if len(big) != 1500 {
		t.Fatalf("packet is %d bytes", len(big))
	}
	if err := h.engine.Inject(big); err != nil {
		t.Fatal(err)
	}
	got, err := next(t, a.engine, 5*time.Second)
	if err != nil || len(got) != 1500 {
		t.Fatalf("1500-byte packet: got %d bytes, %v", len(got), err)
	}
	if n := h.Statistics().OversizedOnStream; n != 1 {
		t.Fatalf("OversizedOnStream = %d, want 1", n)
	}
}

// BenchmarkSessionThroughput moves 1400-byte packets from a client's testing
// engine through a session to the hub's testing engine, over QUIC and over
// WebSocket in the same run. One op is one packet.
func BenchmarkSessionThroughput(b *testing.B) {
	for _, tr := range []ClientTransport{ClientQUIC, ClientWebSocket} {
		b.Run(string(tr), func(b *testing.B) {
			h := newTestHub(b, nil)
			bundle, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			mtu := DefaultMTU
			if tr == ClientQUIC {
				mtu = quicMTU
			}
			c := clientWith(b, bundle, tr)
			pkt := udp(c.ip, netip.MustParseAddr("198.51.100.1"), string(make([]byte, mtu-28-100)))
			sink := h.engine
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			received := 0
			for i := 0; i < b.N; i++ {
				c.engine.Inject(pkt)
				// Keep at most a window in flight so nothing is dropped for
				// queue space; what arrives is what counts.
				for i-received >= 256 {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					_, err := sink.Next(ctx)
					cancel()
					if err != nil {
						break
					}
					received++
				}
			}
			for received < b.N {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err := sink.Next(ctx)
				cancel()
				if err != nil {
					break
				}
				received++
			}
			b.StopTimer()
			el := time.Since(start)
			b.ReportMetric(float64(received)/el.Seconds(), "pkts/s")
			b.ReportMetric(float64(received)/float64(b.N), "delivered/op")
		})
	}
}
