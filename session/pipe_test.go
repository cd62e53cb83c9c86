package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
)

// pipeEnd is one end of an in-memory transport.Conn: messages are copied into
// buffers that circulate between the two ends, so a warmed-up pipe moves
// messages without allocating.
type pipeEnd struct {
	in, out   chan []byte // messages to read; the peer's in
	free      chan []byte // spent buffers, shared by both ends
	last      []byte      // the message ReadMessage returned last
	closed    chan struct{}
	peer      *pipeEnd
	closeOnce sync.Once
	remote    netip.AddrPort

	// Datagrams, when room > 0.
	room        int
	dgIn, dgOut chan []byte

	// onWrite, if set, sees every message written (tests capture with it).
	onWrite func([]byte)
}

// newPipe returns two connected ends; with room > 0 they carry datagrams of
// up to room bytes too (use asDatagram).
func newPipe(room int) (*pipeEnd, *pipeEnd) {
	ab, ba := make(chan []byte, 64), make(chan []byte, 64)
	free := make(chan []byte, 256)
	dab, dba := make(chan []byte, 256), make(chan []byte, 256)
	a := &pipeEnd{in: ba, out: ab, free: free, closed: make(chan struct{}), room: room, dgIn: dba, dgOut: dab,
		remote: netip.MustParseAddrPort("192.0.2.2:1000")}
	b := &pipeEnd{in: ab, out: ba, free: free, closed: make(chan struct{}), room: room, dgIn: dab, dgOut: dba,
		remote: netip.MustParseAddrPort("192.0.2.1:443")}
	a.peer, b.peer = b, a
	return a, b
}

func (e *pipeEnd) ReadMessage() ([]byte, error) {
	if e.last != nil {
		select {
		case e.free <- e.last[:0]:
		default:
		}
		e.last = nil
	}
	select {
	case m := <-e.in:
		e.last = m
		return m, nil
	default:
	}
	select {
	case m := <-e.in:
		e.last = m
		return m, nil
	case <-e.closed:
		return nil, fmt.Errorf("pipe: read: %w", net.ErrClosed)
	case <-e.peer.closed:
		select {
		case m := <-e.in: // written before the peer closed
			e.last = m
			return m, nil
		default:
			return nil, fmt.Errorf("pipe: read: %w", io.EOF)
		}
	}
}

func (e *pipeEnd) getBuf() []byte {
	select {
	case b := <-e.free:
		return b
	default:
		return nil
	}
}

func (e *pipeEnd) WriteMessage(b []byte) error {
	select {
	case <-e.closed:
		return fmt.Errorf("pipe: write: %w", net.ErrClosed)
	case <-e.peer.closed:
		return fmt.Errorf("pipe: write: %w", io.ErrClosedPipe)
	default:
	}
	if e.onWrite != nil {
		e.onWrite(b)
	}
	m := append(e.getBuf(), b...)
	select {
	case e.out <- m:
		return nil
	case <-e.closed:
		return fmt.Errorf("pipe: write: %w", net.ErrClosed)
	case <-e.peer.closed:
		return fmt.Errorf("pipe: write: %w", io.ErrClosedPipe)
	}
}

func (e *pipeEnd) RemoteAddr() netip.AddrPort { return e.remote }

func (e *pipeEnd) Close() error {
	e.closeOnce.Do(func() { close(e.closed) })
	return nil
}

// dgramEnd is a pipeEnd that also carries datagrams: a transport.DatagramConn.
type dgramEnd struct {
	*pipeEnd
	mu   sync.Mutex
	sent [][]byte // every datagram sent, when capture is on
	hold bool     // capture without delivering
}

var errTooLarge = errors.New("pipe: datagram too large")

func (d *dgramEnd) SendDatagram(b []byte) error {
	if len(b) > d.room {
		return fmt.Errorf("%w: %d bytes, room for %d", errTooLarge, len(b), d.room)
	}
	c := append([]byte(nil), b...)
	d.mu.Lock()
	hold := d.hold
	if hold {
		d.sent = append(d.sent, c)
	}
	d.mu.Unlock()
	if hold {
		return nil
	}
	return d.inject(c)
}

// inject delivers b to the peer as a datagram, as the network would.
func (d *dgramEnd) inject(b []byte) error {
	select {
	case d.dgOut <- b:
	case <-d.closed:
		return net.ErrClosed
	default: // a full queue drops, as UDP does
	}
	return nil
}

func (d *dgramEnd) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	select {
	case b := <-d.dgIn:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-d.closed:
		return nil, net.ErrClosed
	case <-d.peer.closed:
		return nil, io.EOF
	}
}

func (d *dgramEnd) MaxDatagramSize() int { return d.room }

// newDatagramPipe returns two connected ends that carry datagrams of up to
// room bytes.
func newDatagramPipe(room int) (*dgramEnd, *dgramEnd) {
	a, b := newPipe(room)
	return &dgramEnd{pipeEnd: a}, &dgramEnd{pipeEnd: b}
}
