package codec

import (
	"fmt"
	"unicode/utf8"
)

// DisconnectCode says why a session ended. It is the first byte of a
// [Disconnect] frame's (opened) payload:
//
//	[code:1][reason: UTF-8 text, possibly empty]
//
// The code is what a peer acts on (whether a client reconnects); the reason
// is for people only and may change between versions. A peer treats a code
// it does not know as [DisconnectUnspecified]: newer peers may add codes.
type DisconnectCode byte

// Disconnect codes. The numbers are part of the wire format: never renumber.
const (
	// DisconnectUnspecified: no particular reason (or a code this version does not know).
	DisconnectUnspecified DisconnectCode = 0
	// DisconnectShuttingDown: the hub is closing or restarting.
	DisconnectShuttingDown DisconnectCode = 1
	// DisconnectKicked: an operator ended the session (Server.DisconnectClient);
	// the client may connect again.
	DisconnectKicked DisconnectCode = 2
	// DisconnectDisabled: the client is disabled in the hub's registry.
	DisconnectDisabled DisconnectCode = 3
	// DisconnectKeyRotated: the client's key was replaced; the old key is refused.
	DisconnectKeyRotated DisconnectCode = 4
	// DisconnectExpired: the client's registration has expired.
	DisconnectExpired DisconnectCode = 5
	// DisconnectRemoved: the client was removed from the hub's registry.
	DisconnectRemoved DisconnectCode = 6
	// DisconnectReplaced: a newer session of the same client took this one's place.
	DisconnectReplaced DisconnectCode = 7
	// DisconnectDeadPeer: nothing was heard from the peer for too long.
	DisconnectDeadPeer DisconnectCode = 8
	// DisconnectProtocolError: the peer sent something malformed or unexpected.
	DisconnectProtocolError DisconnectCode = 9
	// DisconnectRefused: the hub knows the client but refuses this connection
	// (for example its remote address is not allowed).
	DisconnectRefused DisconnectCode = 10
	// DisconnectConnectionLimit: the client has as many sessions as it may have.
	DisconnectConnectionLimit DisconnectCode = 11
	// DisconnectClosed: the peer ended the session on purpose (a client's
	// Disconnect or Close).
	DisconnectClosed DisconnectCode = 12
)

// MaxDisconnectReason is the longest reason [AppendDisconnect] writes, in bytes.
const MaxDisconnectReason = 255

// String returns the code's name, or DisconnectCode(N) for a code this
// package does not know.
func (c DisconnectCode) String() string {
	switch c {
	case DisconnectUnspecified:
		return "unspecified"
	case DisconnectShuttingDown:
		return "shutting down"
	case DisconnectKicked:
		return "kicked"
	case DisconnectDisabled:
		return "disabled"
	case DisconnectKeyRotated:
		return "key rotated"
	case DisconnectExpired:
		return "expired"
	case DisconnectRemoved:
		return "removed"
	case DisconnectReplaced:
		return "replaced"
	case DisconnectDeadPeer:
		return "dead peer"
	case DisconnectProtocolError:
		return "protocol error"
	case DisconnectRefused:
		return "refused"
	case DisconnectConnectionLimit:
		return "connection limit"
	case DisconnectClosed:
		return "closed"
	}
	return fmt.Sprintf("DisconnectCode(%d)", byte(c))
}

// Known reports whether c is one of the codes above.
func (c DisconnectCode) Known() bool { return c <= DisconnectClosed }

// AppendDisconnect appends a Disconnect payload to dst: code, then reason cut
// to at most [MaxDisconnectReason] bytes on a character boundary.
func AppendDisconnect(dst []byte, code DisconnectCode, reason string) []byte {
	if len(reason) > MaxDisconnectReason {
		n := MaxDisconnectReason
		for n > 0 && !utf8.RuneStart(reason[n]) {
			n--
		}
		reason = reason[:n]
	}
	dst = append(dst, byte(code))
	return append(dst, reason...)
}

// ParseDisconnect splits a Disconnect payload into its code and reason. An
// unknown code is returned as it is (callers treat it as unspecified); an
// empty payload is an error wrapping [ErrTruncated]. The reason aliases p
// and is not checked: it is text from the network, to be sanitised before
// it is shown.
func ParseDisconnect(p []byte) (DisconnectCode, []byte, error) {
	if len(p) == 0 {
		return DisconnectUnspecified, nil, fmt.Errorf("%w: empty Disconnect payload", ErrTruncated)
	}
	return DisconnectCode(p[0]), p[1:], nil
}
