package wgconfig

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidKey is wrapped by every error about the text form of a key, from
// [ParseKey], [Key.UnmarshalText] and [Parse].
var ErrInvalidKey = errors.New("wgconfig: invalid key")

// Key is a Curve25519 key, private, public or preshared. Its text form is
// standard base64 with padding, 44 characters, the form `wg genkey` prints.
// The type has the same underlying type as warren.Key, so the two convert.
type Key [32]byte

// IsZero reports whether k is all zero bytes. WireGuard reads a zero private
// or public key as "not set", so [Config.Validate] rejects one.
func (k Key) IsZero() bool { return k == Key{} }

// String returns the base64 form of k. For a private key that is the secret:
// do not log it.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// MarshalText implements [encoding.TextMarshaler]. A zero key marshals as ""
// so that an unset key reads as unset in JSON, as warren.Key does.
func (k Key) MarshalText() ([]byte, error) {
	if k.IsZero() {
		return []byte{}, nil
	}
	return []byte(k.String()), nil
}

// UnmarshalText implements [encoding.TextUnmarshaler]. An empty text is the
// zero key; anything else must be what [ParseKey] accepts.
func (k *Key) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*k = Key{}
		return nil
	}
	p, err := ParseKey(string(text))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// ParseKey parses the base64 text form of a key. Like wg, it accepts only
// canonical standard base64 of exactly 32 bytes: 44 characters ending in '='.
// The error wraps [ErrInvalidKey].
func ParseKey(s string) (Key, error) {
	k, reason := decodeKey(s)
	if reason != "" {
		return Key{}, fmt.Errorf("%w: %s", ErrInvalidKey, reason)
	}
	return k, nil
}

// decodeKey returns the key that s encodes, or why it does not encode one.
func decodeKey(s string) (Key, string) {
	var k Key
	// The decoder skips '\r' and '\n'; wg does not, and neither do we.
	if strings.ContainsAny(s, "\r\n") {
		return k, "not canonical standard base64"
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		if n := base64.StdEncoding.EncodedLen(len(k)); len(s) != n {
			return k, fmt.Sprintf("%d characters, want %d", len(s), n)
		}
		return k, "not canonical standard base64"
	}
	if len(b) != len(k) {
		return k, fmt.Sprintf("decodes to %d bytes, want %d", len(b), len(k))
	}
	copy(k[:], b)
	return k, ""
}
