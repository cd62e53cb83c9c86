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

// queued is one queued packet: buf[:n].
type queued struct {
	buf []byte
	n   int
}

// bridge is the tun.Device wireguard-go runs on. Reads come from a bounded
// queue that Device.Send fills; writes go to the Receive callback.
type bridge struct {
	mtu     int
	receive func([][]byte)

	// queue holds packets for wireguard-go; free holds empty buffers. A
	// buffer is in exactly one of queue, free or a caller's hands, and at
	// most queueLen exist (allocated counts them), so neither channel can
	// be full when a buffer is offered to it.
	queue     chan *queued
	free      chan *queued
	allocated atomic.Int32

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
		queue:   make(chan *queued, queueLen),
		free:    make(chan *queued, queueLen),
		events:  make(chan tun.Event, 1),
		closed:  make(chan struct{}),
	}
	b.scratch.New = func() any {
		s := make([][]byte, 0, conn.IdealBatchSize)
		return &s
	}
	return b
}

// enqueue copies bufs into the queue, dropping what does not fit, and
// returns how many packets it queued.
func (b *bridge) enqueue(bufs [][]byte, offset int) int {
	n := 0
	for _, p := range bufs {
		p = p[offset:]
		if len(p) == 0 || len(p) > b.mtu {
			b.dropped.Add(1)
			continue
		}
		pkt := b.getBuffer()
		if pkt == nil {
			b.dropped.Add(1)
			continue
		}
		pkt.n = copy(pkt.buf, p)
		b.queue <- pkt // never blocks: see bridge.queue
		n++
	}
	return n
}

// getBuffer returns an empty buffer, or nil when queueLen buffers are in use.
func (b *bridge) getBuffer() *queued {
	select {
	case pkt := <-b.free:
		return pkt
	default:
	}
	if b.allocated.Add(1) > queueLen {
		b.allocated.Add(-1)
		return nil
	}
	return &queued{buf: make([]byte, b.mtu)}
}

// File returns nil: the bridge has no file descriptor.
func (b *bridge) File() *os.File { return nil }

// Read blocks until at least one packet is queued, then moves as many queued
// packets as bufs holds, each to bufs[i][offset:].
func (b *bridge) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || len(sizes) == 0 {
		return 0, nil
	}
	var pkt *queued
	select {
	case pkt = <-b.queue:
	case <-b.closed:
		return 0, os.ErrClosed
	}
	n := 0
	for {
		if dst := bufs[n]; offset >= 0 && offset <= len(dst) && len(dst)-offset >= pkt.n {
			sizes[n] = copy(dst[offset:], pkt.buf[:pkt.n])
			n++
		} else {
			b.dropped.Add(1)
		}
		b.free <- pkt // never blocks: see bridge.queue
		if n == len(bufs) || n == len(sizes) {
			break
		}
		select {
		case pkt = <-b.queue:
			continue
		default:
		}
		break
	}
	b.sent.Add(uint64(n))
	return n, nil
}

// Write hands bufs[i][offset:] to the Receive callback.
func (b *bridge) Write(bufs [][]byte, offset int) (int, error) {
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
