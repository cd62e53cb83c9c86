// Package packet reads, rewrites and builds raw IPv4 and IPv6 packets for the
// data plane: addresses for routing and ACLs, destination rewriting with checksum
// fix-ups for forceTarget, and UDP and ICMP echo packets for tests and for the
// engines that answer pings.
//
// Readers and rewriters work in place on the caller's buffer and allocate
// nothing; they never panic on malformed input, they report it with ok == false.
// Builders return a new slice. It uses only the standard library: the data plane
// needs a handful of header fields, not a protocol stack.
package packet

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers this package knows.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// ICMP echo message types.
const (
	ICMPv4EchoReply   = 0
	ICMPv4EchoRequest = 8
	ICMPv6EchoRequest = 128
	ICMPv6EchoReply   = 129
)

// Header lengths in bytes.
const (
	IPv4HeaderLen = 20 // without options
	IPv6HeaderLen = 40
	UDPHeaderLen  = 8
	ICMPEchoLen   = 8 // type, code, checksum, identifier, sequence number
)

// IPv6 extension headers that transport walks past.
const (
	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6Fragment = 44
	ipv6DestOpts = 60
	// maxExtHeaders bounds the walk; real packets carry one or two.
	maxExtHeaders = 8
)

const defaultTTL = 64

// Version returns the IP version of b, 4 or 6, or 0 if b is too short to hold
// that version's fixed header.
func Version(b []byte) int {
	if len(b) == 0 {
		return 0
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) >= IPv4HeaderLen {
			return 4
		}
	case 6:
		if len(b) >= IPv6HeaderLen {
			return 6
		}
	}
	return 0
}

// header validates b's IP header and returns its version, the header length
// (20-60 for IPv4, 40 for IPv6) and the packet's end: its total length, which
// may be less than len(b) when a link layer padded it.
func header(b []byte) (version, hdrLen, end int, ok bool) {
	switch Version(b) {
	case 4:
		hl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if hl < IPv4HeaderLen || hl > total || total > len(b) {
			return 0, 0, 0, false
		}
		return 4, hl, total, true
	case 6:
		total := IPv6HeaderLen + int(binary.BigEndian.Uint16(b[4:6]))
		if total > len(b) {
			return 0, 0, 0, false
		}
		return 6, IPv6HeaderLen, total, true
	}
	return 0, 0, 0, false
}

// Addrs returns the source and destination addresses of the IPv4 or IPv6 packet
// in b. ok is false unless b holds a whole header whose version, header length
// and total length are consistent with len(b).
func Addrs(b []byte) (src, dst netip.Addr, ok bool) {
	v, _, _, ok := header(b)
	switch {
	case !ok:
		return netip.Addr{}, netip.Addr{}, false
	case v == 4:
		return netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20])), true
	default:
		return netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40])), true
	}
}

// Protocol returns the IPv4 protocol or the IPv6 next header field of b (the
// first one, before any extension header), or 0 if b is not a valid packet. Note
// that 0 is also IPv6's hop-by-hop options header.
func Protocol(b []byte) uint8 {
	v, _, _, ok := header(b)
	switch {
	case !ok:
		return 0
	case v == 4:
		return b[9]
	default:
		return b[6]
	}
}

// transport finds b's transport header: its protocol and offset, and the end of
// the packet. whole is false for a fragment, whose transport payload is not all
// in b; off is then valid only for a first fragment (first == true).
func transport(b []byte) (proto uint8, off, end int, whole, first, ok bool) {
	v, hl, end, ok := header(b)
	if !ok {
		return 0, 0, 0, false, false, false
	}
	if v == 4 {
		frag := binary.BigEndian.Uint16(b[6:8])
		first = frag&0x1fff == 0
		whole = first && frag&0x2000 == 0
		return b[9], hl, end, whole, first, true
	}
	proto, off = b[6], IPv6HeaderLen
	whole, first = true, true
	for range maxExtHeaders {
		switch proto {
		case ipv6HopByHop, ipv6Routing, ipv6DestOpts:
			if off+8 > end {
				return 0, 0, 0, false, false, false
			}
			proto, off = b[off], off+(int(b[off+1])+1)*8
		case ipv6Fragment:
			if off+8 > end {
				return 0, 0, 0, false, false, false
			}
			frag := binary.BigEndian.Uint16(b[off+2 : off+4])
			if frag&0xfff8 != 0 {
				first = false
			}
			if frag&0xfff9 != 0 { // offset or more-fragments: not an atomic fragment
				whole = false
			}
			proto, off = b[off], off+8
		default:
			if off > end {
				return 0, 0, 0, false, false, false
			}
			return proto, off, end, whole, first, true
		}
	}
	return 0, 0, 0, false, false, false
}

// Checksum returns the 16-bit one's complement sum of b, added to initial (an
// unfolded partial sum, such as PseudoHeaderSum returns), folded to 16 bits. It
// is not complemented: a checksum field holds ^Checksum(...) computed with the
// field zero, and a packet whose field is right sums to 0xffff.
func Checksum(b []byte, initial uint32) uint16 {
	return fold(sum(b, uint64(initial)))
}

// sum adds b, as big-endian 16-bit words (a trailing odd byte padded with zero),
// to acc. Summing 32-bit words and folding later gives the same result, because
// 2^16 ≡ 1 modulo 2^16-1.
func sum(b []byte, acc uint64) uint64 {
	for len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

func fold(acc uint64) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}

// PseudoHeaderSum returns the unfolded sum of the IPv4 or IPv6 pseudo-header that
// TCP, UDP and ICMPv6 checksums cover, for use as Checksum's initial value.
// length is the transport header plus payload length. src and dst must be of the
// same family; IPv4-mapped addresses count as IPv4. When they are not (an IPv6
// packet from an IPv4-mapped source to a plain IPv6 address, as any peer can
// send), both count as IPv6: the 16-byte sum of a mapped address equals the
// 4-byte sum in ones' complement, so the result is the IPv6 packet's.
func PseudoHeaderSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	src, dst = src.Unmap(), dst.Unmap()
	var acc uint64
	if src.Is4() && dst.Is4() {
		s, d := src.As4(), dst.As4()
		acc = sum(s[:], acc)
		acc = sum(d[:], acc)
	} else {
		s, d := src.As16(), dst.As16()
		acc = sum(s[:], acc)
		acc = sum(d[:], acc)
	}
	acc += uint64(proto) + uint64(uint32(length))
	return uint32(fold(acc))
}

// updateChecksum adjusts a checksum field for 16-bit words changing from old to
// new (RFC 1624, eqn. 3), so a rewrite needs neither the whole payload nor a
// re-sum. old and new have the same even length.
func updateChecksum(field uint16, old, new []byte) uint16 {
	acc := uint64(^field)
	for i := 0; i+1 < len(old); i += 2 {
		acc += uint64(^binary.BigEndian.Uint16(old[i:]))
		acc += uint64(binary.BigEndian.Uint16(new[i:]))
	}
	return ^fold(acc)
}

// SetDst rewrites the destination address of the packet in b to dst and fixes
// the checksums the change breaks: the IPv4 header checksum and the TCP, UDP or
// ICMPv6 checksum that covers the pseudo-header (updated incrementally, so it
// stays right for a first fragment too). dst must be of the packet's family
// (an IPv4-mapped address counts as IPv4). It reports false, leaving b
// unchanged, if b is not a valid packet, the families differ, or the transport
// header whose checksum must change is truncated.
func SetDst(b []byte, dst netip.Addr) bool {
	proto, off, end, _, first, ok := transport(b)
	if !ok || !dst.IsValid() {
		return false
	}
	dst = dst.Unmap()
	v := Version(b)
	if (v == 4) != dst.Is4() {
		return false
	}
	csum := -1 // offset of the transport checksum field to fix, if any
	if first {
		switch proto {
		case ProtoTCP:
			csum = off + 16
		case ProtoUDP:
			csum = off + 6
		case ProtoICMPv6:
			if v == 6 {
				csum = off + 2
			}
		}
	}
	if csum >= 0 && csum+2 > end {
		return false
	}

	var field []byte
	var buf [16]byte
	if v == 4 {
		field = b[16:20]
		a := dst.As4()
		copy(buf[:], a[:])
	} else {
		field = b[24:40]
		buf = dst.As16()
	}
	next := buf[:len(field)]
	if csum >= 0 {
		c := binary.BigEndian.Uint16(b[csum:])
		// A zero UDP checksum over IPv4 means "none"; keep it that way.
		if !(proto == ProtoUDP && v == 4 && c == 0) {
			c = updateChecksum(c, field, next)
			if proto == ProtoUDP && c == 0 {
				c = 0xffff
			}
			binary.BigEndian.PutUint16(b[csum:], c)
		}
	}
	if v == 4 {
		binary.BigEndian.PutUint16(b[10:12], updateChecksum(binary.BigEndian.Uint16(b[10:12]), field, next))
	}
	copy(field, next)
	return true
}

// ParseUDP returns the addresses and payload of the UDP datagram in b. payload
// aliases b. ok is false unless b is a valid, unfragmented IPv4 or IPv6 packet
// carrying UDP whose length field fits the packet. Checksums are not verified.
func ParseUDP(b []byte) (src, dst netip.AddrPort, payload []byte, ok bool) {
	proto, off, end, whole, _, ok := transport(b)
	if !ok || !whole || proto != ProtoUDP || off+UDPHeaderLen > end {
		return netip.AddrPort{}, netip.AddrPort{}, nil, false
	}
	u := b[off:end]
	ulen := int(binary.BigEndian.Uint16(u[4:6]))
	if ulen < UDPHeaderLen || ulen > len(u) {
		return netip.AddrPort{}, netip.AddrPort{}, nil, false
	}
	s, d, _ := Addrs(b)
	src = netip.AddrPortFrom(s, binary.BigEndian.Uint16(u[0:2]))
	dst = netip.AddrPortFrom(d, binary.BigEndian.Uint16(u[2:4]))
	return src, dst, u[UDPHeaderLen:ulen], true
}

// ParseICMPEcho returns the fields of the ICMP (IPv4) or ICMPv6 echo request or
// reply in b: typ is ICMPv4EchoRequest, ICMPv4EchoReply, ICMPv6EchoRequest or
// ICMPv6EchoReply. payload aliases b. ok is false for anything else, including
// fragments. Checksums are not verified.
func ParseICMPEcho(b []byte) (typ uint8, id, seq uint16, payload []byte, ok bool) {
	m, ok := echo(b)
	if !ok {
		return 0, 0, 0, nil, false
	}
	return m[0], binary.BigEndian.Uint16(m[4:6]), binary.BigEndian.Uint16(m[6:8]), m[ICMPEchoLen:], true
}

// echo returns the ICMP message of an unfragmented echo request or reply.
func echo(b []byte) ([]byte, bool) {
	proto, off, end, whole, _, ok := transport(b)
	if !ok || !whole || off+ICMPEchoLen > end {
		return nil, false
	}
	m := b[off:end]
	if m[1] != 0 { // code
		return nil, false
	}
	switch {
	case Version(b) == 4 && proto == ProtoICMP && (m[0] == ICMPv4EchoRequest || m[0] == ICMPv4EchoReply):
	case Version(b) == 6 && proto == ProtoICMPv6 && (m[0] == ICMPv6EchoRequest || m[0] == ICMPv6EchoReply):
	default:
		return nil, false
	}
	return m, true
}

// EchoReply returns a new packet answering the ICMP or ICMPv6 echo request in
// req: addresses swapped, the reply type, the same identifier, sequence number
// and data, and right checksums. It reports false if req is not an unfragmented
// echo request with a correct ICMP checksum, or if no reply can be built.
func EchoReply(req []byte) ([]byte, bool) {
	m, ok := echo(req)
	if !ok {
		return nil, false
	}
	src, dst, _ := Addrs(req)
	switch {
	case src.Is4() && m[0] == ICMPv4EchoRequest:
		if Checksum(m, 0) != 0xffff {
			return nil, false
		}
	case src.Is6() && m[0] == ICMPv6EchoRequest:
		if Checksum(m, PseudoHeaderSum(src, dst, ProtoICMPv6, len(m))) != 0xffff {
			return nil, false
		}
	default:
		return nil, false
	}
	id, seq := binary.BigEndian.Uint16(m[4:6]), binary.BigEndian.Uint16(m[6:8])
	typ := uint8(ICMPv4EchoReply)
	if src.Is6() {
		typ = ICMPv6EchoReply
	}
	// nil when the reply cannot be built, such as for an IPv6 request from
	// an IPv4-mapped source to a plain IPv6 address (mixed families).
	rep := buildICMPEcho(dst, src, typ, id, seq, m[ICMPEchoLen:])
	return rep, rep != nil
}

// BuildUDP returns a new IPv4 or IPv6 packet carrying a UDP datagram with
// payload, with right checksums. It returns nil if the addresses are invalid or
// of different families (IPv4-mapped addresses count as IPv4), or if the packet
// would exceed 65535 bytes.
func BuildUDP(src, dst netip.AddrPort, payload []byte) []byte {
	b, off := ipPacket(src.Addr(), dst.Addr(), ProtoUDP, UDPHeaderLen+len(payload))
	if b == nil {
		return nil
	}
	u := b[off:]
	binary.BigEndian.PutUint16(u[0:2], src.Port())
	binary.BigEndian.PutUint16(u[2:4], dst.Port())
	binary.BigEndian.PutUint16(u[4:6], uint16(len(u)))
	copy(u[UDPHeaderLen:], payload)
	s, d, _ := Addrs(b)
	c := ^Checksum(u, PseudoHeaderSum(s, d, ProtoUDP, len(u)))
	if c == 0 {
		c = 0xffff // zero means "no checksum"
	}
	binary.BigEndian.PutUint16(u[6:8], c)
	return b
}

// BuildICMPEcho returns a new ICMP (IPv4) or ICMPv6 (IPv6) echo request from src
// to dst with the identifier, sequence number and data given, with right
// checksums. It returns nil under the same conditions as BuildUDP.
func BuildICMPEcho(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	typ := uint8(ICMPv4EchoRequest)
	if src.Unmap().Is6() {
		typ = ICMPv6EchoRequest
	}
	return buildICMPEcho(src, dst, typ, id, seq, payload)
}

func buildICMPEcho(src, dst netip.Addr, typ uint8, id, seq uint16, payload []byte) []byte {
	proto := uint8(ProtoICMP)
	if src.Unmap().Is6() {
		proto = ProtoICMPv6
	}
	b, off := ipPacket(src, dst, proto, ICMPEchoLen+len(payload))
	if b == nil {
		return nil
	}
	m := b[off:]
	m[0], m[1] = typ, 0
	binary.BigEndian.PutUint16(m[4:6], id)
	binary.BigEndian.PutUint16(m[6:8], seq)
	copy(m[ICMPEchoLen:], payload)
	var initial uint32
	if proto == ProtoICMPv6 {
		s, d, _ := Addrs(b)
		initial = PseudoHeaderSum(s, d, ProtoICMPv6, len(m))
	}
	binary.BigEndian.PutUint16(m[2:4], ^Checksum(m, initial))
	return b
}

// ipPacket returns a new packet with its IP header filled in and room for
// payloadLen bytes of proto after it, at off.
func ipPacket(src, dst netip.Addr, proto uint8, payloadLen int) (b []byte, off int) {
	src, dst = src.Unmap(), dst.Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return nil, 0
	}
	if src.Is4() {
		total := IPv4HeaderLen + payloadLen
		if total > 0xffff {
			return nil, 0
		}
		b = make([]byte, total)
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:4], uint16(total))
		b[8], b[9] = defaultTTL, proto
		s, d := src.As4(), dst.As4()
		copy(b[12:16], s[:])
		copy(b[16:20], d[:])
		binary.BigEndian.PutUint16(b[10:12], ^Checksum(b[:IPv4HeaderLen], 0))
		return b, IPv4HeaderLen
	}
	if payloadLen > 0xffff {
		return nil, 0
	}
	b = make([]byte, IPv6HeaderLen+payloadLen)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(payloadLen))
	b[6], b[7] = proto, defaultTTL
	s, d := src.As16(), dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	return b, IPv6HeaderLen
}
