package session

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenvpn/warren/codec"
)

// bufferPipe is a pipe end that is a transport.BufferReader, as the
// WebSocket transport is: it reads each message into the caller's buffer
// and records where the message's first frame landed.
type bufferPipe struct {
	*pipeEnd
	first atomic.Pointer[byte]
}

func (p *bufferPipe) ReadMessageBuffer(n int, get func() []byte) ([]byte, error) {
	m, err := p.ReadMessage()
	if err != nil {
		return nil, err
	}
	var room [ReadHeadroom]byte
	b := append(append(get()[:0], room[:n]...), m...)
	p.first.Store(&b[n])
	return b, nil
}

// forwarder is a LeaseHandler that passes what it is handed to another
// session, as the hub's pipeline passes a client's packets to another
// client: packets where keep says, to the session to; the others it treats
// as an engine would, writing a header into their headroom.
type forwarder struct {
	to      *Session
	keep    func(i int) bool
	scratch [][]byte
}

func (f *forwarder) Packets(bufs [][]byte, offset int) { f.PacketsLeased(bufs, offset, nil) }

func (f *forwarder) PacketsLeased(bufs [][]byte, offset int, l *Lease) {
	pass := f.scratch[:0]
	for i, b := range bufs {
		if f.keep(i) {
			pass = append(pass, b)
		}
	}
	f.to.SendLeased(l, pass, offset)
	for i, b := range bufs {
		if !f.keep(i) {
			for j := range offset {
				b[j] = 0xee
			}
		}
	}
	clear(pass)
	f.scratch = pass[:0]
}

func (f *forwarder) Closed(Reason) {}

// collector is a Handler that signals each batch and, when packets is
// set, keeps copies of the packets there.
type collector struct {
	batches chan int
	packets *[][]byte
}

func (c *collector) Packets(bufs [][]byte, offset int) {
	if c.packets != nil {
		for _, b := range bufs {
			*c.packets = append(*c.packets, bytes.Clone(b[offset:]))
		}
	}
	c.batches <- len(bufs)
}

func (c *collector) Closed(Reason) {}

// relay is two client sessions and the hub's side of each, the first
// hub session reading into leases and passing packets to the second.
type relay struct {
	src, dst     *Session // the clients: src sends, dst receives
	from         *bufferPipe
	to           *pipeEnd // under the hub's session toward dst
	fwd          *forwarder
	got          *collector
	stopped      []*Session
	inPlace, all atomic.Int64 // messages the second hub session wrote from a lease, and all
}

func newRelay(t *testing.T, keep func(int) bool) *relay {
	t.Helper()
	r := &relay{got: &collector{batches: make(chan int, 1024)}}
	w := newWorld(t)
	cc, hc := newPipe(0)
	r.to = hc
	dst, hub, _ := w.handshakeOver(t, cc, hc, newRecorder())
	if dst.err != nil || hub.err != nil {
		t.Fatal(dst.err, hub.err)
	}
	dst.s.Start(r.got)
	r.dst = dst.s
	r.fwd = &forwarder{to: hub.s, keep: keep}
	hc.onWrite = func(b []byte) {
		r.all.Add(1)
		if p := r.from.first.Load(); p != nil && &b[0] == p {
			r.inPlace.Add(1)
		}
	}
	w2 := newWorld(t)
	cc2, hc2 := newPipe(0)
	r.from = &bufferPipe{pipeEnd: hc2}
	src, hub2, _ := w2.handshakeOver(t, cc2, r.from, r.fwd)
	if src.err != nil || hub2.err != nil {
		t.Fatal(src.err, hub2.err)
	}
	src.s.Start(newRecorder())
	r.src = src.s
	r.stopped = []*Session{src.s, hub2.s, dst.s, hub.s}
	t.Cleanup(func() {
		for _, s := range r.stopped {
			s.Close(Reason{codec.DisconnectClosed, "over"})
		}
		for _, s := range r.stopped {
			<-s.Done()
		}
	})
	return r
}

// send writes batch from src and waits until n packets reach dst.
func (r *relay) send(t testing.TB, batch [][]byte, n int) {
	if _, err := r.src.Write(batch, Headroom); err != nil {
		t.Fatal(err)
	}
	for got := 0; got < n; got += <-r.got.batches {
	}
}

func TestHandedOverPacketsAreSealedInPlaceAndAllocateNothing(t *testing.T) {
	r := newRelay(t, func(int) bool { return true })
	var packets [][]byte
	r.got.packets = &packets
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = packetBuf(1400, byte(i))
	}
	r.send(t, batch, len(batch))
	if len(packets) != len(batch) {
		t.Fatalf("%d packets arrived, want %d", len(packets), len(batch))
	}
	for i, p := range packets {
		if !bytes.Equal(p, batch[i][Headroom:]) {
			t.Fatalf("packet %d arrived as %x..., want %x...", i, p[:4], batch[i][Headroom:Headroom+4])
		}
	}
	if n := r.fwd.to.Counters().HandedOver; n != uint64(len(batch)) {
		t.Fatalf("%d packets handed over, want %d", n, len(batch))
	}
	// The message the hub wrote toward dst is the one it read from src,
	// where it read it: no copy on the way.
	if in, all := r.inPlace.Load(), r.all.Load(); in != 1 {
		t.Fatalf("%d of %d messages to dst were written from the buffer the packets arrived in, want 1", in, all)
	}
	r.got.packets = nil
	for range 10 {
		r.send(t, batch, len(batch)) // warm up: leases and queues grow
	}
	before := r.inPlace.Load()
	a := testing.AllocsPerRun(100, func() { r.send(t, batch, len(batch)) })
	if n := r.inPlace.Load() - before; n != 101 {
		t.Fatalf("%d of 101 batches written from where they arrived", n)
	}
	// Under the race detector sync.Pool drops what is put at random.
	if a != 0 && !raceEnabled {
		t.Fatalf("%v allocations per batch of %d packets handed over, want 0", a, len(batch))
	}
}

func TestHandedOverPacketsBesideAnEngineArriveIntact(t *testing.T) {
	// Runs of ten packets go on; the five behind each get a header
	// written into their headroom, as an engine may, and that headroom
	// overlaps the tag room of the packet in front: the last packet of a
	// run must not be sealed in place while it is written (the race
	// detector watches), nor be corrupted by it.
	keep := func(i int) bool { return i%15 < 10 }
	r := newRelay(t, keep)
	var packets [][]byte
	r.got.packets = &packets
	batch := make([][]byte, 30)
	var kept []int
	for i := range batch {
		batch[i] = packetBuf(200+i, byte(i))
		if keep(i) {
			kept = append(kept, i)
		}
	}
	const rounds = 20
	for range rounds {
		packets = packets[:0]
		r.send(t, batch, len(kept))
		for k, p := range packets {
			if want := batch[kept[k]][Headroom:]; !bytes.Equal(p, want) {
				t.Fatalf("packet %d arrived as %x... (%d bytes), want %x... (%d)", kept[k], p[:4], len(p), want[:4], len(want))
			}
		}
	}
	if n := r.dst.Counters().PacketsIn; n != rounds*uint64(len(kept)) {
		t.Fatalf("dst got %d packets, want %d", n, rounds*len(kept))
	}
	if r.inPlace.Load() == 0 {
		t.Fatal("no run was sealed in place")
	}
}

func TestPoolIsBounded(t *testing.T) {
	p := NewPool(100)
	out := make([]*[]byte, 0, PoolBuffers)
	for range PoolBuffers {
		b := p.get()
		if b == nil {
			t.Fatalf("pool empty after %d buffers, want %d", len(out), PoolBuffers)
		}
		out = append(out, b)
	}
	if p.get() != nil {
		t.Fatalf("pool lent more than %d buffers", PoolBuffers)
	}
	p.put(out[0])
	if b := p.get(); b == nil {
		t.Fatal("a buffer given back was not lent again")
	}
	leases := make([]*Lease, 0, PoolMessages)
	for range PoolMessages {
		leases = append(leases, p.lease())
	}
	if p.lease() != nil {
		t.Fatalf("pool lent more than %d message buffers", PoolMessages)
	}
	leases[0].refs.Add(1) // a queued packet holds it too
	leases[0].release()
	if p.lease() != nil {
		t.Fatal("a message buffer still held by a queued packet was lent again")
	}
	leases[0].release()
	if p.lease() == nil {
		t.Fatal("a message buffer nobody holds was not lent again")
	}
}

func TestWriterGivesItsMessageBufferBackWhenIdle(t *testing.T) {
	w := newWorld(t)
	cc, hc := newPipe(0)
	_, h, cr, _ := w.connected(t, cc, hc)
	batch := make([][]byte, 40)
	for i := range batch {
		batch[i] = append(make([]byte, Headroom), bytes.Repeat([]byte{byte(i)}, 1400)...)
	}
	if n := h.SendBatch(batch, Headroom); n != len(batch) {
		t.Fatalf("SendBatch queued %d of %d", n, len(batch))
	}
	cr.waitPackets(t, len(batch))
	deadline := time.Now().Add(10 * time.Second)
	for h.pool.msgs.out.Load() != 0 || h.pool.bufs.out.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d message buffers and %d packet buffers still out of the pool", h.pool.msgs.out.Load(), h.pool.bufs.out.Load())
		}
		time.Sleep(time.Millisecond)
	}
	h.wmu.Lock()
	held := cap(h.msg)
	h.wmu.Unlock()
	if held != 0 {
		t.Fatalf("an idle session's writer holds a %d-byte message buffer", held)
	}
}

func TestReaderGivesItsBufferBackBetweenMessages(t *testing.T) {
	w := newWorld(t)
	cc, hc := newPipe(0)
	hr := newRecorder()
	client, hub, _ := w.handshakeOver(t, cc, &bufferPipe{pipeEnd: hc}, hr)
	if client.err != nil || hub.err != nil {
		t.Fatal(client.err, hub.err)
	}
	client.s.Start(newRecorder())
	defer func() {
		client.s.Close(Reason{codec.DisconnectClosed, "over"})
		<-client.s.Done()
		<-hub.s.Done()
	}()
	batch := make([][]byte, 40) // one message of 56 KiB
	for i := range batch {
		batch[i] = packetBuf(1400, byte(i))
	}
	if _, err := client.s.Write(batch, Headroom); err != nil {
		t.Fatal(err)
	}
	hr.waitPackets(t, len(batch))
	deadline := time.Now().Add(10 * time.Second)
	for hub.s.pool.msgs.out.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the reader of an idle session holds %d message buffers", hub.s.pool.msgs.out.Load())
		}
		time.Sleep(time.Millisecond)
	}
}
