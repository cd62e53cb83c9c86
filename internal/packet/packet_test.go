package packet

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// naiveSum is an independent RFC 1071 sum: 16-bit words, carry folded each step.
func naiveSum(b []byte, acc uint32) uint16 {
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		acc += w
		acc = acc&0xffff + acc>>16
	}
	for acc > 0xffff {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

// naivePseudo builds the pseudo-header bytes and sums them with naiveSum.
func naivePseudo(src, dst netip.Addr, proto uint8, length int) uint32 {
	var p []byte
	p = append(p, src.AsSlice()...)
	p = append(p, dst.AsSlice()...)
	if src.Is4() {
		p = append(p, 0, proto, byte(length>>8), byte(length))
	} else {
		p = append(p, byte(length>>24), byte(length>>16), byte(length>>8), byte(length), 0, 0, 0, proto)
	}
	return uint32(naiveSum(p, 0))
}

// verify checks every checksum in b independently of the package's code.
func verify(t *testing.T, b []byte) {
	t.Helper()
	src, dst, ok := Addrs(b)
	if !ok {
		t.Fatalf("Addrs(%x) not ok", b)
	}
	var proto uint8
	var l4 []byte
	if src.Is4() {
		hl := int(b[0]&0xf) * 4
		if s := naiveSum(b[:hl], 0); s != 0xffff {
			t.Errorf("IPv4 header sums to %#04x, want 0xffff", s)
		}
		proto, l4 = b[9], b[hl:binary.BigEndian.Uint16(b[2:4])]
	} else {
		proto, l4 = b[6], b[40:40+int(binary.BigEndian.Uint16(b[4:6]))]
	}
	var initial uint32
	switch proto {
	case ProtoTCP, ProtoUDP, ProtoICMPv6:
		initial = naivePseudo(src, dst, proto, len(l4))
	case ProtoICMP:
	default:
		return
	}
	if proto == ProtoUDP && src.Is4() && binary.BigEndian.Uint16(l4[6:8]) == 0 {
		return // no checksum
	}
	if s := naiveSum(l4, initial); s != 0xffff {
		t.Errorf("protocol %d checksum: sum %#04x, want 0xffff", proto, s)
	}
}

var (
	v4a = netip.MustParseAddr("10.8.0.2")
	v4b = netip.MustParseAddr("93.184.216.34")
	v4c = netip.MustParseAddr("192.0.2.77")
	v6a = netip.MustParseAddr("fd00:8::2")
	v6b = netip.MustParseAddr("2001:db8::1234:5678")
	v6c = netip.MustParseAddr("2001:db8:ffff::1")
)

func TestChecksumMatchesIndependentSum(t *testing.T) {
	// The IPv4 header from RFC 1071's usual worked example (Wikipedia's):
	// checksum b861.
	hdr, _ := hex.DecodeString("450000730000400040110000c0a80001c0a800c7")
	if got := ^Checksum(hdr, 0); got != 0xb861 {
		t.Errorf("header checksum = %#04x, want 0xb861", got)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 200 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		initial := r.Uint32() & 0x3ffff
		if got, want := Checksum(b, initial), naiveSum(b, initial); got != want {
			t.Fatalf("len %d: Checksum = %#04x, naive = %#04x", n, got, want)
		}
	}
	for _, c := range []struct {
		src, dst netip.Addr
		proto    uint8
		n        int
	}{{v4a, v4b, ProtoUDP, 100}, {v6a, v6b, ProtoTCP, 70000}, {v6b, v6c, ProtoICMPv6, 8}} {
		if got, want := fold(uint64(PseudoHeaderSum(c.src, c.dst, c.proto, c.n))), uint16(naivePseudo(c.src, c.dst, c.proto, c.n)); got != want {
			t.Errorf("PseudoHeaderSum(%v, %v) = %#04x, want %#04x", c.src, c.dst, got, want)
		}
	}
}

func TestVersionAndAddrs(t *testing.T) {
	udp4 := BuildUDP(netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v4b, 2), []byte("x"))
	udp6 := BuildUDP(netip.AddrPortFrom(v6a, 1), netip.AddrPortFrom(v6b, 2), []byte("x"))
	mod := func(b []byte, f func(b []byte) []byte) []byte { return f(bytes.Clone(b)) }

	// IPv4 with 4 bytes of options.
	opts := make([]byte, len(udp4)+4)
	copy(opts, udp4[:20])
	copy(opts[24:], udp4[20:])
	opts[0] = 0x46
	binary.BigEndian.PutUint16(opts[2:4], uint16(len(opts)))

	tests := []struct {
		name     string
		b        []byte
		version  int
		ok       bool
		src, dst netip.Addr
		proto    uint8
	}{
		{"v4", udp4, 4, true, v4a, v4b, ProtoUDP},
		{"v4 options", opts, 4, true, v4a, v4b, ProtoUDP},
		{"v4 padded", append(bytes.Clone(udp4), 0, 0, 0), 4, true, v4a, v4b, ProtoUDP},
		{"v6", udp6, 6, true, v6a, v6b, ProtoUDP},
		{"v6 padded", append(bytes.Clone(udp6), 0), 6, true, v6a, v6b, ProtoUDP},
		{"empty", nil, 0, false, netip.Addr{}, netip.Addr{}, 0},
		{"v4 short", udp4[:19], 0, false, netip.Addr{}, netip.Addr{}, 0},
		{"v6 short", udp6[:39], 0, false, netip.Addr{}, netip.Addr{}, 0},
		{"version 5", mod(udp4, func(b []byte) []byte { b[0] = 0x55; return b }), 0, false, netip.Addr{}, netip.Addr{}, 0},
		{"ihl 4", mod(udp4, func(b []byte) []byte { b[0] = 0x44; return b }), 4, false, netip.Addr{}, netip.Addr{}, 0},
		{"ihl past total", mod(udp4, func(b []byte) []byte { b[0] = 0x4f; return b }), 4, false, netip.Addr{}, netip.Addr{}, 0},
		{"v4 total > len", udp4[:len(udp4)-1], 4, false, netip.Addr{}, netip.Addr{}, 0},
		{"v4 total < ihl", mod(udp4, func(b []byte) []byte { b[3] = 10; return b }), 4, false, netip.Addr{}, netip.Addr{}, 0},
		{"v6 payload > len", udp6[:len(udp6)-1], 6, false, netip.Addr{}, netip.Addr{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if v := Version(tt.b); v != tt.version {
				t.Errorf("Version = %d, want %d", v, tt.version)
			}
			src, dst, ok := Addrs(tt.b)
			if ok != tt.ok || src != tt.src || dst != tt.dst {
				t.Errorf("Addrs = %v, %v, %v; want %v, %v, %v", src, dst, ok, tt.src, tt.dst, tt.ok)
			}
			if p := Protocol(tt.b); p != tt.proto {
				t.Errorf("Protocol = %d, want %d", p, tt.proto)
			}
		})
	}
}

func TestBuildAndParseUDP(t *testing.T) {
	for _, tt := range []struct {
		name     string
		src, dst netip.AddrPort
		payload  []byte
	}{
		{"v4", netip.AddrPortFrom(v4a, 40000), netip.AddrPortFrom(v4b, 53), []byte("query")},
		{"v4 odd", netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v4b, 65535), []byte("odd")},
		{"v4 empty", netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v4b, 2), nil},
		{"v4 mapped", netip.AddrPortFrom(netip.AddrFrom16(v4a.As16()), 9), netip.AddrPortFrom(v4b, 9), []byte{1}},
		{"v6", netip.AddrPortFrom(v6a, 5353), netip.AddrPortFrom(v6b, 443), bytes.Repeat([]byte{0xab}, 1200)},
		{"v6 empty", netip.AddrPortFrom(v6a, 1), netip.AddrPortFrom(v6b, 2), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := BuildUDP(tt.src, tt.dst, tt.payload)
			if b == nil {
				t.Fatal("BuildUDP = nil")
			}
			verify(t, b)
			src, dst, payload, ok := ParseUDP(b)
			wantSrc := netip.AddrPortFrom(tt.src.Addr().Unmap(), tt.src.Port())
			if !ok || src != wantSrc || dst != tt.dst || !bytes.Equal(payload, tt.payload) {
				t.Errorf("ParseUDP = %v, %v, %q, %v", src, dst, payload, ok)
			}
		})
	}
	if b := BuildUDP(netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v6b, 1), nil); b != nil {
		t.Error("BuildUDP with mixed families returned a packet")
	}
	if b := BuildUDP(netip.AddrPort{}, netip.AddrPortFrom(v6b, 1), nil); b != nil {
		t.Error("BuildUDP with an invalid address returned a packet")
	}
	if b := BuildUDP(netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v4b, 1), make([]byte, 65535-27)); b != nil {
		t.Error("BuildUDP of an oversized IPv4 packet returned a packet")
	}
}

func TestParseUDPRejects(t *testing.T) {
	udp := BuildUDP(netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v4b, 2), []byte("hello"))
	icmp := BuildICMPEcho(v4a, v4b, 1, 1, nil)
	tests := []struct {
		name string
		b    []byte
	}{
		{"icmp", icmp},
		{"udp length short", func() []byte { b := bytes.Clone(udp); b[25] = 7; return b }()},
		{"udp length long", func() []byte { b := bytes.Clone(udp); b[25] = 14; return b }()},
		{"fragment", func() []byte { b := bytes.Clone(udp); b[6] |= 0x20; return b }()},
		{"truncated header", func() []byte {
			b := bytes.Clone(udp[:24])
			binary.BigEndian.PutUint16(b[2:4], 24)
			return b
		}()},
		{"garbage", []byte{0x45, 1, 2}},
	}
	for _, tt := range tests {
		if _, _, _, ok := ParseUDP(tt.b); ok {
			t.Errorf("%s: ParseUDP ok", tt.name)
		}
	}
}

func TestICMPEchoAndReply(t *testing.T) {
	for _, tt := range []struct {
		name          string
		src, dst      netip.Addr
		reqTyp, reply uint8
	}{
		{"v4", v4a, v4b, ICMPv4EchoRequest, ICMPv4EchoReply},
		{"v6", v6a, v6b, ICMPv6EchoRequest, ICMPv6EchoReply},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, payload := range [][]byte{nil, []byte("ping"), []byte("odd"), bytes.Repeat([]byte{0xff}, 1000)} {
				req := BuildICMPEcho(tt.src, tt.dst, 0x1234, 7, payload)
				verify(t, req)
				typ, id, seq, p, ok := ParseICMPEcho(req)
				if !ok || typ != tt.reqTyp || id != 0x1234 || seq != 7 || !bytes.Equal(p, payload) {
					t.Fatalf("ParseICMPEcho(request) = %d, %d, %d, %q, %v", typ, id, seq, p, ok)
				}
				orig := bytes.Clone(req)
				rep, ok := EchoReply(req)
				if !ok {
					t.Fatal("EchoReply not ok")
				}
				if !bytes.Equal(req, orig) {
					t.Error("EchoReply modified the request")
				}
				verify(t, rep)
				src, dst, _ := Addrs(rep)
				if src != tt.dst || dst != tt.src {
					t.Errorf("reply %v -> %v, want %v -> %v", src, dst, tt.dst, tt.src)
				}
				typ, id, seq, p, ok = ParseICMPEcho(rep)
				if !ok || typ != tt.reply || id != 0x1234 || seq != 7 || !bytes.Equal(p, payload) {
					t.Errorf("ParseICMPEcho(reply) = %d, %d, %d, %q, %v", typ, id, seq, p, ok)
				}
				if _, ok := EchoReply(rep); ok {
					t.Error("EchoReply answered a reply")
				}
			}
		})
	}
}

func TestEchoReplyRejects(t *testing.T) {
	req4 := BuildICMPEcho(v4a, v4b, 1, 2, []byte("data"))
	req6 := BuildICMPEcho(v6a, v6b, 1, 2, []byte("data"))
	tests := []struct {
		name string
		b    []byte
	}{
		{"udp", BuildUDP(netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v4b, 2), []byte("data"))},
		{"bad checksum v4", func() []byte { b := bytes.Clone(req4); b[len(b)-1] ^= 1; return b }()},
		{"bad checksum v6", func() []byte { b := bytes.Clone(req6); b[len(b)-1] ^= 1; return b }()},
		{"v6 with wrong pseudo-header", func() []byte { b := bytes.Clone(req6); b[39] ^= 1; return b }()},
		{"nonzero code", func() []byte { b := bytes.Clone(req4); b[21] = 1; return b }()},
		{"fragment", func() []byte { b := bytes.Clone(req4); b[6] |= 0x20; return b }()},
		{"icmpv4 type in v6", func() []byte { b := bytes.Clone(req6); b[40] = ICMPv4EchoRequest; return b }()},
		{"short", req4[:27]},
	}
	for _, tt := range tests {
		if rep, ok := EchoReply(tt.b); ok || rep != nil {
			t.Errorf("%s: EchoReply = %x, %v", tt.name, rep, ok)
		}
	}
}

// tcpPacket builds a TCP segment (20-byte header) with checksums computed by
// the independent sum.
func tcpPacket(src, dst netip.Addr, payload []byte) []byte {
	b, off := ipPacket(src, dst, ProtoTCP, 20+len(payload))
	l4 := b[off:]
	binary.BigEndian.PutUint16(l4[0:2], 12345)
	binary.BigEndian.PutUint16(l4[2:4], 80)
	binary.BigEndian.PutUint32(l4[4:8], 0xdeadbeef)
	l4[12] = 5 << 4
	l4[13] = 0x18
	binary.BigEndian.PutUint16(l4[14:16], 65535)
	copy(l4[20:], payload)
	binary.BigEndian.PutUint16(l4[16:18], ^naiveSum(l4, naivePseudo(src, dst, ProtoTCP, len(l4))))
	return b
}

func TestSetDst(t *testing.T) {
	tests := []struct {
		name    string
		b       []byte
		dst     netip.Addr
		wantDst netip.Addr
	}{
		{"udp v4", BuildUDP(netip.AddrPortFrom(v4a, 1000), netip.AddrPortFrom(v4b, 53), []byte("dns?")), v4c, v4c},
		{"udp v4 mapped target", BuildUDP(netip.AddrPortFrom(v4a, 1000), netip.AddrPortFrom(v4b, 53), []byte("x")), netip.AddrFrom16(v4c.As16()), v4c},
		{"tcp v4", tcpPacket(v4a, v4b, []byte("GET / HTTP/1.1\r\n")), v4c, v4c},
		{"icmp v4", BuildICMPEcho(v4a, v4b, 1, 1, []byte("ping")), v4c, v4c},
		{"udp v6", BuildUDP(netip.AddrPortFrom(v6a, 1000), netip.AddrPortFrom(v6b, 53), []byte("dns?")), v6c, v6c},
		{"tcp v6", tcpPacket(v6a, v6b, []byte("odd")), v6c, v6c},
		{"icmpv6", BuildICMPEcho(v6a, v6b, 1, 1, []byte("ping6")), v6c, v6c},
		{"same address", tcpPacket(v4a, v4b, nil), v4b, v4b},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := bytes.Clone(tt.b)
			if !SetDst(b, tt.dst) {
				t.Fatal("SetDst = false")
			}
			src, dst, _ := Addrs(b)
			osrc, _, _ := Addrs(tt.b)
			if dst != tt.wantDst || src != osrc {
				t.Errorf("after SetDst: %v -> %v, want %v -> %v", src, dst, osrc, tt.wantDst)
			}
			verify(t, b)
		})
	}

	t.Run("udp v4 without checksum", func(t *testing.T) {
		b := BuildUDP(netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v4b, 2), []byte("x"))
		b[26], b[27] = 0, 0
		if !SetDst(b, v4c) {
			t.Fatal("SetDst = false")
		}
		if b[26] != 0 || b[27] != 0 {
			t.Error("SetDst gave a checksum to a UDP datagram that had none")
		}
		verify(t, b)
	})

	t.Run("first fragment", func(t *testing.T) {
		// The UDP checksum covers the whole datagram; in a first fragment it
		// must change exactly as it does in the whole datagram.
		whole := BuildUDP(netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v4b, 2), bytes.Repeat([]byte("frag"), 100))
		frag := bytes.Clone(whole[:20+8+200])
		binary.BigEndian.PutUint16(frag[2:4], uint16(len(frag)))
		frag[6] |= 0x20 // more fragments
		frag[10], frag[11] = 0, 0
		binary.BigEndian.PutUint16(frag[10:12], ^naiveSum(frag[:20], 0))
		if !SetDst(whole, v4c) || !SetDst(frag, v4c) {
			t.Fatal("SetDst = false")
		}
		if !bytes.Equal(whole[26:28], frag[26:28]) {
			t.Errorf("fragment UDP checksum %x, whole datagram %x", frag[26:28], whole[26:28])
		}
		if s := naiveSum(frag[:20], 0); s != 0xffff {
			t.Errorf("fragment header sums to %#04x", s)
		}
	})

	t.Run("later fragment", func(t *testing.T) {
		b := BuildUDP(netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v4b, 2), []byte("payload bytes"))
		binary.BigEndian.PutUint16(b[6:8], 3) // offset 24 bytes: no UDP header here
		b[10], b[11] = 0, 0
		binary.BigEndian.PutUint16(b[10:12], ^naiveSum(b[:20], 0))
		payload := bytes.Clone(b[20:])
		if !SetDst(b, v4c) {
			t.Fatal("SetDst = false")
		}
		if !bytes.Equal(b[20:], payload) {
			t.Error("SetDst changed the payload of a non-first fragment")
		}
		if s := naiveSum(b[:20], 0); s != 0xffff {
			t.Errorf("header sums to %#04x", s)
		}
	})

	for _, tt := range []struct {
		name string
		b    []byte
		dst  netip.Addr
	}{
		{"v6 target for v4", BuildUDP(netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v4b, 2), nil), v6c},
		{"v4 target for v6", BuildUDP(netip.AddrPortFrom(v6a, 1), netip.AddrPortFrom(v6b, 2), nil), v4c},
		{"invalid target", BuildUDP(netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v4b, 2), nil), netip.Addr{}},
		{"truncated tcp", func() []byte {
			b := tcpPacket(v4a, v4b, nil)[:30]
			binary.BigEndian.PutUint16(b[2:4], 30)
			return b
		}(), v4c},
		{"garbage", []byte{0x60, 0, 0}, v6c},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := bytes.Clone(tt.b)
			if SetDst(b, tt.dst) {
				t.Error("SetDst = true")
			}
			if !bytes.Equal(b, tt.b) {
				t.Error("a failed SetDst changed the packet")
			}
		})
	}
}

func TestIPv6ExtensionHeaders(t *testing.T) {
	// UDP behind a hop-by-hop options header (8 bytes of padding options).
	base := BuildUDP(netip.AddrPortFrom(v6a, 7), netip.AddrPortFrom(v6b, 9), []byte("ext"))
	b := make([]byte, 0, len(base)+8)
	b = append(b, base[:40]...)
	b = append(b, ProtoUDP, 0, 1, 4, 0, 0, 0, 0) // next UDP, len 0 (8 bytes), PadN
	b = append(b, base[40:]...)
	b[6] = ipv6HopByHop
	binary.BigEndian.PutUint16(b[4:6], uint16(len(b)-40))

	if Protocol(b) != ipv6HopByHop {
		t.Errorf("Protocol = %d, want the first next header", Protocol(b))
	}
	src, dst, payload, ok := ParseUDP(b)
	if !ok || src.Port() != 7 || dst.Port() != 9 || string(payload) != "ext" {
		t.Fatalf("ParseUDP behind hop-by-hop = %v %v %q %v", src, dst, payload, ok)
	}
	if !SetDst(b, v6c) {
		t.Fatal("SetDst = false")
	}
	l4 := b[48:]
	if s := naiveSum(l4, naivePseudo(v6a, v6c, ProtoUDP, len(l4))); s != 0xffff {
		t.Errorf("UDP checksum behind hop-by-hop sums to %#04x", s)
	}

	// A non-atomic fragment header makes the datagram incomplete.
	f := make([]byte, 0, len(base)+8)
	f = append(f, base[:40]...)
	f = append(f, ProtoUDP, 0, 0, 1, 0, 0, 0, 42) // offset 0, more fragments
	f = append(f, base[40:]...)
	f[6] = ipv6Fragment
	binary.BigEndian.PutUint16(f[4:6], uint16(len(f)-40))
	if _, _, _, ok := ParseUDP(f); ok {
		t.Error("ParseUDP accepted a fragment")
	}
	f[43] = 0 // atomic fragment: whole
	if _, _, _, ok := ParseUDP(f); !ok {
		t.Error("ParseUDP rejected an atomic fragment")
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	udp := BuildUDP(netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v4b, 2), []byte("x"))
	tcp6 := tcpPacket(v6a, v6b, []byte("y"))
	allocs := testing.AllocsPerRun(1000, func() {
		Addrs(udp)
		Addrs(tcp6)
		Protocol(udp)
		Version(tcp6)
		SetDst(udp, v4c)
		SetDst(tcp6, v6c)
		ParseUDP(udp)
		ParseICMPEcho(udp)
		Checksum(udp, 0)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run, want 0", allocs)
	}
}

func FuzzAddrs(f *testing.F) {
	f.Add(BuildUDP(netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v4b, 2), []byte("x")))
	f.Add(BuildUDP(netip.AddrPortFrom(v6a, 1), netip.AddrPortFrom(v6b, 2), []byte("x")))
	f.Add(BuildICMPEcho(v4a, v4b, 1, 2, []byte("ping")))
	f.Add(BuildICMPEcho(v6a, v6b, 1, 2, []byte("ping")))
	f.Add(tcpPacket(v4a, v4b, []byte("tcp")))
	f.Add([]byte{0x46, 0, 0, 20})
	f.Add([]byte{0x60})
	f.Fuzz(func(t *testing.T, b []byte) {
		src, dst, ok := Addrs(b)
		if ok != (Version(b) != 0 && src.IsValid()) {
			t.Fatalf("Addrs ok = %v with Version %d, src %v", ok, Version(b), src)
		}
		if ok && src.Is4() != (Version(b) == 4) {
			t.Fatalf("Addrs family %v for version %d", src, Version(b))
		}
		_ = Protocol(b)
		_ = Checksum(b, 0)
		if _, _, p, ok := ParseUDP(b); ok && len(p) > len(b) {
			t.Fatal("UDP payload longer than the packet")
		}
		ParseICMPEcho(b)
		if rep, ok := EchoReply(b); ok {
			verify(t, rep)
			rs, rd, _ := Addrs(rep)
			if rs != dst || rd != src {
				t.Fatalf("reply %v -> %v for request %v -> %v", rs, rd, src, dst)
			}
		}
		c := bytes.Clone(b)
		target := v4c
		if Version(b) == 6 {
			target = v6c
		}
		if SetDst(c, target) {
			if _, d, _ := Addrs(c); d != target {
				t.Fatalf("SetDst ok but dst = %v", d)
			}
		} else if !bytes.Equal(c, b) {
			t.Fatal("a failed SetDst changed the packet")
		}
	})
}

func BenchmarkSetDst(b *testing.B) {
	pkt := tcpPacket(v4a, v4b, make([]byte, 1400))
	targets := [2]netip.Addr{v4b, v4c}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		SetDst(pkt, targets[i&1])
	}
}

func BenchmarkAddrs(b *testing.B) {
	pkt := tcpPacket(v6a, v6b, make([]byte, 1400))
	b.ReportAllocs()
	for b.Loop() {
		Addrs(pkt)
	}
}
