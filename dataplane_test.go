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
