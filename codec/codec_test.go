package codec_test

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"

	"github.com/warrenvpn/warren/codec"
)

var allTypes = []codec.Type{
	codec.HandshakeInit, codec.HandshakeResp, codec.IPPacket,
	codec.Keepalive, codec.KeepaliveAck, codec.Disconnect,
}

func TestTypeStringAndValid(t *testing.T) {
	want := map[codec.Type]string{
		codec.HandshakeInit: "HandshakeInit",
		codec.HandshakeResp: "HandshakeResp",
		codec.IPPacket:      "IPPacket",
		codec.Keepalive:     "Keepalive",
		codec.KeepaliveAck:  "KeepaliveAck",
		codec.Disconnect:    "Disconnect",
	}
	for i := 0; i < 256; i++ {
		typ := codec.Type(i)
		name, known := want[typ]
		if typ.Valid() != known {
			t.Errorf("Type(0x%02x).Valid() = %v, want %v", i, typ.Valid(), known)
		}
		if known && typ.String() != name {
			t.Errorf("Type(0x%02x).String() = %q, want %q", i, typ.String(), name)
		}
	}
	if got := codec.Type(0x05).String(); got != "Type(0x05)" {
		t.Errorf("unknown type String() = %q", got)
	}
}

func TestRoundTripEveryType(t *testing.T) {
	sizes := []int{0, 1, 1400, codec.MaxPayload}
	for _, typ := range allTypes {
		for _, n := range sizes {
			payload := bytes.Repeat([]byte{byte(typ), 0xA5}, n/2+1)[:n]
			frame, err := codec.AppendFrame([]byte("prefix"), typ, payload)
			if err != nil {
				t.Fatalf("AppendFrame(%v, %d bytes): %v", typ, n, err)
			}
			if !bytes.HasPrefix(frame, []byte("prefix")) || len(frame) != 6+codec.HeaderLen+n {
				t.Fatalf("AppendFrame(%v, %d bytes): got %d bytes", typ, n, len(frame))
			}
			frame = append(frame[6:], "next"...)

			gt, gp, rest, err := codec.Parse(frame)
			if err != nil || gt != typ || !bytes.Equal(gp, payload) || string(rest) != "next" {
				t.Fatalf("Parse(%v, %d bytes) = %v, %d bytes, rest %q, %v", typ, n, gt, len(gp), rest, err)
			}
			if cap(gp) != len(gp) {
				t.Errorf("Parse payload capacity %d runs past the frame (len %d)", cap(gp), len(gp))
			}

			d := codec.NewDecoder(bytes.NewReader(frame[:len(frame)-4]))
			dt, dp, err := d.Next()
			if err != nil || dt != typ || !bytes.Equal(dp, payload) {
				t.Fatalf("Decoder.Next(%v, %d bytes) = %v, %d bytes, %v", typ, n, dt, len(dp), err)
			}
			if _, _, err := d.Next(); err != io.EOF {
				t.Fatalf("Decoder.Next after last frame = %v, want io.EOF", err)
			}
		}
	}
}

func TestAppendHeaderThenPayload(t *testing.T) {
	payload := []byte("sealed in place")
	b, err := codec.AppendHeader(nil, codec.IPPacket, len(payload))
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, payload...)
	want, _ := codec.AppendFrame(nil, codec.IPPacket, payload)
	if !bytes.Equal(b, want) {
		t.Fatalf("AppendHeader+payload = %x, AppendFrame = %x", b, want)
	}
	if want[0] != 0x10 || !bytes.Equal(want[1:5], []byte{0, 0, 0, byte(len(payload))}) {
		t.Fatalf("header = %x, want type 0x10 and big-endian length", want[:5])
	}
}

func TestAppendRejects(t *testing.T) {
	tests := []struct {
		name string
		typ  codec.Type
		n    int
		want error
	}{
		{"unknown type", 0x05, 10, codec.ErrUnknownType},
		{"zero type", 0x00, 10, codec.ErrUnknownType},
		{"too long", codec.IPPacket, codec.MaxPayload + 1, codec.ErrTooLong},
		{"negative", codec.IPPacket, -1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := codec.AppendHeader(dst, tt.typ, tt.n)
			if err == nil {
				t.Fatal("AppendHeader succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("AppendHeader error %v, want %v", err, tt.want)
			}
			if string(got) != "keep" {
				t.Fatalf("AppendHeader changed dst to %q on error", got)
			}
			if tt.n >= 0 {
				if _, err := codec.AppendFrame(nil, tt.typ, make([]byte, tt.n)); !errors.Is(err, tt.want) {
					t.Fatalf("AppendFrame error %v, want %v", err, tt.want)
				}
			}
		})
	}
}

// malformed lists inputs that no reader may accept as a frame.
var malformed = []struct {
	name  string
	in    []byte
	want  error
	wantD error // what the Decoder reports at end of input; defaults to want
}{
	{"unknown type", []byte{0x05, 0, 0, 0, 1, 'x'}, codec.ErrUnknownType, nil},
	{"zero type", []byte{0x00, 0, 0, 0, 0}, codec.ErrUnknownType, nil},
	{"length 65536", []byte{0x10, 0, 1, 0, 0}, codec.ErrTooLong, nil},
	{"length 2^32-1", []byte{0x10, 0xff, 0xff, 0xff, 0xff}, codec.ErrTooLong, nil},
	{"empty header", []byte{}, codec.ErrTruncated, io.EOF},
	{"truncated header", []byte{0x10, 0, 0}, codec.ErrTruncated, io.ErrUnexpectedEOF},
	{"truncated payload", []byte{0x10, 0, 0, 0, 4, 1, 2, 3}, codec.ErrTruncated, io.ErrUnexpectedEOF},
	{"no payload", []byte{0x10, 0, 0, 0, 4}, codec.ErrTruncated, io.ErrUnexpectedEOF},
	{"claims max, has none", []byte{0x10, 0, 0, 0xff, 0xff}, codec.ErrTruncated, io.ErrUnexpectedEOF},
}

func TestParseMalformed(t *testing.T) {
	for _, tt := range malformed {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := codec.Parse(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse(%x) error = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
}

func TestDecoderMalformed(t *testing.T) {
	for _, tt := range malformed {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if tt.wantD != nil {
				want = tt.wantD
			}
			// One byte per Read shakes out short-read handling.
			d := codec.NewDecoder(iotest.OneByteReader(bytes.NewReader(tt.in)))
			_, _, err := d.Next()
			if !errors.Is(err, want) {
				t.Fatalf("Next(%x) error = %v, want %v", tt.in, err, want)
			}
			if want == io.ErrUnexpectedEOF && !errors.Is(err, codec.ErrTruncated) {
				t.Fatalf("Next(%x) error = %v, want it to wrap ErrTruncated too", tt.in, err)
			}
			if _, _, err2 := d.Next(); err2 != err {
				t.Fatalf("second Next error = %v, want the first (%v) again", err2, err)
			}
		})
	}
}

func TestZeroLengthPayload(t *testing.T) {
	for _, typ := range allTypes {
		frame, err := codec.AppendFrame(nil, typ, nil)
		if err != nil || len(frame) != codec.HeaderLen {
			t.Fatalf("AppendFrame(%v, nil) = %x, %v", typ, frame, err)
		}
		gt, p, rest, err := codec.Parse(frame)
		if err != nil || gt != typ || len(p) != 0 || len(rest) != 0 {
			t.Fatalf("Parse(%x) = %v, %x, %x, %v", frame, gt, p, rest, err)
		}
		gt, p, err = codec.NewDecoder(bytes.NewReader(frame)).Next()
		if err != nil || gt != typ || len(p) != 0 {
			t.Fatalf("Decoder.Next(%x) = %v, %x, %v", frame, gt, p, err)
		}
	}
}

func TestParseSeveralFramesInOneMessage(t *testing.T) {
	var msg []byte
	for i, typ := range allTypes {
		msg, _ = codec.AppendFrame(msg, typ, bytes.Repeat([]byte{byte(i)}, i*100))
	}
	rest := msg
	for i, typ := range allTypes {
		var gt codec.Type
		var p []byte
		var err error
		gt, p, rest, err = codec.Parse(rest)
		if err != nil || gt != typ || len(p) != i*100 {
			t.Fatalf("frame %d: Parse = %v, %d bytes, %v", i, gt, len(p), err)
		}
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes left over", len(rest))
	}
}

func TestDecoderStreamOfFrames(t *testing.T) {
	var stream []byte
	var want [][]byte
	for i := 0; i < 50; i++ {
		p := bytes.Repeat([]byte{byte(i)}, (i*1237)%(codec.MaxPayload+1))
		want = append(want, p)
		stream, _ = codec.AppendFrame(stream, codec.IPPacket, p)
	}
	d := codec.NewDecoder(iotest.HalfReader(bytes.NewReader(stream)))
	for i, w := range want {
		_, p, err := d.Next()
		if err != nil || !bytes.Equal(p, w) {
			t.Fatalf("frame %d: %d bytes, %v; want %d bytes", i, len(p), err, len(w))
		}
	}
	if _, _, err := d.Next(); err != io.EOF {
		t.Fatalf("end: %v, want io.EOF", err)
	}
}

func TestDecoderWrapsReadErrors(t *testing.T) {
	boom := errors.New("boom")
	frame, _ := codec.AppendFrame(nil, codec.IPPacket, make([]byte, 100))
	for _, cut := range []int{0, 3, codec.HeaderLen + 10} {
		r := io.MultiReader(bytes.NewReader(frame[:cut]), iotest.ErrReader(boom))
		if _, _, err := codec.NewDecoder(r).Next(); !errors.Is(err, boom) {
			t.Errorf("cut at %d: error %v, want it to wrap %v", cut, err, boom)
		}
	}
}

// A header that claims MaxPayload bytes and is followed by EOF must not make
// the Decoder allocate the claimed 64 KiB.
func TestDecoderDoesNotAllocateClaimedLength(t *testing.T) {
	hdr := []byte{byte(codec.IPPacket), 0, 0, 0xff, 0xff}
	const runs = 100
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < runs; i++ {
		_, _, err := codec.NewDecoder(bytes.NewReader(hdr)).Next()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("Next = %v, want io.ErrUnexpectedEOF", err)
		}
	}
	runtime.ReadMemStats(&after)
	perRun := (after.TotalAlloc - before.TotalAlloc) / runs
	t.Logf("%d bytes allocated per truncated 64 KiB frame", perRun)
	if perRun >= 16<<10 {
		t.Fatalf("allocated %d bytes per run for a frame with no payload; want far less than %d", perRun, codec.MaxPayload)
	}

	// Growth follows the bytes that arrive: 10 KiB of a claimed 64 KiB.
	partial := append(append([]byte{}, hdr...), make([]byte, 10<<10)...)
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < runs; i++ {
		codec.NewDecoder(bytes.NewReader(partial)).Next()
	}
	runtime.ReadMemStats(&after)
	perRun = (after.TotalAlloc - before.TotalAlloc) / runs
	t.Logf("%d bytes allocated per 10 KiB prefix of a 64 KiB frame", perRun)
	if perRun >= 48<<10 {
		t.Fatalf("allocated %d bytes per run for 10 KiB received", perRun)
	}
}

func TestSteadyStateAllocs(t *testing.T) {
	payload := make([]byte, 1400)
	buf := make([]byte, 0, 2048)
	frame, _ := codec.AppendFrame(nil, codec.IPPacket, payload)
	d := codec.NewDecoder(&loopReader{data: frame})
	d.Next() // first call sizes the buffer
	allocs := testing.AllocsPerRun(1000, func() {
		buf, _ = codec.AppendFrame(buf[:0], codec.IPPacket, payload)
		codec.Parse(buf)
		d.Next()
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per frame, want 0", allocs)
	}
}

// loopReader returns data over and over, forever.
type loopReader struct {
	data []byte
	off  int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.data[r.off:])
	r.off = (r.off + n) % len(r.data)
	return n, nil
}

func BenchmarkAppendFrame(b *testing.B) {
	payload := make([]byte, 1400)
	buf := make([]byte, 0, codec.HeaderLen+len(payload))
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		buf, err = codec.AppendFrame(buf[:0], codec.IPPacket, payload)
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	var msg []byte
	for range 8 { // a batched WebSocket message
		msg, _ = codec.AppendFrame(msg, codec.IPPacket, make([]byte, 1400))
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		rest := msg
		for len(rest) > 0 {
			var err error
			_, _, rest, err = codec.Parse(rest)
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkDecoder(b *testing.B) {
	frame, _ := codec.AppendFrame(nil, codec.IPPacket, make([]byte, 1400))
	d := codec.NewDecoder(&loopReader{data: frame})
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := d.Next(); err != nil {
			b.Fatal(err)
		}
	}
}
