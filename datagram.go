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

// datagramLoop reads datagrams until the link ends and hands their packets
// to the link's handler.
func (l *link) datagramLoop() {
	d := l.dg
	var one [1][]byte
	var plain []byte
	for {
		b, err := d.conn.ReceiveDatagram(d.ctx)
		if err != nil {
			return // the stream's reader sees the connection end and closes the link
		}
		if len(b) < datagramHeader+handshake.Overhead || b[0] != byte(codec.IPPacket) {
			d.bad.Add(1)
			continue
		}
		ctr := binary.BigEndian.Uint64(b[1:datagramHeader])
		plain, err = d.recv.Open(plain[:0], ctr, b[datagramHeader:])
		if err != nil {
			d.bad.Add(1)
			continue
		}
		// The window is updated only for datagrams that authenticate, so a
		// forged counter cannot move it.
		if !d.window.Accept(ctr) {
			d.replayed.Add(1)
			continue
		}
		l.lastRecv.Store(time.Now().UnixNano())
		l.packetsIn.Add(1)
		l.bytesIn.Add(uint64(len(plain)))
		one[0] = plain
		l.deliver(one[:])
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
