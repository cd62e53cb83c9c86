package session

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"testing"

	"golang.org/x/crypto/curve25519"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/handshake"
)

// fuzzDatagramCiphers runs a real handshake and returns the client's send
// cipher and the hub's receive cipher for datagrams.
func fuzzDatagramCiphers(tb testing.TB) (send, recv *handshake.DatagramCipher) {
	tb.Helper()
	key := func() (priv, pub [32]byte) {
		if _, err := rand.Read(priv[:]); err != nil {
			tb.Fatal(err)
		}
		p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
		if err != nil {
			tb.Fatal(err)
		}
		copy(pub[:], p)
		return priv, pub
	}
	cpriv, cpub := key()
	spriv, spub := key()
	ini, err := handshake.NewInitiator(cpriv, cpub, spub)
	if err != nil {
		tb.Fatal(err)
	}
	m1, err := ini.WriteInit(handshake.ClientHello{Timestamp: 1})
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := handshake.NewResponder(spriv, spub)
	if err != nil {
		tb.Fatal(err)
	}
	if _, _, err := resp.ReadInit(m1); err != nil {
		tb.Fatal(err)
	}
	m2, hubSess, err := resp.WriteResp(handshake.ServerHello{})
	if err != nil {
		tb.Fatal(err)
	}
	_, clientSess, err := ini.ReadResp(m2)
	if err != nil {
		tb.Fatal(err)
	}
	send, _, err = clientSess.DatagramCiphers()
	if err != nil {
		tb.Fatal(err)
	}
	_, recv, err = hubSess.DatagramCiphers()
	if err != nil {
		tb.Fatal(err)
	}
	return send, recv
}

// FuzzOpenDatagram feeds the QUIC datagram receive path (openDatagram) an
// arbitrary datagram, then, on a fresh session, a datagram the peer really sealed with an
// arbitrary counter and payload, that datagram again, and a copy with one
// bit flipped. The arbitrary datagram may be accepted only if the peer
// sealed it, the genuine one must be accepted once with its payload
// intact, cut only to the length its IP header gives (unless its counter is at or past handshake.MaxMessages, which the
// replay window refuses), its replay and the corrupted copy must be
// refused, and every datagram must be counted exactly once as delivered,
// bad or replayed.
func FuzzOpenDatagram(f *testing.F) {
	send, recv := fuzzDatagramCiphers(f)
	sealed := func(ctr uint64, pt []byte) []byte {
		d := binary.BigEndian.AppendUint64([]byte{byte(codec.IPPacket)}, ctr)
		return send.Seal(d, ctr, pt)
	}
	// The keys are new each run, so a seed sealed now is authentic only in
	// this run; in the checked-in corpus it is a well-formed forgery.
	f.Add(sealed(0, []byte("\x45 packet")), uint64(0), []byte("\x45\x00\x00\x14"), uint16(0))
	f.Add([]byte{}, uint64(1<<63), []byte{}, uint16(7))
	f.Add([]byte{byte(codec.IPPacket), 0, 0, 0, 0, 0, 0, 0, 1}, uint64(1), make([]byte, 1400), uint16(100))
	f.Add(append([]byte{byte(codec.IPPacket)}, make([]byte, 8+handshake.Overhead)...), ^uint64(0), []byte("x"), uint16(65535))
	f.Add(append([]byte{0x11}, make([]byte, 40)...), uint64(2000), []byte("y"), uint16(3))
	f.Fuzz(func(t *testing.T, raw []byte, ctr uint64, pt []byte, flip uint16) {
		s := &Session{dg: &datagramPath{recv: recv}}
		got := s.openDatagram(nil, bytes.Clone(raw))
		if len(got) > 0 {
			// Only a datagram the peer sealed may be accepted.
			rctr := binary.BigEndian.Uint64(raw[1:datagramHeader])
			if len(got) != 1 || !bytes.Equal(sealed(rctr, got[0]), raw) {
				t.Fatalf("accepted a datagram the peer never sealed: %x", raw)
			}
		}
		if n := s.packetsIn.Load() + s.dg.bad.Load() + s.dg.replayed.Load(); n != 1 || s.packetsIn.Load() != uint64(len(got)) {
			t.Fatalf("one datagram counted %d delivered, %d bad, %d replayed", s.packetsIn.Load(), s.dg.bad.Load(), s.dg.replayed.Load())
		}

		s = &Session{dg: &datagramPath{recv: recv}}
		d := s.dg
		total := func() uint64 { return s.packetsIn.Load() + d.bad.Load() + d.replayed.Load() }
		good := sealed(ctr, pt)
		got = s.openDatagram(nil, bytes.Clone(good))
		if ctr >= handshake.MaxMessages {
			if len(got) != 0 || d.replayed.Load() != 1 || total() != 1 {
				t.Fatalf("datagram with counter %d past MaxMessages accepted (%d) or not counted as replayed", ctr, len(got))
			}
			return
		}
		// The receiver cuts a packet to the length its IP header gives
		// (a padding sender's zeros), a rule TestTrimPaddingCutsToTheIPHeadersLength
		// checks on its own; here a payload whose header says it is
		// shorter is such a packet.
		want := trimPadding(pt)
		if len(got) != 1 || !bytes.Equal(got[0], want) {
			t.Fatalf("genuine datagram (counter %d, %d bytes) opened to %q, want %q", ctr, len(pt), got, want)
		}
		if s.bytesIn.Load() != uint64(len(want)) {
			t.Fatalf("bytesIn = %d, want %d", s.bytesIn.Load(), len(want))
		}
		if got := s.openDatagram(nil, bytes.Clone(good)); len(got) != 0 || d.replayed.Load() != 1 {
			t.Fatalf("replayed datagram accepted (%d) or not counted (%d)", len(got), d.replayed.Load())
		}
		bad := bytes.Clone(good)
		bit := int(flip) % (len(bad) * 8)
		bad[bit/8] ^= 1 << (bit % 8)
		if got := s.openDatagram(nil, bad); len(got) != 0 {
			t.Fatalf("datagram with bit %d flipped accepted", bit)
		}
		if total() != 3 || s.packetsIn.Load() != 1 {
			t.Fatalf("3 datagrams counted %d delivered, %d bad, %d replayed", s.packetsIn.Load(), d.bad.Load(), d.replayed.Load())
		}
	})
}
