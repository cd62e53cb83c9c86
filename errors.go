package warren

import (
	"errors"
	"fmt"
)

// Errors a caller can test with errors.Is.
var (
	// ErrUnknownClient: no registered client has that ID (or key).
	ErrUnknownClient = errors.New("warren: unknown client")
	// ErrClientExists: a client with that ID is already registered.
	ErrClientExists = errors.New("warren: client already exists")
	// ErrClientDisabled: the client is registered but disabled or expired.
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
type ConfigError struct {
	Field  string
	Value  string
	Reason string
}

func (e *ConfigError) Error() string {
	if e.Value != "" {
		return fmt.Sprintf("warren: invalid %s %q: %s", e.Field, e.Value, e.Reason)
	}
	return fmt.Sprintf("warren: invalid %s: %s", e.Field, e.Reason)
}

func configErr(field, value, reason string) *ConfigError {
	return &ConfigError{Field: field, Value: value, Reason: reason}
}
