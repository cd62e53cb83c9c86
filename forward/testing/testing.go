// Package testing is a forward.Engine for tests: it carries nothing anywhere. It
// counts the packets clients send, keeps them for the test to read with Next,
// lets the test inject packets toward clients, and can answer pings itself.
// It needs no root and no network.
//
// Its name clashes with the standard library's; import it under another name:
//
//	import fwdtest "github.com/warrenvpn/warren/forward/testing"
//
//	eng := fwdtest.New(fwdtest.Options{EchoICMP: true})
//	srv, _ := warren.NewServer(warren.ServerConfig{Forwarder: eng, ...})
//	...
//	pkt, err := eng.Next(ctx) // the next packet a client sent
//	eng.Inject(fwdtest.UDPPacket(from, to, []byte("reply")))
package testing

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/warrenvpn/warren/forward"
	"github.com/warrenvpn/warren/internal/packet"
)

// DefaultBuffer is the number of captured packets an Engine keeps when
// Options.Buffer is zero.
const DefaultBuffer = 1024

// maxEchoBatch bounds how many echo replies one Deliver call carries.
const maxEchoBatch = 64

// ErrNotStarted is returned by Send and Inject before Start.
var ErrNotStarted = errors.New("testing: engine not started")

// Options configure an Engine.
type Options struct {
	// EchoICMP makes the engine answer ICMP and ICMPv6 echo requests that
	// clients send, as a host on the far side would, through Config.Deliver.
	EchoICMP bool
	// Buffer is how many captured packets the engine keeps for Next. When it is
	// full the oldest packet is dropped and counted in Stats.Dropped. If zero
	// or negative, DefaultBuffer. It also bounds the echo replies waiting to
	// be delivered.
	Buffer int
}

// Stats are an Engine's counters.
type Stats struct {
	// SentPackets and SentBytes count the packets clients sent (Send).
	SentPackets, SentBytes uint64
	// InjectedPackets counts the packets Inject delivered toward clients.
	// A packet is counted before it is handed to Config.Deliver, so a
	// test that has seen it arrive sees it counted.
	InjectedPackets uint64
	// Echoed counts the echo replies delivered, counted as InjectedPackets
	// are, before they are handed over.
	Echoed uint64
	// Dropped counts captured packets discarded because the buffer was full,
	// and echo replies discarded because too many were waiting.
	Dropped uint64
}

// Engine is a forward.Engine that captures what clients send. Create it with
// New. It is safe for concurrent use.
type Engine struct {
	opts Options

	mu      sync.Mutex
	deliver forward.DeliverFunc // set by Start
	started bool
	closed  bool
	ring    [][]byte // captured packets, oldest at head
	head, n int

	ready  chan struct{} // signalled (cap 1) when ring becomes non-empty
	echoes chan []byte   // replies for echoLoop to deliver
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup

	sentPackets, sentBytes, injected, echoed, dropped atomic.Uint64
}

var _ forward.Engine = (*Engine)(nil)

// New returns an Engine; it does nothing until Start.
func New(opts Options) *Engine {
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultBuffer
	}
	return &Engine{
		opts:   opts,
		ring:   make([][]byte, opts.Buffer),
		ready:  make(chan struct{}, 1),
		echoes: make(chan []byte, opts.Buffer),
		done:   make(chan struct{}),
	}
}

// Start implements forward.Engine. cfg.Deliver must not be nil. An Engine
// starts once.
func (e *Engine) Start(cfg forward.Config) error {
	if cfg.Deliver == nil {
		return errors.New("testing: start: Config.Deliver is nil")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return fmt.Errorf("testing: start: %w", net.ErrClosed)
	case e.started:
		return errors.New("testing: start: engine already started")
	}
	e.started = true
	e.deliver = cfg.Deliver
	if e.opts.EchoICMP {
		e.wg.Add(1)
		go e.echoLoop(cfg.Deliver)
	}
	return nil
}

// Send implements forward.Engine: it copies and counts each packet,
// bufs[i][offset:], and keeps it for Next. With Options.EchoICMP, an echo
// request is also answered: the reply is delivered from the engine's own
// goroutine, never from inside Send.
func (e *Engine) Send(bufs [][]byte, offset int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return fmt.Errorf("testing: send: %w", net.ErrClosed)
	case !e.started:
		return fmt.Errorf("testing: send: %w", ErrNotStarted)
	}
	for _, b := range bufs {
		b = b[offset:]
		e.sentPackets.Add(1)
		e.sentBytes.Add(uint64(len(b)))
		e.push(append([]byte(nil), b...))
		if !e.opts.EchoICMP {
			continue
		}
		if rep, ok := packet.EchoReply(b); ok {
			select {
			case e.echoes <- withRoom(rep):
			default:
				e.dropped.Add(1)
			}
		}
	}
	return nil
}

// push appends p to the ring, dropping the oldest packet if it is full; e.mu
// is held.
func (e *Engine) push(p []byte) {
	if e.n == len(e.ring) {
		e.ring[e.head] = nil
		e.head = (e.head + 1) % len(e.ring)
		e.n--
		e.dropped.Add(1)
	}
	e.ring[(e.head+e.n)%len(e.ring)] = p
	e.n++
	e.signal()
}

// signal wakes one Next waiter without blocking.
func (e *Engine) signal() {
	select {
	case e.ready <- struct{}{}:
	default:
	}
}

// Next returns the next packet a client sent, oldest first, waiting for one
// until ctx is done. The packet is the caller's to keep. After Close, Next
// returns the packets still kept, then an error wrapping net.ErrClosed.
func (e *Engine) Next(ctx context.Context) ([]byte, error) {
	for {
		e.mu.Lock()
		if e.n > 0 {
			p := e.ring[e.head]
			e.ring[e.head] = nil
			e.head = (e.head + 1) % len(e.ring)
			e.n--
			if e.n > 0 {
				e.signal() // another waiter may take the rest
			}
			e.mu.Unlock()
			return p, nil
		}
		closed := e.closed
		e.mu.Unlock()
		if closed {
			return nil, fmt.Errorf("testing: next: %w", net.ErrClosed)
		}
		select {
		case <-e.ready:
		case <-e.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("testing: next: %w", ctx.Err())
		}
	}
}

// Inject delivers a copy of pkt toward the client it is addressed to, through
// Config.Deliver, before it returns. pkt is not checked, so a test can inject
// malformed packets too.
func (e *Engine) Inject(pkt []byte) error {
	e.mu.Lock()
	deliver, started, closed := e.deliver, e.started, e.closed
	e.mu.Unlock()
	switch {
	case closed:
		return fmt.Errorf("testing: inject: %w", net.ErrClosed)
	case !started:
		return fmt.Errorf("testing: inject: %w", ErrNotStarted)
	}
	ib := injectBufs.Get().(*injectBuf)
	if need := forward.Headroom + len(pkt) + forward.Tailroom; cap(ib.b) < need {
		ib.b = make([]byte, 0, max(need, injectBufSize))
	}
	ib.bufs[0] = ib.b[:forward.Headroom+copy(ib.b[forward.Headroom:forward.Headroom+len(pkt)], pkt)]
	e.injected.Add(1) // before Deliver, as echo replies are counted
	deliver(ib.bufs[:], forward.Headroom)
	ib.bufs[0] = nil
	injectBufs.Put(ib)
	return nil
}

// injectBuf is Inject's room for one packet. A DeliverFunc keeps nothing it
// is handed, so the buffer is free again once Deliver returns, and Inject
// allocates nothing in steady state: a test or benchmark that injects many
// packets measures the pipeline, not this engine.
type injectBuf struct {
	bufs [1][]byte
	b    []byte
}

// injectBufSize is the least room an injectBuf is made with: a packet of
// a usual tunnel MTU and the room around it.
const injectBufSize = 2048

var injectBufs = sync.Pool{New: func() any { return new(injectBuf) }}

// withRoom returns a copy of pkt with forward.Headroom in front of it and
// forward.Tailroom behind it, as engines deliver packets.
func withRoom(pkt []byte) []byte {
	b := make([]byte, forward.Headroom+len(pkt), forward.Headroom+len(pkt)+forward.Tailroom)
	copy(b[forward.Headroom:], pkt)
	return b
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	return Stats{
		SentPackets:     e.sentPackets.Load(),
		SentBytes:       e.sentBytes.Load(),
		InjectedPackets: e.injected.Load(),
		Echoed:          e.echoed.Load(),
		Dropped:         e.dropped.Load(),
	}
}

// Close implements forward.Engine: it stops the engine's goroutine and waits
// for it. Echo replies not yet delivered are discarded. Closing twice returns
// an error wrapping net.ErrClosed.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return fmt.Errorf("testing: close: %w", net.ErrClosed)
	}
	e.closed = true
	close(e.done)
	e.mu.Unlock()
	e.wg.Wait()
	return nil
}

// echoLoop delivers echo replies in batches until Close.
func (e *Engine) echoLoop(deliver forward.DeliverFunc) {
	defer e.wg.Done()
	batch := make([][]byte, 0, maxEchoBatch)
	for {
		select {
		case <-e.done:
			return
		case rep := <-e.echoes:
			batch = append(batch[:0], rep)
		more:
			for len(batch) < maxEchoBatch {
				select {
				case rep := <-e.echoes:
					batch = append(batch, rep)
				default:
					break more
				}
			}
			// Counted before they are handed over, so that whoever
			// sees a reply arrive sees it counted.
			e.echoed.Add(uint64(len(batch)))
			deliver(batch, forward.Headroom)
			clear(batch)
		}
	}
}

// UDPPacket returns an IPv4 or IPv6 packet carrying a UDP datagram, with right
// checksums, or nil if the addresses are invalid or of different families.
func UDPPacket(src, dst netip.AddrPort, payload []byte) []byte {
	return packet.BuildUDP(src, dst, payload)
}

// ICMPEcho returns an ICMP (IPv4) or ICMPv6 (IPv6) echo request, with right
// checksums, or nil if the addresses are invalid or of different families.
func ICMPEcho(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	return packet.BuildICMPEcho(src, dst, id, seq, payload)
}

// ParseUDP returns the addresses and payload of the UDP datagram in pkt, for
// checking what Next returns. payload aliases pkt; ok is false if pkt is not a
// whole, well-formed UDP packet.
func ParseUDP(pkt []byte) (src, dst netip.AddrPort, payload []byte, ok bool) {
	return packet.ParseUDP(pkt)
}

// ParseICMPEcho returns the fields of the ICMP or ICMPv6 echo request or reply
// in pkt: typ is 8 or 0 (ICMP request, reply) or 128 or 129 (ICMPv6). payload
// aliases pkt; ok is false for any other packet.
func ParseICMPEcho(pkt []byte) (typ uint8, id, seq uint16, payload []byte, ok bool) {
	return packet.ParseICMPEcho(pkt)
}
