package warren

import (
	"errors"

	"github.com/warrenvpn/warren/codec"
	wsession "github.com/warrenvpn/warren/session"
)

// closeReason is why a session ended: the code the peer acts on (codec
// DisconnectCode, sent in the Disconnect frame) and text for people.
type closeReason struct {
	code codec.DisconnectCode
	text string
}

// reason is r as package session has it.
func (r closeReason) reason() wsession.Reason { return wsession.Reason{Code: r.code, Text: r.text} }

func fromReason(r wsession.Reason) closeReason { return closeReason{r.Code, r.Text} }

// Reasons the hub gives, with their codes.
var (
	reasonShutdown     = closeReason{codec.DisconnectShuttingDown, "server shutting down"}
	reasonDisabled     = closeReason{codec.DisconnectDisabled, "client disabled"}
	reasonKeyRotated   = closeReason{codec.DisconnectKeyRotated, "client key rotated"}
	reasonExpired      = closeReason{codec.DisconnectExpired, "client expired"}
	reasonRemoved      = closeReason{codec.DisconnectRemoved, "client removed"}
	reasonPeerRemoved  = closeReason{codec.DisconnectRemoved, "peer removed"}
	reasonReplaced     = closeReason{codec.DisconnectReplaced, "replaced by a newer session"}
	reasonLimitLowered = closeReason{codec.DisconnectReplaced, "connection limit lowered"}
	reasonDeadPeer     = closeReason{codec.DisconnectDeadPeer, "dead peer: nothing received for " + deadPeerTimeout.String()}
)

// parseDisconnect reads a peer's Disconnect payload. A code this version
// does not know, or a payload without one, is unspecified.
func parseDisconnect(p []byte) closeReason { return fromReason(wsession.ParseReason(p)) }

// err is r as an error that matches (errors.Is) the sentinel of its code.
func (r closeReason) err() error { return &disconnectError{r} }

// disconnectError is a session's end, or a hub's refusal, as an error.
type disconnectError struct{ r closeReason }

func (e *disconnectError) Error() string { return e.r.text }

// Unwrap returns the sentinel error of the code, nil for unspecified.
func (e *disconnectError) Unwrap() error {
	switch e.r.code {
	case codec.DisconnectShuttingDown:
		return ErrServerShutdown
	case codec.DisconnectKicked:
		return ErrKicked
	case codec.DisconnectDisabled:
		return ErrClientDisabled
	case codec.DisconnectKeyRotated:
		return ErrKeyRotated
	case codec.DisconnectExpired:
		return ErrClientExpired
	case codec.DisconnectRemoved:
		return ErrClientRemoved
	case codec.DisconnectReplaced:
		return ErrSessionReplaced
	case codec.DisconnectDeadPeer:
		return ErrDeadPeer
	case codec.DisconnectProtocolError:
		return ErrProtocol
	case codec.DisconnectRefused:
		return ErrClientRefused
	case codec.DisconnectConnectionLimit:
		return ErrConnectionLimit
	case codec.DisconnectClosed:
		return ErrPeerClosed
	}
	return nil
}

// disconnectCode is the code of the disconnect err holds, if it holds one.
func disconnectCode(err error) (codec.DisconnectCode, bool) {
	var d *disconnectError
	if errors.As(err, &d) {
		return d.r.code, true
	}
	return codec.DisconnectUnspecified, false
}
