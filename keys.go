package warren

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"golang.org/x/crypto/curve25519"
)

// Key is a Curve25519 key, private or public. Its text form is standard base64,
// the form `wg genkey` prints.
type Key [32]byte

// IsZero reports whether k is all zero bytes (unset).
func (k Key) IsZero() bool { return k == Key{} }

// String returns the base64 form of k.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// MarshalText implements encoding.TextMarshaler. A zero key marshals as "".
func (k Key) MarshalText() ([]byte, error) {
	if k.IsZero() {
		return []byte{}, nil
	}
	return []byte(k.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler. An empty string is the zero key.
func (k *Key) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*k = Key{}
		return nil
	}
	p, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// ParseKey parses the base64 text form of a key.
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return k, fmt.Errorf("warren: key is not standard base64: %w", err)
	}
	if len(b) != len(k) {
		return k, fmt.Errorf("warren: key is %d bytes, want %d", len(b), len(k))
	}
	copy(k[:], b)
	return k, nil
}

// PublicKey returns the X25519 public key of the private key k.
func (k Key) PublicKey() Key {
	var pub Key
	p, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		// Only a low-order result fails, which the basepoint cannot produce.
		panic("warren: X25519 with the basepoint failed: " + err.Error())
	}
	copy(pub[:], p)
	return pub
}

// Keypair is a private key and its public key.
type Keypair struct {
	PrivateKey Key `json:"privateKey"`
	PublicKey  Key `json:"publicKey"`
}

// GenerateKeypair returns a new Noise static keypair.
func GenerateKeypair() (Keypair, error) { return generate() }

// GenerateWGKeypair returns a new WireGuard keypair; the private key is clamped
// as `wg genkey` clamps it.
func GenerateWGKeypair() (Keypair, error) { return generate() }

func generate() (Keypair, error) {
	var kp Keypair
	if _, err := rand.Read(kp.PrivateKey[:]); err != nil {
		return kp, fmt.Errorf("warren: generating key: %w", err)
	}
	clamp(&kp.PrivateKey)
	kp.PublicKey = kp.PrivateKey.PublicKey()
	return kp, nil
}

// clamp applies the Curve25519 private key clamping (RFC 7748 §5).
func clamp(k *Key) {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}
