package session

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
)

// padPipe is a datagram pipe end that asks for padding, as the QUIC
// transport does, and records the length of every datagram sent.
type padPipe struct {
	*dgramEnd
	mu   sync.Mutex
	lens []int
}

func (p *padPipe) PadDatagrams() bool { return true }

func (p *padPipe) SendDatagram(b []byte) error {
	p.mu.Lock()
	p.lens = append(p.lens, len(b))
	p.mu.Unlock()
	return p.dgramEnd.SendDatagram(b)
}

// ipPacket is an IPv4 (version 4) or IPv6 (6) packet of n bytes whose
// header gives its length, filled with tag, at Headroom in a buffer with
// Tailroom behind it.
func ipPacket(version, n int, tag byte) []byte {
	b := packetBuf(n, tag)
	p := b[Headroom:]
	p[0] = byte(version << 4)
	if version == 4 {
		p[0] |= 5
		binary.BigEndian.PutUint16(p[2:4], uint16(n))
	} else {
		binary.BigEndian.PutUint16(p[4:6], uint16(n-40))
	}
	return b
}

// TestNearlyFullPacketsArePaddedToFillTheDatagram: on a transport that asks
// for it, a packet within an eighth of the datagram room goes in a datagram
// of exactly the room, and the peer gets the packet back at its own length;
// a small packet, or one that fills the room already, is not padded.
func TestNearlyFullPacketsArePaddedToFillTheDatagram(t *testing.T) {
	const room = 1400
	full := room - datagramHeader - Tailroom // the largest packet a datagram holds
	w := newWorld(t)
	dc, dh := newDatagramPipe(room)
	cc := &padPipe{dgramEnd: dc}
	c, _, _, hr := w.connected(t, cc, dh)
	cases := []struct {
		pkt     []byte
		dgram   int // length of the datagram it goes in
		comment string
	}{
		{ipPacket(4, 1300, 1), room, "IPv4 within an eighth of the room: padded"},
		{ipPacket(6, full-full/8, 2), room, "IPv6 at the bound: padded"},
		{ipPacket(4, full-full/8-1, 3), full - full/8 - 1 + datagramHeader + Tailroom, "just below the bound: not padded"},
		{ipPacket(4, 64, 4), 64 + datagramHeader + Tailroom, "small: not padded"},
		{ipPacket(6, full, 5), room, "fills the room: as it is"},
	}
	for _, tc := range cases {
		want := bytes.Clone(tc.pkt[Headroom:])
		if _, err := c.Write([][]byte{tc.pkt}, Headroom); err != nil {
			t.Fatal(err)
		}
		got := hr.waitPackets(t, 1)
		hr.mu.Lock()
		hr.pkts = nil
		hr.mu.Unlock()
		if !bytes.Equal(got[0], want) {
			t.Errorf("%s: peer got %d bytes, want the %d-byte packet", tc.comment, len(got[0]), len(want))
		}
		cc.mu.Lock()
		sent := cc.lens[len(cc.lens)-1]
		cc.mu.Unlock()
		if sent != tc.dgram {
			t.Errorf("%s: datagram of %d bytes, want %d", tc.comment, sent, tc.dgram)
		}
	}
	if m := c.MTUInfo(); m.OnStream != 0 {
		t.Errorf("%d packets went on the stream, want none", m.OnStream)
	}
}

func TestTrimPaddingCutsToTheIPHeadersLength(t *testing.T) {
	v4 := ipPacket(4, 100, 0)[Headroom:]
	v6 := ipPacket(6, 100, 0)[Headroom:]
	bogus := bytes.Clone(v4)
	binary.BigEndian.PutUint16(bogus[2:4], 10) // shorter than a header
	for _, tc := range []struct {
		name string
		in   []byte
		want int
	}{
		{"IPv4 padded", append(bytes.Clone(v4), make([]byte, 50)...), 100},
		{"IPv4 exact", v4, 100},
		{"IPv4 claiming more than there is", v4[:80], 80},
		{"IPv4 length below its header", append(bogus, 0, 0), 102},
		{"IPv6 padded", append(bytes.Clone(v6), make([]byte, 50)...), 100},
		{"IPv6 exact", v6, 100},
		{"not IP", bytes.Repeat([]byte{0x20}, 150), 150},
		{"short", []byte{0x45, 0}, 2},
	} {
		if got := len(trimPadding(tc.in)); got != tc.want {
			t.Errorf("%s: %d bytes, want %d", tc.name, got, tc.want)
		}
	}
}
