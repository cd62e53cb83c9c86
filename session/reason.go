package session

import (
	"errors"

	"github.com/warrenvpn/warren/codec"
)

// Reason is why a session ended: the code a peer acts on (sent in the sealed
// Disconnect frame) and text for people.
type Reason struct {
	Code codec.DisconnectCode
	Text string
}

// ParseReason reads a peer's Disconnect payload. A code this version does
// not know, or a payload without one, is unspecified; the text is bounded and
// made printable.
func ParseReason(p []byte) Reason {
	code, text, err := codec.ParseDisconnect(p)
	if err != nil {
		return Reason{codec.DisconnectUnspecified, "no reason given"}
	}
	if !code.Known() {
		code = codec.DisconnectUnspecified
	}
	return Reason{code, sanitize(text)}
}

// sanitize bounds a peer-supplied reason and keeps it printable.
func sanitize(b []byte) string {
	const max = 200
	if len(b) > max {
		b = b[:max]
	}
	r := []rune(string(b))
	for i, c := range r {
		if c < 0x20 || c == 0x7f {
			r[i] = '?'
		}
	}
	return string(r)
}

// CloseError is how a session ended, or how a hub refused a client: the
// reason and whether the peer (rather than this side) ended it.
type CloseError struct {
	Reason Reason
	// Remote is true when the peer sent the Disconnect or the connection
	// was lost; false when this side closed the session.
	Remote bool
}

func (e *CloseError) Error() string { return "session: " + e.Reason.Text }

// Errors that callers branch on.
var (
	// ErrNoAnswer: the hub closed the connection without answering the
	// handshake (unknown client key, replayed message 1, or a wrong
	// server key on the client's side).
	ErrNoAnswer = errors.New("session: handshake not answered")
	// ErrMalformed: the first message of a connection is not one
	// HandshakeInit frame.
	ErrMalformed = errors.New("session: malformed handshake message")
	// ErrClosed: the session has ended.
	ErrClosed = errors.New("session: closed")
	// ErrDropped: the hub dropped a handshake before any cryptography
	// (AcceptConfig.Admit refused it).
	ErrDropped = errors.New("session: handshake dropped")
)

// Guard refuses a handshake message 1 that is not newer than the last one
// accepted from the same client key; *handshake.TimestampGuard is one.
type Guard interface {
	Check(key [32]byte, ts int64) error
}
