package quic

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/warrenvpn/warren/codec"
)

// datagramsBehindStream sends n datagrams of size bytes from client, each
// starting with its index, then a frame on the stream, and reads that frame
// on server. quic-go handles the packets of a connection in order on one
// goroutine, and v0.65 packs queued datagrams before stream data, so once
// the frame is read every datagram that was not lost has at least been
// sent.
func datagramsBehindStream(t testing.TB, client, server *Conn, n, size int) {
	t.Helper()
	sendBehindStream(t, client.SendDatagram, client, server, n, size)
}

// sendBehindStream is datagramsBehindStream with send in place of
// client.SendDatagram.
func sendBehindStream(t testing.TB, send func([]byte) error, client, server *Conn, n, size int) {
	t.Helper()
	b := make([]byte, size)
	for i := range n {
		b[0] = byte(i)
		if err := send(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.WriteMessage(frame(t, codec.Keepalive, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := server.ReadMessage(); err != nil {
		t.Fatal(err)
	}
}

// TestReceiveDatagramsTakesWhatIsWaiting: one ReceiveDatagrams call takes
// every datagram waiting in quic-go's queue, in order, up to the capacity it
// is given, and with nothing waiting it waits (for ctx) as ReceiveDatagram
// does rather than returning an empty batch.
func TestReceiveDatagramsTakesWhatIsWaiting(t *testing.T) {
	l := listen(t, ListenConfig{})
	client, server := connect(t, l, frame(t, codec.HandshakeInit, nil))
	if _, err := server.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	const n = 50
	datagramsBehindStream(t, client, server, n, 200)
	// quic-go before v0.65 sends one datagram per packet and may send the
	// frame in the first, so give the rest time to arrive too.
	time.Sleep(200 * time.Millisecond)
	ctx := ctxTimeout(t, 10*time.Second)

	bufs, err := server.ReceiveDatagrams(ctx, make([][]byte, 0, 20))
	if err != nil {
		t.Fatal(err)
	}
	if len(bufs) != 20 {
		t.Fatalf("first call took %d datagrams, want 20 (its capacity)", len(bufs))
	}
	bufs, err = server.ReceiveDatagrams(ctx, bufs)
	if err != nil {
		t.Fatal(err)
	}
	if len(bufs) != 21 {
		t.Fatalf("a full batch took %d more, want 1 (at least one, as ReceiveDatagram)", len(bufs)-20)
	}
	bufs, err = server.ReceiveDatagrams(ctx, append(make([][]byte, 0, 64), bufs...))
	if err != nil {
		t.Fatal(err)
	}
	if len(bufs) != n {
		t.Fatalf("after the third call %d datagrams, want all %d: the %d waiting taken at once", len(bufs), n, n-21)
	}
	for i, b := range bufs {
		if b[0] != byte(i) || len(b) != 200 {
			t.Fatalf("datagram %d: index %d, %d bytes; want %d, 200", i, b[0], len(b), i)
		}
	}

	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	got, err := server.ReceiveDatagrams(short, bufs[:0])
	if !errors.Is(err, context.DeadlineExceeded) || len(got) != 0 {
		t.Fatalf("with nothing waiting: %d datagrams, %v; want none and context.DeadlineExceeded", len(got), err)
	}
}

// TestReadMessageHeadroomBatchesFramesWithRoomInFront: ReadMessageHeadroom
// returns every whole frame the read buffer holds in one message, with the
// room asked for in front of it that the caller may write, and the frames
// arrive intact and in order whatever is written there.
func TestReadMessageHeadroomBatchesFramesWithRoomInFront(t *testing.T) {
	l := listen(t, ListenConfig{})
	client, server := connect(t, l, frame(t, codec.HandshakeInit, nil))
	const room = 11
	const n = 200
	var batch []byte
	for i := range n {
		batch = append(batch, frame(t, codec.IPPacket, bytes.Repeat([]byte{byte(i)}, 100+i))...)
	}
	if err := client.WriteMessage(batch); err != nil {
		t.Fatal(err)
	}
	got, messages := 0, 0
	first := true
	for got < n+1 {
		buf, err := server.ReadMessageHeadroom(room)
		if err != nil {
			t.Fatal(err)
		}
		messages++
		if len(buf) <= room {
			t.Fatalf("message of %d bytes with %d of headroom: empty", len(buf), room)
		}
		// The room is the caller's: writing it must not touch a frame.
		for i := range buf[:room] {
			buf[i] = 0xff
		}
		msg := buf[room:]
		for len(msg) > 0 {
			typ, payload, rest, err := codec.Parse(msg)
			if err != nil {
				t.Fatalf("message %d: %v", messages, err)
			}
			if first {
				if typ != codec.HandshakeInit {
					t.Fatalf("first frame %v, want HandshakeInit", typ)
				}
				first = false
			} else {
				i := got - 1
				if typ != codec.IPPacket || len(payload) != 100+i || payload[0] != byte(i) || payload[len(payload)-1] != byte(i) {
					t.Fatalf("frame %d: %v of %d bytes starting %d; want IPPacket of %d bytes of %d", i, typ, len(payload), payload[0], 100+i, i)
				}
			}
			got++
			msg = rest
		}
	}
	t.Logf("%d frames in %d messages", got, messages)
	// 40 KB written at once arrive in a few reads of the stream; one
	// frame per message would take 201.
	if messages > n/4 {
		t.Errorf("%d frames came in %d messages, want at most %d: whole frames batched", got, messages, n/4)
	}
}

// TestConnAddsNoAllocationsToQUICGo: in steady state the Conn's
// datagram send and receive paths and its stream receive path allocate
// nothing of their own. quic-go
// allocates for every datagram (a copy on send and on receipt) and while it
// handles packets, on its own goroutines, which testing.AllocsPerRun counts
// too, so each round is measured beside the same traffic taken straight
// from quic-go.
func TestConnAddsNoAllocationsToQUICGo(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	l := listen(t, ListenConfig{})
	client, server := connect(t, l, frame(t, codec.HandshakeInit, nil))
	if _, err := server.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 30*time.Second)
	const n = 32
	bufs := make([][]byte, 0, 64)
	viaConn := func() {
		datagramsBehindStream(t, client, server, n, 1000)
		for got := 0; got < n; {
			var err error
			bufs, err = server.ReceiveDatagrams(ctx, bufs[:0])
			if err != nil {
				t.Fatal(err)
			}
			got += len(bufs)
		}
	}
	direct := func() {
		sendBehindStream(t, client.qc.SendDatagram, client, server, n, 1000)
		for range n {
			if _, err := server.qc.ReceiveDatagram(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	frames := frame(t, codec.IPPacket, make([]byte, 1200))
	frames = bytes.Repeat(frames, n)
	streamViaConn := func() {
		if err := client.WriteMessage(frames); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(frames); {
			b, err := server.ReadMessageHeadroom(11)
			if err != nil {
				t.Fatal(err)
			}
			got += len(b) - 11
		}
	}
	rbuf := make([]byte, len(frames))
	streamDirect := func() {
		if err := client.WriteMessage(frames); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(frames); {
			m, err := server.stream.Read(rbuf[got:])
			if err != nil {
				t.Fatal(err)
			}
			got += m
		}
	}
	for range 5 {
		viaConn()
		direct()
		streamViaConn()
		streamDirect()
	}
	// Loss would stall a round; each waits for every datagram, so this
	// test needs what loopback gives: no loss at 32 datagrams in flight.
	a, b := testing.AllocsPerRun(100, viaConn), testing.AllocsPerRun(100, direct)
	t.Logf("datagrams: %.1f allocations per round of %d through the Conn, %.1f from quic-go directly", a, n, b)
	if a > b+1 {
		t.Errorf("datagrams: %.1f allocations per round of %d through the Conn, %.1f from quic-go directly: the Conn allocates", a, n, b)
	}
	a, b = testing.AllocsPerRun(100, streamViaConn), testing.AllocsPerRun(100, streamDirect)
	t.Logf("stream: %.1f allocations per round of %d frames through the Conn, %.1f from quic-go directly", a, n, b)
	if a > b+1 {
		t.Errorf("stream: %.1f allocations per round of %d frames through the Conn, %.1f from quic-go directly: the Conn allocates", a, n, b)
	}
}
