package telemetry_test

import (
	"encoding/json"
	"reflect"
	"sync"
	"testing"

	"github.com/warrenvpn/warren/telemetry"
)

func TestCountersAddPathsDoNotAllocate(t *testing.T) {
	var c telemetry.Counters
	allocs := testing.AllocsPerRun(1000, func() {
		c.AddIn(3, 4500)
		c.AddOut(2, 3000)
		c.Drop(telemetry.DropQueueFull, 1)
		c.SessionOpened(telemetry.TransportQUIC)
		c.SessionClosed(telemetry.TransportQUIC)
		c.Handshake(true)
		c.Handshake(false)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run, want 0", allocs)
	}
}

// TestCountersSnapshotSumsConcurrentAdds: counts added from several goroutines
// (run under -race) all show in the snapshot, each in its own field.
func TestCountersSnapshotSumsConcurrentAdds(t *testing.T) {
	var c telemetry.Counters
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for range 1000 {
				c.AddIn(1, 100)
				c.AddOut(2, 50)
				c.Drop(telemetry.DropReason(g), 1)
			}
		})
	}
	c.SessionOpened(telemetry.TransportWebSocket)
	c.SessionOpened(telemetry.TransportWebSocket)
	c.SessionClosed(telemetry.TransportWebSocket)
	c.SessionOpened(telemetry.TransportWireGuard)
	c.Handshake(true)
	c.Handshake(false)
	c.Handshake(false)
	c.Drop(telemetry.NumDropReasons, 5)      // ignored
	c.SessionOpened(telemetry.NumTransports) // ignored
	wg.Wait()

	want := telemetry.Statistics{
		BytesIn: 400000, BytesOut: 200000, PacketsIn: 4000, PacketsOut: 8000,
		Drops: telemetry.Drops{ACL: 1000, Policy: 1000, RateLimit: 1000, Spoofed: 1000},
		Sessions: telemetry.SessionsByTransport{
			WebSocket: telemetry.SessionCount{Active: 1, Opened: 2},
			WireGuard: telemetry.SessionCount{Active: 1, Opened: 1},
		},
		HandshakesOK: 1, HandshakesFailed: 2,
	}
	got := c.Snapshot()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshot\n got %+v\nwant %+v", got, want)
	}
	if got.Drops.Total() != 4000 {
		t.Fatalf("drops total %d", got.Drops.Total())
	}
	got.Add(want)
	if got.BytesIn != 800000 || got.Drops.ACL != 2000 || got.Sessions.WebSocket.Opened != 4 || got.HandshakesFailed != 4 {
		t.Fatalf("Add: %+v", got)
	}
}

func TestStatisticsJSONNamesEveryDropReason(t *testing.T) {
	var d telemetry.Drops
	for r := range telemetry.NumDropReasons {
		d.Set(r, uint64(r)+1)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]uint64
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for r := range telemetry.NumDropReasons {
		if m[r.String()] != uint64(r)+1 {
			t.Errorf("JSON %s: %s = %d, want %d", b, r, m[r.String()], r+1)
		}
	}
	if len(m) != int(telemetry.NumDropReasons) {
		t.Errorf("JSON %s has %d fields, want %d", b, len(m), telemetry.NumDropReasons)
	}
}

func TestComputeMTU(t *testing.T) {
	// Illustrative sizes; the root passes the ones its codec and handshake use.
	quic := telemetry.Framing{Transport: "quic", Layers: []telemetry.Layer{
		{"ipv4", telemetry.IPv4HeaderLen}, {"udp", telemetry.UDPHeaderLen}, {"quic short header", 13}, {"quic aead tag", 16}, {"warren datagram", 28},
	}}
	ws := telemetry.Framing{Transport: "websocket", Stream: true, Layers: []telemetry.Layer{
		{"ipv6", telemetry.IPv6HeaderLen}, {"tcp", telemetry.TCPHeaderLen}, {"tls record", 22}, {"websocket", 4}, {"warren frame", 19},
	}}
	huge := telemetry.Framing{Transport: "huge", Layers: []telemetry.Layer{{"x", 2000}}}
	got := telemetry.ComputeMTU(1420, 1500, quic, ws, huge)
	want := []struct {
		overhead, effective int
	}{{85, 1415}, {105, 1420}, {2000, 0}}
	if got.TunnelMTU != 1420 || got.PathMTU != 1500 || len(got.Transports) != 3 {
		t.Fatalf("got %+v", got)
	}
	for i, w := range want {
		if tr := got.Transports[i]; tr.Overhead != w.overhead || tr.EffectiveMTU != w.effective {
			t.Errorf("%s: overhead %d effective %d, want %d %d", tr.Transport, tr.Overhead, tr.EffectiveMTU, w.overhead, w.effective)
		}
	}
	quic.Layers[0].Bytes = 999
	if got.Transports[0].Layers[0].Bytes != telemetry.IPv4HeaderLen {
		t.Fatal("ComputeMTU kept the caller's slice")
	}
	// Path MTU bounds a datagram transport: 1500 - (999 + 65) < 1280.
	if small := telemetry.ComputeMTU(1280, 1500, quic); small.Transports[0].EffectiveMTU != 436 {
		t.Fatalf("path-bound: %+v", small.Transports[0])
	}
}
