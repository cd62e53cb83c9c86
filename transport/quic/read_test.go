package quic

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"unsafe"

	"github.com/warrenvpn/warren/codec"
)

// TestReadMessageHandsFramesOutOfTheReadBuffer checks that frames pass
// through ReadMessage without being decoded and encoded again: frames that
// arrived together come out of one read buffer, each right behind the one
// before it, instead of each being copied into the same reused slice. Each
// frame's capacity ends with it, so appending to it cannot overwrite the
// next one.
func TestReadMessageHandsFramesOutOfTheReadBuffer(t *testing.T) {
	l := listen(t, ListenConfig{})
	client, server := connect(t, l, frame(t, codec.HandshakeInit, nil))
	if _, err := server.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var batch []byte
	var want [][]byte
	for i := range n {
		f := frame(t, codec.IPPacket, bytes.Repeat([]byte{byte(i)}, 100))
		want = append(want, f)
		batch = append(batch, f...)
	}
	if err := client.WriteMessage(batch); err != nil {
		t.Fatal(err)
	}
	adjacent := 0
	var prevEnd uintptr
	for i := range n {
		got, err := server.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[i]) {
			t.Fatalf("frame %d: read % x, want % x", i, got[:8], want[i][:8])
		}
		if cap(got) != len(got) {
			t.Errorf("frame %d: cap %d, want %d (its length)", i, cap(got), len(got))
		}
		start := uintptr(unsafe.Pointer(unsafe.SliceData(got)))
		if start == prevEnd {
			adjacent++
		}
		prevEnd = start + uintptr(len(got))
	}
	// 50 frames of 105 bytes written at once arrive in a handful of QUIC
	// packets, so most follow the previous frame in the buffer; a copy
	// into one reused slice makes none adjacent.
	if adjacent < n/2 {
		t.Errorf("%d of %d frames followed the previous one in the read buffer, want at least %d", adjacent, n-1, n/2)
	}
}

// TestStreamEndingInsideAFrameIsTruncated: a peer that finishes its stream
// halfway through a frame gives ErrTruncated (and io.ErrUnexpectedEOF), after
// the whole frames before it, and the same error on the next call.
func TestStreamEndingInsideAFrameIsTruncated(t *testing.T) {
	l := listen(t, ListenConfig{})
	hello := frame(t, codec.HandshakeInit, []byte("hello"))
	half := frame(t, codec.IPPacket, make([]byte, 100))[:50]
	client, server := connect(t, l, append(append([]byte{}, hello...), half...))
	// Finish the stream after the half frame, keeping the connection.
	if err := client.stream.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := server.ReadMessage()
	if err != nil || !bytes.Equal(got, hello) {
		t.Fatalf("ReadMessage = % x, %v; want % x", got, err, hello)
	}
	for range 2 {
		_, err := server.ReadMessage()
		if !errors.Is(err, codec.ErrTruncated) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("ReadMessage = %v, want codec.ErrTruncated and io.ErrUnexpectedEOF", err)
		}
	}
}

// TestOversizedFrameHeaderIsRefusedAtOnce: a header claiming more than
// codec.MaxPayload is an error before any payload is read.
func TestOversizedFrameHeaderIsRefusedAtOnce(t *testing.T) {
	l := listen(t, ListenConfig{})
	_, server := connect(t, l, []byte{byte(codec.IPPacket), 0, 1, 0, 0})
	if _, err := server.ReadMessage(); !errors.Is(err, codec.ErrTooLong) {
		t.Errorf("ReadMessage = %v, want codec.ErrTooLong", err)
	}
}
