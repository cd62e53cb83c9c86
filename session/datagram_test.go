package session

import (
	"fmt"
	"testing"

	"github.com/warrenvpn/warren/codec"
)

// ringDgram is a datagram pipe end that copies each datagram into one of a
// ring of buffers instead of a new one, so what a test measures on it is the
// session's own allocations. A buffer is reused only after the ring has gone
// round, long after the receiver is done with it in these tests.
type ringDgram struct {
	*dgramEnd
	ring [][]byte
	next int
}

func newRingDgram(d *dgramEnd, n int) *ringDgram {
	r := &ringDgram{dgramEnd: d, ring: make([][]byte, n)}
	for i := range r.ring {
		r.ring[i] = make([]byte, 0, d.room)
	}
	return r
}

func (r *ringDgram) SendDatagram(b []byte) error {
	if len(b) > r.room {
		return fmt.Errorf("%w: %d bytes, room for %d", errTooLarge, len(b), r.room)
	}
	c := append(r.ring[r.next][:0], b...)
	r.next = (r.next + 1) % len(r.ring)
	return r.inject(c)
}

// TestSteadyStateDatagramsAllocateNothing: a packet that goes as a datagram
// is sealed in place in its buffer's headroom and tailroom and opened in
// place in the received datagram, so the session's datagram path allocates
// nothing per packet, sending or receiving.
func TestSteadyStateDatagramsAllocateNothing(t *testing.T) {
	w := newWorld(t)
	dc, dh := newDatagramPipe(1400)
	cc, hc := newRingDgram(dc, 256), newRingDgram(dh, 256)
	sink := &counter{batches: make(chan int, 1024)}
	client, hub, _ := w.handshakeOver(t, cc, hc, sink)
	if client.err != nil || hub.err != nil {
		t.Fatal(client.err, hub.err)
	}
	client.s.Start(&counter{batches: make(chan int, 1024)})
	defer func() {
		client.s.Close(Reason{codec.DisconnectClosed, "over"})
		<-client.s.Done()
		<-hub.s.Done()
	}()
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = packetBuf(1200, byte(i))
	}
	round := func() {
		// Each datagram is sealed in place, so the next round seals the
		// ciphertext again: the bytes do not matter here.
		if _, err := client.s.Write(batch, Headroom); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(batch); got += <-sink.batches {
		}
	}
	for range 10 {
		round()
	}
	// Under the race detector sync.Pool drops nonce buffers at random,
	// so the path runs but its allocations are not counted.
	if a := testing.AllocsPerRun(200, round); a != 0 && !raceEnabled {
		t.Fatalf("%v allocations per batch of %d datagrams, want 0", a, len(batch))
	}
	if m := client.s.MTUInfo(); m.OnStream != 0 || m.DatagramsSent < 210*uint64(len(batch)) {
		t.Fatalf("client MTUInfo %+v: want every packet sent as a datagram", m)
	}
}
