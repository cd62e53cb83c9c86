package wg

import (
	"os"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// queueLen bounds the packets waiting for wireguard-go to read them, and so
// the buffers the bridge ever allocates: queueLen × MTU bytes at most. It
// matches wireguard-go's own outbound queue (device.QueueOutboundSize).
const queueLen = 1024

// tunEventUp is tun.EventUp typed for the events channel.
const tunEventUp tun.Event = tun.EventUp

// bridge is the tun.Device wireguard-go runs on. Reads come from what
// Device.Send hands over; writes go to the Receive callback.
//
// A Send copies each packet once when wireguard-go's reader is waiting in
// Read: straight into the buffers that Read was given, and the reader is
// woken once for the whole batch. Only what finds no reader waiting (or no
// room left in its buffers) is copied into the bounded queue, a ring under
// the same mutex that the next Read empties in one go. There is no channel
// operation per packet.
type bridge struct {
	mtu       int
	receive   func([][]byte)
	receiveAt func([][]byte, int) // if set, instead of receive

	mu sync.Mutex
	// ring holds packets no reader was waiting for, ring[head:head+n]
	// modulo queueLen; each slot keeps its buffer (of mtu bytes, made on
	// first use) for reuse, so at most queueLen buffers ever exist.
	ring      [][]byte
	head, n   int
	allocated atomic.Int32 // ring buffers made
	// reader is the Read waiting for packets, if parked: Send copies into
	// its buffers and counts them in got.
	parked bool
	rbufs  [][]byte
	rsizes []int
	roff   int
	got    int
	wake   chan struct{} // cap 1: the parked reader has packets

	// scratch holds *[][]byte for Write, so that re-slicing a batch past
	// the offset allocates nothing.
	scratch sync.Pool

	events    chan tun.Event
	closed    chan struct{}
	closeOnce sync.Once

	received, sent, dropped atomic.Uint64
}

var _ tun.Device = (*bridge)(nil)

func newBridge(mtu int, receive func([][]byte)) *bridge {
	b := &bridge{
		mtu:     mtu,
		receive: receive,
		wake:    make(chan struct{}, 1),
		events:  make(chan tun.Event, 1),
		closed:  make(chan struct{}),
	}
	b.scratch.New = func() any {
		s := make([][]byte, 0, conn.IdealBatchSize)
		return &s
	}
	return b
}

// enqueue copies bufs[i][offset:] to a waiting reader or into the queue,
// dropping what does not fit, and returns how many packets it took.
func (b *bridge) enqueue(bufs [][]byte, offset int) int {
	n, handed := 0, false
	b.mu.Lock()
	for _, p := range bufs {
		p = p[offset:]
		if len(p) == 0 || len(p) > b.mtu {
			b.dropped.Add(1)
			continue
		}
		if b.parked && b.got < len(b.rbufs) && b.got < len(b.rsizes) {
			if dst := b.rbufs[b.got]; b.roff >= 0 && b.roff <= len(dst) && len(dst)-b.roff >= len(p) {
				b.rsizes[b.got] = copy(dst[b.roff:], p)
				b.got++
				handed = true
				n++
			} else {
				b.dropped.Add(1)
			}
			continue
		}
		if b.n == queueLen {
			b.dropped.Add(1)
			continue
		}
		if b.ring == nil {
			b.ring = make([][]byte, queueLen)
		}
		i := (b.head + b.n) % queueLen
		if b.ring[i] == nil {
			b.ring[i] = make([]byte, 0, b.mtu)
			b.allocated.Add(1)
		}
		b.ring[i] = append(b.ring[i][:0], p...)
		b.n++
		n++
	}
	if handed && b.got > 0 {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	b.mu.Unlock()
	return n
}

// takeLocked moves queued packets into bufs[k:], each to bufs[i][offset:],
// and returns the new count. Call with mu held.
func (b *bridge) takeLocked(bufs [][]byte, sizes []int, offset, k int) int {
	for b.n > 0 && k < len(bufs) && k < len(sizes) {
		p := b.ring[b.head]
		b.head = (b.head + 1) % queueLen
		b.n--
		if dst := bufs[k]; offset >= 0 && offset <= len(dst) && len(dst)-offset >= len(p) {
			sizes[k] = copy(dst[offset:], p)
			k++
		} else {
			b.dropped.Add(1)
		}
	}
	if b.n == 0 {
		b.head = 0 // reuse the first slots' buffers: a short queue makes few
	}
	return k
}

// File returns nil: the bridge has no file descriptor.
func (b *bridge) File() *os.File { return nil }

// Read blocks until at least one packet has been sent, then returns as many
// as bufs holds, each at bufs[i][offset:]: those queued, or, if none was,
// those Send copied into bufs while Read waited.
func (b *bridge) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || len(sizes) == 0 {
		return 0, nil
	}
	for {
		b.mu.Lock()
		if k := b.takeLocked(bufs, sizes, offset, 0); k > 0 {
			b.mu.Unlock()
			b.sent.Add(uint64(k))
			return k, nil
		}
		b.parked, b.rbufs, b.rsizes, b.roff, b.got = true, bufs, sizes, offset, 0
		b.mu.Unlock()

		var closed bool
		select {
		case <-b.wake:
		case <-b.closed:
			closed = true
		}
		b.mu.Lock()
		k := b.got
		b.parked, b.rbufs, b.rsizes, b.got = false, nil, nil, 0
		if k > 0 {
			k = b.takeLocked(bufs, sizes, offset, k)
		}
		b.mu.Unlock()
		if k > 0 {
			b.sent.Add(uint64(k))
			return k, nil
		}
		if closed {
			return 0, os.ErrClosed
		}
		// A wake left over from an earlier wait: look again.
	}
}

// Write hands bufs[i][offset:] to the Receive callback, or the batch as it
// is to the ReceiveOffset callback.
func (b *bridge) Write(bufs [][]byte, offset int) (int, error) {
	if b.receiveAt != nil {
		if len(bufs) > 0 {
			b.received.Add(uint64(len(bufs)))
			b.receiveAt(bufs, offset)
		}
		return len(bufs), nil
	}
	sp := b.scratch.Get().(*[][]byte)
	s := (*sp)[:0]
	for _, p := range bufs {
		if offset < len(p) {
			s = append(s, p[offset:])
		}
	}
	if len(s) > 0 {
		// Counted first, so whoever sees a packet in Receive sees it
		// counted too.
		b.received.Add(uint64(len(s)))
		b.receive(s)
	}
	clear(s)
	*sp = s[:0]
	b.scratch.Put(sp)
	return len(bufs), nil
}

// MTU returns the tunnel MTU.
func (b *bridge) MTU() (int, error) { return b.mtu, nil }

// Name returns a fixed name: the bridge is no system interface.
func (b *bridge) Name() (string, error) { return "warren-wg", nil }

// Events returns the channel wireguard-go reads interface events from.
func (b *bridge) Events() <-chan tun.Event { return b.events }

// Close wakes a blocked Read and closes the events channel.
func (b *bridge) Close() error {
	b.closeOnce.Do(func() {
		close(b.closed)
		close(b.events)
	})
	return nil
}

// BatchSize returns how many packets Read and Write move at most per call.
func (b *bridge) BatchSize() int { return conn.IdealBatchSize }
