package warren

import (
	"context"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"time"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/handshake"
	"github.com/warrenvpn/warren/transport/quic"
)

// QUIC sessions carry IP packets in DATAGRAM frames as
// [0x10][counter:8][ciphertext], sealed with keys derived from the Noise
// handshake apart from the stream's (handshake.Session.DatagramCiphers), the
// counter as explicit nonce and a sliding replay window on receipt. A packet
// that does not fit the current datagram room (1243 bytes of payload before
// path MTU discovery, 1404 after, on loopback) goes on the stream as an
// ordinary sealed frame: never silently lost, and counted.

// quicMTU is the tunnel MTU a QUIC session announces: the IPv6 minimum,
// which fits a datagram once path MTU discovery has run (DESIGN §3).
const quicMTU = 1280

// datagramHeader is the type byte and the counter in front of the ciphertext.
const datagramHeader = 1 + 8

// datagramConn is what a link needs of a QUIC connection.
type datagramConn interface {
	SendDatagram(b []byte) error
	ReceiveDatagram(ctx context.Context) ([]byte, error)
	MaxDatagramSize() int
}

// datagramPath is a link's datagram side.
type datagramPath struct {
	conn       datagramConn
	send, recv *handshake.DatagramCipher
	counter    uint64                 // next send counter; the writer's only
	window     handshake.ReplayWindow // the datagram reader's only
	out        []byte                 // the writer's scratch
	ctx        context.Context
	cancel     context.CancelFunc

	sent, onStream, replayed, bad atomic.Uint64
}

// newDatagramPath derives the datagram keys of a QUIC session.
func newDatagramPath(conn datagramConn, hs *handshake.Session) (*datagramPath, error) {
	send, recv, err := hs.DatagramCiphers()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &datagramPath{conn: conn, send: send, recv: recv, ctx: ctx, cancel: cancel, out: make([]byte, 0, 2048)}, nil
}

// trySend seals pkt into a datagram and sends it. It reports false when the
// packet must go on the stream instead (too large for the datagram room).
func (d *datagramPath) trySend(pkt []byte) bool {
	ctr := d.counter
	d.counter++ // a counter is never used twice, sent or not
	b := append(d.out[:0], byte(codec.IPPacket))
	b = binary.BigEndian.AppendUint64(b, ctr)
	b = d.send.Seal(b, ctr, pkt)
	d.out = b
	if err := d.conn.SendDatagram(b); err != nil {
		if errors.Is(err, quic.ErrDatagramTooLarge) {
			d.onStream.Add(1)
		}
		return false
	}
	d.sent.Add(1)
	return true
}

// datagramQueue is how many received datagrams wait for the pipeline.
// quic-go holds only 128 before it drops; a burst of a TCP window is more.
const datagramQueue = 2048

// datagramLoop reads datagrams until the link ends and hands their packets
// to the link's handler in batches. One goroutine only drains quic-go's small
// receive queue into a larger one, so a burst is not dropped while the
// pipeline works on the previous batch.
func (l *link) datagramLoop() {
	d := l.dg
	queue := make(chan []byte, datagramQueue)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(queue)
		for {
			b, err := d.conn.ReceiveDatagram(d.ctx)
			if err != nil {
				return // the stream's reader sees the connection end and closes the link
			}
			select {
			case queue <- b:
			default:
				l.queueFull.Add(1)
			}
		}
	}()
	defer func() { <-done }()

	bufs := make([][]byte, 0, writeBatch)
	var plain []byte
	for b := range queue {
		batch := [writeBatch][]byte{b}
		n := 1
	more:
		for n < writeBatch {
			select {
			case b, ok := <-queue:
				if !ok {
					break more
				}
				batch[n] = b
				n++
			default:
				break more
			}
		}
		// Plaintext is shorter than its datagram: one buffer of the batch's
		// total size holds every packet without moving.
		total := 0
		for _, b := range batch[:n] {
			total += len(b)
		}
		if cap(plain) < total {
			plain = make([]byte, 0, total)
		}
		plain, bufs = plain[:0], bufs[:0]
		for _, b := range batch[:n] {
			if len(b) < datagramHeader+handshake.Overhead || b[0] != byte(codec.IPPacket) {
				d.bad.Add(1)
				continue
			}
			ctr := binary.BigEndian.Uint64(b[1:datagramHeader])
			start := len(plain)
			var err error
			plain, err = d.recv.Open(plain, ctr, b[datagramHeader:])
			if err != nil {
				plain = plain[:start]
				d.bad.Add(1)
				continue
			}
			// The window is updated only for datagrams that authenticate, so
			// a forged counter cannot move it.
			if !d.window.Accept(ctr) {
				plain = plain[:start]
				d.replayed.Add(1)
				continue
			}
			pt := plain[start:]
			l.packetsIn.Add(1)
			l.bytesIn.Add(uint64(len(pt)))
			bufs = append(bufs, pt)
		}
		if len(bufs) > 0 {
			l.lastRecv.Store(time.Now().UnixNano())
			l.deliver(bufs)
		}
	}
}

// MTUInfo describes a session's packet sizes.
type MTUInfo struct {
	// TunnelMTU is the MTU the session announced: 1280 on QUIC, the hub's
	// MTU otherwise.
	TunnelMTU int `json:"tunnelMtu"`
	// MaxDatagram is the QUIC datagram payload room now (0 without QUIC).
	MaxDatagram int `json:"maxDatagram"`
	// DatagramsSent counts packets sent as QUIC datagrams.
	DatagramsSent uint64 `json:"datagramsSent"`
	// OversizedOnStream counts packets too large for a datagram that went on
	// the stream instead.
	OversizedOnStream uint64 `json:"oversizedOnStream"`
	// Replayed counts datagrams dropped by the replay window.
	Replayed uint64 `json:"replayed"`
}
