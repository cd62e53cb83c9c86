package wg

import (
	"net/netip"
	"testing"
	"time"

	"github.com/warrenvpn/warren/internal/packet"
)

// TestSessionSendsBatchAndCounts: a Session queues a batch for its peer in
// one call, refuses oversized packets and counts both directions; once
// closed it queues nothing.
func TestSessionSendsBatchAndCounts(t *testing.T) {
	hubC, clientSink := newCounter(), newSink()
	hub, client, clientKey := hubAndClient(t, Config{Receive: hubC.receive}, Config{Receive: clientSink.receive})
	up := packet.BuildUDP(netip.AddrPortFrom(clientIP, 1), netip.AddrPortFrom(hubIP, 2), []byte("hello"))
	client.Send([][]byte{up})
	select {
	case <-hubC.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("no handshake")
	}

	ss := hub.NewSession(clientKey.pub, netip.MustParseAddrPort("127.0.0.1:9"))
	if got := ss.Remote(); got != netip.MustParseAddrPort("127.0.0.1:9") {
		t.Fatalf("Remote = %v", got)
	}
	ss.Received([][]byte{up})
	down := func(payload string) []byte {
		return packet.BuildUDP(netip.AddrPortFrom(hubIP, 2), netip.AddrPortFrom(clientIP, 1), []byte(payload))
	}
	big := make([]byte, DefaultMTU+1)
	batch := [][]byte{down("one"), big, down("two"), down("three")}
	if n := ss.Send(batch); n != 3 {
		t.Fatalf("Send queued %d, want 3", n)
	}
	for _, want := range []string{"one", "two", "three"} {
		clientSink.waitFor(t, 10*time.Second, func(p []byte) bool { return string(p[28:]) == want })
	}
	n := ss.Counters()
	wantOut := uint64(len(batch[0]) + len(batch[2]) + len(batch[3]))
	if n != (SessionCounters{BytesIn: uint64(len(up)), PacketsIn: 1, BytesOut: wantOut, PacketsOut: 3, Oversized: 1}) {
		t.Fatalf("counters %+v", n)
	}

	if !ss.Close() || ss.Close() || !ss.Closed() {
		t.Fatal("Close does not report the first call only")
	}
	if n := ss.Send([][]byte{down("late")}); n != 0 {
		t.Fatalf("closed Session queued %d", n)
	}
	if got := ss.Counters().Dropped; got != 1 {
		t.Fatalf("Dropped = %d, want 1", got)
	}
}

// TestSessionSendDoesNotAllocate: a batch goes to the device without an
// allocation once its buffers exist.
func TestSessionSendDoesNotAllocate(t *testing.T) {
	// The bridge alone: a running device would read the queue too.
	d := &Device{bridge: newBridge(DefaultMTU, func([][]byte) {})}
	defer d.bridge.Close()
	ss := d.NewSession(newKeypair(t).pub, netip.AddrPort{})
	batch := [][]byte{make([]byte, 1400), make([]byte, 60), make([]byte, 1000)}
	bufs := make([][]byte, 128)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, len(bufs))
	cycle := func() {
		ss.Send(batch)
		if _, err := d.bridge.Read(bufs, sizes, 16); err != nil {
			t.Fatal(err)
		}
	}
	cycle()
	if a := testing.AllocsPerRun(1000, cycle); a != 0 {
		t.Errorf("Session.Send allocates %v times per batch, want 0", a)
	}
}
