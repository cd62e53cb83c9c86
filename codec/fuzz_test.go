package codec_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/warrenvpn/warren/codec"
)

// FuzzDecode feeds arbitrary bytes to Parse and to a Decoder. Neither may
// panic, both must agree frame for frame, and every frame they accept must
// re-encode to exactly the bytes it was read from.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0x10, 0, 0, 0, 0})
	f.Add([]byte{0x01, 0, 0, 0, 3, 'a', 'b', 'c', 0x3f, 0, 0, 0, 1, 'x'})
	f.Add([]byte{0x20, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9})
	f.Add([]byte{0x05, 0, 0, 0, 1, 'x'})
	f.Add([]byte{0x10, 0, 1, 0, 0})
	f.Add([]byte{0x10, 0, 0, 0xff, 0xff, 1, 2, 3})
	f.Add([]byte{0x21, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		d := codec.NewDecoder(bytes.NewReader(in))
		rest := in
		for {
			pt, pp, prest, perr := codec.Parse(rest)
			dt, dp, derr := d.Next()
			if perr != nil {
				if derr == nil {
					t.Fatalf("Parse failed (%v) where the Decoder read %v", perr, dt)
				}
				if len(rest) == 0 {
					if derr != io.EOF {
						t.Fatalf("Decoder at clean end: %v, want io.EOF", derr)
					}
					return
				}
				for _, sentinel := range []error{codec.ErrUnknownType, codec.ErrTooLong, codec.ErrTruncated} {
					if errors.Is(perr, sentinel) != errors.Is(derr, sentinel) {
						t.Fatalf("Parse error %v and Decoder error %v disagree", perr, derr)
					}
				}
				return
			}
			if derr != nil {
				t.Fatalf("Decoder failed (%v) where Parse read %v", derr, pt)
			}
			if pt != dt || !bytes.Equal(pp, dp) {
				t.Fatalf("Parse read %v/%d bytes, Decoder %v/%d bytes", pt, len(pp), dt, len(dp))
			}
			consumed := rest[:len(rest)-len(prest)]
			re, err := codec.AppendFrame(nil, pt, pp)
			if err != nil || !bytes.Equal(re, consumed) {
				t.Fatalf("re-encoding %v frame: %x, %v; read from %x", pt, re, err, consumed)
			}
			rest = prest
		}
	})
}
