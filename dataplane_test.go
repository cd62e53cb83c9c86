package warren

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/warrenvpn/warren/forward"
	fwdtesting "github.com/warrenvpn/warren/forward/testing"
)

// headroomEngine is a forward.Engine that records the offset of each batch
// it is sent, and writes into the headroom as a TUN device writes its
// virtio-net header, so a pipeline that hands over too little room would
// corrupt packets.
type headroomEngine struct {
	mu      sync.Mutex
	offsets []int
	pkts    [][]byte
}

func (e *headroomEngine) Start(forward.Config) error { return nil }
func (e *headroomEngine) Close() error               { return nil }

func (e *headroomEngine) Send(bufs [][]byte, offset int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range bufs {
		for i := range offset {
			b[i] = 0xee
		}
	}
	for _, b := range bufs {
		e.pkts = append(e.pkts, append([]byte(nil), b[offset:]...))
	}
	e.offsets = append(e.offsets, offset)
	return nil
}

func (e *headroomEngine) received() ([][]byte, []int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([][]byte(nil), e.pkts...), append([]int(nil), e.offsets...)
}

func TestWebSocketPacketsReachEngineWithHeadroom(t *testing.T) {
	eng := &headroomEngine{}
	h := newTestHub(t, func(c *ServerConfig) { c.Forwarder = eng })
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	b.Config = withTransport(b.Config, ClientWebSocket)
	c := connectBundle(t, b)
	far := netip.MustParseAddrPort("198.51.100.7:5000")
	const n = 50
	for i := range n {
		pkt := fwdtesting.UDPPacket(netip.AddrPortFrom(c.ip, 4000), far, []byte{byte(i), 1, 2, 3})
		if err := c.engine.Inject(pkt); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the packets at the engine", func() bool {
		pkts, _ := eng.received()
		return len(pkts) == n
	})
	pkts, offsets := eng.received()
	for i, p := range pkts {
		_, _, payload, ok := fwdtesting.ParseUDP(p)
		if !ok || len(payload) != 4 || payload[0] != byte(i) {
			t.Fatalf("packet %d arrived as %x", i, p)
		}
	}
	for _, off := range offsets {
		if off < forward.Headroom {
			t.Fatalf("the engine got a batch with %d bytes of headroom, want at least forward.Headroom (%d)", off, forward.Headroom)
		}
	}
}

func TestWebSocketPacketsForAnotherClientAreHandedOverBesideTheEngine(t *testing.T) {
	// The engine writes into the headroom of what it is sent, which
	// overlaps the tag room of the packet in front in the buffer the hub
	// read them into: the packets handed to bob's session must arrive
	// intact all the same.
	eng := &headroomEngine{}
	h := newTestHub(t, func(c *ServerConfig) { c.Forwarder = eng })
	connect := func(id string) *testClient {
		b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: id})
		if err != nil {
			t.Fatal(err)
		}
		b.Config = withTransport(b.Config, ClientWebSocket)
		return connectBundle(t, b)
	}
	alice, bob := connect("alice"), connect("bob")
	far := netip.MustParseAddrPort("198.51.100.7:5000")
	const n = 400
	toFar := func(i int) bool { return i%4 == 3 }
	for i := range n {
		dst := netip.AddrPortFrom(bob.ip, 5000)
		if toFar(i) {
			dst = far
		}
		payload := []byte{byte(i >> 8), byte(i), 1, 2, 3}
		if err := alice.engine.Inject(fwdtesting.UDPPacket(netip.AddrPortFrom(alice.ip, 4000), dst, payload)); err != nil {
			t.Fatal(err)
		}
	}
	check := func(p []byte, want int) {
		t.Helper()
		_, _, payload, ok := fwdtesting.ParseUDP(p)
		if !ok || len(payload) != 5 || int(payload[0])<<8|int(payload[1]) != want {
			t.Fatalf("packet %d arrived as %x", want, p)
		}
	}
	for i := range n {
		if toFar(i) {
			continue
		}
		p, err := next(t, bob.engine, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		check(p, i)
	}
	waitFor(t, 10*time.Second, "the packets at the engine", func() bool {
		pkts, _ := eng.received()
		return len(pkts) == n/4
	})
	pkts, _ := eng.received()
	for k, p := range pkts {
		check(p, 4*k+3)
	}
	var handed uint64
	h.mu.Lock()
	for _, ss := range h.sessions["bob"] {
		if c, ok := ss.c.(streamConduit); ok {
			handed += c.s.Counters().HandedOver
		}
	}
	h.mu.Unlock()
	if handed == 0 {
		t.Fatal("no packet for bob was handed over without a copy")
	}
}
