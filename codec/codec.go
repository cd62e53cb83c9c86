// Package codec encodes and decodes Warren's wire frames (DESIGN §3):
//
//	[type:1][length:4, big-endian][payload]
//
// with a payload of at most [MaxPayload] bytes. The WebSocket transport
// carries one or more frames per binary message and splits them with [Parse];
// the QUIC transport reads them from a stream with a [Decoder].
//
// The package has no dependencies beyond the standard library: a five-byte
// header needs nothing more, and keeping the parser small keeps it easy to
// fuzz. Nothing here panics on input from the network: every malformed frame
// is an error that wraps [ErrUnknownType], [ErrTooLong] or [ErrTruncated].
package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Type is the first byte of a frame: what its payload holds.
type Type byte

// Frame types (DESIGN §3). Every type but the two handshake messages carries
// a payload sealed by the session's ciphers.
const (
	HandshakeInit Type = 0x01 // client to server: Noise IK message 1
	HandshakeResp Type = 0x02 // server to client: Noise IK message 2
	IPPacket      Type = 0x10 // both ways: a sealed IP packet
	Keepalive     Type = 0x20 // client to server: sealed sequence number and send time
	KeepaliveAck  Type = 0x21 // server to client: sealed echo of a Keepalive
	Disconnect    Type = 0x3F // both ways: sealed [code:1][reason UTF-8], see [DisconnectCode]
)

// String returns the type's name, or Type(0xNN) for a type this package does
// not know.
func (t Type) String() string {
	switch t {
	case HandshakeInit:
		return "HandshakeInit"
	case HandshakeResp:
		return "HandshakeResp"
	case IPPacket:
		return "IPPacket"
	case Keepalive:
		return "Keepalive"
	case KeepaliveAck:
		return "KeepaliveAck"
	case Disconnect:
		return "Disconnect"
	}
	return fmt.Sprintf("Type(0x%02x)", byte(t))
}

// Valid reports whether t is one of the frame types above.
func (t Type) Valid() bool {
	switch t {
	case HandshakeInit, HandshakeResp, IPPacket, Keepalive, KeepaliveAck, Disconnect:
		return true
	}
	return false
}

const (
	// HeaderLen is the length of a frame header: one type byte and a
	// four-byte big-endian payload length.
	HeaderLen = 1 + 4

	// MaxPayload is the largest payload a frame may carry, in bytes.
	MaxPayload = 65535
)

// Errors that callers branch on. Errors returned by this package wrap them
// and say which type or length was at fault.
var (
	// ErrUnknownType: the frame's type byte is not a known [Type].
	ErrUnknownType = errors.New("codec: unknown frame type")
	// ErrTooLong: the payload is longer than [MaxPayload].
	ErrTooLong = errors.New("codec: frame too long")
	// ErrTruncated: the input ended inside a frame's header or payload.
	ErrTruncated = errors.New("codec: truncated frame")
)

// AppendFrame appends one encoded frame holding payload to dst and returns
// the extended slice. It fails with [ErrUnknownType] if t is not valid and with
// [ErrTooLong] if payload is longer than [MaxPayload]; dst is then returned
// unchanged.
func AppendFrame(dst []byte, t Type, payload []byte) ([]byte, error) {
	dst, err := AppendHeader(dst, t, len(payload))
	if err != nil {
		return dst, err
	}
	return append(dst, payload...), nil
}

// AppendHeader appends the header of a frame of type t with an n-byte payload
// to dst. The caller appends the payload itself, which lets it seal a packet
// in place right after the header. Errors are as for [AppendFrame].
func AppendHeader(dst []byte, t Type, n int) ([]byte, error) {
	if !t.Valid() {
		return dst, fmt.Errorf("%w %v", ErrUnknownType, t)
	}
	if n < 0 {
		return dst, fmt.Errorf("codec: negative payload length %d for %v", n, t)
	}
	if n > MaxPayload {
		return dst, fmt.Errorf("%w: %v payload of %d bytes, max %d", ErrTooLong, t, n, MaxPayload)
	}
	dst = append(dst, byte(t))
	return binary.BigEndian.AppendUint32(dst, uint32(n)), nil
}

// Parse splits the first frame off b, which may hold several (one WebSocket
// message can batch frames). It returns the frame's type, its payload and the
// bytes after the frame. payload aliases b and its capacity ends with the
// frame, so appending to it never overwrites rest.
//
// Malformed input yields an error wrapping [ErrUnknownType], [ErrTooLong] or
// [ErrTruncated].
func Parse(b []byte) (t Type, payload, rest []byte, err error) {
	if len(b) < HeaderLen {
		return 0, nil, nil, fmt.Errorf("%w: %d of %d header bytes", ErrTruncated, len(b), HeaderLen)
	}
	t, n, err := parseHeader(b)
	if err != nil {
		return 0, nil, nil, err
	}
	if uint64(len(b)-HeaderLen) < uint64(n) {
		return 0, nil, nil, fmt.Errorf("%w: %v payload has %d of %d bytes", ErrTruncated, t, len(b)-HeaderLen, n)
	}
	end := HeaderLen + int(n)
	return t, b[HeaderLen:end:end], b[end:], nil
}

// parseHeader checks the HeaderLen bytes at the start of h and returns the
// type and payload length they announce.
func parseHeader(h []byte) (Type, uint32, error) {
	t := Type(h[0])
	if !t.Valid() {
		return 0, 0, fmt.Errorf("%w %v", ErrUnknownType, t)
	}
	n := binary.BigEndian.Uint32(h[1:HeaderLen])
	if n > MaxPayload {
		return 0, 0, fmt.Errorf("%w: %v claims %d bytes, max %d", ErrTooLong, t, n, MaxPayload)
	}
	return t, n, nil
}
