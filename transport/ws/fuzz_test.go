package ws

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// FuzzProxyHeader sends arbitrary bytes as the start of a TCP connection to
// a real listener that requires a PROXY header (v1 and v2), then half-closes
// the connection. The listener must not panic and must close the
// connection; it must count a rejection for bytes go-proxyproto's own
// reader refuses, and never hand such a connection's source to Reject; for
// a header it accepts, Reject must see exactly the header's TCP source (or
// the socket's peer for a LOCAL header).
func FuzzProxyHeader(f *testing.F) {
	var seen atomic.Pointer[netip.Addr]
	l := listen(f, ListenConfig{
		ProxyProtocol:   true,
		ProxyProtocolV1: true,
		Reject: func(a netip.Addr) bool {
			seen.Store(&a)
			return false
		},
	})
	hdr := func(version byte, src, dst string) []byte {
		h := proxyproto.HeaderProxyFromAddrs(version,
			net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)),
			net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		b, err := h.Format()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(hdr(2, "203.0.113.7:4242", "127.0.0.1:443"))
	f.Add(hdr(2, "[2001:db8::7]:4242", "[::1]:443"))
	f.Add(hdr(1, "203.0.113.7:4242", "127.0.0.1:443"))
	f.Add(append(hdr(2, "[::ffff:203.0.113.7]:1", "[::1]:443"), 0x16, 3, 1))
	f.Add([]byte("PROXY TCP4 198.51.100.1 127.0.0.1 1 2\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("PROXY TCP6 ::1 ::1 65536 1\r\n"))
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"))                                                 // v2 LOCAL
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x12\x00\x0c\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02")) // v2 UDP4
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff"))                                                 // v2 claiming 65535 bytes
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x99\x11\x00\x0c"))
	f.Add([]byte("PROXY NONSENSE 1 2 3\r\n"))
	f.Add([]byte("\x16\x03\x01\x00\x05hello"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		seen.Store(nil)
		rejectedBefore := l.Rejected()

		c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(l.Addr().String())))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		// The server may decide, close and reset the connection before
		// all of in is written, so these may fail.
		_, _ = c.Write(in)
		_ = c.CloseWrite()
		// The server closes the connection once it has decided: what it
		// says before (a TLS alert) does not matter.
		if _, err := io.Copy(io.Discard, c); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("server kept the connection open after %q", in)
		}
		rejected := l.Rejected() - rejectedBefore
		got := seen.Load()

		h, perr := proxyproto.Read(bufio.NewReader(bytes.NewReader(in)))
		if perr != nil {
			if len(in) > 0 && rejected != 1 {
				t.Fatalf("invalid header (%v) counted %d rejections, want 1: %q", perr, rejected, in)
			}
			if got != nil {
				t.Fatalf("Reject saw %v from an invalid header (%v): %q", *got, perr, in)
			}
			return
		}
		var want netip.Addr
		if h.Command.IsLocal() {
			want = netip.MustParseAddr("127.0.0.1")
		} else if ap, ok := addrPort(h.SourceAddr); ok {
			want = ap.Addr()
		}
		switch {
		case !want.IsValid():
			if got != nil || rejected != 1 {
				t.Fatalf("header with source %v (not TCP over IP): Reject saw %v, %d rejections, want none and 1", h.SourceAddr, got, rejected)
			}
		case got == nil || *got != want:
			t.Fatalf("header %+v: Reject saw %v, want %v", h, got, want)
		case rejected != 0:
			t.Fatalf("header %+v accepted by Reject yet counted %d rejections", h, rejected)
		}
	})
}
