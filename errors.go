package warren

import (
	"errors"
	"fmt"
	"strings"
)

// Errors a caller can test with errors.Is.
var (
	// ErrUnknownClient: no registered client has that ID (or key).
	ErrUnknownClient = errors.New("warren: unknown client")
	// ErrClientExists: a client with that ID is already registered.
	ErrClientExists = errors.New("warren: client already exists")
	// ErrClientDisabled: the client is registered but disabled. A Client stops.
	ErrClientDisabled = errors.New("warren: client disabled")
	// ErrPoolExhausted: the subnet has no free address left.
	ErrPoolExhausted = errors.New("warren: address pool exhausted")
	// ErrNotConnected: the client or session is not connected.
	ErrNotConnected = errors.New("warren: not connected")
	// ErrNotSupported: the operation needs a part this build or mode does not run.
	ErrNotSupported = errors.New("warren: not supported")
)

// ConfigError is returned by validation: Field names the field (a JSON path such
// as "clients[3].security.ipBlockList[0]"), Value the offending value, Reason why.
// File names the file it was read from, when it came from one. Value is empty
// when there is none to show, and for keys, which are never echoed.
type ConfigError struct {
	File   string
	Field  string
	Value  string
	Reason string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString("warren: ")
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString("invalid ")
		b.WriteString(e.Field)
		if e.Value != "" {
			fmt.Fprintf(&b, " %q", e.Value)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

func configErr(field, value, reason string) *ConfigError {
	return &ConfigError{Field: field, Value: value, Reason: reason}
}

// Why a session ended or a hub refused a client, from the code of the hub's
// Disconnect (codec.DisconnectCode) or the session's own observation. A
// Client's Connect error, its ClientDisconnected events (Err) and a Server's
// ClientDisconnected events wrap one of these or ErrClientDisabled; test
// with errors.Is. The text that comes with them is for people only.
var (
	// ErrServerShutdown: the hub is shutting down. A Client reconnects.
	ErrServerShutdown = errors.New("warren: hub shutting down")
	// ErrKicked: the hub's operator ended the session (Server.DisconnectClient).
	// A Client reconnects.
	ErrKicked = errors.New("warren: disconnected by the hub")
	// ErrKeyRotated: the client's key was rotated; the old one is refused.
	// A Client stops.
	ErrKeyRotated = errors.New("warren: client key rotated")
	// ErrClientExpired: the client's expiresAt has passed. A Client stops.
	ErrClientExpired = errors.New("warren: client expired")
	// ErrClientRemoved: the client was removed from the registry. A Client stops.
	ErrClientRemoved = errors.New("warren: client removed")
	// ErrSessionReplaced: a newer session with the same key took this one's
	// place. A Client stops rather than fight the other holder of its key.
	ErrSessionReplaced = errors.New("warren: session replaced by a newer one")
	// ErrDeadPeer: nothing was heard from the peer for too long. A Client reconnects.
	ErrDeadPeer = errors.New("warren: peer silent")
	// ErrProtocol: the peer sent something malformed or unexpected. A Client reconnects.
	ErrProtocol = errors.New("warren: protocol error")
	// ErrClientRefused: the hub knows the client but refuses this connection
	// (its remote address is not allowed). A Client stops.
	ErrClientRefused = errors.New("warren: client refused")
	// ErrConnectionLimit: the client has as many sessions as maxConnections
	// allows. A Client keeps trying, with backoff.
	ErrConnectionLimit = errors.New("warren: connection limit reached")
	// ErrPeerClosed: the peer ended the session on purpose (a client's
	// Disconnect or Close, seen by the hub).
	ErrPeerClosed = errors.New("warren: peer closed the session")
)
